#include "oauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "authn.h"
#include "b64url.h"
#include "json.h"
#include "l2.h"
#include "log.h"
#include "reqdb.h"
#include "uuid.h"

const struct db_stmt oauth_statements[OAUTH_STMT__COUNT] = {
    [OA_REVOKE_JTI] = {"oauth_revoke_jti",
                       "INSERT INTO revoked_client_tokens (jti, client_id, expires_at) VALUES ($1, "
                       "$2, to_timestamp($3::bigint)) ON CONFLICT DO NOTHING",
                       3, 1},
    [OA_JTI_REVOKED] = {"oauth_jti_revoked", "SELECT 1 FROM revoked_client_tokens WHERE jti = $1",
                        1, 1},
    /* A live refresh token: unused, of a live session. */
    [OA_REFRESH_LOOKUP] = {"oauth_refresh_lookup",
                           "SELECT s.user_id, s.id, extract(epoch FROM rt.issued_at)::bigint, "
                           "extract(epoch FROM s.expires_at)::bigint FROM refresh_tokens rt JOIN "
                           "sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1::bytea "
                           "AND rt.used_at IS NULL AND s.revoked_at IS NULL AND s.expires_at > "
                           "now()",
                           1, 1},
};

static const char *const oauth_error_names[] = {
    [OAUTH_OK] = "",
    [OAUTH_INVALID_REQUEST] = "invalid_request",
    [OAUTH_INVALID_CLIENT] = "invalid_client",
    [OAUTH_INVALID_GRANT] = "invalid_grant",
    [OAUTH_UNSUPPORTED_GRANT_TYPE] = "unsupported_grant_type",
    [OAUTH_INVALID_SCOPE] = "invalid_scope",
    [OAUTH_UNAVAILABLE] = "temporarily_unavailable",
    [OAUTH_INTERNAL] = "server_error",
};

const char *oauth_error_name(enum oauth_error e)
{
    return (unsigned)e <= OAUTH_INTERNAL ? oauth_error_names[e] : "server_error";
}

int oauth_init(struct oauth *o, struct accounts *a, struct kv_pool *kv, const char *redis_prefix,
               struct assertion_jti_table *jti_table)
{
    memset(o, 0, sizeof(*o));
    o->a = a;
    size_t n = strlen(a->cfg->public_url);
    while (n > 0 && a->cfg->public_url[n - 1] == '/')
        n--; /* the issuer is the origin, without a trailing slash */
    snprintf(o->issuer, sizeof(o->issuer), "%.*s", (int)n, a->cfg->public_url);
    snprintf(o->token_url, sizeof(o->token_url), "%s/oauth/token", o->issuer);
    o->auds[0] = o->issuer;
    o->auds[1] = a->cfg->jwt_issuer;
    o->auds[2] = o->token_url;
    o->jti = assertion_jti_create(kv, redis_prefix, jti_table, 0);
    return o->jti != NULL ? 0 : -1;
}

void oauth_destroy(struct oauth *o)
{
    assertion_jti_destroy(o->jti);
    o->jti = NULL;
}

static enum oauth_error oauth_from_status(enum accounts_status st)
{
    return st == ACC_UNAVAILABLE ? OAUTH_UNAVAILABLE : OAUTH_INTERNAL;
}

enum oauth_error oauth_client_auth(struct oauth *o, struct accounts_req *r, const struct form *f,
                                   struct clients_record *client, const char **desc)
{
    struct assertion as;
    char why[128];
    const char *type = form_get(f, "client_assertion_type");
    const char *tok = form_get(f, "client_assertion"), *cid = form_get(f, "client_id");
    if (type == NULL && tok == NULL) {
        *desc = "client authentication (private_key_jwt) is required";
        return OAUTH_INVALID_CLIENT;
    }
    if (type == NULL || tok == NULL) {
        *desc = "client_assertion_type and client_assertion go together";
        return OAUTH_INVALID_REQUEST;
    }
    if (strcmp(type, OAUTH_ASSERTION_TYPE) != 0) {
        *desc = "client_assertion_type must be " OAUTH_ASSERTION_TYPE;
        return OAUTH_INVALID_CLIENT;
    }
    if (assertion_parse(tok, strlen(tok), &as, why, sizeof(why)) != 0) {
        *desc = arena_strdup(r->arena, why);
        return OAUTH_INVALID_CLIENT;
    }
    if (cid != NULL && strcmp(cid, as.sub) != 0) {
        *desc = "client_id is not the assertion's subject";
        return OAUTH_INVALID_CLIENT;
    }
    enum accounts_status st = clients_lookup(o->a, r, as.sub, client);
    if (st == ACC_NOT_FOUND) {
        *desc = "unknown client";
        return OAUTH_INVALID_CLIENT;
    }
    if (st != ACC_OK) {
        *desc = "the client could not be read";
        return oauth_from_status(st);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* exp and the jti's lifetime are Unix times */
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (assertion_check(&as, tok, client, o->auds, 3, now_ms / 1000, why, sizeof(why)) != 0) {
        *desc = arena_strdup(r->arena, why);
        return OAUTH_INVALID_CLIENT;
    }
    /* Only a verified assertion spends its jti (nobody burns another's). */
    switch (assertion_jti_once(o->jti, client->id, as.jti, as.exp, now_ms)) {
    case ASSERTION_JTI_FIRST:
        return OAUTH_OK;
    case ASSERTION_JTI_REPLAY:
        *desc = "the assertion's jti was used before";
        return OAUTH_INVALID_CLIENT;
    case ASSERTION_JTI_FULL:
    default:
        *desc = "too many assertions in flight; retry shortly";
        return OAUTH_UNAVAILABLE;
    }
}

enum oauth_error oauth_grant(struct oauth *o, struct accounts_req *r, const struct form *f,
                             const struct clients_record *client, struct buf *out,
                             const char **desc)
{
    const char *gt = form_get(f, "grant_type"), *scope = form_get(f, "scope");
    struct jwt_client_claims c = {0};
    uint8_t u[16];
    (void)r;
    if (gt == NULL) {
        *desc = "grant_type is required";
        return OAUTH_INVALID_REQUEST;
    }
    if (strcmp(gt, "client_credentials") != 0) {
        *desc = "only grant_type=client_credentials is supported";
        return OAUTH_UNSUPPORTED_GRANT_TYPE;
    }
    if (scope == NULL)
        scope = client->scopes;
    if (strlen(scope) > JWT_SCOPE_MAX || !clients_scopes_subset(scope, client->scopes)) {
        *desc = "scope asks for more than the client was given";
        return OAUTH_INVALID_SCOPE;
    }
    int64_t now = (int64_t)time(NULL);
    uuid_v7(u);
    uuid_format(u, c.jti);
    snprintf(c.client_id, sizeof(c.client_id), "%s", client->id);
    snprintf(c.scope, sizeof(c.scope), "%s", scope);
    c.iat = now;
    c.exp = now + o->a->cfg->client_token_ttl;
    buf_puts(out, "{\"access_token\":\"");
    pthread_rwlock_rdlock(&o->a->keys_lock);
    jwt_sign_client(o->a->keys, o->a->cfg->jwt_alg, o->a->cfg->jwt_issuer, o->a->cfg->jwt_audience,
                    &c, out);
    pthread_rwlock_unlock(&o->a->keys_lock);
    buf_printf(out, "\",\"token_type\":\"Bearer\",\"expires_in\":%ld,\"scope\":",
               o->a->cfg->client_token_ttl);
    json_put_cstr(out, c.scope);
    buf_putc(out, '}');
    return OAUTH_OK;
}

/* ---- client tokens ----------------------------------------------------- */

/* The Unix ms of a UUIDv7 (its first 48 bits); -1 if s is no UUID. */
static int64_t oauth_uuid_ms(const char *s)
{
    uint8_t u[16];
    if (uuid_parse(s, strlen(s), u) != 0)
        return -1;
    int64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | u[i];
    return ms;
}

struct oauth_jti_load {
    struct oauth *o;
    struct accounts_req *r;
    const char *jti;
};

#define OAUTH_REVOKED "-"
#define OAUTH_LIVE    "+"

static int oauth_load_jti_db(void *ctx, struct cache_value **out, long *ttl_ms)
{
    struct oauth_jti_load *l = ctx;
    const char *p[1] = {l->jti};
    PGresult *res;
    enum db_result rc = reqdb_exec(l->o->a, l->r, REQDB_OA_JTI_REVOKED, p, &res);
    if (rc != DB_OK) {
        PQclear(res);
        return (int)reqdb_status(rc);
    }
    int revoked = PQntuples(res) > 0;
    PQclear(res);
    *out = cache_value_new(revoked ? OAUTH_REVOKED : OAUTH_LIVE, 1, NULL, 0);
    *ttl_ms = l->o->a->cfg->l2_ttl * 1000;
    return 0;
}

static int oauth_load_jti(void *ctx, const void *key, size_t klen, struct cache_value **out,
                          long *ttl_ms)
{
    struct oauth_jti_load *l = ctx;
    enum l2_source src;
    int rc = l2_fetch(l->o->a->l2, key, klen, oauth_load_jti_db, ctx, out, ttl_ms, &src);
    if (rc == 0)
        *ttl_ms = l->o->a->cfg->l1_ttl * 1000;
    return rc;
}

/* The signature and claims, remembered in L1 until exp like user tokens. */
static int oauth_client_claims(struct oauth *o, const char *token, size_t len,
                               struct jwt_client_claims *c)
{
    unsigned char key[2 + 32] = {'k', ':'};
    struct cache_value *v;
    char why[64];
    crypto_generichash(key + 2, 32, (const unsigned char *)token, len, NULL, 0);
    if (cache_get(o->a->l1, key, sizeof(key), &v)) {
        int ok = v->len == sizeof(*c);
        if (ok)
            memcpy(c, v->data, sizeof(*c));
        cache_value_release(v);
        return ok ? 0 : -1;
    }
    struct cache_mark mark = cache_mark(o->a->l1, key, sizeof(key));
    int64_t now = (int64_t)time(NULL);
    pthread_rwlock_rdlock(&o->a->keys_lock);
    int rc = jwt_verify_client(o->a->keys, o->a->cfg->jwt_issuer, o->a->cfg->jwt_audience, token,
                               len, now, c, why, sizeof(why));
    pthread_rwlock_unlock(&o->a->keys_lock);
    if (rc != 0)
        return -1;
    v = cache_value_new(c, sizeof(*c), NULL, 0);
    (void)cache_put(o->a->l1, key, sizeof(key), v, (long)(c->exp - now) * 1000, mark);
    cache_value_release(v);
    return 0;
}

enum accounts_status oauth_verify_client_token(struct oauth *o, struct accounts_req *r,
                                               const char *token, size_t len,
                                               struct jwt_client_claims *out)
{
    struct clients_record rec;
    char key[48];
    struct cache_value *v = NULL;
    if (oauth_client_claims(o, token, len, out) != 0)
        return ACC_INVALID_TOKEN;
    int64_t issued_ms = oauth_uuid_ms(out->jti);
    enum accounts_status st = clients_lookup(o->a, r, out->client_id, &rec);
    if (st == ACC_NOT_FOUND || (st == ACC_OK && issued_ms <= rec.tokens_after_ms))
        return ACC_INVALID_TOKEN;
    if (st != ACC_OK)
        return st;
    /* Revoked one by one (RFC 7009)? */
    struct oauth_jti_load l = {.o = o, .r = r, .jti = out->jti};
    size_t kl = (size_t)snprintf(key, sizeof(key), "j:%s", out->jti);
    int rc =
        cache_fetch(o->a->l1, key, kl, oauth_load_jti, &l, accounts_deadline(o->a, r), &v, NULL);
    if (rc != 0)
        return rc == CACHE_DEADLINE ? ACC_UNAVAILABLE : (enum accounts_status)rc;
    st = v->len == 1 && v->data[0] == OAUTH_LIVE[0] ? ACC_OK : ACC_INVALID_TOKEN;
    cache_value_release(v);
    return st;
}

/* ---- introspection and revocation -------------------------------------- */

static void oauth_claim_str(struct buf *out, const char *name, const char *v)
{
    buf_printf(out, ",\"%s\":", name);
    json_put_cstr(out, v);
}

/* A live refresh token's user, session, iat, exp; 1 found, 0 not, -1 db. */
static int oauth_refresh_lookup(struct oauth *o, struct accounts_req *r, const char *token,
                                PGresult **res, enum accounts_status *st)
{
    unsigned char raw[48], h[32];
    char hex[2 + 64 + 1];
    size_t rawlen;
    *res = NULL;
    if (b64url_decode(raw, sizeof(raw), token, strlen(token), &rawlen) != 0 || rawlen != 32)
        return 0;
    sodium_memzero(raw, sizeof(raw));
    crypto_generichash(h, sizeof(h), (const unsigned char *)token, strlen(token), NULL, 0);
    hex[0] = '\\';
    hex[1] = 'x';
    sodium_bin2hex(hex + 2, 65, h, sizeof(h));
    const char *p[1] = {hex};
    enum db_result rc = reqdb_exec(o->a, r, REQDB_OA_REFRESH_LOOKUP, p, res);
    if (rc != DB_OK) {
        PQclear(*res);
        *res = NULL;
        *st = reqdb_status(rc);
        return -1;
    }
    if (PQntuples(*res) != 1) {
        PQclear(*res);
        *res = NULL;
        return 0;
    }
    return 1;
}

enum oauth_error oauth_introspect(struct oauth *o, struct accounts_req *r, const char *token,
                                  struct buf *out)
{
    struct jwt_client_claims cc;
    struct jwt_claims uc;
    struct accounts_principal p;
    char why[64];
    PGresult *res;
    enum accounts_status st = ACC_OK;
    size_t len = strlen(token);
    const struct config *cfg = o->a->cfg;

    st = oauth_verify_client_token(o, r, token, len, &cc);
    if (st == ACC_OK) {
        buf_puts(out, "{\"active\":true,\"token_type\":\"Bearer\"");
        oauth_claim_str(out, "client_id", cc.client_id);
        oauth_claim_str(out, "scope", cc.scope);
        oauth_claim_str(out, "sub", cc.client_id);
        oauth_claim_str(out, "iss", cfg->jwt_issuer);
        oauth_claim_str(out, "aud", cfg->jwt_audience);
        oauth_claim_str(out, "jti", cc.jti);
        buf_printf(out, ",\"iat\":%lld,\"exp\":%lld}", (long long)cc.iat, (long long)cc.exp);
        return OAUTH_OK;
    }
    if (st != ACC_INVALID_TOKEN)
        return oauth_from_status(st);
    pthread_rwlock_rdlock(&o->a->keys_lock);
    int uok = jwt_verify(o->a->keys, cfg->jwt_issuer, cfg->jwt_audience, token, len,
                         (int64_t)time(NULL), &uc, why, sizeof(why));
    pthread_rwlock_unlock(&o->a->keys_lock);
    if (uok == 0) {
        st = authn_authenticate(o->a, r, token, len, &p, NULL);
        if (st == ACC_OK) {
            buf_puts(out, "{\"active\":true,\"token_type\":\"Bearer\"");
            oauth_claim_str(out, "sub", uc.sub);
            oauth_claim_str(out, "sid", uc.sid);
            oauth_claim_str(out, "iss", cfg->jwt_issuer);
            oauth_claim_str(out, "aud", cfg->jwt_audience);
            oauth_claim_str(out, "jti", uc.jti);
            buf_printf(out, ",\"iat\":%lld,\"exp\":%lld}", (long long)uc.iat, (long long)uc.exp);
            return OAUTH_OK;
        }
        if (st != ACC_INVALID_TOKEN)
            return oauth_from_status(st);
        buf_puts(out, "{\"active\":false}");
        return OAUTH_OK;
    }
    int found = oauth_refresh_lookup(o, r, token, &res, &st);
    if (found < 0)
        return oauth_from_status(st);
    if (found == 0) {
        buf_puts(out, "{\"active\":false}");
        return OAUTH_OK;
    }
    buf_puts(out, "{\"active\":true,\"token_type\":\"refresh_token\"");
    oauth_claim_str(out, "sub", PQgetvalue(res, 0, 0));
    oauth_claim_str(out, "sid", PQgetvalue(res, 0, 1));
    oauth_claim_str(out, "iss", cfg->jwt_issuer);
    buf_printf(out, ",\"iat\":%s,\"exp\":%s}", PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
    PQclear(res);
    return OAUTH_OK;
}

enum oauth_error oauth_revoke(struct oauth *o, struct accounts_req *r,
                              const struct clients_record *client, const char *token)
{
    struct jwt_client_claims cc;
    struct jwt_claims uc;
    struct accounts_principal p;
    char why[64], exp[24], key[48];
    PGresult *res;
    enum accounts_status st = ACC_OK;
    size_t len = strlen(token);
    const struct config *cfg = o->a->cfg;

    memset(&p, 0, sizeof(p));
    if (oauth_client_claims(o, token, len, &cc) == 0) {
        /* RFC 7009 §2.1: only the client the token was issued to. */
        if (strcmp(cc.client_id, client->id) != 0)
            return OAUTH_OK;
        snprintf(exp, sizeof(exp), "%lld", (long long)cc.exp);
        const char *params[3] = {cc.jti, cc.client_id, exp};
        enum db_result rc = reqdb_exec(o->a, r, REQDB_OA_REVOKE_JTI, params, &res);
        PQclear(res);
        if (rc != DB_OK)
            return oauth_from_status(reqdb_status(rc));
        struct cache_value *v = cache_value_new(OAUTH_REVOKED, 1, NULL, 1);
        size_t kl = (size_t)snprintf(key, sizeof(key), "j:%s", cc.jti);
        reqdb_publish(o->a, key, kl, v, 1);
        cache_value_release(v);
        return OAUTH_OK;
    }
    pthread_rwlock_rdlock(&o->a->keys_lock);
    int uok = jwt_verify(o->a->keys, cfg->jwt_issuer, cfg->jwt_audience, token, len,
                         (int64_t)time(NULL), &uc, why, sizeof(why));
    pthread_rwlock_unlock(&o->a->keys_lock);
    if (uok == 0) {
        snprintf(p.user_id, sizeof(p.user_id), "%.36s", uc.sub);
        snprintf(p.session_id, sizeof(p.session_id), "%.36s", uc.sid);
    } else {
        int found = oauth_refresh_lookup(o, r, token, &res, &st);
        if (found < 0)
            return oauth_from_status(st);
        if (found == 0)
            return OAUTH_OK; /* unknown tokens: 200 too (RFC 7009 §2.2) */
        snprintf(p.user_id, sizeof(p.user_id), "%s", PQgetvalue(res, 0, 0));
        snprintf(p.session_id, sizeof(p.session_id), "%s", PQgetvalue(res, 0, 1));
        PQclear(res);
    }
    st = accounts_revoke_session(o->a, r, &p, p.session_id, strlen(p.session_id));
    if (st != ACC_OK && st != ACC_NOT_FOUND)
        return oauth_from_status(st);
    return OAUTH_OK;
}

void oauth_metadata(const struct config *cfg, struct buf *out)
{
    char issuer[520];
    size_t n = strlen(cfg->public_url);
    while (n > 0 && cfg->public_url[n - 1] == '/')
        n--;
    snprintf(issuer, sizeof(issuer), "%.*s", (int)n, cfg->public_url);
    static const char auth[] = "[\"private_key_jwt\"]", algs[] = "[\"EdDSA\",\"Ed25519\"]";
    buf_puts(out, "{\"issuer\":");
    json_put_cstr(out, issuer);
    buf_printf(out, ",\"token_endpoint\":\"%s/oauth/token\"", issuer);
    buf_printf(out, ",\"introspection_endpoint\":\"%s/oauth/introspect\"", issuer);
    buf_printf(out, ",\"revocation_endpoint\":\"%s/oauth/revoke\"", issuer);
    buf_printf(out, ",\"jwks_uri\":\"%s/.well-known/jwks.json\"", issuer);
    buf_puts(out, ",\"scopes_supported\":[\"admin\"");
    const char *p = cfg->client_scopes;
    while (*p != '\0') {
        const char *e = strchr(p, ' ');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        buf_putc(out, ',');
        json_put_string(out, p, k);
        if (e == NULL)
            break;
        p = e + 1;
    }
    buf_puts(out, "],\"response_types_supported\":[],\"grant_types_supported\":"
                  "[\"client_credentials\"]");
    buf_printf(out, ",\"token_endpoint_auth_methods_supported\":%s", auth);
    buf_printf(out, ",\"token_endpoint_auth_signing_alg_values_supported\":%s", algs);
    buf_printf(out, ",\"introspection_endpoint_auth_methods_supported\":%s", auth);
    buf_printf(out, ",\"introspection_endpoint_auth_signing_alg_values_supported\":%s", algs);
    buf_printf(out, ",\"revocation_endpoint_auth_methods_supported\":%s", auth);
    buf_printf(out, ",\"revocation_endpoint_auth_signing_alg_values_supported\":%s}", algs);
}
