/* Unit tests for lib/hashpool.c and lib/hashgate.c on a one-slot shared
 * segment: jobs run, the machine-wide gate caps concurrency, the bounded
 * queue refuses fast, a queued job times out while the slot is held (also
 * when the deadline and the completion race, thousands of times), submitted
 * jobs complete exactly once, the counters in the segment add up, and what
 * a killed process held is given back. Worker slot 0 is the pool's; slot 1
 * plays another worker, slot 2 a worker process that gets killed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "hashgate.h"
#include "hashpool.h"
#include "shm.h"

#define THREADS   2
#define QUEUE_MAX 3

struct fixture {
    struct shm_state *shm;
    struct hashpool *pool;
};

static int setup(void **state)
{
    static struct fixture f;
    char err[256] = "";
    f.shm = shm_create(1, 3, err, sizeof(err));
    if (f.shm == NULL) {
        print_error("shm_create: %s\n", err);
        return -1;
    }
    f.pool = hashpool_create(f.shm, 0, THREADS, QUEUE_MAX, 1000);
    if (f.pool == NULL)
        return -1;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    hashpool_destroy(f->pool);
    return 0;
}

static struct hashgate_stats gate(const struct fixture *f)
{
    struct hashgate_stats st;
    hashgate_stats(f->shm->hash, &st);
    return st;
}

/* The gate is idle and its one slot free: a job of slot 1 gets it now. */
static void assert_gate_idle(const struct fixture *f)
{
    assert_int_equal(gate(f).queued, 0);
    assert_int_equal(gate(f).active, 0);
    struct timespec now = clock_deadline(0);
    assert_int_equal(hashgate_enqueue(f->shm->hash, 1, 1), 0);
    assert_int_equal(hashgate_acquire(f->shm->hash, 1, &now), 0);
    hashgate_release(f->shm->hash, 1);
}

/* Another worker takes the only slot. */
static void hold_slot(const struct fixture *f)
{
    struct timespec t = clock_deadline(1000);
    assert_int_equal(hashgate_enqueue(f->shm->hash, 1, 1000), 0);
    assert_int_equal(hashgate_acquire(f->shm->hash, 1, &t), 0);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- jobs ---------------------------------------------------------- */

struct work {
    long sleep_ms;
    _Atomic int *cur, *max;
    _Atomic int ran;
};

static void job(void *arg)
{
    struct work *w = arg;
    if (w->cur != NULL) {
        int now = atomic_fetch_add(w->cur, 1) + 1;
        int m = atomic_load(w->max);
        while (now > m && !atomic_compare_exchange_weak(w->max, &m, now))
            ;
    }
    sleep_ms(w->sleep_ms);
    if (w->cur != NULL)
        atomic_fetch_sub(w->cur, 1);
    atomic_fetch_add(&w->ran, 1);
}

static void test_runs(void **state)
{
    struct fixture *f = *state;
    uint64_t rejected0 = gate(f).rejected;
    for (int i = 0; i < 5; i++) {
        struct work w = {.sleep_ms = 2};
        double wait_ms = -1, run_ms = -1;
        assert_int_equal(hashpool_run(f->pool, job, &w, 1000, &wait_ms, &run_ms), HASHPOOL_DONE);
        assert_int_equal(atomic_load(&w.ran), 1);
        assert_true(run_ms > 0);
        assert_true(run_ms >= 1.5);
        assert_true(wait_ms >= 0);
        assert_true(wait_ms < 500);
    }
    /* NULL out-parameters are allowed. */
    struct work w = {.sleep_ms = 1};
    assert_int_equal(hashpool_run(f->pool, job, &w, 1000, NULL, NULL), HASHPOOL_DONE);
    assert_int_equal(atomic_load(&w.ran), 1);
    assert_int_equal(gate(f).queued, 0);
    assert_int_equal(gate(f).active, 0);
    assert_int_equal(gate(f).rejected, rejected0);
    assert_gate_idle(f);
}

/* ---- the machine-wide cap and the bounded queue ------------------------- */

#define CALLERS 6

struct caller {
    struct hashpool *pool;
    pthread_barrier_t *go;
    struct work *w;
    enum hashpool_result rc;
    double took_ms, run_ms;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    pthread_barrier_wait(c->go);
    double t0 = clock_ms();
    c->rc = hashpool_run(c->pool, job, c->w, 10000, NULL, &c->run_ms);
    c->took_ms = clock_ms() - t0;
    return NULL;
}

static void test_cap_and_queue(void **state)
{
    struct fixture *f = *state;
    _Atomic int cur = 0, max = 0;
    struct work w[CALLERS];
    struct caller c[CALLERS];
    pthread_t th[CALLERS];
    pthread_barrier_t go;
    uint64_t rejected0 = gate(f).rejected;

    pthread_barrier_init(&go, NULL, CALLERS);
    for (int i = 0; i < CALLERS; i++) {
        w[i] = (struct work){.sleep_ms = 50, .cur = &cur, .max = &max};
        c[i] = (struct caller){.pool = f->pool, .go = &go, .w = &w[i]};
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
    }
    for (int i = 0; i < CALLERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);

    int done = 0, rejected = 0;
    for (int i = 0; i < CALLERS; i++) {
        if (c[i].rc == HASHPOOL_DONE) {
            done++;
            assert_int_equal(atomic_load(&w[i].ran), 1);
            assert_true(c[i].run_ms >= 45);
        } else if (c[i].rc == HASHPOOL_REJECTED) {
            rejected++;
            assert_int_equal(atomic_load(&w[i].ran), 0);
            if (c[i].took_ms >= 20)
                fail_msg("a rejection took %.1f ms", c[i].took_ms);
        } else {
            fail_msg("caller %d: result %d", i, (int)c[i].rc);
        }
    }
    /* One slot on the machine: never two jobs at once. */
    assert_int_equal(atomic_load(&max), 1);
    assert_int_equal(done + rejected, CALLERS);
    /* At most one running plus QUEUE_MAX waiting were ever admitted. */
    assert_true(rejected >= CALLERS - 1 - QUEUE_MAX);
    assert_true(done >= 1);
    assert_int_equal(gate(f).rejected - rejected0, (uint64_t)rejected);
    assert_int_equal(gate(f).queued, 0);
    assert_int_equal(gate(f).active, 0);
    assert_gate_idle(f);
}

/* ---- timeout while the only slot is held ------------------------------- */

static void test_timeout(void **state)
{
    struct fixture *f = *state;
    uint64_t rejected0 = gate(f).rejected;

    /* Someone (another worker, here the test) holds the only slot. */
    hold_slot(f);
    struct work w = {.sleep_ms = 1};
    double wait_ms = -1, run_ms = -1;
    double t0 = clock_ms();
    enum hashpool_result rc = hashpool_run(f->pool, job, &w, 30, &wait_ms, &run_ms);
    double took = clock_ms() - t0;
    assert_int_equal(rc, HASHPOOL_TIMEOUT);
    if (took < 29 || took > 500)
        fail_msg("timeout after %.1f ms, expected about 30", took);
    assert_true(wait_ms >= 29);
    assert_true(run_ms == 0);
    assert_int_equal(atomic_load(&w.ran), 0);
    assert_int_equal(gate(f).rejected - rejected0, 1);

    /* Both pool threads taken by callers with long timeouts (each thread
     * waits for the slot): a short job stays in the pool's own queue and
     * is withdrawn from it at its deadline. */
    struct work w2[3];
    struct caller c[3];
    pthread_t th[3];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 1);
    for (int i = 0; i < 3; i++) {
        w2[i] = (struct work){.sleep_ms = 1};
        c[i] = (struct caller){.pool = f->pool, .go = &go, .w = &w2[i]};
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
    while (gate(f).queued < 2)
        sleep_ms(1);
    sleep_ms(10); /* let the pool threads take them */
    t0 = clock_ms();
    rc = hashpool_run(f->pool, job, &w, 30, &wait_ms, NULL);
    took = clock_ms() - t0;
    assert_int_equal(rc, HASHPOOL_TIMEOUT);
    if (took < 29 || took > 500)
        fail_msg("queued job timed out after %.1f ms, expected about 30", took);
    assert_int_equal(atomic_load(&w.ran), 0);
    assert_int_equal(gate(f).queued, 2);

    /* A third waiting caller fills the queue (QUEUE_MAX): the next job is
     * refused at once. */
    assert_int_equal(pthread_create(&th[2], NULL, caller_main, &c[2]), 0);
    while (gate(f).queued < 3)
        sleep_ms(1);
    t0 = clock_ms();
    rc = hashpool_run(f->pool, job, &w, 30, NULL, NULL);
    took = clock_ms() - t0;
    assert_int_equal(rc, HASHPOOL_REJECTED);
    if (took >= 20)
        fail_msg("rejection took %.1f ms", took);
    assert_int_equal(atomic_load(&w.ran), 0);
    assert_int_equal(gate(f).queued, 3);

    /* Release the slot: the pool keeps working and the waiters finish. */
    hashgate_release(f->shm->hash, 1);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(c[i].rc, HASHPOOL_DONE);
        assert_int_equal(atomic_load(&w2[i].ran), 1);
    }
    pthread_barrier_destroy(&go);
    struct work w3 = {.sleep_ms = 1};
    assert_int_equal(hashpool_run(f->pool, job, &w3, 1000, &wait_ms, &run_ms), HASHPOOL_DONE);
    assert_int_equal(atomic_load(&w3.ran), 1);
    assert_true(run_ms > 0);
    assert_int_equal(gate(f).rejected - rejected0, 3);
    assert_int_equal(gate(f).queued, 0);
    assert_int_equal(gate(f).active, 0);
    assert_gate_idle(f);
}

/* A second pool on the same segment works and is destroyed cleanly. */
static void test_second_pool(void **state)
{
    struct fixture *f = *state;
    struct hashpool *p = hashpool_create(f->shm, 0, 1, QUEUE_MAX, 1000);
    assert_non_null(p);
    struct work w = {.sleep_ms = 1};
    assert_int_equal(hashpool_run(p, job, &w, 1000, NULL, NULL), HASHPOOL_DONE);
    hashpool_destroy(p);
    hashpool_destroy(NULL);
    assert_int_equal(gate(f).queued, 0);
}

struct local_call {
    struct hashpool *pool;
    struct work *w;
    enum hashpool_result rc;
};

static void *local_caller(void *arg)
{
    struct local_call *c = arg;
    c->rc = hashpool_run(c->pool, job, c->w, 5000, NULL, NULL);
    return NULL;
}

/* local_max bounds this process's jobs: past it, refusal is immediate even
 * though the machine-wide queue has room. */
static void test_local_max(void **state)
{
    struct fixture *f = *state;
    struct hashpool *p = hashpool_create(f->shm, 0, 1, 100, 1);
    struct work slow = {.sleep_ms = 200}, quick = {.sleep_ms = 0};
    struct local_call c = {.pool = p, .w = &slow};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, local_caller, &c), 0);
    sleep_ms(50); /* the slow job is running now */
    double t0 = clock_ms();
    assert_int_equal(hashpool_run(p, job, &quick, 5000, NULL, NULL), HASHPOOL_REJECTED);
    assert_true(clock_ms() - t0 < 20);
    assert_int_equal(atomic_load(&quick.ran), 0);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, HASHPOOL_DONE);
    /* The slot is free again. */
    assert_int_equal(hashpool_run(p, job, &quick, 5000, NULL, NULL), HASHPOOL_DONE);
    assert_int_equal(gate(f).queued, 0);
    hashpool_destroy(p);
}

/* ---- the deadline racing the completion --------------------------------- */

/* The old wait could miss a completion that raced its own deadline and then
 * wait forever. Here every job's deadline falls about when the slot comes
 * free, thousands of times: each call must return, and within its bound. */
#define RACE_ROUNDS 3000

struct releaser {
    const struct fixture *f;
    long after_us;
};

static void *release_later(void *arg)
{
    struct releaser *r = arg;
    struct timespec ts = {0, r->after_us * 1000L};
    nanosleep(&ts, NULL);
    hashgate_release(r->f->shm->hash, 1);
    return NULL;
}

static void test_deadline_race(void **state)
{
    struct fixture *f = *state;
    int done = 0, timeouts = 0;
    unsigned seed = 12345;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        hold_slot(f);
        struct releaser r = {.f = f, .after_us = 500 + (long)(rand_r(&seed) % 1500)};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, release_later, &r), 0);
        struct work w = {.sleep_ms = 0};
        double t0 = clock_ms();
        enum hashpool_result rc = hashpool_run(f->pool, job, &w, 1, NULL, NULL);
        double took = clock_ms() - t0;
        pthread_join(t, NULL);
        if (rc == HASHPOOL_DONE) {
            done++;
            assert_int_equal(atomic_load(&w.ran), 1);
        } else {
            assert_int_equal(rc, HASHPOOL_TIMEOUT);
            assert_int_equal(atomic_load(&w.ran), 0);
            timeouts++;
        }
        if (took > 1000)
            fail_msg("round %d: hashpool_run took %.1f ms with a 1 ms deadline", i, took);
    }
    print_message("deadline race: %d rounds, %d done, %d timed out\n", RACE_ROUNDS, done, timeouts);
    assert_int_equal(done + timeouts, RACE_ROUNDS);
    assert_gate_idle(f);
}

/* ---- submitted jobs complete once, from a pool thread ---------------------- */

struct async_job {
    struct work w;
    _Atomic int calls;
    enum hashpool_result r;
    double run_ms;
};

static void async_done(void *arg, enum hashpool_result r, double wait_ms, double run_ms)
{
    struct async_job *a = arg;
    (void)wait_ms;
    a->r = r;
    a->run_ms = run_ms;
    atomic_fetch_add(&a->calls, 1);
}

#define ASYNC_JOBS 64

static void test_submit(void **state)
{
    struct fixture *f = *state;
    struct hashpool *p = hashpool_create(f->shm, 0, THREADS, 1000, 1000);
    static struct async_job a[ASYNC_JOBS];
    int admitted = 0;
    for (int i = 0; i < ASYNC_JOBS; i++) {
        a[i] = (struct async_job){.w = {.sleep_ms = 1}};
        /* Half the jobs get a deadline too short for the queue ahead. */
        long timeout = i % 2 ? 5 : 10000;
        if (hashpool_submit(p, job, async_done, &a[i], timeout) == HASHPOOL_DONE)
            admitted++;
    }
    assert_int_equal(admitted, ASYNC_JOBS);
    double t0 = clock_ms();
    for (;;) {
        int calls = 0;
        for (int i = 0; i < ASYNC_JOBS; i++)
            calls += atomic_load(&a[i].calls);
        if (calls == ASYNC_JOBS)
            break;
        if (clock_ms() - t0 > 5000)
            fail_msg("only %d of %d submitted jobs completed", calls, ASYNC_JOBS);
        sleep_ms(1);
    }
    int timeouts = 0;
    for (int i = 0; i < ASYNC_JOBS; i++) {
        assert_int_equal(atomic_load(&a[i].calls), 1);
        assert_int_equal(atomic_load(&a[i].w.ran), a[i].r == HASHPOOL_DONE);
        timeouts += a[i].r == HASHPOOL_TIMEOUT;
        if (i % 2 == 0)
            assert_int_equal(a[i].r, HASHPOOL_DONE);
    }
    assert_true(timeouts > 0);
    /* Queued jobs complete as TIMEOUT when the pool is destroyed. */
    hold_slot(f);
    struct async_job last = {.w = {.sleep_ms = 1}};
    assert_int_equal(hashpool_submit(p, job, async_done, &last, 200), HASHPOOL_DONE);
    hashpool_destroy(p);
    assert_int_equal(atomic_load(&last.calls), 1);
    assert_int_equal(last.r, HASHPOOL_TIMEOUT);
    hashgate_release(f->shm->hash, 1);
    assert_gate_idle(f);
}

/* ---- a killed worker gives back what it held ---------------------------- */

/* Child: worker slot 1 takes the slot, queues one more job, and waits to
 * be killed; or, with churn, takes and gives back forever. */
#define CHILD_SLOT 2

static void child_main(struct hashgate *g, int churn)
{
    struct timespec far = clock_deadline(60000);
    if (!churn) {
        if (hashgate_enqueue(g, CHILD_SLOT, 1000) != 0 ||
            hashgate_acquire(g, CHILD_SLOT, &far) != 0 ||
            hashgate_enqueue(g, CHILD_SLOT, 1000) != 0)
            _exit(1);
        for (;;)
            pause();
    }
    for (;;) {
        if (hashgate_enqueue(g, CHILD_SLOT, 1000) == 0) {
            if (hashgate_acquire(g, CHILD_SLOT, &far) == 0)
                hashgate_release(g, CHILD_SLOT);
            else
                hashgate_dequeue(g, CHILD_SLOT, 0);
        }
    }
}

static void kill_and_reclaim(const struct fixture *f, pid_t pid)
{
    int status;
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    hashgate_reclaim(f->shm->hash, CHILD_SLOT);
}

#define CHURN_ROUNDS 300

static void test_crash_reclaim(void **state)
{
    struct fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        child_main(f->shm->hash, 0);
    double t0 = clock_ms();
    while (gate(f).active != 1 || gate(f).queued != 1) {
        if (clock_ms() - t0 > 5000)
            fail_msg("the child never took the slot");
        sleep_ms(1);
    }
    /* Held by the child: the pool's job times out. */
    struct work w = {.sleep_ms = 0};
    assert_int_equal(hashpool_run(f->pool, job, &w, 20, NULL, NULL), HASHPOOL_TIMEOUT);
    kill_and_reclaim(f, pid);
    assert_int_equal(hashpool_run(f->pool, job, &w, 1000, NULL, NULL), HASHPOOL_DONE);
    assert_gate_idle(f);

    /* Killed at any moment, also inside the gate's lock or while waiting
     * for the slot (odd rounds: this process holds it meanwhile): every time
     * the survivors get the whole capacity back, and nothing hangs. */
    unsigned seed = 777;
    for (int i = 0; i < CHURN_ROUNDS; i++) {
        if (i % 2)
            hold_slot(f);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            child_main(f->shm->hash, 1);
        struct timespec ts = {0, (long)(rand_r(&seed) % 2000) * 1000L};
        nanosleep(&ts, NULL);
        kill_and_reclaim(f, pid);
        if (i % 2)
            hashgate_release(f->shm->hash, 1);
        if (gate(f).queued != 0 || gate(f).active != 0)
            fail_msg("round %d: after reclaim queued %d active %d", i, gate(f).queued,
                     gate(f).active);
        struct work w2 = {.sleep_ms = 0};
        assert_int_equal(hashpool_run(f->pool, job, &w2, 1000, NULL, NULL), HASHPOOL_DONE);
    }
    print_message("crash reclaim: %d kills of a churning process, %llu inside the lock\n",
                  CHURN_ROUNDS, (unsigned long long)gate(f).repairs);
    assert_gate_idle(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs),      cmocka_unit_test(test_cap_and_queue),
        cmocka_unit_test(test_timeout),   cmocka_unit_test(test_second_pool),
        cmocka_unit_test(test_local_max), cmocka_unit_test(test_deadline_race),
        cmocka_unit_test(test_submit),    cmocka_unit_test(test_crash_reclaim),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
