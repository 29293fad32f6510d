/* libFuzzer target: assertion_parse() and assertion_check() on hostile
 * client assertions (SPEC §11).
 *
 * For any input: no crash, leak or UB; a parsed assertion has non-empty
 * NUL-free iss/sub/jti within bounds, 1..ASSERTION_MAX_AUD audiences, a
 * signing input that ends at the token's second dot; and no input passes
 * the checks against a client whose key nobody here holds the secret of
 * (a random key made once). */
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "assertion.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct clients_record client;
    static int ready;
    static const char *const auds[] = {"http://127.0.0.1:8080", "access"};
    if (!ready) {
        unsigned char sk[64];
        if (sodium_init() < 0)
            return 0;
        memcpy(client.id, "0190f5c2-7a1b-7cde-8f01-23456789abcd", 37);
        crypto_sign_keypair(client.keys[0].pk, sk);
        keys_thumbprint(client.keys[0].pk, client.keys[0].kid);
        client.nkeys = 1;
        sodium_memzero(sk, sizeof(sk));
        ready = 1;
    }
    struct assertion as;
    char why[128];
    const char *tok = (const char *)data;
    if (assertion_parse(tok, size, &as, why, sizeof(why)) != 0)
        return 0;
    FUZZ_REQUIRE(strlen(as.iss) > 0 && strlen(as.iss) <= ASSERTION_FIELD_MAX);
    FUZZ_REQUIRE(strlen(as.sub) > 0 && strlen(as.jti) > 0);
    FUZZ_REQUIRE(as.naud >= 1 && as.naud <= ASSERTION_MAX_AUD);
    FUZZ_REQUIRE(as.signing_len < size && tok[as.signing_len] == '.');
    FUZZ_REQUIRE(assertion_check(&as, tok, &client, auds, 2, 1700000000, why, sizeof(why)) != 0);
    return 0;
}
