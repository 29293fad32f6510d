/* Health endpoints: /health (components), /health/live, /health/ready. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "handlers.h"

#ifndef ACCESS_VERSION
#define ACCESS_VERSION "dev"
#endif

/* SELECT 1 on a pooled connection: 0 when PostgreSQL answered. */
static int health_db_ping(struct app *app, struct request *req)
{
    char err[256];
    PGresult *r = NULL;
    double ms = 0;
    struct db_conn *c = db_pool_acquire(app->db, 1000, err, sizeof(err));
    if (c == NULL)
        return -1;
    enum db_result rc = db_exec(c, STMT_PING, NULL, &r, &ms);
    db_pool_release(app->db, c);
    PQclear(r);
    req->db_ms = ms;
    return rc == DB_OK ? 0 : -1;
}

static int health_draining(struct app *app)
{
    return atomic_load(&app->stopping) || atomic_load(&app->shm->draining);
}

void handle_health(struct app *app, struct request *req, struct response *res)
{
    int db_up = health_db_ping(app, req) == 0;
    const char *redis = "disabled";
    if (app->kv != NULL)
        redis = kv_ping(app->kv) == 0 ? "up" : "down";
    struct db_pool_stats st;
    db_pool_stats(app->db, &st);
    const char *status = !db_up ? "down" : strcmp(redis, "down") == 0 ? "degraded" : "ok";
    res->status = db_up ? 200 : 503;
    buf_printf(
        &res->body,
        "{\"status\":\"%s\",\"checks\":{\"database\":{\"status\":\"%s\",\"pool\":\"%zu/%zu\"},"
        "\"redis\":{\"status\":\"%s\"}},\"version\":\"%s\",\"uptime_seconds\":%llu}",
        status, db_up ? "up" : "down", st.open, st.size, redis, ACCESS_VERSION,
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
