/* Unit tests for lib/outbox.c's pure parts: the back-off schedule (1 s
 * doubling to 1 h, equal jitter) and the rows a use case writes (held
 * messages under mail_transport = none, no events without events_url). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "config.h"
#include "outbox.h"

static void test_backoff_schedule(void **state)
{
    (void)state;
    /* Without jitter (rnd 0: half of base; rnd max: all of base). */
    long base = 1000;
    for (long attempt = 1; attempt <= 30; attempt++) {
        long lo = outbox_backoff_ms(attempt, 0);
        long hi = outbox_backoff_ms(attempt, UINT32_MAX);
        assert_true(lo >= base / 2);
        assert_true(hi <= base);
        assert_true(lo <= hi);
        if (base < OUTBOX_BACKOFF_MAX_MS)
            base *= 2;
        if (base > OUTBOX_BACKOFF_MAX_MS)
            base = OUTBOX_BACKOFF_MAX_MS;
    }
    assert_int_equal(outbox_backoff_ms(1, 0), 500);
    assert_int_equal(outbox_backoff_ms(2, 0), 1000);
    assert_int_equal(outbox_backoff_ms(3, 0), 2000);
    /* Capped at one hour, however many attempts. */
    assert_true(outbox_backoff_ms(12, UINT32_MAX) <= 3600000);
    assert_true(outbox_backoff_ms(1000, UINT32_MAX) <= 3600000);
    assert_int_equal(outbox_backoff_ms(1000, 0), 1800000);
    /* Jitter spreads: many draws of one attempt are not all equal. */
    long first = outbox_backoff_ms(5, 12345), differ = 0;
    for (uint32_t r = 0; r < 1000; r++)
        differ += outbox_backoff_ms(5, r * 2654435761u) != first;
    assert_true(differ > 900);
}

static json_object *parse(const char *s)
{
    json_object *j = json_tokener_parse(s);
    assert_non_null(j);
    assert_true(json_object_is_type(j, json_type_array));
    return j;
}

static const char *field(json_object *o, const char *k)
{
    json_object *v;
    assert_true(json_object_object_get_ex(o, k, &v));
    return json_object_get_string(v);
}

static void test_rows(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    struct outbox_rows r = {0};
    /* mail_transport none: held; no events_url: no event row. */
    outbox_rows_message(&r, &c, "message.verify", "01a233bf-913d-70bb-8402-3d784e485f8e",
                        "a\"b@example.org", "http://x/verify?token=T", "2026-01-01T00:00:00Z");
    outbox_rows_event(&r, &c, "user.created", "01a233bf-913d-70bb-8402-3d784e485f8e", NULL, NULL);
    json_object *j = parse(outbox_rows_param(&r));
    assert_int_equal(json_object_array_length(j), 1);
    json_object *m = json_object_array_get_idx(j, 0);
    assert_string_equal(field(m, "kind"), "message");
    assert_string_equal(field(m, "state"), "held");
    json_object *p;
    assert_true(json_object_object_get_ex(m, "payload", &p));
    assert_string_equal(field(p, "type"), "message.verify");
    assert_string_equal(field(p, "to"), "a\"b@example.org"); /* escaped, not broken */
    assert_string_equal(field(p, "link"), "http://x/verify?token=T");
    json_object_put(j);
    outbox_rows_free(&r);

    assert_int_equal(config_set(&c, "mail_transport", "smtp", NULL, 0), 0);
    assert_int_equal(config_set(&c, "events_url", "http://127.0.0.1:9/e", NULL, 0), 0);
    r = (struct outbox_rows){0};
    outbox_rows_message(&r, &c, "message.reset", NULL, "", "L", "E");
    outbox_rows_event(&r, &c, "user.deleted", "01a233bf-913d-70bb-8402-3d784e485f8e",
                      "session_id", "s\"1");
    j = parse(outbox_rows_param(&r));
    assert_int_equal(json_object_array_length(j), 2);
    assert_string_equal(field(json_object_array_get_idx(j, 0), "state"), "pending");
    json_object *e = json_object_array_get_idx(j, 1);
    assert_string_equal(field(e, "kind"), "event");
    assert_true(json_object_object_get_ex(e, "payload", &p));
    assert_string_equal(field(p, "type"), "user.deleted");
    assert_string_equal(field(p, "id"), field(e, "id")); /* event id = webhook-id */
    json_object *d;
    assert_true(json_object_object_get_ex(p, "data", &d));
    assert_string_equal(field(d, "user_id"), "01a233bf-913d-70bb-8402-3d784e485f8e");
    assert_string_equal(field(d, "session_id"), "s\"1");
    json_object_put(j);
    outbox_rows_free(&r);

    r = (struct outbox_rows){0};
    assert_string_equal(outbox_rows_param(&r), "[]");
    outbox_rows_free(&r);
    config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_schedule),
        cmocka_unit_test(test_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
