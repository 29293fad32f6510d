/* statements: the db pool's statement table of the whole service, the
 * tables of the modules one after the other: reqdb_statements() (accounts,
 * then clients, oauth and admin: enum reqdb_stmt), then
 * lifecycle_statements from LIFECYCLE_STMT_BASE, then outbox_statements
 * from OUTBOX_STMT_BASE, then mfa_statements from MFA_STMT_BASE. */
#ifndef ACCESS_STATEMENTS_H
#define ACCESS_STATEMENTS_H

#include <stddef.h>

#include "accounts.h"
#include "db.h"
#include "lifecycle.h"
#include "mfa.h"
#include "outbox.h"
#include "reqdb.h"

#define LIFECYCLE_STMT_BASE ((size_t)REQDB_STMT__COUNT)
#define OUTBOX_STMT_BASE    (LIFECYCLE_STMT_BASE + (size_t)LIFE_STMT__COUNT)
#define MFA_STMT_BASE       (OUTBOX_STMT_BASE + (size_t)OUTBOX_STMT__COUNT)
#define STATEMENTS_COUNT    (MFA_STMT_BASE + (size_t)MFA_STMT__COUNT)

/* The whole table (STATEMENTS_COUNT entries); built once, thread-safe. */
const struct db_stmt *statements_all(void);

#endif
