/* keys: the signing key set, a private JWK set file (RFC 7517/8037):
 *   {"keys":[{"kty":"OKP","crv":"Ed25519","kid":…,"x":…[,"d":…]}, …]}
 * The last key that has "d" signs (the active key); every key verifies.
 * `kid` is the RFC 7638 thumbprint. keygen writes the file with mode 0600;
 * rotation appends a new private key and strips "d" from the older ones so
 * they only verify. Secrets are wiped with sodium_memzero.
 * Thread-safety: a loaded keyset is read-only and may be shared. */
#ifndef ACCESS_KEYS_H
#define ACCESS_KEYS_H

#include <stddef.h>

#include "buf.h"

#define KEYS_MAX     16
#define KEYS_KID_LEN 43 /* base64url of a SHA-256, without NUL */

struct keys_entry {
    char kid[KEYS_KID_LEN + 1];
    unsigned char pk[32];
    unsigned char sk[64]; /* libsodium secret key (seed || pk); zero when public only */
    int has_private;
};

struct keyset {
    size_t n;
    size_t active; /* index of the signing key */
    struct keys_entry k[KEYS_MAX];
};

/* RFC 7638 thumbprint of an Ed25519 public key into out (44 bytes). */
void keys_thumbprint(const unsigned char pk[32], char out[KEYS_KID_LEN + 1]);
/* Parse a JWK set from text; 0, or -1 with a clear err naming the problem. */
int keys_parse(const char *text, size_t len, struct keyset *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Read and parse the file at path. */
int keys_load(const char *path, struct keyset *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Create path with one new key (fails if it exists), or with rotate add a
 * new active key to the existing file. The new kid goes to kid_out. */
int keys_generate(const char *path, int rotate, char kid_out[KEYS_KID_LEN + 1], char *err,
                  size_t errlen) __attribute__((warn_unused_result));
/* Find a key by kid; NULL if unknown. */
const struct keys_entry *keys_find(const struct keyset *ks, const char *kid, size_t kid_len);
/* Append the public JWK set (no "d") as compact JSON. */
void keys_public_jwks(const struct keyset *ks, struct buf *out);
/* Wipe every secret in ks. */
void keys_wipe(struct keyset *ks);

#endif
