#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "json.h"
#include "reqdb.h"
#include "uuid.h"
#include "listing.h"

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
/* The admin view of a user: the profile plus disabled and sessions_active
 * (columns 0-5 shown, 6 the cursor key, 7 the version, 8 email_verified,
 * 9 mfa_enabled). */
#define AD_COLS                                                                                    \
    "u.id, u.email, u.name, " TS(                                                                  \
        "u.created_at") ", u.disabled, (SELECT count(*) FROM sessions s "                          \
                        "WHERE s.user_id = u.id AND s.revoked_at IS NULL "                         \
                        "AND s.expires_at > now()), (extract(epoch FROM "                          \
                        "u.created_at) * 1000000)::bigint, u.version, u.email_verified, "          \
                        "u.mfa_enabled"
#define AD_NCOLS 10 /* a statement's own columns come after AD_COLS */

const struct db_stmt admin_statements[ADMIN_STMT__COUNT] = {
    [AD_USERS_PAGE] = {"admin_users_page",
                       "SELECT " AD_COLS
                       " FROM users u WHERE ($1::bigint IS NULL OR (u.created_at, "
                       "u.id) < ('epoch'::timestamptz + $1::bigint * interval '1 microsecond', "
                       "$2::uuid)) ORDER BY u.created_at DESC, u.id DESC LIMIT $3",
                       3, 1},
    [AD_USER_BY_EMAIL] = {"admin_user_by_email",
                          "SELECT " AD_COLS " FROM users u WHERE lower(u.email) = lower($1)", 1, 1},
    [AD_USER] = {"admin_user", "SELECT " AD_COLS " FROM users u WHERE u.id = $1", 1, 1},
    /* The old disabled flag comes back too: only a change is audited. */
    [AD_USER_SET] =
        {"admin_user_set",
         "WITH old AS (SELECT id, disabled FROM users WHERE id = $1 FOR UPDATE), upd AS "
         "(UPDATE users u SET name = coalesce($2, u.name), disabled = "
         "coalesce($3::boolean, u.disabled), version = u.version + 1, updated_at = "
         "now() FROM old WHERE u.id = old.id RETURNING u.*) SELECT " AD_COLS
         ", old.disabled FROM upd u, old",
         3, 0},
    [AD_USER_DELETE] =
        {"admin_user_delete",
         "WITH s AS (SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS "
         "NULL), c AS (SELECT id FROM clients WHERE user_id = $1), d AS (DELETE FROM "
         "users WHERE id = $1 RETURNING id) SELECT 'd', id::text FROM d UNION ALL "
         "SELECT 's', id::text FROM s WHERE EXISTS (SELECT 1 FROM d) UNION ALL "
         "SELECT 'c', id::text FROM c WHERE EXISTS (SELECT 1 FROM d)",
         1, 0},
    [AD_REVOKE_ALL] = {"admin_revoke_all",
                       "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at "
                       "IS NULL RETURNING id",
                       1, 1},
    [AD_DISABLED] = {"admin_disabled", "SELECT disabled FROM users WHERE id = $1", 1, 1},
    [AD_CLIENTS_BUMP] = {"admin_clients_bump",
                         "UPDATE clients SET version = version + 1 WHERE user_id = $1 RETURNING "
                         "id, version",
                         1, 0},
};

/* ---- helpers ----------------------------------------------------------- */

static int admin_id(const char *id, size_t len, char out[UUID_STR_LEN + 1])
{
    uint8_t u[16];
    if (uuid_parse(id, len, u) != 0)
        return -1;
    uuid_format(u, out);
    return 0;
}

/* Row i of a statement with AD_COLS first, as the admin view. */
static void admin_view(struct buf *out, PGresult *res, int i)
{
    buf_puts(out, "{\"id\":");
    json_put_cstr(out, PQgetvalue(res, i, 0));
    buf_puts(out, ",\"email\":");
    json_put_cstr(out, PQgetvalue(res, i, 1));
    buf_puts(out, ",\"name\":");
    json_put_cstr(out, PQgetvalue(res, i, 2));
    buf_puts(out, ",\"created_at\":");
    json_put_cstr(out, PQgetvalue(res, i, 3));
    buf_printf(out,
               ",\"email_verified\":%s,\"mfa_enabled\":%s,\"disabled\":%s,"
               "\"sessions_active\":%s}",
               PQgetvalue(res, i, 8)[0] == 't' ? "true" : "false",
               PQgetvalue(res, i, 9)[0] == 't' ? "true" : "false",
               PQgetvalue(res, i, 4)[0] == 't' ? "true" : "false", PQgetvalue(res, i, 5));
}

static void admin_detail(struct buf *d, const char *actor, const char *k, const char *v)
{
    buf_puts(d, "{\"client_id\":");
    json_put_cstr(d, actor);
    if (k != NULL) {
        buf_printf(d, ",\"%s\":", k);
        json_put_cstr(d, v);
    }
    buf_putc(d, '}');
}

/* Session sid is gone: every worker refuses its tokens (as logout does). */
static void admin_session_gone(struct accounts *a, const char *sid)
{
    char key[48];
    size_t kl = (size_t)snprintf(key, sizeof(key), "s:%s", sid);
    struct cache_value *v = cache_value_new("-", 1, NULL, 1);
    reqdb_publish(a, key, kl, v, 1);
    cache_value_release(v);
}

/* Revoke the sessions of uid, telling every worker; their count. */
static enum accounts_status admin_revoke_all(struct accounts *a, struct accounts_req *r,
                                             const char *uid, int *n)
{
    const char *p[1] = {uid};
    PGresult *res;
    enum db_result rc = reqdb_exec(a, r, REQDB_AD_REVOKE_ALL, p, &res);
    *n = 0;
    if (rc != DB_OK) {
        PQclear(res);
        return reqdb_status(rc);
    }
    for (int i = 0; i < PQntuples(res); i++)
        admin_session_gone(a, PQgetvalue(res, i, 0));
    *n = PQntuples(res);
    PQclear(res);
    return ACC_OK;
}

/* ---- use cases --------------------------------------------------------- */

enum accounts_status admin_users(struct accounts *a, struct accounts_req *r, const char *email,
                                 const char *cursor, long limit, struct buf *out)
{
    unsigned char ckey[LISTING_CURSOR_KEY_LEN];
    char micros_s[32], id[37], lim[24];
    long long micros = 0;
    PGresult *res = NULL;
    enum accounts_status st = ACC_OK;
    enum db_result rc;
    int rows, shown;

    listing_cursor_key(a, ckey);
    if (email != NULL) {
        const char *p[1] = {email};
        rc = reqdb_exec(a, r, REQDB_AD_USER_BY_EMAIL, p, &res);
        limit = 1;
    } else {
        const char *p[3] = {NULL, NULL, lim};
        if (cursor != NULL) {
            if (listing_cursor_decode(ckey, cursor, &micros, id) != 0) {
                st = ACC_INVALID;
                goto out;
            }
            snprintf(micros_s, sizeof(micros_s), "%lld", micros);
            p[0] = micros_s;
            p[1] = id;
        }
        snprintf(lim, sizeof(lim), "%ld", limit + 1);
        rc = reqdb_exec(a, r, REQDB_AD_USERS_PAGE, p, &res);
    }
    if (rc != DB_OK) {
        st = reqdb_status(rc);
        goto out;
    }
    rows = PQntuples(res);
    shown = rows > limit ? (int)limit : rows;
    buf_puts(out, "{\"items\":[");
    for (int i = 0; i < shown; i++) {
        if (i > 0)
            buf_putc(out, ',');
        admin_view(out, res, i);
    }
    listing_page_end(out, ckey, res, email == NULL && rows > limit ? shown : 0, 6);
out:
    PQclear(res);
    sodium_memzero(ckey, sizeof(ckey));
    return st;
}

enum accounts_status admin_user(struct accounts *a, struct accounts_req *r, const char *id,
                                size_t id_len, struct buf *out)
{
    char uid[UUID_STR_LEN + 1];
    PGresult *res;
    if (admin_id(id, id_len, uid) != 0)
        return ACC_NOT_FOUND;
    const char *p[1] = {uid};
    enum db_result rc = reqdb_exec(a, r, REQDB_AD_USER, p, &res);
    enum accounts_status st = rc != DB_OK ? reqdb_status(rc) : ACC_OK;
    if (rc == DB_OK && PQntuples(res) != 1)
        st = ACC_NOT_FOUND;
    if (st == ACC_OK)
        admin_view(out, res, 0);
    PQclear(res);
    return st;
}

enum accounts_status admin_user_set(struct accounts *a, struct accounts_req *r, const char *actor,
                                    const char *id, size_t id_len, const char *name, int disabled,
                                    struct buf *out)
{
    char uid[UUID_STR_LEN + 1], key[48];
    PGresult *res;
    struct buf d = {0};
    if (admin_id(id, id_len, uid) != 0)
        return ACC_NOT_FOUND;
    const char *p[3] = {uid, name, disabled < 0 ? NULL : disabled ? "true" : "false"};
    enum db_result rc = reqdb_exec(a, r, REQDB_AD_USER_SET, p, &res);
    if (rc != DB_OK || PQntuples(res) != 1) {
        PQclear(res);
        return rc != DB_OK ? reqdb_status(rc) : ACC_NOT_FOUND;
    }
    int was = PQgetvalue(res, 0, AD_NCOLS)[0] == 't', now = PQgetvalue(res, 0, 4)[0] == 't';
    int64_t version = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
    size_t start = out->len;
    admin_view(out, res, 0);
    PQclear(res);
    /* Every cached profile copy is stale now. */
    size_t kl = (size_t)snprintf(key, sizeof(key), "u:%s", uid);
    reqdb_publish(a, key, kl, NULL, version);
    enum accounts_status st = ACC_OK;
    int n = 0;
    if (now) { /* also when already disabled: a session opened meanwhile goes */
        st = admin_revoke_all(a, r, uid, &n);
        if (st == ACC_OK && n > 0) { /* show the count after the revocation */
            out->len = start;
            st = admin_user(a, r, uid, strlen(uid), out);
        }
    }
    if (was != now && st == ACC_OK) {
        /* The user's API clients live and die with the account. */
        const char *cp[1] = {uid};
        rc = reqdb_exec(a, r, REQDB_AD_CLIENTS_BUMP, cp, &res);
        for (int i = 0; rc == DB_OK && i < PQntuples(res); i++) {
            kl = (size_t)snprintf(key, sizeof(key), "c:%s", PQgetvalue(res, i, 0));
            reqdb_publish(a, key, kl, NULL, strtoll(PQgetvalue(res, i, 1), NULL, 10));
        }
        PQclear(res);
        if (rc != DB_OK)
            st = reqdb_status(rc);
    }
    if (was != now) {
        char cnt[16];
        snprintf(cnt, sizeof(cnt), "%d", n);
        admin_detail(&d, actor, now ? "sessions_revoked" : NULL, cnt);
        reqdb_audit(a, r, now ? AUDIT_ACCOUNT_DISABLED : AUDIT_ACCOUNT_ENABLED, uid, d.data);
    }
    buf_free(&d);
    return st;
}

enum accounts_status admin_user_delete(struct accounts *a, struct accounts_req *r,
                                       const char *actor, const char *id, size_t id_len)
{
    char uid[UUID_STR_LEN + 1], key[48];
    PGresult *res;
    struct buf d = {0};
    if (admin_id(id, id_len, uid) != 0)
        return ACC_NOT_FOUND;
    const char *p[1] = {uid};
    enum db_result rc = reqdb_exec(a, r, REQDB_AD_USER_DELETE, p, &res);
    if (rc != DB_OK) {
        PQclear(res);
        return reqdb_status(rc);
    }
    enum accounts_status st = ACC_NOT_FOUND;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *what = PQgetvalue(res, i, 0), *val = PQgetvalue(res, i, 1);
        size_t kl;
        if (what[0] == 'd') {
            st = ACC_OK;
            kl = (size_t)snprintf(key, sizeof(key), "u:%s", val);
            reqdb_publish(a, key, kl, NULL, INT64_C(1) << 40);
        } else if (what[0] == 's') {
            admin_session_gone(a, val);
        } else {
            kl = (size_t)snprintf(key, sizeof(key), "c:%s", val);
            reqdb_publish(a, key, kl, NULL, INT64_C(1) << 40);
        }
    }
    PQclear(res);
    if (st == ACC_OK) {
        admin_detail(&d, actor, NULL, NULL);
        reqdb_audit(a, r, AUDIT_ACCOUNT_DELETED, uid, d.data);
    }
    buf_free(&d);
    return st;
}

enum accounts_status admin_revoke_sessions(struct accounts *a, struct accounts_req *r,
                                           const char *actor, const char *id, size_t id_len)
{
    struct buf view = {0}, d = {0};
    char uid[UUID_STR_LEN + 1], cnt[16];
    int n;
    enum accounts_status st = admin_user(a, r, id, id_len, &view);
    buf_free(&view);
    if (st != ACC_OK)
        return st;
    (void)admin_id(id, id_len, uid);
    st = admin_revoke_all(a, r, uid, &n);
    if (st == ACC_OK) {
        snprintf(cnt, sizeof(cnt), "%d", n);
        admin_detail(&d, actor, "sessions_revoked", cnt);
        reqdb_audit(a, r, AUDIT_SESSION_REVOKED, uid, d.data);
    }
    buf_free(&d);
    return st;
}
