/* Unit tests for lib/problem.c: the exact problem document text of SPEC §4,
 * escaping of the detail, and the status titles. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "problem.h"

static void test_409_with_detail(void **state)
{
    (void)state;
    struct buf b = {0};
    problem_render(&b, 409, "email_taken", "this email address is already registered", NULL);
    assert_string_equal(b.data, "{\"type\":\"about:blank\",\"title\":\"Conflict\",\"status\":409,"
                                "\"code\":\"email_taken\",\"detail\":\"this email address is "
                                "already registered\"}");
    assert_int_equal(b.len, strlen(b.data));
    buf_free(&b);
}

static void test_422_with_field(void **state)
{
    (void)state;
    struct buf b = {0};
    problem_render(&b, 422, "invalid_email", "email must be an address", "email");
    assert_string_equal(b.data,
                        "{\"type\":\"about:blank\",\"title\":\"Unprocessable Content\","
                        "\"status\":422,\"code\":\"invalid_email\",\"detail\":\"email must be an "
                        "address\",\"field\":\"email\"}");
    buf_free(&b);
}

static void test_without_detail(void **state)
{
    (void)state;
    struct buf b = {0};
    problem_render(&b, 404, "not_found", NULL, NULL);
    assert_string_equal(b.data, "{\"type\":\"about:blank\",\"title\":\"Not Found\",\"status\":404,"
                                "\"code\":\"not_found\"}");
    buf_free(&b);
}

static void test_appends(void **state)
{
    (void)state;
    struct buf b = {0};
    buf_puts(&b, "X");
    problem_render(&b, 503, "overloaded", NULL, NULL);
    assert_string_equal(b.data, "X{\"type\":\"about:blank\",\"title\":\"Service Unavailable\","
                                "\"status\":503,\"code\":\"overloaded\"}");
    buf_free(&b);
}

static void test_detail_escaping(void **state)
{
    (void)state;
    struct buf b = {0};
    problem_render(&b, 400, "invalid_json", "bad \"x\" \\ \n\t\x01\x1f end \xff\xc3\xa9", NULL);
    assert_string_equal(b.data,
                        "{\"type\":\"about:blank\",\"title\":\"Bad Request\",\"status\":400,"
                        "\"code\":\"invalid_json\",\"detail\":\"bad \\\"x\\\" \\\\ "
                        "\\n\\t\\u0001\\u001f end \xef\xbf\xbd\xc3\xa9\"}");
    /* And it is a valid JSON object whose detail reads back. */
    json_object *o;
    char err[128];
    assert_int_equal(json_parse_object(b.data, b.len, &o, err, sizeof(err)), JSON_PARSE_OK);
    json_object *d;
    assert_true(json_object_object_get_ex(o, "detail", &d));
    assert_string_equal(json_object_get_string(d),
                        "bad \"x\" \\ \n\t\x01\x1f end \xef\xbf\xbd\xc3\xa9");
    json_object *s;
    assert_true(json_object_object_get_ex(o, "status", &s));
    assert_true(json_object_is_type(s, json_type_int));
    assert_int_equal(json_object_get_int(s), 400);
    json_object_put(o);
    buf_free(&b);
}

static void test_titles(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *title;
    } t[] = {
        {400, "Bad Request"},       {401, "Unauthorized"},           {403, "Forbidden"},
        {404, "Not Found"},         {405, "Method Not Allowed"},     {409, "Conflict"},
        {413, "Content Too Large"}, {415, "Unsupported Media Type"}, {422, "Unprocessable Content"},
        {429, "Too Many Requests"}, {500, "Internal Server Error"},  {503, "Service Unavailable"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_string_equal(problem_title(t[i].status), t[i].title);
        struct buf b = {0};
        problem_render(&b, t[i].status, "x", NULL, NULL);
        char expect[160];
        snprintf(expect, sizeof(expect),
                 "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,\"code\":\"x\"}",
                 t[i].title, t[i].status);
        assert_string_equal(b.data, expect);
        buf_free(&b);
    }
    assert_string_equal(problem_title(599), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_409_with_detail), cmocka_unit_test(test_422_with_field),
        cmocka_unit_test(test_without_detail),  cmocka_unit_test(test_appends),
        cmocka_unit_test(test_detail_escaping), cmocka_unit_test(test_titles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
