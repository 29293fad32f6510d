#include "router.h"

#include <stdio.h>
#include <string.h>

struct route {
    const char *method;
    const char *path;
    enum route_id id;
    enum route_body body;
};

/* One row per method and path; keep rows of one path together (the Allow
 * header lists them in this order). */
static const struct route router_routes[] = {
    {"GET", "/health", ROUTE_HEALTH, ROUTE_BODY_NONE},
    {"GET", "/health/live", ROUTE_HEALTH_LIVE, ROUTE_BODY_NONE},
    {"GET", "/health/ready", ROUTE_HEALTH_READY, ROUTE_BODY_NONE},
    {"GET", "/.well-known/jwks.json", ROUTE_JWKS, ROUTE_BODY_NONE},
    {"POST", "/api/v1/access/signup", ROUTE_SIGNUP, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/login", ROUTE_LOGIN, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/login/mfa", ROUTE_LOGIN_MFA, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/refresh", ROUTE_REFRESH, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/logout", ROUTE_LOGOUT, ROUTE_BODY_NONE},
    {"GET", "/api/v1/access/me", ROUTE_ME_GET, ROUTE_BODY_NONE},
    {"PATCH", "/api/v1/access/me", ROUTE_ME_PATCH, ROUTE_BODY_JSON},
    {"DELETE", "/api/v1/access/me", ROUTE_ME_DELETE, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/password", ROUTE_PASSWORD, ROUTE_BODY_JSON},
    {"GET", "/api/v1/access/sessions", ROUTE_SESSIONS, ROUTE_BODY_NONE},
    {"DELETE", "/api/v1/access/sessions/{id}", ROUTE_SESSION_DELETE, ROUTE_BODY_NONE},
    {"GET", "/api/v1/access/audit", ROUTE_AUDIT, ROUTE_BODY_NONE},
    {"POST", "/api/v1/access/verify/request", ROUTE_VERIFY_REQUEST, ROUTE_BODY_NONE},
    {"POST", "/api/v1/access/verify", ROUTE_VERIFY, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/recover", ROUTE_RECOVER, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/recover/confirm", ROUTE_RECOVER_CONFIRM, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/mfa/totp", ROUTE_MFA_TOTP_ENROL, ROUTE_BODY_NONE},
    {"DELETE", "/api/v1/access/mfa/totp", ROUTE_MFA_TOTP_REMOVE, ROUTE_BODY_JSON},
    {"POST", "/api/v1/access/mfa/totp/confirm", ROUTE_MFA_TOTP_CONFIRM, ROUTE_BODY_JSON},
    {"GET", "/metrics", ROUTE_METRICS, ROUTE_BODY_NONE},
    {"POST", "/api/v1/access/clients", ROUTE_CLIENTS_CREATE, ROUTE_BODY_JSON},
    {"GET", "/api/v1/access/clients", ROUTE_CLIENTS_LIST, ROUTE_BODY_NONE},
    {"DELETE", "/api/v1/access/clients/{id}", ROUTE_CLIENT_DELETE, ROUTE_BODY_NONE},
    {"POST", "/api/v1/access/clients/{id}/keys", ROUTE_CLIENT_KEY_ADD, ROUTE_BODY_JSON},
    {"DELETE", "/api/v1/access/clients/{id}/keys/{kid}", ROUTE_CLIENT_KEY_DELETE, ROUTE_BODY_NONE},
    {"POST", "/oauth/token", ROUTE_OAUTH_TOKEN, ROUTE_BODY_FORM},
    {"POST", "/oauth/introspect", ROUTE_OAUTH_INTROSPECT, ROUTE_BODY_FORM},
    {"POST", "/oauth/revoke", ROUTE_OAUTH_REVOKE, ROUTE_BODY_FORM},
    {"GET", "/.well-known/oauth-authorization-server", ROUTE_OAUTH_METADATA, ROUTE_BODY_NONE},
    {"GET", "/api/v1/access/admin/users", ROUTE_ADMIN_USERS, ROUTE_BODY_NONE},
    {"GET", "/api/v1/access/admin/users/{id}", ROUTE_ADMIN_USER_GET, ROUTE_BODY_NONE},
    {"PATCH", "/api/v1/access/admin/users/{id}", ROUTE_ADMIN_USER_PATCH, ROUTE_BODY_JSON},
    {"DELETE", "/api/v1/access/admin/users/{id}", ROUTE_ADMIN_USER_DELETE, ROUTE_BODY_NONE},
    {"DELETE", "/api/v1/access/admin/users/{id}/sessions", ROUTE_ADMIN_USER_SESSIONS_DELETE,
     ROUTE_BODY_NONE},
    {"GET", "/api/v1/access/admin/users/{id}/audit", ROUTE_ADMIN_USER_AUDIT, ROUTE_BODY_NONE},
};

#define NROUTES (sizeof(router_routes) / sizeof(router_routes[0]))

/* Match a template against a path; {id} (any {name}) takes one non-empty
 * segment (the first into param[0], a second into param[1]). */
static int router_path_match(const char *tpl, const char *path, size_t len, const char *param[2],
                             size_t param_len[2])
{
    const char *p = path, *end = path + len;
    int n = 0;
    param[0] = param[1] = NULL;
    param_len[0] = param_len[1] = 0;
    while (*tpl != '\0') {
        if (*tpl == '{' && strchr(tpl, '}') != NULL) {
            const char *seg = p;
            while (p < end && *p != '/')
                p++;
            if (p == seg || n == 2)
                return 0;
            param[n] = seg;
            param_len[n++] = (size_t)(p - seg);
            tpl = strchr(tpl, '}') + 1;
            continue;
        }
        if (p == end || *p != *tpl)
            return 0;
        p++;
        tpl++;
    }
    return p == end;
}

enum router_result router_match(const char *method, const char *path, size_t path_len,
                                struct route_match *out)
{
    int path_found = 0;
    size_t allow_len = 0;
    memset(out, 0, sizeof(*out));
    int is_head = strcmp(method, "HEAD") == 0;
    for (size_t i = 0; i < NROUTES; i++) {
        const struct route *r = &router_routes[i];
        const char *param[2];
        size_t param_len[2];
        if (!router_path_match(r->path, path, path_len, param, param_len))
            continue;
        if (strcmp(r->method, method) == 0 || (is_head && strcmp(r->method, "GET") == 0)) {
            out->id = r->id;
            out->template_path = r->path;
            out->body = r->body;
            out->param = param[0];
            out->param_len = param_len[0];
            out->param2 = param[1];
            out->param2_len = param_len[1];
            return ROUTER_OK;
        }
        path_found = 1;
        const char *m = r->method;
        int n = snprintf(out->allow + allow_len, sizeof(out->allow) - allow_len, "%s%s%s",
                         allow_len ? ", " : "", m, strcmp(m, "GET") == 0 ? ", HEAD" : "");
        if (n > 0 && (size_t)n < sizeof(out->allow) - allow_len)
            allow_len += (size_t)n;
    }
    return path_found ? ROUTER_METHOD_NOT_ALLOWED : ROUTER_NOT_FOUND;
}

const char *router_template(enum route_id id)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (router_routes[i].id == id)
            return router_routes[i].path;
    return "";
}

int router_route(size_t i, const char **method, const char **path)
{
    if (i >= NROUTES)
        return -1;
    *method = router_routes[i].method;
    *path = router_routes[i].path;
    return 0;
}
