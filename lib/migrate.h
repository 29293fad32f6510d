/* migrate: applies sql/NNN_*.sql files in name order, each in its own
 * transaction, recording applied versions in schema_migrations. The whole
 * run holds a PostgreSQL advisory lock, so several hosts may run it at once:
 * one applies, the others wait and then find nothing left to do.
 * Not thread-safe (a one-shot command). */
#ifndef ACCESS_MIGRATE_H
#define ACCESS_MIGRATE_H

#include <stddef.h>

/* Apply pending migrations from dir to the database at conninfo. Returns the
 * number applied (>= 0) or -1 with err filled. */
int migrate_run(const char *conninfo, const char *dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
