#include "mfa.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "authn.h"
#include "b64url.h"
#include "buf.h"
#include "log.h"
#include "secretbox.h"
#include "statements.h"
#include "totp.h"
#include "uuid.h"

/* Sealed secrets and hashes travel as hex text (encode/decode in SQL), so
 * no bytea escaping is needed in parameters or array literals. */
const struct db_stmt mfa_statements[MFA_STMT__COUNT] = {
    [MFA_USER] = {"mfa_user",
                  "SELECT email, mfa_enabled, encode(totp_secret, 'hex'), encode(totp_pending, "
                  "'hex') FROM users WHERE id = $1",
                  1, 1},
    /* $1 user, $2 sealed secret (hex) */
    [MFA_ENROL] = {"mfa_enrol",
                   "UPDATE users SET totp_pending = decode($2, 'hex') WHERE id = $1 AND NOT "
                   "mfa_enabled RETURNING email",
                   2, 0},
    /* $1 user, $2 the pending secret that was checked (hex), $3 its step,
     * $4 text[] of recovery code hashes (hex). Only the checked enrolment
     * is activated: a concurrent new enrolment makes this a no-op. */
    [MFA_CONFIRM] =
        {"mfa_confirm",
         "WITH u AS (UPDATE users SET totp_secret = totp_pending, totp_pending = "
         "NULL, mfa_enabled = true, totp_last_step = greatest(coalesce(totp_last_step, "
         "-1), $3::bigint), version = version + 1, updated_at = now() WHERE id = $1 "
         "AND totp_pending = decode($2, 'hex') AND NOT mfa_enabled RETURNING " ACCOUNTS_USER_COLS
         "), d AS (DELETE FROM recovery_codes WHERE user_id IN (SELECT id FROM u)), i "
         "AS (INSERT INTO recovery_codes (user_id, code_hash) SELECT u.id, decode(h, "
         "'hex') FROM u, unnest($4::text[]) h) SELECT * FROM u",
         4, 0},
    /* $1 user, $2 step: the replay guard. Two uses of one step serialise on
     * the row; the second re-checks the condition and gets no row. */
    [MFA_STEP] = {"mfa_step",
                  "UPDATE users SET totp_last_step = $2::bigint WHERE id = $1 AND mfa_enabled AND "
                  "coalesce(totp_last_step, -1) < $2::bigint RETURNING id",
                  2, 0},
    /* $1 user, $2 code hash (hex); returns how many are left. */
    [MFA_RECOVERY_USE] = {"mfa_recovery_use",
                          "DELETE FROM recovery_codes WHERE user_id = $1 AND code_hash = "
                          "decode($2, 'hex') RETURNING (SELECT count(*) FROM recovery_codes WHERE "
                          "user_id = $1) - 1",
                          2, 0},
    [MFA_DISABLE] = {"mfa_disable",
                     "WITH u AS (UPDATE users SET mfa_enabled = false, totp_secret = NULL, "
                     "totp_pending = NULL, version = version + 1, updated_at = now() WHERE id = $1 "
                     "AND mfa_enabled RETURNING " ACCOUNTS_USER_COLS
                     "), d AS (DELETE FROM recovery_codes WHERE user_id IN (SELECT id FROM u)), t "
                     "AS (DELETE FROM mfa_tokens WHERE user_id IN (SELECT id FROM u)) SELECT * "
                     "FROM u",
                     1, 0},
    /* $1 token hash, $2 user, $3 ttl s */
    [MFA_TOKEN_NEW] = {"mfa_token_new",
                       "INSERT INTO mfa_tokens (token_hash, user_id, expires_at) VALUES "
                       "($1::bytea, $2, now() + make_interval(secs => $3::int))",
                       3, 0},
    [MFA_TOKEN_GET] = {"mfa_token_get",
                       "SELECT t.user_id, encode(u.totp_secret, 'hex'), u.disabled FROM mfa_tokens "
                       "t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1::bytea AND "
                       "t.used_at IS NULL AND t.expires_at > now() AND t.attempts < 5 AND "
                       "u.mfa_enabled",
                       1, 1},
    [MFA_TOKEN_USE] = {"mfa_token_use",
                       "UPDATE mfa_tokens SET used_at = now() WHERE token_hash = $1::bytea AND "
                       "used_at IS NULL AND expires_at > now() AND attempts < 5 RETURNING user_id",
                       1, 0},
    [MFA_TOKEN_FAIL] = {"mfa_token_fail",
                        "UPDATE mfa_tokens SET attempts = attempts + 1 WHERE token_hash = "
                        "$1::bytea AND used_at IS NULL AND attempts < 5 RETURNING attempts",
                        1, 0},
};

_Static_assert(MFA_TOKEN_MAX_FAILURES == 5, "the statements above spell out 5");

static const char mfa_b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static enum db_result mfa_db(struct accounts *a, struct accounts_req *r, enum mfa_stmt stmt,
                             const char *const *params, PGresult **res)
{
    return accounts_db(a, r, MFA_STMT_BASE + (size_t)stmt, params, res);
}

/* Is the secrets key there? If not, say why in the log (every time: an
 * operator looking at a 503 finds the reason next to it). */
static int mfa_have_key(struct accounts *a)
{
    if (a->secrets != NULL)
        return 1;
    log_msg(LOG_ERROR, "mfa: second factor unavailable: %s",
            a->secrets_err != NULL ? a->secrets_err : "secrets_key is not set");
    return 0;
}

/* Check code against the sealed secret (hex): 0 with *step, -1 wrong
 * code, -2 the secret does not open (another key, or altered). */
static int mfa_totp_match(struct accounts *a, const char *sealed_hex, const char *code, size_t len,
                          int64_t *step)
{
    unsigned char sealed[SECRETBOX_SEALED_LEN(TOTP_SECRET_BYTES)], secret[TOTP_SECRET_BYTES];
    size_t slen = 0, n = 0;
    int rc = -2;
    if (sodium_hex2bin(sealed, sizeof(sealed), sealed_hex, strlen(sealed_hex), NULL, &slen, NULL) !=
            0 ||
        secretbox_open(a->secrets, sealed, slen, secret, sizeof(secret), &n) != 0) {
        log_msg(LOG_ERROR, "mfa: a stored TOTP secret does not open with secrets_key (another "
                           "key, or altered)");
        goto out;
    }
    rc = totp_verify(secret, n, time(NULL), TOTP_WINDOW, code, len, step) == 0 ? 0 : -1;
out:
    sodium_memzero(secret, sizeof(secret));
    return rc;
}

static int mfa_is_totp(const char *code, size_t len)
{
    if (len != TOTP_DIGITS)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (code[i] < '0' || code[i] > '9')
            return 0;
    return 1;
}

/* A recovery code as typed (any case, '-' and spaces ignored) to its
 * canonical 10 characters; -1 when it cannot be one. */
static int mfa_recovery_norm(const char *code, size_t len, char out[MFA_RECOVERY_LEN + 1])
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = code[i];
        if (c == '-' || c == ' ')
            continue;
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (n == MFA_RECOVERY_LEN || strchr(mfa_b32, c) == NULL || c == '\0')
            return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    return n == MFA_RECOVERY_LEN ? 0 : -1;
}

static void mfa_recovery_hash_hex(struct accounts *a, const char *code, char out[65])
{
    unsigned char h[SECRETBOX_HASH_BYTES];
    secretbox_hash(a->secrets, code, strlen(code), h);
    sodium_bin2hex(out, 65, h, sizeof(h));
}

/* Check and consume a code of uid: a TOTP code of the sealed secret (its
 * step raised under the replay guard) or a recovery code (deleted).
 * *kind says which; *left the recovery codes left after one was used. */
static enum accounts_status mfa_check(struct accounts *a, struct accounts_req *r, const char *uid,
                                      const char *sealed_hex, const char *code, size_t len,
                                      enum mfa_code_kind *kind, long *left)
{
    PGresult *res;
    enum db_result rc;
    if (!mfa_have_key(a))
        return ACC_NO_SECRETS_KEY;
    if (mfa_is_totp(code, len)) {
        int64_t step = 0;
        char steps[24];
        *kind = MFA_CODE_TOTP;
        int m = mfa_totp_match(a, sealed_hex, code, len, &step);
        if (m != 0)
            return m == -1 ? ACC_INVALID_CODE : ACC_INTERNAL;
        snprintf(steps, sizeof(steps), "%lld", (long long)step);
        const char *p[2] = {uid, steps};
        rc = mfa_db(a, r, MFA_STEP, p, &res);
        int won = rc == DB_OK && PQntuples(res) == 1;
        PQclear(res);
        if (rc != DB_OK)
            return accounts_db_status(rc);
        return won ? ACC_OK : ACC_INVALID_CODE; /* a step used before: replay */
    }
    char norm[MFA_RECOVERY_LEN + 1], hex[65];
    *kind = MFA_CODE_RECOVERY;
    if (mfa_recovery_norm(code, len, norm) != 0)
        return ACC_INVALID_CODE;
    mfa_recovery_hash_hex(a, norm, hex);
    sodium_memzero(norm, sizeof(norm));
    const char *p[2] = {uid, hex};
    rc = mfa_db(a, r, MFA_RECOVERY_USE, p, &res);
    int won = rc == DB_OK && PQntuples(res) == 1;
    if (won)
        *left = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (rc != DB_OK)
        return accounts_db_status(rc);
    return won ? ACC_OK : ACC_INVALID_CODE;
}

static enum mfa_outcome mfa_outcome_of(enum accounts_status st)
{
    switch (st) {
    case ACC_OK:
        return MFA_OUT_SUCCESS;
    case ACC_INVALID_CODE:
        return MFA_OUT_INVALID_CODE;
    case ACC_INVALID_GRANT:
        return MFA_OUT_INVALID_GRANT;
    case ACC_THROTTLED:
        return MFA_OUT_THROTTLED;
    default:
        return MFA_OUT_ERROR;
    }
}

/* mfa_check under a slot of the account's login throttle: a wrong code
 * counts like a wrong password and is audited as mfa_failed. */
static enum accounts_status mfa_check_throttled(struct accounts *a, struct accounts_req *r,
                                                const char *uid, const char *sealed_hex,
                                                const char *code, size_t len,
                                                enum mfa_code_kind *kind, long *left,
                                                enum mfa_outcome *o)
{
    char tkey[THROTTLE_KEY_MAX];
    struct throttle_verdict tv;
    enum accounts_status st = accounts_throttle_take(a, r, uid, NULL, tkey, &tv);
    if (st == ACC_OK) {
        st = mfa_check(a, r, uid, sealed_hex, code, len, kind, left);
        accounts_throttle_done(a, tkey, &tv, st);
    }
    *o = mfa_outcome_of(st);
    if (st == ACC_INVALID_CODE)
        accounts_audit(a, r, AUDIT_MFA_FAILED, uid, "method",
                       mfa_is_totp(code, len) ? "totp" : "recovery_code", NULL, NULL);
    return st;
}

static void mfa_audit_recovery(struct accounts *a, struct accounts_req *r, const char *uid,
                               long left)
{
    char n[24];
    snprintf(n, sizeof(n), "%ld", left);
    accounts_audit(a, r, AUDIT_RECOVERY_CODE_USED, uid, "remaining", n, NULL, NULL);
}

/* The account's MFA row: email, enabled, sealed secret, sealed pending
 * (NULL when none), copied into r's arena. */
struct mfa_row {
    int enabled;
    const char *email, *secret_hex, *pending_hex;
};

static enum accounts_status mfa_row(struct accounts *a, struct accounts_req *r, const char *uid,
                                    struct mfa_row *row)
{
    const char *p[1] = {uid};
    PGresult *res;
    memset(row, 0, sizeof(*row));
    enum db_result rc = mfa_db(a, r, MFA_USER, p, &res);
    enum accounts_status st = ACC_OK;
    if (rc != DB_OK)
        st = accounts_db_status(rc);
    else if (PQntuples(res) != 1)
        st = ACC_INVALID_TOKEN; /* the account is gone */
    else {
        row->email = arena_strdup(r->arena, PQgetvalue(res, 0, 0));
        row->enabled = PQgetvalue(res, 0, 1)[0] == 't';
        row->secret_hex = arena_strdup(r->arena, PQgetvalue(res, 0, 2));
        row->pending_hex =
            PQgetisnull(res, 0, 3) ? NULL : arena_strdup(r->arena, PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    return st;
}

/* The profile changed (mfa_enabled): every cached copy shows it at once. */
static void mfa_profile_changed(struct accounts *a, struct accounts_req *r, PGresult *res)
{
    struct accounts_user u;
    accounts_user_from(r, res, &u);
    struct cache_value *v = authn_profile_value(&u);
    authn_user_changed(a, u.id, v, u.version);
    cache_value_release(v);
}

static enum accounts_status mfa_invalid(struct accounts_req *r, const char *detail,
                                        const char *field)
{
    r->code = "validation_failed";
    r->detail = detail;
    r->field = field;
    return ACC_INVALID;
}

enum accounts_status mfa_challenge(struct accounts *a, struct accounts_req *r, const char *user_id,
                                   struct accounts_tokens *out)
{
    unsigned char raw[MFA_TOKEN_BYTES];
    char tok[64], hash[2 + 64 + 1], ttl[16];
    PGresult *res;
    randombytes_buf(raw, sizeof(raw));
    b64url_encode(tok, sizeof(tok), raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    accounts_token_hash(tok, strlen(tok), hash);
    snprintf(ttl, sizeof(ttl), "%d", MFA_TOKEN_TTL_S);
    const char *p[3] = {hash, user_id, ttl};
    enum db_result rc = mfa_db(a, r, MFA_TOKEN_NEW, p, &res);
    PQclear(res);
    enum accounts_status st = rc == DB_OK ? ACC_OK : accounts_db_status(rc);
    if (st == ACC_OK) {
        memset(out, 0, sizeof(*out));
        out->mfa_token = arena_strdup(r->arena, tok);
        out->expires_in = MFA_TOKEN_TTL_S;
    }
    sodium_memzero(tok, sizeof(tok));
    return st;
}

/* Percent-encode s for an otpauth URI label or parameter ('@' kept, as
 * authenticator apps show it). */
static void mfa_uri_put(struct buf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || c == '@')
            buf_putc(b, (char)c);
        else
            buf_printf(b, "%%%02X", c);
    }
}

enum accounts_status mfa_enrol(struct accounts *a, struct accounts_req *r,
                               const struct accounts_principal *p, struct mfa_enrolment *out)
{
    unsigned char secret[TOTP_SECRET_BYTES], sealed[SECRETBOX_SEALED_LEN(TOTP_SECRET_BYTES)];
    char hex[2 * sizeof(sealed) + 1], b32[TOTP_BASE32_MAX];
    struct buf uri = {0};
    PGresult *res = NULL;
    enum accounts_status st = ACC_INTERNAL;
    if (!mfa_have_key(a))
        return ACC_NO_SECRETS_KEY;
    randombytes_buf(secret, sizeof(secret));
    if (totp_base32(secret, sizeof(secret), b32, sizeof(b32)) != 0 ||
        secretbox_seal(a->secrets, secret, sizeof(secret), sealed, sizeof(sealed)) != 0)
        goto out;
    sodium_bin2hex(hex, sizeof(hex), sealed, sizeof(sealed));
    const char *params[2] = {p->user_id, hex};
    enum db_result rc = mfa_db(a, r, MFA_ENROL, params, &res);
    if (rc != DB_OK) {
        st = accounts_db_status(rc);
        goto out;
    }
    if (PQntuples(res) != 1) {
        st = mfa_invalid(r, "the second factor is already enabled; remove it first", "mfa_enabled");
        goto out;
    }
    const char *issuer = a->cfg->jwt_issuer;
    buf_puts(&uri, "otpauth://totp/");
    mfa_uri_put(&uri, issuer);
    buf_putc(&uri, ':');
    mfa_uri_put(&uri, PQgetvalue(res, 0, 0));
    buf_printf(&uri, "?secret=%s&issuer=", b32);
    mfa_uri_put(&uri, issuer);
    buf_puts(&uri, "&algorithm=SHA1&digits=6&period=30");
    out->secret = arena_strdup(r->arena, b32);
    out->otpauth_uri = arena_strndup(r->arena, uri.data, uri.len);
    st = ACC_OK;
out:
    PQclear(res);
    sodium_memzero(secret, sizeof(secret));
    sodium_memzero(b32, sizeof(b32));
    if (uri.data != NULL)
        sodium_memzero(uri.data, uri.len);
    buf_free(&uri);
    return st;
}

enum accounts_status mfa_confirm(struct accounts *a, struct accounts_req *r,
                                 const struct accounts_principal *p, const char *code, size_t len,
                                 const char *codes[MFA_RECOVERY_CODES], enum mfa_outcome *o)
{
    struct mfa_row row;
    struct buf arr = {0};
    char steps[24], tkey[THROTTLE_KEY_MAX];
    struct throttle_verdict tv;
    int64_t step = 0;
    PGresult *res;
    *o = MFA_OUT_NONE;
    enum accounts_status st = mfa_row(a, r, p->user_id, &row);
    if (st != ACC_OK)
        return st;
    if (row.enabled)
        return mfa_invalid(r, "the second factor is already enabled", "mfa_enabled");
    if (row.pending_hex == NULL)
        return mfa_invalid(r, "no enrolment in progress: POST /api/v1/access/mfa/totp first",
                           "code");
    if (!mfa_have_key(a))
        return ACC_NO_SECRETS_KEY;
    st = accounts_throttle_take(a, r, p->user_id, NULL, tkey, &tv);
    if (st == ACC_OK) {
        int m = mfa_totp_match(a, row.pending_hex, code, len, &step);
        st = m == 0 ? ACC_OK : m == -1 ? ACC_INVALID_CODE : ACC_INTERNAL;
        accounts_throttle_done(a, tkey, &tv, st);
    }
    *o = mfa_outcome_of(st);
    if (st == ACC_INVALID_CODE)
        accounts_audit(a, r, AUDIT_MFA_FAILED, p->user_id, "method", "totp", NULL, NULL);
    if (st != ACC_OK)
        return st;
    /* Ten codes, shown once; only their keyed hashes are stored. */
    buf_putc(&arr, '{');
    for (int i = 0; i < MFA_RECOVERY_CODES; i++) {
        char c[MFA_RECOVERY_LEN + 1], hex[65];
        for (int k = 0; k < MFA_RECOVERY_LEN; k++)
            c[k] = mfa_b32[randombytes_uniform(32)];
        c[MFA_RECOVERY_LEN] = '\0';
        mfa_recovery_hash_hex(a, c, hex);
        buf_printf(&arr, "%s%s", i ? "," : "", hex);
        codes[i] = arena_strdup(r->arena, c);
        sodium_memzero(c, sizeof(c));
    }
    buf_putc(&arr, '}');
    snprintf(steps, sizeof(steps), "%lld", (long long)step);
    const char *params[4] = {p->user_id, row.pending_hex, steps, arr.data};
    enum db_result rc = mfa_db(a, r, MFA_CONFIRM, params, &res);
    buf_free(&arr);
    if (rc != DB_OK)
        st = accounts_db_status(rc);
    else if (PQntuples(res) != 1)
        st = mfa_invalid(r, "the enrolment changed meanwhile; start again", "code");
    else
        mfa_profile_changed(a, r, res);
    PQclear(res);
    if (st != ACC_OK) {
        *o = mfa_outcome_of(st);
        return st;
    }
    accounts_audit(a, r, AUDIT_MFA_ENABLED, p->user_id, "method", "totp", NULL, NULL);
    return ACC_OK;
}

/* The account's password, under its login throttle (as DELETE /me). */
enum accounts_status mfa_remove(struct accounts *a, struct accounts_req *r,
                                const struct accounts_principal *p, const char *password,
                                size_t pwlen, const char *code, size_t len, enum mfa_outcome *o)
{
    struct mfa_row row;
    enum mfa_code_kind kind = MFA_CODE_TOTP;
    long left = 0;
    PGresult *res;
    *o = MFA_OUT_NONE;
    enum accounts_status st = mfa_row(a, r, p->user_id, &row);
    if (st != ACC_OK)
        return st;
    if (!row.enabled)
        return ACC_NOT_FOUND;
    st = accounts_verify_password_of(a, r, p->user_id, password, pwlen);
    if (st != ACC_OK)
        return st;
    st = mfa_check_throttled(a, r, p->user_id, row.secret_hex, code, len, &kind, &left, o);
    if (st != ACC_OK)
        return st;
    const char *params[1] = {p->user_id};
    enum db_result rc = mfa_db(a, r, MFA_DISABLE, params, &res);
    if (rc != DB_OK)
        st = accounts_db_status(rc);
    else if (PQntuples(res) != 1)
        st = ACC_NOT_FOUND; /* removed meanwhile */
    else
        mfa_profile_changed(a, r, res);
    PQclear(res);
    if (st != ACC_OK)
        return st;
    if (kind == MFA_CODE_RECOVERY)
        mfa_audit_recovery(a, r, p->user_id, left);
    accounts_audit(a, r, AUDIT_MFA_DISABLED, p->user_id, "method", "totp", NULL, NULL);
    return ACC_OK;
}

/* A syntactically possible mfa_token: 43 base64url characters. */
static int mfa_token_ok(const char *token, size_t len)
{
    unsigned char raw[MFA_TOKEN_BYTES + 1];
    size_t n;
    int ok =
        len == 43 && b64url_decode(raw, sizeof(raw), token, len, &n) == 0 && n == MFA_TOKEN_BYTES;
    sodium_memzero(raw, sizeof(raw));
    return ok;
}

enum accounts_status mfa_login(struct accounts *a, struct accounts_req *r, const char *mfa_token,
                               size_t toklen, const char *code, size_t len,
                               struct accounts_tokens *out, enum mfa_outcome *o)
{
    char hash[2 + 64 + 1], uid[UUID_STR_LEN + 1];
    enum mfa_code_kind kind = MFA_CODE_TOTP;
    long left = 0;
    PGresult *res;
    *o = MFA_OUT_INVALID_GRANT;
    if (!mfa_token_ok(mfa_token, toklen))
        return ACC_INVALID_GRANT;
    accounts_token_hash(mfa_token, toklen, hash);
    const char *hp[1] = {hash};
    enum db_result rc = mfa_db(a, r, MFA_TOKEN_GET, hp, &res);
    if (rc != DB_OK || PQntuples(res) != 1) {
        PQclear(res);
        if (rc != DB_OK)
            *o = MFA_OUT_ERROR;
        return rc != DB_OK ? accounts_db_status(rc) : ACC_INVALID_GRANT;
    }
    snprintf(uid, sizeof(uid), "%s", PQgetvalue(res, 0, 0));
    const char *secret_hex = arena_strdup(r->arena, PQgetvalue(res, 0, 1));
    int disabled = PQgetvalue(res, 0, 2)[0] == 't';
    PQclear(res);
    enum accounts_status st =
        mfa_check_throttled(a, r, uid, secret_hex, code, len, &kind, &left, o);
    if (st == ACC_INVALID_CODE) {
        /* One of the token's 5; the 5th spends it. */
        if (mfa_db(a, r, MFA_TOKEN_FAIL, hp, &res) == DB_OK && PQntuples(res) == 1 &&
            strtol(PQgetvalue(res, 0, 0), NULL, 10) >= MFA_TOKEN_MAX_FAILURES)
            log_msg(LOG_INFO, "mfa: an mfa_token is spent after %d wrong codes",
                    MFA_TOKEN_MAX_FAILURES);
        PQclear(res);
    }
    if (st != ACC_OK)
        return st;
    /* Single use: of two requests with one token, one gets the session. */
    rc = mfa_db(a, r, MFA_TOKEN_USE, hp, &res);
    int won = rc == DB_OK && PQntuples(res) == 1;
    PQclear(res);
    if (!won) {
        *o = rc != DB_OK ? MFA_OUT_ERROR : MFA_OUT_INVALID_GRANT;
        return rc != DB_OK ? accounts_db_status(rc) : ACC_INVALID_GRANT;
    }
    if (kind == MFA_CODE_RECOVERY)
        mfa_audit_recovery(a, r, uid, left);
    if (disabled)
        return ACC_ACCOUNT_DISABLED;
    st = accounts_open_session(a, r, uid, 1, out);
    if (st != ACC_OK) {
        *o = MFA_OUT_ERROR;
        return st;
    }
    accounts_audit(a, r, AUDIT_LOGIN_SUCCEEDED, uid, "session_id", out->session_id, "amr",
                   kind == MFA_CODE_TOTP ? "pwd otp" : "pwd recovery_code");
    return ACC_OK;
}

enum accounts_status mfa_require_code(struct accounts *a, struct accounts_req *r,
                                      const char *user_id, const char *code, size_t len,
                                      enum mfa_outcome *o)
{
    struct mfa_row row;
    enum mfa_code_kind kind = MFA_CODE_TOTP;
    long left = 0;
    *o = MFA_OUT_NONE;
    enum accounts_status st = mfa_row(a, r, user_id, &row);
    if (st != ACC_OK || !row.enabled)
        return st;
    if (code == NULL)
        return mfa_invalid(r, "this account has a second factor: code is required", "code");
    st = mfa_check_throttled(a, r, user_id, row.secret_hex, code, len, &kind, &left, o);
    if (st == ACC_OK && kind == MFA_CODE_RECOVERY)
        mfa_audit_recovery(a, r, user_id, left);
    return st;
}
