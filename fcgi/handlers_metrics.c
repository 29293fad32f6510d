/* GET /metrics: the Prometheus registry of every worker (SPEC §6). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "hashgate.h"

#ifndef ACCESS_VERSION
#define ACCESS_VERSION "dev"
#endif

/* Counters kept per process (the caches, the audit spool) move into the
 * registry as deltas; gauges are set. */
/* Fold in under app->sync_mu (held). */
static void app_metrics_fold(struct app *app)
{
    struct cache_stats c;
    struct l2_stats l;
    struct db_pool_stats d;
    struct audit_stats as = {0};
    cache_stats(app->l1, &c);
    l2_stats(app->l2, &l);
    db_pool_stats(app->db, &d);
    if (app->audit != NULL)
        audit_stats(app->audit, &as);
    struct metrics *m = app->metrics;
    metrics_cache_add(m, app->slot, METRICS_L1, 1, c.hits - app->synced.l1_hits);
    metrics_cache_add(m, app->slot, METRICS_L1, 0, c.misses - app->synced.l1_misses);
    metrics_cache_add(m, app->slot, METRICS_L2, 1, l.hits - app->synced.l2_hits);
    metrics_cache_add(m, app->slot, METRICS_L2, 0, l.misses - app->synced.l2_misses);
    app->synced.l1_hits = c.hits;
    app->synced.l1_misses = c.misses;
    app->synced.l2_hits = l.hits;
    app->synced.l2_misses = l.misses;
    if (as.spooled_total > app->synced.spooled) {
        metrics_audit_spooled(m, app->slot, as.spooled_total - app->synced.spooled);
        app->synced.spooled = as.spooled_total;
    }
    metrics_audit_alarm(m, app->slot, as.spool_failures - app->synced.spool_failures,
                        as.dropped_total - app->synced.audit_dropped);
    app->synced.spool_failures = as.spool_failures;
    app->synced.audit_dropped = as.dropped_total;
    metrics_set_db_pool(m, app->slot, d.open, d.in_use);
    metrics_set_audit_depth(m, app->slot, as.queue_depth);
    metrics_set_audit_spool_failing(m, app->slot, as.spool_failing);
}

void app_metrics_sync(struct app *app)
{
    pthread_mutex_lock(&app->sync_mu);
    app_metrics_fold(app);
    pthread_mutex_unlock(&app->sync_mu);
}

void app_metrics_sync_try(struct app *app)
{
    if (pthread_mutex_trylock(&app->sync_mu) == 0) {
        app_metrics_fold(app);
        pthread_mutex_unlock(&app->sync_mu);
    }
}

/* Whether REMOTE_ADDR is inside metrics_allow. */
static int metrics_allowed(struct app *app, const char *addr)
{
    unsigned char bin[16];
    if (addr == NULL)
        return 0;
    if (inet_pton(AF_INET, addr, bin) == 1)
        return config_metrics_allowed(app->cfg, AF_INET, bin);
    if (inet_pton(AF_INET6, addr, bin) == 1)
        return config_metrics_allowed(app->cfg, AF_INET6, bin);
    return 0;
}

void handle_metrics(struct app *app, struct request *req, struct response *res)
{
    const char *names[ROUTE__COUNT + 1];
    if (!metrics_allowed(app, req->remote_addr)) {
        http_problem(res, 403, "forbidden", "metrics are not served to this address", NULL);
        return;
    }
    if (app->metrics == NULL) {
        http_problem(res, 503, "unavailable", "metrics are off (BENCH_BARE)", NULL);
        return;
    }
    app_metrics_sync(app);
    names[0] = "unmatched";
    for (int i = 0; i < ROUTE__COUNT; i++)
        names[i + 1] = router_template((enum route_id)i);
    struct hashgate_stats hs;
    hashgate_stats(app->shm->hash, &hs);
    struct metrics_external ext = {
        .hash_queue_depth = hs.queued,
        .hash_active = hs.active,
        .hash_rejected_total = hs.rejected,
        .worker_restarts_total = atomic_load(&app->shm->worker_restarts),
    };
    metrics_render(app->metrics, names, ROUTE__COUNT + 1, &ext, ACCESS_VERSION, &res->body);
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
