/* Unit tests for lib/metrics.c on registries mapped MAP_SHARED as the
 * supervisor maps them: the exact exposition of a small known registry,
 * cumulative buckets at their edges, sums across slots and processes, label
 * escaping, status "other", method mapping, exact totals under concurrent
 * threads, argument checks, and (when installed) promtool's verdict. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "metrics.h"

#define PROMTOOL "/usr/bin/promtool"

static const char *const routes[] = {"unmatched", "/health", "/api/v1/access/sessions/{id}"};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

struct reg {
    void *mem;
    size_t len;
    struct metrics *m;
};

static struct reg reg_new(unsigned workers)
{
    struct reg r = {NULL, metrics_size(workers), NULL};
    r.mem = mmap(NULL, r.len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(r.mem != MAP_FAILED);
    memset(r.mem, 0xa5, r.len); /* init must zero, not rely on mmap */
    r.m = metrics_init(r.mem, r.len, workers);
    assert_non_null(r.m);
    return r;
}

static void reg_free(struct reg *r)
{
    munmap(r->mem, r->len);
}

/* The exposition of m with the test routes, in b (reset first). */
static const char *render(const struct metrics *m, const struct metrics_external *ext,
                          struct buf *b)
{
    buf_reset(b);
    metrics_render(m, routes, NROUTES, ext, "1.2.3", b);
    assert_non_null(b->data);
    return b->data;
}

static void assert_has(const char *text, const char *line)
{
    if (strstr(text, line) == NULL)
        fail_msg("missing:\n%s\nin:\n%s", line, text);
}

/* The known registry: two workers, a few observations in each. */
static void fill_known(struct metrics *m)
{
    metrics_http(m, 0, 1, METRICS_GET, 200, 0.0005);
    metrics_http(m, 1, 1, METRICS_GET, 200, 0.003);
    metrics_http(m, 1, 2, METRICS_DELETE, 418, 12.0);
    metrics_cache(m, 0, METRICS_L1, 1);
    metrics_cache(m, 0, METRICS_L1, 1);
    metrics_cache(m, 1, METRICS_L1, 1);
    metrics_cache(m, 1, METRICS_L2, 0);
    metrics_hash_observe(m, 0, 0.1);
    metrics_db_observe(m, 1, 0.002, 0);
    metrics_db_observe(m, 0, 0.2, 1);
    metrics_auth(m, 0, METRICS_AUTH_PASSWORD, 1);
    metrics_auth(m, 1, METRICS_AUTH_REFRESH, 0);
    metrics_ratelimited(m, 1, METRICS_RL_LOGIN);
    metrics_audit_spooled(m, 0, 3);
    metrics_set_db_pool(m, 0, 4, 1);
    metrics_set_db_pool(m, 1, 4, 2);
    metrics_set_audit_depth(m, 1, 5);
    metrics_audit_alarm(m, 0, 2, 1);
    metrics_audit_alarm(m, 1, 1, 0);
    metrics_set_audit_spool_failing(m, 1, 7); /* any non-zero is 1 */
    metrics_janitor_deleted(m, 0, METRICS_JT_SESSIONS, 1000);
    metrics_janitor_deleted(m, 1, METRICS_JT_SESSIONS, 600);
    metrics_janitor_deleted(m, 1, METRICS_JT_AUDIT_EVENTS, 2500);
    metrics_mfa(m, 0, METRICS_MFA_SUCCESS);
    metrics_mfa(m, 1, METRICS_MFA_SUCCESS);
    metrics_mfa(m, 1, METRICS_MFA_INVALID_CODE);
    /* The outbox: attempts sum over workers; pending is a count of one
     * shared table, so the largest worker's value, not the sum. */
    metrics_outbox_attempt(m, 0, METRICS_OT_SMTP, 1);
    metrics_outbox_attempt(m, 1, METRICS_OT_SMTP, 1);
    metrics_outbox_attempt(m, 1, METRICS_OT_WEBHOOK, 0);
    metrics_outbox_dead(m, 0);
    metrics_set_outbox_pending(m, 0, METRICS_OK_MESSAGE, 7);
    metrics_set_outbox_pending(m, 1, METRICS_OK_MESSAGE, 9);
    metrics_set_outbox_pending(m, 1, METRICS_OK_EVENT, 2);
}

static const struct metrics_external known_ext = {2, 1, 7, 1};

static const char known_text[] =
    "# HELP http_requests_total HTTP requests answered, by route template, method and status.\n"
    "# TYPE http_requests_total counter\n"
    "http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 2\n"
    "http_requests_total{route=\"/api/v1/access/sessions/{id}\",method=\"DELETE\","
    "status=\"other\"} 1\n"
    "# HELP http_request_duration_seconds Time from request start to response, by route "
    "template.\n"
    "# TYPE http_request_duration_seconds histogram\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.0005\"} 1\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.001\"} 1\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.0025\"} 1\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.005\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.01\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.025\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.05\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.1\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.25\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"0.5\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"1\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"2.5\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"5\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"10\"} 2\n"
    "http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} 2\n"
    "http_request_duration_seconds_sum{route=\"/health\"} 0.0035\n"
    "http_request_duration_seconds_count{route=\"/health\"} 2\n"
#define S "{route=\"/api/v1/access/sessions/{id}\""
    "http_request_duration_seconds_bucket" S ",le=\"0.0005\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.001\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.0025\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.005\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.01\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.025\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.05\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.1\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.25\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"0.5\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"1\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"2.5\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"5\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"10\"} 0\n"
    "http_request_duration_seconds_bucket" S ",le=\"+Inf\"} 1\n"
    "http_request_duration_seconds_sum" S "} 12\n"
    "http_request_duration_seconds_count" S "} 1\n"
#undef S
    "# HELP cache_requests_total Cache lookups by layer (l1, l2) and result.\n"
    "# TYPE cache_requests_total counter\n"
    "cache_requests_total{layer=\"l1\",result=\"hit\"} 3\n"
    "cache_requests_total{layer=\"l1\",result=\"miss\"} 0\n"
    "cache_requests_total{layer=\"l2\",result=\"hit\"} 0\n"
    "cache_requests_total{layer=\"l2\",result=\"miss\"} 1\n"
    "# HELP hash_queue_depth Password hashes waiting for a slot, machine-wide.\n"
    "# TYPE hash_queue_depth gauge\n"
    "hash_queue_depth 2\n"
    "# HELP hash_active Password hashes running, machine-wide.\n"
    "# TYPE hash_active gauge\n"
    "hash_active 1\n"
    "# HELP hash_duration_seconds Time one Argon2id hash ran.\n"
    "# TYPE hash_duration_seconds histogram\n"
    "hash_duration_seconds_bucket{le=\"0.025\"} 0\n"
    "hash_duration_seconds_bucket{le=\"0.05\"} 0\n"
    "hash_duration_seconds_bucket{le=\"0.075\"} 0\n"
    "hash_duration_seconds_bucket{le=\"0.1\"} 1\n"
    "hash_duration_seconds_bucket{le=\"0.15\"} 1\n"
    "hash_duration_seconds_bucket{le=\"0.2\"} 1\n"
    "hash_duration_seconds_bucket{le=\"0.3\"} 1\n"
    "hash_duration_seconds_bucket{le=\"0.5\"} 1\n"
    "hash_duration_seconds_bucket{le=\"1\"} 1\n"
    "hash_duration_seconds_bucket{le=\"2.5\"} 1\n"
    "hash_duration_seconds_bucket{le=\"5\"} 1\n"
    "hash_duration_seconds_bucket{le=\"+Inf\"} 1\n"
    "hash_duration_seconds_sum 0.1\n"
    "hash_duration_seconds_count 1\n"
    "# HELP hash_rejected_total Password hashes refused: queue full.\n"
    "# TYPE hash_rejected_total counter\n"
    "hash_rejected_total 7\n"
    "# HELP db_pool_connections PostgreSQL connections by state.\n"
    "# TYPE db_pool_connections gauge\n"
    "db_pool_connections{state=\"idle\"} 5\n"
    "db_pool_connections{state=\"in_use\"} 3\n"
    "# HELP db_query_duration_seconds Time one PostgreSQL query took.\n"
    "# TYPE db_query_duration_seconds histogram\n"
    "db_query_duration_seconds_bucket{le=\"0.0005\"} 0\n"
    "db_query_duration_seconds_bucket{le=\"0.001\"} 0\n"
    "db_query_duration_seconds_bucket{le=\"0.0025\"} 1\n"
    "db_query_duration_seconds_bucket{le=\"0.005\"} 1\n"
    "db_query_duration_seconds_bucket{le=\"0.01\"} 1\n"
    "db_query_duration_seconds_bucket{le=\"0.025\"} 1\n"
    "db_query_duration_seconds_bucket{le=\"0.05\"} 1\n"
    "db_query_duration_seconds_bucket{le=\"0.1\"} 1\n"
    "db_query_duration_seconds_bucket{le=\"0.25\"} 2\n"
    "db_query_duration_seconds_bucket{le=\"0.5\"} 2\n"
    "db_query_duration_seconds_bucket{le=\"1\"} 2\n"
    "db_query_duration_seconds_bucket{le=\"2.5\"} 2\n"
    "db_query_duration_seconds_bucket{le=\"5\"} 2\n"
    "db_query_duration_seconds_bucket{le=\"10\"} 2\n"
    "db_query_duration_seconds_bucket{le=\"+Inf\"} 2\n"
    "db_query_duration_seconds_sum 0.202\n"
    "db_query_duration_seconds_count 2\n"
    "# HELP db_slow_queries_total PostgreSQL queries over the slow threshold.\n"
    "# TYPE db_slow_queries_total counter\n"
    "db_slow_queries_total 1\n"
    "# HELP auth_attempts_total Authentication attempts by method and result.\n"
    "# TYPE auth_attempts_total counter\n"
    "auth_attempts_total{method=\"password\",result=\"success\"} 1\n"
    "auth_attempts_total{method=\"password\",result=\"failure\"} 0\n"
    "auth_attempts_total{method=\"refresh\",result=\"success\"} 0\n"
    "auth_attempts_total{method=\"refresh\",result=\"failure\"} 1\n"
    "auth_attempts_total{method=\"bearer\",result=\"success\"} 0\n"
    "auth_attempts_total{method=\"bearer\",result=\"failure\"} 0\n"
    "# HELP rate_limit_exceeded_total Requests refused by the rate limiter.\n"
    "# TYPE rate_limit_exceeded_total counter\n"
    "rate_limit_exceeded_total{class=\"login\"} 1\n"
    "rate_limit_exceeded_total{class=\"signup\"} 0\n"
    "rate_limit_exceeded_total{class=\"anonymous\"} 0\n"
    "rate_limit_exceeded_total{class=\"authenticated\"} 0\n"
    "rate_limit_exceeded_total{class=\"token\"} 0\n"
    "rate_limit_exceeded_total{class=\"recover\"} 0\n"
    "# HELP audit_queue_depth Audit events waiting to be written.\n"
    "# TYPE audit_queue_depth gauge\n"
    "audit_queue_depth 5\n"
    "# HELP audit_spooled_total Audit events written to the spool file while PostgreSQL was "
    "away.\n"
    "# TYPE audit_spooled_total counter\n"
    "audit_spooled_total 3\n"
    "# HELP audit_spool_failures_total Spool writes that failed (spool full, disk full): events "
    "waited in memory.\n"
    "# TYPE audit_spool_failures_total counter\n"
    "audit_spool_failures_total 3\n"
    "# HELP audit_spool_failing Workers whose audit spool is failing now (an alarm: /health is "
    "degraded).\n"
    "# TYPE audit_spool_failing gauge\n"
    "audit_spool_failing 1\n"
    "# HELP audit_dropped_total Audit events dropped: PostgreSQL, the spool and the memory queue "
    "all full.\n"
    "# TYPE audit_dropped_total counter\n"
    "audit_dropped_total 1\n"
    "# HELP janitor_deleted_total Rows deleted by the janitor, by table.\n"
    "# TYPE janitor_deleted_total counter\n"
    "janitor_deleted_total{table=\"sessions\"} 1600\n"
    "janitor_deleted_total{table=\"refresh_tokens\"} 0\n"
    "janitor_deleted_total{table=\"audit_events\"} 2500\n"
    "janitor_deleted_total{table=\"outbox\"} 0\n"
    "janitor_deleted_total{table=\"account_tokens\"} 0\n"
    "janitor_deleted_total{table=\"mfa_tokens\"} 0\n"
    "# HELP oauth_grants_total Requests to /oauth/token by grant type and result (an OAuth error "
    "code).\n"
    "# TYPE oauth_grants_total counter\n"
    "oauth_grants_total{grant_type=\"client_credentials\",result=\"success\"} 0\n"
    "oauth_grants_total{grant_type=\"client_credentials\",result=\"invalid_request\"} 0\n"
    "oauth_grants_total{grant_type=\"client_credentials\",result=\"invalid_client\"} 0\n"
    "oauth_grants_total{grant_type=\"client_credentials\",result=\"invalid_grant\"} 0\n"
    "oauth_grants_total{grant_type=\"client_credentials\",result=\"unsupported_grant_type\"} 0\n"
    "oauth_grants_total{grant_type=\"client_credentials\",result=\"invalid_scope\"} 0\n"
    "oauth_grants_total{grant_type=\"client_credentials\",result=\"error\"} 0\n"
    "# HELP mfa_attempts_total Second-factor codes checked (login/mfa, confirmation, removal), by "
    "result.\n"
    "# TYPE mfa_attempts_total counter\n"
    "mfa_attempts_total{result=\"success\"} 2\n"
    "mfa_attempts_total{result=\"invalid_code\"} 1\n"
    "mfa_attempts_total{result=\"invalid_grant\"} 0\n"
    "mfa_attempts_total{result=\"throttled\"} 0\n"
    "mfa_attempts_total{result=\"error\"} 0\n"
    "# HELP outbox_pending Outbox rows waiting for delivery (or held), by kind.\n"
    "# TYPE outbox_pending gauge\n"
    "outbox_pending{kind=\"message\"} 9\n"
    "outbox_pending{kind=\"event\"} 2\n"
    "# HELP outbox_delivered_total Outbox delivery attempts by transport and result.\n"
    "# TYPE outbox_delivered_total counter\n"
    "outbox_delivered_total{transport=\"smtp\",result=\"success\"} 2\n"
    "outbox_delivered_total{transport=\"smtp\",result=\"failure\"} 0\n"
    "outbox_delivered_total{transport=\"webhook\",result=\"success\"} 0\n"
    "outbox_delivered_total{transport=\"webhook\",result=\"failure\"} 1\n"
    "# HELP outbox_dead_total Outbox rows given up after outbox_max_attempts.\n"
    "# TYPE outbox_dead_total counter\n"
    "outbox_dead_total 1\n"
    "# HELP worker_restarts_total Workers started again after dying.\n"
    "# TYPE worker_restarts_total counter\n"
    "worker_restarts_total 1\n"
    "# HELP build_info Build of the running service; always 1.\n"
    "# TYPE build_info gauge\n"
    "build_info{version=\"1.2.3\"} 1\n";

static void test_render_known(void **state)
{
    (void)state;
    struct reg r = reg_new(2);
    struct buf b = {0};
    fill_known(r.m);
    assert_string_equal(render(r.m, &known_ext, &b), known_text);
    /* Rendering reads only: a second render is identical. */
    assert_string_equal(render(r.m, &known_ext, &b), known_text);
    assert_int_equal(metrics_audit_spool_failing(r.m), 1);
    metrics_clear_gauges(r.m, 1); /* its worker died: no alarm left behind */
    assert_int_equal(metrics_audit_spool_failing(r.m), 0);
    buf_free(&b);
    reg_free(&r);
}

static void test_render_empty(void **state)
{
    (void)state;
    struct reg r = reg_new(1);
    struct buf b = {0};
    const char *t = render(r.m, NULL, &b);
    /* Families always present; no request series, no route histogram. */
    assert_has(t, "# TYPE http_requests_total counter\n"
                  "# HELP http_request_duration_seconds");
    assert_has(t, "# TYPE http_request_duration_seconds histogram\n# HELP cache_requests_total");
    assert_has(t, "cache_requests_total{layer=\"l2\",result=\"miss\"} 0\n");
    assert_has(t, "hash_duration_seconds_bucket{le=\"+Inf\"} 0\nhash_duration_seconds_sum 0\n"
                  "hash_duration_seconds_count 0\n");
    assert_has(t, "db_pool_connections{state=\"in_use\"} 0\n");
    assert_has(t, "rate_limit_exceeded_total{class=\"authenticated\"} 0\n");
    assert_has(t, "hash_queue_depth 0\n");
    assert_null(strstr(t, "http_requests_total{"));
    assert_null(strstr(t, "route="));
    buf_free(&b);
    reg_free(&r);
}

/* Bucket edges: a value equal to a bound lands in it (le is <=). */
static void test_buckets_cumulative(void **state)
{
    (void)state;
    struct reg r = reg_new(1);
    struct buf b = {0};
    const double obs[] = {0, -1, NAN, 0.0005, 0.00050001, 0.001, 0.0999, 0.1, 10, 10.000001, 1e30};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        metrics_http(r.m, 0, 0, METRICS_GET, 200, obs[i]);
    const char *t = render(r.m, NULL, &b);
#define B "http_request_duration_seconds_bucket{route=\"unmatched\",le="
    assert_has(t, B "\"0.0005\"} 4\n" B "\"0.001\"} 6\n" B "\"0.0025\"} 6\n");
    assert_has(t, B "\"0.05\"} 6\n" B "\"0.1\"} 8\n" B "\"0.25\"} 8\n");
    assert_has(t, B "\"5\"} 8\n" B "\"10\"} 9\n" B "\"+Inf\"} 11\n");
#undef B
    /* 1e30 s is clamped to 1e9 s; the sum stays exact in nanoseconds. */
    assert_has(t, "http_request_duration_seconds_sum{route=\"unmatched\"} "
                  "1000000020.20190101\n");
    assert_has(t, "http_request_duration_seconds_count{route=\"unmatched\"} 11\n");
    buf_free(&b);
    reg_free(&r);
}

static void test_sums_across_slots(void **state)
{
    (void)state;
    struct reg r = reg_new(4);
    struct buf b = {0};
    for (unsigned s = 0; s < 4; s++) {
        for (unsigned i = 0; i <= s; i++) {
            metrics_cache(r.m, s, METRICS_L2, 1);
            metrics_http(r.m, s, 2, METRICS_PATCH, 204, 0.01);
        }
        metrics_set_db_pool(r.m, s, 11 * s, 10 * s);
        metrics_set_audit_depth(r.m, s, 100);
    }
    assert_int_equal(metrics_cache_total(r.m, METRICS_L2, 1), 10);
    assert_int_equal(metrics_cache_total(r.m, METRICS_L2, 0), 0);
    assert_int_equal(metrics_cache_total(r.m, METRICS_L1, 1), 0);
    assert_int_equal(metrics_http_total(r.m, 2, METRICS_PATCH, 204), 10);
    assert_int_equal(metrics_http_total(r.m, 2, METRICS_PATCH, 200), 0);
    const char *t = render(r.m, NULL, &b);
    assert_has(t, "http_requests_total{route=\"/api/v1/access/sessions/{id}\",method=\"PATCH\","
                  "status=\"204\"} 10\n");
    assert_has(t, "http_request_duration_seconds_sum{route=\"/api/v1/access/sessions/{id}\"} "
                  "0.1\n");
    assert_has(t, "cache_requests_total{layer=\"l2\",result=\"hit\"} 10\n");
    assert_has(t, "db_pool_connections{state=\"idle\"} 6\ndb_pool_connections{state=\"in_use\"} "
                  "60\n");
    assert_has(t, "audit_queue_depth 400\n");

    /* Setting a gauge replaces the slot's value; clearing drops a dead
     * worker's gauges but keeps its counters. */
    metrics_set_db_pool(r.m, 3, 2, 1);
    metrics_clear_gauges(r.m, 2);
    t = render(r.m, NULL, &b);
    assert_has(t, "db_pool_connections{state=\"idle\"} 2\ndb_pool_connections{state=\"in_use\"} "
                  "11\n");
    assert_has(t, "audit_queue_depth 300\n");
    assert_int_equal(metrics_cache_total(r.m, METRICS_L2, 1), 10);
    buf_free(&b);
    reg_free(&r);
}

static void test_label_escaping(void **state)
{
    (void)state;
    struct reg r = reg_new(1);
    struct buf b = {0};
    const char *const names[] = {"/a\\b\"c\nd"};
    metrics_http(r.m, 0, 0, METRICS_GET, 200, 0.001);
    metrics_render(r.m, names, 1, NULL, "v\"1\\\n", &b);
    assert_has(b.data, "http_requests_total{route=\"/a\\\\b\\\"c\\nd\",method=\"GET\","
                       "status=\"200\"} 1\n");
    assert_has(b.data, "http_request_duration_seconds_count{route=\"/a\\\\b\\\"c\\nd\"} 1\n");
    assert_has(b.data, "build_info{version=\"v\\\"1\\\\\\n\"} 1\n");
    buf_free(&b);
    reg_free(&r);
}

static void test_status_other(void **state)
{
    (void)state;
    struct reg r = reg_new(1);
    struct buf b = {0};
    const int odd[] = {418, 599, 100, 0, -1, 206};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        metrics_http(r.m, 0, 1, METRICS_POST, odd[i], 0.001);
    const int listed[] = {200, 201, 204, 304, 400, 401, 403, 404, 405,
                          409, 413, 415, 422, 429, 500, 502, 503, 504};
    for (size_t i = 0; i < sizeof(listed) / sizeof(listed[0]); i++)
        metrics_http(r.m, 0, 1, METRICS_GET, listed[i], 0.001);
    const char *t = render(r.m, NULL, &b);
    assert_has(t, "http_requests_total{route=\"/health\",method=\"POST\",status=\"other\"} 6\n");
    for (size_t i = 0; i < sizeof(listed) / sizeof(listed[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line),
                 "http_requests_total{route=\"/health\",method=\"GET\",status=\"%d\"} 1\n",
                 listed[i]);
        assert_has(t, line);
    }
    assert_null(strstr(t, "status=\"418\""));
    assert_int_equal(metrics_http_total(r.m, 1, METRICS_POST, 418), 6);
    buf_free(&b);
    reg_free(&r);
}

static void test_method_index(void **state)
{
    (void)state;
    assert_int_equal(metrics_method_index("GET"), METRICS_GET);
    assert_int_equal(metrics_method_index("POST"), METRICS_POST);
    assert_int_equal(metrics_method_index("PATCH"), METRICS_PATCH);
    assert_int_equal(metrics_method_index("DELETE"), METRICS_DELETE);
    assert_int_equal(metrics_method_index("PUT"), METRICS_PUT);
    assert_int_equal(metrics_method_index("HEAD"), METRICS_HEAD);
    assert_int_equal(metrics_method_index("OPTIONS"), METRICS_OPTIONS);
    assert_int_equal(metrics_method_index("get"), METRICS_OTHER);
    assert_int_equal(metrics_method_index("GETX"), METRICS_OTHER);
    assert_int_equal(metrics_method_index("TRACE"), METRICS_OTHER);
    assert_int_equal(metrics_method_index(""), METRICS_OTHER);
    assert_int_equal(metrics_method_index(NULL), METRICS_OTHER);
}

/* ---- concurrency ------------------------------------------------------ */

#define THREADS 4
#define ROUNDS  20000

struct hammer {
    struct metrics *m;
    unsigned slot;
};

static void *hammer(void *arg)
{
    const struct hammer *h = arg;
    for (int i = 0; i < ROUNDS; i++) {
        metrics_http(h->m, h->slot, 1, METRICS_GET, 200, 0.001);
        metrics_cache(h->m, h->slot, METRICS_L1, i & 1);
        metrics_db_observe(h->m, h->slot, 0.000001, 1);
    }
    return NULL;
}

static void test_threads_exact(void **state)
{
    (void)state;
    struct reg r = reg_new(2);
    struct buf b = {0};
    pthread_t t[THREADS];
    struct hammer h[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){r.m, i % 2}; /* two threads per slot */
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &h[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(metrics_http_total(r.m, 1, METRICS_GET, 200), THREADS * ROUNDS);
    assert_int_equal(metrics_cache_total(r.m, METRICS_L1, 1), THREADS * ROUNDS / 2);
    assert_int_equal(metrics_cache_total(r.m, METRICS_L1, 0), THREADS * ROUNDS / 2);
    const char *text = render(r.m, NULL, &b);
    assert_has(text, "http_request_duration_seconds_count{route=\"/health\"} 80000\n");
    assert_has(text, "http_request_duration_seconds_sum{route=\"/health\"} 80\n");
    assert_has(text, "db_query_duration_seconds_sum 0.08\n");
    assert_has(text, "db_slow_queries_total 80000\n");
    buf_free(&b);
    reg_free(&r);
}

/* Forked workers each write their own slot; the parent sees the sum. */
static void test_processes_share(void **state)
{
    (void)state;
    enum { KIDS = 3, N = 5000 };
    struct reg r = reg_new(KIDS);
    pid_t pid[KIDS];
    for (unsigned k = 0; k < KIDS; k++) {
        pid[k] = fork();
        assert_true(pid[k] >= 0);
        if (pid[k] == 0) {
            for (int i = 0; i < N; i++)
                metrics_cache(r.m, k, METRICS_L2, 0);
            metrics_set_db_pool(r.m, k, 3, 2);
            _exit(0);
        }
    }
    for (unsigned k = 0; k < KIDS; k++) {
        int st = -1;
        assert_int_equal(waitpid(pid[k], &st, 0), pid[k]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_int_equal(metrics_cache_total(r.m, METRICS_L2, 0), KIDS * N);
    struct buf b = {0};
    assert_has(render(r.m, NULL, &b), "db_pool_connections{state=\"in_use\"} 6\n");
    buf_free(&b);
    reg_free(&r);
}

/* ---- arguments -------------------------------------------------------- */

static void test_init_checks(void **state)
{
    (void)state;
    static _Alignas(64) unsigned char mem[1 << 17];
    size_t need = metrics_size(2);
    assert_true(need <= sizeof(mem));
    assert_true(metrics_size(3) > need);
    assert_null(metrics_init(mem, sizeof(mem), 0));
    assert_null(metrics_init(mem, need - 1, 2));
    assert_null(metrics_init(mem + 8, need, 2));
    assert_non_null(metrics_init(mem, need, 2));
}

static void test_out_of_range_ignored(void **state)
{
    (void)state;
    struct reg r = reg_new(2);
    struct buf b = {0};
    fill_known(r.m);
    metrics_http(r.m, 2, 1, METRICS_GET, 200, 0.1);
    metrics_http(r.m, 0, METRICS_MAX_ROUTES, METRICS_GET, 200, 0.1);
    metrics_http(r.m, 0, 1, METRICS_METHOD__COUNT, 200, 0.1);
    metrics_cache(r.m, 7, METRICS_L1, 1);
    metrics_cache(r.m, 0, METRICS_LAYER__COUNT, 1);
    metrics_auth(r.m, 0, METRICS_AUTH__COUNT, 1);
    metrics_ratelimited(r.m, 0, METRICS_RL__COUNT);
    metrics_hash_observe(r.m, 2, 1);
    metrics_db_observe(r.m, 2, 1, 1);
    metrics_audit_spooled(r.m, 2, 1);
    metrics_set_db_pool(r.m, 2, 9, 9);
    metrics_set_audit_depth(r.m, 2, 9);
    metrics_audit_alarm(r.m, 2, 1, 1);
    metrics_set_audit_spool_failing(r.m, 2, 1);
    metrics_janitor_deleted(r.m, 2, METRICS_JT_SESSIONS, 1);
    metrics_janitor_deleted(r.m, 0, METRICS_JT__COUNT, 1);
    metrics_mfa(r.m, 2, METRICS_MFA_SUCCESS);
    metrics_mfa(r.m, 0, METRICS_MFA__COUNT);
    metrics_clear_gauges(r.m, 2);
    metrics_http(NULL, 0, 1, METRICS_GET, 200, 0.1);
    assert_string_equal(render(r.m, &known_ext, &b), known_text);

    /* A route past the caller's table is counted but not rendered. */
    metrics_http(r.m, 0, 5, METRICS_GET, 200, 0.1);
    assert_int_equal(metrics_http_total(r.m, 5, METRICS_GET, 200), 1);
    assert_string_equal(render(r.m, &known_ext, &b), known_text);
    buf_free(&b);
    reg_free(&r);
}

/* Two route indexes with one template (GET and PATCH of /me): one series
 * per label set, the histogram summed over both. Before, the histogram
 * appeared once per index, a duplicate series Prometheus drops. */
static void test_same_template_rendered_once(void **state)
{
    (void)state;
    struct reg r = reg_new(2);
    struct buf b = {0};
    const char *const names[] = {"unmatched", "/me", "/me", "/x"};
    metrics_http(r.m, 0, 1, METRICS_GET, 200, 0.0005);
    metrics_http(r.m, 1, 1, METRICS_GET, 200, 0.0005);
    metrics_http(r.m, 0, 2, METRICS_PATCH, 200, 0.003);
    metrics_http(r.m, 1, 2, METRICS_GET, 200, 0.003); /* same labels as index 1 */
    metrics_render(r.m, names, 4, NULL, "1", &b);
    const char *t = b.data;
    assert_has(t, "http_requests_total{route=\"/me\",method=\"GET\",status=\"200\"} 3\n");
    assert_has(t, "http_requests_total{route=\"/me\",method=\"PATCH\",status=\"200\"} 1\n");
    assert_has(t, "http_request_duration_seconds_bucket{route=\"/me\",le=\"0.0005\"} 2\n");
    assert_has(t, "http_request_duration_seconds_bucket{route=\"/me\",le=\"0.005\"} 4\n");
    assert_has(t, "http_request_duration_seconds_count{route=\"/me\"} 4\n");
    assert_has(t, "http_request_duration_seconds_sum{route=\"/me\"} 0.007\n");
    /* Every sample line (name and labels) once. */
    const char *line = t;
    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        if (*line != '#') {
            const char *sp = memrchr(line, ' ', (size_t)(end - line));
            assert_non_null(sp);
            char key[256];
            size_t kl = (size_t)(sp - line);
            assert_true(kl < sizeof(key) - 1);
            memcpy(key, line, kl);
            key[kl] = ' ';
            key[kl + 1] = '\0';
            const char *first = strstr(t, key);
            while (first != t && first[-1] != '\n')
                first = strstr(first + 1, key);
            assert_ptr_equal(first, line);
            const char *again = strstr(end, key);
            while (again != NULL && again[-1] != '\n')
                again = strstr(again + 1, key);
            if (again != NULL)
                fail_msg("series twice: %s", key);
        }
        line = end + 1;
    }
    buf_free(&b);
    reg_free(&r);
}

/* in_use sampled above open must not wrap idle around to 2^64 - n. */
static void test_db_pool_idle_clamped(void **state)
{
    (void)state;
    struct reg r = reg_new(2);
    struct buf b = {0};
    metrics_set_db_pool(r.m, 0, 2, 5);
    metrics_set_db_pool(r.m, 1, 3, 1);
    const char *t = render(r.m, NULL, &b);
    assert_has(t, "db_pool_connections{state=\"idle\"} 2\n");
    assert_has(t, "db_pool_connections{state=\"in_use\"} 6\n");
    metrics_set_db_pool(r.m, 1, 0, 0);
    t = render(r.m, NULL, &b);
    assert_has(t, "db_pool_connections{state=\"idle\"} 0\n");
    buf_free(&b);
    reg_free(&r);
}

/* ---- promtool ---------------------------------------------------------- */

static void test_promtool(void **state)
{
    (void)state;
    if (access(PROMTOOL, X_OK) != 0) {
        print_message("SKIP: " PROMTOOL " not installed (apt-get install prometheus)\n");
        skip();
    }
    struct reg r = reg_new(2);
    struct buf b = {0};
    fill_known(r.m);
    const char *const names[] = {"unmatched", "/health", "/a\\b\"c\nd"};
    metrics_http(r.m, 0, 2, METRICS_PUT, 409, 0.02);
    metrics_render(r.m, names, 3, &known_ext, "v\"1", &b);
    FILE *p = popen(PROMTOOL " check metrics 2>&1", "w");
    assert_non_null(p);
    assert_int_equal(fwrite(b.data, 1, b.len, p), b.len);
    int st = pclose(p);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    buf_free(&b);
    reg_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_known),         cmocka_unit_test(test_render_empty),
        cmocka_unit_test(test_buckets_cumulative),   cmocka_unit_test(test_sums_across_slots),
        cmocka_unit_test(test_label_escaping),       cmocka_unit_test(test_status_other),
        cmocka_unit_test(test_method_index),         cmocka_unit_test(test_threads_exact),
        cmocka_unit_test(test_processes_share),      cmocka_unit_test(test_init_checks),
        cmocka_unit_test(test_out_of_range_ignored), cmocka_unit_test(test_promtool),
        cmocka_unit_test(test_same_template_rendered_once),
        cmocka_unit_test(test_db_pool_idle_clamped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
