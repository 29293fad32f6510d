/* libFuzzer target: Argon2id PHC strings (lib/password.c), which arrive from
 * the database and from imports, never from a request.
 *
 * 1. password_phc_decode() of the input as a C string never reads or writes
 *    out of bounds, and a failure leaves nothing behind (salt_len 0).
 * 2. What it takes, password_params_of() takes with the same costs.
 * 3. What it takes and password_phc_encode() can write (a string may be
 *    longer than PASSWORD_PHC_MAX) decodes back to the same values; the
 *    encoding is a fixed point. No hash is computed: costs come from the
 *    input and could ask for gigabytes. */
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "password.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct password_phc ph, ph2;
    struct password_params pp;
    char enc[PASSWORD_PHC_MAX], enc2[PASSWORD_PHC_MAX];
    char *s = malloc(size + 1);

    FUZZ_REQUIRE(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    if (password_phc_decode(s, &ph) != 0) {
        FUZZ_REQUIRE(ph.salt_len == 0 && ph.hash_len == 0);
        goto out;
    }
    FUZZ_REQUIRE(ph.salt_len >= 8 && ph.salt_len <= PASSWORD_BIN_MAX);
    FUZZ_REQUIRE(ph.hash_len >= 4 && ph.hash_len <= PASSWORD_BIN_MAX);
    FUZZ_REQUIRE(password_params_of(s, &pp) == 0);
    FUZZ_REQUIRE(pp.t_cost == ph.pp.t_cost && pp.m_kib == ph.pp.m_kib &&
                 pp.parallelism == ph.pp.parallelism);
    if (password_phc_encode(&ph, enc) != 0)
        goto out;
    FUZZ_REQUIRE(memchr(enc, '\0', sizeof(enc)) != NULL);
    FUZZ_REQUIRE(password_phc_decode(enc, &ph2) == 0);
    FUZZ_REQUIRE(ph2.pp.t_cost == ph.pp.t_cost && ph2.pp.m_kib == ph.pp.m_kib &&
                 ph2.pp.parallelism == ph.pp.parallelism);
    FUZZ_REQUIRE(ph2.salt_len == ph.salt_len && memcmp(ph2.salt, ph.salt, ph.salt_len) == 0);
    FUZZ_REQUIRE(ph2.hash_len == ph.hash_len && memcmp(ph2.hash, ph.hash, ph.hash_len) == 0);
    FUZZ_REQUIRE(password_phc_encode(&ph2, enc2) == 0 && strcmp(enc, enc2) == 0);
out:
    free(s);
    return 0;
}
