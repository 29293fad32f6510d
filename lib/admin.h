/* admin: the administration use cases of SPEC §12, for a client token with
 * the admin scope (the handlers check the scope): users looked up, listed,
 * changed (name, disabled), deleted, their sessions revoked, their audit
 * read. Every action writes an audit event on the user with the acting
 * client id in detail. Disabling an account revokes all its sessions (so
 * its tokens are refused within the revocation delay) and login refuses it
 * after the password check (lib/accounts.c).
 *
 * Thread-safety: all functions may run concurrently. */
#ifndef ACCESS_ADMIN_H
#define ACCESS_ADMIN_H

#include <stddef.h>

#include "accounts.h"
#include "buf.h"
#include "db.h"

enum admin_stmt {
    AD_USERS_PAGE = 0,
    AD_USER_BY_EMAIL,
    AD_USER,
    AD_USER_SET,
    AD_USER_DELETE,
    AD_REVOKE_ALL,
    AD_DISABLED,
    AD_CLIENTS_BUMP,
    ADMIN_STMT__COUNT
};
extern const struct db_stmt admin_statements[ADMIN_STMT__COUNT];

/* The page of all users newest first, or (email not NULL) the users with
 * that email, case-insensitively (0 or 1), as {"items":[…],"next_cursor"}.
 * Each item is the admin view: the profile plus "disabled" and
 * "sessions_active". ACC_INVALID for a bad cursor. */
enum accounts_status admin_users(struct accounts *a, struct accounts_req *r, const char *email,
                                 const char *cursor, long limit, struct buf *out);
/* The admin view of user id; ACC_NOT_FOUND. */
enum accounts_status admin_user(struct accounts *a, struct accounts_req *r, const char *id,
                                size_t id_len, struct buf *out);
/* Change name (NULL: keep) and disabled (-1: keep, 0, 1) of user id for
 * client actor; appends the new admin view. Disabling revokes every
 * session in every worker, and (like enabling) makes every worker reload
 * the user's API clients, which a disabled owner's are not; the profile
 * caches are told. Audited (account_disabled / account_enabled) when the
 * flag changes. */
enum accounts_status admin_user_set(struct accounts *a, struct accounts_req *r, const char *actor,
                                    const char *id, size_t id_len, const char *name, int disabled,
                                    struct buf *out);
/* Delete user id with its sessions, clients (their tokens refused from
 * then on) and tokens; audited as account_deleted. */
enum accounts_status admin_user_delete(struct accounts *a, struct accounts_req *r,
                                       const char *actor, const char *id, size_t id_len);
/* Revoke every live session of user id; audited as session_revoked. */
enum accounts_status admin_revoke_sessions(struct accounts *a, struct accounts_req *r,
                                           const char *actor, const char *id, size_t id_len);

#endif
