/* OAuth 2.0 endpoints (SPEC §11): form bodies in, OAuth's own JSON out
 * (RFC 6749 §5.1/§5.2, RFC 7662, RFC 7009, RFC 8414), Cache-Control
 * no-store (http_write's default). Shapes HTTP around lib/oauth.c. */
#include <stdio.h>
#include <string.h>

#include "form.h"
#include "handlers.h"
#include "json.h"
#include "oauth.h"

/* An OAuth error answer: 400, or 401 + challenge for invalid_client, 503
 * and 500 for the service's own trouble. */
static void oa_error(struct response *res, enum oauth_error e, const char *desc)
{
    res->status = e == OAUTH_INVALID_CLIENT ? 401
                  : e == OAUTH_UNAVAILABLE  ? 503
                  : e == OAUTH_INTERNAL     ? 500
                                            : 400;
    res->content_type = "application/json";
    buf_reset(&res->body);
    buf_puts(&res->body, "{\"error\":");
    json_put_cstr(&res->body, oauth_error_name(e));
    if (desc != NULL) {
        buf_puts(&res->body, ",\"error_description\":");
        json_put_cstr(&res->body, desc);
    }
    buf_putc(&res->body, '}');
    if (e == OAUTH_INVALID_CLIENT)
        http_header(res, "WWW-Authenticate", "Bearer realm=\"access\"");
    if (e == OAUTH_UNAVAILABLE)
        http_header(res, "Retry-After", "1");
    http_header(res, "Pragma", "no-cache");
}

static const enum metrics_oauth_result oa_metric[] = {
    [OAUTH_OK] = METRICS_OAUTH_SUCCESS,
    [OAUTH_INVALID_REQUEST] = METRICS_OAUTH_INVALID_REQUEST,
    [OAUTH_INVALID_CLIENT] = METRICS_OAUTH_INVALID_CLIENT,
    [OAUTH_INVALID_GRANT] = METRICS_OAUTH_INVALID_GRANT,
    [OAUTH_UNSUPPORTED_GRANT_TYPE] = METRICS_OAUTH_UNSUPPORTED_GRANT_TYPE,
    [OAUTH_INVALID_SCOPE] = METRICS_OAUTH_INVALID_SCOPE,
    [OAUTH_UNAVAILABLE] = METRICS_OAUTH_ERROR,
    [OAUTH_INTERNAL] = METRICS_OAUTH_ERROR,
};

/* The steps every endpoint shares: media type, form, client assertion,
 * the client's rate limit. 0 with f and client, or -1 with the answer
 * set (*e the error, OAUTH_OK for a 429). */
static int oa_begin(struct app *app, struct request *req, struct response *res,
                    struct accounts_req *r, struct form *f, struct clients_record *client,
                    enum oauth_error *e)
{
    char err[128];
    const char *desc = NULL;
    memset(f, 0, sizeof(*f)); /* form_free() is safe on every path */
    if (!http_is_media_type(req->content_type, "application/x-www-form-urlencoded")) {
        *e = OAUTH_INVALID_REQUEST;
        oa_error(res, *e, "the body must be application/x-www-form-urlencoded");
        return -1;
    }
    if (form_parse(req->body, req->body_len, f, err, sizeof(err)) != FORM_OK) {
        *e = OAUTH_INVALID_REQUEST;
        oa_error(res, *e, err);
        return -1;
    }
    *e = oauth_client_auth(&app->oauth, r, f, client, &desc);
    if (*e != OAUTH_OK) {
        oa_error(res, *e, desc);
        return -1;
    }
    if (http_ratelimit(app, req, res, RL_TOKEN, client->id) != 0)
        return -1;
    return 0;
}

void handle_oauth_token(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct form f;
    struct clients_record client;
    enum oauth_error e;
    const char *desc = NULL;
    acc_req(req, &r);
    if (oa_begin(app, req, res, &r, &f, &client, &e) == 0) {
        e = oauth_grant(&app->oauth, &r, &f, &client, &res->body, &desc);
        if (e != OAUTH_OK)
            oa_error(res, e, desc);
        else
            http_header(res, "Pragma", "no-cache");
    }
    if (res->status != 429)
        metrics_oauth_grant(app->metrics, app->slot, oa_metric[e]);
    form_free(&f);
    acc_done(req, &r);
}

void handle_oauth_introspect(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct form f;
    struct clients_record client;
    enum oauth_error e;
    acc_req(req, &r);
    if (oa_begin(app, req, res, &r, &f, &client, &e) == 0) {
        const char *token = form_get(&f, "token");
        if (token == NULL)
            oa_error(res, OAUTH_INVALID_REQUEST, "token is required");
        else if ((e = oauth_introspect(&app->oauth, &r, token, &res->body)) != OAUTH_OK)
            oa_error(res, e, NULL);
    }
    form_free(&f);
    acc_done(req, &r);
}

void handle_oauth_revoke(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct form f;
    struct clients_record client;
    enum oauth_error e;
    acc_req(req, &r);
    if (oa_begin(app, req, res, &r, &f, &client, &e) == 0) {
        const char *token = form_get(&f, "token");
        if (token == NULL) {
            oa_error(res, OAUTH_INVALID_REQUEST, "token is required");
        } else if ((e = oauth_revoke(&app->oauth, &r, &client, token)) != OAUTH_OK) {
            oa_error(res, e, NULL);
        } else {
            res->status = 200;
            buf_puts(&res->body, "{}");
        }
    }
    form_free(&f);
    acc_done(req, &r);
}

void handle_oauth_metadata(struct app *app, struct request *req, struct response *res)
{
    (void)req;
    oauth_metadata(app->cfg, &res->body);
}
