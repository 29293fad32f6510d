#include "hashpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "alloc.h"
#include "clock.h"
#include "hashgate.h"
#include "log.h"

/* Pool threads waiting for a machine-wide slot look at the local queue for
 * expired jobs this often. */
#define HASHPOOL_SLICE_MS 100
/* A hashpool_run() caller that is still waiting this long after its
 * deadline has found a broken pool: that is fatal, not a reason to hang. */
#define HASHPOOL_STUCK_MS 60000

struct hashpool_job {
    hashpool_fn fn;
    hashpool_done_fn done;
    void *arg;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    double queued_at, started_at, done_at;
    struct hashpool_job *next;
};

struct hashpool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* pool threads wait for jobs */
    struct hashpool_job *head, *tail;
    struct hashgate *gate;
    unsigned slot;
    int queue_max;
    int local_max;
    int local_jobs; /* this process's jobs queued or running, under mu */
    int stopping;
    size_t nthreads;
    pthread_t *threads;
    hashpool_wait_hook hook;
    void *hook_ctx;
};

static int ts_passed(const struct timespec *t, const struct timespec *now)
{
    return now->tv_sec > t->tv_sec || (now->tv_sec == t->tv_sec && now->tv_nsec >= t->tv_nsec);
}

/* Call the job's completion and free it. No lock held. */
static void hashpool_finish(struct hashpool *p, struct hashpool_job *j, enum hashpool_result r)
{
    double now = clock_ms();
    double wait_ms = (r == HASHPOOL_DONE ? j->started_at : now) - j->queued_at;
    double run_ms = r == HASHPOOL_DONE ? j->done_at - j->started_at : 0;
    pthread_mutex_lock(&p->mu);
    p->local_jobs--;
    pthread_mutex_unlock(&p->mu);
    j->done(j->arg, r, wait_ms, run_ms);
    free(j);
}

/* Complete every queued job whose deadline has passed (all of them when
 * stopping). */
static void hashpool_expire(struct hashpool *p, int all)
{
    struct hashpool_job *expired = NULL, **pp, *j;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&p->mu);
    pp = &p->head;
    p->tail = NULL;
    while ((j = *pp) != NULL) {
        if (all || ts_passed(&j->deadline, &now)) {
            *pp = j->next;
            j->next = expired;
            expired = j;
        } else {
            p->tail = j;
            pp = &j->next;
        }
    }
    pthread_mutex_unlock(&p->mu);
    while ((j = expired) != NULL) {
        expired = j->next;
        hashgate_dequeue(p->gate, p->slot, 1);
        hashpool_finish(p, j, HASHPOOL_TIMEOUT);
    }
}

/* Wait for a machine-wide slot until j's deadline, expiring other overdue
 * jobs of this process meanwhile. 0 when j holds a slot. */
static int hashpool_acquire(struct hashpool *p, struct hashpool_job *j)
{
    for (;;) {
        struct timespec now, until = clock_deadline(HASHPOOL_SLICE_MS);
        if (j->deadline.tv_sec < until.tv_sec ||
            (j->deadline.tv_sec == until.tv_sec && j->deadline.tv_nsec < until.tv_nsec))
            until = j->deadline;
        if (hashgate_acquire(p->gate, p->slot, &until) == 0)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (ts_passed(&j->deadline, &now))
            return -1;
        hashpool_expire(p, 0);
    }
}

static void *hashpool_thread(void *arg)
{
    struct hashpool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->head == NULL && !p->stopping)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stopping)
            break;
        struct hashpool_job *j = p->head;
        p->head = j->next;
        if (p->head == NULL)
            p->tail = NULL;
        j->next = NULL;
        pthread_mutex_unlock(&p->mu);

        if (hashpool_acquire(p, j) == 0) {
            j->started_at = clock_ms();
            j->fn(j->arg);
            j->done_at = clock_ms();
            hashgate_release(p->gate, p->slot);
            hashpool_finish(p, j, HASHPOOL_DONE);
        } else {
            hashgate_dequeue(p->gate, p->slot, 1);
            hashpool_finish(p, j, HASHPOOL_TIMEOUT);
        }
        hashpool_expire(p, 0);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct hashpool *hashpool_create(struct shm_state *shm, unsigned slot, size_t threads,
                                 int queue_max, int local_max)
{
    struct hashpool *p = xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    p->gate = shm->hash;
    p->slot = slot;
    p->queue_max = queue_max;
    p->local_max = local_max > 0 ? local_max : 1;
    p->nthreads = threads ? threads : 1;
    p->threads = xcalloc(p->nthreads, sizeof(*p->threads));
    for (size_t i = 0; i < p->nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, hashpool_thread, p) != 0) {
            log_msg(LOG_ERROR, "hashpool: pthread_create failed");
            p->nthreads = i;
            break;
        }
    }
    return p;
}

enum hashpool_result hashpool_submit(struct hashpool *p, hashpool_fn fn, hashpool_done_fn done,
                                     void *arg, long timeout_ms)
{
    if (hashgate_enqueue(p->gate, p->slot, p->queue_max) != 0)
        return HASHPOOL_REJECTED;
    pthread_mutex_lock(&p->mu);
    if (p->local_jobs >= p->local_max || p->stopping || p->nthreads == 0) {
        pthread_mutex_unlock(&p->mu);
        hashgate_dequeue(p->gate, p->slot, 0);
        hashgate_count_rejected(p->gate);
        return HASHPOOL_REJECTED;
    }
    struct hashpool_job *j = xcalloc(1, sizeof(*j));
    j->fn = fn;
    j->done = done;
    j->arg = arg;
    j->deadline = clock_deadline(timeout_ms);
    j->queued_at = clock_ms();
    p->local_jobs++;
    if (p->tail != NULL)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return HASHPOOL_DONE;
}

void hashpool_set_wait_hook(struct hashpool *p, hashpool_wait_hook hook, void *ctx)
{
    p->hook = hook;
    p->hook_ctx = ctx;
}

/* hashpool_run(): the caller's wait, completed by hashpool_run_done(). */
struct hashpool_waiter {
    hashpool_fn fn;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;
    enum hashpool_result r;
    double wait_ms, run_ms;
};

static void hashpool_run_fn(void *arg)
{
    struct hashpool_waiter *w = arg;
    w->fn(w->arg);
}

static void hashpool_run_done(void *arg, enum hashpool_result r, double wait_ms, double run_ms)
{
    struct hashpool_waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->r = r;
    w->wait_ms = wait_ms;
    w->run_ms = run_ms;
    w->finished = 1;
    /* Signalled under the lock: the waiter cannot return (and free w)
     * before this thread has let go of it. */
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

enum hashpool_result hashpool_run(struct hashpool *p, hashpool_fn fn, void *arg, long timeout_ms,
                                  double *wait_ms, double *run_ms)
{
    struct hashpool_waiter w = {.fn = fn, .arg = arg};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, &ca);
    pthread_condattr_destroy(&ca);

    double t0 = clock_ms();
    enum hashpool_result r = hashpool_submit(p, hashpool_run_fn, hashpool_run_done, &w, timeout_ms);
    if (r == HASHPOOL_DONE) {
        /* The pool completes every admitted job shortly after its deadline;
         * wait in slices, re-checking the flag after every wake-up. */
        struct timespec stuck = clock_deadline(timeout_ms + HASHPOOL_STUCK_MS);
        if (p->hook != NULL)
            p->hook(p->hook_ctx, 1);
        pthread_mutex_lock(&w.mu);
        while (!w.finished) {
            if (pthread_cond_timedwait(&w.cv, &w.mu, &stuck) == ETIMEDOUT && !w.finished) {
                log_msg(LOG_ERROR, "hashpool: a job was not completed %d ms past its deadline",
                        HASHPOOL_STUCK_MS);
                abort();
            }
        }
        pthread_mutex_unlock(&w.mu);
        if (p->hook != NULL)
            p->hook(p->hook_ctx, 0);
        r = w.r;
    } else {
        w.wait_ms = clock_ms() - t0;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    if (wait_ms != NULL)
        *wait_ms = w.wait_ms;
    if (run_ms != NULL)
        *run_ms = w.run_ms;
    return r;
}

void hashpool_destroy(struct hashpool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    hashpool_expire(p, 1);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    free(p);
}
