/* Administration (SPEC §12): a client token with the admin scope; a user
 * token or a client without the scope is 403 insufficient_scope. Shapes
 * HTTP around lib/admin.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "authn.h"
#include "handlers.h"
#include "oauth.h"
#include "listing.h"

/* The acting admin client into actor; 0, or -1 with 401/403 set. */
static int adm_auth(struct app *app, struct request *req, struct response *res,
                    struct accounts_req *r, char actor[JWT_FIELD_MAX + 1])
{
    struct jwt_client_claims c;
    struct accounts_principal p;
    const char *h = FCGX_GetParam("HTTP_AUTHORIZATION", req->fcgx->envp);
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0 || h[7] == '\0') {
        acc_fail(res, ACC_INVALID_TOKEN, r);
        return -1;
    }
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    enum accounts_status st = oauth_verify_client_token(&app->oauth, r, tok, strlen(tok), &c);
    if (st == ACC_INVALID_TOKEN &&
        authn_authenticate(&app->acc, r, tok, strlen(tok), &p, NULL) == ACC_OK)
        st = ACC_FORBIDDEN; /* a user, however privileged, is no admin client */
    if (st == ACC_OK && !clients_scopes_subset("admin", c.scope))
        st = ACC_FORBIDDEN;
    if (st != ACC_OK) {
        acc_fail(res, st, r);
        return -1;
    }
    memcpy(actor, c.client_id, strlen(c.client_id) + 1);
    return http_ratelimit(app, req, res, RL_AUTHENTICATED, actor);
}

static int adm_limit(struct request *req, struct response *res, long *limit)
{
    const char *ls = acc_query(req, "limit");
    *limit = 20;
    if (ls == NULL)
        return 0;
    char *end;
    *limit = strtol(ls, &end, 10);
    if (*ls == '\0' || *end != '\0' || *limit < 1 || *limit > 100) {
        http_problem(res, 422, "validation_failed", "limit must be an integer 1..100", "limit");
        return -1;
    }
    return 0;
}

static void adm_answer(struct response *res, enum accounts_status st, const struct accounts_req *r,
                       int ok_status)
{
    if (st == ACC_INVALID)
        http_problem(res, 400, "invalid_cursor", "the cursor is malformed", NULL);
    else if (st != ACC_OK)
        acc_fail(res, st, r);
    else
        res->status = ok_status;
}

void handle_admin_users(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    char actor[JWT_FIELD_MAX + 1];
    long limit;
    acc_req(req, &r);
    if (adm_auth(app, req, res, &r, actor) == 0 && adm_limit(req, res, &limit) == 0)
        adm_answer(res,
                   admin_users(&app->acc, &r, acc_query(req, "email"), acc_query(req, "cursor"),
                               limit, &res->body),
                   &r, 200);
    acc_done(req, &r);
}

void handle_admin_user_get(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    char actor[JWT_FIELD_MAX + 1];
    acc_req(req, &r);
    if (adm_auth(app, req, res, &r, actor) == 0)
        adm_answer(res,
                   admin_user(&app->acc, &r, req->route.param, req->route.param_len, &res->body),
                   &r, 200);
    acc_done(req, &r);
}

void handle_admin_user_patch(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    char actor[JWT_FIELD_MAX + 1];
    const char *name = NULL;
    size_t nlen = 0;
    int disabled = -1;
    json_object *v;
    acc_req(req, &r);
    if (adm_auth(app, req, res, &r, actor) != 0)
        goto out;
    int has_name = acc_str(req, res, "name", 0, &name, &nlen);
    if (has_name < 0)
        goto out;
    if (has_name == 0 && accounts_check_name(&r, name, nlen) != 0) {
        acc_fail(res, ACC_INVALID, &r);
        goto out;
    }
    if (json_object_object_get_ex(req->json, "disabled", &v)) {
        if (!json_object_is_type(v, json_type_boolean)) {
            http_problem(res, 422, "validation_failed", "disabled must be true or false",
                         "disabled");
            goto out;
        }
        disabled = json_object_get_boolean(v) ? 1 : 0;
    }
    adm_answer(res,
               admin_user_set(&app->acc, &r, actor, req->route.param, req->route.param_len,
                              has_name == 0 ? name : NULL, disabled, &res->body),
               &r, 200);
out:
    acc_done(req, &r);
}

void handle_admin_user_delete(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    char actor[JWT_FIELD_MAX + 1];
    acc_req(req, &r);
    if (adm_auth(app, req, res, &r, actor) == 0)
        adm_answer(res,
                   admin_user_delete(&app->acc, &r, actor, req->route.param, req->route.param_len),
                   &r, 204);
    acc_done(req, &r);
}

void handle_admin_user_sessions_delete(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    char actor[JWT_FIELD_MAX + 1];
    acc_req(req, &r);
    if (adm_auth(app, req, res, &r, actor) == 0)
        adm_answer(
            res,
            admin_revoke_sessions(&app->acc, &r, actor, req->route.param, req->route.param_len), &r,
            204);
    acc_done(req, &r);
}

void handle_admin_user_audit(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    char actor[JWT_FIELD_MAX + 1];
    long limit;
    uint8_t u[16];
    acc_req(req, &r);
    if (adm_auth(app, req, res, &r, actor) != 0 || adm_limit(req, res, &limit) != 0)
        goto out;
    if (uuid_parse(req->route.param, req->route.param_len, u) != 0) {
        acc_fail(res, ACC_NOT_FOUND, &r);
        goto out;
    }
    memset(&p, 0, sizeof(p));
    uuid_format(u, p.user_id);
    /* Events of deleted accounts are kept (SPEC §9): any id may have some. */
    adm_answer(res,
               listing_page(&app->acc, &r, &p, LISTING_AUDIT, acc_query(req, "cursor"), limit,
                            LISTING_AF_ALL, &res->body),
               &r, 200);
out:
    acc_done(req, &r);
}
