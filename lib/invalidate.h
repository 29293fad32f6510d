/* invalidate: the per-worker thread that keeps L1 coherent (SPEC §5).
 *
 * It holds one dedicated Redis connection SUBSCRIBEd to the invalidation
 * channel and drops from L1 every key published there (l2_write with
 * publish). While the subscription is not established, L1 runs in
 * short-lived mode (entries live at most CACHE_SHORT_TTL_MS); once it is
 * (again), the whole L1 is flushed, short-lived mode ends and writes queued
 * in L2 during the outage are re-sent (then every 500 ms while any remain). A PING every 500 ms
 * detects a silent connection; reconnects back off from 50 ms to 1 s.
 *
 * Without Redis (kv NULL) no thread starts and L1 stays short-lived, since
 * the other workers' writes cannot reach it.
 *
 * Thread-safety: start/stop from one thread; invalidate_up() from any. */
#ifndef ACCESS_INVALIDATE_H
#define ACCESS_INVALIDATE_H

#include "cache.h"
#include "kv.h"
#include "l2.h"

struct invalidate;

/* Start the subscriber for channel over kv (may be NULL), dropping keys from
 * l1 and re-sending l2's pending writes. Never NULL. */
struct invalidate *invalidate_start(struct kv_pool *kv, const char *channel, struct cache *l1,
                                    struct l2 *l2);
/* Whether the subscription is established right now. */
int invalidate_up(struct invalidate *inv);
/* Stop the thread and free (within about 200 ms). */
void invalidate_stop(struct invalidate *inv);

#endif
