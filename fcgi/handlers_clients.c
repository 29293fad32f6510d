/* API client endpoints (SPEC §11): shape HTTP around lib/clients.c. The
 * owner is the user of the Bearer token; another user's client is 404. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients.h"
#include "handlers.h"

/* The optional "public_jwk" member: 0 (absent: *jwk NULL) or -1 with 422. */
static int cl_jwk(struct request *req, struct response *res, json_object **jwk)
{
    *jwk = NULL;
    if (!json_object_object_get_ex(req->json, "public_jwk", jwk) || *jwk == NULL)
        return 0;
    if (!json_object_is_type(*jwk, json_type_object)) {
        http_problem(res, 422, "validation_failed", "public_jwk must be a JWK object",
                     "public_jwk");
        return -1;
    }
    return 0;
}

/* "scopes": an array of strings, joined by spaces into the arena; NULL when
 * absent. -1 with 422 when mistyped. */
static int cl_scopes(struct request *req, struct response *res, const char **out)
{
    json_object *v;
    struct buf b = {0};
    *out = NULL;
    if (!json_object_object_get_ex(req->json, "scopes", &v) || v == NULL)
        return 0;
    size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        if (!json_object_is_type(e, json_type_string) || json_object_get_string_len(e) == 0 ||
            strchr(json_object_get_string(e), ' ') != NULL) {
            n = 0;
            break;
        }
        if (i > 0)
            buf_putc(&b, ' ');
        buf_puts(&b, json_object_get_string(e));
    }
    if (n == 0) {
        buf_free(&b);
        http_problem(res, 422, "validation_failed", "scopes must be a non-empty array of scopes",
                     "scopes");
        return -1;
    }
    *out = arena_strdup(req->arena, b.data);
    buf_free(&b);
    return 0;
}

void handle_clients_create(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    const char *name, *scopes;
    size_t nlen;
    json_object *jwk;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0 ||
        acc_str(req, res, "name", 1, &name, &nlen) < 0 || cl_scopes(req, res, &scopes) != 0 ||
        cl_jwk(req, res, &jwk) != 0)
        goto out;
    enum accounts_status st =
        clients_create(&app->acc, &r, p.user_id, name, nlen, scopes, jwk, &res->body);
    if (st != ACC_OK)
        acc_fail(res, st, &r);
    else
        res->status = 201;
out:
    acc_done(req, &r);
}

void handle_clients_list(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    long limit = 20;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0)
        goto out;
    const char *ls = acc_query(req, "limit"), *cursor = acc_query(req, "cursor");
    if (ls != NULL) {
        char *end;
        limit = strtol(ls, &end, 10);
        if (*ls == '\0' || *end != '\0' || limit < 1 || limit > 100) {
            http_problem(res, 422, "validation_failed", "limit must be an integer 1..100", "limit");
            goto out;
        }
    }
    enum accounts_status st = clients_list(&app->acc, &r, p.user_id, cursor, limit, &res->body);
    if (st == ACC_INVALID)
        http_problem(res, 400, "invalid_cursor", "the cursor is malformed", NULL);
    else if (st != ACC_OK)
        acc_fail(res, st, &r);
out:
    acc_done(req, &r);
}

void handle_client_delete(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) == 0) {
        enum accounts_status st =
            clients_delete(&app->acc, &r, p.user_id, req->route.param, req->route.param_len);
        if (st != ACC_OK)
            acc_fail(res, st, &r);
        else
            res->status = 204;
    }
    acc_done(req, &r);
}

void handle_client_key_add(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    json_object *jwk;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) == 0 && cl_jwk(req, res, &jwk) == 0) {
        enum accounts_status st = clients_add_key(&app->acc, &r, p.user_id, req->route.param,
                                                  req->route.param_len, jwk, &res->body);
        if (st != ACC_OK)
            acc_fail(res, st, &r);
        else
            res->status = 201;
    }
    acc_done(req, &r);
}

void handle_client_key_delete(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) == 0) {
        enum accounts_status st =
            clients_revoke_key(&app->acc, &r, p.user_id, req->route.param, req->route.param_len,
                               req->route.param2, req->route.param2_len);
        if (st != ACC_OK)
            acc_fail(res, st, &r);
        else
            res->status = 204;
    }
    acc_done(req, &r);
}
