/* Unit tests for lib/throttle.c without Redis (the per-process fallback):
 * parallel takes never pass the limit (100 rounds of 8 threads), a
 * correct attempt gives its slot back, the first refusal of a window is
 * flagged once, clear forgets, the window ends, and the keys (account ids
 * and keyed, case-insensitive email hashes). The Redis script is exercised
 * end to end (tests/e2e/test_lifecycle.py). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "throttle.h"

static struct throttle *make(long max, long window, long workers)
{
    struct throttle_options o = {
        .prefix = "t:", .max = max, .window = window, .workers = workers};
    memset(o.email_key, 7, sizeof(o.email_key));
    struct throttle *t = throttle_create(&o);
    assert_non_null(t);
    return t;
}

struct racer {
    struct throttle *t;
    const char *key;
    pthread_barrier_t *go;
    _Atomic int *allowed;
    _Atomic int *first;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct throttle_verdict v;
    pthread_barrier_wait(r->go); /* all threads start together */
    for (int i = 0; i < 8; i++) {
        throttle_take(r->t, r->key, &v);
        if (v.busy) { /* every slot is being checked: try again */
            i--;
            sched_yield();
            continue;
        }
        if (v.allowed) {
            atomic_fetch_add(r->allowed, 1);
            throttle_done(r->t, r->key, &v, 1); /* a wrong password */
        } else if (v.first) {
            atomic_fetch_add(r->first, 1);
        }
    }
    return NULL;
}

static void test_parallel_never_exceeds(void **state)
{
    (void)state;
    struct throttle *t = make(10, 3600, 1);
    for (int round = 0; round < 100; round++) {
        char key[32];
        snprintf(key, sizeof(key), "u:round-%d", round);
        _Atomic int allowed = 0, first = 0;
        pthread_barrier_t go;
        pthread_t th[8];
        pthread_barrier_init(&go, NULL, 8);
        struct racer r = {t, key, &go, &allowed, &first};
        for (int i = 0; i < 8; i++)
            assert_int_equal(pthread_create(&th[i], NULL, race, &r), 0);
        for (int i = 0; i < 8; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&go);
        assert_int_equal(atomic_load(&allowed), 10); /* 64 attempts, 10 pass */
        assert_int_equal(atomic_load(&first), 1);    /* one login_throttled */
    }
    throttle_destroy(t);
}

static void test_give_clear_window(void **state)
{
    (void)state;
    struct throttle *t = make(4, 1, 2); /* 2 workers: 2 per process */
    struct throttle_verdict v, w, x;
    /* Correct attempts give their slot back: any number pass. */
    for (int i = 0; i < 10; i++) {
        throttle_take(t, "u:a", &v);
        assert_true(v.allowed && v.local);
        throttle_done(t, "u:a", &v, 0);
    }
    /* Two attempts being checked: a third is busy (not refused). */
    throttle_take(t, "u:a", &v);
    throttle_take(t, "u:a", &w);
    assert_true(v.allowed && w.allowed);
    throttle_take(t, "u:a", &x);
    assert_false(x.allowed);
    assert_true(x.busy);
    throttle_done(t, "u:a", &v, 0); /* correct: the slot is free again */
    throttle_take(t, "u:a", &x);
    assert_true(x.allowed);
    throttle_done(t, "u:a", &w, 1);
    throttle_done(t, "u:a", &x, 1); /* two failures: the limit */
    throttle_take(t, "u:a", &v);
    assert_false(v.allowed);
    assert_false(v.busy);
    assert_true(v.first);
    assert_true(v.retry_after_s == 1);
    throttle_take(t, "u:a", &v);
    assert_false(v.allowed);
    assert_false(v.first);
    /* Another account is not affected. */
    throttle_take(t, "u:b", &v);
    assert_true(v.allowed);
    /* clear (a password reset) forgets the window. */
    throttle_clear(t, "u:a");
    throttle_take(t, "u:a", &v);
    assert_true(v.allowed);
    throttle_done(t, "u:a", &v, 1);
    throttle_take(t, "u:a", &v);
    assert_true(v.allowed);
    throttle_done(t, "u:a", &v, 1);
    throttle_take(t, "u:a", &v);
    assert_false(v.allowed || v.busy);
    /* The window passes. */
    usleep(1100 * 1000);
    throttle_take(t, "u:a", &v);
    assert_true(v.allowed);
    throttle_destroy(t);
}

static void test_keys(void **state)
{
    (void)state;
    struct throttle *t = make(4, 60, 1), *other;
    char a[THROTTLE_KEY_MAX], b[THROTTLE_KEY_MAX], c[THROTTLE_KEY_MAX];
    throttle_key(t, "01a233bf-913d-70bb-8402-3d784e485f8e", "x@y.example", a);
    assert_string_equal(a, "u:01a233bf-913d-70bb-8402-3d784e485f8e");
    throttle_key(t, NULL, "Nobody@Example.ORG", a);
    throttle_key(t, NULL, "nobody@example.org", b);
    throttle_key(t, NULL, "nobody2@example.org", c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strncmp(a, "e:", 2), 0);
    assert_null(strstr(a, "nobody")); /* no email in Redis */
    /* Keyed: another key gives another hash. */
    struct throttle_options o = {.prefix = "t:", .max = 4, .window = 60, .workers = 1};
    memset(o.email_key, 8, sizeof(o.email_key));
    other = throttle_create(&o);
    throttle_key(other, NULL, "nobody@example.org", c);
    assert_string_not_equal(b, c);
    throttle_destroy(other);
    throttle_destroy(t);
    o.max = 0;
    assert_null(throttle_create(&o));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_never_exceeds),
        cmocka_unit_test(test_give_clear_window),
        cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
