/* Unit tests for lib/template.c: rendering, the RFC 5322 message, and hostile
 * values: header injection through an email address, a link or a subject
 * must be impossible; non-ASCII subjects are RFC 2047 encoded. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "template.h"

static const char tpl[] = "Subject: Reset for {{email}}\n\nHi {{email}},\n\n{{link}}\n\n"
                          "Expires in {{expires_minutes}} min. {{unknown}} stays.\n";

static void test_render(void **state)
{
    (void)state;
    struct buf s = {0}, b = {0};
    char err[128];
    struct template_vars v = {"https://x.example/r?token=abc", "a@b.example", 30};
    assert_int_equal(template_render(tpl, strlen(tpl), &v, &s, &b, err, sizeof(err)), 0);
    buf_putc(&s, '\0');
    buf_putc(&b, '\0');
    assert_string_equal(s.data, "Reset for a@b.example");
    assert_string_equal(b.data, "Hi a@b.example,\n\nhttps://x.example/r?token=abc\n\n"
                                "Expires in 30 min. {{unknown}} stays.\n");
    buf_free(&s);
    buf_free(&b);
    /* No Subject line: refused. */
    s = (struct buf){0};
    b = (struct buf){0};
    assert_int_equal(template_render("Hello\n\nbody", 11, &v, &s, &b, err, sizeof(err)), -1);
    buf_free(&s);
    buf_free(&b);
}

static void test_render_refuses_crlf_values(void **state)
{
    (void)state;
    const char *bad[] = {"a@b.example\r\nBcc: victim@evil.example", "a@b.example\nX: y",
                         "a@b.example\r"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct buf s = {0}, b = {0};
        char err[128];
        struct template_vars v = {"https://l", bad[i], 1};
        assert_int_equal(template_render(tpl, strlen(tpl), &v, &s, &b, err, sizeof(err)), -1);
        struct template_vars w = {bad[i], "a@b.example", 1};
        assert_int_equal(template_render(tpl, strlen(tpl), &w, &s, &b, err, sizeof(err)), -1);
        buf_free(&s);
        buf_free(&b);
    }
}

static void test_address(void **state)
{
    (void)state;
    assert_true(template_address_ok("a@b.example"));
    assert_true(template_address_ok("first.last+tag@sub.example.org"));
    const char *bad[] = {"",
                         "ab",
                         "no-at.example",
                         "a@@b",
                         "@b.example",
                         "a@",
                         "a b@c.example",
                         "a@b.example\r\nBcc: x@y.example",
                         "a@b.example\nBcc: x@y.example",
                         "<a@b.example>",
                         "\"a\"@b.example",
                         "a@b.example,c@d.example",
                         "a@b.example;c@d.example",
                         "a(comment)@b.example",
                         "a\\@b.example",
                         "j\xc3\xbcrgen@example.org"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (template_address_ok(bad[i]))
            fail_msg("accepted '%s'", bad[i]);
}

/* Decode one "=?UTF-8?B?...?=" word at p into out; returns bytes. */
static size_t decode_word(const char *p, unsigned char *out, size_t outlen)
{
    const char *start = strstr(p, "=?UTF-8?B?");
    assert_non_null(start);
    start += 10;
    const char *end = strstr(start, "?=");
    assert_non_null(end);
    size_t n = 0;
    assert_int_equal(sodium_base642bin(out, outlen, start, (size_t)(end - start), NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    return n;
}

static void test_header_value(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(template_header_value(&b, "Plain subject", 13), 0);
    buf_putc(&b, '\0');
    assert_string_equal(b.data, "Plain subject");
    buf_free(&b);

    const char *u = "Passwort zur\xc3\xbc"
                    "cksetzen f\xc3\xbcr J\xc3\xbcrgen";
    b = (struct buf){0};
    assert_int_equal(template_header_value(&b, u, strlen(u)), 0);
    buf_putc(&b, '\0');
    for (size_t i = 0; i < b.len - 1; i++)
        assert_true((unsigned char)b.data[i] < 0x80);
    unsigned char dec[128];
    size_t n = decode_word(b.data, dec, sizeof(dec));
    assert_int_equal(n, strlen(u));
    assert_memory_equal(dec, u, n);
    buf_free(&b);

    /* Long non-ASCII text: several words of at most 75 bytes, folded, and
     * no UTF-8 sequence split between two words. */
    char longs[400] = "";
    for (int i = 0; i < 40; i++)
        strcat(longs, "\xc3\xa9\xe2\x82\xac"); /* é€ */
    b = (struct buf){0};
    assert_int_equal(template_header_value(&b, longs, strlen(longs)), 0);
    buf_putc(&b, '\0');
    size_t total = 0;
    for (char *p = b.data; (p = strstr(p, "=?UTF-8?B?")) != NULL;) {
        char *end = strstr(p, "?=");
        assert_true(end + 2 - p <= 75);
        n = decode_word(p, dec, sizeof(dec));
        /* Each word starts with a lead byte. */
        assert_true((dec[0] & 0xc0) != 0x80);
        total += n;
        p = end + 2;
    }
    assert_int_equal(total, strlen(longs));
    buf_free(&b);

    b = (struct buf){0};
    assert_int_equal(template_header_value(&b, "a\r\nBcc: x@y", 11), -1);
    assert_int_equal(template_header_value(&b, "a\nb", 3), -1);
    assert_int_equal(template_header_value(&b, "a\0b", 3), -1);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_message(void **state)
{
    (void)state;
    struct buf b = {0};
    char err[128];
    struct template_message m = {.from = "access@mail.example",
                                 .to = "user@example.org",
                                 .subject = "Confirm \xc3\xa9",
                                 .body = "line one\nline two\n.dot line\n",
                                 .date = 1767225600, /* 2026-01-01T00:00:00Z, a Thursday */
                                 .message_id = "01a233bf-913d-70bb-8402-3d784e485f8e"};
    assert_int_equal(template_message(&m, &b, err, sizeof(err)), 0);
    buf_putc(&b, '\0');
    assert_non_null(strstr(b.data, "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"));
    assert_non_null(
        strstr(b.data, "Message-ID: <01a233bf-913d-70bb-8402-3d784e485f8e@mail.example>\r\n"));
    assert_non_null(strstr(b.data, "From: access@mail.example\r\nTo: user@example.org\r\n"));
    assert_non_null(strstr(b.data, "Subject: =?UTF-8?B?"));
    assert_non_null(strstr(b.data, "Content-Type: text/plain; charset=utf-8\r\n"));
    assert_non_null(strstr(b.data, "\r\n\r\nline one\r\nline two\r\n.dot line\r\n"));
    /* Every line ends in CRLF, no bare LF anywhere. */
    for (size_t i = 0; i < b.len - 1; i++)
        if (b.data[i] == '\n')
            assert_int_equal(b.data[i - 1], '\r');
    buf_free(&b);

    /* Hostile recipients, subjects and ids: refused, never written. */
    struct template_message bad[] = {
        {"access@mail.example", "user@example.org\r\nBcc: all@evil.example", "s", "b", 0, "id"},
        {"access@mail.example", "user@example.org", "s\r\nBcc: all@evil.example", "b", 0, "id"},
        {"access@mail.example\r\nX: y", "user@example.org", "s", "b", 0, "id"},
        {"access@mail.example", "user@example.org", "s", "b", 0, "id>\r\nBcc: x"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct buf o = {0};
        assert_int_equal(template_message(&bad[i], &o, err, sizeof(err)), -1);
        if (o.data != NULL)
            assert_null(strstr(o.data, "Bcc:"));
        buf_free(&o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_render_refuses_crlf_values),
        cmocka_unit_test(test_address),
        cmocka_unit_test(test_header_value),
        cmocka_unit_test(test_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
