/* app: what one worker process shares between its request threads: the
 * read-only configuration, the connection pools, the shared segment. Built
 * once by worker_run() before the threads start; afterwards its pointers
 * never change (the pools are themselves thread-safe). */
#ifndef ACCESS_APP_H
#define ACCESS_APP_H

#include <stdatomic.h>

#include <pthread.h>

#include "accounts.h"
#include "audit.h"
#include "cache.h"
#include "config.h"
#include "db.h"
#include "invalidate.h"
#include "janitor.h"
#include "kv.h"
#include "l2.h"
#include "metrics.h"
#include "oauth.h"
#include "outbox.h"
#include "probe.h"
#include "throttle.h"
#include "ratelimit.h"
#include "shm.h"

struct app {
    const struct config *cfg;
    struct shm_state *shm;
    struct db_pool *db;
    struct kv_pool *kv; /* NULL when redis_url is empty */
    /* The health checks, shared by concurrent /health calls (probe.h). */
    struct probe *db_probe;
    struct probe *kv_probe; /* NULL without Redis */
    struct hashpool *hash;
    struct cache *l1;
    struct l2 *l2;
    struct invalidate *inv;
    struct ratelimit *rl;
    struct audit *audit;
    struct janitor *janitor;
    struct outbox *outbox;     /* the delivery thread (SPEC §9) */
    struct throttle *throttle; /* the per-account login throttle (SPEC §9) */
    struct metrics *metrics;   /* shm->metrics */
    unsigned slot;             /* this worker's metrics slot */
    /* app_metrics_sync(): counters already folded into the registry. */
    pthread_mutex_t sync_mu;
    struct {
        uint64_t l1_hits, l1_misses, l2_hits, l2_misses, spooled, spool_failures, audit_dropped;
    } synced;
    struct accounts acc;
    struct oauth oauth;   /* over acc */
    _Atomic int stopping; /* this worker received SIGTERM */
};

#endif
