/* password: Argon2id PHC strings ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
 *
 * Hashing and verifying use libsodium's SIMD Argon2id (SPEC §8: ~1.75x
 * Debian's libargon2); libargon2 handles what libsodium cannot: parallelism
 * > 1, for both hashing (if so configured) and verifying imported strings.
 * These calls are CPU- and memory-heavy: run them on the hash pool only.
 * Thread-safe (no shared state). */
#ifndef ACCESS_PASSWORD_H
#define ACCESS_PASSWORD_H

#include <stddef.h>

#define PASSWORD_PHC_MAX 128

struct password_params {
    unsigned t_cost;
    unsigned m_kib;
    unsigned parallelism;
};

enum password_verdict { PASSWORD_OK = 0, PASSWORD_MISMATCH, PASSWORD_ERROR };

/* Hash pw[0..len) with a fresh random salt into out (NUL-terminated). 0 or -1. */
int password_hash(const struct password_params *pp, const char *pw, size_t len,
                  char out[PASSWORD_PHC_MAX]) __attribute__((warn_unused_result));
/* Check pw against a stored PHC string (constant-time comparison inside the
 * libraries). PASSWORD_ERROR for a malformed or unsupported string. */
enum password_verdict password_verify(const char *phc, const char *pw, size_t len)
    __attribute__((warn_unused_result));
/* Read m, t, p from a PHC string; 0 or -1. */
int password_params_of(const char *phc, struct password_params *out)
    __attribute__((warn_unused_result));
/* 1 when phc was made with other parameters than pp (rehash on login). */
int password_needs_rehash(const char *phc, const struct password_params *pp);

#endif
