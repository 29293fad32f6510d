/* mfa: the second factor of SPEC §10 beside lib/accounts.c: TOTP
 * enrolment and confirmation (which hands out ten recovery codes once),
 * removal, login's second step (login/mfa), and the code check that
 * deletion of an account with MFA needs.
 *
 * Secrets: 20 random bytes, sealed with lib/secretbox.h before they are
 * stored (users.totp_pending, then totp_secret); opened only in the
 * request that checks a code and wiped right after. Codes: liboath
 * (lib/totp.h), ±1 step; a step is accepted by one conditional UPDATE that
 * raises users.totp_last_step, so one step is used at most once per
 * account across workers and hosts. Recovery codes: 10 characters of
 * base32 (50 bits), stored as keyed BLAKE2b, consumed by one DELETE ...
 * RETURNING. mfa_tokens: 256 random bits, only their BLAKE2b hash is
 * stored, 300 s, single-use, spent after MFA_TOKEN_MAX_FAILURES wrong codes.
 * Wrong codes count toward the account's login throttle (lib/throttle.h).
 *
 * Thread-safety: as lib/accounts.h. */
#ifndef ACCESS_MFA_H
#define ACCESS_MFA_H

#include <stddef.h>

#include "accounts.h"

enum mfa_stmt {
    MFA_USER = 0,
    MFA_ENROL,
    MFA_CONFIRM,
    MFA_STEP,
    MFA_RECOVERY_USE,
    MFA_DISABLE,
    MFA_TOKEN_NEW,
    MFA_TOKEN_GET,
    MFA_TOKEN_USE,
    MFA_TOKEN_FAIL,
    MFA_STMT__COUNT
};
/* Registered from MFA_STMT_BASE on (lib/statements.h). */
extern const struct db_stmt mfa_statements[MFA_STMT__COUNT];

#define MFA_TOKEN_BYTES        32
#define MFA_TOKEN_TTL_S        300
#define MFA_TOKEN_MAX_FAILURES 5
#define MFA_RECOVERY_CODES     10
#define MFA_RECOVERY_LEN       10 /* base32 characters: 50 bits */

/* POST /mfa/totp's answer. */
struct mfa_enrolment {
    const char *secret;      /* base32, in r's arena */
    const char *otpauth_uri; /* in r's arena */
};

/* Which kind of code a check accepted. */
enum mfa_code_kind { MFA_CODE_TOTP = 0, MFA_CODE_RECOVERY };

/* The outcome of a code check, for mfa_attempts_total. */
enum mfa_outcome {
    MFA_OUT_NONE = 0, /* no code was checked */
    MFA_OUT_SUCCESS,
    MFA_OUT_INVALID_CODE,
    MFA_OUT_INVALID_GRANT,
    MFA_OUT_THROTTLED,
    MFA_OUT_ERROR,
};

/* Login's second step for user_id whose password was right: store a new
 * mfa_token and put it in out->mfa_token (the rest of out NULL). Called by
 * accounts_login. */
enum accounts_status mfa_challenge(struct accounts *a, struct accounts_req *r, const char *user_id,
                                   struct accounts_tokens *out);

/* POST /mfa/totp: a new secret, pending until confirmed (a later
 * enrolment replaces it). ACC_NO_SECRETS_KEY without a usable
 * secrets_key (logged with the reason), ACC_INVALID when MFA is on already
 * (remove it first). */
enum accounts_status mfa_enrol(struct accounts *a, struct accounts_req *r,
                               const struct accounts_principal *p, struct mfa_enrolment *out);

/* POST /mfa/totp/confirm: code must be a TOTP code of the pending secret;
 * then MFA is on and codes[0..MFA_RECOVERY_CODES) (in r's arena) are the
 * recovery codes, shown this once. ACC_INVALID_CODE (throttled like a
 * wrong password), ACC_INVALID without a pending enrolment. */
enum accounts_status mfa_confirm(struct accounts *a, struct accounts_req *r,
                                 const struct accounts_principal *p, const char *code, size_t len,
                                 const char *codes[MFA_RECOVERY_CODES], enum mfa_outcome *o);

/* DELETE /mfa/totp: the password (ACC_BAD_CREDENTIALS) and a code
 * (ACC_INVALID_CODE), both counted by the throttle; then the factor and
 * its recovery codes and mfa_tokens are gone. ACC_NOT_FOUND when MFA is
 * off. */
enum accounts_status mfa_remove(struct accounts *a, struct accounts_req *r,
                                const struct accounts_principal *p, const char *password,
                                size_t pwlen, const char *code, size_t len, enum mfa_outcome *o);

/* POST /login/mfa: the mfa_token (ACC_INVALID_GRANT when unknown, used,
 * spent or expired) and a TOTP or recovery code (ACC_INVALID_CODE, which
 * counts toward the token's 5 and the throttle); then a session whose
 * tokens carry amr ["pwd","otp"]. */
enum accounts_status mfa_login(struct accounts *a, struct accounts_req *r, const char *mfa_token,
                               size_t toklen, const char *code, size_t len,
                               struct accounts_tokens *out, enum mfa_outcome *o);

/* For DELETE /me (SPEC §9): ACC_OK when the account has no second factor
 * or code (NULL: not given) is a valid code for it, consumed; ACC_INVALID
 * (field "code") when MFA is on and no code was given; ACC_INVALID_CODE
 * (counted by the throttle) when wrong. */
enum accounts_status mfa_require_code(struct accounts *a, struct accounts_req *r,
                                      const char *user_id, const char *code, size_t len,
                                      enum mfa_outcome *o);

#endif
