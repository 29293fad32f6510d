/* jwt: EdDSA (Ed25519) JWS compact tokens for access tokens (SPEC §4).
 *
 * Issued header: {"alg":<EdDSA|Ed25519>,"typ":"JWT","kid":<thumbprint>};
 * claims iss aud sub sid jti iat exp. jwt_verify() accepts only alg EdDSA
 * or Ed25519 (RFC 9864) over a key of the set with that kid, then checks
 * the signature, exp (with at most JWT_LEEWAY_S of leeway), iss and aud.
 * Any failure is one verdict, with a reason only for logs.
 * Thread-safe given a keyset that nobody modifies meanwhile. */
#ifndef ACCESS_JWT_H
#define ACCESS_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "keys.h"

#define JWT_MAX_LEN   4096 /* longer tokens are refused before any parsing */
#define JWT_LEEWAY_S  60
#define JWT_FIELD_MAX 64

struct jwt_claims {
    char sub[JWT_FIELD_MAX + 1];
    char sid[JWT_FIELD_MAX + 1];
    char jti[JWT_FIELD_MAX + 1];
    int64_t iat;
    int64_t exp;
    /* amr (RFC 8176): always "pwd"; "otp" too after a second factor. */
    int amr_otp;
};

/* Claims of an API client's access token (SPEC §11): sub = client_id, no
 * sid. */
#define JWT_SCOPE_MAX 256
struct jwt_client_claims {
    char client_id[JWT_FIELD_MAX + 1];
    char scope[JWT_SCOPE_MAX + 1]; /* space-separated */
    char jti[JWT_FIELD_MAX + 1];
    int64_t iat;
    int64_t exp;
};

/* Sign claims c (iss/aud from the arguments) with the active key; appends
 * the compact token to out. alg is "EdDSA" or "Ed25519". */
void jwt_sign(const struct keyset *ks, const char *alg, const char *iss, const char *aud,
              const struct jwt_claims *c, struct buf *out);
/* Verify token[0..len) at time now (Unix seconds). 0 with *out filled, or
 * -1 with why[] saying what failed. */
int jwt_verify(const struct keyset *ks, const char *iss, const char *aud, const char *token,
               size_t len, int64_t now, struct jwt_claims *out, char *why, size_t whylen)
    __attribute__((warn_unused_result));
/* Sign a client token: claims iss aud sub client_id scope jti iat exp. */
void jwt_sign_client(const struct keyset *ks, const char *alg, const char *iss, const char *aud,
                     const struct jwt_client_claims *c, struct buf *out);
/* Verify a client token like jwt_verify(), which refuses them (no sid);
 * this one refuses user tokens (a sid, or sub != client_id). */
int jwt_verify_client(const struct keyset *ks, const char *iss, const char *aud, const char *token,
                      size_t len, int64_t now, struct jwt_client_claims *out, char *why,
                      size_t whylen) __attribute__((warn_unused_result));

#endif
