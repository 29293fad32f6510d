#include "assertion.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <sodium.h>

#include "b64url.h"
#include "json.h"
#include "log.h"

/* ---- parsing ----------------------------------------------------------- */

static json_object *assertion_segment(const char *s, size_t n)
{
    unsigned char tmp[ASSERTION_MAX_LEN];
    size_t len;
    json_object *o = NULL;
    char err[64];
    if (b64url_decode(tmp, sizeof(tmp), s, n, &len) != 0)
        return NULL;
    if (json_parse_object((const char *)tmp, len, &o, err, sizeof(err)) != JSON_PARSE_OK)
        return NULL;
    return o;
}

/* A string member copied into dst (cap bytes + NUL): 1 copied, 0 absent,
 * -1 mistyped, empty or too long. */
static int assertion_str(json_object *o, const char *name, char *dst, size_t cap)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return -1;
    size_t n = (size_t)json_object_get_string_len(v);
    if (n == 0 || n > cap || memchr(json_object_get_string(v), '\0', n) != NULL)
        return -1;
    memcpy(dst, json_object_get_string(v), n + 1);
    return 1;
}

/* A NumericDate member (an integer; a float is truncated): 1, 0, -1. */
static int assertion_time(json_object *o, const char *name, int64_t *out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v))
        return 0;
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v);
        return 1;
    }
    if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        if (d > 0 && d < 1e15) {
            *out = (int64_t)d;
            return 1;
        }
    }
    return -1;
}

int assertion_parse(const char *token, size_t len, struct assertion *out, char *why, size_t whylen)
{
    json_object *hdr = NULL, *cl = NULL, *aud;
    char alg[16] = "";
    size_t siglen;
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (len == 0 || len > ASSERTION_MAX_LEN) {
        snprintf(why, whylen, "assertion length %zu outside 1..%d", len, ASSERTION_MAX_LEN);
        return -1;
    }
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token))) {
        snprintf(why, whylen, "the assertion is not a compact JWS");
        return -1;
    }
    if ((hdr = assertion_segment(token, (size_t)(d1 - token))) == NULL) {
        snprintf(why, whylen, "the assertion header is not JSON");
        goto out;
    }
    if (assertion_str(hdr, "alg", alg, sizeof(alg) - 1) != 1 ||
        (strcmp(alg, "EdDSA") != 0 && strcmp(alg, "Ed25519") != 0)) {
        snprintf(why, whylen, "the assertion alg must be EdDSA or Ed25519");
        goto out;
    }
    if (assertion_str(hdr, "kid", out->kid, KEYS_KID_LEN) < 0) {
        snprintf(why, whylen, "the assertion kid is not a key id");
        goto out;
    }
    if (b64url_decode(out->sig, sizeof(out->sig), d2 + 1, len - (size_t)(d2 + 1 - token),
                      &siglen) != 0 ||
        siglen != sizeof(out->sig)) {
        snprintf(why, whylen, "the assertion signature is malformed");
        goto out;
    }
    if ((cl = assertion_segment(d1 + 1, (size_t)(d2 - d1 - 1))) == NULL) {
        snprintf(why, whylen, "the assertion claims are not JSON");
        goto out;
    }
    if (assertion_str(cl, "iss", out->iss, ASSERTION_FIELD_MAX) != 1 ||
        assertion_str(cl, "sub", out->sub, ASSERTION_FIELD_MAX) != 1 ||
        assertion_str(cl, "jti", out->jti, ASSERTION_FIELD_MAX) != 1) {
        snprintf(why, whylen, "the assertion needs iss, sub and jti strings");
        goto out;
    }
    if (assertion_time(cl, "exp", &out->exp) != 1 || assertion_time(cl, "nbf", &out->nbf) < 0) {
        snprintf(why, whylen, "the assertion needs a numeric exp");
        goto out;
    }
    if (!json_object_object_get_ex(cl, "aud", &aud)) {
        snprintf(why, whylen, "the assertion needs aud");
        goto out;
    }
    if (json_object_is_type(aud, json_type_string)) {
        if (assertion_str(cl, "aud", out->aud[0], ASSERTION_AUD_MAX) != 1) {
            snprintf(why, whylen, "the assertion aud is too long");
            goto out;
        }
        out->naud = 1;
    } else if (json_object_is_type(aud, json_type_array) &&
               json_object_array_length(aud) <= ASSERTION_MAX_AUD) {
        for (size_t i = 0; i < json_object_array_length(aud); i++) {
            json_object *e = json_object_array_get_idx(aud, i);
            size_t n = json_object_is_type(e, json_type_string)
                           ? (size_t)json_object_get_string_len(e)
                           : 0;
            if (n == 0 || n > ASSERTION_AUD_MAX) {
                snprintf(why, whylen, "the assertion aud holds a bad entry");
                goto out;
            }
            memcpy(out->aud[out->naud++], json_object_get_string(e), n + 1);
        }
    } else {
        snprintf(why, whylen, "the assertion aud must be a string or a short array");
        goto out;
    }
    out->signing_len = (size_t)(d2 - token);
    rc = 0;
out:
    json_object_put(hdr);
    json_object_put(cl);
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- checks ------------------------------------------------------------ */

int assertion_check(const struct assertion *as, const char *token,
                    const struct clients_record *client, const char *const *auds, size_t naud,
                    int64_t now, char *why, size_t whylen)
{
    int aud_ok = 0;
    if (strcmp(as->iss, as->sub) != 0 || strcmp(as->sub, client->id) != 0) {
        snprintf(why, whylen, "iss and sub must both be the client id");
        return -1;
    }
    for (size_t i = 0; i < as->naud && !aud_ok; i++)
        for (size_t j = 0; j < naud; j++)
            if (strcmp(as->aud[i], auds[j]) == 0)
                aud_ok = 1;
    if (!aud_ok) {
        snprintf(why, whylen, "aud must name this authorization server");
        return -1;
    }
    if (now > as->exp + ASSERTION_LEEWAY_S) {
        snprintf(why, whylen, "the assertion has expired");
        return -1;
    }
    if (as->exp > now + ASSERTION_MAX_LIFETIME_S) {
        snprintf(why, whylen, "the assertion's exp is more than %d s ahead",
                 ASSERTION_MAX_LIFETIME_S);
        return -1;
    }
    if (as->nbf > now + ASSERTION_LEEWAY_S) {
        snprintf(why, whylen, "the assertion is not valid yet");
        return -1;
    }
    int found = 0;
    for (size_t i = 0; i < client->nkeys; i++) {
        if (as->kid[0] != '\0' && strcmp(as->kid, client->keys[i].kid) != 0)
            continue;
        found = 1;
        if (crypto_sign_verify_detached(as->sig, (const unsigned char *)token, as->signing_len,
                                        client->keys[i].pk) == 0)
            return 0;
    }
    snprintf(why, whylen,
             found ? "the assertion signature does not verify"
                   : "the assertion kid is not a live key of the client");
    return -1;
}

/* ---- jti guard --------------------------------------------------------- */

#define JTI_WAYS 8 /* entries per bucket: a bucket of live entries refuses */

struct assertion_jti_entry {
    unsigned char h[16];
    int64_t until_ms; /* 0: free */
};

struct assertion_jti_table {
    pthread_mutex_t mu; /* process-shared and robust: a worker may die holding it */
    size_t nbuckets;
    struct assertion_jti_entry e[];
};

struct assertion_jti {
    struct kv_pool *kv;
    char prefix[64];
    struct assertion_jti_table *t;
    int own; /* t is ours to free */
};

static size_t assertion_jti_buckets(size_t entries)
{
    size_t n = 1;
    while (n * JTI_WAYS < entries)
        n <<= 1;
    return n;
}

size_t assertion_jti_table_size(size_t entries)
{
    return sizeof(struct assertion_jti_table) +
           assertion_jti_buckets(entries) * JTI_WAYS * sizeof(struct assertion_jti_entry);
}

struct assertion_jti_table *assertion_jti_table_init(void *mem, size_t entries)
{
    struct assertion_jti_table *t = mem;
    pthread_mutexattr_t at;
    if (t == NULL)
        return NULL;
    memset(t, 0, assertion_jti_table_size(entries));
    t->nbuckets = assertion_jti_buckets(entries);
    pthread_mutexattr_init(&at);
    pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&t->mu, &at);
    pthread_mutexattr_destroy(&at);
    return t;
}

struct assertion_jti *assertion_jti_create(struct kv_pool *kv, const char *prefix,
                                           struct assertion_jti_table *shared, size_t local_max)
{
    struct assertion_jti *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->t = shared;
    if (shared == NULL) {
        size_t entries = local_max ? local_max : 65536;
        g->t = assertion_jti_table_init(malloc(assertion_jti_table_size(entries)), entries);
        g->own = 1;
        if (g->t == NULL) {
            free(g);
            return NULL;
        }
    }
    g->kv = kv;
    snprintf(g->prefix, sizeof(g->prefix), "%s", prefix);
    return g;
}

void assertion_jti_destroy(struct assertion_jti *g)
{
    if (g == NULL)
        return;
    if (g->own) {
        pthread_mutex_destroy(&g->t->mu);
        free(g->t);
    }
    free(g);
}

/* This host's table: 1 seen (live), 0 recorded now, -1 its bucket is full
 * of live entries. */
static int assertion_jti_local(struct assertion_jti_table *t, const unsigned char h[16],
                               int64_t until, int64_t now_ms)
{
    size_t b;
    struct assertion_jti_entry *free_slot = NULL;
    int rc = -1;
    memcpy(&b, h, sizeof(b));
    struct assertion_jti_entry *e = t->e + (b & (t->nbuckets - 1)) * JTI_WAYS;
    if (pthread_mutex_lock(&t->mu) == EOWNERDEAD)
        pthread_mutex_consistent(&t->mu); /* entries are independent: nothing to repair */
    for (int i = 0; i < JTI_WAYS; i++) {
        int live = e[i].until_ms > now_ms;
        if (live && memcmp(e[i].h, h, 16) == 0) {
            rc = 1;
            goto out;
        }
        if (!live && free_slot == NULL)
            free_slot = &e[i];
    }
    if (free_slot != NULL) {
        memcpy(free_slot->h, h, 16);
        free_slot->until_ms = until;
        rc = 0;
    }
out:
    pthread_mutex_unlock(&t->mu);
    return rc;
}

enum assertion_jti_result assertion_jti_once(struct assertion_jti *g, const char *client_id,
                                             const char *jti, int64_t exp, int64_t now_ms)
{
    unsigned char h[16];
    char hex[33];
    crypto_generichash_state st;
    int64_t until = (exp + ASSERTION_LEEWAY_S) * 1000;
    if (until <= now_ms)
        until = now_ms + 1000;
    /* client id (fixed 36 chars) then jti: no ambiguity. */
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    crypto_generichash_update(&st, (const unsigned char *)client_id, strlen(client_id));
    crypto_generichash_update(&st, (const unsigned char *)"\n", 1);
    crypto_generichash_update(&st, (const unsigned char *)jti, strlen(jti));
    crypto_generichash_final(&st, h, sizeof(h));
    int local = assertion_jti_local(g->t, h, until, now_ms);
    if (local == 1)
        return ASSERTION_JTI_REPLAY;
    struct kv_conn *c = g->kv != NULL ? kv_acquire(g->kv) : NULL;
    if (c == NULL) /* no Redis: this host's table decides, refusing when full */
        return local == 0 ? ASSERTION_JTI_FIRST : ASSERTION_JTI_FULL;
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    redisReply *rep =
        kv_command(c, "SET %s%s 1 NX PX %lld", g->prefix, hex, (long long)(until - now_ms));
    kv_release(g->kv, c);
    enum assertion_jti_result res = ASSERTION_JTI_FIRST;
    if (rep != NULL && rep->type == REDIS_REPLY_NIL)
        res = ASSERTION_JTI_REPLAY;
    else if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
        log_msg(LOG_WARN, "jti guard: Redis failed; replays are refused on this host only");
    if (rep != NULL)
        freeReplyObject(rep);
    return res;
}
