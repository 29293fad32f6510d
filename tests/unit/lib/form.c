/* Unit tests for lib/form.c: the strict form decoder of the OAuth endpoints
 * (RFC 6749 §3.1 duplicates and empty values, escapes, bounds). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "form.h"

static enum form_result parse(const char *s, struct form *f)
{
    char err[128];
    return form_parse(s, strlen(s), f, err, sizeof(err));
}

static void test_decodes(void **state)
{
    (void)state;
    struct form f;
    assert_int_equal(parse("grant_type=client_credentials&scope=api+admin&x=%41%2b%2F%e2%82%ac",
                           &f),
                     FORM_OK);
    assert_int_equal(f.n, 3);
    assert_string_equal(form_get(&f, "grant_type"), "client_credentials");
    assert_string_equal(form_get(&f, "scope"), "api admin");
    assert_string_equal(form_get(&f, "x"), "A+/\xe2\x82\xac");
    assert_null(form_get(&f, "absent"));
    form_free(&f);
    assert_null(f.mem);
}

static void test_empty_value_is_omitted(void **state)
{
    (void)state;
    struct form f;
    assert_int_equal(parse("scope=&grant_type=client_credentials", &f), FORM_OK);
    assert_null(form_get(&f, "scope"));
    assert_int_equal(f.n, 1);
    form_free(&f);
    assert_int_equal(parse("", &f), FORM_OK);
    assert_int_equal(f.n, 0);
    form_free(&f);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        enum form_result want;
    } cases[] = {
        {"a=1&a=2", FORM_DUPLICATE},
        {"a=&a=2", FORM_DUPLICATE},
        {"a%3D=1&a%3d=2", FORM_DUPLICATE},
        {"a=1&&b=2", FORM_MALFORMED},
        {"a=1&", FORM_MALFORMED},
        {"&a=1", FORM_MALFORMED},
        {"a", FORM_MALFORMED},
        {"=1", FORM_MALFORMED},
        {"a=%", FORM_MALFORMED},
        {"a=%4", FORM_MALFORMED},
        {"a=%zz", FORM_MALFORMED},
        {"a=%00", FORM_BAD_TEXT},
        {"a=%0a", FORM_BAD_TEXT},
        {"a=%ff", FORM_BAD_TEXT},
        {"a=%c0%80", FORM_BAD_TEXT},
        {"%01=x", FORM_BAD_TEXT},
        {"{\"grant_type\":\"client_credentials\"}", FORM_MALFORMED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct form f;
        enum form_result r = parse(cases[i].in, &f);
        if (r != cases[i].want)
            fail_msg("%s: got %d want %d", cases[i].in, (int)r, (int)cases[i].want);
        assert_int_equal(f.n, 0);
        form_free(&f);
    }
}

static void test_bounds(void **state)
{
    (void)state;
    struct form f;
    char buf[FORM_MAX_BODY + 64];
    size_t o = 0;
    for (int i = 0; i < FORM_MAX_PAIRS; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%sp%d=v", i ? "&" : "", i);
    assert_int_equal(parse(buf, &f), FORM_OK);
    assert_int_equal(f.n, FORM_MAX_PAIRS);
    form_free(&f);
    snprintf(buf + o, sizeof(buf) - o, "&one=more");
    assert_int_equal(parse(buf, &f), FORM_TOO_LARGE);
    form_free(&f);

    memset(buf, 'n', FORM_MAX_NAME + 1);
    snprintf(buf + FORM_MAX_NAME + 1, 8, "=v");
    assert_int_equal(parse(buf, &f), FORM_TOO_LARGE);
    form_free(&f);
    buf[1] = '=';
    memset(buf + 2, 'v', FORM_MAX_VALUE + 1);
    buf[FORM_MAX_VALUE + 3] = '\0';
    assert_int_equal(parse(buf, &f), FORM_TOO_LARGE);
    form_free(&f);
    buf[FORM_MAX_VALUE + 2] = '\0';
    assert_int_equal(parse(buf, &f), FORM_OK);
    assert_int_equal(strlen(form_get(&f, "n")), FORM_MAX_VALUE);
    form_free(&f);
    /* Escapes count decoded: %41 x MAX is MAX bytes. */
    char esc[3 * FORM_MAX_VALUE + 8] = "n=";
    for (int i = 0; i < FORM_MAX_VALUE / 4; i++)
        strcat(esc, "%41");
    assert_int_equal(parse(esc, &f), FORM_OK);
    form_free(&f);
    static char big[FORM_MAX_BODY + 2];
    memset(big, 'a', sizeof(big) - 1);
    assert_int_equal(form_parse(big, sizeof(big) - 1, &f, buf, 64), FORM_TOO_LARGE);
    form_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes),
        cmocka_unit_test(test_empty_value_is_omitted),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
