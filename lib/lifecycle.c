#include "lifecycle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "authn.h"
#include "b64url.h"
#include "log.h"
#include "mfa.h"
#include "outbox.h"
#include "statements.h"
#include "uuid.h"

/* Insert the rows of `param` for the user of CTE u (columns id, email):
 * messages go to u.email, events carry u.id. */
#define LIFE_OUTBOX_FOR_U(param)                                                                   \
    "INSERT INTO outbox (id, kind, type, user_id, payload, state) SELECT (e->>'id')::uuid, "       \
    "e->>'kind', e->>'type', u.id, CASE WHEN e->>'kind' = 'message' THEN e->'payload' || "         \
    "jsonb_build_object('to', u.email) ELSE jsonb_set(e->'payload', '{data,user_id}', "            \
    "to_jsonb(u.id::text)) END, e->>'state' FROM jsonb_array_elements(" param "::jsonb) e, u"

const struct db_stmt lifecycle_statements[LIFE_STMT__COUNT] = {
    /* $1 id, $2 email, $3 name, $4 hash, $5 token hash, $6 expires, $7 rows */
    [LIFE_SIGNUP] =
        {"life_signup",
         "WITH u AS (INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, "
         "$3, $4) RETURNING " ACCOUNTS_USER_COLS "), t AS (INSERT INTO account_tokens "
         "(token_hash, user_id, purpose, expires_at) SELECT $5::bytea, id, 'verify', "
         "$6::timestamptz FROM u), o AS (" OUTBOX_INSERT_SQL("$7") ") SELECT * FROM u",
         7, 0},
    /* $1 user id, $2 token hash, $3 expires, $4 rows */
    [LIFE_VERIFY_REQUEST] = {"life_verify_request",
                             "WITH u AS (SELECT id, email FROM users WHERE id = $1 AND NOT "
                             "email_verified), t AS (INSERT INTO account_tokens (token_hash, "
                             "user_id, purpose, expires_at) SELECT $2::bytea, id, 'verify', "
                             "$3::timestamptz FROM u), o AS (" LIFE_OUTBOX_FOR_U(
                                 "$4") ") SELECT count(*) FROM u",
                             4, 0},
    /* $1 token hash, $2 rows */
    [LIFE_VERIFY] = {"life_verify",
                     "WITH t AS (UPDATE account_tokens SET used_at = now() WHERE token_hash = "
                     "$1::bytea AND purpose = 'verify' AND used_at IS NULL AND expires_at > now() "
                     "RETURNING user_id), u AS (UPDATE users SET email_verified = true, version = "
                     "version + 1, updated_at = now() WHERE id IN (SELECT user_id FROM t) "
                     "RETURNING " ACCOUNTS_USER_COLS
                     "), o AS (" LIFE_OUTBOX_FOR_U("$2") ") SELECT * FROM u",
                     2, 0},
    /* $1 email, $2 token hash, $3 expires, $4 rows. The same plan whether
     * or not the email exists; at most LIFECYCLE_RESETS_PER_HOUR per hour,
     * counted on the user's row so concurrent requests serialise (005). */
    [LIFE_RECOVER] = {"life_recover",
                      "WITH a AS (SELECT id, email FROM users WHERE lower(email) = lower($1)), u "
                      "AS (UPDATE users SET reset_sent = ARRAY(SELECT x FROM unnest(reset_sent) "
                      "x WHERE x > now() - interval '1 hour') || now(), reset_token = $2::bytea "
                      "WHERE id IN (SELECT id "
                      "FROM a) AND (SELECT count(*) FROM unnest(reset_sent) x WHERE x > now() - "
                      "interval '1 hour') < 3 RETURNING id, email), i AS (UPDATE account_tokens "
                      "SET used_at = now() "
                      "WHERE user_id IN (SELECT id FROM u) AND purpose = 'reset' AND used_at IS "
                      "NULL), t AS (INSERT INTO account_tokens (token_hash, user_id, purpose, "
                      "expires_at) SELECT $2::bytea, id, 'reset', $3::timestamptz FROM u), o AS "
                      "(" LIFE_OUTBOX_FOR_U("$4") ") SELECT (SELECT id::text FROM a), (SELECT "
                                                  "count(*) FROM u)",
                      4, 0},
    /* $1 token hash, $2 new hash, $3 rows */
    [LIFE_RESET] =
        {"life_reset",
         "WITH t AS (UPDATE account_tokens SET used_at = now() WHERE token_hash = "
         "$1::bytea AND purpose = 'reset' AND used_at IS NULL AND expires_at > now() AND "
         "token_hash = (SELECT reset_token FROM users WHERE id = account_tokens.user_id) "
         "RETURNING user_id), u AS (UPDATE users SET password_hash = $2, reset_token "
         "= NULL, "
         "email_verified = true, version = version + 1, updated_at = now() WHERE id IN "
         "(SELECT user_id FROM t) RETURNING id, email, version), s AS (UPDATE sessions "
         "SET revoked_at = now() WHERE user_id IN (SELECT id FROM u) AND revoked_at IS "
         "NULL RETURNING id), o AS (" LIFE_OUTBOX_FOR_U(
             "$3") ") SELECT 'u', id::text, version FROM u UNION ALL SELECT 's', "
                   "id::text, 0 FROM s",
         3, 0},
    /* $1 user id, $2 rows. Sessions, refresh and account tokens go by
     * cascade; message rows hold the email, so they go too, and the audit
     * events stay without it (login_failed names the email tried). */
    [LIFE_DELETE] = {"life_delete",
                     "WITH s AS (SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL "
                     "AND expires_at > now()), m AS (DELETE FROM outbox WHERE user_id = $1 AND "
                     "kind = 'message'), a AS (UPDATE audit_events SET detail = detail - 'email' "
                     "WHERE user_id = $1 AND detail ? 'email'), u AS (DELETE FROM users WHERE id = "
                     "$1 RETURNING id, email, "
                     "version), o AS (" LIFE_OUTBOX_FOR_U(
                         "$2") ") SELECT 'u', id::text, version + 1 FROM u UNION ALL SELECT 's', "
                               "id::text, 0 FROM s",
                     2, 0},
};

/* A fresh token with its stored hash, link and expiry. Wiped by the caller
 * (life_token_wipe). */
struct life_token {
    char token[64];
    char hash[2 + 64 + 1];
    char link[2048 + 64];
    char expires[32];
};

static void life_token_new(struct accounts *a, int reset, struct life_token *t)
{
    unsigned char raw[LIFECYCLE_TOKEN_BYTES];
    char prefix[2049];
    randombytes_buf(raw, sizeof(raw));
    b64url_encode(t->token, sizeof(t->token), raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    accounts_token_hash(t->token, strlen(t->token), t->hash);
    config_link_prefix(a->cfg, reset, prefix, sizeof(prefix));
    snprintf(t->link, sizeof(t->link), "%s%s", prefix, t->token);
    outbox_rfc3339(time(NULL) + (reset ? a->cfg->reset_token_ttl : a->cfg->verify_token_ttl),
                   t->expires, sizeof(t->expires));
}

static void life_token_wipe(struct life_token *t)
{
    sodium_memzero(t, sizeof(*t));
}

/* A syntactically possible token: 43 base64url characters of 32 bytes. */
static int life_token_ok(const char *token, size_t len)
{
    unsigned char raw[LIFECYCLE_TOKEN_BYTES + 1];
    size_t n;
    int ok = len == 43 && b64url_decode(raw, sizeof(raw), token, len, &n) == 0 &&
             n == LIFECYCLE_TOKEN_BYTES;
    sodium_memzero(raw, sizeof(raw));
    return ok;
}

enum accounts_status lifecycle_signup(struct accounts *a, struct accounts_req *r, const char *email,
                                      const char *password, size_t pwlen, const char *name,
                                      struct accounts_user *out)
{
    struct accounts_hash_job j = {.pp = &a->pw, .new_pw = password, .new_pwlen = pwlen};
    struct outbox_rows rows = {0};
    struct life_token t;
    enum accounts_status st = accounts_run_hash(a, r, &j);
    if (st != ACC_OK)
        return st;
    uint8_t id[16];
    char ids[UUID_STR_LEN + 1];
    uuid_v7(id);
    uuid_format(id, ids);
    life_token_new(a, 0, &t);
    outbox_rows_message(&rows, a->cfg, "message.verify", ids, email, t.link, t.expires);
    outbox_rows_event(&rows, a->cfg, "user.created", ids, NULL, NULL);
    const char *params[7] = {ids,    email,     name ? name : "",        j.out,
                             t.hash, t.expires, outbox_rows_param(&rows)};
    PGresult *res;
    enum db_result rc = accounts_db(a, r, LIFECYCLE_STMT_BASE + LIFE_SIGNUP, params, &res);
    sodium_memzero(j.out, sizeof(j.out));
    life_token_wipe(&t);
    outbox_rows_free(&rows);
    if (rc == DB_ERROR && strcmp(db_sqlstate(res), "23505") == 0)
        st = ACC_EMAIL_TAKEN;
    else if (rc != DB_OK || PQntuples(res) != 1)
        st = rc != DB_OK ? accounts_db_status(rc) : ACC_INTERNAL;
    else
        accounts_user_from(r, res, out);
    PQclear(res);
    if (st == ACC_OK) {
        outbox_kick(a->outbox);
        accounts_audit(a, r, AUDIT_SIGNUP, out->id, NULL, NULL, NULL, NULL);
    }
    return st;
}

enum accounts_status lifecycle_verify_request(struct accounts *a, struct accounts_req *r,
                                              const struct accounts_principal *p)
{
    struct outbox_rows rows = {0};
    struct life_token t;
    PGresult *res;
    life_token_new(a, 0, &t);
    /* "to" comes from the row (LIFE_OUTBOX_FOR_U). */
    outbox_rows_message(&rows, a->cfg, "message.verify", p->user_id, "", t.link, t.expires);
    const char *params[4] = {p->user_id, t.hash, t.expires, outbox_rows_param(&rows)};
    enum db_result rc = accounts_db(a, r, LIFECYCLE_STMT_BASE + LIFE_VERIFY_REQUEST, params, &res);
    life_token_wipe(&t);
    outbox_rows_free(&rows);
    enum accounts_status st = rc == DB_OK ? ACC_OK : accounts_db_status(rc);
    if (st == ACC_OK && strcmp(PQgetvalue(res, 0, 0), "0") != 0)
        outbox_kick(a->outbox);
    PQclear(res);
    return st;
}

enum accounts_status lifecycle_verify(struct accounts *a, struct accounts_req *r, const char *token,
                                      size_t len, struct accounts_user *out)
{
    struct outbox_rows rows = {0};
    char hash[2 + 64 + 1];
    PGresult *res;
    if (!life_token_ok(token, len))
        return ACC_INVALID_GRANT;
    accounts_token_hash(token, len, hash);
    /* user_id is filled in by the statement. */
    outbox_rows_event(&rows, a->cfg, "user.email_verified", "", NULL, NULL);
    const char *params[2] = {hash, outbox_rows_param(&rows)};
    enum db_result rc = accounts_db(a, r, LIFECYCLE_STMT_BASE + LIFE_VERIFY, params, &res);
    outbox_rows_free(&rows);
    enum accounts_status st = ACC_OK;
    if (rc != DB_OK)
        st = accounts_db_status(rc);
    else if (PQntuples(res) != 1)
        st = ACC_INVALID_GRANT;
    else
        accounts_user_from(r, res, out);
    PQclear(res);
    if (st == ACC_OK) {
        /* Every cached copy shows the flag at once (SPEC §5 coherence). */
        struct cache_value *v = authn_profile_value(out);
        authn_user_changed(a, out->id, v, out->version);
        cache_value_release(v);
        outbox_kick(a->outbox);
        accounts_audit(a, r, AUDIT_EMAIL_VERIFIED, out->id, NULL, NULL, NULL, NULL);
    }
    return st;
}

enum accounts_status lifecycle_recover(struct accounts *a, struct accounts_req *r,
                                       const char *email)
{
    struct outbox_rows rows = {0};
    struct life_token t;
    PGresult *res;
    /* The token, link and rows are made for unknown emails too: the same
     * work on both paths. */
    life_token_new(a, 1, &t);
    outbox_rows_message(&rows, a->cfg, "message.reset", NULL, "", t.link, t.expires);
    const char *params[4] = {email, t.hash, t.expires, outbox_rows_param(&rows)};
    enum db_result rc = accounts_db(a, r, LIFECYCLE_STMT_BASE + LIFE_RECOVER, params, &res);
    life_token_wipe(&t);
    outbox_rows_free(&rows);
    if (rc != DB_OK) {
        PQclear(res);
        return accounts_db_status(rc);
    }
    if (!PQgetisnull(res, 0, 0)) {
        int queued = strcmp(PQgetvalue(res, 0, 1), "0") != 0;
        if (queued) {
            outbox_kick(a->outbox);
            accounts_audit(a, r, AUDIT_PASSWORD_RESET_REQUESTED, PQgetvalue(res, 0, 0), NULL, NULL,
                           NULL, NULL);
        } else {
            log_msg(LOG_INFO, "recover: reset message dropped, %d per hour already sent",
                    LIFECYCLE_RESETS_PER_HOUR);
        }
    }
    PQclear(res);
    return ACC_OK;
}

/* Apply the rows of a reset or deletion: ('u', user id, version) and
 * ('s', session id): every worker and host drops them. */
static void life_invalidate(struct accounts *a, PGresult *res, char *user_id)
{
    for (int i = 0; i < PQntuples(res); i++) {
        const char *what = PQgetvalue(res, i, 0), *id = PQgetvalue(res, i, 1);
        if (what[0] == 'u') {
            snprintf(user_id, UUID_STR_LEN + 1, "%s", id);
            authn_user_changed(a, id, NULL, strtoll(PQgetvalue(res, i, 2), NULL, 10));
        } else {
            authn_session_gone(a, id);
        }
    }
}

enum accounts_status lifecycle_reset(struct accounts *a, struct accounts_req *r, const char *token,
                                     size_t len, const char *password, size_t pwlen, char *user_id)
{
    struct outbox_rows rows = {0};
    char hash[2 + 64 + 1];
    PGresult *res;
    user_id[0] = '\0';
    if (!life_token_ok(token, len))
        return ACC_INVALID_GRANT;
    struct accounts_hash_job j = {.pp = &a->pw, .new_pw = password, .new_pwlen = pwlen};
    enum accounts_status st = accounts_run_hash(a, r, &j);
    if (st != ACC_OK)
        return st;
    accounts_token_hash(token, len, hash);
    outbox_rows_event(&rows, a->cfg, "user.password_reset", "", NULL, NULL);
    const char *params[3] = {hash, j.out, outbox_rows_param(&rows)};
    enum db_result rc = accounts_db(a, r, LIFECYCLE_STMT_BASE + LIFE_RESET, params, &res);
    sodium_memzero(j.out, sizeof(j.out));
    outbox_rows_free(&rows);
    if (rc != DB_OK)
        st = accounts_db_status(rc);
    else if (PQntuples(res) == 0)
        st = ACC_INVALID_GRANT;
    else
        life_invalidate(a, res, user_id);
    PQclear(res);
    if (st == ACC_OK) {
        if (a->throttle != NULL) { /* a fresh start for the account's logins */
            char tkey[THROTTLE_KEY_MAX];
            throttle_key(a->throttle, user_id, NULL, tkey);
            throttle_clear(a->throttle, tkey);
        }
        outbox_kick(a->outbox);
        accounts_audit(a, r, AUDIT_PASSWORD_RESET, user_id, NULL, NULL, NULL, NULL);
    }
    return st;
}

enum accounts_status lifecycle_delete(struct accounts *a, struct accounts_req *r,
                                      const struct accounts_principal *p, const char *password,
                                      size_t pwlen, const char *code, size_t codelen)
{
    struct outbox_rows rows = {0};
    char uid[UUID_STR_LEN + 1];
    PGresult *res;
    enum accounts_status st = accounts_verify_password_of(a, r, p->user_id, password, pwlen);
    /* SPEC §9/§10: an account with MFA on also needs a valid code (a wrong
     * one is ACC_INVALID_CODE, counted by the throttle like a wrong
     * password). Factors and recovery codes go with the user (cascade). */
    if (st == ACC_OK) {
        enum mfa_outcome mo;
        st = mfa_require_code(a, r, p->user_id, code, codelen, &mo);
    }
    if (st != ACC_OK)
        return st;
    outbox_rows_event(&rows, a->cfg, "user.deleted", p->user_id, NULL, NULL);
    const char *dp[2] = {p->user_id, outbox_rows_param(&rows)};
    enum db_result rc = accounts_db(a, r, LIFECYCLE_STMT_BASE + LIFE_DELETE, dp, &res);
    outbox_rows_free(&rows);
    if (rc != DB_OK)
        st = accounts_db_status(rc);
    else if (PQntuples(res) == 0)
        st = ACC_INVALID_TOKEN; /* deleted meanwhile */
    else
        life_invalidate(a, res, uid);
    PQclear(res);
    if (st == ACC_OK) {
        /* The token being used is refused at once too. */
        authn_session_gone(a, p->session_id);
        outbox_kick(a->outbox);
        accounts_audit(a, r, AUDIT_ACCOUNT_DELETED, p->user_id, NULL, NULL, NULL, NULL);
    }
    return st;
}
