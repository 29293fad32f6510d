/* http: one FastCGI request as the handlers see it, and the response they
 * fill. http_serve() runs the whole request: parameters, request id, route,
 * body (bounded by max_body_bytes, Content-Type checked, JSON parsed), the
 * handler, the response (Content-Length, X-Request-ID and Cache-Control
 * always set), and the request log line.
 *
 * Ownership: everything hanging off a request lives in its arena and dies
 * when http_serve() returns; FastCGI parameter pointers are copied before
 * FCGX_Finish_r. One request thread owns its request. */
#ifndef ACCESS_HTTP_H
#define ACCESS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <fcgiapp.h>
#include <json-c/json.h>

#include "app.h"
#include "arena.h"
#include "buf.h"
#include "reqid.h"
#include "ratelimit.h"
#include "router.h"

struct request {
    FCGX_Request *fcgx;
    struct arena *arena;
    char method[16];
    const char *path;
    size_t path_len;
    const char *query;
    const char *content_type;
    const char *remote_addr;
    const char *user_agent;
    char request_id[REQID_MAX + 1];
    const char *body;
    size_t body_len;
    json_object *json; /* the parsed body of ROUTE_BODY_JSON routes */
    struct route_match route;
    /* The whole-request budget (request_timeout_ms from the start of
     * http_serve) as a lib/clock.h deadline: every wait of the request ends
     * by it; a request past it answers 503 unavailable. */
    int64_t deadline;
    double db_ms;      /* -1 when no query ran */
    double hash_ms;    /* -1 when no hash ran */
    const char *cache; /* "l1", "l2", "db" or NULL */
};

struct response {
    int status;
    const char *content_type;  /* default application/json */
    const char *cache_control; /* default no-store */
    struct buf headers;        /* extra "Name: value\r\n" lines */
    struct buf body;
};

/* Serve one accepted request end to end, then FCGX_Finish_r it. */
void http_serve(struct app *app, FCGX_Request *fcgx, struct arena *arena);

/* Add a header line to the response. */
void http_header(struct response *res, const char *name, const char *value);
/* Make res a problem document (replacing any body). */
void http_problem(struct response *res, int status, const char *code, const char *detail,
                  const char *field);
/* Charge one request of cls by id (client address or user id): sets the
 * RateLimit-Policy / RateLimit headers; 0 allowed, -1 with the 429 problem
 * (and Retry-After) set. */
int http_ratelimit(struct app *app, struct request *req, struct response *res,
                   enum ratelimit_class cls, const char *id);
/* Whether a Content-Type value names the media type want (case-insensitive,
 * surrounding blanks and parameters allowed). */
int http_is_media_type(const char *content_type, const char *want);
/* http_is_media_type(content_type, "application/json"). */
int http_is_json_type(const char *content_type);

#endif
