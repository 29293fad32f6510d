/* cache: the per-process L1 cache (SPEC §1, §5).
 *
 * A sharded hash table (one mutex per shard) with LRU order and a TTL per
 * entry, bounded by a number of entries and a number of bytes (each split
 * evenly over the shards). Values are immutable, reference-counted blobs:
 * the ready response bytes, their ETag and a version, so a hit copies and
 * serialises nothing.
 *
 * Single-flight: cache_fetch() on a missing key runs the caller's loader in
 * one thread; concurrent fetches of the same key in this process wait for it
 * (each until its own deadline at most) and receive its value or its error
 * code.
 *
 * Coherence: cache_drop() removes a key and bumps its shard's epoch; a
 * loader whose load began before a drop of its shard does not store its
 * (possibly stale) result. While cross-process invalidation is not working
 * (cache_set_short_lived(c, 1)), entries older than CACHE_SHORT_TTL_MS are
 * treated as missing.
 *
 * Across the workers of one machine, caches attached to one struct
 * cache_shared (in the supervisor's shared memory) also see each other's
 * cache_invalidate() at once: it records (key hash, time) in a small
 * lock-free table, and a hit on an entry whose load began at or before a
 * recorded invalidation of its key is a miss. So a logout is refused by
 * every local worker as soon as it returns; the pub/sub channel (see
 * invalidate.h) covers other hosts and records that fell out of the table.
 *
 * Keys are byte strings of at most CACHE_KEY_MAX bytes. The scheme used by
 * the service (lib/authn.c builds the first four):
 *   u:<user uuid>       profile JSON of GET /me, ETag "<id>-<version>"
 *   s:<session uuid>    "<user uuid> <expires unix s>" when live, "-" when not
 *   t:<32-byte BLAKE2b> verified access token: "<sub> <sid>" (L1 only)
 *   jwks                the public JWK set (L1 only)
 *   c:<client uuid>     an API client's verified keys (lib/clients.c)
 *   j:<jti>             a client token's revocation state (lib/oauth.c)
 *
 * Thread-safety: every function may be called from any thread. A value
 * obtained from cache_get()/cache_fetch() stays valid until the caller
 * releases it with cache_value_release(), whatever happens to the entry. */
#ifndef ACCESS_CACHE_H
#define ACCESS_CACHE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_KEY_MAX      128
#define CACHE_ETAG_MAX     96
#define CACHE_SHORT_TTL_MS 1000

struct cache_value {
    _Atomic int refs;
    int64_t version;
    size_t len;
    size_t etag_len;
    char etag[CACHE_ETAG_MAX]; /* NUL-terminated */
    char data[];               /* len bytes, then a NUL */
};

struct cache_options {
    long max_entries; /* 0: store nothing (single-flight still applies) */
    long max_bytes;
    long ttl_ms; /* upper bound of every entry's TTL */
};

struct cache_stats {
    uint64_t hits, misses, evictions, entries, bytes;
};

struct cache;
struct cache_shared;

/* Bytes of the shared table; cache_shared_init() prepares it (zeroed
 * memory, once, before the processes that share it are forked). */
size_t cache_shared_size(void);
void cache_shared_init(struct cache_shared *s);

/* Where and when a read from a slower layer began (see cache_put). */
struct cache_mark {
    uint64_t epoch;
    int64_t at_ms;
};

/* An empty cache, attached to shared (may be NULL: this process only).
 * Never NULL (aborts on out-of-memory). */
struct cache *cache_create(const struct cache_options *o, struct cache_shared *shared);
/* Free everything; no thread may still use c (values still held by callers
 * stay valid until released). */
void cache_destroy(struct cache *c);

/* A new value holding a copy of data (len bytes) and etag (may be NULL),
 * with one reference owned by the caller. */
struct cache_value *cache_value_new(const void *data, size_t len, const char *etag,
                                    int64_t version);
/* Take another reference. */
void cache_value_hold(struct cache_value *v);
/* Drop a reference; frees v with the last one. NULL is ignored. */
void cache_value_release(struct cache_value *v);

/* 1 and *out (a reference the caller releases) on a live hit; 0 on a miss. */
int cache_get(struct cache *c, const void *key, size_t klen, struct cache_value **out)
    __attribute__((warn_unused_result));

/* Take before reading key from a slower layer, and pass to cache_put(), so
 * that the value is not stored when the key was dropped since, and counts
 * as older than any invalidation recorded after this moment. */
struct cache_mark cache_mark(struct cache *c, const void *key, size_t klen);

/* Store v (the cache takes its own reference) under key for ttl_ms (capped
 * by the cache's ttl), unless key's shard epoch moved past mark. Evicts
 * least-recently-used entries to stay within the bounds. 1 stored, 0 not. */
int cache_put(struct cache *c, const void *key, size_t klen, struct cache_value *v, long ttl_ms,
              struct cache_mark mark);

/* What cache_fetch() returns to a waiter whose deadline passed first. */
#define CACHE_DEADLINE (-1)

/* Loader for cache_fetch(): produce *out (one reference, handed over) and
 * *ttl_ms and return 0; or return a non-zero code other than
 * CACHE_DEADLINE, which every waiter of this flight receives. A loader may
 * itself cache_put() other keys. */
typedef int (*cache_loader)(void *ctx, const void *key, size_t klen, struct cache_value **out,
                            long *ttl_ms);

/* Hit: 0 and *out. Miss: run (or wait for) the single loader of key in this
 * process; its value is stored (when ttl_ms > 0 and no drop intervened) and
 * returned, or its code is returned with *out NULL. A waiter gives up at
 * deadline (lib/clock.h scale) with CACHE_DEADLINE and *out NULL; the load
 * goes on and its result is stored and handed to the waiters still there.
 * The loader itself is not interrupted: it must bound its own waits. *hit
 * (may be NULL) says whether the value came from L1 without a load. */
int cache_fetch(struct cache *c, const void *key, size_t klen, cache_loader load, void *ctx,
                int64_t deadline, struct cache_value **out, int *hit)
    __attribute__((warn_unused_result));

/* Remove key and advance its shard's epoch (this process only). */
void cache_drop(struct cache *c, const void *key, size_t klen);
/* cache_drop() plus a record in the shared table, so every cache attached
 * to it treats its copies (loaded up to now) as missing. */
void cache_invalidate(struct cache *c, const void *key, size_t klen);
/* Remove every entry and advance every epoch. */
void cache_flush(struct cache *c);
/* While on, entries older than CACHE_SHORT_TTL_MS count as missing. */
void cache_set_short_lived(struct cache *c, int on);

void cache_stats(struct cache *c, struct cache_stats *out);

#endif
