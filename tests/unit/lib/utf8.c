/* Unit tests for lib/utf8.c: hostile header bytes made valid UTF-8 and cut
 * at a character boundary. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "utf8.h"

#define FFFD "\xef\xbf\xbd"

static void expect_clean(const char *in, size_t n, size_t outlen, const char *want)
{
    char out[1024];
    assert_true(outlen <= sizeof(out));
    memset(out, 'Z', sizeof(out));
    size_t got = utf8_sanitize(in, n, out, outlen);
    assert_int_equal(got, strlen(want));
    assert_memory_equal(out, want, got + 1); /* with the NUL */
}

static void test_valid_kept(void **state)
{
    (void)state;
    const char *s = "Mozilla/5.0 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf "
                    "\xed\x9f\xbf \xee\x80\x80 \xc2\x80 \xe0\xa0\x80 \xf0\x90\x80\x80";
    expect_clean(s, strlen(s), 513, s);
    expect_clean("", 0, 513, "");
    /* Only inlen bytes are read. */
    expect_clean("abcdef", 3, 513, "abc");
}

static void test_latin1(void **state)
{
    (void)state;
    expect_clean("Mozilla \xe9t\xe9", 11, 513, "Mozilla " FFFD "t" FFFD);
}

static void test_overlongs(void **state)
{
    (void)state;
    /* '/' as 2, 3 and 4 bytes; U+0000 as 2 bytes; U+07FF as 3; U+FFFF as 4. */
    expect_clean("\xc0\xaf", 2, 513, FFFD FFFD);
    expect_clean("\xe0\x80\xaf", 3, 513, FFFD FFFD FFFD);
    expect_clean("\xf0\x80\x80\xaf", 4, 513, FFFD FFFD FFFD FFFD);
    expect_clean("\xc0\x80", 2, 513, FFFD FFFD);
    expect_clean("\xe0\x9f\xbf", 3, 513, FFFD FFFD FFFD);
    expect_clean("\xf0\x8f\xbf\xbf", 4, 513, FFFD FFFD FFFD FFFD);
}

static void test_surrogates(void **state)
{
    (void)state;
    expect_clean("\xed\xa0\x80", 3, 513, FFFD FFFD FFFD);                            /* U+D800 */
    expect_clean("\xed\xbf\xbf", 3, 513, FFFD FFFD FFFD);                            /* U+DFFF */
    expect_clean("\xed\xa0\xbd\xed\xb8\x80", 6, 513, FFFD FFFD FFFD FFFD FFFD FFFD); /* CESU pair */
}

static void test_past_max_and_bad_leads(void **state)
{
    (void)state;
    expect_clean("\xf4\x90\x80\x80", 4, 513, FFFD FFFD FFFD FFFD); /* U+110000 */
    expect_clean("\xf5\x80\x80\x80", 4, 513, FFFD FFFD FFFD FFFD);
    expect_clean("\xf8\x88\x80\x80\x80", 5, 513, FFFD FFFD FFFD FFFD FFFD); /* 5-byte form */
    expect_clean("\xff\xfe", 2, 513, FFFD FFFD);
    expect_clean("a\x80"
                 "b",
                 3, 513, "a" FFFD "b"); /* stray continuation */
}

static void test_truncated(void **state)
{
    (void)state;
    expect_clean("\xe2\x82", 2, 513, FFFD FFFD);
    expect_clean("\xe2\x82x", 3, 513, FFFD FFFD "x");
    expect_clean("ab\xf0\x9f\x98", 5, 513, "ab" FFFD FFFD FFFD);
    expect_clean("\xc3", 1, 513, FFFD);
}

static void test_nul_replaced(void **state)
{
    (void)state;
    expect_clean("a\0b", 3, 513, "a" FFFD "b");
}

static void test_cut_at_boundary(void **state)
{
    (void)state;
    char in[1000], want[600];
    /* 400 two-byte characters: 512 bytes hold 256 of them. */
    for (int i = 0; i < 400; i++)
        memcpy(in + 2 * i, "\xc3\xa9", 2);
    memcpy(want, in, 512);
    want[512] = '\0';
    expect_clean(in, 800, UTF8_HEADER_MAX + 1, want);
    /* 'x' first: 1 + 255 * 2 = 511 bytes, the next character does not fit. */
    in[0] = 'x';
    for (int i = 0; i < 400; i++)
        memcpy(in + 1 + 2 * i, "\xc3\xa9", 2);
    memcpy(want, in, 511);
    want[511] = '\0';
    expect_clean(in, 801, UTF8_HEADER_MAX + 1, want);
    /* A replacement character that does not fit is left out whole. */
    memset(in, 'a', 511);
    in[511] = (char)0xff;
    memcpy(want, in, 511);
    want[511] = '\0';
    expect_clean(in, 512, UTF8_HEADER_MAX + 1, want);
    /* ASCII is cut at exactly 512 bytes. */
    memset(in, 'a', sizeof(in));
    memset(want, 'a', 512);
    want[512] = '\0';
    expect_clean(in, sizeof(in), UTF8_HEADER_MAX + 1, want);
    /* A four-byte character with 3 bytes of room left is not split. */
    expect_clean("ab\xf0\x9f\x98\x80", 6, 5, "ab");
    expect_clean("ab", 2, 1, "");
}

static void test_seq_len(void **state)
{
    (void)state;
    assert_int_equal(utf8_seq_len((const unsigned char *)"a", 1), 1);
    assert_int_equal(utf8_seq_len((const unsigned char *)"\xc3\xa9", 2), 2);
    assert_int_equal(utf8_seq_len((const unsigned char *)"\xc3\xa9", 1), 0);
    assert_int_equal(utf8_seq_len((const unsigned char *)"\xe2\x82\xac", 3), 3);
    assert_int_equal(utf8_seq_len((const unsigned char *)"\xf4\x8f\xbf\xbf", 4), 4);
    assert_int_equal(utf8_seq_len((const unsigned char *)"\xf4\x90\x80\x80", 4), 0);
    assert_int_equal(utf8_seq_len((const unsigned char *)"\xed\xa0\x80", 3), 0);
    assert_int_equal(utf8_seq_len((const unsigned char *)"\xc1\xbf", 2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_kept),
        cmocka_unit_test(test_latin1),
        cmocka_unit_test(test_overlongs),
        cmocka_unit_test(test_surrogates),
        cmocka_unit_test(test_past_max_and_bad_leads),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_nul_replaced),
        cmocka_unit_test(test_cut_at_boundary),
        cmocka_unit_test(test_seq_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
