/* The second factor (SPEC §10): shape HTTP around lib/mfa.c. */
#include <stdio.h>
#include <string.h>

#include "handlers.h"
#include "json.h"
#include "mfa.h"

static const enum metrics_mfa_result mfa_metric[] = {
    [MFA_OUT_SUCCESS] = METRICS_MFA_SUCCESS,
    [MFA_OUT_INVALID_CODE] = METRICS_MFA_INVALID_CODE,
    [MFA_OUT_INVALID_GRANT] = METRICS_MFA_INVALID_GRANT,
    [MFA_OUT_THROTTLED] = METRICS_MFA_THROTTLED,
    [MFA_OUT_ERROR] = METRICS_MFA_ERROR,
};

static void mfa_count(struct app *app, enum mfa_outcome o)
{
    if (o != MFA_OUT_NONE && (size_t)o < sizeof(mfa_metric) / sizeof(mfa_metric[0]))
        metrics_mfa(app->metrics, app->slot, mfa_metric[o]);
}

void handle_mfa_enrol(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    struct mfa_enrolment e;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0)
        goto out;
    enum accounts_status st = mfa_enrol(&app->acc, &r, &p, &e);
    if (st != ACC_OK) {
        acc_fail(res, st, &r);
        goto out;
    }
    buf_puts(&res->body, "{\"secret\":");
    json_put_cstr(&res->body, e.secret);
    buf_puts(&res->body, ",\"otpauth_uri\":");
    json_put_cstr(&res->body, e.otpauth_uri);
    buf_putc(&res->body, '}');
out:
    acc_done(req, &r);
}

void handle_mfa_confirm(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    const char *code, *codes[MFA_RECOVERY_CODES];
    size_t len;
    enum mfa_outcome o = MFA_OUT_NONE;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0 || acc_str(req, res, "code", 1, &code, &len) < 0)
        goto out;
    enum accounts_status st = mfa_confirm(&app->acc, &r, &p, code, len, codes, &o);
    mfa_count(app, o);
    if (st != ACC_OK) {
        acc_fail(res, st, &r);
        goto out;
    }
    buf_puts(&res->body, "{\"recovery_codes\":[");
    for (int i = 0; i < MFA_RECOVERY_CODES; i++) {
        if (i > 0)
            buf_putc(&res->body, ',');
        json_put_cstr(&res->body, codes[i]);
    }
    buf_puts(&res->body, "]}");
out:
    acc_done(req, &r);
}

void handle_mfa_remove(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_principal p;
    const char *pw, *code;
    size_t pwlen, len;
    enum mfa_outcome o = MFA_OUT_NONE;
    acc_req(req, &r);
    if (acc_auth(app, req, res, &r, &p, NULL) != 0 ||
        acc_str(req, res, "password", 1, &pw, &pwlen) < 0 ||
        acc_str(req, res, "code", 1, &code, &len) < 0)
        goto out;
    enum accounts_status st = mfa_remove(&app->acc, &r, &p, pw, pwlen, code, len, &o);
    mfa_count(app, o);
    if (st != ACC_OK)
        acc_fail(res, st, &r);
    else
        res->status = 204;
out:
    acc_done(req, &r);
}

void handle_login_mfa(struct app *app, struct request *req, struct response *res)
{
    struct accounts_req r;
    struct accounts_tokens t;
    const char *tok, *code;
    size_t toklen, len;
    enum mfa_outcome o = MFA_OUT_NONE;
    acc_req(req, &r);
    if (acc_str(req, res, "mfa_token", 1, &tok, &toklen) < 0 ||
        acc_str(req, res, "code", 1, &code, &len) < 0)
        return;
    enum accounts_status st = mfa_login(&app->acc, &r, tok, toklen, code, len, &t, &o);
    acc_done(req, &r);
    mfa_count(app, o);
    if (st != ACC_OK) {
        acc_fail(res, st, &r);
        return;
    }
    acc_tokens_json(&res->body, &t);
}
