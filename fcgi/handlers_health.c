/* Health endpoints: /health (components), /health/live, /health/ready. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "handlers.h"

#ifndef ACCESS_VERSION
#define ACCESS_VERSION "dev"
#endif

/* The database check's own budget: /health and /health/ready must answer
 * within 2 s when PostgreSQL hangs (SPEC §5), so a probe never waits long. */
#define HEALTH_DB_MS 1000

/* SELECT 1, in a check shared with concurrent callers that began after
 * this one arrived (probe.h): 0 when PostgreSQL answered in time. */
static int health_db_ping(struct app *app, struct request *req)
{
    int64_t deadline = clock_deadline_min(req->deadline, clock_deadline_in(HEALTH_DB_MS));
    return probe_run(app->db_probe, deadline);
}

static int health_draining(struct app *app)
{
    return atomic_load(&app->stopping) || atomic_load(&app->shm->draining);
}

/* hits/(hits+misses) with at most 4 decimals and no trailing zeros
 * ("0.0", "0.8333", "1.0"), so the body stays canonical compact JSON. */
static const char *health_ratio(uint64_t hits, uint64_t misses, char out[16])
{
    double r = hits + misses ? (double)hits / (double)(hits + misses) : 0.0;
    int n = snprintf(out, 16, "%.4f", r);
    while (n > 3 && out[n - 1] == '0')
        out[--n] = '\0';
    return out;
}

/* Cache counters: hits and misses of all workers (from the registry);
 * entries, bytes and evictions of this worker's L1. */
static void health_cache(struct app *app, struct buf *b)
{
    struct cache_stats c;
    struct l2_stats l;
    char r0[16], r1[16], r2[16];
    /* Fresh totals, unless another thread is folding them in right now
     * (then its result is just as fresh): /health never waits on it. */
    app_metrics_sync_try(app);
    cache_stats(app->l1, &c);
    l2_stats(app->l2, &l);
    uint64_t h1 = c.hits, m1 = c.misses, h2 = l.hits, m2 = l.misses;
    if (app->metrics != NULL) {
        h1 = metrics_cache_total(app->metrics, METRICS_L1, 1);
        m1 = metrics_cache_total(app->metrics, METRICS_L1, 0);
        h2 = metrics_cache_total(app->metrics, METRICS_L2, 1);
        m2 = metrics_cache_total(app->metrics, METRICS_L2, 0);
    }
    const char *inv = app->kv == NULL ? "disabled" : invalidate_up(app->inv) ? "up" : "down";
    /* Top level: share of lookups answered without PostgreSQL. */
    health_ratio(h1 + h2, m1 - (h2 < m1 ? h2 : m1), r0);
    health_ratio(h1, m1, r1);
    health_ratio(h2, m2, r2);
    buf_printf(b,
               ",\"cache\":{\"hit_ratio\":%s,\"l1\":{\"hits\":%llu,\"misses\":%llu,"
               "\"hit_ratio\":%s,\"entries\":%llu,\"bytes\":%llu,\"evictions\":%llu},"
               "\"l2\":{\"hits\":%llu,\"misses\":%llu,\"hit_ratio\":%s,\"pending_writes\":"
               "%llu},\"invalidation\":\"%s\"}",
               r0, (unsigned long long)h1, (unsigned long long)m1, r1,
               (unsigned long long)c.entries, (unsigned long long)c.bytes,
               (unsigned long long)c.evictions, (unsigned long long)h2, (unsigned long long)m2, r2,
               (unsigned long long)l.pending, inv);
}

/* Whether an audit spool alarm is on (SPEC §5): in any worker, from the
 * registry (folded in by health_cache() just before), else this worker's. */
static int health_audit_failing(struct app *app)
{
    struct audit_stats as = {0};
    if (app->audit != NULL)
        audit_stats(app->audit, &as);
    return as.spool_failing || metrics_audit_spool_failing(app->metrics) > 0;
}

void handle_health(struct app *app, struct request *req, struct response *res)
{
    int db_up = health_db_ping(app, req) == 0;
    const char *redis = "disabled";
    if (app->kv != NULL)
        redis = probe_run(app->kv_probe, req->deadline) == 0 ? "up" : "down";
    struct db_pool_stats st;
    db_pool_stats(app->db, &st);
    struct buf cache = {0};
    health_cache(app, &cache); /* first: it folds this worker's counters in */
    int audit_failing = health_audit_failing(app);
    const char *status = !db_up                                        ? "down"
                         : strcmp(redis, "down") == 0 || audit_failing ? "degraded"
                                                                       : "ok";
    res->status = db_up ? 200 : 503;
    buf_printf(&res->body,
               "{\"status\":\"%s\",\"checks\":{\"database\":{\"status\":\"%s\",\"pool\":"
               "\"%zu/%zu\"},\"redis\":{\"status\":\"%s\"}",
               status, db_up ? "up" : "down", st.open, st.size, redis);
    buf_append(&res->body, cache.data, cache.len); /* checks.cache, SPEC §4 */
    buf_free(&cache);
    buf_printf(&res->body, ",\"audit_spool\":{\"status\":\"%s\"}",
               audit_failing ? "failing" : "ok");
    buf_printf(&res->body, "},\"version\":\"%s\",\"uptime_seconds\":%llu}", ACCESS_VERSION,
               (unsigned long long)((uint64_t)time(NULL) - atomic_load(&app->shm->started_unix)));
}

void handle_health_live(struct app *app, struct request *req, struct response *res)
{
    (void)app;
    (void)req;
    buf_puts(&res->body, "{\"status\":\"ok\"}");
}

void handle_health_ready(struct app *app, struct request *req, struct response *res)
{
    if (health_draining(app)) {
        http_problem(res, 503, "unavailable", "the worker is draining for shutdown", NULL);
        http_header(res, "Retry-After", "1");
        return;
    }
    if (health_db_ping(app, req) != 0) {
        http_problem(res, 503, "unavailable", "PostgreSQL is unreachable", NULL);
        http_header(res, "Retry-After", "1");
        return;
    }
    buf_puts(&res->body, "{\"status\":\"ready\"}");
}
