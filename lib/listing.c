#include "listing.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "b64url.h"
#include "json.h"
#include "uuid.h"

/* The listings: their ?fields= names in bit order. Every field but the
 * computed "current" is a column of the page statement, in this order,
 * followed by the cursor's microseconds column. */
struct listing_spec {
    size_t stmt;
    const char *const *names;
    int nfields;
    int computed_current; /* field index of "current", or -1 */
    int raw_json;         /* field index whose column is JSON text, or -1 */
};

static const char *const listing_session_fields[] = {
    "id", "created_at", "last_used_at", "expires_at", "ip", "user_agent", "current"};
static const char *const listing_audit_fields[] = {"id", "type",       "created_at",
                                                   "ip", "user_agent", "detail"};

static const struct listing_spec listing_specs[] = {
    [LISTING_SESSIONS] = {STMT_SESSIONS_PAGE, listing_session_fields, 7, 6, -1},
    [LISTING_AUDIT] = {STMT_AUDIT_PAGE, listing_audit_fields, 6, -1, 5},
};

int listing_parse_fields(enum listing_kind list, const char *s, unsigned *out, const char **bad,
                         size_t *badlen)
{
    const struct listing_spec *l = &listing_specs[list];
    unsigned set = 0;
    const char *p = s;
    if (*s == '\0') {
        *out = (1u << l->nfields) - 1;
        return 0;
    }
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        size_t i;
        for (i = 0; i < (size_t)l->nfields; i++) {
            if (strlen(l->names[i]) == n && memcmp(l->names[i], p, n) == 0)
                break;
        }
        if (i == (size_t)l->nfields) {
            *bad = p;
            *badlen = n;
            return -1;
        }
        set |= 1u << i;
        if (end == NULL)
            break;
        p = end + 1;
        if (*p == '\0') { /* trailing comma */
            *bad = p;
            *badlen = 0;
            return -1;
        }
    }
    *out = set;
    return 0;
}

/* A cursor is base64url(payload || MAC): payload "v1:<micros>:<id>", MAC
 * the first 16 bytes of keyed BLAKE2b over it, so forged cursors fail. */
#define CURSOR_MAC_LEN 16

void listing_cursor_encode(const unsigned char key[LISTING_CURSOR_KEY_LEN], long long micros,
                           const char *id, char *out, size_t outlen)
{
    unsigned char raw[96 + CURSOR_MAC_LEN];
    int n = snprintf((char *)raw, 96, "v1:%lld:%s", micros, id);
    if (outlen > 0)
        out[0] = '\0';
    if (n < 0 || n >= 96)
        return; /* truncated: no id is that long; never encode past raw */
    crypto_generichash(raw + n, CURSOR_MAC_LEN, raw, (size_t)n, key, LISTING_CURSOR_KEY_LEN);
    b64url_encode(out, outlen, raw, (size_t)n + CURSOR_MAC_LEN);
}

int listing_cursor_decode(const unsigned char key[LISTING_CURSOR_KEY_LEN], const char *s,
                          long long *micros, char id[37])
{
    unsigned char raw[96 + CURSOR_MAC_LEN], mac[CURSOR_MAC_LEN];
    size_t n;
    uint8_t u[16];
    size_t len = strlen(s);
    if (len == 0 || len > 200 || b64url_decode(raw, sizeof(raw) - 1, s, len, &n) != 0 ||
        n <= CURSOR_MAC_LEN)
        return -1;
    n -= CURSOR_MAC_LEN;
    crypto_generichash(mac, sizeof(mac), raw, n, key, LISTING_CURSOR_KEY_LEN);
    if (crypto_verify_16(mac, raw + n) != 0)
        return -1;
    raw[n] = '\0';
    const char *t = (const char *)raw;
    if (strlen(t) != n || strncmp(t, "v1:", 3) != 0)
        return -1;
    t += 3;
    char *end;
    if (*t < '0' || *t > '9')
        return -1;
    long long v = strtoll(t, &end, 10);
    if (*end != ':' || v < 0 || end - t > 17)
        return -1;
    if (uuid_parse(end + 1, strlen(end + 1), u) != 0)
        return -1;
    *micros = v;
    uuid_format(u, id);
    return 0;
}

/* listing_page() with a copy of the cursor key, which the caller wipes. */
static enum accounts_status listing_page_keyed(struct accounts *a, struct accounts_req *r,
                                               const struct accounts_principal *p,
                                               enum listing_kind list, const char *cursor,
                                               long limit, unsigned fields, struct buf *out,
                                               const unsigned char *ckey)
{
    const struct listing_spec *l = &listing_specs[list];
    const int mcol = l->computed_current >= 0 ? l->nfields - 1 : l->nfields;
    char micros_s[32], id[37], lim[24];
    long long micros = 0;
    const char *params[4] = {p->user_id, NULL, NULL, lim};
    if (cursor != NULL) {
        if (listing_cursor_decode(ckey, cursor, &micros, id) != 0)
            return ACC_INVALID;
        snprintf(micros_s, sizeof(micros_s), "%lld", micros);
        params[1] = micros_s;
        params[2] = id;
    }
    /* One extra row tells whether there is a next page. */
    snprintf(lim, sizeof(lim), "%ld", limit + 1);
    PGresult *res;
    enum db_result rc = accounts_db(a, r, l->stmt, params, &res);
    if (rc != DB_OK) {
        PQclear(res);
        return accounts_db_status(rc);
    }
    int rows = PQntuples(res);
    int shown = rows > limit ? (int)limit : rows;
    buf_puts(out, "{\"items\":[");
    for (int i = 0; i < shown; i++) {
        int first = 1;
        buf_puts(out, i ? ",{" : "{");
        for (int f = 0; f < l->nfields; f++) {
            if (!(fields & (1u << f)))
                continue;
            buf_printf(out, "%s\"%s\":", first ? "" : ",", l->names[f]);
            first = 0;
            if (f == l->computed_current)
                buf_puts(out, strcmp(PQgetvalue(res, i, 0), p->session_id) == 0 ? "true" : "false");
            else if (f == l->raw_json) /* jsonb text: PostgreSQL puts spaces in */
                json_put_compact(out, PQgetvalue(res, i, f), (size_t)PQgetlength(res, i, f));
            else
                json_put_cstr(out, PQgetvalue(res, i, f));
        }
        buf_putc(out, '}');
    }
    listing_page_end(out, ckey, res, rows > limit ? shown : 0, mcol);
    PQclear(res);
    return ACC_OK;
}

enum accounts_status listing_page(struct accounts *a, struct accounts_req *r,
                                  const struct accounts_principal *p, enum listing_kind list,
                                  const char *cursor, long limit, unsigned fields, struct buf *out)
{
    unsigned char ckey[LISTING_CURSOR_KEY_LEN];
    listing_cursor_key(a, ckey);
    enum accounts_status st = listing_page_keyed(a, r, p, list, cursor, limit, fields, out, ckey);
    sodium_memzero(ckey, sizeof(ckey));
    return st;
}

void listing_cursor_key(struct accounts *a, unsigned char out[LISTING_CURSOR_KEY_LEN])
{
    pthread_rwlock_rdlock(&a->keys_lock);
    memcpy(out, a->cursor_key, LISTING_CURSOR_KEY_LEN);
    pthread_rwlock_unlock(&a->keys_lock);
}

void listing_page_end(struct buf *out, const unsigned char key[LISTING_CURSOR_KEY_LEN],
                      const PGresult *res, int last, int micros_col)
{
    buf_puts(out, "],\"next_cursor\":");
    if (last > 0) {
        char cur[160];
        listing_cursor_encode(key, strtoll(PQgetvalue(res, last - 1, micros_col), NULL, 10),
                              PQgetvalue(res, last - 1, 0), cur, sizeof(cur));
        json_put_cstr(out, cur);
    } else {
        buf_puts(out, "null");
    }
    buf_putc(out, '}');
}
