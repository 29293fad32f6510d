/* hashpool: runs Argon2id work off the request threads.
 *
 * Each worker process has `threads` pool threads; a process-shared
 * semaphore in the shared segment caps running hashes at hash_threads on the
 * whole machine. A request thread calls hashpool_run(): the job joins the
 * pool's queue unless queue_max jobs already wait machine-wide (then
 * HASHPOOL_REJECTED at once; likewise past local_max jobs in this process,
 * so hashing never ties up all request threads and reads keep a thread), and
 * the caller waits on its own condition
 * variable until the job is done or timeout_ms passes while it is still
 * waiting (HASHPOOL_TIMEOUT; a job that started always finishes). The caller
 * must hold no database connection while it waits.
 *
 * Thread-safety: hashpool_run() may be called from any number of threads. */
#ifndef ACCESS_HASHPOOL_H
#define ACCESS_HASHPOOL_H

#include <stddef.h>

#include "shm.h"

struct hashpool;

enum hashpool_result { HASHPOOL_DONE = 0, HASHPOOL_REJECTED, HASHPOOL_TIMEOUT };

typedef void (*hashpool_fn)(void *arg);

/* Start `threads` pool threads using shm's semaphore and counters; at most
 * local_max jobs (queued or running) of this process at once. */
struct hashpool *hashpool_create(struct shm_state *shm, size_t threads, int queue_max,
                                 int local_max);
/* Run fn(arg) on the pool; see above. *wait_ms (may be NULL) receives the
 * time spent queued, *run_ms the time fn ran. */
enum hashpool_result hashpool_run(struct hashpool *p, hashpool_fn fn, void *arg, long timeout_ms,
                                  double *wait_ms, double *run_ms)
    __attribute__((warn_unused_result));
/* Stop and join the threads (queued jobs time out). */
void hashpool_destroy(struct hashpool *p);

#endif
