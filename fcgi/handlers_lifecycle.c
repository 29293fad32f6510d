/* The account's life cycle (SPEC §9): shape HTTP around lib/lifecycle.c. */
#include <stdio.h>
#include <string.h>

#include "authn.h"
#include "handlers.h"
#include "lifecycle.h"

void handle_verify_request(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) == 0) {
        enum accounts_status st = lifecycle_verify_request(&app->acc, &r, &p);
        if (st != ACC_OK)
            acc_fail(res, st, &r);
        else
            res->status = 202;
    }
    acc_done(req, &r);
}

void handle_verify(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_user u;
    const char *tok;
    size_t len;
    acc_req(req, &r);
    if (acc_str(req, res, "token", 1, &tok, &len) < 0)
        return;
    enum accounts_status st = lifecycle_verify(&app->acc, &r, tok, len, &u);
    acc_done(req, &r);
    if (st != ACC_OK) {
        acc_fail(res, st, &r);
        return;
    }
    authn_user_json(&res->body, &u);
}

/* Known and unknown emails get the very same answer: 202, no body, the
 * same headers (only a database failure differs, for both alike). */
void handle_recover(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    const char *email;
    size_t elen;
    acc_req(req, &r);
    if (acc_str(req, res, "email", 1, &email, &elen) < 0)
        return;
    if (accounts_check_email(&r, email, elen) != 0) {
        acc_fail(res, ACC_INVALID, &r);
        return;
    }
    enum accounts_status st = lifecycle_recover(&app->acc, &r, email);
    acc_done(req, &r);
    if (st != ACC_OK)
        acc_fail(res, st, &r);
    else
        res->status = 202;
}

void handle_recover_confirm(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    const char *tok, *pw;
    size_t len, pwlen;
    char uid[40];
    acc_req(req, &r);
    if (acc_str(req, res, "token", 1, &tok, &len) < 0 ||
        acc_str(req, res, "new_password", 1, &pw, &pwlen) < 0)
        return;
    if (accounts_check_password(&r, "new_password", pw, pwlen) != 0) {
        acc_fail(res, ACC_INVALID, &r);
        return;
    }
    enum accounts_status st = lifecycle_reset(&app->acc, &r, tok, len, pw, pwlen, uid);
    acc_done(req, &r);
    if (st != ACC_OK)
        acc_fail(res, st, &r);
    else
        res->status = 204;
}

void handle_me_delete(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    const char *pw, *code = NULL;
    size_t pwlen, codelen = 0;
    int has_code;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0)
        goto out;
    if (acc_str(req, res, "password", 1, &pw, &pwlen) < 0 ||
        (has_code = acc_str(req, res, "code", 0, &code, &codelen)) < 0)
        goto out;
    if (has_code != 0)
        code = NULL;
    enum accounts_status st = lifecycle_delete(&app->acc, &r, &p, pw, pwlen, code, codelen);
    if (st == ACC_OK || st == ACC_BAD_CREDENTIALS)
        metrics_auth(app->metrics, app->slot, METRICS_AUTH_PASSWORD, st == ACC_OK);
    if (st != ACC_OK)
        acc_fail(res, st, &r);
    else
        res->status = 204;
out:
    acc_done(req, &r);
}
