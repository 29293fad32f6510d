/* hashpool: runs Argon2id work off the request threads.
 *
 * Each worker process has `threads` pool threads; the machine-wide gate in
 * the shared segment (hashgate) caps running hashes at hash_threads on the
 * whole machine and waiting jobs at queue_max. A job is refused at once
 * (HASHPOOL_REJECTED) past queue_max, or past local_max jobs of this process
 * (queued or running). An admitted job always completes exactly once: its
 * function runs when a slot comes free before its deadline (HASHPOOL_DONE),
 * else it ends as HASHPOOL_TIMEOUT at most about 100 ms (or one running
 * hash) after the deadline. A job that started always finishes.
 *
 * Two ways in: hashpool_submit() hands the job over and calls `done` from a
 * pool thread when it completes (the caller's thread is free meanwhile);
 * hashpool_run() waits for it. A caller must hold no database connection
 * while its job waits.
 *
 * Thread-safety: submit and run may be called from any number of threads. */
#ifndef ACCESS_HASHPOOL_H
#define ACCESS_HASHPOOL_H

#include <stddef.h>

#include "shm.h"

struct hashpool;

enum hashpool_result { HASHPOOL_DONE = 0, HASHPOOL_REJECTED, HASHPOOL_TIMEOUT };

typedef void (*hashpool_fn)(void *arg);
/* Completion of a submitted job: r is DONE or TIMEOUT; wait_ms is the time
 * it spent queued, run_ms the time fn ran (0 unless DONE). Called once, from
 * a pool thread (or hashpool_destroy()), with no pool lock held. */
typedef void (*hashpool_done_fn)(void *arg, enum hashpool_result r, double wait_ms, double run_ms);

/* Start `threads` pool threads for worker slot `slot` of shm's gate; at most
 * local_max jobs (queued or running) of this process at once. */
struct hashpool *hashpool_create(struct shm_state *shm, unsigned slot, size_t threads,
                                 int queue_max, int local_max);

/* Queue fn(arg) with a deadline timeout_ms from now. HASHPOOL_DONE: admitted,
 * done(arg, …) will be called later. HASHPOOL_REJECTED: refused now, done is
 * never called. */
enum hashpool_result hashpool_submit(struct hashpool *p, hashpool_fn fn, hashpool_done_fn done,
                                     void *arg, long timeout_ms)
    __attribute__((warn_unused_result));

/* Run fn(arg) on the pool and wait for its completion; see above. *wait_ms
 * (may be NULL) receives the time spent queued, *run_ms the time fn ran. */
enum hashpool_result hashpool_run(struct hashpool *p, hashpool_fn fn, void *arg, long timeout_ms,
                                  double *wait_ms, double *run_ms)
    __attribute__((warn_unused_result));

/* Called by hashpool_run() with waiting = 1 when its caller starts to wait
 * for an admitted job and 0 when the wait ends, from the caller's thread: the
 * worker starts another request thread meanwhile, so hashes never take
 * threads from reads. Set before the pool is used; may be NULL. */
typedef void (*hashpool_wait_hook)(void *ctx, int waiting);
void hashpool_set_wait_hook(struct hashpool *p, hashpool_wait_hook hook, void *ctx);

/* Stop and join the threads; jobs still queued complete as TIMEOUT. */
void hashpool_destroy(struct hashpool *p);

#endif
