#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"

/* Arbitrary constant naming this service's migration lock. */
#define MIGRATE_LOCK_KEY "7310420991"

static int migrate_name_ok(const char *n)
{
    size_t len = strlen(n);
    return len > 8 && n[0] >= '0' && n[0] <= '9' && n[1] >= '0' && n[1] <= '9' && n[2] >= '0' &&
           n[2] <= '9' && n[3] == '_' && strcmp(n + len - 4, ".sql") == 0;
}

static int migrate_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int migrate_exec(PGconn *pg, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        rc = -1;
    }
    PQclear(r);
    return rc;
}

static int migrate_read(const char *path, struct buf *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char chunk[4096];
    size_t n;
    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_append(out, chunk, n);
    fclose(f);
    return 0;
}

/* Apply one file unless already recorded. 1 applied, 0 skipped, -1 error. */
static int migrate_one(PGconn *pg, const char *dir, const char *name, char *err, size_t errlen)
{
    const char *params[1] = {name};
    struct buf sql = {0}, path = {0};
    char sub[512];
    int rc = -1;
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL,
                               params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s: %s", name, PQresultErrorMessage(r));
        PQclear(r);
        goto out;
    }
    int done = PQntuples(r) > 0;
    PQclear(r);
    if (done) {
        rc = 0;
        goto out;
    }
    buf_printf(&path, "%s/%s", dir, name);
    if (migrate_read(path.data, &sql, err, errlen) != 0)
        goto out;
    if (migrate_exec(pg, "BEGIN", sub, sizeof(sub)) != 0 ||
        migrate_exec(pg, sql.data ? sql.data : "", sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "%s: %s", name, sub);
        migrate_exec(pg, "ROLLBACK", sub, sizeof(sub));
        goto out;
    }
    r = PQexecParams(pg, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, NULL, params,
                     NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok || migrate_exec(pg, "COMMIT", sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "%s: recording the version failed", name);
        migrate_exec(pg, "ROLLBACK", sub, sizeof(sub));
        goto out;
    }
    log_msg(LOG_INFO, "migration %s applied", name);
    rc = 1;
out:
    buf_free(&sql);
    buf_free(&path);
    return rc;
}

int migrate_run(const char *conninfo, const char *dir, char *err, size_t errlen)
{
    PGconn *pg = NULL;
    DIR *d = NULL;
    char **names = NULL;
    size_t count = 0, cap = 0;
    int applied = 0, rc = -1, locked = 0;
    char sub[512];

    d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "cannot open migrations directory %s: %s", dir, strerror(errno));
        goto out;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!migrate_name_ok(e->d_name))
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            names = xrealloc(names, cap * sizeof(*names));
        }
        names[count++] = xstrdup(e->d_name);
    }
    if (count > 1)
        qsort(names, count, sizeof(*names), migrate_cmp);

    pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
        goto out;
    }
    migrate_exec(pg, "SET client_min_messages = warning", sub, sizeof(sub));
    if (migrate_exec(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "advisory lock: %s", sub);
        goto out;
    }
    locked = 1;
    if (migrate_exec(pg,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                     sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "schema_migrations: %s", sub);
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        int one = migrate_one(pg, dir, names[i], err, errlen);
        if (one < 0)
            goto out;
        applied += one;
    }
    rc = applied;
out:
    if (locked)
        migrate_exec(pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", sub, sizeof(sub));
    if (pg != NULL)
        PQfinish(pg);
    if (d != NULL)
        closedir(d);
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    if (rc < 0) {
        char *nl = strchr(err, '\n');
        if (nl != NULL)
            *nl = '\0';
    }
    return rc;
}
