/* reqdb: what the use-case modules next to accounts (clients, oauth,
 * admin) share: the statement table of the whole service, one statement
 * run for a request, audit events with a JSON detail, and a cache change
 * told to every worker.
 *
 * Statement ids: accounts' enum accounts_stmt first, then each module's
 * own enum from its base below. The pool is created with
 * reqdb_statements() / REQDB_STMT__COUNT.
 *
 * Thread-safety: all functions may run concurrently. */
#ifndef ACCESS_REQDB_H
#define ACCESS_REQDB_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "accounts.h"
#include "audit.h"
#include "cache.h"
#include "db.h"

enum reqdb_stmt {
    REQDB_CL_INSERT = STMT__COUNT, /* clients.c */
    REQDB_CL_PAGE,
    REQDB_CL_DELETE,
    REQDB_CL_DELETE_ANY,
    REQDB_CL_KEY_ADD,
    REQDB_CL_KEY_REVOKE,
    REQDB_CL_LOAD,
    REQDB_CL_LIST_ALL,
    REQDB_OA_REVOKE_JTI, /* oauth.c */
    REQDB_OA_JTI_REVOKED,
    REQDB_OA_REFRESH_LOOKUP,
    REQDB_AD_USERS_PAGE, /* admin.c */
    REQDB_AD_USER_BY_EMAIL,
    REQDB_AD_USER,
    REQDB_AD_USER_SET,
    REQDB_AD_USER_DELETE,
    REQDB_AD_REVOKE_ALL,
    REQDB_AD_DISABLED,
    REQDB_AD_CLIENTS_BUMP,
    REQDB_STMT__COUNT
};

/* The whole table: REQDB_STMT__COUNT entries, static. */
const struct db_stmt *reqdb_statements(void);

/* Run one statement on a pooled connection by the request's deadline (set
 * from request_timeout_ms when r has none); adds its time to r->db_ms.
 * Errors are logged by statement name and SQLSTATE only; a server in
 * trouble (statement timeout, shutdown) is DB_UNAVAILABLE. On DB_OK and
 * DB_ERROR the caller PQclear()s *res. */
enum db_result reqdb_exec(struct accounts *a, struct accounts_req *r, size_t stmt,
                          const char *const *params, PGresult **res)
    __attribute__((warn_unused_result));
/* ACC_UNAVAILABLE for an unreachable or slow server, else ACC_INTERNAL. */
enum accounts_status reqdb_status(enum db_result rc);
/* Queue an event with detail, a compact JSON object (NULL: {}). No-op
 * without an audit log. */
void reqdb_audit(struct accounts *a, struct accounts_req *r, enum audit_type type,
                 const char *user_id, const char *detail);
/* After a committed write: store v (NULL: a tombstone making every copy
 * older than version stale) in L2 and PUBLISH the key, then drop it from
 * this machine's L1 (the same path as logout, lib/accounts.c). */
void reqdb_publish(struct accounts *a, const char *key, size_t klen, struct cache_value *v,
                   int64_t version);

#endif
