/* shm: the segment the supervisor maps (MAP_SHARED|MAP_ANONYMOUS) before it
 * forks, so every worker sees the same bytes. Fields are atomics: workers
 * and supervisor write them without locks. Later issues add the metrics
 * registry and the machine-wide hashing semaphore here. */
#ifndef ACCESS_SHM_H
#define ACCESS_SHM_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct cache_shared;
struct metrics;

struct shm_state {
    _Atomic int draining;             /* 1 once SIGTERM reached the supervisor */
    _Atomic uint64_t worker_restarts; /* workers started again after dying */
    _Atomic uint64_t started_unix;    /* supervisor start time, seconds */
    /* Machine-wide Argon2id admission (hashpool): at most hash_threads
     * hashes run at once across all workers; queued counts waiting jobs. */
    sem_t hash_slots;
    _Atomic int hash_queued;
    _Atomic int hash_active;
    _Atomic uint64_t hash_rejected;
    /* Other shared regions, mapped by the supervisor with shm_alloc() and
     * owned by their modules (see cache.h). */
    struct cache_shared *cache;
    struct metrics *metrics;
};

/* A zeroed MAP_SHARED region of n bytes for the process tree; NULL and err
 * filled on failure. Never unmapped. */
void *shm_alloc(size_t n, char *err, size_t errlen);

/* Map a zeroed segment; NULL and err filled on failure. Owned by the
 * process tree until exit (never unmapped). */
struct shm_state *shm_create(unsigned hash_threads, char *err, size_t errlen);

#endif
