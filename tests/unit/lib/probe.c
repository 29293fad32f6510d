/* Unit tests for lib/probe.c: single-flight dependency checks. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "clock.h"
#include "probe.h"

/* A check that takes `ms`, counts its runs, and answers what `up` said
 * when it began. */
struct fake {
    _Atomic int up;
    _Atomic long ms;
    _Atomic int runs;
    _Atomic int inside; /* checks running at this moment */
    _Atomic int overlap;
};

static int fake_check(void *ctx, int64_t deadline)
{
    struct fake *f = ctx;
    int up = atomic_load(&f->up);
    (void)deadline;
    atomic_fetch_add(&f->runs, 1);
    if (atomic_fetch_add(&f->inside, 1) != 0)
        atomic_store(&f->overlap, 1);
    long ms = atomic_load(&f->ms);
    if (ms > 0)
        clock_sleep_ms(ms);
    atomic_fetch_sub(&f->inside, 1);
    return up ? 0 : -1;
}

static void test_alone_runs_each_time(void **state)
{
    (void)state;
    struct fake f = {.up = 1};
    struct probe *p = probe_create(fake_check, &f);
    assert_int_equal(probe_run(p, clock_deadline_in(1000)), 0);
    atomic_store(&f.up, 0);
    assert_int_equal(probe_run(p, clock_deadline_in(1000)), -1);
    atomic_store(&f.up, 1);
    assert_int_equal(probe_run(p, clock_deadline_in(1000)), 0);
    assert_int_equal(atomic_load(&f.runs), 3);
    assert_int_equal(probe_checks(p), 3);
    probe_free(p);
}

struct caller {
    struct probe *p;
    pthread_barrier_t *start; /* NULL: call at once */
    long deadline_ms;
    int rc;
    double took_ms;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    if (c->start != NULL)
        pthread_barrier_wait(c->start);
    double t0 = clock_ms();
    c->rc = probe_run(c->p, clock_deadline_in(c->deadline_ms));
    c->took_ms = clock_ms() - t0;
    return NULL;
}

/* 32 callers at once share a few checks, never two at a time. */
static void test_concurrent_callers_share_checks(void **state)
{
    (void)state;
    enum { N = 32 };
    struct fake f = {.up = 1, .ms = 100};
    struct probe *p = probe_create(fake_check, &f);
    pthread_t t[N];
    struct caller c[N];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    for (int i = 0; i < N; i++) {
        c[i] = (struct caller){.p = p, .start = &start, .deadline_ms = 5000, .rc = 99};
        assert_int_equal(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].rc, 0);
    }
    /* the first, one for everyone who arrived during it, perhaps a third
     * for late starters: far fewer than the callers */
    assert_in_range(atomic_load(&f.runs), 1, 4);
    assert_int_equal(atomic_load(&f.overlap), 0);
    pthread_barrier_destroy(&start);
    probe_free(p);
}

/* Start a caller on its own thread and return once its check is running. */
static void start_first(struct fake *f, pthread_t *t, struct caller *c)
{
    assert_int_equal(pthread_create(t, NULL, caller_main, c), 0);
    while (atomic_load(&f->inside) == 0)
        clock_sleep_ms(1);
}

/* A caller arriving while a check runs is answered by a later check: it
 * sees the state after its arrival, not the running check's. */
static void test_never_answered_by_an_older_check(void **state)
{
    (void)state;
    struct fake f = {.up = 1, .ms = 200};
    struct probe *p = probe_create(fake_check, &f);
    pthread_t first;
    struct caller c1 = {.p = p, .deadline_ms = 5000, .rc = 99};
    start_first(&f, &first, &c1);
    /* the first check saw "up"; the dependency goes down now */
    atomic_store(&f.up, 0);
    atomic_store(&f.ms, 0);
    assert_int_equal(probe_run(p, clock_deadline_in(5000)), -1);
    pthread_join(first, NULL);
    assert_int_equal(c1.rc, 0);
    assert_int_equal(atomic_load(&f.runs), 2);
    probe_free(p);
}

/* A waiter's deadline bounds its wait even when the running check hangs. */
static void test_waiter_deadline(void **state)
{
    (void)state;
    struct fake f = {.up = 1, .ms = 700};
    struct probe *p = probe_create(fake_check, &f);
    pthread_t first;
    struct caller c1 = {.p = p, .deadline_ms = 5000, .rc = 99};
    start_first(&f, &first, &c1);
    double t0 = clock_ms();
    assert_int_equal(probe_run(p, clock_deadline_in(60)), -1);
    double took = clock_ms() - t0;
    assert_true(took >= 50 && took < 500);
    pthread_join(first, NULL);
    assert_int_equal(c1.rc, 0);
    probe_free(p);
}

/* Many threads, many rounds, fast checks (a loop for TSan): every call
 * returns, with the answer of a check, and checks never overlap. */
static void *stress_main(void *arg)
{
    struct caller *c = arg;
    for (int i = 0; i < 3000; i++) {
        int rc = probe_run(c->p, clock_deadline_in(5000));
        if (rc != 0)
            c->rc = rc;
    }
    return NULL;
}

static void test_stress(void **state)
{
    (void)state;
    enum { N = 8 };
    struct fake f = {.up = 1};
    struct probe *p = probe_create(fake_check, &f);
    pthread_t t[N];
    struct caller c[N];
    for (int i = 0; i < N; i++) {
        c[i] = (struct caller){.p = p, .rc = 0};
        assert_int_equal(pthread_create(&t[i], NULL, stress_main, &c[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].rc, 0);
    }
    assert_int_equal(atomic_load(&f.overlap), 0);
    assert_true(atomic_load(&f.runs) <= N * 3000);
    assert_int_equal(probe_checks(p), (uint64_t)atomic_load(&f.runs));
    probe_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alone_runs_each_time),
        cmocka_unit_test(test_concurrent_callers_share_checks),
        cmocka_unit_test(test_never_answered_by_an_older_check),
        cmocka_unit_test(test_waiter_deadline),
        cmocka_unit_test(test_stress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
