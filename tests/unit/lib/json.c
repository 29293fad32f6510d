/* Unit tests for lib/json.c: string escaping with UTF-8 repair, and the
 * strict whole-body object parser. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "json.h"

#define FFFD "\xef\xbf\xbd"

static void expect_put(const char *in, size_t n, const char *expect)
{
    struct buf b = {0};
    json_put_string(&b, in, n);
    assert_string_equal(b.data, expect);
    assert_int_equal(b.len, strlen(expect));
    buf_free(&b);
}

static void test_escapes(void **state)
{
    (void)state;
    expect_put("", 0, "\"\"");
    expect_put("plain text", 10, "\"plain text\"");
    expect_put("a\"b", 3, "\"a\\\"b\"");
    expect_put("a\\b", 3, "\"a\\\\b\"");
    expect_put("\n\t\r", 3, "\"\\n\\t\\r\"");
    expect_put("\x01\x1f\x08\x0c", 4, "\"\\u0001\\u001f\\u0008\\u000c\"");
    expect_put("a\0b", 3, "\"a\\u0000b\"");
    expect_put("/<>'\x7f", 5, "\"/<>'\x7f\"");
    /* Only n bytes are used. */
    expect_put("abcdef", 3, "\"abc\"");
}

static void test_utf8_kept(void **state)
{
    (void)state;
    const char *s = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xed\x9f\xbf "
                    "\xee\x80\x80 \xc2\x80 \xe0\xa0\x80 \xf0\x90\x80\x80";
    char expect[128];
    snprintf(expect, sizeof(expect), "\"%s\"", s);
    expect_put(s, strlen(s), expect);
}

static void test_utf8_repaired(void **state)
{
    (void)state;
    /* Bytes that never start a character. */
    expect_put("\xff", 1, "\"" FFFD "\"");
    expect_put("a\xfe"
               "b",
               3, "\"a" FFFD "b\"");
    expect_put("\x80", 1, "\"" FFFD "\"");
    expect_put("\xf5\x80\x80\x80", 4, "\"" FFFD FFFD FFFD FFFD "\"");
    /* Overlong forms of '/' and of U+0000 / U+07FF / U+FFFF. */
    expect_put("\xc0\xaf", 2, "\"" FFFD FFFD "\"");
    expect_put("\xc1\xbf", 2, "\"" FFFD FFFD "\"");
    expect_put("\xe0\x80\xaf", 3, "\"" FFFD FFFD FFFD "\"");
    expect_put("\xe0\x9f\xbf", 3, "\"" FFFD FFFD FFFD "\"");
    expect_put("\xf0\x8f\xbf\xbf", 4, "\"" FFFD FFFD FFFD FFFD "\"");
    /* UTF-16 surrogates encoded in UTF-8 (CESU). */
    expect_put("\xed\xa0\x80", 3, "\"" FFFD FFFD FFFD "\"");
    expect_put("\xed\xbf\xbf", 3, "\"" FFFD FFFD FFFD "\"");
    /* Past U+10FFFF. */
    expect_put("\xf4\x90\x80\x80", 4, "\"" FFFD FFFD FFFD FFFD "\"");
    /* Truncated sequences, at the end and before ASCII. */
    expect_put("\xe2\x82", 2, "\"" FFFD FFFD "\"");
    expect_put("\xe2\x82x", 3, "\"" FFFD FFFD "x\"");
    expect_put("\xf0\x9f\x98", 3, "\"" FFFD FFFD FFFD "\"");
    /* The count stops a sequence that goes on past n. */
    expect_put("\xc3\xa9", 1, "\"" FFFD "\"");
    /* A bad byte does not eat the valid character after it. */
    expect_put("\xff\xc3\xa9", 3, "\"" FFFD "\xc3\xa9\"");
}

static void test_put_cstr_and_append(void **state)
{
    (void)state;
    struct buf b = {0};
    buf_puts(&b, "{\"k\":");
    json_put_cstr(&b, "v\"1");
    buf_putc(&b, '}');
    assert_string_equal(b.data, "{\"k\":\"v\\\"1\"}");
    buf_free(&b);
}

/* Everything json_put_string writes is valid JSON and reads back. */
static void test_output_parses(void **state)
{
    (void)state;
    unsigned char raw[256];
    for (int i = 0; i < 256; i++)
        raw[i] = (unsigned char)i;
    struct buf b = {0};
    buf_puts(&b, "{\"s\":");
    json_put_string(&b, (const char *)raw, sizeof(raw));
    buf_putc(&b, '}');
    json_object *o;
    char err[200];
    assert_int_equal(json_parse_object(b.data, b.len, &o, err, sizeof(err)), JSON_PARSE_OK);
    json_object *s;
    assert_true(json_object_object_get_ex(o, "s", &s));
    /* The 128 ASCII bytes survive, each high byte became U+FFFD. */
    assert_int_equal(json_object_get_string_len(s), 128 + 128 * 3);
    assert_memory_equal(json_object_get_string(s) + 1, raw + 1, 127);
    json_object_put(o);
    buf_free(&b);
}

static enum json_parse_result parse(const char *body, size_t len, char *err, size_t errlen)
{
    json_object *o = (json_object *)1;
    err[0] = '\0';
    enum json_parse_result r = json_parse_object(body, len, &o, err, errlen);
    if (r == JSON_PARSE_OK) {
        assert_non_null(o);
        assert_true(json_object_is_type(o, json_type_object));
        json_object_put(o);
    } else {
        assert_null(o);
        if (err[0] == '\0')
            fail_msg("no detail for '%.*s'", (int)len, body);
    }
    return r;
}

static void expect_parse(const char *body, enum json_parse_result want)
{
    char err[256];
    enum json_parse_result r = parse(body, strlen(body), err, sizeof(err));
    if (r != want)
        fail_msg("'%s' gave %d (%s), expected %d", body, (int)r, err, (int)want);
}

static void test_parse_ok(void **state)
{
    (void)state;
    expect_parse("{}", JSON_PARSE_OK);
    expect_parse("{\"email\":\"a@b.example\",\"password\":\"x\",\"n\":[1,2,{}]}", JSON_PARSE_OK);
    expect_parse("{} ", JSON_PARSE_OK);
    expect_parse(" \t\r\n{}\r\n\t ", JSON_PARSE_OK);
    expect_parse("{\"a\":\"caf\xc3\xa9\"}", JSON_PARSE_OK);
    expect_parse("{\"a\":\"\\u00e9\\ud83d\\ude00\"}", JSON_PARSE_OK);

    json_object *o, *v;
    char err[128];
    const char *body = "{\"email\":\"a@b.example\"}";
    assert_int_equal(json_parse_object(body, strlen(body), &o, err, sizeof(err)), JSON_PARSE_OK);
    assert_true(json_object_object_get_ex(o, "email", &v));
    assert_string_equal(json_object_get_string(v), "a@b.example");
    json_object_put(o);
}

static void test_parse_not_object(void **state)
{
    (void)state;
    expect_parse("[1]", JSON_PARSE_NOT_OBJECT);
    expect_parse("[]", JSON_PARSE_NOT_OBJECT);
    expect_parse("\"x\"", JSON_PARSE_NOT_OBJECT);
    expect_parse("null", JSON_PARSE_NOT_OBJECT);
    expect_parse("true", JSON_PARSE_NOT_OBJECT);
    expect_parse("false", JSON_PARSE_NOT_OBJECT);
    expect_parse("1", JSON_PARSE_NOT_OBJECT);
    expect_parse("-1.5e3", JSON_PARSE_NOT_OBJECT);
    expect_parse("0", JSON_PARSE_NOT_OBJECT);
    expect_parse(" null \n", JSON_PARSE_NOT_OBJECT);
    expect_parse("[{}]", JSON_PARSE_NOT_OBJECT);
}

static void test_parse_invalid(void **state)
{
    (void)state;
    char err[256];
    /* Empty. */
    assert_int_equal(parse("", 0, err, sizeof(err)), JSON_PARSE_INVALID);
    assert_int_equal(parse("{}", 0, err, sizeof(err)), JSON_PARSE_INVALID);
    expect_parse("   ", JSON_PARSE_INVALID);
    /* Trailing data. */
    expect_parse("{}x", JSON_PARSE_INVALID);
    expect_parse("{} x", JSON_PARSE_INVALID);
    expect_parse("{}{}", JSON_PARSE_INVALID);
    expect_parse("{},", JSON_PARSE_INVALID);
    expect_parse("1 2", JSON_PARSE_INVALID);
    assert_int_equal(parse("{}\0", 3, err, sizeof(err)), JSON_PARSE_INVALID);
    /* Truncated. */
    expect_parse("{", JSON_PARSE_INVALID);
    expect_parse("{\"a\"", JSON_PARSE_INVALID);
    expect_parse("{\"a\":", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"abc", JSON_PARSE_INVALID);
    expect_parse("[1", JSON_PARSE_INVALID);
    expect_parse("nul", JSON_PARSE_INVALID);
    expect_parse("-", JSON_PARSE_INVALID);
    expect_parse("1e", JSON_PARSE_INVALID);
    assert_int_equal(parse("{\"a\":1}", 6, err, sizeof(err)), JSON_PARSE_INVALID);
    assert_non_null(strstr(err, "end of input"));
    /* Not JSON. */
    expect_parse("{a:1}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1,}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":[1,]}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":'x'}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":01}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":.5}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":+1}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":0x10}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":tRue}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"\\x41\"}", JSON_PARSE_INVALID);
    expect_parse("{/*c*/}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1}//", JSON_PARSE_INVALID);
    expect_parse("\xef\xbb\xbf{}", JSON_PARSE_INVALID); /* a BOM */
    /* Invalid UTF-8 in a string, in a key, overlong, surrogate. */
    expect_parse("{\"a\":\"\xff\"}", JSON_PARSE_INVALID);
    expect_parse("{\"\xc3\":1}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"\xc0\xaf\"}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"\xe2\x82\"}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"\xed\xa0\x80\"}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"\xf4\x90\x80\x80\"}", JSON_PARSE_INVALID);
    assert_int_equal(parse("{\"a\":\"\xe0\x80\xaf\"}", 11, err, sizeof(err)), JSON_PARSE_INVALID);
    assert_non_null(strstr(err, "UTF-8"));
    /* Nesting deeper than the parser allows. */
    char deep[200];
    size_t j = 0;
    j += (size_t)snprintf(deep, sizeof(deep), "{\"a\":");
    for (int i = 0; i < 60; i++)
        deep[j++] = '[';
    for (int i = 0; i < 60; i++)
        deep[j++] = ']';
    deep[j++] = '}';
    deep[j] = '\0';
    expect_parse(deep, JSON_PARSE_INVALID);

    /* The detail is in words and fits the caller's buffer. */
    char small[16];
    assert_int_equal(parse("{", 1, small, sizeof(small)), JSON_PARSE_INVALID);
    assert_true(strlen(small) < sizeof(small));
    assert_int_equal(parse("{}x", 3, err, sizeof(err)), JSON_PARSE_INVALID);
    assert_non_null(strstr(err, "not valid JSON"));
    assert_int_equal(parse("[1]", 3, err, sizeof(err)), JSON_PARSE_NOT_OBJECT);
    assert_non_null(strstr(err, "object"));
}

/* json-c's leniencies, one by one (docs/decisions.md, "Strict JSON"). */
static void test_parse_strict(void **state)
{
    (void)state;
    char err[256];
    /* Raw control characters inside strings, keys included; escaped ones are fine. */
    for (int c = 0; c < 0x20; c++) {
        char body[32];
        /* %c writes a NUL too; n counts it. */
        int n = snprintf(body, sizeof(body), "{\"a\":\"x%cy\"}", c);
        assert_int_equal(parse(body, (size_t)n, err, sizeof(err)), JSON_PARSE_INVALID);
        n = snprintf(body, sizeof(body), "{\"a%cb\":1}", c);
        assert_int_equal(parse(body, (size_t)n, err, sizeof(err)), JSON_PARSE_INVALID);
    }
    assert_int_equal(parse("{\"a\":\"x\ny\"}", 11, err, sizeof(err)), JSON_PARSE_INVALID);
    assert_non_null(strstr(err, "control character"));
    expect_parse("{\"a\":\"x\\ny\\t\\u0001\\u0000\"}", JSON_PARSE_OK);
    expect_parse("{\"a\":\"\x7f\"}", JSON_PARSE_OK); /* DEL is not a control char in JSON */
    /* NaN and the infinities, in any case. */
    expect_parse("{\"a\":NaN}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":nan}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":-NaN}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":Infinity}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":-Infinity}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":infinity}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":-inf}", JSON_PARSE_INVALID);
    expect_parse("NaN", JSON_PARSE_INVALID);
    /* Words other than true, false, null. */
    expect_parse("{\"a\":True}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":NULL}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":nullx}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":undefined}", JSON_PARSE_INVALID);
    /* Quotes, comments, BOM, trailing data. */
    expect_parse("{'a':1}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1 /* c */}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1} # c", JSON_PARSE_INVALID);
    expect_parse("\xef\xbb\xbf{\"a\":1}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1}\x0b", JSON_PARSE_INVALID); /* not JSON whitespace */
    expect_parse("{\"a\":1}\x0c", JSON_PARSE_INVALID);
    expect_parse("\x0c{\"a\":1}", JSON_PARSE_INVALID);
    /* Numbers of other grammars. */
    expect_parse("{\"a\":1.}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1e+}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":-}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":--1}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":00}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":-01}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1.5e3,\"b\":-0,\"c\":0.0E-2,\"d\":2e+10}", JSON_PARSE_OK);
    /* Big numbers are JSON (RFC 8259 §6 allows any length): accepted. */
    char big[600];
    int bn = snprintf(big, sizeof(big), "{\"a\":1");
    memset(big + bn, '0', 400);
    snprintf(big + bn + 400, sizeof(big) - (size_t)bn - 400, ",\"b\":1e400,\"c\":-1e-400}");
    expect_parse(big, JSON_PARSE_OK);
    /* Escapes. */
    expect_parse("{\"a\":\"\\u12\"}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"\\u12g4\"}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"\\a\"}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":\"\\/\\\"\\\\\\b\\f\\r\"}", JSON_PARSE_OK);
    /* Duplicate member names, at any depth; the same name in two objects is fine. */
    expect_parse("{\"a\":1,\"a\":2}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1,\"b\":{\"c\":1,\"c\":1}}", JSON_PARSE_INVALID);
    expect_parse("{\"x\":[{\"c\":1},{\"d\":1,\"d\":2}]}", JSON_PARSE_INVALID);
    expect_parse("{\"\":1,\"\":2}", JSON_PARSE_INVALID);
    expect_parse("{\"a\":1,\"\\u0061\":2}", JSON_PARSE_INVALID); /* the same name escaped */
    assert_int_equal(parse("{\"a\":1,\"a\":1}", 13, err, sizeof(err)), JSON_PARSE_INVALID);
    assert_non_null(strstr(err, "repeats"));
    expect_parse("{\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}],\"s\":\"a:b:c\"}",
                 JSON_PARSE_OK);
    expect_parse("[{\"a\":1,\"a\":2}]", JSON_PARSE_INVALID);
    /* Nesting: JSON_MAX_DEPTH levels pass, one more does not. */
    char deep[2 * JSON_MAX_DEPTH + 16];
    size_t j = 0;
    for (int i = 0; i < JSON_MAX_DEPTH - 1; i++)
        deep[j++] = '[';
    deep[j] = '\0';
    char body[3 * JSON_MAX_DEPTH + 16];
    snprintf(body, sizeof(body), "{\"a\":%s", deep);
    j = strlen(body);
    for (int i = 0; i < JSON_MAX_DEPTH - 1; i++)
        body[j++] = ']';
    body[j++] = '}';
    body[j] = '\0';
    expect_parse(body, JSON_PARSE_OK);
    snprintf(body, sizeof(body), "{\"a\":[%s", deep);
    j = strlen(body);
    for (int i = 0; i < JSON_MAX_DEPTH; i++)
        body[j++] = ']';
    body[j++] = '}';
    body[j] = '\0';
    expect_parse(body, JSON_PARSE_INVALID);
}

static void expect_compact(const char *in, const char *want)
{
    struct buf b = {0};
    json_put_compact(&b, in, strlen(in));
    assert_string_equal(b.data != NULL ? b.data : "", want);
    buf_free(&b);
}

static void test_compact(void **state)
{
    (void)state;
    expect_compact("{\"session_id\": \"0190-ab\"}", "{\"session_id\":\"0190-ab\"}");
    expect_compact(" { \"a\" : [1, 2,\t3] ,\n\"b\": {\"c\": null}}\r\n",
                   "{\"a\":[1,2,3],\"b\":{\"c\":null}}");
    /* Strings are kept byte for byte, escaped quotes included. */
    expect_compact("{\"k\": \"a, b: \\\" c\\\\\", \"e\": \"\"}",
                   "{\"k\":\"a, b: \\\" c\\\\\",\"e\":\"\"}");
    expect_compact("{}", "{}");
    expect_compact("", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),          cmocka_unit_test(test_utf8_kept),
        cmocka_unit_test(test_utf8_repaired),    cmocka_unit_test(test_put_cstr_and_append),
        cmocka_unit_test(test_output_parses),    cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_not_object), cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_parse_strict),     cmocka_unit_test(test_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
