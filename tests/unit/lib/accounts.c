/* Unit tests for the pure parts of lib/accounts.c (no database): the input
 * rules of SPEC §4 for email, password and name. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"

static struct accounts_req fresh_req(void)
{
    struct accounts_req r;
    memset(&r, 0, sizeof(r));
    return r;
}

/* ---- email ------------------------------------------------------------- */

static void email_ok(const char *e, size_t len)
{
    struct accounts_req r = fresh_req();
    if (accounts_check_email(&r, e, len) != 0)
        fail_msg("refused '%.*s' (%zu bytes): %s", (int)(len > 80 ? 80 : len), e, len,
                 r.detail ? r.detail : "?");
    assert_null(r.code);
}

static void email_bad(const char *e, size_t len, const char *what)
{
    struct accounts_req r = fresh_req();
    if (accounts_check_email(&r, e, len) != -1)
        fail_msg("accepted %s", what);
    assert_non_null(r.code);
    assert_string_equal(r.code, "invalid_email");
    assert_non_null(r.field);
    assert_string_equal(r.field, "email");
    assert_non_null(r.detail);
    assert_true(strlen(r.detail) > 0);
}

static void email_ok_s(const char *e)
{
    email_ok(e, strlen(e));
}

static void email_bad_s(const char *e)
{
    email_bad(e, strlen(e), e);
}

/* An address of exactly n bytes: local part of a's, "@example.org". */
static char *email_of_len(size_t n)
{
    const char *dom = "@example.org";
    size_t dl = strlen(dom);
    char *s = malloc(n + 1);
    assert_non_null(s);
    assert_true(n > dl);
    memset(s, 'a', n - dl);
    memcpy(s + n - dl, dom, dl + 1);
    assert_int_equal(strlen(s), n);
    return s;
}

static void test_email(void **state)
{
    (void)state;
    email_ok_s("a@b.co");
    email_ok_s("alice@example.org");
    email_ok_s("Alice.Smith+tag@mail.Example.ORG");
    email_ok_s("x_y-z@sub-domain.example.co.uk");
    email_ok_s("o'brien@example.ie");

    /* The 254-byte limit, exactly. */
    char *e = email_of_len(254);
    email_ok(e, 254);
    free(e);
    e = email_of_len(255);
    email_bad(e, 255, "255 bytes");
    free(e);
    e = email_of_len(4096);
    email_bad(e, 4096, "4096 bytes");
    free(e);

    email_bad("", 0, "empty");
    email_bad_s("alice.example.org");     /* no @ */
    email_bad_s("alice@bob@example.org"); /* two @ */
    email_bad_s("alice@@example.org");    /* two @ together */
    email_bad_s("@example.org");          /* empty local part */
    email_bad_s("alice@");                /* empty domain */
    email_bad_s("alice@localhost");       /* domain without a dot */
    email_bad_s("alice@.example.org");    /* leading dot */
    email_bad_s("alice@example.org.");    /* trailing dot */
    email_bad_s("alice@example..org");    /* empty label */
    email_bad_s("alice@.");               /* just a dot */
    email_bad_s("alice@a.");              /* trailing dot, short */
    email_bad_s("al ice@example.org");    /* space */
    email_bad_s(" alice@example.org");    /* leading space */
    email_bad_s("alice@example.org ");    /* trailing space */
    email_bad_s("alice@exa mple.org");    /* space in the domain */
    email_bad_s("al\tice@example.org");   /* tab */
    email_bad_s("alice\r\n@example.org"); /* CR LF (header injection) */
    email_bad_s("ali\x01"
                "ce@example.org");            /* control character */
    email_bad_s("alice@example.org\x7f");     /* DEL */
    email_bad_s("Alice <alice@example.org>"); /* display name */
    email_bad_s("\"alice\"@example.org");     /* quoted local part */
    email_bad_s("alice,bob@example.org");     /* list */
    email_bad_s("alice;@example.org");

    /* NUL inside: len counts bytes after it. */
    const char nul[] = "alice\0@example.org";
    email_bad(nul, sizeof(nul) - 1, "NUL inside, len > strlen");
    const char nul2[] = "alice@example.org\0x";
    email_bad(nul2, sizeof(nul2) - 1, "NUL before a trailing byte");
}

/* ---- password and name -------------------------------------------------- */

static void test_password(void **state)
{
    (void)state;
    char *pw = malloc(1100);
    assert_non_null(pw);
    memset(pw, 'p', 1100);
    const size_t ok[] = {8, 9, 64, 1023, 1024};
    const size_t bad[] = {0, 1, 7, 1025, 1100};
    const char *fields[] = {"password", "new_password", "current_password"};
    for (size_t f = 0; f < 3; f++) {
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
            struct accounts_req r = fresh_req();
            if (accounts_check_password(&r, fields[f], pw, ok[i]) != 0)
                fail_msg("%zu bytes refused", ok[i]);
            assert_null(r.code);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            struct accounts_req r = fresh_req();
            if (accounts_check_password(&r, fields[f], pw, bad[i]) != -1)
                fail_msg("%zu bytes accepted", bad[i]);
            assert_string_equal(r.code, "invalid_password");
            assert_string_equal(r.field, fields[f]);
            assert_non_null(r.detail);
        }
    }
    /* Bytes, not characters: 8 bytes of UTF-8 (4 two-byte chars) pass, any
     * byte values pass (NUL included: JSON allows \u0000). */
    struct accounts_req r = fresh_req();
    assert_int_equal(accounts_check_password(&r, "password", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8),
                     0);
    assert_int_equal(accounts_check_password(&r, "password", "a\0bcdefg", 8), 0);
    free(pw);
}

static void test_name(void **state)
{
    (void)state;
    char name[300];
    memset(name, 'n', sizeof(name));
    struct accounts_req r = fresh_req();
    assert_int_equal(accounts_check_name(&r, name, 0), 0);
    assert_int_equal(accounts_check_name(&r, name, 1), 0);
    assert_int_equal(accounts_check_name(&r, name, 256), 0);
    assert_null(r.code);
    r = fresh_req();
    assert_int_equal(accounts_check_name(&r, name, 257), -1);
    assert_non_null(r.code);
    assert_string_equal(r.field, "name");
    r = fresh_req();
    assert_int_equal(accounts_check_name(&r, name, 300), -1);
    assert_string_equal(r.field, "name");

    /* Unicode is fine; control characters are not. */
    const char *uni = "Zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac O'Brien-Smith";
    r = fresh_req();
    assert_int_equal(accounts_check_name(&r, uni, strlen(uni)), 0);
    const char *ctl[] = {"a\nb", "a\tb", "\x01", "ab\x1f", "a\x7f", "a\rb"};
    for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
        r = fresh_req();
        if (accounts_check_name(&r, ctl[i], strlen(ctl[i])) != -1)
            fail_msg("control character accepted in name %zu", i);
        assert_non_null(r.code);
        assert_string_equal(r.field, "name");
    }
    r = fresh_req();
    assert_int_equal(accounts_check_name(&r, "a\0b", 3), -1);
    assert_string_equal(r.field, "name");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_password),
        cmocka_unit_test(test_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
