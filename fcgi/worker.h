/* worker: one worker process: `threads` request threads accepting on the
 * shared listening socket, until SIGTERM, then a drain of at most 5 s.
 *
 * Accept: the listening socket is non-blocking and each thread waits on its
 * own epoll set with EPOLLEXCLUSIVE, then calls FCGX_Accept_r, which finds a
 * connection or returns -EAGAIN when another thread or process took it.
 * No accept mutex: one slow thread never stalls the others (SPEC §8), and a
 * thread notices SIGTERM within one epoll timeout. */
#ifndef ACCESS_WORKER_H
#define ACCESS_WORKER_H

#include "config.h"
#include "shm.h"

/* Run a worker on listen_fd; returns the process exit status. */
int worker_run(const struct config *cfg, struct shm_state *shm, int listen_fd);

#endif
