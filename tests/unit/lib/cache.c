/* Unit tests for lib/cache.c: LRU order and bounds (entries and bytes), TTL
 * and its cap, marks refused after a drop, single-flight (one loader, its
 * value or error to every waiter, distinct keys in parallel), short-lived
 * mode, invalidation records shared by two caches (two workers), flush,
 * value reference counts, and a mixed load from 8 threads.
 *
 * Keys are spread over 16 shards by a keyed hash, so tests that need keys in
 * one shard find them by behaviour: two caches attached to one struct
 * cache_shared hash alike, and a probe cache holding one entry per shard
 * evicts its first key exactly when a second one lands in the same shard. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "cache.h"
#include "clock.h"

#define BIG      (1L << 30)
#define LONG_TTL 600000L

/* ---- helpers ------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static struct cache *mk(long entries, long bytes, long ttl_ms, struct cache_shared *sh)
{
    struct cache_options o = {.max_entries = entries, .max_bytes = bytes, .ttl_ms = ttl_ms};
    return cache_create(&o, sh);
}

static struct cache_shared *new_shared(void)
{
    struct cache_shared *sh = calloc(1, cache_shared_size());
    assert_non_null(sh);
    cache_shared_init(sh);
    return sh;
}

static struct cache_value *val_str(const char *s)
{
    return cache_value_new(s, strlen(s), NULL, 0);
}

/* Put val under key with a mark taken now; 1 stored, 0 not. */
static int put_str(struct cache *c, const char *key, const char *val, long ttl_ms)
{
    struct cache_value *v = val_str(val);
    int rc = cache_put(c, key, strlen(key), v, ttl_ms, cache_mark(c, key, strlen(key)));
    cache_value_release(v);
    return rc;
}

/* 1 on a hit (whose value must be val), 0 on a miss. */
static int has(struct cache *c, const char *key, const char *val)
{
    struct cache_value *v = (struct cache_value *)1;
    if (!cache_get(c, key, strlen(key), &v)) {
        assert_null(v);
        return 0;
    }
    assert_non_null(v);
    assert_int_equal(v->len, strlen(val));
    assert_memory_equal(v->data, val, v->len);
    assert_int_equal(v->data[v->len], '\0');
    cache_value_release(v);
    return 1;
}

/* 1 on a hit with value val, 0 on a miss or another value. */
static int hit_with(struct cache *c, const char *key, const char *val)
{
    struct cache_value *v;
    if (!cache_get(c, key, strlen(key), &v))
        return 0;
    int same = v->len == strlen(val) && memcmp(v->data, val, v->len) == 0;
    cache_value_release(v);
    return same;
}

static int value_is(const struct cache_value *v, const char *s)
{
    return v != NULL && v->len == strlen(s) && memcmp(v->data, s, v->len) == 0;
}

static struct cache_stats stats(struct cache *c)
{
    struct cache_stats s;
    cache_stats(c, &s);
    return s;
}

/* Bytes one entry of this key and value length counts for. */
static uint64_t entry_cost(size_t klen, size_t vlen)
{
    struct cache *c = mk(16, BIG, LONG_TTL, NULL);
    char key[CACHE_KEY_MAX];
    memset(key, 'k', klen);
    char *data = calloc(1, vlen + 1);
    struct cache_value *v = cache_value_new(data, vlen, NULL, 0);
    assert_int_equal(cache_put(c, key, klen, v, LONG_TTL, cache_mark(c, key, klen)), 1);
    uint64_t bytes = stats(c).bytes;
    assert_true(bytes >= vlen + klen);
    cache_value_release(v);
    free(data);
    cache_destroy(c);
    return bytes;
}

/* Whether a and b share a shard in caches attached to sh. */
static int same_shard(struct cache_shared *sh, const char *a, const char *b)
{
    struct cache *p = mk(16, BIG, LONG_TTL, sh); /* one entry per shard */
    assert_int_equal(put_str(p, a, "a", LONG_TTL), 1);
    assert_int_equal(put_str(p, b, "b", LONG_TTL), 1);
    assert_true(has(p, b, "b"));
    int same = !has(p, a, "a");
    assert_int_equal(stats(p).evictions, (uint64_t)same);
    cache_destroy(p);
    return same;
}

/* n keys in one shard (same != 0) or each in a shard other than keys[0]'s. */
static void shard_keys(struct cache_shared *sh, char keys[][16], size_t n, int same)
{
    size_t found = 1;
    snprintf(keys[0], 16, "s0");
    for (int i = 1; found < n && i < 10000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "s%d", i);
        if (same_shard(sh, keys[0], k) == same)
            memcpy(keys[found++], k, sizeof(k));
    }
    assert_int_equal(found, n);
}

/* Wait until c has counted at least n misses (every fetcher is in). */
static void wait_misses(struct cache *c, uint64_t n)
{
    for (int i = 0; i < 5000 && stats(c).misses < n; i++)
        sleep_ms(1);
}

/* ---- LRU and bounds -------------------------------------------------- */

static void test_lru_order(void **state)
{
    (void)state;
    struct cache_shared *sh = new_shared();
    char k[4][16];
    shard_keys(sh, k, 4, 1);
    struct cache *c = mk(32, BIG, LONG_TTL, sh); /* two entries per shard */
    assert_int_equal(put_str(c, k[0], "a", LONG_TTL), 1);
    assert_int_equal(put_str(c, k[1], "b", LONG_TTL), 1);
    assert_true(has(c, k[0], "a")); /* a is now more recent than b */
    assert_int_equal(put_str(c, k[2], "c", LONG_TTL), 1);
    assert_false(has(c, k[1], "b")); /* least recently used went */
    assert_true(has(c, k[2], "c"));
    assert_true(has(c, k[0], "a")); /* order now: a, c */
    assert_int_equal(put_str(c, k[3], "d", LONG_TTL), 1);
    assert_false(has(c, k[2], "c"));
    assert_true(has(c, k[0], "a"));
    assert_true(has(c, k[3], "d"));
    struct cache_stats s = stats(c);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.entries, 2);
    /* Replacing a key evicts nothing. */
    assert_int_equal(put_str(c, k[0], "a2", LONG_TTL), 1);
    assert_true(has(c, k[0], "a2"));
    assert_true(has(c, k[3], "d"));
    s = stats(c);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.entries, 2);
    cache_destroy(c);
    free(sh);
}

/* Global property: the total stays within the bound and a key used after
 * every insertion survives them all. */
static void test_lru_bound_and_hot_key(void **state)
{
    (void)state;
    struct cache *c = mk(64, BIG, LONG_TTL, NULL); /* 4 per shard */
    assert_int_equal(put_str(c, "hot", "H", LONG_TTL), 1);
    char k[16], v[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        assert_int_equal(put_str(c, k, v, LONG_TTL), 1);
        assert_true(has(c, "hot", "H"));
        assert_true(has(c, k, v));
        assert_true(stats(c).entries <= 64);
    }
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 64); /* 1001 keys fill every shard */
    assert_int_equal(s.evictions, 1001 - s.entries);
    assert_false(has(c, "k0", "v0"));
    cache_destroy(c);
}

/* Many entries in one cache (bucket arrays grow): all retrievable. */
static void test_many_entries(void **state)
{
    (void)state;
    struct cache *c = mk(16 * 1024, BIG, LONG_TTL, NULL);
    char k[16], v[16];
    for (int i = 0; i < 4000; i++) {
        snprintf(k, sizeof(k), "m%d", i);
        snprintf(v, sizeof(v), "w%d", i);
        assert_int_equal(put_str(c, k, v, LONG_TTL), 1);
    }
    for (int i = 0; i < 4000; i++) {
        snprintf(k, sizeof(k), "m%d", i);
        snprintf(v, sizeof(v), "w%d", i);
        assert_true(has(c, k, v));
    }
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 4000);
    assert_int_equal(s.evictions, 0);
    assert_int_equal(s.hits, 4000);
    cache_destroy(c);
}

static void put_sized(struct cache *c, int i, size_t vlen, int expect)
{
    char k[16];
    snprintf(k, sizeof(k), "b%07d", i);
    char *data = malloc(vlen);
    memset(data, 'a' + i % 26, vlen);
    struct cache_value *v = cache_value_new(data, vlen, NULL, i);
    assert_int_equal(cache_put(c, k, 8, v, LONG_TTL, cache_mark(c, k, 8)), expect);
    cache_value_release(v);
    free(data);
}

static void test_byte_bound(void **state)
{
    (void)state;
    uint64_t cost = entry_cost(8, 200);
    long bound = (long)(16 * 3 * cost); /* three entries per shard */
    struct cache *c = mk(100000, bound, LONG_TTL, NULL);
    for (int i = 0; i < 400; i++) {
        put_sized(c, i, 200, 1);
        assert_true(stats(c).bytes <= (uint64_t)bound);
    }
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 48);
    assert_int_equal(s.bytes, 48 * cost);
    assert_int_equal(s.evictions, 400 - 48);
    struct cache_value *v;
    assert_true(cache_get(c, "b0000399", 8, &v)); /* the newest is there */
    assert_int_equal(v->version, 399);
    cache_value_release(v);
    cache_destroy(c);
}

static int big_loader(void *ctx, const void *key, size_t klen, struct cache_value **out,
                      long *ttl_ms)
{
    (void)key;
    (void)klen;
    size_t n = *(size_t *)ctx;
    char *data = calloc(1, n);
    *out = cache_value_new(data, n, NULL, 0);
    free(data);
    *ttl_ms = LONG_TTL;
    return 0;
}

/* A value costing more than a shard's share is not stored; one costing
 * exactly the share is. */
static void test_value_bigger_than_share(void **state)
{
    (void)state;
    const long share = 4096;
    uint64_t c0 = entry_cost(8, 0);
    size_t fit = (size_t)share - c0;
    assert_int_equal(entry_cost(8, fit), share);
    struct cache *c = mk(1000, 16 * share, LONG_TTL, NULL);
    put_sized(c, 1, fit, 1);
    put_sized(c, 2, fit + 1, 0);
    put_sized(c, 3, 5000, 0);
    struct cache_value *v;
    assert_true(cache_get(c, "b0000001", 8, &v));
    assert_int_equal(v->len, fit);
    cache_value_release(v);
    assert_false(cache_get(c, "b0000002", 8, &v));
    assert_false(cache_get(c, "b0000003", 8, &v));
    /* Through fetch: returned, not stored. */
    size_t n = 5000;
    int hit = -1;
    assert_int_equal(cache_fetch(c, "big", 3, big_loader, &n, CLOCK_NEVER, &v, &hit), 0);
    assert_int_equal(v->len, 5000);
    assert_int_equal(hit, 0);
    cache_value_release(v);
    assert_false(cache_get(c, "big", 3, &v));
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, share);
    cache_destroy(c);
}

/* The bounds are totals (SPEC: l1_max_entries / l1_max_bytes): one that is
 * not a multiple of the shard count must still cap the sum. */
static void test_entry_bound_not_multiple_of_shards(void **state)
{
    (void)state;
    struct cache *c = mk(20, BIG, LONG_TTL, NULL);
    char k[16];
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof(k), "n%d", i);
        assert_int_equal(put_str(c, k, "x", LONG_TTL), 1);
    }
    struct cache_stats s = stats(c);
    cache_destroy(c);
    if (s.entries > 20)
        print_message("max_entries 20: %llu entries\n", (unsigned long long)s.entries);
    assert_true(s.entries > 0);
    assert_true(s.entries <= 20);
}

static void test_byte_bound_not_multiple_of_shards(void **state)
{
    (void)state;
    uint64_t cost = entry_cost(8, 200);
    long bound = (long)(32 * cost) - 15;
    struct cache *c = mk(100000, bound, LONG_TTL, NULL);
    for (int i = 0; i < 500; i++)
        put_sized(c, i, 200, 1);
    struct cache_stats s = stats(c);
    cache_destroy(c);
    if (s.bytes > (uint64_t)bound)
        print_message("max_bytes %ld: %llu bytes\n", bound, (unsigned long long)s.bytes);
    assert_true(s.entries > 0);
    assert_true(s.bytes <= (uint64_t)bound);
}

/* ---- loaders used below ---------------------------------------------- */

struct counting {
    _Atomic int calls;
    long ttl_ms;
    int rc;
};

/* Value "<key>#<call number>". */
static int counting_loader(void *ctx, const void *key, size_t klen, struct cache_value **out,
                           long *ttl_ms)
{
    struct counting *cn = ctx;
    int n = atomic_fetch_add(&cn->calls, 1) + 1;
    if (cn->rc != 0)
        return cn->rc;
    char buf[CACHE_KEY_MAX + 16];
    int len = snprintf(buf, sizeof(buf), "%.*s#%d", (int)klen, (const char *)key, n);
    *out = cache_value_new(buf, (size_t)len, NULL, n);
    *ttl_ms = cn->ttl_ms;
    return 0;
}

/* Fetch key and check the value "<key>#<n>"; returns hit. */
static int fetch_expect(struct cache *c, const char *key, struct counting *cn, int n)
{
    struct cache_value *v = NULL;
    int hit = -1;
    assert_int_equal(cache_fetch(c, key, strlen(key), counting_loader, cn, CLOCK_NEVER, &v, &hit), 0);
    assert_non_null(v);
    char want[64];
    snprintf(want, sizeof(want), "%s#%d", key, n);
    assert_int_equal(v->len, strlen(want));
    assert_memory_equal(v->data, want, v->len);
    cache_value_release(v);
    assert_true(hit == 0 || hit == 1);
    return hit;
}

/* ---- max_entries = 0, long keys --------------------------------------- */

static void test_zero_entries(void **state)
{
    (void)state;
    struct cache *c = mk(0, BIG, LONG_TTL, NULL);
    struct counting cn = {.ttl_ms = LONG_TTL};
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(fetch_expect(c, "z", &cn, i), 0);
        assert_int_equal(atomic_load(&cn.calls), i);
    }
    assert_int_equal(put_str(c, "z", "v", LONG_TTL), 0);
    assert_false(has(c, "z", "v"));
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);
    cache_destroy(c);
}

/* Keys up to CACHE_KEY_MAX are cached; longer ones load every time. */
static void test_key_length_limit(void **state)
{
    (void)state;
    struct cache *c = mk(1000, BIG, LONG_TTL, NULL);
    char key[CACHE_KEY_MAX + 2];
    memset(key, 'x', sizeof(key));
    key[CACHE_KEY_MAX] = '\0';
    struct counting cn = {.ttl_ms = LONG_TTL};
    struct cache_value *v;
    int hit;
    assert_int_equal(cache_fetch(c, key, CACHE_KEY_MAX, counting_loader, &cn, CLOCK_NEVER, &v, &hit), 0);
    cache_value_release(v);
    assert_int_equal(cache_fetch(c, key, CACHE_KEY_MAX, counting_loader, &cn, CLOCK_NEVER, &v, &hit), 0);
    cache_value_release(v);
    assert_int_equal(hit, 1);
    assert_int_equal(atomic_load(&cn.calls), 1);

    key[CACHE_KEY_MAX] = 'x';
    key[CACHE_KEY_MAX + 1] = '\0';
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cache_fetch(c, key, CACHE_KEY_MAX + 1, counting_loader, &cn, CLOCK_NEVER, &v, &hit), 0);
        assert_non_null(v);
        assert_int_equal(v->len, CACHE_KEY_MAX + 1 + 2);
        cache_value_release(v);
        assert_int_equal(hit, 0);
    }
    assert_int_equal(atomic_load(&cn.calls), 3);
    assert_int_equal(put_str(c, key, "v", LONG_TTL), 0);
    assert_false(has(c, key, "v"));
    cache_destroy(c);
}

/* ---- TTL ------------------------------------------------------------ */

static void test_ttl_expiry(void **state)
{
    (void)state;
    struct cache *c = mk(1000, BIG, LONG_TTL, NULL);
    assert_int_equal(put_str(c, "short", "s", 100), 1);
    assert_int_equal(put_str(c, "long", "l", LONG_TTL), 1);
    assert_true(has(c, "short", "s"));
    sleep_ms(200);
    assert_false(has(c, "short", "s"));
    assert_true(has(c, "long", "l"));
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 1); /* the expired entry went on lookup */

    /* A loader's TTL applies to what fetch stores. */
    struct counting cn = {.ttl_ms = 100};
    assert_int_equal(fetch_expect(c, "f", &cn, 1), 0);
    assert_int_equal(fetch_expect(c, "f", &cn, 1), 1);
    sleep_ms(200);
    assert_int_equal(fetch_expect(c, "f", &cn, 2), 0);
    /* A loader TTL of 0 stores nothing. */
    struct counting zero = {.ttl_ms = 0};
    assert_int_equal(fetch_expect(c, "g", &zero, 1), 0);
    assert_int_equal(fetch_expect(c, "g", &zero, 2), 0);
    cache_destroy(c);
}

static void test_ttl_capped_by_cache(void **state)
{
    (void)state;
    struct cache *c = mk(1000, BIG, 100, NULL);
    assert_int_equal(put_str(c, "k", "v", LONG_TTL), 1);
    assert_true(has(c, "k", "v"));
    struct counting cn = {.ttl_ms = LONG_TTL};
    assert_int_equal(fetch_expect(c, "f", &cn, 1), 0);
    assert_int_equal(fetch_expect(c, "f", &cn, 1), 1);
    sleep_ms(200);
    assert_false(has(c, "k", "v"));
    assert_int_equal(fetch_expect(c, "f", &cn, 2), 0);
    cache_destroy(c);
}

/* ---- marks and drops ------------------------------------------------ */

static void test_stale_mark_refused(void **state)
{
    (void)state;
    struct cache_shared *sh = new_shared();
    char same[2][16], other[2][16];
    shard_keys(sh, same, 2, 1);
    shard_keys(sh, other, 2, 0);
    struct cache *c = mk(1000, BIG, LONG_TTL, sh);
    struct cache_value *v = val_str("v");

    struct cache_mark m = cache_mark(c, "k", 1);
    cache_drop(c, "k", 1);
    assert_int_equal(cache_put(c, "k", 1, v, LONG_TTL, m), 0);
    assert_false(has(c, "k", "v"));
    m = cache_mark(c, "k", 1); /* taken after the drop */
    assert_int_equal(cache_put(c, "k", 1, v, LONG_TTL, m), 1);
    assert_true(has(c, "k", "v"));

    /* A drop of another key of the same shard also refuses (epochs are per
     * shard); one in another shard does not. */
    m = cache_mark(c, same[0], strlen(same[0]));
    cache_drop(c, same[1], strlen(same[1]));
    assert_int_equal(cache_put(c, same[0], strlen(same[0]), v, LONG_TTL, m), 0);
    m = cache_mark(c, other[0], strlen(other[0]));
    cache_drop(c, other[1], strlen(other[1]));
    assert_int_equal(cache_put(c, other[0], strlen(other[0]), v, LONG_TTL, m), 1);

    /* A flush moves every epoch. */
    m = cache_mark(c, "k", 1);
    cache_flush(c);
    assert_int_equal(cache_put(c, "k", 1, v, LONG_TTL, m), 0);
    assert_false(has(c, "k", "v"));

    cache_value_release(v);
    cache_destroy(c);
    free(sh);
}

/* A loader that blocks on its first call until released; its value is
 * whatever `db` held when the load began. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int loading, go;
    char db[32];
    _Atomic int calls;
};

static void gate_init(struct gate *g, const char *db)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    snprintf(g->db, sizeof(g->db), "%s", db);
}

static void gate_destroy(struct gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static void gate_set_db(struct gate *g, const char *db)
{
    pthread_mutex_lock(&g->mu);
    snprintf(g->db, sizeof(g->db), "%s", db);
    pthread_mutex_unlock(&g->mu);
}

static void gate_wait_loading(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->loading)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->go = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static int gate_loader(void *ctx, const void *key, size_t klen, struct cache_value **out,
                       long *ttl_ms)
{
    (void)key;
    (void)klen;
    struct gate *g = ctx;
    char val[32];
    int first = atomic_fetch_add(&g->calls, 1) == 0;
    pthread_mutex_lock(&g->mu);
    memcpy(val, g->db, sizeof(val));
    if (first) {
        g->loading = 1;
        pthread_cond_broadcast(&g->cv);
        while (!g->go)
            pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    *out = val_str(val);
    *ttl_ms = LONG_TTL;
    return 0;
}

struct fetch_call {
    struct cache *c;
    const char *key;
    cache_loader load;
    void *ctx;
    pthread_barrier_t *start;
    int64_t deadline; /* 0: none */
    int rc, hit;
    struct cache_value *out;
};

static void *fetch_thread(void *arg)
{
    struct fetch_call *f = arg;
    if (f->start != NULL)
        pthread_barrier_wait(f->start);
    f->rc = cache_fetch(f->c, f->key, strlen(f->key), f->load, f->ctx,
                        f->deadline ? f->deadline : CLOCK_NEVER, &f->out, &f->hit);
    return NULL;
}

static void assert_value(const struct cache_value *v, const char *s)
{
    assert_non_null(v);
    assert_int_equal(v->len, strlen(s));
    assert_memory_equal(v->data, s, v->len);
}

/* A load that overlaps a drop of its key returns its value but does not
 * store it. */
static void test_fetch_overlapping_drop_not_stored(void **state)
{
    (void)state;
    struct cache *c = mk(1000, BIG, LONG_TTL, NULL);
    struct gate g;
    gate_init(&g, "old");
    struct fetch_call f = {.c = c, .key = "k", .load = gate_loader, .ctx = &g};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fetch_thread, &f), 0);
    gate_wait_loading(&g);
    gate_set_db(&g, "new");
    cache_drop(c, "k", 1);
    gate_open(&g);
    pthread_join(t, NULL);
    assert_int_equal(f.rc, 0);
    assert_int_equal(f.hit, 0);
    assert_value(f.out, "old");
    cache_value_release(f.out);
    assert_false(has(c, "k", "old"));
    assert_int_equal(stats(c).entries, 0);
    /* The next fetch loads again and stores. */
    struct cache_value *v;
    int hit;
    assert_int_equal(cache_fetch(c, "k", 1, gate_loader, &g, CLOCK_NEVER, &v, &hit), 0);
    assert_value(v, "new");
    cache_value_release(v);
    assert_int_equal(atomic_load(&g.calls), 2);
    assert_true(has(c, "k", "new"));
    gate_destroy(&g);
    cache_destroy(c);
}

/* A waiter of a load that hangs gives up at its deadline with
 * CACHE_DEADLINE; the load still completes, is stored, and the flight is
 * freed once (ASan sees a leak or a double free otherwise). */
static void test_fetch_waiter_deadline(void **state)
{
    (void)state;
    struct cache *c = mk(1000, BIG, LONG_TTL, NULL);
    struct gate g;
    gate_init(&g, "v");
    struct fetch_call f = {.c = c, .key = "k", .load = gate_loader, .ctx = &g};
    pthread_t t;
    struct cache_value *v = NULL;
    int hit = -1;
    assert_int_equal(pthread_create(&t, NULL, fetch_thread, &f), 0);
    gate_wait_loading(&g);
    double t0 = clock_ms();
    int rc = cache_fetch(c, "k", 1, gate_loader, &g, clock_deadline_in(50), &v, &hit);
    double waited = clock_ms() - t0;
    gate_open(&g);
    pthread_join(t, NULL);
    assert_int_equal(rc, CACHE_DEADLINE);
    assert_null(v);
    assert_int_equal(hit, 0);
    assert_true(waited >= 45);
    assert_true(waited < 2000); /* bounded, not a speed claim */
    assert_int_equal(f.rc, 0);
    assert_value(f.out, "v");
    cache_value_release(f.out);
    assert_int_equal(atomic_load(&g.calls), 1); /* the waiter did not load */
    assert_true(has(c, "k", "v"));
    gate_destroy(&g);
    cache_destroy(c);
}

static int deadline_race_iterations(void)
{
    const char *e = getenv("CACHE_DEADLINE_RACE_ITERATIONS");
    return e != NULL && atoi(e) > 0 ? atoi(e) : 2000;
}

/* The racy path: a waiter's deadline lands around the moment the load ends,
 * so the waiter leaving and the loader finishing (and freeing the flight
 * when nobody waits) interleave every way. Each waiter gets the value or
 * CACHE_DEADLINE, never a freed flight (ASan/TSan watch the memory). */
static void test_fetch_waiter_deadline_race(void **state)
{
    (void)state;
    struct cache *c = mk(100000, BIG, LONG_TTL, NULL);
    int n = deadline_race_iterations(), got = 0, gave_up = 0;
    for (int i = 0; i < n; i++) {
        char key[16];
        struct gate g;
        snprintf(key, sizeof(key), "k%d", i);
        gate_init(&g, "v");
        struct fetch_call loader = {.c = c, .key = key, .load = gate_loader, .ctx = &g};
        struct fetch_call waiter = loader;
        waiter.deadline = clock_deadline_in(1);
        pthread_t tl, tw;
        assert_int_equal(pthread_create(&tl, NULL, fetch_thread, &loader), 0);
        gate_wait_loading(&g);
        assert_int_equal(pthread_create(&tw, NULL, fetch_thread, &waiter), 0);
        if (i % 3 != 0)
            clock_sleep_ms(i % 3);
        gate_open(&g);
        pthread_join(tl, NULL);
        pthread_join(tw, NULL);
        assert_int_equal(loader.rc, 0);
        assert_value(loader.out, "v");
        if (waiter.rc == 0) {
            assert_value(waiter.out, "v");
            got++;
        } else {
            assert_int_equal(waiter.rc, CACHE_DEADLINE);
            assert_null(waiter.out);
            gave_up++;
        }
        cache_value_release(loader.out);
        cache_value_release(waiter.out);
        assert_int_equal(atomic_load(&g.calls), 1);
        gate_destroy(&g);
    }
    print_message("waiter deadline race: %d iterations, %d got the value, %d gave up\n", n, got,
                  gave_up);
    assert_int_equal(got + gave_up, n);
    cache_destroy(c);
}

/* A fetch that begins after cache_invalidate() returned (a logout) must not
 * receive the value of a load that began before it (the session still
 * live): "a logout is refused by every local worker as soon as it returns". */
static void test_fetch_after_invalidate_not_joined_to_older_load(void **state)
{
    (void)state;
    struct cache_shared *sh = new_shared();
    struct cache *c = mk(1000, BIG, LONG_TTL, sh);
    struct gate g;
    gate_init(&g, "live");
    struct fetch_call f1 = {.c = c, .key = "s:1", .load = gate_loader, .ctx = &g};
    struct fetch_call f2 = f1;
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, fetch_thread, &f1), 0);
    gate_wait_loading(&g);
    gate_set_db(&g, "gone");       /* the logout commits ... */
    cache_invalidate(c, "s:1", 3); /* ... and invalidates */
    assert_int_equal(pthread_create(&t2, NULL, fetch_thread, &f2), 0);
    wait_misses(c, 2); /* the second fetch joined the first or loads itself */
    gate_open(&g);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    int f1_ok = f1.rc == 0 && value_is(f1.out, "live"); /* concurrent with the logout */
    int f2_ok = f2.rc == 0 && value_is(f2.out, "gone");
    cache_value_release(f1.out);
    cache_value_release(f2.out);
    int stale_cached = hit_with(c, "s:1", "live");
    gate_destroy(&g);
    cache_destroy(c);
    free(sh);
    assert_true(f1_ok);
    assert_true(f2_ok);
    assert_false(stale_cached);
}

/* The same across two caches (two workers): a fetch in B that begins after
 * A's cache_invalidate() returned must not get B's older load. */
static void test_fetch_after_remote_invalidate_not_joined_to_older_load(void **state)
{
    (void)state;
    struct cache_shared *sh = new_shared();
    struct cache *a = mk(1000, BIG, LONG_TTL, sh);
    struct cache *b = mk(1000, BIG, LONG_TTL, sh);
    struct gate g;
    gate_init(&g, "live");
    struct fetch_call f1 = {.c = b, .key = "s:1", .load = gate_loader, .ctx = &g};
    struct fetch_call f2 = f1;
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, fetch_thread, &f1), 0);
    gate_wait_loading(&g);
    gate_set_db(&g, "gone");
    cache_invalidate(a, "s:1", 3);
    assert_int_equal(pthread_create(&t2, NULL, fetch_thread, &f2), 0);
    wait_misses(b, 2);
    gate_open(&g);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    int f1_ok = f1.rc == 0 && value_is(f1.out, "live");
    int f2_ok = f2.rc == 0 && value_is(f2.out, "gone");
    cache_value_release(f1.out);
    cache_value_release(f2.out);
    /* Whatever B stored from the older load counts as invalidated. */
    int stale_cached = hit_with(b, "s:1", "live");
    gate_destroy(&g);
    cache_destroy(a);
    cache_destroy(b);
    free(sh);
    assert_true(f1_ok);
    assert_true(f2_ok);
    assert_false(stale_cached);
}

/* ---- single-flight -------------------------------------------------- */

#define FLIGHT_THREADS 16

/* Waits until every fetcher has missed (so all of them are waiting on this
 * load), then sleeps 50 ms and returns "<key>#<n>" or rc. */
struct flight {
    struct cache *c;
    _Atomic int calls;
    int rc;
};

static int flight_loader(void *ctx, const void *key, size_t klen, struct cache_value **out,
                         long *ttl_ms)
{
    struct flight *fl = ctx;
    int n = atomic_fetch_add(&fl->calls, 1) + 1;
    wait_misses(fl->c, FLIGHT_THREADS);
    sleep_ms(50);
    if (fl->rc != 0)
        return fl->rc;
    char buf[64];
    int len = snprintf(buf, sizeof(buf), "%.*s#%d", (int)klen, (const char *)key, n);
    *out = cache_value_new(buf, (size_t)len, NULL, n);
    *ttl_ms = LONG_TTL;
    return 0;
}

static void run_flight(struct flight *fl, struct fetch_call *calls)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, FLIGHT_THREADS);
    pthread_t t[FLIGHT_THREADS];
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        calls[i] = (struct fetch_call){
            .c = fl->c, .key = "one", .load = flight_loader, .ctx = fl, .start = &start};
        assert_int_equal(pthread_create(&t[i], NULL, fetch_thread, &calls[i]), 0);
    }
    for (int i = 0; i < FLIGHT_THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
}

static void flight_value(long max_entries)
{
    struct flight fl = {.c = mk(max_entries, BIG, LONG_TTL, NULL)};
    struct fetch_call calls[FLIGHT_THREADS];
    run_flight(&fl, calls);
    assert_int_equal(atomic_load(&fl.calls), 1);
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        assert_int_equal(calls[i].rc, 0);
        assert_int_equal(calls[i].hit, 0);
        assert_ptr_equal(calls[i].out, calls[0].out);
        assert_value(calls[i].out, "one#1");
    }
    struct cache_stats s = stats(fl.c);
    assert_int_equal(s.misses, FLIGHT_THREADS);
    assert_int_equal(s.hits, 0);
    assert_int_equal(s.entries, max_entries > 0 ? 1 : 0);
    assert_int_equal(has(fl.c, "one", "one#1"), max_entries > 0);
    for (int i = 0; i < FLIGHT_THREADS; i++)
        cache_value_release(calls[i].out);
    cache_destroy(fl.c);
}

static void test_single_flight(void **state)
{
    (void)state;
    flight_value(1000);
}

/* max_entries = 0 stores nothing, but concurrent misses still share a load. */
static void test_single_flight_zero_entries(void **state)
{
    (void)state;
    flight_value(0);
}

static void test_single_flight_error(void **state)
{
    (void)state;
    struct flight fl = {.c = mk(1000, BIG, LONG_TTL, NULL), .rc = 42};
    struct fetch_call calls[FLIGHT_THREADS];
    run_flight(&fl, calls);
    assert_int_equal(atomic_load(&fl.calls), 1);
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        assert_int_equal(calls[i].rc, 42);
        assert_null(calls[i].out);
    }
    struct cache_stats s = stats(fl.c);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.misses, FLIGHT_THREADS);
    struct cache_value *v;
    assert_false(cache_get(fl.c, "one", 3, &v));
    /* Nothing was stored: the next fetch loads again. */
    int hit;
    assert_int_equal(cache_fetch(fl.c, "one", 3, flight_loader, &fl, CLOCK_NEVER, &v, &hit), 42);
    assert_null(v);
    assert_int_equal(atomic_load(&fl.calls), 2);
    cache_destroy(fl.c);
}

/* Two loads of distinct keys (in one shard) run at the same time: each
 * loader waits for the other to arrive. */
struct meet {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    _Atomic int met;
};

static int meet_loader(void *ctx, const void *key, size_t klen, struct cache_value **out,
                       long *ttl_ms)
{
    struct meet *m = ctx;
    pthread_mutex_lock(&m->mu);
    m->arrived++;
    pthread_cond_broadcast(&m->cv);
    int64_t until = clock_now_ms() + 3000;
    while (m->arrived < 2 && clock_now_ms() < until) {
        pthread_mutex_unlock(&m->mu);
        sleep_ms(1);
        pthread_mutex_lock(&m->mu);
    }
    if (m->arrived >= 2)
        atomic_fetch_add(&m->met, 1);
    pthread_mutex_unlock(&m->mu);
    *out = cache_value_new(key, klen, NULL, 0);
    *ttl_ms = LONG_TTL;
    return 0;
}

static void test_distinct_keys_load_concurrently(void **state)
{
    (void)state;
    struct cache_shared *sh = new_shared();
    char k[2][16];
    shard_keys(sh, k, 2, 1);
    struct cache *c = mk(1000, BIG, LONG_TTL, sh);
    struct meet m = {.arrived = 0};
    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cv, NULL);
    struct fetch_call f[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        f[i] = (struct fetch_call){.c = c, .key = k[i], .load = meet_loader, .ctx = &m};
        assert_int_equal(pthread_create(&t[i], NULL, fetch_thread, &f[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&m.met), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(f[i].rc, 0);
        assert_value(f[i].out, k[i]);
        cache_value_release(f[i].out);
        assert_true(has(c, k[i], k[i]));
    }
    pthread_mutex_destroy(&m.mu);
    pthread_cond_destroy(&m.cv);
    cache_destroy(c);
    free(sh);
}

/* ---- short-lived mode ---------------------------------------------- */

static void test_short_lived(void **state)
{
    (void)state;
    struct cache *c = mk(1000, BIG, LONG_TTL, NULL);
    /* An entry whose load began CACHE_SHORT_TTL_MS + 1 s ago. */
    struct cache_mark m = cache_mark(c, "old", 3);
    m.at_ms -= CACHE_SHORT_TTL_MS + 1000;
    struct cache_value *v = val_str("o");
    assert_int_equal(cache_put(c, "old", 3, v, LONG_TTL, m), 1);
    cache_value_release(v);
    assert_int_equal(put_str(c, "new", "n", LONG_TTL), 1);
    assert_true(has(c, "old", "o")); /* off: the TTL alone counts */
    cache_set_short_lived(c, 1);
    assert_false(has(c, "old", "o"));
    assert_true(has(c, "new", "n"));
    /* A fresh load is served while on. */
    struct counting cn = {.ttl_ms = LONG_TTL};
    assert_int_equal(fetch_expect(c, "f", &cn, 1), 0);
    assert_int_equal(fetch_expect(c, "f", &cn, 1), 1);
    cache_set_short_lived(c, 0);
    assert_true(has(c, "new", "n"));
    assert_true(has(c, "f", "f#1"));
    cache_destroy(c);
}

/* Real time: an entry stored while on turns missing after the short TTL. */
static void test_short_lived_real_time(void **state)
{
    (void)state;
    struct cache *c = mk(1000, BIG, LONG_TTL, NULL);
    cache_set_short_lived(c, 1);
    assert_int_equal(put_str(c, "k", "v", LONG_TTL), 1);
    assert_true(has(c, "k", "v"));
    sleep_ms(CACHE_SHORT_TTL_MS + 100);
    assert_false(has(c, "k", "v"));
    cache_destroy(c);
}

/* ---- shared invalidation records ------------------------------------- */

static void test_shared_invalidation(void **state)
{
    (void)state;
    struct cache_shared *sh = new_shared();
    struct cache *a = mk(1000, BIG, LONG_TTL, sh);
    struct cache *b = mk(1000, BIG, LONG_TTL, sh);
    struct cache *alone = mk(1000, BIG, LONG_TTL, NULL);
    assert_int_equal(put_str(a, "u:1", "v1", LONG_TTL), 1);
    assert_int_equal(put_str(b, "u:1", "v1", LONG_TTL), 1);
    assert_int_equal(put_str(alone, "u:1", "v1", LONG_TTL), 1);
    assert_int_equal(put_str(b, "u:2", "w", LONG_TTL), 1);
    sleep_ms(20); /* past a coarse tick: the records are strictly newer */
    cache_invalidate(a, "u:1", 3);
    assert_false(has(a, "u:1", "v1"));
    assert_false(has(b, "u:1", "v1"));
    assert_true(has(b, "u:2", "w"));      /* other keys untouched */
    assert_true(has(alone, "u:1", "v1")); /* not attached */

    /* Loaded before the invalidation, stored after: a miss in b. */
    struct cache_mark before = cache_mark(b, "u:3", 3);
    assert_int_equal(put_str(b, "u:3", "old", LONG_TTL), 1);
    sleep_ms(20);
    cache_invalidate(a, "u:3", 3);
    assert_false(has(b, "u:3", "old"));
    struct cache_value *v = val_str("old");
    assert_int_equal(cache_put(b, "u:3", 3, v, LONG_TTL, before), 1);
    cache_value_release(v);
    assert_false(has(b, "u:3", "old"));

    /* Loaded after it (the mark taken a tick later): a hit. */
    sleep_ms(20);
    assert_int_equal(put_str(b, "u:3", "new", LONG_TTL), 1);
    assert_true(has(b, "u:3", "new"));
    assert_int_equal(put_str(a, "u:3", "new", LONG_TTL), 1);
    assert_true(has(a, "u:3", "new"));

    /* A second invalidation of the same key is honoured too. */
    sleep_ms(20);
    cache_invalidate(a, "u:3", 3);
    assert_false(has(b, "u:3", "new"));

    /* Through fetch: a load that began after the record is kept. */
    sleep_ms(20);
    struct counting cn = {.ttl_ms = LONG_TTL};
    assert_int_equal(fetch_expect(b, "u:3", &cn, 1), 0);
    assert_int_equal(fetch_expect(b, "u:3", &cn, 1), 1);

    cache_destroy(a);
    cache_destroy(b);
    cache_destroy(alone);
    free(sh);
}

/* Far more distinct invalidations than one bucket's probe window (and than
 * the whole table) holds: the latest one is always honoured, and records do
 * not make later loads miss. */
static void test_many_invalidations(void **state)
{
    (void)state;
    struct cache_shared *sh = new_shared();
    struct cache *a = mk(1000, BIG, LONG_TTL, sh);
    struct cache *b = mk(100000, BIG, LONG_TTL, sh);
    char k[24];
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof(k), "m:%d", i);
        assert_int_equal(put_str(b, k, "v", LONG_TTL), 1);
        cache_invalidate(a, k, strlen(k));
        assert_false(has(b, k, "v"));
    }
    /* And all of them once more, now that the table is full. */
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof(k), "m:%d", i);
        assert_int_equal(put_str(b, k, "v", LONG_TTL), 1);
        cache_invalidate(a, k, strlen(k));
        assert_false(has(b, k, "v"));
    }
    sleep_ms(20);
    for (int i = 19900; i < 20000; i++) {
        snprintf(k, sizeof(k), "m:%d", i);
        assert_int_equal(put_str(b, k, "fresh", LONG_TTL), 1);
        assert_true(has(b, k, "fresh"));
    }
    cache_destroy(a);
    cache_destroy(b);
    free(sh);
}

/* ---- flush and reference counts ---------------------------------------- */

static void test_flush(void **state)
{
    (void)state;
    struct cache *c = mk(1000, BIG, LONG_TTL, NULL);
    char k[16];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "f%d", i);
        assert_int_equal(put_str(c, k, k, LONG_TTL), 1);
    }
    assert_int_equal(stats(c).entries, 50);
    cache_flush(c);
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "f%d", i);
        assert_false(has(c, k, k));
    }
    assert_int_equal(put_str(c, "f1", "again", LONG_TTL), 1);
    assert_true(has(c, "f1", "again"));
    cache_destroy(c);
}

static void test_value_refcounts(void **state)
{
    (void)state;
    struct cache_value *v = cache_value_new("hello", 5, "etag-1", 7);
    assert_int_equal(atomic_load(&v->refs), 1);
    assert_int_equal(v->version, 7);
    assert_int_equal(v->etag_len, 6);
    assert_string_equal(v->etag, "etag-1");
    assert_string_equal(v->data, "hello");

    struct cache *c = mk(1000, BIG, LONG_TTL, NULL);
    assert_int_equal(cache_put(c, "k", 1, v, LONG_TTL, cache_mark(c, "k", 1)), 1);
    assert_int_equal(atomic_load(&v->refs), 2);
    struct cache_value *got;
    assert_true(cache_get(c, "k", 1, &got));
    assert_ptr_equal(got, v);
    assert_int_equal(atomic_load(&v->refs), 3);
    cache_drop(c, "k", 1);
    assert_int_equal(atomic_load(&v->refs), 2);
    cache_value_release(v);
    assert_string_equal(got->data, "hello"); /* still held by got */
    cache_value_release(got);
    cache_value_release(NULL);

    /* Held across an eviction, a flush and the cache's destruction. */
    struct cache_shared *sh = new_shared();
    char k[2][16];
    shard_keys(sh, k, 2, 1);
    struct cache *one = mk(16, BIG, LONG_TTL, sh);
    assert_int_equal(put_str(one, k[0], "first", LONG_TTL), 1);
    assert_true(cache_get(one, k[0], strlen(k[0]), &got));
    assert_int_equal(put_str(one, k[1], "second", LONG_TTL), 1); /* evicts k[0] */
    assert_false(has(one, k[0], "first"));
    assert_string_equal(got->data, "first");
    cache_value_release(got);
    struct cache_value *held;
    assert_true(cache_get(one, k[1], strlen(k[1]), &held));
    cache_flush(one);
    assert_string_equal(held->data, "second");
    assert_int_equal(put_str(one, k[1], "third", LONG_TTL), 1);
    struct cache_value *held2;
    assert_true(cache_get(one, k[1], strlen(k[1]), &held2));
    cache_destroy(one);
    assert_string_equal(held->data, "second");
    assert_string_equal(held2->data, "third");
    assert_int_equal(atomic_load(&held2->refs), 1);
    cache_value_release(held);
    cache_value_release(held2);

    /* An over-long ETag is cut to fit; a NULL one is empty. */
    char etag[200];
    memset(etag, 'e', sizeof(etag) - 1);
    etag[sizeof(etag) - 1] = '\0';
    v = cache_value_new("", 0, etag, 0);
    assert_int_equal(v->etag_len, CACHE_ETAG_MAX - 1);
    assert_int_equal(strlen(v->etag), CACHE_ETAG_MAX - 1);
    assert_int_equal(v->len, 0);
    assert_int_equal(v->data[0], '\0');
    cache_value_release(v);
    v = cache_value_new("x", 1, NULL, 0);
    assert_int_equal(v->etag_len, 0);
    assert_string_equal(v->etag, "");
    cache_value_release(v);

    cache_destroy(c);
    free(sh);
}

/* ---- concurrent mixed load ------------------------------------------- */

#define STRESS_THREADS 8
#define STRESS_KEYS    48
#define STRESS_ENTRIES 32

struct stress {
    struct cache *c[2]; /* two workers on one shared table */
    int64_t until;
    _Atomic int bad;
};

struct stress_thread {
    struct stress *st;
    uint32_t seed;
    uint64_t lookups[2]; /* gets and fetches per cache */
    uint64_t loads;
};

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Value "<key>|<n>" for "<key>"; fails one time in 8. */
static int stress_loader(void *ctx, const void *key, size_t klen, struct cache_value **out,
                         long *ttl_ms)
{
    struct stress_thread *t = ctx;
    t->loads++;
    uint32_t r = xorshift(&t->seed);
    if (klen < 2 || memcmp(key, "x", 1) != 0)
        atomic_fetch_add(&t->st->bad, 1);
    if (r % 8 == 0)
        return 7;
    if (r % 4 == 1)
        sleep_ms(1);
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%.*s|%u", (int)klen, (const char *)key, r);
    *out = cache_value_new(buf, (size_t)n, NULL, r);
    *ttl_ms = 20 + r % 50;
    return 0;
}

/* Whether v is a value made for key. */
static int stress_value_ok(const struct cache_value *v, const char *key, size_t klen)
{
    return v != NULL && v->len > klen && memcmp(v->data, key, klen) == 0 && v->data[klen] == '|' &&
           v->data[v->len] == '\0';
}

static void *stress_main(void *arg)
{
    struct stress_thread *t = arg;
    struct stress *st = t->st;
    while (clock_now_ms() < st->until) {
        uint32_t r = xorshift(&t->seed);
        int ci = (int)(r & 1);
        struct cache *c = st->c[ci];
        char key[16];
        int klen = snprintf(key, sizeof(key), "x%u", (r >> 1) % STRESS_KEYS);
        struct cache_value *v = NULL;
        switch ((r >> 8) % 16) {
        case 0:
        case 1:
        case 2:
        case 3:
            t->lookups[ci]++;
            if (cache_get(c, key, (size_t)klen, &v)) {
                if (!stress_value_ok(v, key, (size_t)klen))
                    atomic_fetch_add(&st->bad, 1);
                cache_value_release(v);
            } else if (v != NULL) {
                atomic_fetch_add(&st->bad, 1);
            }
            break;
        case 4:
        case 5:
        case 6:
        case 7:
        case 8:
        case 9: {
            int hit = -1;
            t->lookups[ci]++;
            int rc = cache_fetch(c, key, (size_t)klen, stress_loader, t, CLOCK_NEVER, &v, &hit);
            if ((rc == 0 && !stress_value_ok(v, key, (size_t)klen)) ||
                (rc != 0 && (rc != 7 || v != NULL || hit != 0)))
                atomic_fetch_add(&st->bad, 1);
            cache_value_release(v);
            break;
        }
        case 10:
        case 11: {
            struct cache_mark m = cache_mark(c, key, (size_t)klen);
            char buf[64];
            int n = snprintf(buf, sizeof(buf), "%s|p%u", key, r);
            v = cache_value_new(buf, (size_t)n, NULL, 0);
            (void)cache_put(c, key, (size_t)klen, v, 10 + r % 40, m);
            cache_value_release(v);
            break;
        }
        case 12:
        case 13:
            cache_drop(c, key, (size_t)klen);
            break;
        case 14:
            cache_invalidate(c, key, (size_t)klen);
            break;
        default:
            if (r % 64 == 0) {
                cache_flush(c);
            } else {
                struct cache_stats s;
                cache_stats(c, &s);
                if (s.entries > STRESS_ENTRIES)
                    atomic_fetch_add(&st->bad, 1);
            }
            break;
        }
    }
    return NULL;
}

static void test_concurrent_mixed(void **state)
{
    (void)state;
    struct cache_shared *sh = new_shared();
    struct stress st = {.until = clock_now_ms() + 500};
    for (int i = 0; i < 2; i++)
        st.c[i] = mk(STRESS_ENTRIES, 16 * 4096, 60, sh);
    struct stress_thread th[STRESS_THREADS];
    pthread_t t[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        th[i] = (struct stress_thread){.st = &st, .seed = 0x9e3779b9u * (uint32_t)(i + 1)};
        assert_int_equal(pthread_create(&t[i], NULL, stress_main, &th[i]), 0);
    }
    uint64_t lookups[2] = {0, 0}, loads = 0;
    for (int i = 0; i < STRESS_THREADS; i++) {
        pthread_join(t[i], NULL);
        lookups[0] += th[i].lookups[0];
        lookups[1] += th[i].lookups[1];
        loads += th[i].loads;
    }
    assert_int_equal(atomic_load(&st.bad), 0);
    assert_true(loads > 0);
    for (int i = 0; i < 2; i++) {
        struct cache_stats s = stats(st.c[i]);
        assert_int_equal(s.hits + s.misses, lookups[i]);
        assert_true(s.hits > 0);
        assert_true(s.entries <= STRESS_ENTRIES);
        assert_true(s.bytes <= 16 * 4096);
        assert_true((s.entries == 0) == (s.bytes == 0));
        cache_flush(st.c[i]);
        s = stats(st.c[i]);
        assert_int_equal(s.entries, 0);
        assert_int_equal(s.bytes, 0);
        cache_destroy(st.c[i]);
    }
    free(sh);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_lru_bound_and_hot_key),
        cmocka_unit_test(test_many_entries),
        cmocka_unit_test(test_byte_bound),
        cmocka_unit_test(test_value_bigger_than_share),
        cmocka_unit_test(test_entry_bound_not_multiple_of_shards),
        cmocka_unit_test(test_byte_bound_not_multiple_of_shards),
        cmocka_unit_test(test_zero_entries),
        cmocka_unit_test(test_key_length_limit),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_ttl_capped_by_cache),
        cmocka_unit_test(test_stale_mark_refused),
        cmocka_unit_test(test_fetch_overlapping_drop_not_stored),
        cmocka_unit_test(test_fetch_after_invalidate_not_joined_to_older_load),
        cmocka_unit_test(test_fetch_after_remote_invalidate_not_joined_to_older_load),
        cmocka_unit_test(test_single_flight),
        cmocka_unit_test(test_single_flight_zero_entries),
        cmocka_unit_test(test_single_flight_error),
        cmocka_unit_test(test_distinct_keys_load_concurrently),
        cmocka_unit_test(test_short_lived),
        cmocka_unit_test(test_short_lived_real_time),
        cmocka_unit_test(test_shared_invalidation),
        cmocka_unit_test(test_many_invalidations),
        cmocka_unit_test(test_flush),
        cmocka_unit_test(test_value_refcounts),
        cmocka_unit_test(test_concurrent_mixed),
        cmocka_unit_test(test_fetch_waiter_deadline),
        cmocka_unit_test(test_fetch_waiter_deadline_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
