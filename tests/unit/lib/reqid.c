/* Unit tests for lib/reqid.c: the X-Request-ID rule of SPEC §4. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "reqid.h"
#include "uuid.h"

/* A lower-case RFC 9562 version-7 UUID in 8-4-4-4-12 form. */
static void assert_uuidv7_text(const char *s)
{
    assert_int_equal(strlen(s), 36);
    for (size_t i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            assert_int_equal(c, '-');
            continue;
        }
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            fail_msg("'%s': character %zu is not lower-case hex", s, i);
    }
    assert_int_equal(s[14], '7');
    assert_non_null(strchr("89ab", s[19]));
}

static void expect_kept(const char *id)
{
    char out[REQID_MAX + 1];
    assert_true(reqid_valid(id, strlen(id)));
    memset(out, 'Z', sizeof(out));
    assert_int_equal(reqid_choose(id, out), 1);
    assert_string_equal(out, id);
}

static void expect_replaced(const char *id)
{
    char out[REQID_MAX + 1];
    if (id != NULL)
        assert_false(reqid_valid(id, strlen(id)));
    assert_int_equal(reqid_choose(id, out), 0);
    assert_uuidv7_text(out);
}

static void test_kept(void **state)
{
    (void)state;
    expect_kept("a");
    expect_kept("abc-123_XYZ.9");
    expect_kept("0123456789.-_");
    expect_kept("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._");
    char max[65];
    memset(max, 'x', 64);
    max[64] = '\0';
    expect_kept(max);
    /* A caller's UUID is kept verbatim, upper case included. */
    expect_kept("0190A5D4-AC96-774B-BCCE-B302099A8057");
}

static void test_replaced(void **state)
{
    (void)state;
    char long65[66];
    memset(long65, 'x', 65);
    long65[65] = '\0';
    expect_replaced(long65);
    char long300[301];
    memset(long300, 'a', 300);
    long300[300] = '\0';
    expect_replaced(long300);
    expect_replaced("");
    expect_replaced(NULL);
    expect_replaced(" ");
    expect_replaced("abc def");
    expect_replaced("abc/def");
    expect_replaced("abc\r\nX-Injected: 1");
    expect_replaced("caf\xc3\xa9");
    expect_replaced("\xff");
    expect_replaced("a+b");
    expect_replaced("a:b");
    expect_replaced("a\"b");
    expect_replaced("a\tb");
}

static void test_valid_uses_len(void **state)
{
    (void)state;
    /* Only len bytes are looked at. */
    assert_true(reqid_valid("abc def", 3));
    assert_false(reqid_valid("abc def", 4));
    assert_false(reqid_valid("abc", 0));
    assert_false(reqid_valid(NULL, 3));
    char s[70];
    memset(s, 'q', sizeof(s));
    assert_true(reqid_valid(s, 64));
    assert_false(reqid_valid(s, 65));
}

static void test_new_ids_differ(void **state)
{
    (void)state;
    char a[REQID_MAX + 1], b[REQID_MAX + 1];
    assert_int_equal(reqid_choose(NULL, a), 0);
    assert_int_equal(reqid_choose("bad id", b), 0);
    assert_string_not_equal(a, b);
    uint8_t ua[16], ub[16];
    assert_int_equal(uuid_parse(a, strlen(a), ua), 0);
    assert_int_equal(uuid_parse(b, strlen(b), ub), 0);
    assert_true(memcmp(ua, ub, 16) < 0); /* time-ordered */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kept),
        cmocka_unit_test(test_replaced),
        cmocka_unit_test(test_valid_uses_len),
        cmocka_unit_test(test_new_ids_differ),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
