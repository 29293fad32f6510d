/* Unit tests for lib/totp.c: RFC 6238 Appendix B's SHA-1 vectors (cut to
 * 6 digits: the last 6 of the 8-digit codes), the ±1 step window and the
 * matched step, refusal of malformed codes, base32. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "totp.h"

static const unsigned char rfc_secret[] = "12345678901234567890";

static const struct {
    time_t t;
    const char *code;
} vectors[] = {
    {59, "287082"},         {1111111109, "081804"}, {1111111111, "050471"},
    {1234567890, "005924"}, {2000000000, "279037"}, {20000000000, "353130"},
};

static void test_rfc6238_vectors(void **state)
{
    (void)state;
    assert_int_equal(totp_init(), 0);
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char out[TOTP_DIGITS + 1];
        int64_t step = -1;
        assert_int_equal(totp_generate(rfc_secret, 20, vectors[i].t, out), 0);
        assert_string_equal(out, vectors[i].code);
        assert_int_equal(totp_verify(rfc_secret, 20, vectors[i].t, 0, vectors[i].code, 6, &step),
                         0);
        assert_int_equal(step, (int64_t)(vectors[i].t / 30));
    }
}

static void test_window(void **state)
{
    (void)state;
    const time_t t = 1234567890; /* step 41152263 */
    int64_t step = 0;
    /* The code of t, checked 30 s later and earlier: ±1 step is accepted and
     * names the step of the code, not of now. */
    assert_int_equal(totp_verify(rfc_secret, 20, t + 30, TOTP_WINDOW, "005924", 6, &step), 0);
    assert_int_equal(step, 41152263);
    assert_int_equal(totp_verify(rfc_secret, 20, t - 30, TOTP_WINDOW, "005924", 6, &step), 0);
    assert_int_equal(step, 41152263);
    /* ±2 steps: refused. */
    assert_int_equal(totp_verify(rfc_secret, 20, t + 60, TOTP_WINDOW, "005924", 6, &step), -1);
    assert_int_equal(totp_verify(rfc_secret, 20, t - 60, TOTP_WINDOW, "005924", 6, &step), -1);
}

static void test_malformed(void **state)
{
    (void)state;
    int64_t step = 0;
    const time_t t = 1234567890;
    assert_int_equal(totp_verify(rfc_secret, 20, t, 1, "05924", 5, &step), -1);
    assert_int_equal(totp_verify(rfc_secret, 20, t, 1, "0059245", 7, &step), -1);
    assert_int_equal(totp_verify(rfc_secret, 20, t, 1, "00592a", 6, &step), -1);
    assert_int_equal(totp_verify(rfc_secret, 20, t, 1, "005925", 6, &step), -1);
    /* Another secret. */
    assert_int_equal(totp_verify((const unsigned char *)"12345678901234567891", 20, t, 1,
                                 "005924", 6, &step),
                     -1);
}

static void test_base32(void **state)
{
    (void)state;
    char out[TOTP_BASE32_MAX];
    assert_int_equal(totp_base32(rfc_secret, 20, out, sizeof(out)), 0);
    assert_string_equal(out, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_int_equal(totp_base32((const unsigned char *)"f", 1, out, sizeof(out)), 0);
    assert_string_equal(out, "MY"); /* padding dropped */
    assert_int_equal(totp_base32(rfc_secret, 20, out, 32), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc6238_vectors),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_base32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
