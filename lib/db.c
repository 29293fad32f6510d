#include "db.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

struct db_conn {
    struct db_pool *pool;
    PGconn *pg;
    int busy;
};

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *conninfo;
    long statement_timeout_ms;
    long slow_ms;
    int prepared;
    const struct db_stmt *stmts;
    size_t nstmts;
    size_t size;
    struct db_conn *slots;
    /* Back-off after a failed connect: no attempt before retry_at. */
    int64_t retry_at_ms;
    long backoff_ms;
    _Atomic uint64_t slow_queries;
    _Atomic size_t open_count; /* connections established now */
    void (*observe)(void *ctx, double ms, int slow);
    void *observe_ctx;
};

#define DB_BACKOFF_MIN_MS 50
#define DB_BACKOFF_MAX_MS 1000

struct db_pool *db_pool_create(const struct db_pool_options *o)
{
    struct db_pool *p = xcalloc(1, sizeof(*p));
    pthread_condattr_t ca;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->conninfo = xstrdup(o->conninfo);
    p->statement_timeout_ms = o->statement_timeout_ms;
    p->slow_ms = o->slow_ms;
    p->observe = o->observe;
    p->observe_ctx = o->observe_ctx;
    p->prepared = o->prepared;
    p->stmts = o->stmts;
    p->nstmts = o->nstmts;
    p->size = o->size ? o->size : 1;
    p->slots = xcalloc(p->size, sizeof(*p->slots));
    for (size_t i = 0; i < p->size; i++)
        p->slots[i].pool = p;
    return p;
}

/* Open and prepare a connection; NULL and err filled on failure. Runs
 * without the pool lock: connecting may take a while. */
static PGconn *db_connect(struct db_pool *p, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {p->conninfo, "2", "access", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    char sql[96];
    PGresult *r = NULL;
    if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "PostgreSQL connection failed: %s",
                 pg ? PQerrorMessage(pg) : "out of memory");
        /* libpq messages end in a newline; drop it for one-line logs. */
        char *nl = strchr(err, '\n');
        if (nl != NULL)
            *nl = '\0';
        goto fail;
    }
    snprintf(sql, sizeof(sql), "SET statement_timeout = %ld", p->statement_timeout_ms);
    r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "setting statement_timeout failed: %s", PQresultErrorMessage(r));
        goto fail;
    }
    PQclear(r);
    r = NULL;
    for (size_t i = 0; p->prepared && i < p->nstmts; i++) {
        r = PQprepare(pg, p->stmts[i].name, p->stmts[i].sql, p->stmts[i].nparams, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "preparing %s failed: %s", p->stmts[i].name,
                     PQresultErrorMessage(r));
            goto fail;
        }
        PQclear(r);
        r = NULL;
    }
    return pg;
fail:
    PQclear(r);
    if (pg != NULL)
        PQfinish(pg);
    return NULL;
}

/* Close c's connection (the caller owns c). */
static void db_close(struct db_conn *c)
{
    PQfinish(c->pg);
    c->pg = NULL;
    atomic_fetch_sub(&c->pool->open_count, 1);
}

/* Ensure c has a live connection, honouring the back-off. 0 or -1. */
static int db_ensure(struct db_pool *p, struct db_conn *c, char *err, size_t errlen)
{
    if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK)
        return 0;
    if (c->pg != NULL)
        db_close(c);
    pthread_mutex_lock(&p->mu);
    int64_t now = clock_now_ms();
    int wait = now < p->retry_at_ms;
    pthread_mutex_unlock(&p->mu);
    if (wait) {
        snprintf(err, errlen, "PostgreSQL is unavailable (reconnect backing off)");
        return -1;
    }
    c->pg = db_connect(p, err, errlen);
    if (c->pg != NULL)
        atomic_fetch_add(&p->open_count, 1);
    pthread_mutex_lock(&p->mu);
    if (c->pg == NULL) {
        p->backoff_ms = clock_backoff_next(p->backoff_ms, DB_BACKOFF_MIN_MS, DB_BACKOFF_MAX_MS);
        p->retry_at_ms = clock_now_ms() + p->backoff_ms;
    } else {
        p->backoff_ms = 0;
        p->retry_at_ms = 0;
    }
    pthread_mutex_unlock(&p->mu);
    if (c->pg == NULL) {
        log_msg(LOG_WARN, "%s", err);
        return -1;
    }
    return 0;
}

struct db_conn *db_pool_acquire(struct db_pool *p, long wait_ms, char *err, size_t errlen)
{
    struct timespec deadline = clock_deadline(wait_ms);
    struct db_conn *c = NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* Prefer an open idle connection over an unopened slot. */
        for (size_t i = 0; i < p->size; i++) {
            if (!p->slots[i].busy && (c == NULL || (c->pg == NULL && p->slots[i].pg != NULL)))
                c = &p->slots[i];
        }
        if (c != NULL)
            break;
        if (pthread_cond_timedwait(&p->cv, &p->mu, &deadline) != 0) {
            pthread_mutex_unlock(&p->mu);
            snprintf(err, errlen, "every database connection stayed busy for %ld ms", wait_ms);
            return NULL;
        }
    }
    c->busy = 1;
    pthread_mutex_unlock(&p->mu);
    if (db_ensure(p, c, err, errlen) != 0) {
        db_pool_release(p, c);
        return NULL;
    }
    return c;
}

void db_pool_release(struct db_pool *p, struct db_conn *c)
{
    pthread_mutex_lock(&p->mu);
    c->busy = 0;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static PGresult *db_run(struct db_conn *c, const struct db_stmt *s, const char *const *values)
{
    if (c->pool->prepared)
        return PQexecPrepared(c->pg, s->name, s->nparams, values, NULL, NULL, 0);
    return PQexecParams(c->pg, s->sql, s->nparams, NULL, values, NULL, NULL, 0);
}

enum db_result db_exec(struct db_conn *c, size_t stmt, const char *const *values, PGresult **res,
                       double *ms)
{
    struct db_pool *p = c->pool;
    const struct db_stmt *s = &p->stmts[stmt];
    double t0 = clock_ms();
    char err[256];
    *res = NULL;
    if (ms != NULL)
        *ms = 0;
    if (c->pg == NULL && db_ensure(p, c, err, sizeof(err)) != 0)
        return DB_UNAVAILABLE;
    PGresult *r = db_run(c, s, values);
    if (PQstatus(c->pg) == CONNECTION_BAD && s->idempotent) {
        /* A connection that died while idle (server restart): one retry on
         * a fresh one is safe for idempotent statements. */
        PQclear(r);
        r = NULL;
        if (db_ensure(p, c, err, sizeof(err)) == 0)
            r = db_run(c, s, values);
    }
    double dur = clock_ms() - t0;
    if (ms != NULL)
        *ms = dur;
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD || r == NULL) {
        PQclear(r);
        if (c->pg != NULL)
            db_close(c);
        return DB_UNAVAILABLE;
    }
    int slow = dur >= (double)p->slow_ms;
    if (slow) {
        atomic_fetch_add(&p->slow_queries, 1);
        log_slow_query(s->name, dur);
    }
    if (p->observe != NULL)
        p->observe(p->observe_ctx, dur, slow);
    ExecStatusType st = PQresultStatus(r);
    *res = r;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return DB_OK;
    return DB_ERROR;
}

const char *db_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

void db_error_summary(const PGresult *res, char *out, size_t outlen)
{
    static const struct {
        int field;
        const char *name;
    } parts[] = {{PG_DIAG_CONSTRAINT_NAME, "constraint"},
                 {PG_DIAG_TABLE_NAME, "table"},
                 {PG_DIAG_COLUMN_NAME, "column"},
                 {PG_DIAG_DATATYPE_NAME, "type"}};
    size_t len;
    if (outlen == 0)
        return;
    int n = snprintf(out, outlen, "SQLSTATE %s", res ? db_sqlstate(res) : "");
    len = n < 0 ? 0 : (size_t)n;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]) && res != NULL && len < outlen; i++) {
        const char *v = PQresultErrorField(res, parts[i].field);
        if (v == NULL || *v == '\0')
            continue;
        n = snprintf(out + len, outlen - len, " %s %s", parts[i].name, v);
        len += n < 0 ? 0 : (size_t)n;
    }
}

void db_pool_stats(struct db_pool *p, struct db_pool_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&p->mu);
    out->size = p->size;
    for (size_t i = 0; i < p->size; i++)
        if (p->slots[i].busy)
            out->in_use++;
    pthread_mutex_unlock(&p->mu);
    out->open = atomic_load(&p->open_count);
    out->slow_queries = atomic_load(&p->slow_queries);
}

void db_pool_destroy(struct db_pool *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->size; i++)
        if (p->slots[i].pg != NULL)
            PQfinish(p->slots[i].pg);
    free(p->slots);
    free(p->conninfo);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
