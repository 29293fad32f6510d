#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "alloc.h"
#include "clock.h"

#define CACHE_SHARDS 16 /* power of two */

/* Shared invalidation records: open addressing, a few probes; a new record
 * takes the oldest slot of its window (pub/sub delivers long before it
 * matters that an old record is gone). */
#define CACHE_TOMBS       8192 /* power of two */
#define CACHE_TOMB_PROBES 8

struct cache_tomb {
    _Atomic uint64_t hash;
    _Atomic int64_t at_ms;
};

struct cache_shared {
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    struct cache_tomb tombs[CACHE_TOMBS];
};

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "shared records need lock-free 64-bit atomics");

struct cache_entry {
    struct cache_entry *hnext;       /* bucket chain */
    struct cache_entry *prev, *next; /* LRU list, most recent after the sentinel */
    uint64_t hash;
    int64_t born_ms, expires_ms;
    struct cache_value *val;
    size_t bytes;
    size_t klen;
    unsigned char key[];
};

/* One load in progress; waiters sleep on cv under the shard mutex. */
struct cache_flight {
    struct cache_flight *next;
    uint64_t hash;
    size_t klen;
    unsigned char key[CACHE_KEY_MAX];
    pthread_cond_t cv;
    int64_t started_ms;
    int detached; /* a drop came after it started: new fetches must not join */
    int done;
    int rc;
    int waiters;
    struct cache_value *val;
};

struct cache_shard {
    pthread_mutex_t mu;
    struct cache_entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count, bytes;
    struct cache_entry lru; /* sentinel */
    struct cache_flight *flights;
    uint64_t epoch;
    size_t max_entries, max_bytes; /* this shard's share of the bounds */
} __attribute__((aligned(64)));

struct cache {
    struct cache_shard shards[CACHE_SHARDS];
    long ttl_ms;
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    struct cache_shared *shared;
    _Atomic int short_lived;
    _Atomic uint64_t hits, misses, evictions;
};

/* Coarse monotonic time: a hit must not pay for a precise clock read, and
 * TTLs of seconds do not need one. */
static int64_t cache_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Keyed SipHash, so chosen keys cannot pile into one bucket. */
static uint64_t cache_hash(const struct cache *c, const void *key, size_t klen)
{
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, key, klen, c->hkey);
    return h;
}

static struct cache_shard *cache_shard_of(struct cache *c, uint64_t h)
{
    return &c->shards[(h >> 59) & (CACHE_SHARDS - 1)];
}

size_t cache_shared_size(void)
{
    return sizeof(struct cache_shared);
}

void cache_shared_init(struct cache_shared *s)
{
    randombytes_buf(s->hkey, sizeof(s->hkey));
}

/* Latest invalidation time recorded for hash h, or -1. */
static int64_t cache_tomb_at(const struct cache_shared *sh, uint64_t h)
{
    for (size_t i = 0; i < CACHE_TOMB_PROBES; i++) {
        const struct cache_tomb *t = &sh->tombs[(h + i) & (CACHE_TOMBS - 1)];
        if (atomic_load_explicit(&t->hash, memory_order_acquire) == h)
            return atomic_load_explicit(&t->at_ms, memory_order_relaxed);
    }
    return -1;
}

/* Record an invalidation of hash h at now. The time is stored before the
 * hash is claimed, so a racing reader can only see a record too new (a
 * spurious miss), never too old. */
static void cache_tomb_put(struct cache_shared *sh, uint64_t h, int64_t now)
{
    struct cache_tomb *victim = NULL;
    int64_t oldest = INT64_MAX;
    for (size_t i = 0; i < CACHE_TOMB_PROBES; i++) {
        struct cache_tomb *t = &sh->tombs[(h + i) & (CACHE_TOMBS - 1)];
        if (atomic_load(&t->hash) == h) {
            atomic_store(&t->at_ms, now);
            return;
        }
        int64_t at = atomic_load(&t->at_ms);
        if (at < oldest) {
            oldest = at;
            victim = t;
        }
    }
    uint64_t was = atomic_load(&victim->hash);
    atomic_store(&victim->at_ms, now);
    if (!atomic_compare_exchange_strong(&victim->hash, &was, h))
        cache_tomb_put(sh, h, now); /* lost a race for that slot: probe again */
}

struct cache *cache_create(const struct cache_options *o, struct cache_shared *shared)
{
    struct cache *c = xcalloc(1, sizeof(*c));
    long entries = o->max_entries > 0 ? o->max_entries : 0;
    long bytes = o->max_bytes > 0 ? o->max_bytes : 0;
    /* Split the bounds exactly: the first shards take the remainder. */
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        c->shards[i].max_entries =
            (size_t)entries / CACHE_SHARDS + (i < (size_t)entries % CACHE_SHARDS);
        c->shards[i].max_bytes = (size_t)bytes / CACHE_SHARDS + (i < (size_t)bytes % CACHE_SHARDS);
    }
    c->ttl_ms = o->ttl_ms;
    /* Attached caches hash alike, so entries and shared records match. */
    c->shared = shared;
    if (shared != NULL)
        memcpy(c->hkey, shared->hkey, sizeof(c->hkey));
    else
        randombytes_buf(c->hkey, sizeof(c->hkey));
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &c->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->nbuckets = 16;
        s->buckets = xcalloc(s->nbuckets, sizeof(struct cache_entry *));
        s->lru.next = s->lru.prev = &s->lru;
    }
    return c;
}

struct cache_value *cache_value_new(const void *data, size_t len, const char *etag, int64_t version)
{
    struct cache_value *v = xmalloc(sizeof(*v) + len + 1);
    atomic_init(&v->refs, 1);
    v->version = version;
    v->len = len;
    v->etag_len = 0;
    v->etag[0] = '\0';
    if (etag != NULL) {
        size_t n = strnlen(etag, CACHE_ETAG_MAX - 1);
        memcpy(v->etag, etag, n);
        v->etag[n] = '\0';
        v->etag_len = n;
    }
    if (len > 0)
        memcpy(v->data, data, len);
    v->data[len] = '\0';
    return v;
}

void cache_value_hold(struct cache_value *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void cache_value_release(struct cache_value *v)
{
    if (v != NULL && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        free(v);
}

static void cache_lru_unlink(struct cache_entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void cache_lru_push(struct cache_shard *s, struct cache_entry *e)
{
    e->next = s->lru.next;
    e->prev = &s->lru;
    s->lru.next->prev = e;
    s->lru.next = e;
}

/* The link that points at key's entry (or at the NULL ending its chain). */
static struct cache_entry **cache_slot(struct cache_shard *s, uint64_t h, const void *key,
                                       size_t klen)
{
    struct cache_entry **pp = &s->buckets[h & (s->nbuckets - 1)];
    while (*pp != NULL &&
           ((*pp)->hash != h || (*pp)->klen != klen || memcmp((*pp)->key, key, klen) != 0))
        pp = &(*pp)->hnext;
    return pp;
}

/* Unlink *pp from its chain and the LRU list and free it. */
static void cache_remove(struct cache_shard *s, struct cache_entry **pp)
{
    struct cache_entry *e = *pp;
    *pp = e->hnext;
    cache_lru_unlink(e);
    s->count--;
    s->bytes -= e->bytes;
    cache_value_release(e->val);
    free(e);
}

static void cache_grow(struct cache_shard *s)
{
    size_t n = s->nbuckets * 2;
    struct cache_entry **b = xcalloc(n, sizeof(struct cache_entry *));
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct cache_entry *e = s->buckets[i];
        while (e != NULL) {
            struct cache_entry *next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static int cache_alive(const struct cache *c, const struct cache_entry *e, int64_t now)
{
    if (now >= e->expires_ms)
        return 0;
    if (atomic_load_explicit(&c->short_lived, memory_order_relaxed) &&
        now - e->born_ms >= CACHE_SHORT_TTL_MS)
        return 0;
    if (c->shared != NULL && cache_tomb_at(c->shared, e->hash) >= e->born_ms)
        return 0;
    return 1;
}

/* Lookup under s->mu: a held value on a live hit, else NULL (an expired
 * entry is removed on the way). */
static struct cache_value *cache_lookup(struct cache *c, struct cache_shard *s, uint64_t h,
                                        const void *key, size_t klen)
{
    struct cache_entry **pp = cache_slot(s, h, key, klen);
    if (*pp == NULL)
        return NULL;
    if (!cache_alive(c, *pp, cache_now_ms())) {
        cache_remove(s, pp);
        return NULL;
    }
    struct cache_entry *e = *pp;
    cache_lru_unlink(e);
    cache_lru_push(s, e);
    cache_value_hold(e->val);
    return e->val;
}

int cache_get(struct cache *c, const void *key, size_t klen, struct cache_value **out)
{
    uint64_t h = cache_hash(c, key, klen);
    struct cache_shard *s = cache_shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    *out = cache_lookup(c, s, h, key, klen);
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add_explicit(*out != NULL ? &c->hits : &c->misses, 1, memory_order_relaxed);
    return *out != NULL;
}

struct cache_mark cache_mark(struct cache *c, const void *key, size_t klen)
{
    struct cache_shard *s = cache_shard_of(c, cache_hash(c, key, klen));
    struct cache_mark m;
    pthread_mutex_lock(&s->mu);
    m.epoch = s->epoch;
    pthread_mutex_unlock(&s->mu);
    m.at_ms = cache_now_ms();
    return m;
}

/* Insert under s->mu (see cache_put); born is when its load began. */
static int cache_store(struct cache *c, struct cache_shard *s, uint64_t h, const void *key,
                       size_t klen, struct cache_value *v, long ttl_ms, int64_t born)
{
    size_t bytes = sizeof(struct cache_entry) + klen + sizeof(*v) + v->len + 1;
    if (ttl_ms > c->ttl_ms)
        ttl_ms = c->ttl_ms;
    /* The old entry goes even when the new value is not kept. */
    struct cache_entry **pp = cache_slot(s, h, key, klen);
    if (*pp != NULL)
        cache_remove(s, pp);
    if (ttl_ms <= 0 || klen > CACHE_KEY_MAX || s->max_entries == 0 || bytes > s->max_bytes)
        return 0;
    while (s->count > 0 && (s->count + 1 > s->max_entries || s->bytes + bytes > s->max_bytes)) {
        struct cache_entry *victim = s->lru.prev;
        cache_remove(s, cache_slot(s, victim->hash, victim->key, victim->klen));
        atomic_fetch_add_explicit(&c->evictions, 1, memory_order_relaxed);
    }
    if (s->count >= s->nbuckets)
        cache_grow(s);
    struct cache_entry *e = xmalloc(sizeof(*e) + klen);
    e->hash = h;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->born_ms = born;
    e->expires_ms = cache_now_ms() + ttl_ms;
    e->bytes = bytes;
    cache_value_hold(v);
    e->val = v;
    struct cache_entry **head = &s->buckets[h & (s->nbuckets - 1)];
    e->hnext = *head;
    *head = e;
    cache_lru_push(s, e);
    s->count++;
    s->bytes += bytes;
    return 1;
}

int cache_put(struct cache *c, const void *key, size_t klen, struct cache_value *v, long ttl_ms,
              struct cache_mark mark)
{
    uint64_t h = cache_hash(c, key, klen);
    struct cache_shard *s = cache_shard_of(c, h);
    int stored = 0;
    pthread_mutex_lock(&s->mu);
    if (s->epoch == mark.epoch)
        stored = cache_store(c, s, h, key, klen, v, ttl_ms, mark.at_ms);
    pthread_mutex_unlock(&s->mu);
    return stored;
}

static struct cache_flight *cache_flight_find(struct cache_shard *s, uint64_t h, const void *key,
                                              size_t klen)
{
    for (struct cache_flight *f = s->flights; f != NULL; f = f->next)
        if (f->hash == h && f->klen == klen && memcmp(f->key, key, klen) == 0)
            return f;
    return NULL;
}

/* Take f out of the shard's list (under s->mu): later fetches of its key
 * start a load of their own; its current waiters still get its result. */
static void cache_flight_detach(struct cache_shard *s, struct cache_flight *f)
{
    for (struct cache_flight **pp = &s->flights; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    f->detached = 1;
}

static void cache_flight_free(struct cache_flight *f)
{
    pthread_cond_destroy(&f->cv);
    cache_value_release(f->val);
    free(f);
}

int cache_fetch(struct cache *c, const void *key, size_t klen, cache_loader load, void *ctx,
                int64_t deadline, struct cache_value **out, int *hit)
{
    uint64_t h = cache_hash(c, key, klen);
    struct cache_shard *s = cache_shard_of(c, h);
    int rc = 0;
    if (hit != NULL)
        *hit = 0;
    *out = NULL;
    if (klen > CACHE_KEY_MAX)
        return load(ctx, key, klen, out, &(long){0});

    pthread_mutex_lock(&s->mu);
    *out = cache_lookup(c, s, h, key, klen);
    if (*out != NULL) {
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
        if (hit != NULL)
            *hit = 1;
        return 0;
    }
    atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed);
    struct cache_flight *f = cache_flight_find(s, h, key, klen);
    if (f != NULL && c->shared != NULL && cache_tomb_at(c->shared, h) >= f->started_ms) {
        /* Another worker invalidated the key since that load began: its
         * result may be stale, so load afresh instead of joining. */
        cache_flight_detach(s, f);
        f = NULL;
    }
    if (f != NULL) {
        /* Someone in this process is loading it: wait for that result, but
         * not past our deadline. A waiter that gives up only leaves the
         * count; whoever sees it reach zero after done frees the flight. */
        struct timespec until = clock_deadline_ts(deadline);
        int timed_out = 0;
        f->waiters++;
        while (!f->done && !timed_out)
            timed_out = pthread_cond_timedwait(&f->cv, &s->mu, &until) == ETIMEDOUT;
        if (!f->done) {
            f->waiters--;
            pthread_mutex_unlock(&s->mu);
            return CACHE_DEADLINE;
        }
        rc = f->rc;
        if (f->val != NULL) {
            cache_value_hold(f->val);
            *out = f->val;
        }
        int last = --f->waiters == 0;
        pthread_mutex_unlock(&s->mu);
        if (last)
            cache_flight_free(f);
        return rc;
    }
    f = xcalloc(1, sizeof(*f));
    f->hash = h;
    f->klen = klen;
    memcpy(f->key, key, klen);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    f->next = s->flights;
    s->flights = f;
    uint64_t epoch = s->epoch;
    int64_t started = cache_now_ms();
    f->started_ms = started;
    pthread_mutex_unlock(&s->mu);

    long ttl_ms = 0;
    struct cache_value *v = NULL;
    rc = load(ctx, key, klen, &v, &ttl_ms);
    if (rc != 0) {
        cache_value_release(v);
        v = NULL;
    }

    pthread_mutex_lock(&s->mu);
    if (v != NULL && s->epoch == epoch)
        (void)cache_store(c, s, h, key, klen, v, ttl_ms, started);
    if (!f->detached)
        cache_flight_detach(s, f);
    f->done = 1;
    f->rc = rc;
    f->val = v; /* the flight owns the loader's reference */
    if (v != NULL)
        cache_value_hold(v);
    *out = v;
    int nobody = f->waiters == 0;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&s->mu);
    if (nobody)
        cache_flight_free(f);
    return rc;
}

void cache_drop(struct cache *c, const void *key, size_t klen)
{
    uint64_t h = cache_hash(c, key, klen);
    struct cache_shard *s = cache_shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    s->epoch++;
    struct cache_entry **pp = cache_slot(s, h, key, klen);
    if (*pp != NULL)
        cache_remove(s, pp);
    /* A load under way may have read the old value: nobody joins it now. */
    struct cache_flight *f = cache_flight_find(s, h, key, klen);
    if (f != NULL)
        cache_flight_detach(s, f);
    pthread_mutex_unlock(&s->mu);
}

void cache_invalidate(struct cache *c, const void *key, size_t klen)
{
    if (c->shared != NULL)
        cache_tomb_put(c->shared, cache_hash(c, key, klen), cache_now_ms());
    cache_drop(c, key, klen);
}

static void cache_clear_shard(struct cache_shard *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        while (s->buckets[i] != NULL)
            cache_remove(s, &s->buckets[i]);
    }
}

void cache_flush(struct cache *c)
{
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        s->epoch++;
        cache_clear_shard(s);
        while (s->flights != NULL)
            cache_flight_detach(s, s->flights);
        pthread_mutex_unlock(&s->mu);
    }
}

void cache_set_short_lived(struct cache *c, int on)
{
    atomic_store(&c->short_lived, on != 0);
}

void cache_stats(struct cache *c, struct cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->hits = atomic_load(&c->hits);
    out->misses = atomic_load(&c->misses);
    out->evictions = atomic_load(&c->evictions);
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        out->entries += s->count;
        out->bytes += s->bytes;
        pthread_mutex_unlock(&s->mu);
    }
}

void cache_destroy(struct cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &c->shards[i];
        cache_clear_shard(s);
        free(s->buckets);
        pthread_mutex_destroy(&s->mu);
    }
    free(c);
}
