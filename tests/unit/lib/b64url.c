/* Unit tests for lib/b64url.c: RFC 4648 vectors in the URL-safe alphabet
 * without padding, round trips, and strict decoding. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "b64url.h"

static const struct {
    const char *plain;
    const char *enc;
} vectors[] = {
    /* RFC 4648 §10, padding removed. */
    {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
    {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
};

static void test_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const char *p = vectors[i].plain, *e = vectors[i].enc;
        char out[32];
        unsigned char dec[32];
        size_t n = 99;
        assert_int_equal(b64url_encoded_len(strlen(p)), strlen(e));
        memset(out, 'Z', sizeof(out));
        assert_int_equal(b64url_encode(out, sizeof(out), (const unsigned char *)p, strlen(p)),
                         strlen(e));
        assert_string_equal(out, e);
        assert_int_equal(b64url_decode(dec, sizeof(dec), e, strlen(e), &n), 0);
        assert_int_equal(n, strlen(p));
        assert_memory_equal(dec, p, n);
    }
}

static void test_url_alphabet(void **state)
{
    (void)state;
    /* Bytes whose standard encoding is "+/+/" and "+/8". */
    static const unsigned char a[] = {0xfb, 0xff, 0xbf};
    static const unsigned char b[] = {0xfb, 0xff};
    char out[16];
    unsigned char dec[16];
    size_t n;
    assert_int_equal(b64url_encode(out, sizeof(out), a, sizeof(a)), 4);
    assert_string_equal(out, "-_-_");
    assert_int_equal(b64url_encode(out, sizeof(out), b, sizeof(b)), 3);
    assert_string_equal(out, "-_8");
    assert_int_equal(b64url_decode(dec, sizeof(dec), "-_-_", 4, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(dec, a, 3);

    /* The whole alphabet decodes and re-encodes to itself. */
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char bytes[48];
    char back[70];
    assert_int_equal(b64url_decode(bytes, sizeof(bytes), alpha, 64, &n), 0);
    assert_int_equal(n, 48);
    assert_int_equal(b64url_encode(back, sizeof(back), bytes, n), 64);
    assert_string_equal(back, alpha);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static unsigned char next_byte(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned char)(rng >> 24);
}

static void test_round_trips(void **state)
{
    (void)state;
    for (size_t len = 0; len <= 100; len++) {
        for (int rep = 0; rep < 20; rep++) {
            unsigned char src[100], dec[100];
            char enc[140];
            size_t n = 12345;
            for (size_t i = 0; i < len; i++)
                src[i] = next_byte();
            size_t elen = b64url_encode(enc, b64url_encoded_len(len) + 1, src, len);
            assert_int_equal(elen, b64url_encoded_len(len));
            assert_int_equal(strlen(enc), elen);
            assert_int_not_equal(elen % 4, 1);
            assert_null(strpbrk(enc, "+/="));
            /* Decoding into exactly the decoded size works. */
            assert_int_equal(b64url_decode(dec, len, enc, elen, &n), 0);
            assert_int_equal(n, len);
            if (len > 0)
                assert_memory_equal(dec, src, len);
            /* One byte less is refused. */
            if (len > 0)
                assert_int_equal(b64url_decode(dec, len - 1, enc, elen, &n), -1);
        }
    }
}

static void expect_reject(const char *s)
{
    unsigned char dec[64];
    size_t n = 0;
    if (b64url_decode(dec, sizeof(dec), s, strlen(s), &n) != -1)
        fail_msg("decoded '%s'", s);
}

static void test_strict_decoding(void **state)
{
    (void)state;
    /* Padding. */
    expect_reject("Zg==");
    expect_reject("Zm8=");
    expect_reject("Zm9vYg==");
    expect_reject("====");
    /* The standard alphabet's '+' and '/'. */
    expect_reject("+/8");
    expect_reject("-_+/");
    expect_reject("Zm9/");
    /* Whitespace anywhere. */
    expect_reject("Zm9v\n");
    expect_reject(" Zm9v");
    expect_reject("Zm 9v");
    expect_reject("Zm9v\r\nYmFy");
    expect_reject("Zm9\t");
    /* A length of 4k+1 can never be produced. */
    expect_reject("Z");
    expect_reject("Zm9vY");
    /* Non-zero unused bits: only "Zg" and "Zm8" are canonical. */
    expect_reject("Zh");
    expect_reject("Zv");
    expect_reject("Zm9");
    expect_reject("Zm-");
    /* Other bytes. */
    expect_reject("Zm9v!");
    expect_reject("Zm9.");
    expect_reject("\xc3\xa9Zg");
    /* A NUL inside the counted length. */
    unsigned char dec[8];
    size_t n;
    assert_int_equal(b64url_decode(dec, sizeof(dec), "Zm\0v", 4, &n), -1);
    /* The canonical forms decode. */
    assert_int_equal(b64url_decode(dec, sizeof(dec), "Zg", 2, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(dec[0], 'f');
}

static void test_small_buffers(void **state)
{
    (void)state;
    unsigned char dec[8];
    size_t n = 77;
    assert_int_equal(b64url_decode(dec, 5, "Zm9vYmFy", 8, &n), -1);
    assert_int_equal(b64url_decode(dec, 6, "Zm9vYmFy", 8, &n), 0);
    assert_int_equal(n, 6);
    assert_int_equal(b64url_decode(dec, 0, "Zg", 2, &n), -1);
    assert_int_equal(b64url_decode(dec, 0, "", 0, &n), 0);
    assert_int_equal(n, 0);

    char out[8];
    memset(out, 'Q', sizeof(out));
    /* "foo" needs 4 characters plus the NUL. */
    assert_int_equal(b64url_encode(out, 4, (const unsigned char *)"foo", 3), 0);
    assert_int_equal(out[0], 'Q');
    assert_int_equal(out[3], 'Q');
    assert_int_equal(b64url_encode(out, 5, (const unsigned char *)"foo", 3), 4);
    assert_string_equal(out, "Zm9v");
    assert_int_equal(out[5], 'Q');
    assert_int_equal(b64url_encode(out, 0, (const unsigned char *)"", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),       cmocka_unit_test(test_url_alphabet),
        cmocka_unit_test(test_round_trips),   cmocka_unit_test(test_strict_decoding),
        cmocka_unit_test(test_small_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
