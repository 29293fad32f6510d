/* worker: one worker process: `threads` request threads serving the
 * connections of the shared listening socket (see transport.h: new ones and
 * the ones the web server keeps, each handed to one thread when it has a
 * request, none held by a thread while idle), until SIGTERM, then a drain
 * of at most 5 s (and a flush of the audit queue). */
#ifndef ACCESS_WORKER_H
#define ACCESS_WORKER_H

#include "config.h"
#include "shm.h"

/* Run worker number slot (its metrics slot, 0..workers-1) on listen_fd;
 * returns the process exit status. */
int worker_run(const struct config *cfg, struct shm_state *shm, int listen_fd, unsigned slot);

#endif
