/* l2: the Redis L2 cache shared by every worker (and every host), and the
 * invalidation channel (SPEC §1, §5).
 *
 * Values are cache_value blobs stored as "<rank>|<etag>|<bytes>". The rank
 * orders writes of one key: a value of version n has rank 2n+1, a tombstone
 * ("anything older than version n is stale") has rank 2n. One Lua script
 * stores a value only when its rank is higher than what is there, so a slow
 * loader can never overwrite a newer write, whatever the interleaving; the
 * same script PUBLISHes the key on the invalidation channel when asked, so a
 * write and its broadcast are one round trip.
 *
 * l2_fetch() is the read path below L1: GET; on a miss one process takes a
 * short lock (SET NX PX) and loads from PostgreSQL while the others poll L2
 * for a moment, then load themselves if it has not appeared.
 *
 * Redis down (or no Redis configured: kv NULL): reads fall through to the
 * loader; writes that could not reach Redis are kept in a bounded list and
 * re-sent by l2_retry_pending() once Redis is back, so a revocation made
 * during an outage still reaches L2. Until then L2 may still hold what such
 * a write replaces, while other workers' connections already work again: so
 * every worker of the machine counts its queued writes in a shared table
 * (struct l2_shared), and while any are queued no l2_fetch() on the machine
 * reads L2 (it loads, and stores what it loaded, which outranks the stale
 * value). Other hosts learn of the write when it is delivered and published.
 *
 * Thread-safety: all functions may be called from any thread. */
#ifndef ACCESS_L2_H
#define ACCESS_L2_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "kv.h"

struct l2_shared;

/* Bytes of the machine-wide table for nslots worker slots; l2_shared_init()
 * prepares zeroed shared memory once, before the workers are forked. */
size_t l2_shared_size(unsigned nslots);
struct l2_shared *l2_shared_init(void *mem, unsigned nslots);
/* Supervisor, after reaping the worker of slot: its queued writes died with
 * it. */
void l2_shared_reclaim(struct l2_shared *s, unsigned slot);

struct l2_options {
    struct kv_pool *kv;       /* NULL: no Redis */
    struct l2_shared *shared; /* NULL: this process only */
    unsigned slot;            /* this worker's slot in shared */
    long ttl_ms;              /* l2_ttl */
    long lock_ms;             /* stampede lock lifetime */
    long wait_ms;             /* how long the others poll before loading themselves */
    const char *prefix;       /* key prefix, e.g. "c:" */
    const char *channel;
};

enum l2_source { L2_SRC_L2 = 0, L2_SRC_LOADER };

struct l2_stats {
    uint64_t hits, misses, errors, pending;
};

struct l2;

/* A new L2 over kv (may be NULL). Strings are copied. */
struct l2 *l2_create(const struct l2_options *o);
void l2_destroy(struct l2 *l2);

/* Loader below L2: 0 with *out (one reference, handed over) and *ttl_ms,
 * or a non-zero code that l2_fetch() returns as is. */
typedef int (*l2_loader)(void *ctx, struct cache_value **out, long *ttl_ms);

/* Read key through L2, loading (and storing) it on a miss as described
 * above. 0 with *out (caller releases) and *src, or the loader's code. A
 * tombstone counts as a miss. *ttl_ms gets the loader's TTL or, on an L2
 * hit, -1 (the caller derives it from the value). */
int l2_fetch(struct l2 *l2, const char *key, size_t klen, l2_loader load, void *ctx,
             struct cache_value **out, long *ttl_ms, enum l2_source *src)
    __attribute__((warn_unused_result));

/* Store v at rank 2*version+1 (or, with v NULL, a tombstone at rank
 * 2*version) for ttl_ms (capped by l2_ttl), and PUBLISH key when publish is
 * set. Unreachable Redis: queued for l2_retry_pending(). 0 sent, -1 queued. */
int l2_write(struct l2 *l2, const char *key, size_t klen, struct cache_value *v, int64_t version,
             long ttl_ms, int publish);

/* Re-send writes queued while Redis was away; 0 when none is left. */
int l2_retry_pending(struct l2 *l2);

/* Parse a stored "<rank>|<etag>|<bytes>" string (pure): 0 with *out a new
 * value (NULL for a tombstone), -1 when malformed. */
int l2_decode(const char *s, size_t len, struct cache_value **out)
    __attribute__((warn_unused_result));

void l2_stats(struct l2 *l2, struct l2_stats *out);

#endif
