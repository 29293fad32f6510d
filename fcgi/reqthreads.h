/* reqthreads: the request threads of one worker process (SPEC §5, §8).
 *
 * `serving` threads always wait in transport_next() for a connection with a
 * request. A request that waits for a password hash keeps its thread (its
 * FCGX_Request, arena and stack stay where they are, so the database work
 * after the hash runs as before), but that thread stops counting as serving:
 * reqthreads_wait_hook(), the hash pool's wait hook, wakes a spare thread
 * (or starts one) to serve in its place, and the thread retires to the
 * spares once its request is answered and enough others serve. So reads
 * keep every serving thread however many hashes wait, and the hash queue's
 * own bounds (hash_queue_max, hash_queue_timeout_ms) are the only limits on
 * waiting hashes: at most spare_max extra threads, idle ones sleeping.
 *
 * Thread-safety: the hook from any request thread; the rest from the
 * worker's main thread. */
#ifndef ACCESS_REQTHREADS_H
#define ACCESS_REQTHREADS_H

#include <stddef.h>

#include "app.h"
#include "transport.h"

struct reqthreads;

/* Start `serving` threads over tr; up to spare_max more are started as
 * hashes wait. NULL and err filled when not even one thread started. */
struct reqthreads *reqthreads_start(struct app *app, struct transport *tr, size_t serving,
                                    size_t spare_max, char *err, size_t errlen);

/* hashpool_wait_hook for ctx = the reqthreads. */
void reqthreads_wait_hook(void *ctx, int waiting);

/* Threads started so far (serving, waiting on a hash, or spare). */
size_t reqthreads_count(struct reqthreads *p);

/* Drain: spares leave at once; the others once app->stopping is set and a
 * poll brings no request. Waits until every thread has left or until
 * deadline_ms (clock_ms()); returns how many are still running. */
size_t reqthreads_drain(struct reqthreads *p, double deadline_ms);

/* Join the threads (all must have left) and free p. */
void reqthreads_free(struct reqthreads *p);

#endif
