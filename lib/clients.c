#include "clients.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "b64url.h"
#include "cache.h"
#include "json.h"
#include "l2.h"
#include "log.h"
#include "reqdb.h"
#include "uuid.h"
#include "listing.h"

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
/* Live keys of client c as a JSON array (PostgreSQL's spacing; compacted). */
#define CL_KEYS_JSON(c)                                                                            \
    "coalesce((SELECT json_agg(json_build_object('kid', k.kid, 'created_at', " TS(                 \
        "k.created_at") ") ORDER BY k.created_at, k.kid) FROM client_keys k WHERE k.client_id = "  \
                        "" c " AND k.revoked_at IS NULL), '[]')::text"

const struct db_stmt clients_statements[CLIENTS_STMT__COUNT] = {
    [CL_INSERT] =
        {"client_insert",
         "WITH c AS (INSERT INTO clients (id, user_id, name, scopes) VALUES ($1, $2, $3, "
         "$4) RETURNING id, created_at), k AS (INSERT INTO client_keys (client_id, kid, "
         "public_key, created_at) SELECT id, $5, $6::bytea, created_at FROM c) SELECT " TS(
             "created_at") " FROM c",
         6, 0},
    [CL_PAGE] = {"client_page",
                 "SELECT c.id, c.name, c.scopes, " TS("c.created_at") ", " CL_KEYS_JSON(
                     "c.id") ", (extract(epoch FROM c.created_at) * 1000000)::bigint FROM clients "
                             "c WHERE c.user_id = $1 AND ($2::bigint IS NULL OR (c.created_at, "
                             "c.id) < ('epoch'::timestamptz + $2::bigint * interval '1 "
                             "microsecond', $3::uuid)) ORDER BY c.created_at DESC, c.id DESC LIMIT "
                             "$4",
                 4, 1},
    [CL_DELETE] = {"client_delete",
                   "DELETE FROM clients WHERE id = $1 AND user_id = $2 RETURNING version", 2, 1},
    [CL_DELETE_ANY] =
        {"client_delete_any",
         "DELETE FROM clients WHERE id = $1 RETURNING version, coalesce(user_id::text, "
         "'')",
         1, 1},
    /* The version moves even when the key is refused: harmless. */
    [CL_KEY_ADD] = {"client_key_add",
                    "WITH c AS (UPDATE clients SET version = version + 1 WHERE id = $1 AND user_id "
                    "= $2 RETURNING id, version, (SELECT count(*) FROM client_keys WHERE client_id "
                    "= $1 AND revoked_at IS NULL) AS live), k AS (INSERT INTO client_keys "
                    "(client_id, kid, public_key) SELECT id, $3, $4::bytea FROM c WHERE live < "
                    "$5 ON CONFLICT DO NOTHING RETURNING created_at) SELECT c.version, c.live, "
                    "(SELECT " TS("created_at") " FROM k) FROM c",
                    5, 0},
    [CL_KEY_REVOKE] = {"client_key_revoke",
                       "WITH k AS (UPDATE client_keys SET revoked_at = now() WHERE client_id = $1 "
                       "AND kid = $3 AND revoked_at IS NULL AND client_id IN (SELECT id FROM "
                       "clients WHERE id = $1 AND user_id = $2) RETURNING client_id) UPDATE "
                       "clients SET version = version + 1, tokens_after = now() WHERE id IN "
                       "(SELECT client_id FROM k) RETURNING version",
                       3, 0},
    [CL_LOAD] = {"client_load",
                 "SELECT c.version, coalesce(floor(extract(epoch FROM c.tokens_after) * "
                 "1000)::bigint, 0), coalesce(c.user_id::text, ''), c.scopes, "
                 "coalesce(string_agg(k.kid || ' ' || encode(k.public_key, 'hex'), ' ' ORDER BY "
                 "k.created_at, k.kid), '') FROM clients c LEFT JOIN client_keys k ON k.client_id "
                 "= c.id AND k.revoked_at IS NULL LEFT JOIN users u ON u.id = c.user_id WHERE c.id "
                 "= $1 AND NOT coalesce(u.disabled, false) GROUP BY c.id",
                 1, 1},
    [CL_LIST_ALL] = {"client_list_all",
                     "SELECT c.id, c.name, c.scopes, " TS("c.created_at") ", " CL_KEYS_JSON(
                         "c.id") ", coalesce(c.user_id::text, '') FROM clients c ORDER BY "
                                 "c.created_at, c.id",
                     0, 1},
};

/* ---- pure helpers ------------------------------------------------------ */

static const char *clients_jwk_str(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

int clients_parse_jwk(json_object *jwk, unsigned char pk[32], char *why, size_t whylen)
{
    json_object *d;
    size_t n;
    if (jwk == NULL || !json_object_is_type(jwk, json_type_object)) {
        snprintf(why, whylen, "public_jwk must be a JWK object");
        return -1;
    }
    const char *kty = clients_jwk_str(jwk, "kty"), *crv = clients_jwk_str(jwk, "crv");
    const char *x = clients_jwk_str(jwk, "x");
    if (kty == NULL || crv == NULL || strcmp(kty, "OKP") != 0 || strcmp(crv, "Ed25519") != 0) {
        snprintf(why, whylen, "public_jwk must be an OKP key on Ed25519");
        return -1;
    }
    if (json_object_object_get_ex(jwk, "d", &d)) {
        snprintf(why, whylen, "public_jwk must not hold the private key (d)");
        return -1;
    }
    if (x == NULL || b64url_decode(pk, 32, x, strlen(x), &n) != 0 || n != 32) {
        snprintf(why, whylen, "public_jwk x must be 32 bytes in base64url");
        return -1;
    }
    return 0;
}

static int clients_scope_in(const char *s, size_t n, const char *list)
{
    const char *p = list;
    while (*p != '\0') {
        const char *e = strchr(p, ' ');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == n && memcmp(p, s, n) == 0)
            return 1;
        if (e == NULL)
            break;
        p = e + 1;
    }
    return 0;
}

int clients_scopes_subset(const char *want, const char *allowed)
{
    const char *p = want;
    if (*p == '\0')
        return 0;
    while (*p != '\0') {
        const char *e = strchr(p, ' ');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == 0 || !clients_scope_in(p, k, allowed))
            return 0;
        if (e == NULL)
            break;
        p = e + 1;
        if (*p == '\0')
            return 0;
    }
    return 1;
}

void clients_record_encode(const struct clients_record *rec, struct buf *out)
{
    char hex[65];
    buf_printf(out, "%lld %lld %s\n%s\n", (long long)rec->version, (long long)rec->tokens_after_ms,
               rec->owner[0] ? rec->owner : "-", rec->scopes);
    for (size_t i = 0; i < rec->nkeys; i++) {
        sodium_bin2hex(hex, sizeof(hex), rec->keys[i].pk, 32);
        buf_printf(out, "%s %s\n", rec->keys[i].kid, hex);
    }
}

int clients_record_decode(const char *s, size_t len, struct clients_record *out)
{
    char owner[40], kid[KEYS_KID_LEN + 2], hex[66];
    long long version, after;
    char *copy = strndup(s, len);
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (copy == NULL)
        return -1;
    char *nl = strchr(copy, '\n'), *end;
    if (nl == NULL)
        goto out;
    *nl = '\0';
    version = strtoll(copy, &end, 10);
    if (end == copy || *end != ' ')
        goto out;
    char *p2 = end + 1;
    after = strtoll(p2, &end, 10);
    if (end == p2 || *end != ' ' || strlen(end + 1) == 0 || strlen(end + 1) > 36 ||
        strchr(end + 1, ' ') != NULL)
        goto out;
    memcpy(owner, end + 1, strlen(end + 1) + 1);
    char *scopes = nl + 1, *nl2 = strchr(scopes, '\n');
    if (nl2 == NULL || (size_t)(nl2 - scopes) > CLIENTS_SCOPES_MAX)
        goto out;
    memcpy(out->scopes, scopes, (size_t)(nl2 - scopes));
    out->version = version;
    out->tokens_after_ms = after;
    if (strcmp(owner, "-") != 0)
        snprintf(out->owner, sizeof(out->owner), "%.36s", owner);
    for (char *p = nl2 + 1; *p != '\0';) {
        char *e = strchr(p, '\n');
        size_t bin;
        if (e == NULL || out->nkeys == CLIENTS_MAX_KEYS || sscanf(p, "%44s %65s", kid, hex) != 2 ||
            strlen(kid) != KEYS_KID_LEN ||
            sodium_hex2bin(out->keys[out->nkeys].pk, 32, hex, strlen(hex), NULL, &bin, NULL) != 0 ||
            bin != 32)
            goto out;
        memcpy(out->keys[out->nkeys].kid, kid, KEYS_KID_LEN + 1);
        out->nkeys++;
        p = e + 1;
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

/* ---- helpers ----------------------------------------------------------- */

static int clients_invalid(struct accounts_req *r, const char *code, const char *field,
                           const char *detail)
{
    r->code = code;
    r->field = field;
    r->detail = detail;
    return -1;
}

/* A canonical client id from a path segment; -1 when it is none. */
static int clients_id(const char *id, size_t len, char out[UUID_STR_LEN + 1])
{
    uint8_t u[16];
    if (uuid_parse(id, len, u) != 0)
        return -1;
    uuid_format(u, out);
    return 0;
}

static void clients_cache_key(const char *id, char *key, size_t *klen)
{
    *klen = (size_t)snprintf(key, 48, "c:%s", id);
}

/* The public key for a new key: parsed from jwk, or made here with its
 * private JWK appended to priv (the secret wiped). */
static int clients_new_key(struct accounts_req *r, json_object *jwk, unsigned char pk[32],
                           char kid[KEYS_KID_LEN + 1], struct buf *priv)
{
    if (jwk != NULL) {
        char why[96];
        if (clients_parse_jwk(jwk, pk, why, sizeof(why)) != 0)
            return clients_invalid(r, "validation_failed", "public_jwk",
                                   arena_strdup(r->arena, why));
        keys_thumbprint(pk, kid);
        return 0;
    }
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
    char x[64], d[64];
    crypto_sign_keypair(pk, sk);
    keys_thumbprint(pk, kid);
    b64url_encode(x, sizeof(x), pk, 32);
    b64url_encode(d, sizeof(d), sk, 32); /* the seed */
    buf_printf(priv,
               "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"%s\",\"kid\":\"%s\"}", x,
               d, kid);
    sodium_memzero(sk, sizeof(sk));
    sodium_memzero(d, sizeof(d));
    return 0;
}

static void clients_hex_bytea(const unsigned char pk[32], char out[2 + 64 + 1])
{
    out[0] = '\\';
    out[1] = 'x';
    sodium_bin2hex(out + 2, 65, pk, 32);
}

/* ["a","b"] from "a b". */
static void clients_scopes_json(struct buf *b, const char *scopes)
{
    const char *p = scopes;
    buf_putc(b, '[');
    while (*p != '\0') {
        const char *e = strchr(p, ' ');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (p != scopes)
            buf_putc(b, ',');
        json_put_string(b, p, k);
        if (e == NULL)
            break;
        p = e + 1;
    }
    buf_putc(b, ']');
}

static void clients_detail(struct buf *d, const char *client_id, const char *kid)
{
    buf_puts(d, "{\"client_id\":");
    json_put_cstr(d, client_id);
    if (kid != NULL) {
        buf_puts(d, ",\"kid\":");
        json_put_cstr(d, kid);
    }
    buf_putc(d, '}');
}

/* ---- use cases --------------------------------------------------------- */

enum accounts_status clients_create(struct accounts *a, struct accounts_req *r, const char *owner,
                                    const char *name, size_t name_len, const char *scopes,
                                    json_object *public_jwk, struct buf *out)
{
    unsigned char pk[32];
    char kid[KEYS_KID_LEN + 1], id[UUID_STR_LEN + 1], pkhex[2 + 64 + 1];
    struct buf priv = {0}, d = {0};
    uint8_t u[16];
    enum accounts_status st = ACC_INVALID;
    PGresult *res = NULL;

    if (name_len == 0 || accounts_check_name(r, name, name_len) != 0 || strlen(name) != name_len) {
        if (r->code == NULL)
            clients_invalid(r, "validation_failed", "name", "name must be 1 to 256 bytes");
        goto out;
    }
    if (scopes == NULL)
        scopes = a->cfg->client_scopes;
    /* admin only from the command line (owner NULL). */
    char allowed[CLIENTS_SCOPES_MAX + 600];
    snprintf(allowed, sizeof(allowed), "%s%s", owner == NULL ? "admin " : "",
             a->cfg->client_scopes);
    if (strlen(scopes) > CLIENTS_SCOPES_MAX || !clients_scopes_subset(scopes, allowed)) {
        clients_invalid(r, "validation_failed", "scopes",
                        "scopes must be taken from the configured client_scopes");
        goto out;
    }
    if (clients_new_key(r, public_jwk, pk, kid, &priv) != 0)
        goto out;
    uuid_v7(u);
    uuid_format(u, id);
    clients_hex_bytea(pk, pkhex);
    const char *p[6] = {id, owner, name, scopes, kid, pkhex};
    enum db_result rc = reqdb_exec(a, r, REQDB_CL_INSERT, p, &res);
    if (rc != DB_OK || PQntuples(res) != 1) {
        st = rc != DB_OK ? reqdb_status(rc) : ACC_INTERNAL;
        goto out;
    }
    buf_puts(out, "{\"id\":");
    json_put_cstr(out, id);
    buf_puts(out, ",\"name\":");
    json_put_string(out, name, name_len);
    buf_puts(out, ",\"scopes\":");
    clients_scopes_json(out, scopes);
    buf_puts(out, ",\"created_at\":");
    json_put_cstr(out, PQgetvalue(res, 0, 0));
    buf_puts(out, ",\"keys\":[{\"kid\":");
    json_put_cstr(out, kid);
    buf_puts(out, ",\"created_at\":");
    json_put_cstr(out, PQgetvalue(res, 0, 0));
    buf_puts(out, "}]");
    if (priv.len > 0) {
        buf_puts(out, ",\"private_jwk\":");
        buf_append(out, priv.data, priv.len);
    }
    buf_putc(out, '}');
    clients_detail(&d, id, kid);
    reqdb_audit(a, r, AUDIT_CLIENT_CREATED, owner, d.data);
    st = ACC_OK;
out:
    PQclear(res);
    if (priv.data != NULL)
        sodium_memzero(priv.data, priv.len);
    buf_free(&priv);
    buf_free(&d);
    return st;
}

enum accounts_status clients_list(struct accounts *a, struct accounts_req *r, const char *owner,
                                  const char *cursor, long limit, struct buf *out)
{
    unsigned char ckey[LISTING_CURSOR_KEY_LEN];
    char micros_s[32], id[37], lim[24];
    long long micros = 0;
    const char *params[4] = {owner, NULL, NULL, lim};
    PGresult *res = NULL;
    enum accounts_status st = ACC_OK;

    listing_cursor_key(a, ckey);
    if (cursor != NULL) {
        if (listing_cursor_decode(ckey, cursor, &micros, id) != 0) {
            st = ACC_INVALID;
            goto out;
        }
        snprintf(micros_s, sizeof(micros_s), "%lld", micros);
        params[1] = micros_s;
        params[2] = id;
    }
    snprintf(lim, sizeof(lim), "%ld", limit + 1);
    enum db_result rc = reqdb_exec(a, r, REQDB_CL_PAGE, params, &res);
    if (rc != DB_OK) {
        st = reqdb_status(rc);
        goto out;
    }
    int rows = PQntuples(res), shown = rows > limit ? (int)limit : rows;
    buf_puts(out, "{\"items\":[");
    for (int i = 0; i < shown; i++) {
        buf_puts(out, i ? ",{\"id\":" : "{\"id\":");
        json_put_cstr(out, PQgetvalue(res, i, 0));
        buf_puts(out, ",\"name\":");
        json_put_cstr(out, PQgetvalue(res, i, 1));
        buf_puts(out, ",\"scopes\":");
        clients_scopes_json(out, PQgetvalue(res, i, 2));
        buf_puts(out, ",\"created_at\":");
        json_put_cstr(out, PQgetvalue(res, i, 3));
        buf_puts(out, ",\"keys\":");
        json_put_compact(out, PQgetvalue(res, i, 4), (size_t)PQgetlength(res, i, 4));
        buf_putc(out, '}');
    }
    listing_page_end(out, ckey, res, rows > limit ? shown : 0, 5);
out:
    PQclear(res);
    sodium_memzero(ckey, sizeof(ckey));
    return st;
}

/* Every worker drops client id's record: a tombstone above any version. */
static void clients_gone(struct accounts *a, const char *id, int64_t version)
{
    char key[48];
    size_t kl;
    clients_cache_key(id, key, &kl);
    reqdb_publish(a, key, kl, NULL, version);
}

enum accounts_status clients_delete(struct accounts *a, struct accounts_req *r, const char *owner,
                                    const char *id, size_t id_len)
{
    char cid[UUID_STR_LEN + 1];
    PGresult *res = NULL;
    struct buf d = {0};
    enum accounts_status st = ACC_NOT_FOUND;
    if (clients_id(id, id_len, cid) != 0)
        return ACC_NOT_FOUND;
    const char *p[2] = {cid, owner};
    enum db_result rc =
        reqdb_exec(a, r, owner != NULL ? REQDB_CL_DELETE : REQDB_CL_DELETE_ANY, p, &res);
    if (rc != DB_OK) {
        st = reqdb_status(rc);
        goto out;
    }
    if (PQntuples(res) != 1)
        goto out;
    /* Deleted rows never come back: the tombstone outranks every version. */
    clients_gone(a, cid, INT64_C(1) << 40);
    clients_detail(&d, cid, NULL);
    const char *who = owner != NULL ? owner : PQgetvalue(res, 0, 1);
    reqdb_audit(a, r, AUDIT_CLIENT_DELETED, who[0] ? who : NULL, d.data);
    st = ACC_OK;
out:
    PQclear(res);
    buf_free(&d);
    return st;
}

enum accounts_status clients_add_key(struct accounts *a, struct accounts_req *r, const char *owner,
                                     const char *id, size_t id_len, json_object *public_jwk,
                                     struct buf *out)
{
    char cid[UUID_STR_LEN + 1], kid[KEYS_KID_LEN + 1], pkhex[2 + 64 + 1], max[8];
    unsigned char pk[32];
    struct buf priv = {0}, d = {0};
    PGresult *res = NULL;
    enum accounts_status st = ACC_NOT_FOUND;
    if (clients_id(id, id_len, cid) != 0)
        return ACC_NOT_FOUND;
    if (clients_new_key(r, public_jwk, pk, kid, &priv) != 0) {
        st = ACC_INVALID;
        goto out;
    }
    clients_hex_bytea(pk, pkhex);
    snprintf(max, sizeof(max), "%d", CLIENTS_MAX_KEYS);
    const char *p[5] = {cid, owner, kid, pkhex, max};
    enum db_result rc = reqdb_exec(a, r, REQDB_CL_KEY_ADD, p, &res);
    if (rc != DB_OK) {
        st = reqdb_status(rc);
        goto out;
    }
    if (PQntuples(res) != 1)
        goto out;
    if (PQgetisnull(res, 0, 2)) {
        st = ACC_INVALID;
        clients_invalid(r, "validation_failed", "public_jwk",
                        strtol(PQgetvalue(res, 0, 1), NULL, 10) >= CLIENTS_MAX_KEYS
                            ? "the client has the most live keys allowed; revoke one first"
                            : "this key is already registered for the client");
        goto out;
    }
    clients_gone(a, cid, strtoll(PQgetvalue(res, 0, 0), NULL, 10));
    buf_puts(out, "{\"kid\":");
    json_put_cstr(out, kid);
    buf_puts(out, ",\"created_at\":");
    json_put_cstr(out, PQgetvalue(res, 0, 2));
    if (priv.len > 0) {
        buf_puts(out, ",\"private_jwk\":");
        buf_append(out, priv.data, priv.len);
    }
    buf_putc(out, '}');
    clients_detail(&d, cid, kid);
    reqdb_audit(a, r, AUDIT_CLIENT_KEY_ADDED, owner, d.data);
    st = ACC_OK;
out:
    PQclear(res);
    if (priv.data != NULL)
        sodium_memzero(priv.data, priv.len);
    buf_free(&priv);
    buf_free(&d);
    return st;
}

enum accounts_status clients_revoke_key(struct accounts *a, struct accounts_req *r,
                                        const char *owner, const char *id, size_t id_len,
                                        const char *kid, size_t kid_len)
{
    char cid[UUID_STR_LEN + 1], k[KEYS_KID_LEN + 1];
    PGresult *res = NULL;
    struct buf d = {0};
    enum accounts_status st = ACC_NOT_FOUND;
    if (clients_id(id, id_len, cid) != 0 || kid_len != KEYS_KID_LEN)
        return ACC_NOT_FOUND;
    memcpy(k, kid, KEYS_KID_LEN);
    k[KEYS_KID_LEN] = '\0';
    const char *p[3] = {cid, owner, k};
    enum db_result rc = reqdb_exec(a, r, REQDB_CL_KEY_REVOKE, p, &res);
    if (rc != DB_OK) {
        st = reqdb_status(rc);
        goto out;
    }
    if (PQntuples(res) != 1)
        goto out;
    clients_gone(a, cid, strtoll(PQgetvalue(res, 0, 0), NULL, 10));
    clients_detail(&d, cid, k);
    reqdb_audit(a, r, AUDIT_CLIENT_KEY_REVOKED, owner, d.data);
    st = ACC_OK;
out:
    PQclear(res);
    buf_free(&d);
    return st;
}

enum accounts_status clients_list_all(struct accounts *a, struct accounts_req *r, struct buf *out)
{
    PGresult *res = NULL;
    enum db_result rc = reqdb_exec(a, r, REQDB_CL_LIST_ALL, NULL, &res);
    if (rc != DB_OK) {
        PQclear(res);
        return reqdb_status(rc);
    }
    for (int i = 0; i < PQntuples(res); i++) {
        buf_puts(out, "{\"id\":");
        json_put_cstr(out, PQgetvalue(res, i, 0));
        buf_puts(out, ",\"name\":");
        json_put_cstr(out, PQgetvalue(res, i, 1));
        buf_puts(out, ",\"scopes\":");
        clients_scopes_json(out, PQgetvalue(res, i, 2));
        buf_puts(out, ",\"created_at\":");
        json_put_cstr(out, PQgetvalue(res, i, 3));
        buf_puts(out, ",\"keys\":");
        json_put_compact(out, PQgetvalue(res, i, 4), (size_t)PQgetlength(res, i, 4));
        buf_puts(out, ",\"owner\":");
        if (PQgetvalue(res, i, 5)[0])
            json_put_cstr(out, PQgetvalue(res, i, 5));
        else
            buf_puts(out, "null");
        buf_puts(out, "}\n");
    }
    PQclear(res);
    return ACC_OK;
}

/* ---- the cached record ------------------------------------------------- */

#define CLIENTS_GONE "-"

struct clients_load {
    struct accounts *a;
    struct accounts_req *r;
    const char *id;
};

static int clients_load_db(void *ctx, struct cache_value **out, long *ttl_ms)
{
    struct clients_load *l = ctx;
    const char *p[1] = {l->id};
    PGresult *res;
    enum db_result rc = reqdb_exec(l->a, l->r, REQDB_CL_LOAD, p, &res);
    if (rc != DB_OK) {
        PQclear(res);
        return (int)reqdb_status(rc);
    }
    *ttl_ms = l->a->cfg->l2_ttl * 1000;
    if (PQntuples(res) != 1) {
        PQclear(res);
        *out = cache_value_new(CLIENTS_GONE, 1, NULL, 0);
        return 0;
    }
    struct clients_record rec = {0};
    struct buf b = {0};
    rec.version = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    rec.tokens_after_ms = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    snprintf(rec.owner, sizeof(rec.owner), "%s", PQgetvalue(res, 0, 2));
    snprintf(rec.scopes, sizeof(rec.scopes), "%s", PQgetvalue(res, 0, 3));
    /* "kid hex kid hex ..." */
    const char *s = PQgetvalue(res, 0, 4);
    while (*s != '\0' && rec.nkeys < CLIENTS_MAX_KEYS) {
        char kid[KEYS_KID_LEN + 2], hex[66];
        size_t bin;
        int used = 0;
        if (sscanf(s, "%44s %65s%n", kid, hex, &used) != 2 || strlen(kid) != KEYS_KID_LEN ||
            sodium_hex2bin(rec.keys[rec.nkeys].pk, 32, hex, strlen(hex), NULL, &bin, NULL) != 0)
            break;
        memcpy(rec.keys[rec.nkeys].kid, kid, KEYS_KID_LEN + 1);
        rec.nkeys++;
        s += used;
        while (*s == ' ')
            s++;
    }
    PQclear(res);
    clients_record_encode(&rec, &b);
    *out = cache_value_new(b.data, b.len, NULL, rec.version);
    buf_free(&b);
    return 0;
}

static int clients_load(void *ctx, const void *key, size_t klen, struct cache_value **out,
                        long *ttl_ms)
{
    struct clients_load *l = ctx;
    enum l2_source src;
    int rc = l2_fetch(l->a->l2, key, klen, clients_load_db, ctx, out, ttl_ms, &src);
    if (rc == 0)
        *ttl_ms = l->a->cfg->l1_ttl * 1000;
    return rc;
}

enum accounts_status clients_lookup(struct accounts *a, struct accounts_req *r, const char *id,
                                    struct clients_record *out)
{
    char cid[UUID_STR_LEN + 1], key[48];
    size_t kl;
    struct cache_value *v = NULL;
    struct clients_load l = {.a = a, .r = r, .id = cid};
    memset(out, 0, sizeof(*out));
    if (clients_id(id, strlen(id), cid) != 0)
        return ACC_NOT_FOUND;
    clients_cache_key(cid, key, &kl);
    int rc = cache_fetch(a->l1, key, kl, clients_load, &l, accounts_deadline(a, r), &v, NULL);
    if (rc != 0)
        return rc == CACHE_DEADLINE ? ACC_UNAVAILABLE : (enum accounts_status)rc;
    enum accounts_status st = ACC_NOT_FOUND;
    if (v->len > 1 && clients_record_decode(v->data, v->len, out) == 0) {
        memcpy(out->id, cid, sizeof(out->id));
        st = ACC_OK;
    }
    cache_value_release(v);
    return st;
}
