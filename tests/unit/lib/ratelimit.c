/* Unit tests for lib/ratelimit.c: the GCRA arithmetic at explicit instants,
 * the per-process fallback (no Redis), its thread-safety and bounded table,
 * the header values, and the Lua script and leases against a real
 * redis-server that the test starts on a private unix socket (and kills at
 * the end; without /usr/bin/redis-server that test fails). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ratelimit.h"

#define US    1000000LL
#define NOW0  1800000000000000LL /* ~2027 in µs, as Redis TIME would give */
#define REDIS "/usr/bin/redis-server"

static void take(const struct ratelimit_policy *p, int64_t now, int64_t *tat, long want,
                 struct ratelimit_verdict *v)
{
    memset(v, 0x5a, sizeof(*v));
    ratelimit_gcra(p, now, tat, want, v);
}

/* ---- GCRA arithmetic ------------------------------------------------- */

static void test_gcra_burst(void **state)
{
    (void)state;
    const struct ratelimit_policy p = {"login", 100, 3600}; /* T = 36 s */
    int64_t tat = 0;
    struct ratelimit_verdict v;
    for (long i = 0; i < 100; i++) {
        take(&p, NOW0, &tat, 1, &v);
        assert_int_equal(v.granted, 1);
        assert_int_equal(v.remaining, 99 - i);
        assert_int_equal(v.reset_s, 36 * (i + 1));
        assert_int_equal(v.retry_after_s, 0);
    }
    assert_int_equal(tat, NOW0 + 3600 * US);
    take(&p, NOW0, &tat, 1, &v);
    assert_int_equal(v.granted, 0);
    assert_int_equal(v.remaining, 0);
    assert_int_equal(v.reset_s, 3600);
    assert_int_equal(v.retry_after_s, 36);
    assert_int_equal(tat, NOW0 + 3600 * US); /* a denial costs nothing */
    /* A state in the past is a full allowance again. */
    take(&p, NOW0 + 7200 * US, &tat, 1, &v);
    assert_int_equal(v.granted, 1);
    assert_int_equal(v.remaining, 99);
}

static void test_gcra_steady(void **state)
{
    (void)state;
    const struct ratelimit_policy p = {"anonymous", 10, 1}; /* T = 100 ms */
    int64_t tat = 0, t = US / 10;
    struct ratelimit_verdict v;
    for (int i = 0; i < 10; i++)
        take(&p, NOW0, &tat, 1, &v);
    take(&p, NOW0, &tat, 1, &v);
    assert_int_equal(v.granted, 0);
    for (int64_t k = 1; k <= 1000; k++) {
        take(&p, NOW0 + k * t, &tat, 1, &v);
        assert_int_equal(v.granted, 1);
        assert_int_equal(v.remaining, 0);
        take(&p, NOW0 + k * t, &tat, 1, &v); /* the same instant: spent */
        assert_int_equal(v.granted, 0);
        take(&p, NOW0 + (k + 1) * t - 1, &tat, 1, &v); /* 1 µs early */
        assert_int_equal(v.granted, 0);
        assert_int_equal(v.retry_after_s, 1);
    }
}

static void test_gcra_retry_after(void **state)
{
    (void)state;
    const struct ratelimit_policy p = {"signup", 5, 86400}; /* T = 17280 s */
    int64_t tat = 0;
    struct ratelimit_verdict v;
    for (int i = 0; i < 5; i++)
        take(&p, NOW0, &tat, 1, &v);
    take(&p, NOW0, &tat, 1, &v);
    assert_int_equal(v.granted, 0);
    assert_int_equal(v.retry_after_s, 17280);
    assert_int_equal(v.reset_s, 86400);
    take(&p, NOW0 + US, &tat, 1, &v);
    assert_int_equal(v.retry_after_s, 17279);
    assert_int_equal(v.reset_s, 86399);
    take(&p, NOW0 + US + 1, &tat, 1, &v); /* partial seconds round up */
    assert_int_equal(v.retry_after_s, 17279);
    assert_int_equal(v.reset_s, 86399);
    take(&p, NOW0 + 17280 * US - 1, &tat, 1, &v);
    assert_int_equal(v.granted, 0);
    assert_int_equal(v.retry_after_s, 1);
    take(&p, NOW0 + 17280 * US, &tat, 1, &v);
    assert_int_equal(v.granted, 1);
    assert_int_equal(v.remaining, 0);
    assert_int_equal(v.reset_s, 86400);

    /* A window that T does not divide: T = 3333333 µs, three fit. */
    const struct ratelimit_policy q = {"login", 3, 10};
    tat = 0;
    for (int i = 0; i < 3; i++) {
        take(&q, NOW0, &tat, 1, &v);
        assert_int_equal(v.granted, 1);
    }
    assert_int_equal(v.reset_s, 10); /* 9999999 µs */
    take(&q, NOW0, &tat, 1, &v);
    assert_int_equal(v.granted, 0);
    assert_int_equal(v.retry_after_s, 4); /* 3333332 µs */
}

static void test_gcra_want(void **state)
{
    (void)state;
    const struct ratelimit_policy p = {"authenticated", 10, 10}; /* T = 1 s */
    int64_t tat = 0;
    struct ratelimit_verdict v;
    take(&p, NOW0, &tat, 4, &v);
    assert_int_equal(v.granted, 4);
    assert_int_equal(v.remaining, 6);
    assert_int_equal(v.reset_s, 4);
    take(&p, NOW0, &tat, 10, &v); /* partial */
    assert_int_equal(v.granted, 6);
    assert_int_equal(v.remaining, 0);
    assert_int_equal(v.reset_s, 10);
    assert_int_equal(v.retry_after_s, 0);
    take(&p, NOW0, &tat, 1, &v);
    assert_int_equal(v.granted, 0);
    assert_int_equal(v.retry_after_s, 1);
    take(&p, NOW0 + 2500000, &tat, 5, &v); /* 2.5 s regrow 2 units */
    assert_int_equal(v.granted, 2);
    assert_int_equal(v.remaining, 0);
    assert_int_equal(v.reset_s, 10); /* 9.5 s */
    /* want 0 only looks. */
    int64_t before = tat;
    take(&p, NOW0 + 5 * US, &tat, 0, &v);
    assert_int_equal(v.granted, 0);
    assert_int_equal(v.remaining, 3);
    assert_int_equal(v.retry_after_s, 0);
    assert_int_equal(tat, before);
}

/* ---- the limiter without Redis ------------------------------------- */

static struct ratelimit *make(long workers, long auth_count, size_t max_entries)
{
    struct ratelimit_options o = {
        .rate = {{5, 3600}, {5, 86400}, {1000, 36000}, {auth_count, 36000}, {1200, 60}, {5, 3600}},
        .workers = workers,
        .kv = NULL,
        .prefix = "rl:",
        .max_entries = max_entries,
    };
    struct ratelimit *rl = ratelimit_create(&o);
    assert_non_null(rl);
    return rl;
}

static long burst(struct ratelimit *rl, enum ratelimit_class cls, const char *id, long tries,
                  enum ratelimit_source want_source)
{
    long n = 0;
    for (long i = 0; i < tries; i++) {
        struct ratelimit_verdict v;
        assert_int_equal(ratelimit_check(rl, cls, id, &v), 0);
        assert_int_equal(v.source, want_source);
        n += v.granted;
    }
    return n;
}

static void test_local_fallback(void **state)
{
    (void)state;
    struct ratelimit *rl = make(2, 7, 0);
    /* W = 2: each process allows ceil(q/2). */
    assert_int_equal(burst(rl, RL_LOGIN, "192.0.2.1", 10, RL_SOURCE_LOCAL), 3);
    assert_int_equal(burst(rl, RL_LOGIN, "192.0.2.2", 10, RL_SOURCE_LOCAL), 3);
    assert_int_equal(burst(rl, RL_SIGNUP, "192.0.2.1", 10, RL_SOURCE_LOCAL), 3);
    assert_int_equal(burst(rl, RL_AUTHENTICATED, "u-1", 10, RL_SOURCE_LOCAL), 4);
    struct ratelimit_verdict v;
    assert_int_equal(ratelimit_check(rl, RL_LOGIN, "192.0.2.1", &v), 0);
    assert_int_equal(v.granted, 0);
    assert_int_equal(v.remaining, 0);
    assert_int_equal(v.retry_after_s, 1200); /* local T = 3600/3 s */
    /* Invalid arguments. */
    assert_int_equal(ratelimit_check(rl, RL_CLASS_COUNT, "x", &v), -1);
    assert_int_equal(ratelimit_check(rl, RL_LOGIN, "", &v), -1);
    assert_int_equal(ratelimit_check(rl, RL_LOGIN, NULL, &v), -1);
    char longid[300];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(ratelimit_check(rl, RL_LOGIN, longid, &v), -1);
    assert_string_equal(ratelimit_policy(rl, RL_AUTHENTICATED)->name, "authenticated");
    assert_int_equal(ratelimit_policy(rl, RL_AUTHENTICATED)->limit, 7); /* configured q */
    ratelimit_destroy(rl);

    /* W = 1 keeps the whole limit; bad policies are refused. */
    rl = make(1, 7, 0);
    assert_int_equal(burst(rl, RL_LOGIN, "192.0.2.1", 10, RL_SOURCE_LOCAL), 5);
    ratelimit_destroy(rl);
    struct ratelimit_options o = {.rate = {{5, 3600}, {0, 86400}, {1, 1}, {1, 1}}, .workers = 1};
    assert_null(ratelimit_create(&o));
}

static void test_local_eviction(void **state)
{
    (void)state;
    /* 64 entries: one per shard. A spent key is evicted (the stalest) once
     * its shard needs room, so it starts over; memory stays bounded. */
    struct ratelimit *rl = make(1, 7, 64);
    assert_int_equal(burst(rl, RL_LOGIN, "198.51.100.1", 6, RL_SOURCE_LOCAL), 5);
    char id[64];
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof(id), "203.0.113.%d", i);
        assert_int_equal(burst(rl, RL_LOGIN, id, 1, RL_SOURCE_LOCAL), 1);
    }
    assert_int_equal(burst(rl, RL_LOGIN, "198.51.100.1", 6, RL_SOURCE_LOCAL), 5);
    ratelimit_destroy(rl);
}

struct hammer {
    struct ratelimit *rl;
    enum ratelimit_class cls;
    const char *id;
    long granted;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 400; i++) {
        struct ratelimit_verdict v;
        if (ratelimit_check(h->rl, h->cls, h->id, &v) == 0)
            h->granted += v.granted;
    }
    return NULL;
}

static void test_local_concurrency(void **state)
{
    (void)state;
    struct ratelimit *rl = make(1, 1000, 0);
    const enum ratelimit_class classes[2] = {RL_ANONYMOUS, RL_AUTHENTICATED};
    for (int c = 0; c < 2; c++) {
        struct hammer h[8];
        pthread_t th[8];
        for (int i = 0; i < 8; i++) {
            h[i] = (struct hammer){rl, classes[c], "2001:db8::1", 0};
            assert_int_equal(pthread_create(&th[i], NULL, hammer_thread, &h[i]), 0);
        }
        long total = 0;
        for (int i = 0; i < 8; i++) {
            pthread_join(th[i], NULL);
            total += h[i].granted;
        }
        assert_int_equal(total, 1000); /* 3200 tries; T = 36 s, nothing regrows */
    }
    ratelimit_destroy(rl);
}

/* ---- headers ------------------------------------------------------- */

static void test_headers(void **state)
{
    (void)state;
    const struct ratelimit_policy p = {"login", 100, 3600};
    struct ratelimit_verdict v = {.granted = 0, .remaining = 0, .reset_s = 1800};
    char ph[64], rh[64];
    assert_int_equal(ratelimit_format_headers(&p, &v, ph, sizeof(ph), rh, sizeof(rh)), 0);
    assert_string_equal(ph, "\"login\";q=100;w=3600");
    assert_string_equal(rh, "\"login\";r=0;t=1800");

    const struct ratelimit_policy a = {"authenticated", 6000, 60};
    v = (struct ratelimit_verdict){.granted = 1, .remaining = 5699, .reset_s = 3};
    assert_int_equal(ratelimit_format_headers(&a, &v, ph, sizeof(ph), rh, sizeof(rh)), 0);
    assert_string_equal(ph, "\"authenticated\";q=6000;w=60");
    assert_string_equal(rh, "\"authenticated\";r=5699;t=3");

    /* Exact fit, and one byte short of it. */
    char small[sizeof("\"authenticated\";q=6000;w=60")];
    assert_int_equal(ratelimit_format_headers(&a, &v, small, sizeof(small), rh, sizeof(rh)), 0);
    assert_int_equal(ratelimit_format_headers(&a, &v, small, sizeof(small) - 1, rh, sizeof(rh)),
                     -1);
    assert_int_equal(ratelimit_format_headers(&a, &v, ph, sizeof(ph), rh, 10), -1);
}

/* ---- against a real Redis ------------------------------------------ */

struct redis_fixture {
    pid_t pid;
    char sock[108];
    struct kv_pool *kv;
};

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void redis_stop(struct redis_fixture *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
    unlink(f->sock);
}

/* Start redis-server on a private socket; a missing binary or a server
 * that never answers leaves f->kv NULL and the test fails. */
static int redis_setup(void **state)
{
    static struct redis_fixture f;
    memset(&f, 0, sizeof(f));
    *state = &f;
    snprintf(f.sock, sizeof(f.sock), "/tmp/access-rl-test-%ld.sock", (long)getpid());
    if (access(REDIS, X_OK) != 0)
        return 0;
    f.pid = fork();
    if (f.pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(REDIS, "redis-server", "--port", "0", "--unixsocket", f.sock, "--save", "",
              "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    if (f.pid < 0)
        return 0;
    char url[128], err[256];
    snprintf(url, sizeof(url), "unix:%s", f.sock);
    f.kv = kv_pool_create(url, 4, 1000, err, sizeof(err));
    for (int i = 0; f.kv != NULL && i < 100; i++) {
        if (kv_ping(f.kv) == 0)
            return 0;
        sleep_ms(50);
    }
    kv_pool_destroy(f.kv);
    f.kv = NULL;
    return 0;
}

static int redis_teardown(void **state)
{
    struct redis_fixture *f = *state;
    redis_stop(f);
    kv_pool_destroy(f->kv);
    return 0;
}

/* EVAL the script on key: out = its four integers. */
static void eval(struct kv_conn *c, const char *key, long q, long w, long want, long long out[4])
{
    redisReply *r = kv_command(c, "EVAL %s 1 %s %ld %ld %ld", ratelimit_script, key, q, w, want);
    assert_non_null(r);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4)
        fail_msg("EVAL: %s", r->type == REDIS_REPLY_ERROR ? r->str : "not a 4-array");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r->element[i]->type, REDIS_REPLY_INTEGER);
        out[i] = r->element[i]->integer;
    }
    freeReplyObject(r);
}

static long long command_int(struct kv_conn *c, const char *cmd, const char *key)
{
    redisReply *r = kv_command(c, "%s %s", cmd, key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static void test_redis_script(struct kv_conn *c)
{
    long long o[4];
    /* Burst of q, then a denial. */
    for (int i = 0; i < 5; i++) {
        eval(c, "t:burst", 5, 3600, 1, o);
        assert_int_equal(o[0], 1);
        assert_int_equal(o[1], 4 - i);
        assert_in_range(o[2], 720000LL * (i + 1) - 1000, 720000LL * (i + 1));
        assert_int_equal(o[3], 0);
    }
    eval(c, "t:burst", 5, 3600, 1, o);
    assert_int_equal(o[0], 0);
    assert_int_equal(o[1], 0);
    assert_in_range(o[3], 719000, 720000);
    /* The state is an exact µs integer near TIME + window, expiring when full. */
    redisReply *r = kv_command(c, "TIME");
    assert_non_null(r);
    long long now = atoll(r->element[0]->str) * US + atoll(r->element[1]->str);
    freeReplyObject(r);
    r = kv_command(c, "GET t:burst");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(strspn(r->str, "0123456789"), r->len);
    long long tat = atoll(r->str);
    freeReplyObject(r);
    assert_in_range(tat - now, 3599 * US, 3600 * US);
    assert_in_range(command_int(c, "PTTL", "t:burst"), 3599000 + 1000, 3600000 + 1000);

    /* A lease: want = block grants the block, exact ms for 6000/60. */
    eval(c, "t:lease", 6000, 60, 300, o);
    assert_int_equal(o[0], 300);
    assert_int_equal(o[1], 5700);
    assert_int_equal(o[2], 3000);
    assert_int_equal(o[3], 0);
    /* Partial grants, then a denial (T = 180 s). */
    eval(c, "t:want", 20, 3600, 10, o);
    assert_int_equal(o[0], 10);
    assert_int_equal(o[1], 10);
    assert_int_equal(o[2], 1800000);
    eval(c, "t:want", 20, 3600, 20, o);
    assert_int_equal(o[0], 10);
    assert_int_equal(o[1], 0);
    assert_int_equal(o[3], 0);
    eval(c, "t:want", 20, 3600, 10, o);
    assert_int_equal(o[0], 0);
    assert_in_range(o[3], 179000, 180000);
}

/* ---- a lease refresh that hangs --------------------------------------- */

struct lease_call {
    struct ratelimit *rl;
    struct ratelimit_verdict v;
    double ms; /* how long ratelimit_check took */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void *lease_thread(void *arg)
{
    struct lease_call *l = arg;
    double t0 = now_ms();
    assert_int_equal(ratelimit_check(l->rl, RL_AUTHENTICATED, "user-1", &l->v), 0);
    l->ms = now_ms() - t0;
    return NULL;
}

/* Two requests of one user against a Redis that accepts and never answers
 * (kv timeout 3 s): one thread refreshes the lease and waits out the kv
 * timeout; the other, waiting for that refresh, must give up after its own
 * bound (1 s) and count locally instead of waiting the whole 3 s. */
static void test_lease_waiter_has_deadline(void **state)
{
    (void)state;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 16), 0); /* never accept()ed */
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &slen), 0);
    char url[64], err[256];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    struct kv_pool *kv = kv_pool_create(url, 4, 3000, err, sizeof(err));
    assert_non_null(kv);
    struct ratelimit_options o = {
        .rate = {{5, 3600}, {5, 86400}, {600, 60}, {6000, 60}, {1200, 60}, {5, 3600}},
        .workers = 1,
        .kv = kv,
        .prefix = "rl:",
    };
    struct ratelimit *rl = ratelimit_create(&o);
    assert_non_null(rl);
    struct lease_call a = {.rl = rl}, b = {.rl = rl};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, lease_thread, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, lease_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    double waiter = a.ms < b.ms ? a.ms : b.ms, refresher = a.ms < b.ms ? b.ms : a.ms;
    print_message("lease refresher %.0f ms, waiter %.0f ms\n", refresher, waiter);
    assert_true(refresher >= 2500); /* the kv timeout: Redis really hung */
    assert_true(waiter < 2000);     /* bounded by the waiter's own deadline */
    assert_int_equal(a.v.granted, 1);
    assert_int_equal(b.v.granted, 1);
    ratelimit_destroy(rl);
    kv_pool_destroy(kv);
    close(lfd);
}

static void test_redis(void **state)
{
    struct redis_fixture *f = *state;
    if (f->kv == NULL)
        fail_msg("no redis-server: %s missing or not answering on %s", REDIS, f->sock);
    struct kv_conn *c = kv_acquire(f->kv);
    assert_non_null(c);
    test_redis_script(c);

    struct ratelimit_options o = {
        .rate = {{5, 3600}, {5, 86400}, {600, 60}, {6000, 60}, {1200, 60}, {5, 3600}},
        .workers = 4,
        .kv = f->kv,
        .prefix = "rl:",
    };
    struct ratelimit *rl = ratelimit_create(&o);
    assert_non_null(rl);
    struct ratelimit_verdict v;
    /* One round trip per login check: the machine-wide q, not q/W. */
    assert_int_equal(burst(rl, RL_LOGIN, "192.0.2.7", 5, RL_SOURCE_REDIS), 5);
    assert_int_equal(ratelimit_check(rl, RL_LOGIN, "192.0.2.7", &v), 0);
    assert_int_equal(v.granted, 0);
    assert_int_equal(v.source, RL_SOURCE_REDIS);
    assert_in_range(v.retry_after_s, 719, 720);
    assert_in_range(v.reset_s, 3599, 3600);

    /* authenticated: one lease of 300 units (3 s of allowance) serves 300
     * requests; the 301st leases again. */
    assert_int_equal(burst(rl, RL_AUTHENTICATED, "u-42", 1, RL_SOURCE_REDIS), 1);
    assert_in_range(command_int(c, "PTTL", "rl:authenticated:u-42"), 3500, 4000);
    assert_int_equal(burst(rl, RL_AUTHENTICATED, "u-42", 299, RL_SOURCE_LEASE), 299);
    assert_in_range(command_int(c, "PTTL", "rl:authenticated:u-42"), 2000, 4000);
    assert_int_equal(ratelimit_check(rl, RL_AUTHENTICATED, "u-42", &v), 0);
    assert_int_equal(v.source, RL_SOURCE_REDIS);
    assert_int_equal(v.granted, 1);
    assert_in_range(v.remaining, 5699, 6000); /* Redis's 5400 + regrowth + 299 local */
    assert_in_range(command_int(c, "PTTL", "rl:authenticated:u-42"), 6000, 7000);

    /* NOSCRIPT: after SCRIPT FLUSH the limiter loads the script again. */
    redisReply *r = kv_command(c, "SCRIPT FLUSH");
    assert_non_null(r);
    freeReplyObject(r);
    assert_int_equal(burst(rl, RL_SIGNUP, "192.0.2.7", 1, RL_SOURCE_REDIS), 1);
    assert_int_equal(command_int(c, "EXISTS", "rl:signup:192.0.2.7"), 1);
    ratelimit_destroy(rl);

    /* A denial from Redis is cached: later checks cost no round trip. */
    o.rate[RL_AUTHENTICATED] = (struct config_rate){2, 3600}; /* block 1 */
    rl = ratelimit_create(&o);
    assert_non_null(rl);
    assert_int_equal(burst(rl, RL_AUTHENTICATED, "u-7", 2, RL_SOURCE_REDIS), 2);
    assert_int_equal(burst(rl, RL_AUTHENTICATED, "u-7", 1, RL_SOURCE_REDIS), 0);
    assert_int_equal(ratelimit_check(rl, RL_AUTHENTICATED, "u-7", &v), 0);
    assert_int_equal(v.source, RL_SOURCE_LEASE);
    assert_int_equal(v.granted, 0);
    assert_in_range(v.retry_after_s, 1799, 1800);
    kv_release(f->kv, c);

    /* Redis gone: per-process limits with q/W (ceil(5/4) = 2). */
    redis_stop(f);
    assert_int_equal(burst(rl, RL_LOGIN, "192.0.2.8", 4, RL_SOURCE_LOCAL), 2);
    assert_int_equal(burst(rl, RL_AUTHENTICATED, "u-8", 2, RL_SOURCE_LOCAL), 1);
    ratelimit_destroy(rl);
}

static void expect_addr_key(const char *addr, int rc, const char *want)
{
    char out[RATELIMIT_ADDR_KEY_MAX];
    memset(out, 'Z', sizeof(out));
    assert_int_equal(ratelimit_addr_key(addr, out, sizeof(out)), rc);
    assert_string_equal(out, want);
}

static void test_addr_key(void **state)
{
    (void)state;
    expect_addr_key("192.0.2.7", 0, "192.0.2.7");
    /* IPv4-mapped IPv6, in every spelling: the IPv4 bucket. */
    expect_addr_key("::ffff:192.0.2.7", 0, "192.0.2.7");
    expect_addr_key("::FFFF:192.0.2.7", 0, "192.0.2.7");
    expect_addr_key("0:0:0:0:0:ffff:c000:0207", 0, "192.0.2.7");
    /* IPv6: the /64, however written. */
    expect_addr_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 0, "2001:db8:1:2::/64");
    expect_addr_key("2001:0DB8:0001:0002:0:0:0:1", 0, "2001:db8:1:2::/64");
    expect_addr_key("2001:db8:1:2::ffff", 0, "2001:db8:1:2::/64");
    expect_addr_key("2001:db8:1:3::1", 0, "2001:db8:1:3::/64");
    expect_addr_key("::1", 0, "::/64");
    expect_addr_key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, "ffff:ffff:ffff:ffff::/64");
    /* IPv4-compatible (deprecated) and NAT64 forms are plain IPv6 here. */
    expect_addr_key("64:ff9b::192.0.2.7", 0, "64:ff9b::/64");
    /* Not an address: as is (the caller decides), cut to fit. */
    expect_addr_key("", -1, "");
    expect_addr_key("unix:", -1, "unix:");
    expect_addr_key("fe80::1%eth0", -1, "fe80::1%eth0");
    expect_addr_key("192.0.2.07", -1, "192.0.2.07");
    char long_addr[200];
    memset(long_addr, 'a', sizeof(long_addr) - 1);
    long_addr[sizeof(long_addr) - 1] = '\0';
    char out[RATELIMIT_ADDR_KEY_MAX];
    assert_int_equal(ratelimit_addr_key(long_addr, out, sizeof(out)), -1);
    assert_int_equal(strlen(out), sizeof(out) - 1);
    /* Two /128s of one /64 share a bucket; two /64s do not. */
    char k1[RATELIMIT_ADDR_KEY_MAX], k2[RATELIMIT_ADDR_KEY_MAX];
    assert_int_equal(ratelimit_addr_key("2001:db8::1", k1, sizeof(k1)), 0);
    assert_int_equal(ratelimit_addr_key("2001:db8::2", k2, sizeof(k2)), 0);
    assert_string_equal(k1, k2);
    assert_int_equal(ratelimit_addr_key("2001:db8:0:1::1", k2, sizeof(k2)), 0);
    assert_string_not_equal(k1, k2);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the workers: writing to a dead Redis is an EPIPE */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_burst),
        cmocka_unit_test(test_gcra_steady),
        cmocka_unit_test(test_gcra_retry_after),
        cmocka_unit_test(test_gcra_want),
        cmocka_unit_test(test_local_fallback),
        cmocka_unit_test(test_local_eviction),
        cmocka_unit_test(test_local_concurrency),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_lease_waiter_has_deadline),
        cmocka_unit_test(test_addr_key),
        cmocka_unit_test_setup_teardown(test_redis, redis_setup, redis_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
