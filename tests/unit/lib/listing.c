/* Unit tests for lib/listing.c's pure parts: the ?fields= parser and the
 * page cursor codec (forgery, round trips, malformed input). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64url.h"
#include "listing.h"

static const unsigned char TEST_CURSOR_KEY[LISTING_CURSOR_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};

/* ---- ?fields= ----------------------------------------------------------- */

static void fields_ok(const char *s, unsigned want)
{
    unsigned got = 0xdeadbeef;
    const char *bad = NULL;
    size_t badlen = 99;
    if (listing_parse_fields(LISTING_SESSIONS, s, &got, &bad, &badlen) != 0)
        fail_msg("'%s' refused at '%.*s'", s, (int)badlen, bad ? bad : "");
    if (got != want)
        fail_msg("'%s' gave 0x%x, want 0x%x", s, got, want);
}

static void fields_bad(const char *s, size_t bad_off, size_t bad_len)
{
    unsigned got = 0;
    const char *bad = NULL;
    size_t badlen = 99;
    if (listing_parse_fields(LISTING_SESSIONS, s, &got, &bad, &badlen) != -1)
        fail_msg("'%s' accepted", s);
    assert_non_null(bad);
    if (bad != s + bad_off || badlen != bad_len)
        fail_msg("'%s': bad at %td len %zu, want %zu len %zu", s, bad - s, badlen, bad_off,
                 bad_len);
}

static void test_fields(void **state)
{
    (void)state;
    fields_ok("", LISTING_SF_ALL);
    fields_ok("id", LISTING_SF_ID);
    fields_ok("id,created_at", LISTING_SF_ID | LISTING_SF_CREATED_AT);
    fields_ok("created_at,id", LISTING_SF_ID | LISTING_SF_CREATED_AT);
    fields_ok("id,id", LISTING_SF_ID);
    fields_ok("current", LISTING_SF_CURRENT);
    fields_ok("id,created_at,last_used_at,expires_at,ip,user_agent,current", LISTING_SF_ALL);
    fields_ok("user_agent,ip", LISTING_SF_USER_AGENT | LISTING_SF_IP);

    fields_bad("id,bogus", 3, 5);
    fields_bad("bogus", 0, 5);
    fields_bad("bogus,id", 0, 5);
    fields_bad("id,", 3, 0);             /* trailing comma */
    fields_bad("id,created_at,", 14, 0); /* trailing comma */
    fields_bad(",id", 0, 0);             /* leading comma */
    fields_bad("id,,ip", 3, 0);          /* empty between */
    fields_bad(",", 0, 0);
    fields_bad("ID", 0, 2);     /* case matters */
    fields_bad("id ,ip", 0, 3); /* spaces are not trimmed */
    fields_bad("id, ip", 3, 3);
    fields_bad("i", 0, 1);   /* prefix of a name */
    fields_bad("idx", 0, 3); /* a name as prefix */
    fields_bad("created", 0, 7);
    fields_bad("email", 0, 5); /* a user field, not a session one */
}

/* ---- cursor -------------------------------------------------------------- */

#define UUID_A "0190f5c2-7a1b-7cde-8f01-23456789abcd"

static void cursor_bad(const char *s, const char *what)
{
    long long m = 12345;
    char id[37];
    memset(id, 'Z', sizeof(id));
    if (listing_cursor_decode(TEST_CURSOR_KEY, s, &m, id) != -1)
        fail_msg("cursor accepted: %s", what);
    assert_int_equal(m, 12345); /* untouched on failure */
}

/* base64url of raw text, for hand-made cursors. */
/* base64url(raw || MAC): a correctly MAC'd cursor around any payload, so
 * the payload parser is what the rejection cases exercise. */
static void cursor_of(const char *raw, size_t n, char *out, size_t outlen)
{
    unsigned char buf[512];
    assert_true(n + 16 <= sizeof(buf));
    memcpy(buf, raw, n);
    crypto_generichash(buf + n, 16, buf, n, TEST_CURSOR_KEY, LISTING_CURSOR_KEY_LEN);
    assert_true(b64url_encode(out, outlen, buf, n + 16) > 0);
}

static void test_cursor_forged(void **state)
{
    (void)state;
    char good[128], c[128], id[37];
    long long m;
    const char *raw = "v1:42:" UUID_A;
    static const unsigned char other[LISTING_CURSOR_KEY_LEN] = {9};
    listing_cursor_encode(TEST_CURSOR_KEY, 42, UUID_A, good, sizeof(good));
    assert_int_equal(listing_cursor_decode(TEST_CURSOR_KEY, good, &m, id), 0);
    /* Another key (another deployment, or after rotation) refuses it. */
    assert_int_equal(listing_cursor_decode(other, good, &m, id), -1);
    /* The bare payload without a MAC is refused. */
    assert_true(b64url_encode(c, sizeof(c), (const unsigned char *)raw, strlen(raw)) > 0);
    assert_int_equal(listing_cursor_decode(TEST_CURSOR_KEY, c, &m, id), -1);
    /* Any changed character is refused. */
    for (size_t i = 0; i < strlen(good); i++) {
        snprintf(c, sizeof(c), "%s", good);
        c[i] = c[i] == 'A' ? 'B' : 'A';
        assert_int_equal(listing_cursor_decode(TEST_CURSOR_KEY, c, &m, id), -1);
    }
}

static void test_cursor_roundtrip(void **state)
{
    (void)state;
    char c[128], id[37];
    long long m;
    const long long micros[] = {0, 1, 1700000000123456LL, 99999999999999999LL};
    for (size_t i = 0; i < sizeof(micros) / sizeof(micros[0]); i++) {
        listing_cursor_encode(TEST_CURSOR_KEY, micros[i], UUID_A, c, sizeof(c));
        assert_true(strlen(c) > 0);
        /* Opaque and URL-safe: base64url only. */
        for (const char *p = c; *p; p++)
            assert_true((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                        (*p >= '0' && *p <= '9') || *p == '-' || *p == '_');
        m = -1;
        memset(id, 'Z', sizeof(id));
        assert_int_equal(listing_cursor_decode(TEST_CURSOR_KEY, c, &m, id), 0);
        assert_int_equal(m, micros[i]);
        assert_string_equal(id, UUID_A);
    }
    /* Upper-case ids come back in canonical lower case. */
    listing_cursor_encode(TEST_CURSOR_KEY, 5, "0190F5C2-7A1B-7CDE-8F01-23456789ABCD", c, sizeof(c));
    assert_int_equal(listing_cursor_decode(TEST_CURSOR_KEY, c, &m, id), 0);
    assert_string_equal(id, UUID_A);
    assert_int_equal(m, 5);
    /* An id far longer than a uuid (never from the database) yields no
     * cursor rather than reading past the encoder's buffer; so does an
     * output buffer too small. */
    char longid[200];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    char big[512];
    memset(big, 'Z', sizeof(big));
    listing_cursor_encode(TEST_CURSOR_KEY, -1LL - 0x7fffffffffffffffLL, longid, big, sizeof(big));
    assert_string_equal(big, "");
    memset(c, 'Z', sizeof(c));
    listing_cursor_encode(TEST_CURSOR_KEY, 1, UUID_A, c, 10);
    assert_string_equal(c, "");
    /* The documented raw form decodes. */
    const char *raw = "v1:42:" UUID_A;
    cursor_of(raw, strlen(raw), c, sizeof(c));
    assert_int_equal(listing_cursor_decode(TEST_CURSOR_KEY, c, &m, id), 0);
    assert_int_equal(m, 42);
}

static void test_cursor_rejects(void **state)
{
    (void)state;
    char c[512], good[128];
    listing_cursor_encode(TEST_CURSOR_KEY, 1700000000123456LL, UUID_A, good, sizeof(good));

    cursor_bad("", "empty");
    cursor_bad("garbage", "garbage");
    cursor_bad("!!!!", "not base64url");
    cursor_bad("dj E6", "space");
    cursor_bad("djE6NDI6MDE5MGY1YzItN2ExYi03Y2RlLThmMDEtMjM0NTY3ODlhYmNk==", "padding");
    /* The good cursor with '+' or '/' or '=' somewhere. */
    const char subs[] = {'+', '/', '=', '.', '%'};
    for (size_t i = 0; i < sizeof(subs); i++) {
        snprintf(c, sizeof(c), "%s", good);
        c[strlen(c) / 2] = subs[i];
        cursor_bad(c, "bad character");
    }

    struct {
        const char *raw;
        const char *what;
    } cases[] = {
        {"v2:42:" UUID_A, "wrong version"},
        {"V1:42:" UUID_A, "version case"},
        {"v1;42:" UUID_A, "separator"},
        {"42:" UUID_A, "no version"},
        {"v1:-42:" UUID_A, "negative micros"},
        {"v1:-0:" UUID_A, "minus zero"},
        {"v1:+42:" UUID_A, "plus sign"},
        {"v1: 42:" UUID_A, "space before micros"},
        {"v1::" UUID_A, "empty micros"},
        {"v1:4x2:" UUID_A, "micros not digits"},
        {"v1:999999999999999999:" UUID_A, "micros too large"},
        {"v1:99999999999999999999999:" UUID_A, "micros overflow"},
        {"v1:42", "no id"},
        {"v1:42:", "empty id"},
        {"v1:42:not-a-uuid", "bad uuid"},
        {"v1:42:0190f5c2-7a1b-7cde-8f01-23456789abc", "uuid short"},
        {"v1:42:0190f5c2-7a1b-7cde-8f01-23456789abcg", "uuid bad hex"},
        {"v1:42:0190f5c27a1b7cde8f0123456789abcd", "uuid without dashes"},
        {"v1:42:" UUID_A "x", "extra byte"},
        {"v1:42:" UUID_A ":", "extra separator"},
        {"v1:42:" UUID_A "\n", "extra newline"},
        {"v1:42:" UUID_A ":v1:43:" UUID_A, "two cursors"},
        {"v1:42:" UUID_A " ", "trailing space"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cursor_of(cases[i].raw, strlen(cases[i].raw), c, sizeof(c));
        cursor_bad(c, cases[i].what);
    }
    /* A NUL inside the decoded bytes, before or after the uuid. */
    const char nul1[] = "v1:42:" UUID_A "\0";
    cursor_of(nul1, sizeof(nul1) - 1, c, sizeof(c));
    cursor_bad(c, "NUL after the uuid");
    const char nul2[] = "v1:42\0:" UUID_A;
    cursor_of(nul2, sizeof(nul2) - 1, c, sizeof(c));
    cursor_bad(c, "NUL inside");

    /* Too long: a valid cursor followed by padding, and raw base64url. */
    char longraw[400];
    int n = snprintf(longraw, sizeof(longraw), "v1:42:%s", UUID_A);
    memset(longraw + n, ' ', sizeof(longraw) - (size_t)n);
    cursor_of(longraw, 200, c, sizeof(c));
    cursor_bad(c, "too long");
    memset(c, 'A', 400);
    c[400] = '\0';
    cursor_bad(c, "400 A's");
    /* Just past the limits of the decoder's buffer, all valid base64url. */
    for (size_t len = 100; len <= 200; len++) {
        memset(c, 'A', len);
        c[len] = '\0';
        cursor_bad(c, "run of A's");
    }
    /* Truncations of a good cursor. */
    for (size_t len = 0; len < strlen(good); len++) {
        snprintf(c, sizeof(c), "%.*s", (int)len, good);
        cursor_bad(c, "truncated");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_cursor_roundtrip),
        cmocka_unit_test(test_cursor_forged),
        cmocka_unit_test(test_cursor_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
