/* secretbox: second-factor secrets at rest (SPEC §3 secrets_key, §10).
 *
 * The key file holds exactly 32 random bytes (keygen --secrets FILE) and
 * must not be readable by group or others. Two subkeys are derived from it
 * (crypto_kdf): one seals secrets with XChaCha20-Poly1305
 * (crypto_secretbox_xchacha20poly1305, a fresh random 24-byte nonce per
 * seal, so sealing the same secret twice gives different bytes), the other
 * keys BLAKE2b-256 for recovery codes. The master key is wiped once the
 * subkeys exist.
 *
 * Thread-safety: read-only after secretbox_load(); any number of threads
 * may seal, open and hash at once. */
#ifndef ACCESS_SECRETBOX_H
#define ACCESS_SECRETBOX_H

#include <stddef.h>

#define SECRETBOX_KEY_BYTES   32
#define SECRETBOX_NONCE_BYTES 24
#define SECRETBOX_MAC_BYTES   16
/* Sealed size of a plaintext of n bytes: nonce || ciphertext || tag. */
#define SECRETBOX_SEALED_LEN(n) ((size_t)(n) + SECRETBOX_NONCE_BYTES + SECRETBOX_MAC_BYTES)
#define SECRETBOX_HASH_BYTES    32

struct secretbox {
    unsigned char box_key[SECRETBOX_KEY_BYTES];
    unsigned char hash_key[SECRETBOX_KEY_BYTES];
};

/* Derive the subkeys from a 32-byte master key (pure). */
void secretbox_from_key(struct secretbox *sb, const unsigned char key[SECRETBOX_KEY_BYTES]);

/* Read the key file at path: a regular file of exactly 32 bytes with no
 * group or other permission bits. 0, or -1 with err saying why (the path,
 * and "missing", "mode 0644 is readable by others", "31 bytes, want 32",
 * …). Nothing of the key is left on the stack. */
int secretbox_load(struct secretbox *sb, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Create path with 32 random bytes, mode 0600; refuses to overwrite an
 * existing file (O_EXCL). 0, or -1 with err. */
int secretbox_keygen(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Seal m[0..mlen) into out (outlen >= SECRETBOX_SEALED_LEN(mlen)).
 * 0, or -1 when out is too small. */
int secretbox_seal(const struct secretbox *sb, const unsigned char *m, size_t mlen,
                   unsigned char *out, size_t outlen) __attribute__((warn_unused_result));

/* Open c[0..clen) into m (mlen >= clen - overhead), *outlen the length.
 * -1 when c is too short, m too small, or c was not sealed by this key or
 * was altered (nothing is written to m then). */
int secretbox_open(const struct secretbox *sb, const unsigned char *c, size_t clen,
                   unsigned char *m, size_t mlen, size_t *outlen)
    __attribute__((warn_unused_result));

/* Keyed BLAKE2b-256 of s[0..len) under the hash subkey. */
void secretbox_hash(const struct secretbox *sb, const char *s, size_t len,
                    unsigned char out[SECRETBOX_HASH_BYTES]);

/* Wipe the subkeys. */
void secretbox_wipe(struct secretbox *sb);

#endif
