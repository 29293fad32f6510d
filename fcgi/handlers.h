/* handlers: one function per route, grouped by resource in handlers_*.c.
 * Each shapes HTTP around the lib/ use cases: it reads the request, fills
 * the response, and never writes to the FastCGI stream itself. */
#ifndef ACCESS_HANDLERS_H
#define ACCESS_HANDLERS_H

#include "http.h"

typedef void (*handler_fn)(struct app *app, struct request *req, struct response *res);

void handle_health(struct app *app, struct request *req, struct response *res);
void handle_health_live(struct app *app, struct request *req, struct response *res);
void handle_health_ready(struct app *app, struct request *req, struct response *res);
void handle_jwks(struct app *app, struct request *req, struct response *res);
void handle_signup(struct app *app, struct request *req, struct response *res);
void handle_login(struct app *app, struct request *req, struct response *res);
void handle_refresh(struct app *app, struct request *req, struct response *res);
void handle_logout(struct app *app, struct request *req, struct response *res);
void handle_me_get(struct app *app, struct request *req, struct response *res);
void handle_me_patch(struct app *app, struct request *req, struct response *res);
void handle_password(struct app *app, struct request *req, struct response *res);
void handle_sessions(struct app *app, struct request *req, struct response *res);
void handle_session_delete(struct app *app, struct request *req, struct response *res);
void handle_audit(struct app *app, struct request *req, struct response *res);
void handle_metrics(struct app *app, struct request *req, struct response *res);

/* Fold this worker's cache, pool and audit counters into the shared metrics
 * registry (the main loop calls it every second, /metrics and /health
 * before they read). Thread-safe. */
void app_metrics_sync(struct app *app);
/* The same unless another thread is doing it right now (never waits). */
void app_metrics_sync_try(struct app *app);

#endif
