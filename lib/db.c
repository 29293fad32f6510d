#include "db.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

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
    int connecting; /* slots being opened by db_pool_acquire now */
    /* Back-off after a failed connect: no attempt before retry_at. */
    int64_t retry_at_ms;
    long backoff_ms;
    _Atomic uint64_t slow_queries;
    _Atomic size_t open_count; /* connections established now */
    void (*observe)(void *ctx, double ms, int slow);
    void *observe_ctx;
};

/* A statement PostgreSQL rolled back to break a deadlock or a
 * serialization conflict runs at most this many times in all, the n-th
 * rerun after n * DB_CONFLICT_PAUSE_MS plus up to DB_CONFLICT_PAUSE_MS. */
#define DB_CONFLICT_TRIES    4
#define DB_CONFLICT_PAUSE_MS 10
#define DB_BACKOFF_MIN_MS    50
#define DB_BACKOFF_MAX_MS    1000

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

/* Wait until pg's socket is ready for events or deadline passes: 1 ready,
 * 0 timed out, -1 error (no socket, poll failed). */
static int db_wait(PGconn *pg, short events, int64_t deadline)
{
    int fd = PQsocket(pg);
    if (fd < 0)
        return -1;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, (int)clock_remaining_ms(deadline));
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* The result of the query just sent on pg (non-blocking), by deadline: the
 * first error result if any, else the last one (PQexec's choice); NULL when
 * the connection broke or (*timed_out set) the deadline passed. */
static PGresult *db_collect(PGconn *pg, int64_t deadline, int *timed_out)
{
    PGresult *keep = NULL, *r;
    int f, w = -1;
    *timed_out = 0;
    while ((f = PQflush(pg)) == 1) {
        /* Output still queued: wait until the socket takes more, reading
         * what the server sends meanwhile so it cannot stall on us. */
        w = db_wait(pg, POLLOUT | POLLIN, deadline);
        if (w <= 0 || PQconsumeInput(pg) == 0)
            goto fail;
    }
    if (f < 0)
        return NULL;
    for (;;) {
        while (PQisBusy(pg)) {
            w = db_wait(pg, POLLIN, deadline);
            if (w <= 0 || PQconsumeInput(pg) == 0)
                goto fail;
        }
        r = PQgetResult(pg);
        if (r == NULL)
            return keep;
        if (keep != NULL && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
            PQclear(r);
        } else {
            PQclear(keep);
            keep = r;
        }
    }
fail:
    *timed_out = w == 0;
    PQclear(keep);
    return NULL;
}

/* One libpq message into err, without its trailing newline (one-line logs). */
static void db_errmsg(char *err, size_t errlen, const char *what, const char *msg)
{
    snprintf(err, errlen, "%s: %s", what, msg != NULL && *msg ? msg : "connection lost");
    char *nl = strchr(err, '\n');
    if (nl != NULL)
        *nl = '\0';
}

/* Connecting may take this long at most, even with a longer deadline: a
 * server that does not finish a handshake in that time is not healthy. */
#define DB_CONNECT_MS 2000
/* How soon the server notices a client gone mid-query (PostgreSQL 14+):
 * a query abandoned at its deadline stops there, not at statement_timeout. */
#define DB_CLIENT_CHECK_MS 1000

/* Set a fresh connection up by deadline: statement_timeout, then (best
 * effort: older servers lack it) client_connection_check_interval, then
 * every statement prepared, all in one pipeline, so a new connection costs
 * one round trip instead of one per statement (a cold pool under load used
 * to spend its requests' deadlines preparing). 0, or -1 with err filled. */
static int db_setup(struct db_pool *p, PGconn *pg, int64_t deadline, char *err, size_t errlen)
{
    char timeout_sql[64], check_sql[64];
    size_t nprep = p->prepared ? p->nstmts : 0, got = 0;
    int syncs = 0, w = -1, f, failed = 0;
    snprintf(timeout_sql, sizeof(timeout_sql), "SET statement_timeout = %ld",
             p->statement_timeout_ms);
    snprintf(check_sql, sizeof(check_sql), "SET client_connection_check_interval = %d",
             DB_CLIENT_CHECK_MS);
    /* Three sync points: an error aborts only the rest of its segment. */
    int ok = PQenterPipelineMode(pg) &&
             PQsendQueryParams(pg, timeout_sql, 0, NULL, NULL, NULL, NULL, 0) &&
             PQpipelineSync(pg) && PQsendQueryParams(pg, check_sql, 0, NULL, NULL, NULL, NULL, 0) &&
             PQpipelineSync(pg);
    for (size_t i = 0; ok && i < nprep; i++)
        ok = PQsendPrepare(pg, p->stmts[i].name, p->stmts[i].sql, p->stmts[i].nparams, NULL);
    if (!ok || !PQpipelineSync(pg)) {
        db_errmsg(err, errlen, "PostgreSQL set-up", PQerrorMessage(pg));
        return -1;
    }
    while ((f = PQflush(pg)) == 1) {
        w = db_wait(pg, POLLOUT | POLLIN, deadline);
        if (w <= 0 || PQconsumeInput(pg) == 0)
            goto broken;
    }
    if (f < 0)
        goto broken;
    /* Each query gives one result (then NULL); each sync a PIPELINE_SYNC.
     * Result k is SET statement_timeout (0), the check interval (1) or
     * statement k - 2. */
    while (syncs < 3) {
        while (PQisBusy(pg)) {
            w = db_wait(pg, POLLIN, deadline);
            if (w <= 0 || PQconsumeInput(pg) == 0)
                goto broken;
        }
        PGresult *r = PQgetResult(pg);
        if (r == NULL)
            continue;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            syncs++;
        } else {
            if (st != PGRES_COMMAND_OK && got != 1 && !failed) {
                failed = 1;
                db_errmsg(err, errlen,
                          got == 0          ? "SET statement_timeout"
                          : got - 2 < nprep ? p->stmts[got - 2].name
                                            : "PostgreSQL set-up",
                          PQresultErrorMessage(r));
            }
            got++;
        }
        PQclear(r);
    }
    if (!PQexitPipelineMode(pg)) {
        db_errmsg(err, errlen, "PostgreSQL set-up", PQerrorMessage(pg));
        return -1;
    }
    return failed ? -1 : 0;
broken:
    db_errmsg(err, errlen, "PostgreSQL set-up", w == 0 ? "timed out" : PQerrorMessage(pg));
    return -1;
}

/* Open and prepare a connection by deadline; NULL and err filled on failure.
 * Runs without the pool lock. PQconnectStart + PQconnectPoll because
 * connect_timeout is not enforced by the non-blocking API, and a stopped
 * server still completes TCP or unix handshakes in the kernel. */
static PGconn *db_connect(struct db_pool *p, int64_t deadline, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "application_name", NULL};
    const char *vals[] = {p->conninfo, "access", NULL};
    int64_t until = clock_deadline_min(deadline, clock_deadline_in(DB_CONNECT_MS));
    PGconn *pg = PQconnectStartParams(keys, vals, 1);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    if (pg == NULL) {
        snprintf(err, errlen, "PostgreSQL connection failed: out of memory");
        goto fail;
    }
    while (PQstatus(pg) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int w = db_wait(pg, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, until);
        if (w <= 0) {
            db_errmsg(err, errlen, "PostgreSQL connection failed",
                      w == 0 ? "no answer before the deadline" : PQerrorMessage(pg));
            goto fail;
        }
        st = PQconnectPoll(pg);
    }
    if (st != PGRES_POLLING_OK || PQsetnonblocking(pg, 1) != 0) {
        db_errmsg(err, errlen, "PostgreSQL connection failed", PQerrorMessage(pg));
        goto fail;
    }
    if (db_setup(p, pg, deadline, err, errlen) != 0)
        goto fail;
    return pg;
fail:
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

/* A connect failed or a connection hung: no new connection before the
 * back-off delay (doubling), so a sick server costs callers an immediate
 * DB_UNAVAILABLE instead of one wait each. */
static void db_backoff(struct db_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->backoff_ms = clock_backoff_next(p->backoff_ms, DB_BACKOFF_MIN_MS, DB_BACKOFF_MAX_MS);
    p->retry_at_ms = clock_now_ms() + p->backoff_ms;
    pthread_mutex_unlock(&p->mu);
}

/* Ensure c has a live connection by deadline, honouring the back-off. 0 or
 * -1. */
static int db_ensure(struct db_pool *p, struct db_conn *c, int64_t deadline, char *err,
                     size_t errlen)
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
    c->pg = db_connect(p, deadline, err, errlen);
    if (c->pg == NULL) {
        db_backoff(p);
        log_msg(LOG_WARN, "%s", err);
        return -1;
    }
    atomic_fetch_add(&p->open_count, 1);
    pthread_mutex_lock(&p->mu);
    p->backoff_ms = 0;
    p->retry_at_ms = 0;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

struct db_conn *db_pool_acquire(struct db_pool *p, int64_t deadline, char *err, size_t errlen)
{
    struct timespec until = clock_deadline_ts(deadline);
    struct db_conn *c = NULL;
    int opening = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* An open idle connection first; else an unopened slot, if fewer
         * than DB_CONNECTS_AT_ONCE connections are being opened (on a
         * 2-core box, 34 simultaneous connects took longer than /health's
         * 1 s deadline, and each timeout started a back-off: 503s). */
        struct db_conn *unopened = NULL;
        for (size_t i = 0; i < p->size && c == NULL; i++) {
            if (p->slots[i].busy)
                continue;
            if (p->slots[i].pg != NULL)
                c = &p->slots[i];
            else if (unopened == NULL)
                unopened = &p->slots[i];
        }
        if (c == NULL && unopened != NULL && p->connecting < DB_CONNECTS_AT_ONCE) {
            c = unopened;
            opening = 1;
            p->connecting++;
        }
        if (c != NULL)
            break;
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) != 0) {
            pthread_mutex_unlock(&p->mu);
            snprintf(err, errlen, "every database connection stayed busy until the deadline");
            return NULL;
        }
    }
    c->busy = 1;
    pthread_mutex_unlock(&p->mu);
    int rc = db_ensure(p, c, deadline, err, errlen);
    if (opening) {
        /* Another waiter may open the next one now. */
        pthread_mutex_lock(&p->mu);
        p->connecting--;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    if (rc != 0) {
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

/* Send s and collect its result by deadline (see db_collect). */
static PGresult *db_run(struct db_conn *c, const struct db_stmt *s, const char *const *values,
                        int64_t deadline, int *timed_out)
{
    int sent = c->pool->prepared
                   ? PQsendQueryPrepared(c->pg, s->name, s->nparams, values, NULL, NULL, 0)
                   : PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, values, NULL, NULL, 0);
    *timed_out = 0;
    return sent ? db_collect(c->pg, deadline, timed_out) : NULL;
}

/* Whether r is PostgreSQL rolling a statement back to break a deadlock
 * (40P01) or a serialization conflict (40001). */
static int db_conflict(const PGresult *r)
{
    if (r == NULL || PQresultStatus(r) != PGRES_FATAL_ERROR)
        return 0;
    const char *st = db_sqlstate(r);
    return strcmp(st, "40P01") == 0 || strcmp(st, "40001") == 0;
}

enum db_result db_exec(struct db_conn *c, size_t stmt, const char *const *values, int64_t deadline,
                       PGresult **res, double *ms)
{
    struct db_pool *p = c->pool;
    const struct db_stmt *s = &p->stmts[stmt];
    double t0 = clock_ms();
    char err[256];
    int timed_out = 0;
    *res = NULL;
    if (ms != NULL)
        *ms = 0;
    if (c->pg == NULL && db_ensure(p, c, deadline, err, sizeof(err)) != 0)
        return DB_UNAVAILABLE;
    PGresult *r = db_run(c, s, values, deadline, &timed_out);
    if (!timed_out && PQstatus(c->pg) == CONNECTION_BAD && s->idempotent) {
        /* A connection that died while idle (server restart): one retry on
         * a fresh one is safe for idempotent statements. */
        PQclear(r);
        r = NULL;
        if (db_ensure(p, c, deadline, err, sizeof(err)) == 0)
            r = db_run(c, s, values, deadline, &timed_out);
    }
    /* PostgreSQL rolled the statement (its whole transaction: every
     * statement here runs alone) back to break a deadlock or a
     * serialization conflict, so running it again is safe. Not at once: the
     * other side has yet to wake up and take the rows this one let go of,
     * and an immediate rerun can grab one of them first and deadlock with
     * it again. A short random pause, a few times, within the deadline. */
    for (int tries = 1; !timed_out && db_conflict(r) && tries < DB_CONFLICT_TRIES; tries++) {
        long pause =
            (long)(DB_CONFLICT_PAUSE_MS * tries + randombytes_uniform(DB_CONFLICT_PAUSE_MS));
        if (clock_remaining_ms(deadline) <= pause)
            break;
        log_msg(LOG_INFO, "statement %s: SQLSTATE %s, run again in %ld ms", s->name, db_sqlstate(r),
                pause);
        PQclear(r);
        clock_sleep_ms(pause);
        r = db_run(c, s, values, deadline, &timed_out);
    }
    double dur = clock_ms() - t0;
    if (ms != NULL)
        *ms = dur;
    if (timed_out) {
        /* Mid-protocol: the connection cannot be reused. */
        log_msg(LOG_WARN, "statement %s abandoned at its deadline after %.0f ms", s->name, dur);
        db_close(c);
        db_backoff(p);
        return DB_TIMEOUT;
    }
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

int db_error_unavailable(const PGresult *res)
{
    const char *st = db_sqlstate(res);
    return strcmp(st, "57014") == 0 || strncmp(st, "57P", 3) == 0 || strncmp(st, "08", 2) == 0 ||
           strncmp(st, "53", 2) == 0;
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

int db_ping(struct db_pool *p, size_t stmt, int64_t deadline)
{
    char err[256];
    PGresult *r = NULL;
    struct db_conn *c = db_pool_acquire(p, deadline, err, sizeof(err));
    if (c == NULL)
        return -1;
    enum db_result rc = db_exec(c, stmt, NULL, deadline, &r, NULL);
    db_pool_release(p, c);
    PQclear(r);
    return rc == DB_OK ? 0 : -1;
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

const char *db_pool_stmt_name(const struct db_pool *p, size_t stmt)
{
    return p != NULL && stmt < p->nstmts ? p->stmts[stmt].name : "?";
}
