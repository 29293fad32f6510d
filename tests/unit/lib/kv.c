/* Unit tests for lib/kv.c: the Redis URL parser, and a pool whose Redis is
 * unreachable (no server is started: a refused connect and a missing unix
 * socket must give NULL fast and back off). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>
#include <time.h>

#include "kv.h"

static void parse_ok(const char *url, struct kv_url *u)
{
    char err[256] = "";
    memset(u, 0x5a, sizeof(*u));
    if (kv_url_parse(url, u, err, sizeof(err)) != 0)
        fail_msg("'%s' refused: %s", url, err);
}

static void test_tcp_urls(void **state)
{
    (void)state;
    struct kv_url u;
    parse_ok("redis://127.0.0.1:6379", &u);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.path, "");
    assert_string_equal(u.password, "");

    parse_ok("redis://h", &u);
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");

    parse_ok("redis://:pw@h:1/2", &u);
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 2);

    parse_ok("redis://user:s3cr:et@cache.example:65535/15", &u);
    assert_string_equal(u.password, "s3cr:et");
    assert_string_equal(u.host, "cache.example");
    assert_int_equal(u.port, 65535);
    assert_int_equal(u.db, 15);

    parse_ok("redis://h/7", &u);
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 7);

    parse_ok("redis://h:6380/", &u);
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 0);
}

static void test_unix_urls(void **state)
{
    (void)state;
    struct kv_url u;
    parse_ok("unix:/tmp/x.sock", &u);
    assert_string_equal(u.path, "/tmp/x.sock");
    assert_string_equal(u.host, "");
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
}

static void expect_reject(const char *url, const char *frag)
{
    struct kv_url u;
    char err[512] = "";
    if (kv_url_parse(url, &u, err, sizeof(err)) != -1)
        fail_msg("'%s' accepted", url);
    if (strstr(err, "redis_url") == NULL || (frag != NULL && strstr(err, frag) == NULL))
        fail_msg("error for '%s' lacks 'redis_url' / '%s': %s", url, frag ? frag : "", err);
}

static void test_rejections(void **state)
{
    (void)state;
    /* Ports. */
    expect_reject("redis://h:0", "1..65535");
    expect_reject("redis://h:65536", "1..65535");
    expect_reject("redis://h:-1", "1..65535");
    expect_reject("redis://h:", "1..65535");
    expect_reject("redis://h:abc", "1..65535");
    expect_reject("redis://h:63x", "1..65535");
    /* Databases. */
    expect_reject("redis://h/16", "0..15");
    expect_reject("redis://h:6379/16", "0..15");
    expect_reject("redis://h/-1", "0..15");
    expect_reject("redis://h/x", "0..15");
    expect_reject("redis://h/1/2", "0..15");
    /* Schemes and hosts. */
    expect_reject("http://h:6379", "redis://");
    expect_reject("rediss://h:6379", "redis://");
    expect_reject("REDIS://h", "redis://");
    expect_reject("", "redis://");
    expect_reject("redis://", "host");
    expect_reject("redis://:6379", "host");
    expect_reject("redis://:pw@", "host");
    expect_reject("redis://:pw@/1", "host");
    /* Unix sockets. */
    expect_reject("unix:", "unix");
    char longpath[400] = "unix:/";
    memset(longpath + 6, 'p', 300);
    longpath[306] = '\0';
    expect_reject(longpath, "unix");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_pool_bad_url(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(kv_pool_create("http://x", 4, 100, err, sizeof(err)));
    assert_non_null(strstr(err, "redis_url"));
    kv_pool_destroy(NULL); /* harmless */
}

static void test_pool_unreachable(void **state)
{
    (void)state;
    char err[256] = "";
    /* Port 1 on loopback: refused at once, nothing listens there. */
    struct kv_pool *p = kv_pool_create("redis://127.0.0.1:1", 2, 200, err, sizeof(err));
    assert_non_null(p);
    double t0 = now_s();
    struct kv_conn *c = kv_acquire(p);
    assert_null(c);
    /* During the back-off no connect is tried. */
    c = kv_acquire(p);
    assert_null(c);
    assert_int_equal(kv_ping(p), -1);
    assert_true(now_s() - t0 < 1.0);
    kv_pool_destroy(p);

    p = kv_pool_create("unix:/nonexistent/access-test.sock", 1, 200, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(kv_ping(p), -1);
    kv_pool_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_urls),         cmocka_unit_test(test_unix_urls),
        cmocka_unit_test(test_rejections),       cmocka_unit_test(test_pool_bad_url),
        cmocka_unit_test(test_pool_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
