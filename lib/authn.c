#include "authn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "accounts.h"
#include "clock.h"
#include "json.h"
#include "jwt.h"
#include "log.h"
#include "uuid.h"

/* The cached value of a session that is no longer live. */
#define AUTHN_SESSION_GONE "-"

/* ---- the cached profile --------------------------------------------- */

void authn_user_json(struct buf *b, const struct accounts_user *u)
{
    buf_puts(b, "{\"id\":");
    json_put_cstr(b, u->id);
    buf_puts(b, ",\"email\":");
    json_put_cstr(b, u->email);
    buf_puts(b, ",\"name\":");
    json_put_cstr(b, u->name);
    buf_puts(b, ",\"created_at\":");
    json_put_cstr(b, u->created_at);
    buf_puts(b, u->email_verified ? ",\"email_verified\":true" : ",\"email_verified\":false");
    buf_puts(b, u->mfa_enabled ? ",\"mfa_enabled\":true}" : ",\"mfa_enabled\":false}");
}

static void authn_user_etag(const struct accounts_user *u, char *out, size_t outlen)
{
    snprintf(out, outlen, "\"%.36s-%lld\"", u->id, u->version);
}

/* The cached profile value of u (one reference). */
struct cache_value *authn_profile_value(const struct accounts_user *u)
{
    struct buf b = {0};
    char etag[CACHE_ETAG_MAX];
    authn_user_json(&b, u);
    authn_user_etag(u, etag, sizeof(etag));
    struct cache_value *v = cache_value_new(b.data, b.len, etag, u->version);
    buf_free(&b);
    return v;
}

/* ---- invalidation ---------------------------------------------------- */

static size_t authn_key(char *out, size_t outlen, const char *lead, const char *id)
{
    int n = snprintf(out, outlen, "%s%s", lead, id);
    return n < 0 ? 0 : (size_t)n >= outlen ? outlen - 1 : (size_t)n;
}

static void authn_layer(struct accounts_req *r, enum accounts_layer l)
{
    if (l > r->layer)
        r->layer = l;
}

/* After a write committed: replace the L2 entry (newer rank wins), tell
 * every worker (pub/sub for other hosts, the shared record for this one),
 * then drop it here. In this order a reader that misses L1 after the
 * invalidation finds the new L2 entry. */
static void authn_publish(struct accounts *a, const char *key, size_t klen, struct cache_value *v,
                          int64_t version)
{
    (void)l2_write(a->l2, key, klen, v, version, a->cfg->l2_ttl * 1000, 1);
    cache_invalidate(a->l1, key, klen);
}

/* A session is no longer live (logout, revocation, reuse, trim, password
 * change): every worker must refuse its tokens. */
void authn_session_gone(struct accounts *a, const char *sid)
{
    char key[48];
    size_t kl = authn_key(key, sizeof(key), "s:", sid);
    struct cache_value *v = cache_value_new(AUTHN_SESSION_GONE, 1, NULL, 1);
    authn_publish(a, key, kl, v, 1);
    cache_value_release(v);
}

/* The profile of uid changed to version (v the new profile, or NULL when
 * only the version is known: a tombstone makes older copies stale). */
void authn_user_changed(struct accounts *a, const char *uid, struct cache_value *v, int64_t version)
{
    char key[48];
    size_t kl = authn_key(key, sizeof(key), "u:", uid);
    authn_publish(a, key, kl, v, version);
}

/* ---- loaders: L1 miss, then L2, then PostgreSQL ---------------------- */

struct authn_load {
    struct accounts *a;
    struct accounts_req *r;
    const char *id;              /* the session or user to read */
    const char *user_id;         /* the token's subject */
    l2_loader db;                /* reads it from PostgreSQL */
    int session;                 /* session values carry their expiry */
    struct cache_value *profile; /* filled by the session loader */
    char profile_key[48];
    size_t profile_klen;
};

static long authn_ttl_ms(long seconds_left, long cap_s)
{
    if (seconds_left > cap_s)
        seconds_left = cap_s;
    return seconds_left > 0 ? seconds_left * 1000 : 0;
}

/* Session from PostgreSQL: "<uid> <expires>" or "-"; the same row holds
 * the profile, which (when it is the token subject's) goes to ctx->profile
 * and to both cache layers. */
static int authn_load_session_db(void *ctx, struct cache_value **out, long *ttl_ms)
{
    struct authn_load *l = ctx;
    const char *p[1] = {l->id};
    PGresult *res;
    /* Taken before the read: a profile change racing it keeps L1 clean. */
    struct cache_mark mark = cache_mark(l->a->l1, l->profile_key, l->profile_klen);
    authn_layer(l->r, ACC_LAYER_DB);
    enum db_result rc = accounts_db(l->a, l->r, STMT_USER_BY_SESSION, p, &res);
    if (rc != DB_OK) {
        PQclear(res);
        return (int)accounts_db_status(rc);
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        *out = cache_value_new(AUTHN_SESSION_GONE, 1, NULL, 1);
        *ttl_ms = l->a->cfg->l2_ttl * 1000;
        return 0;
    }
    struct accounts_user u;
    accounts_user_from(l->r, res, &u);
    long long expires = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
    PQclear(res);
    char val[UUID_STR_LEN + 32];
    int n = snprintf(val, sizeof(val), "%s %lld", u.id, expires);
    *out = cache_value_new(val, (size_t)n, NULL, 0);
    *ttl_ms = authn_ttl_ms((long)(expires - (long long)time(NULL)), l->a->cfg->l2_ttl);
    if (strcmp(u.id, l->user_id) != 0)
        return 0; /* not the token's subject: authentication refuses it */
    l->profile = authn_profile_value(&u);
    (void)l2_write(l->a->l2, l->profile_key, l->profile_klen, l->profile, u.version,
                   l->a->cfg->l2_ttl * 1000, 0);
    (void)cache_put(l->a->l1, l->profile_key, l->profile_klen, l->profile, l->a->cfg->l1_ttl * 1000,
                    mark);
    return 0;
}

/* TTL in L1 of a session value: up to its expiry (gone: l1_ttl). */
static long authn_session_l1_ttl(const struct accounts *a, const struct cache_value *v)
{
    const char *sp = memchr(v->data, ' ', v->len);
    if (sp == NULL)
        return a->cfg->l1_ttl * 1000;
    return authn_ttl_ms((long)(strtoll(sp + 1, NULL, 10) - (long long)time(NULL)), a->cfg->l1_ttl);
}

static int authn_load_user_db(void *ctx, struct cache_value **out, long *ttl_ms)
{
    struct authn_load *l = ctx;
    const char *p[1] = {l->id};
    PGresult *res;
    authn_layer(l->r, ACC_LAYER_DB);
    enum db_result rc = accounts_db(l->a, l->r, STMT_USER_BY_ID, p, &res);
    int st = rc != DB_OK           ? (int)accounts_db_status(rc)
             : PQntuples(res) != 1 ? ACC_INVALID_TOKEN
                                   : 0;
    if (st == 0) {
        struct accounts_user u;
        accounts_user_from(l->r, res, &u);
        *out = authn_profile_value(&u);
        *ttl_ms = l->a->cfg->l2_ttl * 1000;
    }
    PQclear(res);
    return st;
}

/* L1 miss: L2, then PostgreSQL through l->db. */
static int authn_load(void *ctx, const void *key, size_t klen, struct cache_value **out,
                      long *ttl_ms)
{
    struct authn_load *l = ctx;
    enum l2_source src;
    int rc = l2_fetch(l->a->l2, key, klen, l->db, ctx, out, ttl_ms, &src);
    if (rc == 0) {
        authn_layer(l->r, src == L2_SRC_L2 ? ACC_LAYER_L2 : ACC_LAYER_DB);
        *ttl_ms = l->session ? authn_session_l1_ttl(l->a, *out) : l->a->cfg->l1_ttl * 1000;
    }
    return rc;
}

/* ---- who is calling ------------------------------------------------- */

/* A failed cache_fetch(): the loader's status, or the deadline passed while
 * waiting for another request's load. */
static enum accounts_status authn_fetch_status(int rc)
{
    return rc == CACHE_DEADLINE ? ACC_UNAVAILABLE : (enum accounts_status)rc;
}

/* Verify the token's signature and claims, remembering the verdict in L1
 * (keyed by a hash of the whole token) until exp, so a hot token costs no
 * Ed25519 verification. 0 with sub/sid in out, or -1. */
static int authn_verify_token(struct accounts *a, const char *token, size_t len,
                              struct accounts_principal *out)
{
    unsigned char key[2 + 32] = {'t', ':'};
    struct cache_value *v;
    crypto_generichash(key + 2, 32, (const unsigned char *)token, len, NULL, 0);
    if (cache_get(a->l1, key, sizeof(key), &v)) {
        /* "<sub> <sid>" */
        memcpy(out->user_id, v->data, UUID_STR_LEN);
        out->user_id[UUID_STR_LEN] = '\0';
        memcpy(out->session_id, v->data + UUID_STR_LEN + 1, UUID_STR_LEN);
        out->session_id[UUID_STR_LEN] = '\0';
        cache_value_release(v);
        return 0;
    }
    struct cache_mark mark = cache_mark(a->l1, key, sizeof(key));
    struct jwt_claims c;
    char why[64];
    uint8_t tmp[16];
    int64_t now = (int64_t)time(NULL);
    pthread_rwlock_rdlock(&a->keys_lock);
    int ok = jwt_verify(a->keys, a->cfg->jwt_issuer, a->cfg->jwt_audience, token, len, now, &c, why,
                        sizeof(why));
    pthread_rwlock_unlock(&a->keys_lock);
    if (ok != 0) {
        log_msg(LOG_DEBUG, "bearer token rejected: %s", why);
        return -1;
    }
    if (uuid_parse(c.sub, strlen(c.sub), tmp) != 0 || uuid_parse(c.sid, strlen(c.sid), tmp) != 0)
        return -1;
    snprintf(out->user_id, sizeof(out->user_id), "%.36s", c.sub);
    snprintf(out->session_id, sizeof(out->session_id), "%.36s", c.sid);
    char val[2 * UUID_STR_LEN + 2];
    snprintf(val, sizeof(val), "%s %s", out->user_id, out->session_id);
    v = cache_value_new(val, 2 * UUID_STR_LEN + 1, NULL, 0);
    (void)cache_put(a->l1, key, sizeof(key), v, (long)(c.exp - now) * 1000, mark);
    cache_value_release(v);
    return 0;
}

enum accounts_status authn_authenticate(struct accounts *a, struct accounts_req *r,
                                        const char *token, size_t len,
                                        struct accounts_principal *out,
                                        struct cache_value **profile)
{
    struct authn_load l = {.a = a, .r = r};
    struct cache_value *sv = NULL;
    char key[48];
    size_t kl;
    int hit, rc;
    enum accounts_status st = ACC_INVALID_TOKEN;
    if (profile != NULL)
        *profile = NULL;
    if (authn_verify_token(a, token, len, out) != 0)
        return ACC_INVALID_TOKEN;
    authn_layer(r, ACC_LAYER_L1);

    kl = authn_key(key, sizeof(key), "s:", out->session_id);
    l.id = out->session_id;
    l.user_id = out->user_id;
    l.db = authn_load_session_db;
    l.session = 1;
    l.profile_klen = authn_key(l.profile_key, sizeof(l.profile_key), "u:", out->user_id);
    rc = cache_fetch(a->l1, key, kl, authn_load, &l, accounts_deadline(a, r), &sv, &hit);
    if (rc != 0) {
        st = authn_fetch_status(rc);
        goto out;
    }
    /* Live, and owned by the token's subject. */
    if (sv->len < UUID_STR_LEN || memcmp(sv->data, out->user_id, UUID_STR_LEN) != 0)
        goto out;
    st = ACC_OK;
    if (profile == NULL)
        goto out;
    if (l.profile != NULL) {
        /* The session load just read it in the same query. */
        *profile = l.profile;
        l.profile = NULL;
        goto out;
    }
    l.id = out->user_id;
    l.db = authn_load_user_db;
    l.session = 0;
    rc = cache_fetch(a->l1, l.profile_key, l.profile_klen, authn_load, &l, accounts_deadline(a, r),
                     profile, &hit);
    if (rc != 0)
        st = authn_fetch_status(rc);
out:
    cache_value_release(sv);
    cache_value_release(l.profile);
    return st;
}

/* ---- the public key set --------------------------------------------- */

static int authn_load_jwks(void *ctx, const void *key, size_t klen, struct cache_value **out,
                           long *ttl_ms)
{
    struct accounts *a = ctx;
    struct buf b = {0};
    (void)key;
    (void)klen;
    pthread_rwlock_rdlock(&a->keys_lock);
    keys_public_jwks(a->keys, &b);
    pthread_rwlock_unlock(&a->keys_lock);
    *out = cache_value_new(b.data, b.len, NULL, 0);
    *ttl_ms = a->cfg->l1_ttl * 1000;
    buf_free(&b);
    return 0;
}

struct cache_value *authn_jwks(struct accounts *a)
{
    struct cache_value *v = NULL;
    long ttl;
    /* The loader cannot fail and never blocks: a waiter that still times out
     * (a stalled machine) builds the set itself. */
    if (cache_fetch(a->l1, "jwks", 4, authn_load_jwks, a, clock_deadline_in(1000), &v, NULL) != 0 ||
        v == NULL)
        (void)authn_load_jwks(a, "jwks", 4, &v, &ttl);
    return v;
}
