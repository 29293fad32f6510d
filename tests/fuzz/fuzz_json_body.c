/* libFuzzer target: request bodies (SPEC §4 input rules).
 *
 * 1. json_parse_object() on the raw bytes; for an object, the signup
 *    handler's validation of "email", "password" and "name", checked against
 *    the rules as SPEC §4 states them; the strings it hands out are UTF-8.
 * 2. json_put_string() on the raw bytes must always give valid JSON that
 *    json-c (lenient and our strict reader) parses back to the same string,
 *    or, for invalid UTF-8, to a valid UTF-8 string. */
#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

#include "accounts.h"
#include "buf.h"
#include "json.h"
#include "fuzz_util.h"

/* A string member, as fcgi/handlers_accounts.c acc_str() reads it. */
static int member_str(json_object *o, const char *name, const char **s, size_t *n)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return -1;
    *s = json_object_get_string(v);
    *n = (size_t)json_object_get_string_len(v);
    return 0;
}

static void check_invalid(const struct accounts_req *r, int rc, const char *field)
{
    if (rc == 0)
        return;
    FUZZ_REQUIRE(rc == -1);
    FUZZ_REQUIRE(r->code != NULL && r->detail != NULL && r->field != NULL);
    FUZZ_REQUIRE(strcmp(r->field, field) == 0);
}

static void check_signup(json_object *obj)
{
    const char *email, *pw, *name = "";
    size_t elen, pwlen, nlen = 0;
    struct accounts_req r;

    if (member_str(obj, "email", &email, &elen) == 0) {
        FUZZ_REQUIRE(fuzz_utf8_valid((const unsigned char *)email, elen));
        memset(&r, 0, sizeof(r));
        int rc = accounts_check_email(&r, email, elen);
        check_invalid(&r, rc, "email");
        if (rc == 0) {
            /* An address: 1..254 bytes, no NUL, one @ with a local part. */
            const char *at = memchr(email, '@', elen);
            FUZZ_REQUIRE(elen >= 1 && elen <= 254 && strlen(email) == elen);
            FUZZ_REQUIRE(at != NULL && at != email && at + 1 < email + elen);
            FUZZ_REQUIRE(memchr(at + 1, '@', elen - (size_t)(at + 1 - email)) == NULL);
        }
    }
    if (member_str(obj, "password", &pw, &pwlen) == 0) {
        FUZZ_REQUIRE(fuzz_utf8_valid((const unsigned char *)pw, pwlen));
        memset(&r, 0, sizeof(r));
        int rc = accounts_check_password(&r, "password", pw, pwlen);
        check_invalid(&r, rc, "password");
        FUZZ_REQUIRE((rc == 0) == (pwlen >= 8 && pwlen <= 1024));
    }
    (void)member_str(obj, "name", &name, &nlen); /* optional: "" when absent */
    FUZZ_REQUIRE(fuzz_utf8_valid((const unsigned char *)name, nlen));
    memset(&r, 0, sizeof(r));
    int rc = accounts_check_name(&r, name, nlen);
    check_invalid(&r, rc, "name");
    int ctl = 0;
    for (size_t i = 0; i < nlen; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] == 0x7f)
            ctl = 1;
    FUZZ_REQUIRE((rc == 0) == (nlen <= 256 && !ctl));
}

static void check_put_string(const uint8_t *data, size_t size)
{
    struct buf b = {0}, w = {0};
    json_object *v, *o = NULL;
    char err[160];

    json_put_string(&b, (const char *)data, size);
    FUZZ_REQUIRE(b.len >= 2 && strlen(b.data) == b.len); /* no raw NUL */
    v = json_tokener_parse(b.data);
    FUZZ_REQUIRE(v != NULL && json_object_is_type(v, json_type_string));
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (fuzz_utf8_valid(data, size))
        FUZZ_REQUIRE(n == size && memcmp(s, data, size) == 0);
    else
        FUZZ_REQUIRE(fuzz_utf8_valid((const unsigned char *)s, n));
    json_object_put(v);

    /* Our own strict reader must accept our own writer's output. */
    buf_puts(&w, "{\"k\":");
    buf_append(&w, b.data, b.len);
    buf_putc(&w, '}');
    FUZZ_REQUIRE(json_parse_object(w.data, w.len, &o, err, sizeof(err)) == JSON_PARSE_OK);
    json_object_put(o);
    buf_free(&w);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_object *obj = NULL;
    char err[160];
    enum json_parse_result rc = json_parse_object((const char *)data, size, &obj, err, sizeof(err));
    if (rc == JSON_PARSE_OK) {
        FUZZ_REQUIRE(obj != NULL && json_object_is_type(obj, json_type_object));
        check_signup(obj);
        json_object_put(obj);
    } else {
        FUZZ_REQUIRE(obj == NULL && rc != JSON_PARSE_OK);
        FUZZ_REQUIRE(strlen(err) > 0);
    }
    check_put_string(data, size);
    return 0;
}
