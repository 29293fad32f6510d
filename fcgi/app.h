/* app: what one worker process shares between its request threads: the
 * read-only configuration, the connection pools, the shared segment. Built
 * once by worker_run() before the threads start; afterwards its pointers
 * never change (the pools are themselves thread-safe). */
#ifndef ACCESS_APP_H
#define ACCESS_APP_H

#include <stdatomic.h>

#include "config.h"
#include "db.h"
#include "kv.h"
#include "shm.h"

/* Statements of the whole service, indexes into app_statements[]. */
enum app_stmt {
    STMT_PING = 0,
    STMT__COUNT
};

extern const struct db_stmt app_statements[STMT__COUNT];

struct app {
    const struct config *cfg;
    struct shm_state *shm;
    struct db_pool *db;
    struct kv_pool *kv; /* NULL when redis_url is empty */
    _Atomic int stopping; /* this worker received SIGTERM */
    double started_ms;
};

#endif
