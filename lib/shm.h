/* shm: the segment the supervisor maps (MAP_SHARED|MAP_ANONYMOUS) before it
 * forks, so every worker sees the same bytes. Fields are atomics: workers
 * and supervisor write them without locks. */
#ifndef ACCESS_SHM_H
#define ACCESS_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct assertion_jti_table;
struct cache_shared;
struct hashgate;
struct l2_shared;
struct metrics;

struct shm_state {
    _Atomic int draining;             /* 1 once SIGTERM reached the supervisor */
    _Atomic uint64_t worker_restarts; /* workers started again after dying */
    _Atomic uint64_t started_unix;    /* supervisor start time, seconds */
    /* Shared regions, mapped with shm_alloc() and owned by their modules:
     * the machine-wide Argon2id admission (hashgate.h, mapped here), the
     * cache's shared table (cache.h), the count of queued L2 writes (l2.h)
     * and the metrics registry. */
    struct hashgate *hash;
    struct cache_shared *cache;
    struct l2_shared *l2;
    struct metrics *metrics;
    struct assertion_jti_table *jti; /* client assertions' jti seen on this host (assertion.h) */
};

/* A zeroed MAP_SHARED region of n bytes for the process tree; NULL and err
 * filled on failure. Never unmapped. */
void *shm_alloc(size_t n, char *err, size_t errlen);

/* Map a zeroed segment with a hash gate of hash_threads slots for nslots
 * worker slots; NULL and err filled on failure. Owned by the process tree
 * until exit (never unmapped). */
struct shm_state *shm_create(unsigned hash_threads, unsigned nslots, char *err, size_t errlen);

#endif
