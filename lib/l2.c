#include "l2.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "clock.h"
#include "log.h"

#define L2_KEY_MAX     (CACHE_KEY_MAX + 64)
#define L2_PENDING_MAX 4096
#define L2_POLL_MS     5

/* KEYS[1] the Redis key; ARGV rank, encoded value, ttl ms, channel ("" = no
 * publish), and the cache key (without the Redis prefix) to publish: that is
 * the name L1 knows. */
/* The key is published even when the write is not stored: a reader may
 * have stored the same version first (it read PostgreSQL after the commit),
 * and other hosts must still drop their older copies. */
static struct kv_script l2_set_script =
    KV_SCRIPT_INIT("local stored = 1\n"
                   "local cur = redis.call('GET', KEYS[1])\n"
                   "if cur then\n"
                   "  local r = tonumber(string.match(cur, '^(%d+)|'))\n"
                   "  if r and r >= tonumber(ARGV[1]) then stored = 0 end\n"
                   "end\n"
                   "if stored == 1 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end\n"
                   "if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end\n"
                   "return stored\n");

/* Per worker slot: writes queued while Redis was away (see l2.h). */
struct l2_shared {
    unsigned nslots;
    _Atomic long pending[];
};

/* A write that could not reach Redis, kept for l2_retry_pending(). */
struct l2_pending {
    struct l2_pending *next;
    char key[CACHE_KEY_MAX + 1];
    size_t klen;
    struct cache_value *v; /* NULL: tombstone */
    int64_t version;
    long ttl_ms;
    int publish;
};

struct l2 {
    struct kv_pool *kv;
    struct l2_shared *shared; /* may be NULL */
    unsigned slot;
    long ttl_ms, lock_ms, wait_ms;
    char *prefix;
    char *channel;
    pthread_mutex_t mu; /* pending list */
    struct l2_pending *pending;
    size_t npending;
    _Atomic uint64_t hits, misses, errors;
};

size_t l2_shared_size(unsigned nslots)
{
    return sizeof(struct l2_shared) + (size_t)nslots * sizeof(_Atomic long);
}

struct l2_shared *l2_shared_init(void *mem, unsigned nslots)
{
    struct l2_shared *s = mem;
    s->nslots = nslots;
    for (unsigned i = 0; i < nslots; i++)
        atomic_store(&s->pending[i], 0);
    return s;
}

void l2_shared_reclaim(struct l2_shared *s, unsigned slot)
{
    if (s != NULL && slot < s->nslots)
        atomic_store(&s->pending[slot], 0);
}

/* Count n more (or fewer) queued writes of this process machine-wide. */
static void l2_pending_add(struct l2 *l2, long n)
{
    if (l2->shared != NULL && l2->slot < l2->shared->nslots)
        atomic_fetch_add(&l2->shared->pending[l2->slot], n);
}

/* 1 while any process on this machine holds a queued write: L2 may still
 * hold what such a write replaces. */
static int l2_untrusted(struct l2 *l2)
{
    if (l2->shared == NULL) {
        pthread_mutex_lock(&l2->mu);
        int any = l2->npending > 0;
        pthread_mutex_unlock(&l2->mu);
        return any;
    }
    for (unsigned i = 0; i < l2->shared->nslots; i++)
        if (atomic_load_explicit(&l2->shared->pending[i], memory_order_acquire) > 0)
            return 1;
    return 0;
}

struct l2 *l2_create(const struct l2_options *o)
{
    struct l2 *l2 = xcalloc(1, sizeof(*l2));
    l2->kv = o->kv;
    l2->shared = o->shared;
    l2->slot = o->slot;
    l2->ttl_ms = o->ttl_ms;
    l2->lock_ms = o->lock_ms > 0 ? o->lock_ms : 2000;
    l2->wait_ms = o->wait_ms > 0 ? o->wait_ms : 100;
    l2->prefix = xstrdup(o->prefix ? o->prefix : "");
    l2->channel = xstrdup(o->channel ? o->channel : "");
    pthread_mutex_init(&l2->mu, NULL);
    return l2;
}

void l2_destroy(struct l2 *l2)
{
    if (l2 == NULL)
        return;
    while (l2->pending != NULL) {
        struct l2_pending *p = l2->pending;
        l2->pending = p->next;
        cache_value_release(p->v);
        free(p);
        l2_pending_add(l2, -1);
    }
    pthread_mutex_destroy(&l2->mu);
    free(l2->prefix);
    free(l2->channel);
    free(l2);
}

int l2_decode(const char *s, size_t len, struct cache_value **out)
{
    *out = NULL;
    const char *end = s + len;
    const char *bar = memchr(s, '|', len);
    if (bar == NULL || bar == s || bar - s > 19)
        return -1;
    uint64_t rank = 0;
    for (const char *p = s; p < bar; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        rank = rank * 10 + (uint64_t)(*p - '0');
    }
    const char *etag = bar + 1;
    const char *bar2 = memchr(etag, '|', (size_t)(end - etag));
    if (bar2 == NULL || bar2 - etag >= CACHE_ETAG_MAX)
        return -1;
    if ((rank & 1) == 0)
        return 0; /* tombstone */
    char et[CACHE_ETAG_MAX];
    memcpy(et, etag, (size_t)(bar2 - etag));
    et[bar2 - etag] = '\0';
    *out = cache_value_new(bar2 + 1, (size_t)(end - bar2 - 1), et, (int64_t)(rank >> 1));
    return 0;
}

/* prefix + key into out; its length or -1 when too long. */
static int l2_key(const struct l2 *l2, const char *lead, const char *key, size_t klen, char *out,
                  size_t outlen)
{
    size_t pl = strlen(l2->prefix), ll = strlen(lead);
    if (pl + ll + klen + 1 > outlen)
        return -1;
    memcpy(out, l2->prefix, pl);
    memcpy(out + pl, lead, ll);
    memcpy(out + pl + ll, key, klen);
    out[pl + ll + klen] = '\0';
    return (int)(pl + ll + klen);
}

/* Send one versioned write: 0 done (stored or older), -1 Redis away. */
static int l2_send(struct l2 *l2, const char *key, size_t klen, const struct cache_value *v,
                   int64_t version, long ttl_ms, int publish)
{
    char k[L2_KEY_MAX], rank[24], ttl[24];
    int kl = l2_key(l2, "", key, klen, k, sizeof(k));
    if (kl < 0 || l2->kv == NULL)
        return -1;
    struct kv_conn *c = kv_acquire(l2->kv);
    if (c == NULL)
        return -1;
    if (ttl_ms <= 0 || ttl_ms > l2->ttl_ms)
        ttl_ms = l2->ttl_ms;
    snprintf(rank, sizeof(rank), "%" PRId64, version * 2 + (v != NULL ? 1 : 0));
    snprintf(ttl, sizeof(ttl), "%ld", ttl_ms > 0 ? ttl_ms : 1);
    struct buf enc = {0};
    buf_printf(&enc, "%s|%s|", rank, v != NULL ? v->etag : "");
    if (v != NULL)
        buf_append(&enc, v->data, v->len);
    const char *argv[6] = {k, rank, enc.data, ttl, publish ? l2->channel : "", key};
    size_t lens[6] = {(size_t)kl, strlen(rank), enc.len, strlen(ttl), strlen(argv[4]), klen};
    redisReply *r = kv_eval(c, &l2_set_script, 1, 6, argv, lens);
    int rc = r != NULL && r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        log_msg(LOG_WARN, "l2 write refused: %s", r->str);
    if (r != NULL)
        freeReplyObject(r);
    kv_release(l2->kv, c);
    buf_free(&enc);
    return rc;
}

int l2_write(struct l2 *l2, const char *key, size_t klen, struct cache_value *v, int64_t version,
             long ttl_ms, int publish)
{
    if (l2->kv == NULL)
        return 0;
    if (l2_send(l2, key, klen, v, version, ttl_ms, publish) == 0)
        return 0;
    atomic_fetch_add(&l2->errors, 1);
    if (klen > CACHE_KEY_MAX)
        return -1;
    struct l2_pending *p = xcalloc(1, sizeof(*p));
    memcpy(p->key, key, klen);
    p->klen = klen;
    if (v != NULL) {
        cache_value_hold(v);
        p->v = v;
    }
    p->version = version;
    p->ttl_ms = ttl_ms;
    p->publish = publish;
    pthread_mutex_lock(&l2->mu);
    if (l2->npending >= L2_PENDING_MAX) {
        pthread_mutex_unlock(&l2->mu);
        log_msg(LOG_ERROR, "l2: %d invalidations pending while Redis is away; dropping one",
                L2_PENDING_MAX);
        cache_value_release(p->v);
        free(p);
        return -1;
    }
    p->next = l2->pending;
    l2->pending = p;
    l2->npending++;
    /* Counted before the write's caller answers: from then on no reader on
     * this machine trusts L2 until the write is delivered. */
    l2_pending_add(l2, 1);
    pthread_mutex_unlock(&l2->mu);
    return -1;
}

int l2_retry_pending(struct l2 *l2)
{
    pthread_mutex_lock(&l2->mu);
    struct l2_pending *list = l2->pending;
    l2->pending = NULL;
    l2->npending = 0;
    pthread_mutex_unlock(&l2->mu);
    int left = 0;
    while (list != NULL) {
        struct l2_pending *p = list;
        list = p->next;
        if (l2_send(l2, p->key, p->klen, p->v, p->version, p->ttl_ms, p->publish) != 0) {
            pthread_mutex_lock(&l2->mu);
            p->next = l2->pending;
            l2->pending = p;
            l2->npending++;
            pthread_mutex_unlock(&l2->mu);
            left = 1;
            continue;
        }
        cache_value_release(p->v);
        free(p);
        l2_pending_add(l2, -1);
    }
    return left ? -1 : 0;
}

enum l2_got { L2_GOT_VALUE, L2_GOT_NOTHING, L2_GOT_DOWN };

static enum l2_got l2_get(struct kv_conn *c, const char *k, size_t kl, struct cache_value **out)
{
    *out = NULL;
    redisReply *r = kv_command(c, "GET %b", k, kl);
    if (r == NULL)
        return L2_GOT_DOWN;
    enum l2_got got = L2_GOT_NOTHING;
    if (r->type == REDIS_REPLY_STRING) {
        if (l2_decode(r->str, r->len, out) != 0)
            log_msg(LOG_WARN, "l2: malformed value ignored");
        if (*out != NULL)
            got = L2_GOT_VALUE;
    } else if (r->type == REDIS_REPLY_ERROR) {
        got = L2_GOT_DOWN;
    }
    freeReplyObject(r);
    return got;
}

int l2_fetch(struct l2 *l2, const char *key, size_t klen, l2_loader load, void *ctx,
             struct cache_value **out, long *ttl_ms, enum l2_source *src)
{
    char k[L2_KEY_MAX], lk[L2_KEY_MAX];
    int kl = l2_key(l2, "", key, klen, k, sizeof(k));
    int lkl = l2_key(l2, "lock:", key, klen, lk, sizeof(lk));
    struct kv_conn *c = NULL;
    redisReply *r;
    int locked = 0, rc;
    *out = NULL;
    *ttl_ms = -1;
    *src = L2_SRC_L2;
    if (l2->kv == NULL || kl < 0 || lkl < 0 || l2_untrusted(l2) || (c = kv_acquire(l2->kv)) == NULL)
        goto load;
    enum l2_got got = l2_get(c, k, (size_t)kl, out);
    if (got == L2_GOT_VALUE) {
        atomic_fetch_add(&l2->hits, 1);
        kv_release(l2->kv, c);
        return 0;
    }
    if (got == L2_GOT_DOWN)
        goto load;
    atomic_fetch_add(&l2->misses, 1);
    r = kv_command(c, "SET %b 1 NX PX %ld", lk, (size_t)lkl, l2->lock_ms);
    if (r == NULL)
        goto load;
    locked = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (!locked) {
        /* Another process is loading it: give it a moment to fill L2. */
        for (long waited = 0; waited < l2->wait_ms; waited += L2_POLL_MS) {
            clock_sleep_ms(L2_POLL_MS);
            got = l2_get(c, k, (size_t)kl, out);
            if (got == L2_GOT_VALUE) {
                kv_release(l2->kv, c);
                return 0;
            }
            if (got == L2_GOT_DOWN)
                break;
        }
    }
load:
    if (c != NULL) {
        kv_release(l2->kv, c);
        c = NULL;
    }
    *src = L2_SRC_LOADER;
    rc = load(ctx, out, ttl_ms);
    if (rc == 0 && *out != NULL && l2->kv != NULL && kl >= 0)
        (void)l2_send(l2, key, klen, *out, (*out)->version, *ttl_ms, 0);
    if (locked && (c = kv_acquire(l2->kv)) != NULL) {
        r = kv_command(c, "DEL %b", lk, (size_t)lkl);
        if (r != NULL)
            freeReplyObject(r);
        kv_release(l2->kv, c);
    }
    return rc;
}

void l2_stats(struct l2 *l2, struct l2_stats *out)
{
    out->hits = atomic_load(&l2->hits);
    out->misses = atomic_load(&l2->misses);
    out->errors = atomic_load(&l2->errors);
    pthread_mutex_lock(&l2->mu);
    out->pending = l2->npending;
    pthread_mutex_unlock(&l2->mu);
}
