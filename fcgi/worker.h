/* worker: one worker process: `threads` request threads serving the
 * connections of the shared listening socket (see transport.h: new ones and
 * the ones the web server keeps, each handed to one thread when it has a
 * request, none held by a thread while idle; reqthreads.h: spares for the
 * requests waiting on a hash), until SIGTERM, then a drain of at most
 * WORKER_DRAIN_MS and a flush of the audit queue of at most WORKER_FLUSH_MS
 * (to PostgreSQL or the spool) on every way out, a drain that timed out
 * included. Also runs the janitor thread (SPEC §13). */
#ifndef ACCESS_WORKER_H
#define ACCESS_WORKER_H

#include "config.h"
#include "shm.h"

#define WORKER_DRAIN_MS 5000 /* in-flight requests finish (SPEC §5) */
#define WORKER_FLUSH_MS 2000 /* then the audit queue reaches PostgreSQL or the spool */

/* Cache keys in Redis and the invalidation channel (shared by all hosts of
 * one deployment, and by the `client` subcommands, so they must agree). */
#define WORKER_CACHE_PREFIX     "access:c:"
#define WORKER_CACHE_CHANNEL    "access:invalidate"
#define WORKER_RATELIMIT_PREFIX "access:rl:"
#define WORKER_JTI_PREFIX       "access:jti:"
#define WORKER_THROTTLE_PREFIX  "access:lt:"

/* Run worker number slot (its metrics slot, 0..workers-1) on listen_fd;
 * returns the process exit status. */
int worker_run(const struct config *cfg, struct shm_state *shm, int listen_fd, unsigned slot);

#endif
