/* Unit tests for lib/config.c: defaults (SPEC §3), file parsing, every
 * validation error and its message, environment overrides, cross-key
 * validation, the masked dump and the metrics_allow matcher. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static long cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n;
}

static void test_defaults(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    long n = cpus();
    long hash = n < 4 ? n : 4;
    if (hash < 1)
        hash = 1;
    assert_int_equal(c.workers, n);
    assert_int_equal(c.threads, 16);
    assert_null(c.database_url);
    assert_int_equal(c.db_statement_timeout_ms, 5000);
    assert_int_equal(c.db_slow_query_ms, 100);
    assert_int_equal(c.db_prepared, 1);
    assert_non_null(c.redis_url);
    assert_string_equal(c.redis_url, "");
    assert_int_equal(c.hash_threads, hash);
    assert_int_equal(c.hash_queue_max, 64);
    assert_int_equal(c.hash_queue_timeout_ms, 2000);
    assert_int_equal(c.argon2_time_cost, 3);
    assert_int_equal(c.argon2_memory_kib, 65536);
    assert_int_equal(c.argon2_parallelism, 1);
    assert_null(c.jwt_keys);
    assert_string_equal(c.jwt_issuer, "access");
    assert_string_equal(c.jwt_audience, "access");
    assert_string_equal(c.jwt_alg, "EdDSA");
    assert_int_equal(c.access_token_ttl, 3600);
    assert_int_equal(c.refresh_token_ttl, 2592000);
    assert_int_equal(c.max_sessions_per_user, 10);
    assert_int_equal(c.l1_max_entries, 10000);
    assert_int_equal(c.l1_max_bytes, 50L * 1024 * 1024);
    assert_int_equal(c.l1_ttl, 60);
    assert_int_equal(c.l2_ttl, 300);
    assert_int_equal(c.ratelimit_login.count, 100);
    assert_int_equal(c.ratelimit_login.window, 3600);
    assert_int_equal(c.ratelimit_signup.count, 5);
    assert_int_equal(c.ratelimit_signup.window, 86400);
    assert_int_equal(c.ratelimit_authenticated.count, 6000);
    assert_int_equal(c.ratelimit_authenticated.window, 60);
    assert_int_equal(c.ratelimit_anonymous.count, 600);
    assert_int_equal(c.ratelimit_anonymous.window, 60);
    assert_string_equal(c.metrics_allow, "127.0.0.1/32,::1/128");
    assert_int_equal(c.metrics_cidr_count, 2);
    assert_int_equal(c.metrics_cidrs[0].family, AF_INET);
    assert_int_equal(c.metrics_cidrs[0].prefix, 32);
    assert_int_equal(c.metrics_cidrs[1].family, AF_INET6);
    assert_int_equal(c.metrics_cidrs[1].prefix, 128);
    assert_int_equal(c.max_body_bytes, 16384);
    assert_int_equal(c.request_timeout_ms, 30000);
    assert_string_equal(c.audit_spool, "./var/audit.spool");
    assert_int_equal(c.audit_spool_max_bytes, 268435456);
    assert_int_equal(c.session_retention, 604800);
    assert_int_equal(c.audit_retention_days, 365);
    assert_int_equal(c.janitor_interval, 60);
    assert_int_equal(c.log_level, LOG_INFO);
    assert_int_equal(c.log_format, LOG_FORMAT_JSON);
    config_free(&c);
}

static void test_parse_file_text(void **state)
{
    (void)state;
    struct config c;
    char err[512] = "";
    static const char text[] = "# access configuration\n"
                               "\n"
                               "   \t\n"
                               "threads = 8\n"
                               "  workers=3  \n"
                               "\tdatabase_url =  postgresql:///access  # trailing comment\n"
                               "db_prepared = off\r\n"
                               "   # indented comment = not a key\n"
                               "ratelimit_login = 10/60\n"
                               "l1_max_bytes = 16K\n"
                               "max_body_bytes = 1MiB\n"
                               "jwt_alg = Ed25519\n"
                               "log_level = debug\n"
                               "log_format = text\n"
                               "metrics_allow = 10.0.0.0/8, 2001:db8::/32\n"
                               "redis_url =\n"
                               "jwt_keys = /etc/access/keys.json"; /* no final newline */
    config_defaults(&c);
    assert_int_equal(config_parse(&c, text, strlen(text), "t.conf", err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(c.threads, 8);
    assert_int_equal(c.workers, 3);
    assert_string_equal(c.database_url, "postgresql:///access");
    assert_int_equal(c.db_prepared, 0);
    assert_int_equal(c.ratelimit_login.count, 10);
    assert_int_equal(c.ratelimit_login.window, 60);
    assert_int_equal(c.l1_max_bytes, 16384);
    assert_int_equal(c.max_body_bytes, 1048576);
    assert_string_equal(c.jwt_alg, "Ed25519");
    assert_int_equal(c.log_level, LOG_DEBUG);
    assert_int_equal(c.log_format, LOG_FORMAT_TEXT);
    assert_string_equal(c.metrics_allow, "10.0.0.0/8, 2001:db8::/32");
    assert_int_equal(c.metrics_cidr_count, 2);
    assert_string_equal(c.redis_url, "");
    assert_string_equal(c.jwt_keys, "/etc/access/keys.json");
    /* Untouched keys keep their defaults. */
    assert_int_equal(c.access_token_ttl, 3600);
    config_free(&c);
}

static void test_parse_respects_len(void **state)
{
    (void)state;
    struct config c;
    char err[512] = "";
    /* Only the first len bytes count: the rest would be an error. */
    static const char text[] = "threads = 4\nbogus line without equals";
    config_defaults(&c);
    assert_int_equal(config_parse(&c, text, strlen("threads = 4\n"), "t.conf", err, sizeof(err)),
                     0);
    assert_int_equal(c.threads, 4);
    assert_int_equal(config_parse(&c, text, 0, "t.conf", err, sizeof(err)), 0);
    assert_int_equal(config_parse(&c, text, strlen(text), "t.conf", err, sizeof(err)), -1);
    config_free(&c);
}

/* config_set must fail, leave the old value, and name key, value and each
 * of the given fragments (allowed range). */
static void expect_set_error(const char *key, const char *value, const char *frag1,
                             const char *frag2)
{
    struct config c;
    char err[512] = "";
    config_defaults(&c);
    char *before = config_dump(&c);
    int rc = config_set(&c, key, value, err, sizeof(err));
    if (rc != -1)
        fail_msg("config_set(%s, '%s') accepted", key, value);
    if (strstr(err, key) == NULL)
        fail_msg("error for %s='%s' does not name the key: %s", key, value, err);
    char quoted[300];
    snprintf(quoted, sizeof(quoted), "'%s'", value);
    if (strstr(err, quoted) == NULL)
        fail_msg("error for %s='%s' does not name the value: %s", key, value, err);
    if (frag1 != NULL && strstr(err, frag1) == NULL)
        fail_msg("error for %s='%s' lacks '%s': %s", key, value, frag1, err);
    if (frag2 != NULL && strstr(err, frag2) == NULL)
        fail_msg("error for %s='%s' lacks '%s': %s", key, value, frag2, err);
    char *after = config_dump(&c);
    assert_string_equal(before, after); /* nothing changed */
    free(before);
    free(after);
    config_free(&c);
}

static void expect_set_ok(struct config *c, const char *key, const char *value)
{
    char err[512] = "";
    if (config_set(c, key, value, err, sizeof(err)) != 0)
        fail_msg("config_set(%s, '%s') refused: %s", key, value, err);
}

static void test_unknown_key(void **state)
{
    (void)state;
    struct config c;
    char err[512] = "";
    config_defaults(&c);
    assert_int_equal(config_set(&c, "no_such_key", "1", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no_such_key"));
    assert_non_null(strstr(err, "unknown"));
    /* Keys are case-sensitive in the file. */
    assert_int_equal(config_set(&c, "THREADS", "4", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "THREADS"));
    config_free(&c);
}

static void test_int_errors(void **state)
{
    (void)state;
    /* Non-integers. */
    expect_set_error("threads", "abc", "1..1024", NULL);
    expect_set_error("threads", "", "1..1024", NULL);
    expect_set_error("threads", "8x", "1..1024", NULL);
    expect_set_error("threads", " 8", "1..1024", NULL);
    expect_set_error("threads", "1.5", "1..1024", NULL);
    expect_set_error("threads", "99999999999999999999999", "1..1024", NULL);
    /* Out of range, low and high, for several keys. */
    expect_set_error("threads", "0", "1..1024", NULL);
    expect_set_error("threads", "1025", "1..1024", NULL);
    expect_set_error("workers", "0", "1..256", NULL);
    expect_set_error("workers", "257", "1..256", NULL);
    expect_set_error("access_token_ttl", "59", "60..86400", NULL);
    expect_set_error("access_token_ttl", "86401", "60..86400", NULL);
    expect_set_error("hash_queue_max", "-1", "0..100000", NULL);
    expect_set_error("hash_queue_max", "100001", "0..100000", NULL);
    expect_set_error("argon2_memory_kib", "7", "8..4194304", NULL);
    expect_set_error("argon2_parallelism", "17", "1..16", NULL);
    expect_set_error("request_timeout_ms", "99", "100..600000", NULL);
    expect_set_error("hash_threads", "0", "1..256", NULL);
    expect_set_error("janitor_interval", "0", "1..86400", NULL);
    expect_set_error("janitor_interval", "86401", "1..86400", NULL);
    expect_set_error("session_retention", "-1", "0..315360000", NULL);
    expect_set_error("audit_retention_days", "0", "1..36500", NULL);
    expect_set_error("audit_retention_days", "36501", "1..36500", NULL);
    expect_set_error("audit_spool_max_bytes", "65535", "65536..1099511627776", NULL);
    expect_set_error("audit_spool_max_bytes", "2T", "65536..1099511627776", NULL);
}

static void test_int_bounds_accepted(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    expect_set_ok(&c, "threads", "1");
    assert_int_equal(c.threads, 1);
    expect_set_ok(&c, "threads", "1024");
    assert_int_equal(c.threads, 1024);
    expect_set_ok(&c, "access_token_ttl", "60");
    assert_int_equal(c.access_token_ttl, 60);
    expect_set_ok(&c, "access_token_ttl", "86400");
    assert_int_equal(c.access_token_ttl, 86400);
    expect_set_ok(&c, "hash_queue_max", "0");
    assert_int_equal(c.hash_queue_max, 0);
    /* The janitor's end-to-end test runs it every second. */
    expect_set_ok(&c, "janitor_interval", "1");
    assert_int_equal(c.janitor_interval, 1);
    expect_set_ok(&c, "session_retention", "0");
    assert_int_equal(c.session_retention, 0);
    expect_set_ok(&c, "audit_spool_max_bytes", "1GiB");
    assert_int_equal(c.audit_spool_max_bytes, 1073741824L);
    expect_set_ok(&c, "audit_spool_max_bytes", "65536");
    assert_int_equal(c.audit_spool_max_bytes, 65536);
    config_free(&c);
}

static void test_bool(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    static const char *const off[] = {"off", "false", "no", "0"};
    static const char *const on[] = {"on", "true", "yes", "1"};
    for (size_t i = 0; i < 4; i++) {
        expect_set_ok(&c, "db_prepared", off[i]);
        assert_int_equal(c.db_prepared, 0);
        expect_set_ok(&c, "db_prepared", on[i]);
        assert_int_equal(c.db_prepared, 1);
    }
    config_free(&c);
    expect_set_error("db_prepared", "maybe", "on or off", NULL);
    expect_set_error("db_prepared", "", "on or off", NULL);
    expect_set_error("db_prepared", "2", "on or off", NULL);
}

static void test_sizes(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    expect_set_ok(&c, "max_body_bytes", "16K");
    assert_int_equal(c.max_body_bytes, 16384);
    expect_set_ok(&c, "max_body_bytes", "16KiB");
    assert_int_equal(c.max_body_bytes, 16384);
    expect_set_ok(&c, "max_body_bytes", "1MiB");
    assert_int_equal(c.max_body_bytes, 1048576);
    expect_set_ok(&c, "max_body_bytes", "2M");
    assert_int_equal(c.max_body_bytes, 2097152);
    expect_set_ok(&c, "max_body_bytes", "300");
    assert_int_equal(c.max_body_bytes, 300);
    expect_set_ok(&c, "l1_max_bytes", "1G");
    assert_int_equal(c.l1_max_bytes, 1073741824L);
    expect_set_ok(&c, "l1_max_bytes", "4GiB");
    assert_int_equal(c.l1_max_bytes, 4294967296L);
    expect_set_ok(&c, "l1_max_bytes", "0");
    assert_int_equal(c.l1_max_bytes, 0);
    config_free(&c);

    expect_set_error("max_body_bytes", "16X", "256..16777216", "suffix");
    expect_set_error("max_body_bytes", "16KB", "256..16777216", NULL);
    expect_set_error("max_body_bytes", "1.5M", "256..16777216", NULL);
    expect_set_error("max_body_bytes", "-1K", "256..16777216", NULL);
    expect_set_error("max_body_bytes", "K", "256..16777216", NULL);
    expect_set_error("max_body_bytes", "255", "256..16777216", NULL);
    expect_set_error("max_body_bytes", "17M", "256..16777216", NULL);
    expect_set_error("l1_max_bytes", "5G", "0..4294967296", NULL);
    expect_set_error("l1_max_bytes", "99999999999999999999G", NULL, NULL);
}

static void test_rates(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    expect_set_ok(&c, "ratelimit_signup", "1/1");
    assert_int_equal(c.ratelimit_signup.count, 1);
    assert_int_equal(c.ratelimit_signup.window, 1);
    config_free(&c);

    static const char *const bad[] = {"100",    "/60",    "100/",   "0/60",  "100/0",
                                      "-1/60",  "5/-60",  "abc",    "a/b",   "10/60x",
                                      "10//60", " 10/60", "10/ 60", "1e3/60"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_set_error("ratelimit_login", bad[i], "COUNT/SECONDS", NULL);
}

/* client_scopes (SPEC §3): scope tokens, never admin; the v2 OAuth keys'
 * defaults. */
static void test_client_scopes(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    assert_string_equal(c.client_scopes, "api");
    assert_string_equal(c.public_url, "http://127.0.0.1:8080");
    assert_int_equal(c.client_token_ttl, 3600);
    assert_int_equal(c.ratelimit_token.count, 1200);
    assert_int_equal(c.ratelimit_token.window, 60);
    expect_set_ok(&c, "client_scopes", "api read:users billing.write");
    assert_string_equal(c.client_scopes, "api read:users billing.write");
    config_free(&c);
    static const char *const bad[] = {"admin", "api admin", "api  read", " api",
                                      "api ",  "a\"b",      "api,read",  "administrators admin"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_set_error("client_scopes", bad[i], "never admin", NULL);
    expect_set_error("client_token_ttl", "59", "60", NULL);
}

static void test_cidrs(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "10.0.0.0/33", "300.0.0.1/8", "::1/129",
        "10.0.0.0/",   "abc",         "10.0.0.0/-1",
        "10.0.0/8",    "10.0.0.0/x",  "127.0.0.1/32,garbage",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_set_error("metrics_allow", bad[i], "CIDR", NULL);

    /* More than CONFIG_MAX_CIDRS entries. */
    char many[1024] = "";
    for (int i = 0; i <= CONFIG_MAX_CIDRS; i++) {
        char one[32];
        snprintf(one, sizeof(one), "%s10.0.0.%d", i ? "," : "", i);
        strcat(many, one);
    }
    expect_set_error("metrics_allow", many, "at most 32", NULL);

    struct config c;
    config_defaults(&c);
    expect_set_ok(&c, "metrics_allow", "10.0.0.1");
    assert_int_equal(c.metrics_cidr_count, 1);
    assert_int_equal(c.metrics_cidrs[0].prefix, 32);
    expect_set_ok(&c, "metrics_allow", "");
    assert_int_equal(c.metrics_cidr_count, 0);
    config_free(&c);
}

static void test_enums(void **state)
{
    (void)state;
    expect_set_error("log_level", "verbose", "debug, info, warn, error", NULL);
    expect_set_error("log_level", "INFO", "debug, info, warn, error", NULL);
    expect_set_error("log_format", "xml", "json, text", NULL);
    expect_set_error("jwt_alg", "RS256", "EdDSA, Ed25519", NULL);
    expect_set_error("jwt_alg", "eddsa", "EdDSA, Ed25519", NULL);
    expect_set_error("jwt_issuer", "", "1..256", NULL);
}

static void test_socket_mode(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    assert_int_equal(c.socket_mode, 0660);
    char *d = config_dump(&c);
    assert_non_null(strstr(d, "socket_mode = 0660\n"));
    free(d);
    expect_set_ok(&c, "socket_mode", "0600");
    assert_int_equal(c.socket_mode, 0600);
    expect_set_ok(&c, "socket_mode", "660");
    assert_int_equal(c.socket_mode, 0660);
    expect_set_ok(&c, "socket_mode", "0");
    assert_int_equal(c.socket_mode, 0);
    expect_set_ok(&c, "socket_mode", "0777");
    assert_int_equal(c.socket_mode, 0777);
    config_free(&c);
    const char *bad[] = {"", "0778", "1777", "07777", "-1", "abc", "0x1ff", " 0660", "0660 ", "8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_set_error("socket_mode", bad[i], "0000..0777", NULL);
}

static void test_file_errors_have_line_numbers(void **state)
{
    (void)state;
    struct config c;
    char err[512] = "";
    config_defaults(&c);

    static const char noeq[] = "# comment\n\nthreads 16\n";
    assert_int_equal(config_parse(&c, noeq, strlen(noeq), "a.conf", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "a.conf:3:"));
    assert_non_null(strstr(err, "threads 16"));

    static const char range[] = "threads = 8\n# x\naccess_token_ttl = 10\n";
    assert_int_equal(config_parse(&c, range, strlen(range), "b.conf", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "b.conf:3:"));
    assert_non_null(strstr(err, "access_token_ttl"));
    assert_non_null(strstr(err, "'10'"));
    assert_non_null(strstr(err, "60..86400"));

    static const char unknown[] = "\n\n\n\nfoo = bar\n";
    assert_int_equal(config_parse(&c, unknown, strlen(unknown), "c.conf", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "c.conf:5:"));
    assert_non_null(strstr(err, "foo"));

    static const char crlf[] = "threads = 2\r\nlog_level = loud\r\n";
    assert_int_equal(config_parse(&c, crlf, strlen(crlf), "d.conf", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "d.conf:2:"));
    assert_non_null(strstr(err, "'loud'"));
    config_free(&c);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/access-config-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "threads = 12\nbad_key = 1\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    struct config c;
    char err[512] = "";
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
    char expect[128];
    snprintf(expect, sizeof(expect), "%s:2:", path);
    assert_non_null(strstr(err, expect));
    assert_non_null(strstr(err, "bad_key"));
    assert_int_equal(c.threads, 12); /* line 1 was applied */
    unlink(path);

    assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));
    config_free(&c);
}

static void test_env(void **state)
{
    (void)state;
    struct config c;
    char err[512] = "";
    config_defaults(&c);
    char *env1[] = {"PATH=/usr/bin",
                    "ACCESS_THREADS=8",
                    "ACCESS_CONFIG=/etc/access/access.conf",
                    "ACCESS_DATABASE_URL=postgresql:///x",
                    "access_workers=99",
                    "XACCESS_THREADS=99",
                    "ACCESSTHREADS=99",
                    "HOME=/root",
                    NULL};
    assert_int_equal(config_apply_env(&c, env1, err, sizeof(err)), 0);
    assert_int_equal(c.threads, 8);
    assert_string_equal(c.database_url, "postgresql:///x");
    assert_int_equal(c.workers, cpus() > 256 ? 256 : cpus());

    char *env2[] = {"ACCESS_FOO=1", NULL};
    assert_int_equal(config_apply_env(&c, env2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ACCESS_FOO"));

    char *env3[] = {"ACCESS_THREADS=0", NULL};
    assert_int_equal(config_apply_env(&c, env3, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ACCESS_THREADS"));
    assert_non_null(strstr(err, "'0'"));
    assert_non_null(strstr(err, "1..1024"));
    assert_int_equal(c.threads, 8);

    char *env4[] = {"ACCESS_=1", NULL};
    assert_int_equal(config_apply_env(&c, env4, err, sizeof(err)), -1);

    char *env5[] = {NULL};
    assert_int_equal(config_apply_env(&c, env5, err, sizeof(err)), 0);
    assert_int_equal(config_apply_env(&c, NULL, err, sizeof(err)), 0);
    config_free(&c);
}

static void test_validate(void **state)
{
    (void)state;
    struct config c;
    char err[512] = "";
    config_defaults(&c);
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "database_url"));
    expect_set_ok(&c, "database_url", "postgresql:///access");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "jwt_keys"));
    expect_set_ok(&c, "jwt_keys", "/etc/access/keys.json");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);

    expect_set_ok(&c, "redis_url", "http://127.0.0.1:6379");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "redis_url"));
    assert_non_null(strstr(err, "http://127.0.0.1:6379"));
    expect_set_ok(&c, "redis_url", "redis://127.0.0.1:6379/1");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
    expect_set_ok(&c, "redis_url", "unix:/run/redis.sock");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);

    assert_string_equal(c.password_hasher, "auto");
    expect_set_ok(&c, "password_hasher", "libargon2");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
    expect_set_ok(&c, "password_hasher", "libsodium");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
    expect_set_ok(&c, "password_hasher", "argon2");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "password_hasher: invalid value 'argon2'"));
    expect_set_ok(&c, "password_hasher", "auto");

    expect_set_ok(&c, "database_url", "");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "database_url"));
    config_free(&c);
}

/* SPEC §3 v2 keys of the life cycle: defaults, derived link prefixes, the
 * transport's required keys and the webhook secret's form. */
static void test_lifecycle_keys(void **state)
{
    (void)state;
    struct config c;
    char err[512] = "", link[256];
    config_defaults(&c);
    assert_string_equal(c.public_url, "http://127.0.0.1:8080");
    assert_int_equal(c.verify_token_ttl, 86400);
    assert_int_equal(c.reset_token_ttl, 1800);
    assert_string_equal(c.mail_transport, "none");
    assert_string_equal(c.mail_from, "access@localhost");
    assert_int_equal(c.outbox_max_attempts, 12);
    assert_int_equal(c.login_failures_max, 10);
    assert_int_equal(c.login_failures_window, 900);
    assert_int_equal(c.ratelimit_recover.count, 5);
    assert_int_equal(c.ratelimit_recover.window, 3600);
    config_link_prefix(&c, 0, link, sizeof(link));
    assert_string_equal(link, "http://127.0.0.1:8080/verify?token=");
    config_link_prefix(&c, 1, link, sizeof(link));
    assert_string_equal(link, "http://127.0.0.1:8080/reset?token=");
    expect_set_ok(&c, "reset_url", "https://app.example/r#t=");
    config_link_prefix(&c, 1, link, sizeof(link));
    assert_string_equal(link, "https://app.example/r#t=");
    assert_int_equal(config_set(&c, "reset_token_ttl", "59", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "60..604800"));
    assert_int_equal(config_set(&c, "verify_token_ttl", "604801", err, sizeof(err)), -1);

    expect_set_ok(&c, "database_url", "postgresql:///access");
    expect_set_ok(&c, "jwt_keys", "/k.json");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
    expect_set_ok(&c, "mail_transport", "carrier-pigeon");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "mail_transport"));
    expect_set_ok(&c, "mail_transport", "smtp");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "smtp_url"));
    expect_set_ok(&c, "smtp_url", "smtp://127.0.0.1:2525");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
    expect_set_ok(&c, "events_url", "http://127.0.0.1:9/events");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "webhook_secret"));
    /* 23 bytes are too short, 24 are enough; no prefix, no secret. */
    expect_set_ok(&c, "webhook_secret", "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    expect_set_ok(&c, "webhook_secret", "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    expect_set_ok(&c, "webhook_secret", "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
    expect_set_ok(&c, "mail_transport", "webhook");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "webhook_url"));
    expect_set_ok(&c, "webhook_url", "ftp://x");
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    expect_set_ok(&c, "webhook_url", "https://hooks.example/mail");
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
    /* Secrets never appear in the dump. */
    expect_set_ok(&c, "smtp_password", "p4ssw0rd-smtp");
    char *d = config_dump(&c);
    assert_null(strstr(d, "p4ssw0rd-smtp"));
    assert_null(strstr(d, "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz"));
    assert_non_null(strstr(d, "webhook_secret = ***\n"));
    free(d);
    config_free(&c);
}

static void test_dump_masks_passwords(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    expect_set_ok(&c, "database_url", "postgresql://u:secret@h/db");
    expect_set_ok(&c, "redis_url", "redis://:hunter2@127.0.0.1:6379/0");
    char *d = config_dump(&c);
    assert_non_null(d);
    assert_null(strstr(d, "u:secret@"));
    assert_null(strstr(d, "hunter2"));
    assert_non_null(strstr(d, "database_url = postgresql://u:***@h/db\n"));
    assert_non_null(strstr(d, "redis_url = redis://:***@127.0.0.1:6379/0\n"));
    assert_non_null(strstr(d, "threads = 16\n"));
    assert_non_null(strstr(d, "l1_max_bytes = 52428800\n"));
    assert_non_null(strstr(d, "ratelimit_login = 100/3600\n"));
    assert_non_null(strstr(d, "metrics_allow = 127.0.0.1/32,::1/128\n"));
    assert_non_null(strstr(d, "db_prepared = on\n"));
    assert_non_null(strstr(d, "log_level = info\n"));
    assert_non_null(strstr(d, "log_format = json\n"));
    assert_non_null(strstr(d, "jwt_alg = EdDSA\n"));
    free(d);

    /* A keyword-style password parameter is masked too. */
    expect_set_ok(&c, "database_url", "postgresql://h/db?user=u&password=topsecret&sslmode=off");
    d = config_dump(&c);
    assert_null(strstr(d, "topsecret"));
    assert_non_null(strstr(d, "password=***&sslmode=off"));
    free(d);

    /* No password: printed as is. */
    expect_set_ok(&c, "database_url", "postgresql://u@h/db");
    d = config_dump(&c);
    assert_non_null(strstr(d, "database_url = postgresql://u@h/db\n"));
    free(d);
    config_free(&c);
}

static int allowed4(const struct config *c, const char *ip)
{
    unsigned char a[16];
    assert_int_equal(inet_pton(AF_INET, ip, a), 1);
    return config_metrics_allowed(c, AF_INET, a);
}

static int allowed6(const struct config *c, const char *ip)
{
    unsigned char a[16];
    assert_int_equal(inet_pton(AF_INET6, ip, a), 1);
    return config_metrics_allowed(c, AF_INET6, a);
}

static void test_metrics_allowed(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    assert_true(allowed4(&c, "127.0.0.1"));
    assert_false(allowed4(&c, "127.0.0.2"));
    assert_false(allowed4(&c, "10.0.0.1"));
    assert_true(allowed6(&c, "::1"));
    assert_false(allowed6(&c, "::2"));
    assert_false(allowed6(&c, "2001:db8::1"));

    expect_set_ok(&c, "metrics_allow", "10.0.0.0/8");
    assert_true(allowed4(&c, "10.0.0.1"));
    assert_true(allowed4(&c, "10.255.255.255"));
    assert_false(allowed4(&c, "11.0.0.1"));
    assert_false(allowed4(&c, "127.0.0.1"));
    assert_false(allowed6(&c, "::1"));

    expect_set_ok(&c, "metrics_allow", "192.168.1.0/23, 2001:db8::/32");
    assert_true(allowed4(&c, "192.168.0.5"));
    assert_true(allowed4(&c, "192.168.1.250"));
    assert_false(allowed4(&c, "192.168.2.1"));
    assert_true(allowed6(&c, "2001:db8:ffff::1"));
    assert_false(allowed6(&c, "2001:db9::1"));

    expect_set_ok(&c, "metrics_allow", "0.0.0.0/0");
    assert_true(allowed4(&c, "8.8.8.8"));
    assert_false(allowed6(&c, "::1"));

    expect_set_ok(&c, "metrics_allow", "");
    assert_false(allowed4(&c, "127.0.0.1"));
    config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_parse_file_text),
        cmocka_unit_test(test_parse_respects_len),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_int_errors),
        cmocka_unit_test(test_int_bounds_accepted),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_rates),
        cmocka_unit_test(test_cidrs),
        cmocka_unit_test(test_client_scopes),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_socket_mode),
        cmocka_unit_test(test_file_errors_have_line_numbers),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_dump_masks_passwords),
        cmocka_unit_test(test_lifecycle_keys),
        cmocka_unit_test(test_metrics_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
