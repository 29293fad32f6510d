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
/* The account's life cycle (handlers_lifecycle.c). */
void handle_me_delete(struct app *app, struct request *req, struct response *res);
void handle_verify_request(struct app *app, struct request *req, struct response *res);
void handle_verify(struct app *app, struct request *req, struct response *res);
void handle_recover(struct app *app, struct request *req, struct response *res);
void handle_recover_confirm(struct app *app, struct request *req, struct response *res);
/* The second factor (handlers_mfa.c). */
void handle_mfa_enrol(struct app *app, struct request *req, struct response *res);
void handle_mfa_confirm(struct app *app, struct request *req, struct response *res);
void handle_mfa_remove(struct app *app, struct request *req, struct response *res);
void handle_login_mfa(struct app *app, struct request *req, struct response *res);

/* Shared by the handlers of lib/accounts.h use cases (handlers_accounts.c). */
/* A use-case status as its problem document (and headers). */
void acc_fail(struct response *res, enum accounts_status st, const struct accounts_req *r);
/* A use-case request for req (arena, client, deadline). */
void acc_req(struct request *req, struct accounts_req *r);
/* Copy what the use case cost into the request log fields. */
void acc_done(struct request *req, const struct accounts_req *r);
/* A required (or optional) string member of the JSON body: 0 with out/len,
 * 1 when optional and absent, -1 with the 422 set. */
int acc_str(struct request *req, struct response *res, const char *name, int required,
            const char **out, size_t *len);
/* Authenticate the Bearer token and charge the per-user rate limit: 0, or
 * -1 with the 401/429/503 set. profile may be NULL. */
int acc_auth(struct app *app, struct request *req, struct response *res, struct accounts_req *r,
             struct accounts_principal *p, struct cache_value **profile);

/* Shared by the handler files (handlers_accounts.c). */
/* Map a use-case status to a problem document. */
void acc_fail(struct response *res, enum accounts_status st, const struct accounts_req *r);
/* A use-case context for req (arena, client, deadline). */
void acc_req(struct request *req, struct accounts_req *r);
/* Copy what the use case cost into the request log fields. */
void acc_done(struct request *req, const struct accounts_req *r);
/* A string member of the JSON body: 0 set, 1 optional and absent, -1 with
 * the 422 set. */
int acc_str(struct request *req, struct response *res, const char *name, int required,
            const char **out, size_t *len);
/* Authenticate the user's Bearer token (client tokens are refused: 401);
 * 0, or -1 with the problem set. */
int acc_auth(struct app *app, struct request *req, struct response *res, struct accounts_req *r,
             struct accounts_principal *p, struct cache_value **profile);
/* The tokens body of login/refresh, or login's mfa_required answer. */
void acc_tokens_json(struct buf *b, const struct accounts_tokens *t);
/* Query parameter name, percent-decoded into the arena; NULL when absent. */
const char *acc_query(struct request *req, const char *name);

void handle_clients_create(struct app *app, struct request *req, struct response *res);
void handle_clients_list(struct app *app, struct request *req, struct response *res);
void handle_client_delete(struct app *app, struct request *req, struct response *res);
void handle_client_key_add(struct app *app, struct request *req, struct response *res);
void handle_client_key_delete(struct app *app, struct request *req, struct response *res);
void handle_oauth_token(struct app *app, struct request *req, struct response *res);
void handle_oauth_introspect(struct app *app, struct request *req, struct response *res);
void handle_oauth_revoke(struct app *app, struct request *req, struct response *res);
void handle_oauth_metadata(struct app *app, struct request *req, struct response *res);
void handle_admin_users(struct app *app, struct request *req, struct response *res);
void handle_admin_user_get(struct app *app, struct request *req, struct response *res);
void handle_admin_user_patch(struct app *app, struct request *req, struct response *res);
void handle_admin_user_delete(struct app *app, struct request *req, struct response *res);
void handle_admin_user_sessions_delete(struct app *app, struct request *req, struct response *res);
void handle_admin_user_audit(struct app *app, struct request *req, struct response *res);

/* Fold this worker's cache, pool and audit counters into the shared metrics
 * registry (the main loop calls it every second, /metrics and /health
 * before they read). Thread-safe. */
void app_metrics_sync(struct app *app);
/* The same unless another thread is doing it right now (never waits). */
void app_metrics_sync_try(struct app *app);

#endif
