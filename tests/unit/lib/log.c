/* Unit tests for lib/log.c: the text format escapes what it prints, so a
 * client cannot forge or split log lines. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

static void expect_text(const char *in, size_t n, const char *want)
{
    struct buf b = {0};
    log_text_value(&b, in, n);
    assert_non_null(b.data);
    assert_string_equal(b.data, want);
    buf_free(&b);
}

static void test_bare_values(void **state)
{
    (void)state;
    expect_text("GET", 3, "GET");
    expect_text("/api/v1/access/me", 17, "/api/v1/access/me");
    expect_text("0190a8c2-7d3e-7b6a-9c1d-2f0e4a5b6c7d", 36, "0190a8c2-7d3e-7b6a-9c1d-2f0e4a5b6c7d");
}

static void test_quoted_values(void **state)
{
    (void)state;
    expect_text("", 0, "\"\"");
    expect_text("slow query", 10, "\"slow query\"");
    expect_text("a=b", 3, "\"a=b\"");
    expect_text("say \"hi\"", 8, "\"say \\\"hi\\\"\"");
    expect_text("back\\slash", 10, "\"back\\\\slash\"");
}

static void test_control_characters(void **state)
{
    (void)state;
    /* A newline would end the line and start a forged one. */
    static const char forged[] = "x\n2026-01-01T00:00:00.000Z error msg=forged";
    expect_text(forged, sizeof(forged) - 1, "\"x\\n2026-01-01T00:00:00.000Z error msg=forged\"");
    expect_text("a\rb\tc", 5, "\"a\\rb\\tc\"");
    expect_text("\x1b[31mred\x1b[0m", 12, "\"\\x1b[31mred\\x1b[0m\"");
    expect_text("nul\0byte", 8, "\"nul\\x00byte\"");
    expect_text("del\x7f", 4, "\"del\\x7f\"");
}

static void test_utf8(void **state)
{
    (void)state;
    /* Valid UTF-8 is kept (quoted: it is not plain ASCII); bad bytes are escaped. */
    expect_text("caf\xc3\xa9", 5, "\"caf\xc3\xa9\"");
    expect_text("Mozilla \xe9t\xe9", 11, "\"Mozilla \\xe9t\\xe9\"");
    expect_text("\xc0\xaf", 2, "\"\\xc0\\xaf\"");
    expect_text("\xe2\x80\xa8", 3, "\"\xe2\x80\xa8\""); /* U+2028 is not a line end here */
}

/* A whole line through log_msg in the text format: one line, whatever the
 * message holds. */
static void test_text_line(void **state)
{
    (void)state;
    char path[] = "/tmp/access-log-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    log_init(LOG_INFO, LOG_FORMAT_TEXT);
    log_msg(LOG_WARN, "user agent %s", "evil\n2026-01-01T00:00:00.000Z error msg=\"forged\"");
    struct log_request r = {.request_id = "id\nx",
                            .method = "GET",
                            .route = "/r o",
                            .status = 200,
                            .dur_ms = 1.5,
                            .hash_ms = -1,
                            .db_ms = -1};
    log_request(&r);
    log_init(LOG_INFO, LOG_FORMAT_JSON);
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    char text[1024];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    text[n] = '\0';
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    *nl = '\0';
    char *second = nl + 1;
    assert_non_null(strstr(text, " warn msg=\"user agent evil\\n2026-01-01T00:00:00.000Z error "
                                 "msg=\\\"forged\\\"\""));
    nl = strchr(second, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, ""); /* exactly two lines */
    *nl = '\0';
    assert_non_null(strstr(second, " info request_id=\"id\\nx\" method=GET route=\"/r o\" "
                                   "status=200 dur_ms=1.500"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bare_values),        cmocka_unit_test(test_quoted_values),
        cmocka_unit_test(test_control_characters), cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_text_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
