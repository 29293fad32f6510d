/* password: Argon2id PHC strings ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
 *
 * Two implementations compute the same strings (docs/decisions.md):
 * - libsodium: SIMD, but fresh 4 KiB-paged memory on every hash;
 * - libargon2 through argon2_ctx, its memory mapped per hash and asking
 *   for transparent huge pages (MADV_HUGEPAGE). Where page faults are dear
 *   (a VM) this one is the faster; on bare metal libsodium usually is.
 * password_calibrate() times both once; the config's `password_hasher`
 * chooses. Parallelism > 1 always takes libargon2, which libsodium lacks.
 * These calls are CPU- and memory-heavy: run them on the hash pool only.
 * Thread-safe (no shared state). */
#ifndef ACCESS_PASSWORD_H
#define ACCESS_PASSWORD_H

#include <stddef.h>

#define PASSWORD_PHC_MAX 128
#define PASSWORD_BIN_MAX 64 /* longest salt or hash we decode */

enum password_impl { PASSWORD_IMPL_LIBSODIUM = 0, PASSWORD_IMPL_LIBARGON2 };

struct password_params {
    unsigned t_cost;
    unsigned m_kib;
    unsigned parallelism;
    enum password_impl impl; /* who hashes and verifies when parallelism is 1 */
};

/* A decoded PHC string: costs, salt and hash. */
struct password_phc {
    struct password_params pp;
    unsigned char salt[PASSWORD_BIN_MAX];
    size_t salt_len;
    unsigned char hash[PASSWORD_BIN_MAX];
    size_t hash_len;
};

enum password_verdict { PASSWORD_OK = 0, PASSWORD_MISMATCH, PASSWORD_ERROR };

/* Hash pw[0..len) with a fresh random salt into out (NUL-terminated). 0 or -1. */
int password_hash(const struct password_params *pp, const char *pw, size_t len,
                  char out[PASSWORD_PHC_MAX]) __attribute__((warn_unused_result));
/* Check pw against a stored PHC string with the implementation impl
 * (constant-time comparison). PASSWORD_ERROR for a malformed or unsupported
 * string. Strings made by either implementation verify with either. */
enum password_verdict password_verify(enum password_impl impl, const char *phc, const char *pw,
                                      size_t len) __attribute__((warn_unused_result));
/* Read m, t, p from a PHC string into out (impl untouched); 0 or -1. */
int password_params_of(const char *phc, struct password_params *out)
    __attribute__((warn_unused_result));
/* Decode the canonical form "$argon2id$v=19$m=M,t=T,p=P$SALT$HASH" (unpadded
 * standard base64, salt 8..64 bytes, hash 4..64 bytes); 0 or -1. */
int password_phc_decode(const char *phc, struct password_phc *out)
    __attribute__((warn_unused_result));
/* Encode in into out (NUL-terminated); -1 when it does not fit. */
int password_phc_encode(const struct password_phc *in, char out[PASSWORD_PHC_MAX])
    __attribute__((warn_unused_result));
/* 1 when phc was made with other parameters than pp (rehash on login). */
int password_needs_rehash(const char *phc, const struct password_params *pp);
/* Time each implementation at pp's costs (ms[impl]: the best of two hashes,
 * after one untimed libargon2 warm-up; -1 for one that failed) and return
 * the faster; libsodium unless libargon2 takes under 90 % of its time.
 * Five hashes: about 1 s at the default costs on a 2-core VM. */
enum password_impl password_calibrate(const struct password_params *pp, double ms[2]);
/* "libsodium" or "libargon2". */
const char *password_impl_name(enum password_impl impl);
/* The inverse: 0 and *out for "libsodium" or "libargon2", else -1. */
int password_impl_from_name(const char *name, enum password_impl *out)
    __attribute__((warn_unused_result));

#endif
