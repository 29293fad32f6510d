/* Account and token endpoints: shape HTTP around lib/accounts.c. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "authn.h"
#include "handlers.h"
#include "json.h"
#include "lifecycle.h"
#include "listing.h"

/* Map a use-case status to a problem document. */
void acc_fail(struct response *res, enum accounts_status st, const struct accounts_req *r)
{
    switch (st) {
    case ACC_INVALID:
        http_problem(res, 422, r->code ? r->code : "validation_failed", r->detail, r->field);
        break;
    case ACC_EMAIL_TAKEN:
        http_problem(res, 409, "email_taken", "an account with this email already exists", NULL);
        break;
    case ACC_BAD_CREDENTIALS:
        http_problem(res, 401, "invalid_credentials", "email or password is wrong", NULL);
        http_header(res, "WWW-Authenticate", "Bearer realm=\"access\"");
        break;
    case ACC_WRONG_PASSWORD:
        http_problem(res, 403, "wrong_password", "current_password is wrong", NULL);
        break;
    case ACC_INVALID_TOKEN:
        http_problem(res, 401, "invalid_token", "the token is invalid, expired or revoked", NULL);
        http_header(res, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        break;
    case ACC_NOT_FOUND:
        http_problem(res, 404, "not_found", "no such resource", NULL);
        break;
    case ACC_ACCOUNT_DISABLED:
        http_problem(res, 403, "account_disabled", "this account is disabled", NULL);
        break;
    case ACC_FORBIDDEN:
        http_problem(res, 403, "insufficient_scope", "this needs a client token with scope admin",
                     NULL);
        http_header(res, "WWW-Authenticate",
                    "Bearer error=\"insufficient_scope\", scope=\"admin\"");
        break;
    case ACC_OVERLOADED:
        http_problem(res, 503, "overloaded", "password hashing is saturated; retry shortly", NULL);
        http_header(res, "Retry-After", "1");
        break;
    case ACC_UNAVAILABLE:
        http_problem(res, 503, "unavailable",
                     "the database is unreachable or did not answer in time", NULL);
        http_header(res, "Retry-After", "1");
        break;
    case ACC_INVALID_GRANT:
        http_problem(res, 400, "invalid_grant", "the token is unknown, used or expired", NULL);
        break;
    case ACC_THROTTLED: {
        char retry[24];
        http_problem(res, 429, "rate_limited",
                     "too many failed attempts on this account; retry after the indicated delay",
                     NULL);
        snprintf(retry, sizeof(retry), "%ld", r->retry_after_s > 0 ? r->retry_after_s : 1);
        http_header(res, "Retry-After", retry);
        break;
    }
    case ACC_INVALID_CODE:
        http_problem(res, 401, "invalid_code", "the second-factor or recovery code is wrong", NULL);
        http_header(res, "WWW-Authenticate", "Bearer realm=\"access\"");
        break;
    case ACC_NO_SECRETS_KEY:
        http_problem(res, 503, "unavailable",
                     "the second factor is unavailable: the server has no usable secrets_key",
                     NULL);
        /* Every 503 says when to come back; this one waits for an operator. */
        http_header(res, "Retry-After", "60");
        break;
    case ACC_OK:
    case ACC_INTERNAL:
    default:
        http_problem(res, 500, "internal", "internal error", NULL);
        break;
    }
}

void acc_req(struct request *req, struct accounts_req *r)
{
    memset(r, 0, sizeof(*r));
    r->arena = req->arena;
    r->ip = req->remote_addr;
    r->user_agent = req->user_agent;
    r->deadline = req->deadline;
    r->db_ms = -1;
    r->hash_ms = -1;
}

void acc_done(struct request *req, const struct accounts_req *r)
{
    static const char *const layers[] = {NULL, "l1", "l2", "db"};
    req->db_ms = r->db_ms;
    req->hash_ms = r->hash_ms;
    req->cache = layers[r->layer];
}

/* A required (or optional) string member of the body. 0 with out and len set,
 * 1 when optional and absent, -1 with the 422 problem set. */
int acc_str(struct request *req, struct response *res, const char *name, int required,
            const char **out, size_t *len)
{
    json_object *v;
    char detail[96];
    if (!json_object_object_get_ex(req->json, name, &v) || v == NULL) {
        if (!required)
            return 1;
        snprintf(detail, sizeof(detail), "%s is required", name);
        http_problem(res, 422, "validation_failed", detail, name);
        return -1;
    }
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(detail, sizeof(detail), "%s must be a string", name);
        http_problem(res, 422, "validation_failed", detail, name);
        return -1;
    }
    *out = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    return 0;
}

void acc_tokens_json(struct buf *b, const struct accounts_tokens *t)
{
    if (t->mfa_token != NULL) { /* SPEC §10: the password was right, a code is next */
        buf_puts(b, "{\"mfa_required\":true,\"mfa_token\":");
        json_put_cstr(b, t->mfa_token);
        buf_printf(b, ",\"expires_in\":%ld}", t->expires_in);
        return;
    }
    buf_puts(b, "{\"access_token\":");
    json_put_cstr(b, t->access_token);
    buf_printf(b,
               ",\"token_type\":\"Bearer\",\"expires_in\":%ld,\"refresh_token\":", t->expires_in);
    json_put_cstr(b, t->refresh_token);
    buf_putc(b, '}');
}

/* Authenticate the Bearer token; 0, or -1 with the 401/503 set. */
int acc_auth(struct app *app, struct request *req, struct response *res, struct accounts_req *r,
             struct accounts_principal *p, struct cache_value **profile)
{
    const char *h = FCGX_GetParam("HTTP_AUTHORIZATION", req->fcgx->envp);
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0 || h[7] == '\0') {
        http_problem(res, 401, "invalid_token", "a Bearer access token is required", NULL);
        http_header(res, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        return -1;
    }
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    enum accounts_status st = authn_authenticate(&app->acc, r, tok, strlen(tok), p, profile);
    if (st == ACC_OK || st == ACC_INVALID_TOKEN)
        metrics_auth(app->metrics, app->slot, METRICS_AUTH_BEARER, st == ACC_OK);
    if (st != ACC_OK) {
        acc_fail(res, st, r);
        return -1;
    }
    /* Per user, from this worker's leased block: no Redis round trip. */
    if (http_ratelimit(app, req, res, RL_AUTHENTICATED, p->user_id) != 0) {
        if (profile != NULL) {
            cache_value_release(*profile);
            *profile = NULL;
        }
        return -1;
    }
    return 0;
}

void handle_jwks(struct app *app, struct request *req, struct response *res)
{
    (void)req;
    struct cache_value *v = authn_jwks(&app->acc);
    buf_append(&res->body, v->data, v->len);
    cache_value_release(v);
    res->cache_control = "public, max-age=300";
}

void handle_signup(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_user u;
    const char *email, *pw, *name = "";
    size_t elen, pwlen, nlen = 0;
    acc_req(req, &r);
    if (acc_str(req, res, "email", 1, &email, &elen) < 0 ||
        acc_str(req, res, "password", 1, &pw, &pwlen) < 0 ||
        acc_str(req, res, "name", 0, &name, &nlen) < 0)
        return;
    if (accounts_check_email(&r, email, elen) != 0 ||
        accounts_check_password(&r, "password", pw, pwlen) != 0 ||
        accounts_check_name(&r, name, nlen) != 0) {
        acc_fail(res, ACC_INVALID, &r);
        return;
    }
    enum accounts_status st = lifecycle_signup(&app->acc, &r, email, pw, pwlen, name, &u);
    acc_done(req, &r);
    if (st != ACC_OK) {
        acc_fail(res, st, &r);
        return;
    }
    res->status = 201;
    authn_user_json(&res->body, &u);
}

void handle_login(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_tokens t;
    const char *email, *pw;
    size_t elen, pwlen;
    acc_req(req, &r);
    if (acc_str(req, res, "email", 1, &email, &elen) < 0 ||
        acc_str(req, res, "password", 1, &pw, &pwlen) < 0)
        return;
    if (accounts_check_email(&r, email, elen) != 0 ||
        accounts_check_password(&r, "password", pw, pwlen) != 0) {
        acc_fail(res, ACC_INVALID, &r);
        return;
    }
    enum accounts_status st = accounts_login(&app->acc, &r, email, pw, pwlen, &t);
    acc_done(req, &r);
    if (st == ACC_OK || st == ACC_BAD_CREDENTIALS)
        metrics_auth(app->metrics, app->slot, METRICS_AUTH_PASSWORD, st == ACC_OK);
    if (st != ACC_OK) {
        acc_fail(res, st, &r);
        return;
    }
    acc_tokens_json(&res->body, &t);
}

void handle_refresh(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_tokens t;
    const char *tok;
    size_t len;
    acc_req(req, &r);
    if (acc_str(req, res, "refresh_token", 1, &tok, &len) < 0)
        return;
    enum accounts_status st = accounts_refresh(&app->acc, &r, tok, &t);
    acc_done(req, &r);
    if (st == ACC_OK || st == ACC_INVALID_TOKEN)
        metrics_auth(app->metrics, app->slot, METRICS_AUTH_REFRESH, st == ACC_OK);
    if (st != ACC_OK) {
        acc_fail(res, st, &r);
        return;
    }
    acc_tokens_json(&res->body, &t);
}

void handle_logout(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) == 0) {
        enum accounts_status st = accounts_logout(&app->acc, &r, &p);
        if (st != ACC_OK)
            acc_fail(res, st, &r);
        else
            res->status = 204;
    }
    acc_done(req, &r);
}

/* If-None-Match: * or a list containing etag. */
static int acc_etag_match(const char *inm, const char *etag)
{
    if (inm == NULL)
        return 0;
    if (strcmp(inm, "*") == 0)
        return 1;
    size_t n = strlen(etag);
    for (const char *p = inm; (p = strstr(p, etag)) != NULL; p += n) {
        char after = p[n];
        if (after == '\0' || after == ',' || after == ' ')
            return 1;
    }
    return 0;
}

/* A profile value is the response body as is, with its ETag; GET honours
 * If-None-Match and may be kept by the client (private, revalidated); the
 * answer to PATCH is no-store like every other answer (SPEC §4). */
static void acc_send_profile(struct request *req, struct response *res, const struct cache_value *v)
{
    int get = strcmp(req->method, "PATCH") != 0;
    http_header(res, "ETag", v->etag);
    if (get)
        res->cache_control = "private, no-cache";
    if (get && acc_etag_match(FCGX_GetParam("HTTP_IF_NONE_MATCH", req->fcgx->envp), v->etag))
        res->status = 304;
    else
        buf_append(&res->body, v->data, v->len);
}

void handle_me_get(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    struct cache_value *v = NULL;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, &v) == 0)
        acc_send_profile(req, res, v);
    cache_value_release(v);
    acc_done(req, &r);
}

void handle_me_patch(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    struct cache_value *v = NULL;
    const char *name;
    size_t nlen;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0)
        goto out;
    if (acc_str(req, res, "name", 1, &name, &nlen) < 0)
        goto out;
    if (accounts_check_name(&r, name, nlen) != 0) {
        acc_fail(res, ACC_INVALID, &r);
        goto out;
    }
    enum accounts_status st = accounts_set_name(&app->acc, &r, &p, name, &v);
    if (st != ACC_OK)
        acc_fail(res, st, &r);
    else
        acc_send_profile(req, res, v);
out:
    cache_value_release(v);
    acc_done(req, &r);
}

void handle_password(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    const char *cur, *next;
    size_t clen, nlen;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0)
        goto out;
    if (acc_str(req, res, "current_password", 1, &cur, &clen) < 0 ||
        acc_str(req, res, "new_password", 1, &next, &nlen) < 0)
        goto out;
    if (accounts_check_password(&r, "new_password", next, nlen) != 0) {
        acc_fail(res, ACC_INVALID, &r);
        goto out;
    }
    enum accounts_status st = accounts_change_password(&app->acc, &r, &p, cur, clen, next, nlen);
    if (st != ACC_OK)
        acc_fail(res, st, &r);
    else
        res->status = 204;
out:
    acc_done(req, &r);
}

/* Value of query parameter `name`, percent-decoded into the arena; NULL when
 * absent. */
const char *acc_query(struct request *req, const char *name)
{
    size_t nl = strlen(name);
    const char *q = req->query;
    while (q != NULL && *q != '\0') {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            const char *v = q + nl + 1;
            size_t vl = len - nl - 1;
            char *out = arena_alloc(req->arena, vl + 1);
            size_t j = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] == '%' && i + 2 < vl && isxdigit((unsigned char)v[i + 1]) &&
                    isxdigit((unsigned char)v[i + 2])) {
                    char hex[3] = {v[i + 1], v[i + 2], '\0'};
                    char c = (char)strtol(hex, NULL, 16);
                    if (c != '\0') {
                        out[j++] = c;
                        i += 2;
                        continue;
                    }
                }
                out[j++] = v[i] == '+' ? ' ' : v[i];
            }
            out[j] = '\0';
            return out;
        }
        q = amp ? amp + 1 : NULL;
    }
    return NULL;
}

/* GET /sessions and GET /audit: ?limit=1..100&cursor=…&fields=a,b */
static void acc_list(struct app *app, struct request *req, struct response *res,
                     enum listing_kind list)
{
    struct accounts_req r;
    struct accounts_principal p;
    long limit = 20;
    unsigned fields = 0;
    char detail[128];
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0)
        goto out;
    const char *ls = acc_query(req, "limit"), *cursor = acc_query(req, "cursor");
    const char *fs = acc_query(req, "fields");
    if (ls != NULL) {
        char *end;
        limit = strtol(ls, &end, 10);
        if (*ls == '\0' || *end != '\0' || limit < 1 || limit > 100) {
            http_problem(res, 422, "validation_failed", "limit must be an integer 1..100", "limit");
            goto out;
        }
    }
    const char *bad;
    size_t badlen;
    /* No ?fields= means all of them, as an empty list does. */
    if (listing_parse_fields(list, fs != NULL ? fs : "", &fields, &bad, &badlen) != 0) {
        snprintf(detail, sizeof(detail), "unknown field '%.*s' in fields", (int)badlen, bad);
        http_problem(res, 422, "validation_failed", detail, "fields");
        goto out;
    }
    enum accounts_status st =
        listing_page(&app->acc, &r, &p, list, cursor, limit, fields, &res->body);
    if (st == ACC_INVALID) {
        http_problem(res, 400, "invalid_cursor", "the cursor is malformed", NULL);
    } else if (st != ACC_OK) {
        acc_fail(res, st, &r);
    }
out:
    acc_done(req, &r);
}

void handle_sessions(struct app *app, struct request *req, struct response *res)
{
    acc_list(app, req, res, LISTING_SESSIONS);
}

void handle_audit(struct app *app, struct request *req, struct response *res)
{
    acc_list(app, req, res, LISTING_AUDIT);
}

void handle_session_delete(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) == 0) {
        enum accounts_status st =
            accounts_revoke_session(&app->acc, &r, &p, req->route.param, req->route.param_len);
        if (st != ACC_OK)
            acc_fail(res, st, &r);
        else
            res->status = 204;
    }
    acc_done(req, &r);
}
