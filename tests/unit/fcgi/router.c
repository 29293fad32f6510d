/* Unit tests for fcgi/router.c: exact matching, HEAD for GET, 404, 405 with
 * the Allow value, {id} extraction, router_template. The generic tests walk
 * every route id, so routes added later are covered too. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "router.h"

static enum router_result match(const char *method, const char *path, struct route_match *m)
{
    return router_match(method, path, strlen(path), m);
}

static void test_health_routes(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        enum route_id id;
    } cases[] = {
        {"/health", ROUTE_HEALTH},
        {"/health/live", ROUTE_HEALTH_LIVE},
        {"/health/ready", ROUTE_HEALTH_READY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct route_match m;
        assert_int_equal(match("GET", cases[i].path, &m), ROUTER_OK);
        assert_int_equal(m.id, cases[i].id);
        assert_string_equal(m.template_path, cases[i].path);
        assert_int_equal(m.body, ROUTE_BODY_NONE);
        assert_null(m.param);
        assert_int_equal(m.param_len, 0);

        assert_int_equal(match("HEAD", cases[i].path, &m), ROUTER_OK);
        assert_int_equal(m.id, cases[i].id);

        static const char *const wrong[] = {"POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"};
        for (size_t j = 0; j < sizeof(wrong) / sizeof(wrong[0]); j++) {
            assert_int_equal(match(wrong[j], cases[i].path, &m), ROUTER_METHOD_NOT_ALLOWED);
            assert_string_equal(m.allow, "GET, HEAD");
        }
    }
}

/* The routes of SPEC §4 that exist so far, with their body expectation. */
static void test_spec_routes(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
        enum route_id id;
        enum route_body body;
    } r[] = {
        {"GET", "/.well-known/jwks.json", ROUTE_JWKS, ROUTE_BODY_NONE},
        {"POST", "/api/v1/access/signup", ROUTE_SIGNUP, ROUTE_BODY_JSON},
        {"POST", "/api/v1/access/login", ROUTE_LOGIN, ROUTE_BODY_JSON},
        {"POST", "/api/v1/access/refresh", ROUTE_REFRESH, ROUTE_BODY_JSON},
        {"POST", "/api/v1/access/logout", ROUTE_LOGOUT, ROUTE_BODY_NONE},
        {"GET", "/api/v1/access/me", ROUTE_ME_GET, ROUTE_BODY_NONE},
        {"HEAD", "/api/v1/access/me", ROUTE_ME_GET, ROUTE_BODY_NONE},
        {"PATCH", "/api/v1/access/me", ROUTE_ME_PATCH, ROUTE_BODY_JSON},
        {"DELETE", "/api/v1/access/me", ROUTE_ME_DELETE, ROUTE_BODY_JSON},
        {"POST", "/api/v1/access/verify/request", ROUTE_VERIFY_REQUEST, ROUTE_BODY_NONE},
        {"POST", "/api/v1/access/verify", ROUTE_VERIFY, ROUTE_BODY_JSON},
        {"POST", "/api/v1/access/recover", ROUTE_RECOVER, ROUTE_BODY_JSON},
        {"POST", "/api/v1/access/recover/confirm", ROUTE_RECOVER_CONFIRM, ROUTE_BODY_JSON},
        {"POST", "/api/v1/access/password", ROUTE_PASSWORD, ROUTE_BODY_JSON},
        {"GET", "/api/v1/access/sessions", ROUTE_SESSIONS, ROUTE_BODY_NONE},
        {"DELETE", "/api/v1/access/sessions/01890a5d-ac96-774b-bcce-b302099a8057",
         ROUTE_SESSION_DELETE, ROUTE_BODY_NONE},
    };
    for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
        struct route_match m;
        enum router_result res = match(r[i].method, r[i].path, &m);
        if (res != ROUTER_OK || m.id != r[i].id)
            fail_msg("%s %s gave %d / id %d", r[i].method, r[i].path, (int)res, (int)m.id);
        assert_int_equal(m.body, r[i].body);
        assert_string_equal(m.template_path, router_template(r[i].id));
    }

    /* 405 with the exact Allow value. */
    static const struct {
        const char *method, *path, *allow;
    } na[] = {
        {"GET", "/api/v1/access/signup", "POST"},
        {"HEAD", "/api/v1/access/login", "POST"},
        {"PUT", "/api/v1/access/me", "GET, HEAD, PATCH, DELETE"},
        {"POST", "/api/v1/access/me", "GET, HEAD, PATCH, DELETE"},
        {"GET", "/api/v1/access/recover", "POST"},
        {"GET", "/api/v1/access/verify/request", "POST"},
        {"POST", "/api/v1/access/sessions", "GET, HEAD"},
        {"GET", "/api/v1/access/sessions/abc", "DELETE"},
        {"POST", "/.well-known/jwks.json", "GET, HEAD"},
    };
    for (size_t i = 0; i < sizeof(na) / sizeof(na[0]); i++) {
        struct route_match m;
        enum router_result res = match(na[i].method, na[i].path, &m);
        if (res != ROUTER_METHOD_NOT_ALLOWED)
            fail_msg("%s %s gave %d, expected 405", na[i].method, na[i].path, (int)res);
        assert_string_equal(m.allow, na[i].allow);
    }

    /* Near misses of the account routes. */
    static const char *const nf[] = {
        "/api/v1/access/signup/",    "/api/v1/access/sessions/", "/api/v1/access/sessions/a/b",
        "/api/v1/access/sessions//", "/api/v1/access/me/",       "/api/v1/access",
        "/api/v1/access/",           "/api/v2/access/me",        "/.well-known/jwks",
        "/.well-known/jwks.json/",
    };
    for (size_t i = 0; i < sizeof(nf) / sizeof(nf[0]); i++) {
        struct route_match m;
        if (match("DELETE", nf[i], &m) != ROUTER_NOT_FOUND)
            fail_msg("DELETE %s is not 404", nf[i]);
        if (match("GET", nf[i], &m) != ROUTER_NOT_FOUND)
            fail_msg("GET %s is not 404", nf[i]);
    }
}

static void test_not_found(void **state)
{
    (void)state;
    static const char *const paths[] = {
        "",
        "/",
        "/nope",
        "/health/",
        "/health/live/",
        "/healthz",
        "/hea",
        "/health/live/x",
        "/HEALTH",
        "//health",
        "/health/livex",
        "/health/readyz",
        "/api/v1/access",
        "/health?x=1",
        "health",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct route_match m;
        enum router_result r = match("GET", paths[i], &m);
        if (r != ROUTER_NOT_FOUND)
            fail_msg("GET '%s' gave %d, expected 404", paths[i], (int)r);
        /* A wrong method on an unknown path is still 404, not 405. */
        r = match("POST", paths[i], &m);
        if (r != ROUTER_NOT_FOUND)
            fail_msg("POST '%s' gave %d, expected 404", paths[i], (int)r);
    }
}

static void test_path_len_is_respected(void **state)
{
    (void)state;
    struct route_match m;
    const char *p = "/health/live";
    assert_int_equal(router_match("GET", p, strlen("/health"), &m), ROUTER_OK);
    assert_int_equal(m.id, ROUTE_HEALTH);
    /* Bytes past path_len are not looked at; "/health/liv" is no route. */
    assert_int_equal(router_match("GET", p, strlen(p) - 1, &m), ROUTER_NOT_FOUND);
    assert_int_equal(router_match("GET", p, 0, &m), ROUTER_NOT_FOUND);
}

static void test_template(void **state)
{
    (void)state;
    assert_string_equal(router_template(ROUTE_HEALTH), "/health");
    assert_string_equal(router_template(ROUTE_HEALTH_LIVE), "/health/live");
    assert_string_equal(router_template(ROUTE_HEALTH_READY), "/health/ready");
    assert_string_equal(router_template(ROUTE__COUNT), "");
}

/* router_route() walks the whole table, every row routes to itself (the
 * `routes` subcommand prints exactly what is served), and stops at the end. */
static void test_route_rows(void **state)
{
    (void)state;
    const char *m, *p;
    size_t i = 0, with_params = 0;
    for (; router_route(i, &m, &p) == 0; i++) {
        struct route_match match;
        assert_non_null(strchr(p, '/'));
        if (strchr(p, '{') != NULL) {
            with_params++;
            continue;
        }
        assert_int_equal(router_match(m, p, strlen(p), &match), ROUTER_OK);
        assert_string_equal(match.template_path, p);
    }
    assert_int_equal(i, ROUTE__COUNT); /* one row per route id */
    assert_true(with_params > 0);
    assert_int_equal(router_route(i, &m, &p), -1);
    assert_int_equal(router_route((size_t)-1, &m, &p), -1);
}

/* Replace every "{id}" in tpl by seg. */
static void fill_template(const char *tpl, const char *seg, char *out, size_t outlen)
{
    size_t j = 0;
    while (*tpl != '\0' && j + 1 < outlen) {
        if (strncmp(tpl, "{id}", 4) == 0) {
            j += (size_t)snprintf(out + j, outlen - j, "%s", seg);
            tpl += 4;
        } else {
            out[j++] = *tpl++;
        }
    }
    out[j] = '\0';
}

static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

/* Every route id has a template, and some method on that template (with a
 * concrete {id}) routes back to the same id; other methods give 405 with an
 * Allow value naming exactly the methods that route. */
static void test_every_route(void **state)
{
    (void)state;
    for (int id = 0; id < ROUTE__COUNT; id++) {
        const char *tpl = router_template((enum route_id)id);
        if (tpl[0] != '/')
            fail_msg("route %d has template '%s'", id, tpl);
        char path[256];
        fill_template(tpl, "01890a5d-ac96-774b-bcce-b302099a8057", path, sizeof(path));

        /* Routes are per method and path: several ids may share a path. */
        size_t allowed = 0, has_get = 0, routed = 0;
        for (size_t i = 0; i < NMETHODS; i++) {
            struct route_match m;
            if (match(methods[i], path, &m) != ROUTER_OK)
                continue;
            assert_string_equal(m.template_path, tpl);
            assert_string_equal(router_template(m.id), tpl);
            allowed++;
            if (m.id == (enum route_id)id)
                routed++;
            if (strcmp(methods[i], "GET") == 0) {
                enum route_id get_id = m.id;
                has_get = 1;
                assert_int_equal(match("HEAD", path, &m), ROUTER_OK);
                assert_int_equal(m.id, get_id);
            }
        }
        if (routed != 1)
            fail_msg("%zu methods route %s to id %d, expected 1", routed, path, id);
        /* An unrouted method on the path: 405, and Allow names exactly the
         * methods that route it (HEAD with GET), comma-separated. */
        struct route_match m;
        assert_int_equal(match("TRACE", path, &m), ROUTER_METHOD_NOT_ALLOWED);
        size_t items = 1;
        for (const char *a = m.allow; *a != '\0'; a++)
            if (*a == ',') {
                assert_int_equal(a[1], ' ');
                items++;
            }
        assert_int_equal(items, allowed + has_get);
        for (size_t i = 0; i < NMETHODS; i++) {
            struct route_match mm;
            if (match(methods[i], path, &mm) == ROUTER_OK)
                assert_non_null(strstr(m.allow, methods[i]));
        }
        if (has_get)
            assert_non_null(strstr(m.allow, "GET, HEAD"));
        /* A trailing slash or an extra segment never reaches this route. */
        char longer[300];
        snprintf(longer, sizeof(longer), "%s/", path);
        assert_false(match("GET", longer, &m) == ROUTER_OK && m.id == (enum route_id)id);
        snprintf(longer, sizeof(longer), "%s/x", path);
        assert_false(match("GET", longer, &m) == ROUTER_OK && m.id == (enum route_id)id);
    }
}

/* {id} extraction, for whichever routes have a parameter. */
static void test_id_param(void **state)
{
    (void)state;
    int found = 0;
    for (int id = 0; id < ROUTE__COUNT; id++) {
        const char *tpl = router_template((enum route_id)id);
        if (strstr(tpl, "{id}") == NULL)
            continue;
        found++;
        const char *seg = "01890a5d-ac96-774b-bcce-b302099a8057";
        char path[256];
        fill_template(tpl, seg, path, sizeof(path));
        int routed = 0;
        for (size_t i = 0; i < NMETHODS; i++) {
            struct route_match m;
            if (match(methods[i], path, &m) != ROUTER_OK || m.id != (enum route_id)id)
                continue;
            routed = 1;
            assert_non_null(m.param);
            assert_int_equal(m.param_len, strlen(seg));
            assert_memory_equal(m.param, seg, strlen(seg));
            /* The parameter points into the caller's path. */
            assert_true(m.param >= path && m.param < path + strlen(path));
            /* An empty segment is no match. */
            char empty[256];
            fill_template(tpl, "", empty, sizeof(empty));
            assert_int_equal(match(methods[i], empty, &m), ROUTER_NOT_FOUND);
        }
        assert_true(routed);
    }
    if (found == 0)
        skip(); /* no route with {id} yet */
}

/* SPEC §11 and §12 routes, two path parameters, form bodies. */
static void test_client_and_oauth_routes(void **state)
{
    (void)state;
    struct route_match m;
    assert_int_equal(match("DELETE", "/api/v1/access/clients/C1/keys/K2", &m), ROUTER_OK);
    assert_int_equal(m.id, ROUTE_CLIENT_KEY_DELETE);
    assert_int_equal(m.param_len, 2);
    assert_memory_equal(m.param, "C1", 2);
    assert_int_equal(m.param2_len, 2);
    assert_memory_equal(m.param2, "K2", 2);
    assert_int_equal(match("DELETE", "/api/v1/access/clients/C1/keys/", &m), ROUTER_NOT_FOUND);
    assert_int_equal(match("POST", "/api/v1/access/clients/C1/keys", &m), ROUTER_OK);
    assert_int_equal(m.id, ROUTE_CLIENT_KEY_ADD);
    assert_null(m.param2);
    static const char *const forms[] = {"/oauth/token", "/oauth/introspect", "/oauth/revoke"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(match("POST", forms[i], &m), ROUTER_OK);
        assert_int_equal(m.body, ROUTE_BODY_FORM);
        assert_int_equal(match("GET", forms[i], &m), ROUTER_METHOD_NOT_ALLOWED);
        assert_string_equal(m.allow, "POST");
    }
    assert_int_equal(match("GET", "/.well-known/oauth-authorization-server", &m), ROUTER_OK);
    assert_int_equal(m.id, ROUTE_OAUTH_METADATA);
    assert_int_equal(match("GET", "/api/v1/access/admin/users/U/audit", &m), ROUTER_OK);
    assert_int_equal(m.id, ROUTE_ADMIN_USER_AUDIT);
    assert_int_equal(match("PATCH", "/api/v1/access/admin/users/U", &m), ROUTER_OK);
    assert_int_equal(m.body, ROUTE_BODY_JSON);
    assert_int_equal(match("PUT", "/api/v1/access/admin/users/U", &m), ROUTER_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET, HEAD, PATCH, DELETE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_routes), cmocka_unit_test(test_spec_routes),
        cmocka_unit_test(test_not_found),     cmocka_unit_test(test_path_len_is_respected),
        cmocka_unit_test(test_template),      cmocka_unit_test(test_every_route),
        cmocka_unit_test(test_id_param),
        cmocka_unit_test(test_client_and_oauth_routes),
        cmocka_unit_test(test_route_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
