/* supervisor: the parent process. It maps the shared segment, forks
 * `workers` workers on the listening socket, restarts any that die (at
 * once, or with a back-off from 100 ms doubling to 10 s while a slot keeps
 * dying within 2 s of its start), forwards SIGHUP, and on SIGTERM/SIGINT
 * marks the segment draining, passes SIGTERM on, waits up to 6 s for the
 * workers, and exits 0. Single-threaded. */
#ifndef ACCESS_SUPERVISOR_H
#define ACCESS_SUPERVISOR_H

#include "config.h"

/* Run until shut down; returns the process exit status. */
int supervisor_run(const struct config *cfg, int listen_fd);

#endif
