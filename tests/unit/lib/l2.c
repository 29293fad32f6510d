/* Unit tests for l2_decode() (lib/l2.c), the parser of stored
 * "<rank>|<etag>|<bytes>" strings: values, tombstones (even ranks), version =
 * rank >> 1, binary bodies holding '|' and NUL, and every malformed shape.
 * Each input is decoded from an exact-length heap copy, so a read past its
 * end is an ASan error. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "l2.h"

/* l2_decode() of the first len bytes of s, from a copy of exactly len. */
static int decode(const char *s, size_t len, struct cache_value **out)
{
    char *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    memcpy(copy, s, len);
    *out = (struct cache_value *)1; /* must be reset */
    int rc = l2_decode(copy, len, out);
    free(copy);
    return rc;
}

static int decode_str(const char *s, struct cache_value **out)
{
    return decode(s, strlen(s), out);
}

static void test_value(void **state)
{
    (void)state;
    struct cache_value *v;
    assert_int_equal(decode_str("5|\"u1-2\"|{\"name\":\"a\"}", &v), 0);
    assert_non_null(v);
    assert_int_equal(v->version, 2);
    assert_string_equal(v->etag, "\"u1-2\"");
    assert_int_equal(v->etag_len, 6);
    assert_int_equal(v->len, 12);
    assert_memory_equal(v->data, "{\"name\":\"a\"}", 12);
    assert_int_equal(v->data[v->len], '\0');
    assert_int_equal(atomic_load(&v->refs), 1);
    cache_value_release(v);

    /* Empty ETag and empty body. */
    assert_int_equal(decode_str("1||", &v), 0);
    assert_non_null(v);
    assert_int_equal(v->version, 0);
    assert_int_equal(v->etag_len, 0);
    assert_string_equal(v->etag, "");
    assert_int_equal(v->len, 0);
    assert_int_equal(v->data[0], '\0');
    cache_value_release(v);
}

/* version = rank >> 1, up to the longest rank accepted (19 digits). */
static void test_version_from_rank(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t version;
    } cases[] = {
        {"1|e|x", 0},
        {"3|e|x", 1},
        {"007|e|x", 3},
        {"201|e|x", 100},
        {"9999999999999999999|e|x", 4999999999999999999LL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cache_value *v;
        assert_int_equal(decode_str(cases[i].s, &v), 0);
        assert_non_null(v);
        assert_int_equal(v->version, cases[i].version);
        assert_string_equal(v->etag, "e");
        assert_int_equal(v->len, 1);
        cache_value_release(v);
    }
}

static void test_tombstone(void **state)
{
    (void)state;
    static const char *cases[] = {"4|e|x", "0||", "2||", "10|etag|ignored body",
                                  "9999999999999999998||"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cache_value *v;
        assert_int_equal(decode_str(cases[i], &v), 0);
        assert_null(v);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    static const char *cases[] = {
        "",                         /* empty */
        "5",                        /* no bar */
        "12345",                    /* no bar */
        "|e|x",                     /* empty rank */
        "5a|e|x",                   /* non-digit rank */
        "-5|e|x",                   /* sign */
        " 5|e|x",                   /* space */
        "+5|e|x",                   /* sign */
        "5 |e|x",                   /* trailing space */
        "0x5|e|x",                  /* hex */
        "12345678901234567890|e|x", /* 20 digits: overlong */
        "99999999999999999999999|e|x",
        "5|etag", /* no second bar */
        "5|",     /* no second bar */
        "4|etag", /* tombstone without second bar */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cache_value *v;
        assert_int_equal(decode_str(cases[i], &v), -1);
        assert_null(v);
    }
}

static void test_etag_length(void **state)
{
    (void)state;
    char buf[CACHE_ETAG_MAX + 16];
    struct cache_value *v;
    /* CACHE_ETAG_MAX - 1 bytes fit (plus the NUL). */
    buf[0] = '3';
    buf[1] = '|';
    memset(buf + 2, 'e', CACHE_ETAG_MAX - 1);
    buf[2 + CACHE_ETAG_MAX - 1] = '|';
    buf[3 + CACHE_ETAG_MAX - 1] = 'b';
    assert_int_equal(decode(buf, 4 + CACHE_ETAG_MAX - 1, &v), 0);
    assert_non_null(v);
    assert_int_equal(v->etag_len, CACHE_ETAG_MAX - 1);
    assert_int_equal(strlen(v->etag), CACHE_ETAG_MAX - 1);
    assert_int_equal(v->len, 1);
    assert_int_equal(v->data[0], 'b');
    cache_value_release(v);
    /* CACHE_ETAG_MAX bytes do not: for a value or a tombstone. */
    memset(buf + 2, 'e', CACHE_ETAG_MAX);
    buf[2 + CACHE_ETAG_MAX] = '|';
    buf[3 + CACHE_ETAG_MAX] = 'b';
    assert_int_equal(decode(buf, 4 + CACHE_ETAG_MAX, &v), -1);
    assert_null(v);
    buf[0] = '2';
    assert_int_equal(decode(buf, 4 + CACHE_ETAG_MAX, &v), -1);
    assert_null(v);
    /* A bar past the limit does not count as the etag's end. */
    buf[0] = '3';
    memset(buf + 2, 'e', CACHE_ETAG_MAX + 8);
    assert_int_equal(decode(buf, 2 + CACHE_ETAG_MAX + 8, &v), -1);
    assert_null(v);
}

/* The body is everything after the second bar, bars and NULs included. */
static void test_binary_body(void **state)
{
    (void)state;
    static const char body[] = "a|b||\0c|\xff\x00|end|";
    const size_t blen = sizeof(body) - 1;
    char buf[64];
    memcpy(buf, "7|E|", 4);
    memcpy(buf + 4, body, blen);
    struct cache_value *v;
    assert_int_equal(decode(buf, 4 + blen, &v), 0);
    assert_non_null(v);
    assert_int_equal(v->version, 3);
    assert_string_equal(v->etag, "E");
    assert_int_equal(v->len, blen);
    assert_memory_equal(v->data, body, blen);
    assert_int_equal(v->data[blen], '\0');

    /* Encoding it back as l2_write() does gives the same value again. */
    char again[64];
    size_t n = 0;
    memcpy(again, "7|", 2);
    n = 2;
    memcpy(again + n, v->etag, v->etag_len);
    n += v->etag_len;
    again[n++] = '|';
    memcpy(again + n, v->data, v->len);
    n += v->len;
    struct cache_value *w;
    assert_int_equal(decode(again, n, &w), 0);
    assert_non_null(w);
    assert_int_equal(w->len, v->len);
    assert_memory_equal(w->data, v->data, v->len);
    assert_string_equal(w->etag, v->etag);
    assert_int_equal(w->version, v->version);
    cache_value_release(v);
    cache_value_release(w);

    /* The length, not a NUL, ends the input: trailing bytes not passed are
     * not read. */
    assert_int_equal(decode("3|e|abcdef", 6, &v), 0);
    assert_non_null(v);
    assert_int_equal(v->len, 2);
    assert_memory_equal(v->data, "ab", 2);
    cache_value_release(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value),       cmocka_unit_test(test_version_from_rank),
        cmocka_unit_test(test_tombstone),   cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_etag_length), cmocka_unit_test(test_binary_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
