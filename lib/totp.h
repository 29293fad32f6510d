/* totp: RFC 6238 time-based one-time passwords as SPEC §10 fixes them
 * (HMAC-SHA-1, 6 digits, 30 s steps from the Unix epoch), computed by
 * Debian's liboath rather than by hand.
 *
 * Thread-safety: totp_init() once (any thread; later calls are no-ops),
 * then every function may run concurrently. */
#ifndef ACCESS_TOTP_H
#define ACCESS_TOTP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define TOTP_SECRET_BYTES 20 /* 160 bits, RFC 4226 §4's recommendation */
#define TOTP_DIGITS       6
#define TOTP_STEP_S       30
#define TOTP_WINDOW       1  /* steps either side of now that are accepted */
#define TOTP_BASE32_MAX   64 /* base32 of a secret, with its NUL */

/* Initialise liboath once. 0, or -1 when it fails (then nothing else works). */
int totp_init(void) __attribute__((warn_unused_result));

/* Base32 (RFC 4648, no padding for 20 bytes) of secret into out. 0 or -1. */
int totp_base32(const unsigned char *secret, size_t len, char *out, size_t outlen)
    __attribute__((warn_unused_result));

/* The code of secret at time now into out (TOTP_DIGITS digits + NUL). 0/-1. */
int totp_generate(const unsigned char *secret, size_t len, time_t now, char out[TOTP_DIGITS + 1])
    __attribute__((warn_unused_result));

/* Is code (exactly TOTP_DIGITS digits) the code of secret in one of the
 * steps now-window .. now+window? 0 with *step the matched step number
 * (floor(t / 30) of that step), or -1. The caller decides about replay: a
 * step must be accepted at most once per account. */
int totp_verify(const unsigned char *secret, size_t len, time_t now, unsigned window,
                const char *code, size_t codelen, int64_t *step)
    __attribute__((warn_unused_result));

#endif
