/* Administration (SPEC §12): stubs until lib/admin.c lands. */
#include "handlers.h"

static void adm_todo(struct response *res)
{
    http_problem(res, 404, "not_found", "no such resource", NULL);
}

void handle_admin_users(struct app *app, struct request *req, struct response *res)
{
    (void)app;
    (void)req;
    adm_todo(res);
}
void handle_admin_user_get(struct app *app, struct request *req, struct response *res)
{
    (void)app;
    (void)req;
    adm_todo(res);
}
void handle_admin_user_patch(struct app *app, struct request *req, struct response *res)
{
    (void)app;
    (void)req;
    adm_todo(res);
}
void handle_admin_user_delete(struct app *app, struct request *req, struct response *res)
{
    (void)app;
    (void)req;
    adm_todo(res);
}
void handle_admin_user_sessions_delete(struct app *app, struct request *req, struct response *res)
{
    (void)app;
    (void)req;
    adm_todo(res);
}
void handle_admin_user_audit(struct app *app, struct request *req, struct response *res)
{
    (void)app;
    (void)req;
    adm_todo(res);
}
