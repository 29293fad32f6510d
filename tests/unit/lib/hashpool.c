/* Unit tests for lib/hashpool.c on a one-slot shared segment: jobs run,
 * the machine-wide semaphore caps concurrency, the bounded queue refuses
 * fast, a queued job times out while the slot is held, and the counters in
 * the segment add up. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "clock.h"
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
    f.shm = shm_create(1, err, sizeof(err));
    if (f.shm == NULL) {
        print_error("shm_create: %s\n", err);
        return -1;
    }
    f.pool = hashpool_create(f.shm, THREADS, QUEUE_MAX, 1000);
    if (f.pool == NULL)
        return -1;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    hashpool_destroy(f->pool);
    sem_destroy(&f->shm->hash_slots);
    return 0;
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
    uint64_t rejected0 = atomic_load(&f->shm->hash_rejected);
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
    assert_int_equal(atomic_load(&f->shm->hash_queued), 0);
    assert_int_equal(atomic_load(&f->shm->hash_active), 0);
    assert_int_equal(atomic_load(&f->shm->hash_rejected), rejected0);
    int v;
    assert_int_equal(sem_getvalue(&f->shm->hash_slots, &v), 0);
    assert_int_equal(v, 1);
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
    uint64_t rejected0 = atomic_load(&f->shm->hash_rejected);

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
    assert_int_equal(atomic_load(&f->shm->hash_rejected) - rejected0, (uint64_t)rejected);
    assert_int_equal(atomic_load(&f->shm->hash_queued), 0);
    assert_int_equal(atomic_load(&f->shm->hash_active), 0);
    int v;
    assert_int_equal(sem_getvalue(&f->shm->hash_slots, &v), 0);
    assert_int_equal(v, 1);
}

/* ---- timeout while the only slot is held ------------------------------- */

static void test_timeout(void **state)
{
    struct fixture *f = *state;
    uint64_t rejected0 = atomic_load(&f->shm->hash_rejected);

    /* Someone (another worker, here the test) holds the only slot. */
    assert_int_equal(sem_wait(&f->shm->hash_slots), 0);
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
    assert_int_equal(atomic_load(&f->shm->hash_rejected) - rejected0, 1);

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
    while (atomic_load(&f->shm->hash_queued) < 2)
        sleep_ms(1);
    sleep_ms(10); /* let the pool threads take them */
    t0 = clock_ms();
    rc = hashpool_run(f->pool, job, &w, 30, &wait_ms, NULL);
    took = clock_ms() - t0;
    assert_int_equal(rc, HASHPOOL_TIMEOUT);
    if (took < 29 || took > 500)
        fail_msg("queued job timed out after %.1f ms, expected about 30", took);
    assert_int_equal(atomic_load(&w.ran), 0);
    assert_int_equal(atomic_load(&f->shm->hash_queued), 2);

    /* A third waiting caller fills the queue (QUEUE_MAX): the next job is
     * refused at once. */
    assert_int_equal(pthread_create(&th[2], NULL, caller_main, &c[2]), 0);
    while (atomic_load(&f->shm->hash_queued) < 3)
        sleep_ms(1);
    t0 = clock_ms();
    rc = hashpool_run(f->pool, job, &w, 30, NULL, NULL);
    took = clock_ms() - t0;
    assert_int_equal(rc, HASHPOOL_REJECTED);
    if (took >= 20)
        fail_msg("rejection took %.1f ms", took);
    assert_int_equal(atomic_load(&w.ran), 0);
    assert_int_equal(atomic_load(&f->shm->hash_queued), 3);

    /* Release the slot: the pool keeps working and the waiters finish. */
    assert_int_equal(sem_post(&f->shm->hash_slots), 0);
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
    assert_int_equal(atomic_load(&f->shm->hash_rejected) - rejected0, 3);
    assert_int_equal(atomic_load(&f->shm->hash_queued), 0);
    assert_int_equal(atomic_load(&f->shm->hash_active), 0);
    int v;
    assert_int_equal(sem_getvalue(&f->shm->hash_slots, &v), 0);
    assert_int_equal(v, 1);
}

/* A second pool on the same segment works and is destroyed cleanly. */
static void test_second_pool(void **state)
{
    struct fixture *f = *state;
    struct hashpool *p = hashpool_create(f->shm, 1, QUEUE_MAX, 1000);
    assert_non_null(p);
    struct work w = {.sleep_ms = 1};
    assert_int_equal(hashpool_run(p, job, &w, 1000, NULL, NULL), HASHPOOL_DONE);
    hashpool_destroy(p);
    hashpool_destroy(NULL);
    assert_int_equal(atomic_load(&f->shm->hash_queued), 0);
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
    struct hashpool *p = hashpool_create(f->shm, 1, 100, 1);
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
    assert_int_equal(atomic_load(&f->shm->hash_queued), 0);
    hashpool_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs),
        cmocka_unit_test(test_cap_and_queue),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_second_pool),
        cmocka_unit_test(test_local_max),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
