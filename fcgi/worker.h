/* worker: one worker process: `threads` request threads accepting on the
 * shared listening socket, until SIGTERM, then a drain of at most
 * WORKER_DRAIN_MS and a flush of the audit queue of at most WORKER_FLUSH_MS
 * (to PostgreSQL or the spool) on every way out, a drain that timed out
 * included. Also runs the janitor thread (SPEC §13).
 *
 * Accept: every thread blocks in FCGX_Accept_r (accept(2)) on the shared
 * socket; the kernel wakes one waiter per connection. No accept mutex: one
 * slow thread never stalls the others (SPEC §8). The socket's SO_RCVTIMEO
 * returns an idle accept every 200 ms, so a thread notices SIGTERM. */
#ifndef ACCESS_WORKER_H
#define ACCESS_WORKER_H

#include "config.h"
#include "shm.h"

#define WORKER_DRAIN_MS 5000 /* in-flight requests finish (SPEC §5) */
#define WORKER_FLUSH_MS 2000 /* then the audit queue reaches PostgreSQL or the spool */

/* Run worker number slot (its metrics slot, 0..workers-1) on listen_fd;
 * returns the process exit status. */
int worker_run(const struct config *cfg, struct shm_state *shm, int listen_fd, unsigned slot);

#endif
