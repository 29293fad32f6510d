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
    ADMIN_STMT__COUNT
};
extern const struct db_stmt admin_statements[ADMIN_STMT__COUNT];

#endif
