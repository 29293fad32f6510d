#include "janitor.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

struct janitor {
    struct janitor_options o;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    _Atomic int stopping;
    pthread_mutex_t totals_mu;
    struct janitor_counts totals;
};

/* One cleanup: a statement and the table its rows count for. */
struct janitor_step {
    enum janitor_stmt stmt;
    enum metrics_janitor_table table;
};

/* Tokens of dead sessions before the sessions, so no statement deletes more
 * than a batch through ON DELETE CASCADE. */
static const struct janitor_step janitor_steps[] = {
    {JANITOR_DEAD_TOKENS, METRICS_JT_REFRESH_TOKENS},
    {JANITOR_DEAD_SESSIONS, METRICS_JT_SESSIONS},
    {JANITOR_USED_TOKENS, METRICS_JT_REFRESH_TOKENS},
    {JANITOR_OLD_AUDIT, METRICS_JT_AUDIT_EVENTS},
    {JANITOR_OLD_OUTBOX, METRICS_JT_OUTBOX},
    {JANITOR_EXPIRED_TOKENS, METRICS_JT_ACCOUNT_TOKENS},
    {JANITOR_EXPIRED_MFA, METRICS_JT_MFA_TOKENS},
};

static int janitor_stopping(const _Atomic int *stop)
{
    return stop != NULL && atomic_load(stop);
}

/* Delete batches of one step until a short batch: rows deleted, -1 failed,
 * -2 when a batch found the lock taken (*n holds what went before). */
static int janitor_step_run(const struct janitor_options *o, struct db_conn *c,
                            const struct janitor_step *st, const _Atomic int *stop, long long *n)
{
    char arg[32], lim[32];
    long batch = o->batch > 0 ? o->batch : JANITOR_BATCH_MAX;
    long v = st->stmt == JANITOR_OLD_AUDIT     ? o->audit_retention_days
             : st->stmt == JANITOR_USED_TOKENS ? o->refresh_ttl_s
             : st->stmt == JANITOR_OLD_OUTBOX  ? JANITOR_OUTBOX_RETENTION_S
             : st->stmt == JANITOR_EXPIRED_TOKENS || st->stmt == JANITOR_EXPIRED_MFA
                 ? 0
                 : o->session_retention_s;
    snprintf(arg, sizeof(arg), "%ld", v);
    snprintf(lim, sizeof(lim), "%ld", batch);
    const char *p[JANITOR_NPARAMS] = {arg, lim, JANITOR_LOCK_KEY};
    *n = 0;
    while (!janitor_stopping(stop)) {
        PGresult *res = NULL;
        enum db_result rc =
            db_exec(c, o->stmt_base + st->stmt, p, clock_deadline_in(JANITOR_EXEC_MS), &res, NULL);
        if (rc != DB_OK || PQntuples(res) != 1) {
            log_msg(LOG_WARN, "janitor: step %d failed (SQLSTATE %s)", (int)st->stmt,
                    db_sqlstate(res));
            PQclear(res);
            return -1;
        }
        int locked = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        long rows = strtol(PQgetvalue(res, 0, 1), NULL, 10);
        PQclear(res);
        if (!locked)
            return -2;
        *n += rows;
        metrics_janitor_deleted(o->metrics, o->slot, st->table, (uint64_t)rows);
        if (rows < batch)
            break;
    }
    return 0;
}

enum janitor_round janitor_round(const struct janitor_options *o, const _Atomic int *stop,
                                 struct janitor_counts *out)
{
    char err[256];
    enum janitor_round rc = JANITOR_DONE;
    struct db_conn *c =
        db_pool_acquire(o->db, clock_deadline_in(JANITOR_ACQUIRE_MS), err, sizeof(err));
    if (c == NULL)
        return JANITOR_FAILED;
    for (size_t i = 0; i < sizeof(janitor_steps) / sizeof(janitor_steps[0]); i++) {
        long long n = 0;
        int r = janitor_step_run(o, c, &janitor_steps[i], stop, &n);
        out->n[janitor_steps[i].table] += (uint64_t)n;
        if (r != 0) {
            rc = r == -2 ? JANITOR_BUSY : JANITOR_FAILED;
            break;
        }
    }
    db_pool_release(o->db, c);
    return rc;
}

static void *janitor_main(void *arg)
{
    struct janitor *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!atomic_load(&j->stopping)) {
        struct timespec deadline = clock_deadline(j->o.interval_ms);
        int waited = 0;
        while (!atomic_load(&j->stopping) && waited != ETIMEDOUT)
            waited = pthread_cond_timedwait(&j->wake, &j->mu, &deadline);
        if (atomic_load(&j->stopping))
            break;
        pthread_mutex_unlock(&j->mu);
        struct janitor_counts n = {{0}};
        enum janitor_round rc = janitor_round(&j->o, &j->stopping, &n);
        uint64_t sum = 0;
        pthread_mutex_lock(&j->totals_mu);
        for (int t = 0; t < METRICS_JT__COUNT; t++) {
            j->totals.n[t] += n.n[t];
            sum += n.n[t];
        }
        pthread_mutex_unlock(&j->totals_mu);
        if (sum > 0)
            log_msg(LOG_INFO,
                    "janitor: deleted %llu sessions, %llu refresh tokens, %llu audit events, "
                    "%llu outbox rows, %llu account tokens",
                    (unsigned long long)n.n[METRICS_JT_SESSIONS],
                    (unsigned long long)n.n[METRICS_JT_REFRESH_TOKENS],
                    (unsigned long long)n.n[METRICS_JT_AUDIT_EVENTS],
                    (unsigned long long)n.n[METRICS_JT_OUTBOX],
                    (unsigned long long)n.n[METRICS_JT_ACCOUNT_TOKENS]);
        else if (rc == JANITOR_FAILED)
            log_msg(LOG_DEBUG, "janitor: round skipped (PostgreSQL unavailable)");
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

struct janitor *janitor_start(const struct janitor_options *o, char *err, size_t errlen)
{
    struct janitor *j = xcalloc(1, sizeof(*j));
    pthread_condattr_t ca;
    j->o = *o;
    if (j->o.interval_ms <= 0)
        j->o.interval_ms = 60000;
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_init(&j->totals_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&j->thread, NULL, janitor_main, j) != 0) {
        snprintf(err, errlen, "janitor: cannot start its thread");
        pthread_cond_destroy(&j->wake);
        pthread_mutex_destroy(&j->mu);
        pthread_mutex_destroy(&j->totals_mu);
        free(j);
        return NULL;
    }
    return j;
}

void janitor_signal_stop(struct janitor *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->mu);
    atomic_store(&j->stopping, 1);
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->mu);
}

void janitor_stop(struct janitor *j)
{
    if (j == NULL)
        return;
    janitor_signal_stop(j);
    pthread_join(j->thread, NULL);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->mu);
    pthread_mutex_destroy(&j->totals_mu);
    free(j);
}

void janitor_totals(struct janitor *j, struct janitor_counts *out)
{
    pthread_mutex_lock(&j->totals_mu);
    *out = j->totals;
    pthread_mutex_unlock(&j->totals_mu);
}
