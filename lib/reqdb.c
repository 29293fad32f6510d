#include "reqdb.h"

#include <pthread.h>
#include <string.h>

#include "admin.h"
#include "clients.h"
#include "l2.h"
#include "log.h"
#include "oauth.h"

static struct db_stmt reqdb_table[REQDB_STMT__COUNT];
static pthread_once_t reqdb_once = PTHREAD_ONCE_INIT;

static void reqdb_build(void)
{
    memcpy(reqdb_table, accounts_statements, sizeof(accounts_statements));
    memcpy(reqdb_table + REQDB_CL_INSERT, clients_statements,
           sizeof(struct db_stmt) * CLIENTS_STMT__COUNT);
    memcpy(reqdb_table + REQDB_OA_REVOKE_JTI, oauth_statements,
           sizeof(struct db_stmt) * OAUTH_STMT__COUNT);
    memcpy(reqdb_table + REQDB_AD_USERS_PAGE, admin_statements,
           sizeof(struct db_stmt) * ADMIN_STMT__COUNT);
}

_Static_assert(REQDB_OA_REVOKE_JTI - REQDB_CL_INSERT == CLIENTS_STMT__COUNT &&
                   REQDB_AD_USERS_PAGE - REQDB_OA_REVOKE_JTI == OAUTH_STMT__COUNT &&
                   REQDB_STMT__COUNT - REQDB_AD_USERS_PAGE == ADMIN_STMT__COUNT,
               "every module's statements are registered in its enum's order");

const struct db_stmt *reqdb_statements(void)
{
    pthread_once(&reqdb_once, reqdb_build);
    return reqdb_table;
}

enum db_result reqdb_exec(struct accounts *a, struct accounts_req *r, size_t stmt,
                          const char *const *params, PGresult **res)
{
    char err[256];
    double ms = 0;
    const char *name = reqdb_statements()[stmt].name;
    *res = NULL;
    struct db_conn *c = db_pool_acquire(a->db, accounts_deadline(a, r), err, sizeof(err));
    if (c == NULL) {
        log_msg(LOG_DEBUG, "%s: %s", name, err);
        return DB_UNAVAILABLE;
    }
    enum db_result rc = db_exec(c, stmt, params, r->deadline, res, &ms);
    db_pool_release(a->db, c);
    r->db_ms = (r->db_ms < 0 ? 0 : r->db_ms) + ms;
    if (rc == DB_ERROR) {
        db_error_summary(*res, err, sizeof(err));
        if (db_error_unavailable(*res)) {
            log_msg(LOG_WARN, "%s failed: %s", name, err);
            PQclear(*res);
            *res = NULL;
            return DB_UNAVAILABLE;
        }
        log_msg(LOG_ERROR, "%s failed: %s", name, err);
    }
    return rc;
}

enum accounts_status reqdb_status(enum db_result rc)
{
    return rc == DB_UNAVAILABLE || rc == DB_TIMEOUT ? ACC_UNAVAILABLE : ACC_INTERNAL;
}

void reqdb_audit(struct accounts *a, struct accounts_req *r, enum audit_type type,
                 const char *user_id, const char *detail)
{
    if (a->audit == NULL)
        return;
    struct audit_event ev = {.type = type,
                             .user_id = user_id,
                             .ip = r->ip,
                             .user_agent = r->user_agent,
                             .detail = detail};
    if (audit_emit(a->audit, &ev) == AUDIT_LOST)
        log_msg(LOG_ERROR, "audit event %s lost", audit_type_name(type));
}

void reqdb_publish(struct accounts *a, const char *key, size_t klen, struct cache_value *v,
                   int64_t version)
{
    if (a->l2 != NULL)
        (void)l2_write(a->l2, key, klen, v, version, a->cfg->l2_ttl * 1000, 1);
    if (a->l1 != NULL)
        cache_invalidate(a->l1, key, klen);
}
