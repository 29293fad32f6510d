/* lifecycle: the account's life cycle of SPEC §9 beside lib/accounts.c:
 * signup (which queues a verification message), verification, recovery
 * (reset by emailed token) and deletion.
 *
 * Every change and the outbox rows that report it (messages, events) are
 * one SQL statement (data-modifying CTEs), so they commit or roll back
 * together, and the delivery thread is kicked after the commit.
 *
 * Tokens: 256 random bits, base64url (43 characters); only their BLAKE2b
 * hash (accounts_token_hash) is stored; consumed by one UPDATE ... WHERE
 * used_at IS NULL AND expires_at > now() RETURNING, so of two concurrent
 * uses one wins. The raw token exists in the request and in the pending
 * outbox row's link only (the link is dropped once delivered or dead).
 *
 * Thread-safety: as lib/accounts.h. */
#ifndef ACCESS_LIFECYCLE_H
#define ACCESS_LIFECYCLE_H

#include <stddef.h>

#include "accounts.h"

enum lifecycle_stmt {
    LIFE_SIGNUP = 0,
    LIFE_VERIFY_REQUEST,
    LIFE_VERIFY,
    LIFE_RECOVER,
    LIFE_RESET,
    LIFE_DELETE,
    LIFE_STMT__COUNT
};
/* Registered from LIFECYCLE_STMT_BASE on (lib/statements.h). */
extern const struct db_stmt lifecycle_statements[LIFE_STMT__COUNT];

#define LIFECYCLE_TOKEN_BYTES     32
#define LIFECYCLE_RESETS_PER_HOUR 3

/* POST /signup: hash, insert the user, its verification token and message
 * (and user.created) in one statement. ACC_EMAIL_TAKEN on a taken email. */
enum accounts_status lifecycle_signup(struct accounts *a, struct accounts_req *r, const char *email,
                                      const char *password, size_t pwlen, const char *name,
                                      struct accounts_user *out);
/* POST /verify/request: queue a verification message unless the email is
 * verified already (ACC_OK either way). */
enum accounts_status lifecycle_verify_request(struct accounts *a, struct accounts_req *r,
                                              const struct accounts_principal *p);
/* POST /verify: consume the token, set email_verified (every cached copy
 * shows it at once), out = the user. ACC_INVALID_GRANT when the token is
 * unknown, used or expired. */
enum accounts_status lifecycle_verify(struct accounts *a, struct accounts_req *r, const char *token,
                                      size_t len, struct accounts_user *out);
/* POST /recover: if an account has this email and fewer than
 * LIFECYCLE_RESETS_PER_HOUR reset messages went out in the last hour,
 * invalidate its unused reset tokens and queue a new one. The same work
 * (one statement, no hash) whether or not the account exists; the status
 * says only whether PostgreSQL answered. */
enum accounts_status lifecycle_recover(struct accounts *a, struct accounts_req *r,
                                       const char *email);
/* POST /recover/confirm: hash the new password, then in one statement
 * consume the token, set the password (and email_verified: the link proved
 * the address), revoke every session; every worker and host refuses their
 * tokens. *user_id (>= 37 bytes) gets the account for the throttle.
 * ACC_INVALID_GRANT as lifecycle_verify. */
enum accounts_status lifecycle_reset(struct accounts *a, struct accounts_req *r, const char *token,
                                     size_t len, const char *password, size_t pwlen, char *user_id);
/* DELETE /me: check the password (ACC_BAD_CREDENTIALS) and, when the
 * account has a second factor, code (NULL: not given; lib/mfa.h
 * mfa_require_code), then delete the user with its sessions, tokens,
 * factors and message rows; revoke its tokens everywhere; audit events
 * stay (user id only). */
enum accounts_status lifecycle_delete(struct accounts *a, struct accounts_req *r,
                                      const struct accounts_principal *p, const char *password,
                                      size_t pwlen, const char *code, size_t codelen);

#endif
