#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "handlers.h"
#include "json.h"
#include "log.h"
#include "problem.h"
#include "utf8.h"

static const handler_fn http_handlers[ROUTE__COUNT] = {
    [ROUTE_HEALTH] = handle_health,
    [ROUTE_HEALTH_LIVE] = handle_health_live,
    [ROUTE_HEALTH_READY] = handle_health_ready,
    [ROUTE_JWKS] = handle_jwks,
    [ROUTE_SIGNUP] = handle_signup,
    [ROUTE_LOGIN] = handle_login,
    [ROUTE_REFRESH] = handle_refresh,
    [ROUTE_LOGOUT] = handle_logout,
    [ROUTE_ME_GET] = handle_me_get,
    [ROUTE_ME_PATCH] = handle_me_patch,
    [ROUTE_PASSWORD] = handle_password,
    [ROUTE_SESSIONS] = handle_sessions,
    [ROUTE_SESSION_DELETE] = handle_session_delete,
    [ROUTE_AUDIT] = handle_audit,
    [ROUTE_METRICS] = handle_metrics,
    [ROUTE_CLIENTS_CREATE] = handle_clients_create,
    [ROUTE_CLIENTS_LIST] = handle_clients_list,
    [ROUTE_CLIENT_DELETE] = handle_client_delete,
    [ROUTE_CLIENT_KEY_ADD] = handle_client_key_add,
    [ROUTE_CLIENT_KEY_DELETE] = handle_client_key_delete,
    [ROUTE_OAUTH_TOKEN] = handle_oauth_token,
    [ROUTE_OAUTH_INTROSPECT] = handle_oauth_introspect,
    [ROUTE_OAUTH_REVOKE] = handle_oauth_revoke,
    [ROUTE_OAUTH_METADATA] = handle_oauth_metadata,
    [ROUTE_ADMIN_USERS] = handle_admin_users,
    [ROUTE_ADMIN_USER_GET] = handle_admin_user_get,
    [ROUTE_ADMIN_USER_PATCH] = handle_admin_user_patch,
    [ROUTE_ADMIN_USER_DELETE] = handle_admin_user_delete,
    [ROUTE_ADMIN_USER_SESSIONS_DELETE] = handle_admin_user_sessions_delete,
    [ROUTE_ADMIN_USER_AUDIT] = handle_admin_user_audit,
    [ROUTE_ME_DELETE] = handle_me_delete,
    [ROUTE_VERIFY_REQUEST] = handle_verify_request,
    [ROUTE_VERIFY] = handle_verify,
    [ROUTE_RECOVER] = handle_recover,
    [ROUTE_RECOVER_CONFIRM] = handle_recover_confirm,
    [ROUTE_MFA_TOTP_ENROL] = handle_mfa_enrol,
    [ROUTE_MFA_TOTP_REMOVE] = handle_mfa_remove,
    [ROUTE_MFA_TOTP_CONFIRM] = handle_mfa_confirm,
    [ROUTE_LOGIN_MFA] = handle_login_mfa,
};

static void http_drain(struct request *req, size_t n);

/* Rate-limit class charged per client address before the handler runs;
 * -1: none here (health and metrics are never limited; the authenticated
 * routes are charged per user once the token is checked). */
static const int http_ip_class[ROUTE__COUNT] = {
    [ROUTE_HEALTH] = -1,
    [ROUTE_HEALTH_LIVE] = -1,
    [ROUTE_HEALTH_READY] = -1,
    [ROUTE_METRICS] = -1,
    [ROUTE_JWKS] = RL_ANONYMOUS,
    [ROUTE_REFRESH] = RL_ANONYMOUS,
    [ROUTE_SIGNUP] = RL_SIGNUP,
    [ROUTE_LOGIN] = RL_LOGIN,
    [ROUTE_LOGOUT] = -1,
    [ROUTE_ME_GET] = -1,
    [ROUTE_ME_PATCH] = -1,
    [ROUTE_PASSWORD] = -1,
    [ROUTE_SESSIONS] = -1,
    [ROUTE_SESSION_DELETE] = -1,
    [ROUTE_AUDIT] = -1,
    /* Clients and admin: per user or client once authenticated; the OAuth
     * endpoints per client id (ratelimit_token) in their handler. */
    [ROUTE_CLIENTS_CREATE] = -1,
    [ROUTE_CLIENTS_LIST] = -1,
    [ROUTE_CLIENT_DELETE] = -1,
    [ROUTE_CLIENT_KEY_ADD] = -1,
    [ROUTE_CLIENT_KEY_DELETE] = -1,
    [ROUTE_OAUTH_TOKEN] = -1,
    [ROUTE_OAUTH_INTROSPECT] = -1,
    [ROUTE_OAUTH_REVOKE] = -1,
    [ROUTE_OAUTH_METADATA] = RL_ANONYMOUS,
    [ROUTE_ADMIN_USERS] = -1,
    [ROUTE_ADMIN_USER_GET] = -1,
    [ROUTE_ADMIN_USER_PATCH] = -1,
    [ROUTE_ADMIN_USER_DELETE] = -1,
    [ROUTE_ADMIN_USER_SESSIONS_DELETE] = -1,
    [ROUTE_ADMIN_USER_AUDIT] = -1,
    [ROUTE_ME_DELETE] = -1,
    [ROUTE_VERIFY_REQUEST] = -1,
    [ROUTE_VERIFY] = RL_RECOVER,
    [ROUTE_RECOVER] = RL_RECOVER,
    [ROUTE_RECOVER_CONFIRM] = RL_RECOVER,
    [ROUTE_MFA_TOTP_ENROL] = -1,
    [ROUTE_MFA_TOTP_REMOVE] = -1,
    [ROUTE_MFA_TOTP_CONFIRM] = -1,
    /* Login's second step shares login's per-address budget. */
    [ROUTE_LOGIN_MFA] = RL_LOGIN,
};

/* Bodies past max_body_bytes are read and dropped up to this much, so the
 * web server sees its request consumed and relays our 413 (nginx refuses
 * anything larger itself). */
#define HTTP_DRAIN_MAX (1024 * 1024)

void http_header(struct response *res, const char *name, const char *value)
{
    buf_printf(&res->headers, "%s: %s\r\n", name, value);
}

int http_ratelimit(struct app *app, struct request *req, struct response *res,
                   enum ratelimit_class cls, const char *id)
{
    struct ratelimit_verdict v;
    char policy[96], rl[96], retry[24];
    if (app->rl == NULL || id == NULL || *id == '\0' || ratelimit_check(app->rl, cls, id, &v) != 0)
        return 0;
    const struct ratelimit_policy *p = ratelimit_policy(app->rl, cls);
    if (ratelimit_format_headers(p, &v, policy, sizeof(policy), rl, sizeof(rl)) == 0) {
        http_header(res, "RateLimit-Policy", policy);
        http_header(res, "RateLimit", rl);
    }
    if (v.granted == 1)
        return 0;
    http_drain(req, HTTP_DRAIN_MAX);
    http_problem(res, 429, "rate_limited", "too many requests; retry after the indicated delay",
                 NULL);
    snprintf(retry, sizeof(retry), "%ld", v.retry_after_s > 0 ? v.retry_after_s : 1);
    http_header(res, "Retry-After", retry);
    metrics_ratelimited(app->metrics, app->slot, (enum metrics_rl_class)cls);
    return -1;
}

void http_problem(struct response *res, int status, const char *code, const char *detail,
                  const char *field)
{
    res->status = status;
    res->content_type = "application/problem+json";
    buf_reset(&res->body);
    problem_render(&res->body, status, code, detail, field);
}

int http_is_media_type(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (ct == NULL)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, n) != 0)
        return 0;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

int http_is_json_type(const char *ct)
{
    return http_is_media_type(ct, "application/json");
}

/* A header value that is stored or shown (SPEC §4): untrusted bytes made
 * valid UTF-8 (U+FFFD for bad bytes) and cut at UTF8_HEADER_MAX bytes. */
static const char *http_header_param(struct request *req, const char *name)
{
    const char *v = FCGX_GetParam(name, req->fcgx->envp);
    if (v == NULL)
        return NULL;
    size_t n = strlen(v);
    size_t cap = (n < UTF8_HEADER_MAX / 3 ? n * 3 : UTF8_HEADER_MAX) + 1;
    char *out = arena_alloc(req->arena, cap);
    utf8_sanitize(v, n, out, cap);
    return out;
}

/* Read exactly n bytes of the body (FCGX_GetStr does not stop at
 * CONTENT_LENGTH by itself). 0 or -1 on a short read. */
static int http_read_exact(struct request *req, char *dst, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t want = n - got > 65536 ? 65536 : n - got;
        int r = FCGX_GetStr(dst + got, (int)want, req->fcgx->in);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static void http_drain(struct request *req, size_t n)
{
    char scratch[8192];
    while (n > 0) {
        size_t want = n > sizeof(scratch) ? sizeof(scratch) : n;
        int r = FCGX_GetStr(scratch, (int)want, req->fcgx->in);
        if (r <= 0)
            return;
        n -= (size_t)r;
    }
}

/* Read the request's input to its end (the empty FCGI_STDIN record) before
 * the request is finished: on a kept connection whatever is left would be
 * read as the start of the next request, a protocol error that closes the
 * connection under the web server's next request (a 502 for a POST). More
 * than HTTP_DRAIN_MAX left: the connection is closed instead. */
static void http_finish_input(FCGX_Request *fcgx)
{
    char scratch[8192];
    size_t left = HTTP_DRAIN_MAX;
    for (;;) {
        int r = FCGX_GetStr(scratch, (int)sizeof(scratch), fcgx->in);
        if (r <= 0)
            return; /* end of input (or an error, which closes anyway) */
        if ((size_t)r >= left) {
            fcgx->keepConnection = 0;
            return;
        }
        left -= (size_t)r;
    }
}

/* Parse CONTENT_LENGTH strictly; -1 when malformed. */
static long long http_content_length(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    long long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (1LL << 40))
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* Read and check the body for the matched route. 0 when the handler may
 * run; otherwise res holds the problem. */
static int http_prepare_body(struct app *app, struct request *req, struct response *res)
{
    long long len = http_content_length(FCGX_GetParam("CONTENT_LENGTH", req->fcgx->envp));
    char detail[256];
    if (len < 0) {
        http_problem(res, 400, "invalid_json", "the Content-Length header is malformed", NULL);
        return -1;
    }
    if (len > app->cfg->max_body_bytes) {
        if (len <= HTTP_DRAIN_MAX)
            http_drain(req, (size_t)len);
        snprintf(detail, sizeof(detail), "the request body is %lld bytes; at most %ld are allowed",
                 len, app->cfg->max_body_bytes);
        http_problem(res, 413, "payload_too_large", detail, NULL);
        return -1;
    }
    if (req->route.body == ROUTE_BODY_NONE) {
        http_drain(req, (size_t)len);
        return 0;
    }
    char *body = arena_alloc(req->arena, (size_t)len + 1);
    if (http_read_exact(req, body, (size_t)len) != 0) {
        http_problem(res, 400, "invalid_json", "the request body ended before Content-Length",
                     NULL);
        return -1;
    }
    body[len] = '\0';
    req->body = body;
    req->body_len = (size_t)len;
    if (req->route.body == ROUTE_BODY_FORM)
        return 0; /* OAuth answers its own errors (fcgi/handlers_oauth.c) */
    if (!http_is_json_type(req->content_type)) {
        snprintf(detail, sizeof(detail), "Content-Type must be application/json, not '%.100s'",
                 req->content_type ? req->content_type : "(none)");
        http_problem(res, 415, "unsupported_media_type", detail, NULL);
        return -1;
    }
    switch (json_parse_object(req->body, req->body_len, &req->json, detail, sizeof(detail))) {
    case JSON_PARSE_OK:
        return 0;
    case JSON_PARSE_NOT_OBJECT:
        http_problem(res, 422, "validation_failed", detail, "");
        return -1;
    case JSON_PARSE_INVALID:
    default:
        http_problem(res, 400, "invalid_json", detail, NULL);
        return -1;
    }
}

static void http_write(struct request *req, struct response *res)
{
    struct buf out = {0};
    int has_body = res->status != 204 && res->status != 304;
    buf_printf(&out, "Status: %d %s\r\n", res->status, problem_title(res->status));
    if (has_body && res->status == 202 && res->body.len == 0) {
        buf_puts(&out, "Content-Length: 0\r\n"); /* "202, no body" (SPEC §9): no type either */
    } else if (has_body) {
        buf_printf(&out, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                   res->content_type ? res->content_type : "application/json", res->body.len);
    }
    buf_printf(&out, "X-Request-ID: %s\r\nCache-Control: %s\r\n", req->request_id,
               res->cache_control ? res->cache_control : "no-store");
    /* SPEC §4: every 401 carries a challenge; handlers set the precise one. */
    if (res->status == 401 &&
        (res->headers.data == NULL || strstr(res->headers.data, "WWW-Authenticate:") == NULL))
        buf_puts(&out, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
    if (res->headers.len)
        buf_append(&out, res->headers.data, res->headers.len);
    buf_puts(&out, "\r\n");
    if (has_body && res->body.len && strcmp(req->method, "HEAD") != 0)
        buf_append(&out, res->body.data, res->body.len);
    FCGX_PutStr(out.data, (int)out.len, req->fcgx->out);
    buf_free(&out);
}

void http_serve(struct app *app, FCGX_Request *fcgx, struct arena *arena)
{
    double t0 = clock_ms();
    struct request req = {.fcgx = fcgx,
                          .arena = arena,
                          .deadline = clock_deadline_in(app->cfg->request_timeout_ms),
                          .db_ms = -1,
                          .hash_ms = -1};
    struct response res = {.status = 200};
    const char *method = FCGX_GetParam("REQUEST_METHOD", fcgx->envp);
    const char *uri = FCGX_GetParam("REQUEST_URI", fcgx->envp);
    const char *route_name = "unmatched";
    unsigned mroute = 0; /* metrics route index: 0 unmatched, else id + 1 */

    snprintf(req.method, sizeof(req.method), "%s", method ? method : "");
    reqid_choose(FCGX_GetParam("HTTP_X_REQUEST_ID", fcgx->envp), req.request_id);
    if (uri == NULL)
        uri = FCGX_GetParam("SCRIPT_NAME", fcgx->envp);
    if (uri == NULL)
        uri = "/";
    const char *q = strchr(uri, '?');
    req.path_len = q ? (size_t)(q - uri) : strlen(uri);
    req.path = arena_strndup(arena, uri, req.path_len);
    req.query = q ? arena_strdup(arena, q + 1) : "";
    req.content_type = http_header_param(&req, "CONTENT_TYPE");
    req.remote_addr = http_header_param(&req, "REMOTE_ADDR");
    req.user_agent = http_header_param(&req, "HTTP_USER_AGENT");

    switch (router_match(req.method, req.path, req.path_len, &req.route)) {
    case ROUTER_NOT_FOUND:
        http_drain(&req, HTTP_DRAIN_MAX);
        http_problem(&res, 404, "not_found", "no such resource", NULL);
        break;
    case ROUTER_METHOD_NOT_ALLOWED: {
        char detail[128];
        http_drain(&req, HTTP_DRAIN_MAX);
        snprintf(detail, sizeof(detail), "%s is not allowed here; allowed: %s", req.method,
                 req.route.allow);
        http_problem(&res, 405, "method_not_allowed", detail, NULL);
        http_header(&res, "Allow", req.route.allow);
        break;
    }
    case ROUTER_OK:
        route_name = req.route.template_path;
        mroute = (unsigned)req.route.id + 1;
        if (http_ip_class[req.route.id] >= 0) {
            char who[RATELIMIT_ADDR_KEY_MAX]; /* one bucket per IPv4 address or IPv6 /64 */
            (void)ratelimit_addr_key(req.remote_addr ? req.remote_addr : "", who, sizeof(who));
            if (http_ratelimit(app, &req, &res, (enum ratelimit_class)http_ip_class[req.route.id],
                               who) != 0)
                break;
        }
        if (http_prepare_body(app, &req, &res) != 0)
            break;
        if (clock_remaining_ms(req.deadline) == 0) {
            /* Spent before the handler could start (a slow body upload). */
            http_problem(&res, 503, "unavailable", "the request ran out of time", NULL);
            http_header(&res, "Retry-After", "1");
            break;
        }
        http_handlers[req.route.id](app, &req, &res);
        break;
    }
    http_write(&req, &res);
    if (req.json != NULL)
        json_object_put(req.json);
    http_finish_input(fcgx);
    FCGX_Finish_r(fcgx);

    double dur_ms = clock_ms() - t0;
    metrics_http(app->metrics, app->slot, mroute, metrics_method_index(req.method), res.status,
                 dur_ms / 1000.0);
    if (req.hash_ms >= 0)
        metrics_hash_observe(app->metrics, app->slot, req.hash_ms / 1000.0);
    struct log_request lr = {
        .request_id = req.request_id,
        .method = req.method,
        .route = route_name,
        .status = res.status,
        .dur_ms = dur_ms,
        .hash_ms = req.hash_ms,
        .db_ms = req.db_ms,
        .cache = req.cache,
    };
    log_request(&lr);
    buf_free(&res.headers);
    buf_free(&res.body);
}
