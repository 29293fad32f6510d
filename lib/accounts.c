#include "accounts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "audit.h"
#include "authn.h"
#include "b64url.h"
#include "clock.h"
#include "janitor.h"
#include "json.h"
#include "jwt.h"
#include "log.h"
#include "mfa.h"
#include "uuid.h"
#include "listing.h"

#define TS(col)   "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define USER_COLS ACCOUNTS_USER_COLS

const struct db_stmt accounts_statements[STMT__COUNT] = {
    [STMT_PING] = {"ping", "SELECT 1", 0, 1},
    [STMT_USER_BY_EMAIL] =
        {"user_by_email",
         "SELECT id, password_hash, disabled, mfa_enabled FROM users WHERE lower(email) = "
         "lower($1)",
         1, 1},
    [STMT_USER_HASH_BY_ID] = {"user_hash_by_id", "SELECT password_hash FROM users WHERE id = $1", 1,
                              1},
    [STMT_USER_SET_HASH] = {"user_set_hash",
                            "UPDATE users SET password_hash = $2 WHERE id = $1 AND "
                            "password_hash = $3",
                            3, 1},
    [STMT_USER_SET_NAME] = {"user_set_name",
                            "UPDATE users SET name = $2, version = version + 1, updated_at = now() "
                            "WHERE id = $1 RETURNING " USER_COLS,
                            2, 0},
    [STMT_SESSION_CREATE] = {"session_create",
                             "WITH s AS (INSERT INTO sessions (id, user_id, expires_at, ip, "
                             "user_agent, amr_otp) VALUES ($1, $2, now() + make_interval(secs => "
                             "$3), $4, $5, $7) RETURNING id) INSERT INTO refresh_tokens "
                             "(token_hash, session_id) SELECT $6::bytea, id FROM s",
                             7, 0},
    /* FOR UPDATE in the ordered subquery: concurrent trims of one user lock
     * its sessions in one order (newest first), so they queue instead of
     * deadlocking (40P01 seen with parallel login/mfa of one account). */
    [STMT_SESSIONS_TRIM] = {"sessions_trim",
                            "UPDATE sessions SET revoked_at = now() WHERE id IN (SELECT id FROM "
                            "sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > "
                            "now() ORDER BY created_at DESC, id DESC OFFSET $2 FOR UPDATE) "
                            "RETURNING id",
                            2, 1},
    [STMT_USER_BY_ID] = {"user_by_id", "SELECT " USER_COLS " FROM users WHERE id = $1", 1, 1},
    /* $3: outbox rows (session.revoked), written only when this statement
     * is the one that revoked it. */
    [STMT_SESSION_REVOKE] = {"session_revoke",
                             "WITH s AS (UPDATE sessions SET revoked_at = coalesce(sessions."
                             "revoked_at, now()) FROM (SELECT id, revoked_at FROM sessions WHERE "
                             "id = $1 AND user_id = $2 FOR UPDATE) old WHERE sessions.id = old.id "
                             "RETURNING sessions.id, old.revoked_at IS NULL AS fresh), o AS "
                             "(" OUTBOX_INSERT_SQL("$3") " WHERE EXISTS (SELECT 1 FROM s WHERE "
                                                         "fresh)) SELECT id FROM s",
                             3, 0},
    [STMT_REFRESH_ROTATE] =
        {"refresh_rotate",
         "WITH used AS (UPDATE refresh_tokens rt SET used_at = now() FROM "
         "sessions s WHERE rt.token_hash = $1::bytea AND rt.used_at IS NULL "
         "AND s.id = rt.session_id AND s.revoked_at IS NULL AND s.expires_at "
         "> now() RETURNING rt.session_id, s.user_id, s.amr_otp), "
         "ins AS (INSERT INTO refresh_tokens (token_hash, session_id) SELECT "
         "$2::bytea, session_id FROM used), "
         "touch AS (UPDATE sessions SET last_used_at = now() WHERE id IN "
         "(SELECT session_id FROM used)) SELECT session_id, user_id, amr_otp FROM used",
         2, 0},
    /* Only the first reuse per session returns its row (reuse_detected_at
     * is set once; a concurrent replay re-checks it after the row lock), so
     * warning, event and publish happen once per session. */
    [STMT_REFRESH_REUSE] = {"refresh_reuse",
                            "UPDATE sessions SET revoked_at = coalesce(revoked_at, now()), "
                            "reuse_detected_at = now() WHERE id = (SELECT session_id FROM "
                            "refresh_tokens WHERE token_hash = $1::bytea AND used_at IS NOT NULL) "
                            "AND reuse_detected_at IS NULL RETURNING id, user_id",
                            1, 0},
    [STMT_PASSWORD_CHANGE] =
        {"password_change",
         "WITH u AS (UPDATE users SET password_hash = $2, version = version "
         "+ 1, updated_at = now() WHERE id = $1 RETURNING id, version), "
         "s AS (UPDATE sessions SET revoked_at = now() WHERE user_id IN "
         "(SELECT id FROM u) AND id <> $3 AND revoked_at IS NULL RETURNING "
         "id), o AS (" OUTBOX_INSERT_SQL(
             "$4") " WHERE EXISTS (SELECT 1 FROM u)) SELECT 'u', "
                   "version::text FROM u UNION ALL SELECT 's', id::text FROM s",
         4, 0},
    [STMT_SESSIONS_PAGE] = {"sessions_page",
                            "SELECT id, " TS("created_at") ", " TS("last_used_at") ", " TS(
                                "expires_at") ", ip, user_agent, "
                                              "(extract(epoch FROM created_at) * 1000000)::bigint "
                                              "FROM sessions WHERE user_id = $1 AND revoked_at IS "
                                              "NULL AND expires_at > now() AND ($2::bigint IS NULL "
                                              "OR (created_at, id) < ('epoch'::timestamptz + "
                                              "$2::bigint * interval '1 microsecond', $3::uuid)) "
                                              "ORDER BY created_at DESC, id DESC LIMIT $4",
                            4, 1},
    [STMT_AUDIT_PAGE] = {"audit_page",
                         "SELECT id, type, to_char(created_at AT TIME ZONE 'UTC', "
                         "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ip, user_agent, detail::text, "
                         "(extract(epoch FROM created_at) * 1000000)::bigint FROM audit_events "
                         "WHERE user_id = $1 AND ($2::bigint IS NULL OR (created_at, id) < "
                         "('epoch'::timestamptz + $2::bigint * interval '1 microsecond', "
                         "$3::uuid)) ORDER BY created_at DESC, id DESC LIMIT $4",
                         4, 1},
    [STMT_AUDIT_INSERT] = {AUDIT_INSERT_NAME, AUDIT_INSERT_SQL, AUDIT_INSERT_NPARAMS, 1},
    [STMT_JANITOR_DEAD_TOKENS] = {JANITOR_DEAD_TOKENS_NAME, JANITOR_DEAD_TOKENS_SQL,
                                  JANITOR_NPARAMS, 1},
    [STMT_JANITOR_DEAD_SESSIONS] = {JANITOR_DEAD_SESSIONS_NAME, JANITOR_DEAD_SESSIONS_SQL,
                                    JANITOR_NPARAMS, 1},
    [STMT_JANITOR_USED_TOKENS] = {JANITOR_USED_TOKENS_NAME, JANITOR_USED_TOKENS_SQL,
                                  JANITOR_NPARAMS, 1},
    [STMT_JANITOR_OLD_AUDIT] = {JANITOR_OLD_AUDIT_NAME, JANITOR_OLD_AUDIT_SQL, JANITOR_NPARAMS, 1},
    [STMT_JANITOR_OLD_OUTBOX] = {JANITOR_OLD_OUTBOX_NAME, JANITOR_OLD_OUTBOX_SQL, JANITOR_NPARAMS,
                                 1},
    [STMT_JANITOR_EXPIRED_TOKENS] = {JANITOR_EXPIRED_TOKENS_NAME, JANITOR_EXPIRED_TOKENS_SQL,
                                     JANITOR_NPARAMS, 1},
    [STMT_JANITOR_EXPIRED_MFA] = {JANITOR_EXPIRED_MFA_NAME, JANITOR_EXPIRED_MFA_SQL,
                                  JANITOR_NPARAMS, 1},
    /* The session (by id alone, so the cached answer does not depend on
     * the token) with its owner's profile and expiry. */
    [STMT_USER_BY_SESSION] =
        {"user_by_session",
         "SELECT u.id, u.email, u.name, " TS(
             "u.created_at") ", u.version, u.email_verified, u.mfa_enabled, extract(epoch FROM "
                             "s.expires_at)::bigint FROM sessions s JOIN "
                             "users u ON u.id = s.user_id WHERE s.id = $1 "
                             "AND s.revoked_at IS NULL AND s.expires_at > "
                             "now()",
         1, 1},
};

_Static_assert(STMT_JANITOR_EXPIRED_MFA - STMT_JANITOR_DEAD_TOKENS ==
                       JANITOR_EXPIRED_MFA - JANITOR_DEAD_TOKENS &&
                   STMT_JANITOR_EXPIRED_MFA + 1 - STMT_JANITOR_DEAD_TOKENS == JANITOR_STMT__COUNT,
               "the janitor's statements are registered in the order of enum janitor_stmt");

#define REFRESH_BYTES 32

/* ---- input rules -------------------------------------------------------- */

static int accounts_invalid(struct accounts_req *r, const char *code, const char *field,
                            const char *detail)
{
    r->code = code;
    r->field = field;
    r->detail = detail;
    return -1;
}

int accounts_check_email(struct accounts_req *r, const char *email, size_t len)
{
    const char *at = memchr(email, '@', len);
    if (len == 0 || len > 254)
        return accounts_invalid(r, "invalid_email", "email",
                                "email must be an address of at most 254 bytes");
    if (strlen(email) != len)
        return accounts_invalid(r, "invalid_email", "email", "email contains a NUL byte");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)email[i];
        if (c <= 0x20 || c == 0x7f || c == '<' || c == '>' || c == ',' || c == ';' || c == '"')
            return accounts_invalid(r, "invalid_email", "email",
                                    "email contains a space or a character not allowed there");
    }
    if (at == NULL || at == email || memchr(at + 1, '@', len - (size_t)(at + 1 - email)) != NULL)
        return accounts_invalid(r, "invalid_email", "email",
                                "email must have exactly one @ with a local part before it");
    const char *domain = at + 1;
    size_t dlen = len - (size_t)(domain - email);
    const char *dot = memchr(domain, '.', dlen);
    if (dlen < 3 || dot == NULL || domain[0] == '.' || domain[dlen - 1] == '.' ||
        strstr(domain, "..") != NULL)
        return accounts_invalid(r, "invalid_email", "email",
                                "email must end in a domain such as example.org");
    return 0;
}

int accounts_check_password(struct accounts_req *r, const char *field, const char *pw, size_t len)
{
    (void)pw;
    if (len < 8 || len > 1024)
        return accounts_invalid(r, "invalid_password", field,
                                "password must be 8 to 1024 bytes long");
    return 0;
}

int accounts_check_name(struct accounts_req *r, const char *name, size_t len)
{
    if (len > 256)
        return accounts_invalid(r, "validation_failed", "name", "name must be at most 256 bytes");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f)
            return accounts_invalid(r, "validation_failed", "name",
                                    "name must not contain control characters");
    }
    return 0;
}

/* ---- helpers ---------------------------------------------------------- */

int64_t accounts_deadline(struct accounts *a, struct accounts_req *r)
{
    if (r->deadline == 0)
        r->deadline = clock_deadline_in(a->cfg->request_timeout_ms);
    return r->deadline;
}

/* Run one statement on a pooled connection by the request's deadline; adds
 * its time to r->db_ms. */
enum db_result accounts_db(struct accounts *a, struct accounts_req *r, size_t stmt,
                           const char *const *params, PGresult **res)
{
    char err[256];
    double ms = 0;
    int64_t deadline = accounts_deadline(a, r);
    *res = NULL;
    struct db_conn *c = db_pool_acquire(a->db, deadline, err, sizeof(err));
    if (c == NULL) {
        log_msg(LOG_DEBUG, "%s: %s", db_pool_stmt_name(a->db, stmt), err);
        return DB_UNAVAILABLE;
    }
    enum db_result rc = db_exec(c, stmt, params, deadline, res, &ms);
    db_pool_release(a->db, c);
    r->db_ms = (r->db_ms < 0 ? 0 : r->db_ms) + ms;
    if (rc == DB_ERROR) {
        /* Never the server's message: a unique violation quotes the email. */
        db_error_summary(*res, err, sizeof(err));
        if (db_error_unavailable(*res)) {
            /* A statement timeout, a server shutting down: the server is in
             * trouble, not the statement wrong (SPEC §5: 503, never 500). */
            log_msg(LOG_WARN, "%s failed: %s", db_pool_stmt_name(a->db, stmt), err);
            PQclear(*res);
            *res = NULL;
            return DB_UNAVAILABLE;
        }
        log_msg(LOG_ERROR, "%s failed: %s", db_pool_stmt_name(a->db, stmt), err);
    }
    return rc;
}

enum accounts_status accounts_db_status(enum db_result rc)
{
    return rc == DB_UNAVAILABLE || rc == DB_TIMEOUT ? ACC_UNAVAILABLE : ACC_INTERNAL;
}

static const char *accounts_col(struct accounts_req *r, PGresult *res, int row, int col)
{
    return arena_strdup(r->arena, PQgetvalue(res, row, col));
}

void accounts_user_from(struct accounts_req *r, PGresult *res, struct accounts_user *u)
{
    u->id = accounts_col(r, res, 0, 0);
    u->email = accounts_col(r, res, 0, 1);
    u->name = accounts_col(r, res, 0, 2);
    u->created_at = accounts_col(r, res, 0, 3);
    u->version = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    u->email_verified = PQgetvalue(res, 0, 5)[0] == 't';
    u->mfa_enabled = PQgetvalue(res, 0, 6)[0] == 't';
}

/* "\x<hex>" text form of bytea for BLAKE2b-256(token). */
void accounts_token_hash(const char *token, size_t len, char out[2 + 64 + 1])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof(h), (const unsigned char *)token, len, NULL, 0);
    out[0] = '\\';
    out[1] = 'x';
    sodium_bin2hex(out + 2, 65, h, sizeof(h));
}

static void accounts_hash_work(void *arg)
{
    struct accounts_hash_job *j = arg;
    j->verdict = PASSWORD_OK;
    j->out[0] = '\0';
    if (j->stored != NULL)
        j->verdict = password_verify(j->pp->impl, j->stored, j->pw, j->pwlen);
    if (j->verdict != PASSWORD_OK)
        return;
    if (j->new_pw != NULL) {
        j->hash_failed = password_hash(j->pp, j->new_pw, j->new_pwlen, j->out) != 0;
    } else if (j->rehash && password_needs_rehash(j->stored, j->pp)) {
        j->hash_failed = password_hash(j->pp, j->pw, j->pwlen, j->out) != 0;
    }
}

enum accounts_status accounts_run_hash(struct accounts *a, struct accounts_req *r,
                                       struct accounts_hash_job *j)
{
    double wait_ms = 0, run_ms = 0;
    /* The queue wait ends at the request's deadline too; a job that started
     * finishes (hashes are short next to any budget). */
    long left = clock_remaining_ms(accounts_deadline(a, r));
    long timeout = a->cfg->hash_queue_timeout_ms < left ? a->cfg->hash_queue_timeout_ms : left;
    if (left == 0)
        return ACC_UNAVAILABLE;
    enum hashpool_result hr =
        hashpool_run(a->hash, accounts_hash_work, j, timeout, &wait_ms, &run_ms);
    r->hash_ms = run_ms;
    if (hr == HASHPOOL_TIMEOUT && timeout < a->cfg->hash_queue_timeout_ms)
        return ACC_UNAVAILABLE; /* the request's budget ran out, not the queue's */
    if (hr != HASHPOOL_DONE)
        return ACC_OVERLOADED;
    if (j->verdict == PASSWORD_ERROR || j->hash_failed)
        return ACC_INTERNAL;
    return ACC_OK;
}

/* ---- lifecycle -------------------------------------------------------- */

/* The cursor MAC key follows the signing key (a rotation invalidates open
 * cursors, which are short-lived anyway). */
static void accounts_derive_cursor_key(const struct keyset *ks,
                                       unsigned char out[LISTING_CURSOR_KEY_LEN])
{
    static const char label[] = "access pagination cursor v1";
    crypto_generichash(out, LISTING_CURSOR_KEY_LEN, (const unsigned char *)label, sizeof(label) - 1,
                       ks->k[ks->active].sk, 32);
}

int accounts_init(struct accounts *a, const struct config *cfg, struct db_pool *db,
                  struct hashpool *hash, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    a->cfg = cfg;
    a->db = db;
    a->hash = hash;
    a->pw.t_cost = (unsigned)cfg->argon2_time_cost;
    a->pw.m_kib = (unsigned)cfg->argon2_memory_kib;
    a->pw.parallelism = (unsigned)cfg->argon2_parallelism;
    /* main() turns `auto` into a name before forking the workers; what
     * would still be `auto` hashes with libsodium, SPEC §8's choice. */
    if (password_impl_from_name(cfg->password_hasher, &a->pw.impl) != 0)
        a->pw.impl = PASSWORD_IMPL_LIBSODIUM;
    log_msg(LOG_INFO, "password hashing: %s (t=%u, m=%u KiB, p=%u)", password_impl_name(a->pw.impl),
            a->pw.t_cost, a->pw.m_kib, a->pw.parallelism);
    pthread_rwlock_init(&a->keys_lock, NULL);
    a->keys = sodium_malloc(sizeof(*a->keys));
    if (a->keys == NULL || keys_load(cfg->jwt_keys, a->keys, err, errlen) != 0)
        return -1;
    accounts_derive_cursor_key(a->keys, a->cursor_key);
    /* A throwaway password's hash with the live parameters: unknown emails
     * cost the same verification as known ones. */
    unsigned char junk[24];
    char pw[64];
    randombytes_buf(junk, sizeof(junk));
    b64url_encode(pw, sizeof(pw), junk, sizeof(junk));
    if (password_hash(&a->pw, pw, strlen(pw), a->dummy_hash) != 0) {
        snprintf(err, errlen, "computing the dummy Argon2id hash failed (memory?)");
        return -1;
    }
    sodium_memzero(pw, sizeof(pw));
    return 0;
}

int accounts_reload_keys(struct accounts *a, char *err, size_t errlen)
{
    struct keyset *fresh = sodium_malloc(sizeof(*fresh));
    if (fresh == NULL || keys_load(a->cfg->jwt_keys, fresh, err, errlen) != 0) {
        if (fresh)
            sodium_free(fresh);
        return -1;
    }
    pthread_rwlock_wrlock(&a->keys_lock);
    struct keyset *old = a->keys;
    a->keys = fresh;
    accounts_derive_cursor_key(fresh, a->cursor_key);
    pthread_rwlock_unlock(&a->keys_lock);
    sodium_free(old); /* wipes */
    /* Verified tokens and the JWK set depend on the keys. */
    if (a->l1 != NULL)
        cache_flush(a->l1);
    return 0;
}

void accounts_destroy(struct accounts *a)
{
    if (a->keys != NULL)
        sodium_free(a->keys); /* wipes */
    a->keys = NULL;
    sodium_memzero(a->cursor_key, sizeof(a->cursor_key));
    sodium_memzero(a->dummy_hash, sizeof(a->dummy_hash));
    pthread_rwlock_destroy(&a->keys_lock);
}

/* ---- audit events ------------------------------------------------------ */

static const char *accounts_status_reason(enum accounts_status st)
{
    switch (st) {
    case ACC_BAD_CREDENTIALS:
        return "bad_credentials";
    case ACC_ACCOUNT_DISABLED:
        return "account_disabled";
    case ACC_OVERLOADED:
        return "overloaded";
    case ACC_UNAVAILABLE:
        return "unavailable";
    case ACC_THROTTLED:
        return "throttled";
    default:
        return "internal";
    }
}

/* Queue (or spool) one event with detail {"k1":"v1"[,"k2":"v2"]} (k1 NULL:
 * {}, k2 NULL: one member); no-op without an audit log. */
void accounts_audit(struct accounts *a, struct accounts_req *r, enum audit_type type,
                    const char *user_id, const char *k1, const char *v1, const char *k2,
                    const char *v2)
{
    if (a->audit == NULL)
        return;
    struct buf d = {0};
    buf_putc(&d, '{');
    for (int i = 0; i < 2; i++) {
        const char *k = i == 0 ? k1 : k2, *v = i == 0 ? v1 : v2;
        if (k == NULL)
            break;
        if (i > 0)
            buf_putc(&d, ',');
        json_put_cstr(&d, k);
        buf_putc(&d, ':');
        json_put_cstr(&d, v ? v : "");
    }
    buf_putc(&d, '}');
    struct audit_event ev = {.type = type,
                             .user_id = user_id,
                             .ip = r->ip,
                             .user_agent = r->user_agent,
                             .detail = d.data};
    if (audit_emit(a->audit, &ev) == AUDIT_LOST)
        log_msg(LOG_ERROR, "audit event %s lost", audit_type_name(type));
    buf_free(&d);
}

/* ---- the per-account throttle (SPEC §9, lib/throttle.h) --------------- */

enum accounts_status accounts_throttle_take(struct accounts *a, struct accounts_req *r,
                                            const char *user_id, const char *email,
                                            char key[THROTTLE_KEY_MAX], struct throttle_verdict *v)
{
    memset(v, 0, sizeof(*v));
    v->allowed = 1;
    if (a->throttle == NULL)
        return ACC_OK;
    throttle_key(a->throttle, user_id, email, key);
    /* Busy (every slot being checked): wait like for a hash slot. */
    int64_t until = clock_deadline_min(accounts_deadline(a, r),
                                       clock_deadline_in(a->cfg->hash_queue_timeout_ms));
    for (;;) {
        throttle_take(a->throttle, key, v);
        if (!v->busy)
            break;
        if (clock_remaining_ms(until) <= 0)
            return clock_remaining_ms(accounts_deadline(a, r)) <= 0 ? ACC_UNAVAILABLE
                                                                    : ACC_OVERLOADED;
        clock_sleep_ms(10 + (long)randombytes_uniform(15));
    }
    if (v->allowed)
        return ACC_OK;
    r->retry_after_s = v->retry_after_s;
    if (v->first) { /* once per window */
        char ra[24];
        snprintf(ra, sizeof(ra), "%ld", v->retry_after_s);
        accounts_audit(a, r, AUDIT_LOGIN_THROTTLED, user_id ? user_id : "", "retry_after_s", ra,
                       NULL, NULL);
    }
    return ACC_THROTTLED;
}

void accounts_throttle_done(struct accounts *a, const char *key, const struct throttle_verdict *v,
                            enum accounts_status st)
{
    /* Only a wrong password or second-factor code is a failure; anything
     * else gives the slot back. */
    if (a->throttle != NULL)
        throttle_done(a->throttle, key, v,
                      st == ACC_BAD_CREDENTIALS || st == ACC_WRONG_PASSWORD ||
                          st == ACC_INVALID_CODE);
}

enum accounts_status accounts_verify_password_of(struct accounts *a, struct accounts_req *r,
                                                 const char *uid, const char *password,
                                                 size_t pwlen)
{
    const char *params[1] = {uid};
    char stored[PASSWORD_PHC_MAX], tkey[THROTTLE_KEY_MAX];
    struct throttle_verdict tv;
    PGresult *res;
    enum db_result rc = accounts_db(a, r, STMT_USER_HASH_BY_ID, params, &res);
    if (rc != DB_OK || PQntuples(res) != 1) {
        PQclear(res);
        return rc != DB_OK ? accounts_db_status(rc) : ACC_INVALID_TOKEN;
    }
    snprintf(stored, sizeof(stored), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    struct accounts_hash_job j = {.pp = &a->pw, .stored = stored, .pw = password, .pwlen = pwlen};
    enum accounts_status st = accounts_throttle_take(a, r, uid, NULL, tkey, &tv);
    if (st == ACC_OK)
        st = accounts_run_hash(a, r, &j);
    sodium_memzero(stored, sizeof(stored));
    if (st == ACC_INTERNAL && j.verdict == PASSWORD_ERROR)
        st = ACC_BAD_CREDENTIALS;
    if (st == ACC_OK && j.verdict != PASSWORD_OK)
        st = ACC_BAD_CREDENTIALS;
    accounts_throttle_done(a, tkey, &tv, st);
    return st;
}

/* ---- use cases -------------------------------------------------------- */

/* A fresh 256-bit refresh token (base64url) and the text of its stored
 * hash. The caller wipes token when done. */
static void accounts_new_refresh(char token[64], char hash[2 + 64 + 1])
{
    unsigned char raw[REFRESH_BYTES];
    randombytes_buf(raw, sizeof(raw));
    b64url_encode(token, 64, raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    accounts_token_hash(token, strlen(token), hash);
}

/* Sign an access token for (user, session) and fill out with it and the
 * given refresh token. */
static void accounts_tokens_for(struct accounts *a, struct accounts_req *r, const char *user_id,
                                const char *sid, int amr_otp, const char *refresh,
                                struct accounts_tokens *out)
{
    char jti[UUID_STR_LEN + 1];
    uint8_t u[16];
    struct jwt_claims c;
    struct buf tok = {0};
    uuid_v7(u);
    uuid_format(u, jti);
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", user_id);
    snprintf(c.sid, sizeof(c.sid), "%s", sid);
    snprintf(c.jti, sizeof(c.jti), "%s", jti);
    c.iat = (int64_t)time(NULL);
    c.exp = c.iat + a->cfg->access_token_ttl;
    c.amr_otp = amr_otp;
    pthread_rwlock_rdlock(&a->keys_lock);
    jwt_sign(a->keys, a->cfg->jwt_alg, a->cfg->jwt_issuer, a->cfg->jwt_audience, &c, &tok);
    pthread_rwlock_unlock(&a->keys_lock);
    out->access_token = arena_strndup(r->arena, tok.data, tok.len);
    out->session_id = arena_strdup(r->arena, sid);
    out->refresh_token = arena_strdup(r->arena, refresh);
    out->expires_in = a->cfg->access_token_ttl;
    out->mfa_token = NULL;
    buf_free(&tok);
}

enum accounts_status accounts_open_session(struct accounts *a, struct accounts_req *r,
                                           const char *user_id, int amr_otp,
                                           struct accounts_tokens *out)
{
    char refresh[64], rhash[2 + 64 + 1], sid[UUID_STR_LEN + 1], ttl[32], keep[32];
    uint8_t u[16];
    PGresult *res = NULL;
    enum accounts_status st = ACC_OK;

    accounts_new_refresh(refresh, rhash);
    uuid_v7(u);
    uuid_format(u, sid);
    snprintf(ttl, sizeof(ttl), "%ld", a->cfg->refresh_token_ttl);
    const char *p[7] = {sid,
                        user_id,
                        ttl,
                        r->ip ? r->ip : "",
                        r->user_agent ? r->user_agent : "",
                        rhash,
                        amr_otp ? "true" : "false"};
    enum db_result rc = accounts_db(a, r, STMT_SESSION_CREATE, p, &res);
    PQclear(res);
    if (rc != DB_OK) {
        st = accounts_db_status(rc);
        goto out;
    }
    snprintf(keep, sizeof(keep), "%ld", a->cfg->max_sessions_per_user);
    const char *tp[2] = {user_id, keep};
    rc = accounts_db(a, r, STMT_SESSIONS_TRIM, tp, &res);
    for (int i = 0; rc == DB_OK && i < PQntuples(res); i++)
        authn_session_gone(a, PQgetvalue(res, i, 0));
    PQclear(res);
    if (rc != DB_OK) {
        st = accounts_db_status(rc);
        goto out;
    }
    accounts_tokens_for(a, r, user_id, sid, amr_otp, refresh, out);
out:
    sodium_memzero(refresh, sizeof(refresh));
    return st;
}

static enum accounts_status accounts_login_do(struct accounts *a, struct accounts_req *r,
                                              const char *email, const char *password, size_t pwlen,
                                              struct accounts_tokens *out,
                                              char user_id[UUID_STR_LEN + 1])
{
    const char *params[1] = {email};
    PGresult *res;
    char stored[PASSWORD_PHC_MAX];
    enum db_result rc = accounts_db(a, r, STMT_USER_BY_EMAIL, params, &res);
    if (rc != DB_OK) {
        PQclear(res);
        return accounts_db_status(rc);
    }
    int found = PQntuples(res) == 1, disabled = found && PQgetvalue(res, 0, 2)[0] == 't';
    int mfa = found && PQgetvalue(res, 0, 3)[0] == 't';
    if (found) {
        snprintf(user_id, UUID_STR_LEN + 1, "%s", PQgetvalue(res, 0, 0));
        snprintf(stored, sizeof(stored), "%s", PQgetvalue(res, 0, 1));
    } else {
        snprintf(stored, sizeof(stored), "%s", a->dummy_hash);
    }
    PQclear(res);
    /* A slot of the account's throttle before the verdict exists, so
     * parallel wrong attempts cannot pass the limit. */
    char tkey[THROTTLE_KEY_MAX];
    struct throttle_verdict tv;
    struct accounts_hash_job j = {
        .pp = &a->pw, .stored = stored, .pw = password, .pwlen = pwlen, .rehash = found};
    enum accounts_status st =
        accounts_throttle_take(a, r, found ? user_id : NULL, email, tkey, &tv);
    if (st != ACC_OK)
        goto out;
    /* No connection is held while the hash runs. */
    st = accounts_run_hash(a, r, &j);
    if (st == ACC_INTERNAL && j.verdict == PASSWORD_ERROR)
        st = ACC_BAD_CREDENTIALS;
    if (st == ACC_OK && (!found || j.verdict != PASSWORD_OK))
        st = ACC_BAD_CREDENTIALS;
    accounts_throttle_done(a, tkey, &tv, st);
    /* Disabled (SPEC §12): said only to who knows the password. */
    if (st == ACC_OK && disabled)
        st = ACC_ACCOUNT_DISABLED;
    if (st != ACC_OK)
        goto out;
    if (j.out[0] != '\0') {
        /* Parameters changed since this hash was made: store the new one
         * (only if nobody changed the password meanwhile). */
        const char *p[3] = {user_id, j.out, stored};
        if (accounts_db(a, r, STMT_USER_SET_HASH, p, &res) == DB_OK)
            log_msg(LOG_INFO, "password hash of a user upgraded to current parameters");
        PQclear(res);
    }
    /* MFA on (SPEC §10): no session yet, a short-lived mfa_token instead. */
    if (mfa)
        st = mfa_challenge(a, r, user_id, out);
    else
        st = accounts_open_session(a, r, user_id, 0, out);
out:
    sodium_memzero(j.out, sizeof(j.out));
    sodium_memzero(stored, sizeof(stored));
    return st;
}

enum accounts_status accounts_login(struct accounts *a, struct accounts_req *r, const char *email,
                                    const char *password, size_t pwlen, struct accounts_tokens *out)
{
    char user_id[UUID_STR_LEN + 1] = "";
    enum accounts_status st = accounts_login_do(a, r, email, password, pwlen, out, user_id);
    if (st == ACC_OK && out->mfa_token != NULL) {
        /* The login succeeds (or not) at login/mfa. */
    } else if (st == ACC_OK) {
        accounts_audit(a, r, AUDIT_LOGIN_SUCCEEDED, user_id, "session_id", out->session_id, NULL,
                       NULL);
    } else {
        /* Every refused attempt counts, including those PostgreSQL or the
         * hash pool could not check (they are spooled if need be). */
        accounts_audit(a, r, AUDIT_LOGIN_FAILED, user_id, "email", email, "reason",
                       accounts_status_reason(st));
    }
    return st;
}

enum accounts_status accounts_refresh(struct accounts *a, struct accounts_req *r,
                                      const char *refresh_token, struct accounts_tokens *out)
{
    size_t len = strlen(refresh_token);
    unsigned char raw[REFRESH_BYTES + 1];
    size_t rawlen;
    char old_hash[2 + 64 + 1], new_hash[2 + 64 + 1], fresh[64];
    PGresult *res;
    enum accounts_status st;

    if (b64url_decode(raw, sizeof(raw), refresh_token, len, &rawlen) != 0 ||
        rawlen != REFRESH_BYTES)
        return ACC_INVALID_TOKEN;
    sodium_memzero(raw, sizeof(raw));
    accounts_token_hash(refresh_token, len, old_hash);
    /* The new refresh token is made here so rotation is one statement. */
    accounts_new_refresh(fresh, new_hash);
    const char *p[2] = {old_hash, new_hash};
    enum db_result rc = accounts_db(a, r, STMT_REFRESH_ROTATE, p, &res);
    if (rc != DB_OK) {
        PQclear(res);
        st = accounts_db_status(rc);
        goto out;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        /* Not a live token: if it was already used, this is reuse, and the
         * whole session goes (OAuth 2.0 Security BCP §4.14). Only the first
         * reuse of a session gets a row back: later replays are the same
         * 401 without a second warning, event or publish. */
        const char *rp[1] = {old_hash};
        if (accounts_db(a, r, STMT_REFRESH_REUSE, rp, &res) == DB_OK && PQntuples(res) == 1) {
            log_msg(LOG_WARN, "refresh token reuse detected; session %s revoked",
                    PQgetvalue(res, 0, 0));
            authn_session_gone(a, PQgetvalue(res, 0, 0));
            accounts_audit(a, r, AUDIT_REFRESH_REUSE_DETECTED, PQgetvalue(res, 0, 1), "session_id",
                           PQgetvalue(res, 0, 0), NULL, NULL);
        }
        PQclear(res);
        st = ACC_INVALID_TOKEN;
        goto out;
    }
    char sid[UUID_STR_LEN + 1], uid[UUID_STR_LEN + 1];
    snprintf(sid, sizeof(sid), "%s", PQgetvalue(res, 0, 0));
    snprintf(uid, sizeof(uid), "%s", PQgetvalue(res, 0, 1));
    int amr_otp = PQgetvalue(res, 0, 2)[0] == 't';
    PQclear(res);
    accounts_tokens_for(a, r, uid, sid, amr_otp, fresh, out);
    st = ACC_OK;
    accounts_audit(a, r, AUDIT_REFRESH, uid, "session_id", sid, NULL, NULL);
out:
    sodium_memzero(fresh, sizeof(fresh));
    return st;
}

static enum accounts_status accounts_revoke(struct accounts *a, struct accounts_req *r,
                                            const struct accounts_principal *p,
                                            const char *session_id, size_t len,
                                            enum audit_type event);

enum accounts_status accounts_logout(struct accounts *a, struct accounts_req *r,
                                     const struct accounts_principal *p)
{
    return accounts_revoke(a, r, p, p->session_id, strlen(p->session_id), AUDIT_LOGOUT);
}

enum accounts_status accounts_set_name(struct accounts *a, struct accounts_req *r,
                                       const struct accounts_principal *p, const char *name,
                                       struct cache_value **profile)
{
    const char *params[2] = {p->user_id, name};
    PGresult *res;
    struct accounts_user u = {0};
    enum db_result rc = accounts_db(a, r, STMT_USER_SET_NAME, params, &res);
    enum accounts_status st = ACC_OK;
    *profile = NULL;
    if (rc != DB_OK)
        st = accounts_db_status(rc);
    else if (PQntuples(res) != 1)
        st = ACC_INVALID_TOKEN;
    else
        accounts_user_from(r, res, &u);
    PQclear(res);
    if (st == ACC_OK) {
        /* The caches get the very bytes the response carries. */
        *profile = authn_profile_value(&u);
        authn_user_changed(a, u.id, *profile, u.version);
    }
    return st;
}

enum accounts_status accounts_change_password(struct accounts *a, struct accounts_req *r,
                                              const struct accounts_principal *p,
                                              const char *current, size_t curlen, const char *next,
                                              size_t nextlen)
{
    const char *params[1] = {p->user_id};
    PGresult *res;
    char stored[PASSWORD_PHC_MAX];
    enum db_result rc = accounts_db(a, r, STMT_USER_HASH_BY_ID, params, &res);
    if (rc != DB_OK || PQntuples(res) != 1) {
        PQclear(res);
        return rc != DB_OK ? accounts_db_status(rc) : ACC_INVALID_TOKEN;
    }
    snprintf(stored, sizeof(stored), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    struct accounts_hash_job j = {.pp = &a->pw,
                                  .stored = stored,
                                  .pw = current,
                                  .pwlen = curlen,
                                  .new_pw = next,
                                  .new_pwlen = nextlen};
    char tkey[THROTTLE_KEY_MAX];
    struct throttle_verdict tv;
    enum accounts_status st = accounts_throttle_take(a, r, p->user_id, NULL, tkey, &tv);
    if (st == ACC_OK)
        st = accounts_run_hash(a, r, &j);
    if (st == ACC_OK && j.verdict != PASSWORD_OK) {
        st = ACC_WRONG_PASSWORD; /* counted by the throttle, and audited */
        accounts_audit(a, r, AUDIT_PASSWORD_CHANGE_FAILED, p->user_id, "session_id", p->session_id,
                       NULL, NULL);
    }
    accounts_throttle_done(a, tkey, &tv, st);
    if (st == ACC_OK) {
        struct outbox_rows rows = {0};
        outbox_rows_event(&rows, a->cfg, "user.password_changed", p->user_id, NULL, NULL);
        const char *cp[4] = {p->user_id, j.out, p->session_id, outbox_rows_param(&rows)};
        rc = accounts_db(a, r, STMT_PASSWORD_CHANGE, cp, &res);
        outbox_rows_free(&rows);
        if (rc == DB_OK)
            outbox_kick(a->outbox);
        int revoked = 0;
        for (int i = 0; rc == DB_OK && i < PQntuples(res); i++) {
            const char *what = PQgetvalue(res, i, 0), *val = PQgetvalue(res, i, 1);
            if (what[0] == 'u') {
                authn_user_changed(a, p->user_id, NULL, strtoll(val, NULL, 10));
            } else {
                authn_session_gone(a, val);
                revoked++;
            }
        }
        PQclear(res);
        if (rc != DB_OK) {
            st = accounts_db_status(rc);
        } else {
            char n[16];
            snprintf(n, sizeof(n), "%d", revoked);
            accounts_audit(a, r, AUDIT_PASSWORD_CHANGED, p->user_id, "session_id", p->session_id,
                           "other_sessions_revoked", n);
        }
    }
    sodium_memzero(j.out, sizeof(j.out));
    sodium_memzero(stored, sizeof(stored));
    return st;
}

enum accounts_status accounts_revoke_session(struct accounts *a, struct accounts_req *r,
                                             const struct accounts_principal *p,
                                             const char *session_id, size_t len)
{
    return accounts_revoke(a, r, p, session_id, len, AUDIT_SESSION_REVOKED);
}

static enum accounts_status accounts_revoke(struct accounts *a, struct accounts_req *r,
                                            const struct accounts_principal *p,
                                            const char *session_id, size_t len,
                                            enum audit_type event)
{
    uint8_t u[16];
    char sid[UUID_STR_LEN + 1];
    if (uuid_parse(session_id, len, u) != 0)
        return ACC_NOT_FOUND;
    uuid_format(u, sid);
    struct outbox_rows rows = {0};
    outbox_rows_event(&rows, a->cfg, "session.revoked", p->user_id, "session_id", sid);
    const char *params[3] = {sid, p->user_id, outbox_rows_param(&rows)};
    PGresult *res;
    enum db_result rc = accounts_db(a, r, STMT_SESSION_REVOKE, params, &res);
    outbox_rows_free(&rows);
    enum accounts_status st = ACC_OK;
    if (rc != DB_OK)
        st = accounts_db_status(rc);
    else if (PQntuples(res) != 1)
        st = ACC_NOT_FOUND;
    PQclear(res);
    if (st == ACC_OK) {
        authn_session_gone(a, sid);
        outbox_kick(a->outbox);
        accounts_audit(a, r, event, p->user_id, "session_id", sid, NULL, NULL);
    }
    return st;
}
