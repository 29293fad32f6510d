#include "hashpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

enum job_state { JOB_QUEUED = 0, JOB_RUNNING, JOB_DONE, JOB_EXPIRED };

struct hashpool_job {
    hashpool_fn fn;
    void *arg;
    enum job_state state;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    double queued_at, started_at, done_at;
    struct hashpool_job *next;
};

struct hashpool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* pool threads wait for jobs */
    pthread_cond_t done; /* callers wait for their job */
    struct hashpool_job *head, *tail;
    struct shm_state *shm;
    int queue_max;
    int local_max;
    int local_jobs; /* this process's jobs queued or running, under mu */
    int stopping;
    size_t nthreads;
    pthread_t *threads;
};

/* sem_timedwait takes CLOCK_REALTIME; convert a monotonic deadline. */
static struct timespec hashpool_realtime(const struct timespec *mono)
{
    struct timespec now_m, now_r;
    clock_gettime(CLOCK_MONOTONIC, &now_m);
    clock_gettime(CLOCK_REALTIME, &now_r);
    long long left =
        (long long)(mono->tv_sec - now_m.tv_sec) * 1000000000LL + (mono->tv_nsec - now_m.tv_nsec);
    if (left < 0)
        left = 0;
    long long ns = (long long)now_r.tv_nsec + left % 1000000000LL;
    struct timespec r = {now_r.tv_sec + (time_t)(left / 1000000000LL) + (time_t)(ns / 1000000000LL),
                         (long)(ns % 1000000000LL)};
    return r;
}

static void hashpool_unlink(struct hashpool *p, struct hashpool_job *j)
{
    struct hashpool_job **pp = &p->head, *prev = NULL;
    while (*pp != NULL && *pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = j->next;
    if (p->tail == j)
        p->tail = prev;
    j->next = NULL;
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
        hashpool_unlink(p, j);
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&p->mu);

        /* Wait for a machine-wide slot, no longer than the job's deadline. */
        struct timespec rt = hashpool_realtime(&j->deadline);
        int got;
        while ((got = sem_timedwait(&p->shm->hash_slots, &rt)) != 0 && errno == EINTR)
            ;
        atomic_fetch_sub(&p->shm->hash_queued, 1);
        if (got == 0) {
            atomic_fetch_add(&p->shm->hash_active, 1);
            j->started_at = clock_ms();
            j->fn(j->arg);
            j->done_at = clock_ms();
            atomic_fetch_sub(&p->shm->hash_active, 1);
            sem_post(&p->shm->hash_slots);
        }
        pthread_mutex_lock(&p->mu);
        j->state = got == 0 ? JOB_DONE : JOB_EXPIRED;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct hashpool *hashpool_create(struct shm_state *shm, size_t threads, int queue_max,
                                 int local_max)
{
    struct hashpool *p = xcalloc(1, sizeof(*p));
    pthread_condattr_t ca;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->work, &ca);
    pthread_cond_init(&p->done, &ca);
    pthread_condattr_destroy(&ca);
    p->shm = shm;
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

enum hashpool_result hashpool_run(struct hashpool *p, hashpool_fn fn, void *arg, long timeout_ms,
                                  double *wait_ms, double *run_ms)
{
    struct hashpool_job j = {.fn = fn, .arg = arg, .state = JOB_QUEUED};
    enum hashpool_result rc;
    j.deadline = clock_deadline(timeout_ms);
    j.queued_at = clock_ms();
    /* Machine-wide bound on waiting jobs: refuse fast past it. */
    if (atomic_fetch_add(&p->shm->hash_queued, 1) >= p->queue_max) {
        atomic_fetch_sub(&p->shm->hash_queued, 1);
        atomic_fetch_add(&p->shm->hash_rejected, 1);
        return HASHPOOL_REJECTED;
    }
    pthread_mutex_lock(&p->mu);
    if (p->local_jobs >= p->local_max) {
        pthread_mutex_unlock(&p->mu);
        atomic_fetch_sub(&p->shm->hash_queued, 1);
        atomic_fetch_add(&p->shm->hash_rejected, 1);
        return HASHPOOL_REJECTED;
    }
    p->local_jobs++;
    /* The job lives on this stack frame: it leaves the queue (taken by a
     * pool thread or withdrawn below) before this function returns. */
    if (p->tail != NULL)
        p->tail->next = &j; // cppcheck-suppress autoVariables
    else
        p->head = &j; // cppcheck-suppress autoVariables
    p->tail = &j;     // cppcheck-suppress autoVariables
    pthread_cond_signal(&p->work);
    for (;;) {
        if (j.state == JOB_DONE || j.state == JOB_EXPIRED)
            break;
        int w = pthread_cond_timedwait(&p->done, &p->mu, &j.deadline);
        if (w == ETIMEDOUT && j.state == JOB_QUEUED) {
            /* Still waiting for a pool thread: withdraw it. */
            hashpool_unlink(p, &j);
            atomic_fetch_sub(&p->shm->hash_queued, 1);
            j.state = JOB_EXPIRED;
            break;
        }
        /* A running job finishes soon; wait without a deadline. */
        if (w == ETIMEDOUT)
            pthread_cond_wait(&p->done, &p->mu);
    }
    p->local_jobs--;
    pthread_mutex_unlock(&p->mu);
    if (j.state == JOB_DONE) {
        rc = HASHPOOL_DONE;
    } else {
        atomic_fetch_add(&p->shm->hash_rejected, 1);
        rc = HASHPOOL_TIMEOUT;
    }
    if (wait_ms != NULL)
        *wait_ms = (rc == HASHPOOL_DONE ? j.started_at : clock_ms()) - j.queued_at;
    if (run_ms != NULL)
        *run_ms = rc == HASHPOOL_DONE ? j.done_at - j.started_at : 0;
    return rc;
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
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p);
}
