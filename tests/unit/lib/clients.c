/* Unit tests for lib/clients.c's pure parts: public JWK parsing, scope
 * subsets, the cached record's codec. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "b64url.h"
#include "clients.h"

static json_object *jwk_of(const char *text)
{
    return json_tokener_parse(text);
}

static void test_parse_jwk(void **state)
{
    (void)state;
    unsigned char pk[32], seed[32], sk[64], got[32];
    char x[64], why[128], text[256];
    memset(seed, 3, sizeof(seed));
    crypto_sign_seed_keypair(pk, sk, seed);
    b64url_encode(x, sizeof(x), pk, 32);
    snprintf(text, sizeof(text), "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"}", x);
    json_object *o = jwk_of(text);
    assert_int_equal(clients_parse_jwk(o, got, why, sizeof(why)), 0);
    assert_memory_equal(got, pk, 32);
    json_object_put(o);

    const char *bad[] = {
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"AAAA\"}", /* private */
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\"}",
        "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"%s\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%sAA\"}", /* 33+ bytes */
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"y\":\"%s\"}",
        "[\"%s\"]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), bad[i], x);
        o = jwk_of(text);
        assert_int_equal(clients_parse_jwk(o, got, why, sizeof(why)), -1);
        json_object_put(o);
    }
    assert_int_equal(clients_parse_jwk(NULL, got, why, sizeof(why)), -1);
}

static void test_scopes_subset(void **state)
{
    (void)state;
    assert_true(clients_scopes_subset("api", "api"));
    assert_true(clients_scopes_subset("api read", "read write api"));
    assert_false(clients_scopes_subset("admin", "api"));
    assert_false(clients_scopes_subset("ap", "api"));
    assert_false(clients_scopes_subset("api2", "api"));
    assert_false(clients_scopes_subset("", "api"));
    assert_false(clients_scopes_subset("api ", "api"));
    assert_false(clients_scopes_subset("api  api", "api"));
    assert_false(clients_scopes_subset(" api", "api"));
}

static void test_record_codec(void **state)
{
    (void)state;
    struct clients_record in = {.version = 7, .tokens_after_ms = 1700000000123LL, .nkeys = 2};
    struct clients_record out;
    struct buf b = {0};
    snprintf(in.owner, sizeof(in.owner), "0190f5c2-7a1b-7cde-8f01-23456789abcd");
    snprintf(in.scopes, sizeof(in.scopes), "api admin");
    for (size_t i = 0; i < 2; i++) {
        memset(in.keys[i].pk, (int)i + 1, 32);
        keys_thumbprint(in.keys[i].pk, in.keys[i].kid);
    }
    clients_record_encode(&in, &b);
    assert_int_equal(clients_record_decode(b.data, b.len, &out), 0);
    assert_int_equal(out.version, 7);
    assert_int_equal(out.tokens_after_ms, 1700000000123LL);
    assert_string_equal(out.owner, in.owner);
    assert_string_equal(out.scopes, "api admin");
    assert_int_equal(out.nkeys, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(out.keys[i].kid, in.keys[i].kid);
        assert_memory_equal(out.keys[i].pk, in.keys[i].pk, 32);
    }
    /* No owner (a command-line client), no keys. */
    in.owner[0] = '\0';
    in.nkeys = 0;
    buf_reset(&b);
    clients_record_encode(&in, &b);
    assert_int_equal(clients_record_decode(b.data, b.len, &out), 0);
    assert_string_equal(out.owner, "");
    assert_int_equal(out.nkeys, 0);
    /* Damaged values are refused, never half-read. */
    static const char *const bad[] = {"", "-", "7 1 x", "7 1 x\napi", "x 1 -\napi\n",
                                      "7 1 -\napi\nshort 00\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(clients_record_decode(bad[i], strlen(bad[i]), &out), -1);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_jwk),
        cmocka_unit_test(test_scopes_subset),
        cmocka_unit_test(test_record_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
