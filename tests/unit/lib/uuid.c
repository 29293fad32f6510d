/* Unit tests for lib/uuid.c: RFC 9562 UUIDv7 layout, text form, parsing,
 * strict monotonic order (same millisecond, clock stepping back, threads). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "uuid.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void assert_v7_bytes(const uint8_t u[16])
{
    assert_int_equal(u[6] >> 4, 7); /* version */
    assert_int_equal(u[8] >> 6, 2); /* variant 10xx */
}

static void assert_v7_text(const char *s)
{
    assert_int_equal(strlen(s), UUID_STR_LEN);
    for (size_t i = 0; i < UUID_STR_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            assert_int_equal(c, '-');
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            fail_msg("'%s': character %zu is not lower-case hex", s, i);
        }
    }
    assert_int_equal(s[14], '7');
    assert_non_null(strchr("89ab", s[19]));
}

/* Runs first: the process's last timestamp is still the real clock. */
static void test_time_is_now(void **state)
{
    (void)state;
    uint8_t u[16];
    uint64_t before = now_ms();
    uuid_v7(u);
    uint64_t after = now_ms();
    uint64_t t = uuid_v7_time(u);
    assert_true(t >= before);
    assert_true(t <= after + 1); /* +1: a counter overflow may carry */
}

static void test_format(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++) {
        uint8_t u[16];
        char s[UUID_STR_LEN + 1];
        uuid_v7(u);
        assert_v7_bytes(u);
        memset(s, 'Z', sizeof(s));
        uuid_format(u, s);
        assert_v7_text(s);
    }
    static const uint8_t fixed[16] = {0x01, 0x89, 0x0a, 0x5d, 0xac, 0x96, 0x77, 0x4b,
                                      0xbc, 0xce, 0xb3, 0x02, 0x09, 0x9a, 0x80, 0x57};
    char s[UUID_STR_LEN + 1];
    uuid_format(fixed, s);
    assert_string_equal(s, "01890a5d-ac96-774b-bcce-b302099a8057");
}

static void test_parse(void **state)
{
    (void)state;
    for (int i = 0; i < 100; i++) {
        uint8_t u[16], v[16];
        char s[UUID_STR_LEN + 1];
        uuid_v7(u);
        uuid_format(u, s);
        memset(v, 0, sizeof(v));
        assert_int_equal(uuid_parse(s, strlen(s), v), 0);
        assert_memory_equal(u, v, 16);
    }
    static const uint8_t fixed[16] = {0x01, 0x89, 0x0a, 0x5d, 0xac, 0x96, 0x77, 0x4b,
                                      0xbc, 0xce, 0xb3, 0x02, 0x09, 0x9a, 0x80, 0x57};
    uint8_t v[16];
    const char *upper = "01890A5D-AC96-774B-BCCE-B302099A8057";
    assert_int_equal(uuid_parse(upper, strlen(upper), v), 0);
    assert_memory_equal(v, fixed, 16);

    static const char *const bad[] = {
        "",
        "01890a5d-ac96-774b-bcce-b302099a805",   /* 35 */
        "01890a5d-ac96-774b-bcce-b302099a80577", /* 37 */
        "01890a5d0ac96-774b-bcce-b302099a8057",  /* dash replaced */
        "01890a5dac96-774b-bcce-b302099a8057-",  /* dash moved */
        "01890a5d-ac96-774b-bcce-b302099a805g",  /* not hex */
        "01890a5d-ac96-774b-bcce-b302099a805 ",
        " 1890a5d-ac96-774b-bcce-b302099a8057",
        "01890a5d-ac96-774b-bcce+b302099a8057",
        "{1890a5d-ac96-774b-bcce-b302099a805}",
        "01890a5d-ac96-774b-bcce-b302099a80\xc3\xa9",
        "01890a5dac96774bbcceb302099a8057", /* no dashes */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (uuid_parse(bad[i], strlen(bad[i]), v) != -1)
            fail_msg("uuid_parse accepted '%s'", bad[i]);
    }
    /* The length is the caller's: a valid text with a short len is refused. */
    const char *ok = "01890a5d-ac96-774b-bcce-b302099a8057";
    assert_int_equal(uuid_parse(ok, 35, v), -1);
}

static void test_v7_time(void **state)
{
    (void)state;
    static const uint8_t fixed[16] = {0x01, 0x89, 0x0a, 0x5d, 0xac, 0x96, 0x77, 0x4b,
                                      0xbc, 0xce, 0xb3, 0x02, 0x09, 0x9a, 0x80, 0x57};
    assert_true(uuid_v7_time(fixed) == 0x01890a5dac96ULL);
    static const uint8_t maxed[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x70, 0,
                                      0x80, 0,    0,    0,    0,    0,    0,    0};
    assert_true(uuid_v7_time(maxed) == 0xffffffffffffULL);
}

static void test_sequential_order(void **state)
{
    (void)state;
    enum { N = 100000 };
    uint8_t prev[16], cur[16];
    uuid_v7(prev);
    for (int i = 0; i < N; i++) {
        uuid_v7(cur);
        if (memcmp(prev, cur, 16) >= 0)
            fail_msg("id %d is not greater than the one before it", i);
        assert_v7_bytes(cur);
        memcpy(prev, cur, 16);
    }
}

static void test_same_ms_and_clock_back(void **state)
{
    (void)state;
    /* A time ahead of everything handed out so far. */
    uint64_t t = now_ms() + 10000000;
    uint8_t prev[16], cur[16];
    uuid_v7_at(prev, t);
    assert_true(uuid_v7_time(prev) == t);
    assert_v7_bytes(prev);
    /* The same millisecond: the counter orders them. */
    for (int i = 0; i < 1000; i++) {
        uuid_v7_at(cur, t);
        assert_true(memcmp(prev, cur, 16) < 0);
        assert_true(uuid_v7_time(cur) == t); /* counter starts < 256: no carry yet */
        assert_v7_bytes(cur);
        memcpy(prev, cur, 16);
    }
    /* A later millisecond. */
    uuid_v7_at(cur, t + 5);
    assert_true(memcmp(prev, cur, 16) < 0);
    assert_true(uuid_v7_time(cur) == t + 5);
    memcpy(prev, cur, 16);
    /* The clock steps back: still increasing, time stays at the newest. */
    for (int i = 0; i < 100; i++) {
        uuid_v7_at(cur, t - 1000);
        assert_true(memcmp(prev, cur, 16) < 0);
        assert_true(uuid_v7_time(cur) == t + 5);
        assert_v7_bytes(cur);
        memcpy(prev, cur, 16);
    }
    /* More than 4096 ids in one millisecond: the counter carries into the
     * timestamp, order and layout hold. */
    for (int i = 0; i < 10000; i++) {
        uuid_v7_at(cur, t + 5);
        assert_true(memcmp(prev, cur, 16) < 0);
        assert_v7_bytes(cur);
        memcpy(prev, cur, 16);
    }
    assert_true(uuid_v7_time(cur) > t + 5);
    /* The real clock is now behind the last id: uuid_v7 still increases. */
    uuid_v7(cur);
    assert_true(memcmp(prev, cur, 16) < 0);
}

enum { THREADS = 4, PER_THREAD = 25000 };

struct gen {
    uint8_t ids[PER_THREAD][16];
    int ordered;
};

static void *generate(void *arg)
{
    struct gen *g = arg;
    g->ordered = 1;
    for (int i = 0; i < PER_THREAD; i++) {
        uuid_v7(g->ids[i]);
        if (i > 0 && memcmp(g->ids[i - 1], g->ids[i], 16) >= 0)
            g->ordered = 0;
    }
    return NULL;
}

static int cmp16(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static void test_threads(void **state)
{
    (void)state;
    struct gen *g = calloc(THREADS, sizeof(*g));
    pthread_t th[THREADS];
    assert_non_null(g);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, generate, &g[i]), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < THREADS; i++)
        assert_true(g[i].ordered);

    uint8_t(*all)[16] = calloc((size_t)THREADS * PER_THREAD, 16);
    assert_non_null(all);
    for (int i = 0; i < THREADS; i++)
        memcpy(all[(size_t)i * PER_THREAD], g[i].ids, sizeof(g[i].ids));
    qsort(all, (size_t)THREADS * PER_THREAD, 16, cmp16);
    for (size_t i = 1; i < (size_t)THREADS * PER_THREAD; i++) {
        /* Unique already in the time+counter half (the shared sequence). */
        if (memcmp(all[i - 1], all[i], 8) >= 0)
            fail_msg("duplicate timestamp+counter at %zu", i);
        assert_v7_bytes(all[i]);
    }
    free(all);
    free(g);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_is_now),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_v7_time),
        cmocka_unit_test(test_sequential_order),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_same_ms_and_clock_back), /* last: moves the clock ahead */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
