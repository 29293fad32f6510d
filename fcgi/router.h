/* router: maps method + path to a route (SPEC §4). Pure and thread-safe;
 * knows nothing of FastCGI so unit tests link it alone.
 *
 * Paths are matched exactly, segment by segment; `{id}` matches one
 * non-empty segment, returned in match->param (a second one in param2). HEAD is accepted where GET
 * is. A path that matches with another method gives ROUTER_METHOD_NOT_ALLOWED
 * and the Allow header value. */
#ifndef ACCESS_ROUTER_H
#define ACCESS_ROUTER_H

#include <stddef.h>

enum route_id {
    ROUTE_HEALTH = 0,
    ROUTE_HEALTH_LIVE,
    ROUTE_HEALTH_READY,
    ROUTE_JWKS,
    ROUTE_SIGNUP,
    ROUTE_LOGIN,
    ROUTE_REFRESH,
    ROUTE_LOGOUT,
    ROUTE_ME_GET,
    ROUTE_ME_PATCH,
    ROUTE_PASSWORD,
    ROUTE_SESSIONS,
    ROUTE_SESSION_DELETE,
    ROUTE_AUDIT,
    ROUTE_METRICS,
    ROUTE_CLIENTS_CREATE,
    ROUTE_CLIENTS_LIST,
    ROUTE_CLIENT_DELETE,
    ROUTE_CLIENT_KEY_ADD,
    ROUTE_CLIENT_KEY_DELETE,
    ROUTE_OAUTH_TOKEN,
    ROUTE_OAUTH_INTROSPECT,
    ROUTE_OAUTH_REVOKE,
    ROUTE_OAUTH_METADATA,
    ROUTE_ADMIN_USERS,
    ROUTE_ADMIN_USER_GET,
    ROUTE_ADMIN_USER_PATCH,
    ROUTE_ADMIN_USER_DELETE,
    ROUTE_ADMIN_USER_SESSIONS_DELETE,
    ROUTE_ADMIN_USER_AUDIT,
    /* the account's life cycle (SPEC §9) */
    ROUTE_ME_DELETE,
    ROUTE_VERIFY_REQUEST,
    ROUTE_VERIFY,
    ROUTE_RECOVER,
    ROUTE_RECOVER_CONFIRM,
    ROUTE_MFA_TOTP_ENROL,
    ROUTE_MFA_TOTP_REMOVE,
    ROUTE_MFA_TOTP_CONFIRM,
    ROUTE_LOGIN_MFA,
    ROUTE__COUNT
};

/* What a route expects of the request before its handler runs. */
enum route_body {
    ROUTE_BODY_NONE = 0, /* any body is drained and ignored */
    ROUTE_BODY_JSON,     /* Content-Type application/json, parsed as an object */
    ROUTE_BODY_FORM,     /* OAuth: read whole; the handler checks type and decodes */
};

struct route_match {
    enum route_id id;
    const char *template_path; /* e.g. "/api/v1/access/sessions/{id}" */
    enum route_body body;
    const char *param; /* start of the first {id} segment in the path, or NULL */
    size_t param_len;
    const char *param2; /* the second {id} segment, or NULL */
    size_t param2_len;
    char allow[64]; /* for 405: "GET, HEAD" */
};

enum router_result { ROUTER_OK = 0, ROUTER_NOT_FOUND, ROUTER_METHOD_NOT_ALLOWED };

/* Match method and path (path without the query string, path_len bytes). */
enum router_result router_match(const char *method, const char *path, size_t path_len,
                                struct route_match *out);
/* The template of a route id (for logs and metrics labels). */
const char *router_template(enum route_id id);
/* Row i of the routing table (`access.fcgi routes`, the OpenAPI parity
 * test): 0 with *method and *path set (static strings), -1 past the end. */
int router_route(size_t i, const char **method, const char **path);

#endif
