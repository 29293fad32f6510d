/* Unit tests for lib/db.c: every call returns by its deadline, whatever the
 * server does (SPEC §5 "PostgreSQL that hangs").
 *
 * The "servers" are loopback TCP sockets: one that the kernel accepts for
 * but nobody ever answers (a SIGSTOPped postmaster), and one that completes
 * the startup handshake and answers the connection's set-up pipeline, then
 * never answers a query (a backend that hangs). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "db.h"

static const struct db_stmt stmts[] = {{"ping", "SELECT 1", 0, 1}};

/* A listening loopback socket on a free port (bound to port 0). */
static int listen_any(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static struct db_pool *pool_for(int port)
{
    char conninfo[160];
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=test dbname=test sslmode=disable", port);
    struct db_pool_options o = {.conninfo = conninfo,
                                .size = 2,
                                .statement_timeout_ms = 5000,
                                .slow_ms = 100000,
                                .prepared = 0,
                                .stmts = stmts,
                                .nstmts = 1};
    return db_pool_create(&o);
}

/* Connecting to a server that never answers returns NULL at the deadline;
 * the pool then backs off, so the next caller fails at once. */
static void test_connect_to_silent_server_meets_deadline(void **state)
{
    (void)state;
    int port;
    int lfd = listen_any(&port); /* never accept()ed: the kernel still completes the handshake */
    struct db_pool *p = pool_for(port);
    char err[256] = "";
    double t0 = clock_ms();
    struct db_conn *c = db_pool_acquire(p, clock_deadline_in(300), err, sizeof(err));
    double took = clock_ms() - t0;
    assert_null(c);
    assert_true(took >= 250);
    assert_true(took < 1500); /* bounded by the deadline, not libpq's or the kernel's */
    assert_non_null(strstr(err, "deadline"));
    t0 = clock_ms();
    c = db_pool_acquire(p, clock_deadline_in(300), err, sizeof(err));
    assert_null(c);
    assert_true(clock_ms() - t0 < 100);
    assert_non_null(strstr(err, "backing off"));
    struct db_pool_stats st;
    db_pool_stats(p, &st);
    assert_int_equal(st.open, 0);
    assert_int_equal(st.in_use, 0);
    db_pool_destroy(p);
    close(lfd);
}

struct burst {
    struct db_pool *pool;
    pthread_barrier_t *go;
    int got;
    double took;
};

static void *burst_acquire(void *arg)
{
    struct burst *b = arg;
    char err[256];
    pthread_barrier_wait(b->go);
    double t0 = clock_ms();
    struct db_conn *c = db_pool_acquire(b->pool, clock_deadline_in(400), err, sizeof(err));
    b->took = clock_ms() - t0;
    b->got = c != NULL;
    if (c != NULL)
        db_pool_release(b->pool, c);
    return NULL;
}

/* Eight threads hit a cold pool at once: at most DB_CONNECTS_AT_ONCE
 * connections reach the server (the kernel completes each handshake, so
 * the listening socket's queue shows them), and every call still returns
 * by its deadline. Before the limit all eight connected. */
static void test_burst_opens_few_connections_at_once(void **state)
{
    (void)state;
    enum { N = 8 };
    int port;
    int lfd = listen_any(&port);
    char conninfo[160];
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=test dbname=test sslmode=disable", port);
    struct db_pool_options o = {.conninfo = conninfo, .size = N, .statement_timeout_ms = 5000,
                                .slow_ms = 100000, .stmts = stmts, .nstmts = 1};
    struct db_pool *p = db_pool_create(&o);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    struct burst b[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        b[i] = (struct burst){.pool = p, .go = &go};
        assert_int_equal(pthread_create(&t[i], NULL, burst_acquire, &b[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_false(b[i].got);
        assert_true(b[i].took < 1500);
    }
    int fl = fcntl(lfd, F_GETFL);
    assert_int_equal(fcntl(lfd, F_SETFL, fl | O_NONBLOCK), 0);
    int connected = 0, fd;
    while ((fd = accept(lfd, NULL, NULL)) >= 0) {
        connected++;
        close(fd);
    }
    assert_true(connected >= 1);
    assert_true(connected <= DB_CONNECTS_AT_ONCE);
    pthread_barrier_destroy(&go);
    db_pool_destroy(p);
    close(lfd);
}

/* ---- a server that answers the handshake and the SETs, then hangs ---- */

struct hang_server {
    int lfd;
    int queries; /* simple queries answered */
    int closed;  /* the client went away */
    pthread_t tid;
};

static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void *hang_server_run(void *arg)
{
    struct hang_server *s = arg;
    unsigned char hdr[8], body[4096];
    static const unsigned char auth_ok_ready[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0,
                                                  'Z', 0, 0, 0, 5, 'I'};
    static const unsigned char parse_done[] = {'1', 0, 0, 0, 4}, bind_done[] = {'2', 0, 0, 0, 4},
                               no_data[] = {'n', 0, 0, 0, 4};
    static const unsigned char set_done[] = {'C', 0, 0, 0, 8, 'S', 'E', 'T', 0};
    static const unsigned char ready[] = {'Z', 0, 0, 0, 5, 'I'};
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    /* Startup message (sslmode=disable: no SSLRequest first). */
    if (read_full(fd, hdr, 4) != 0 || be32(hdr) < 8 || be32(hdr) - 4 > sizeof(body) ||
        read_full(fd, body, be32(hdr) - 4) != 0 ||
        write(fd, auth_ok_ready, sizeof(auth_ok_ready)) != (ssize_t)sizeof(auth_ok_ready))
        goto out;
    /* The set-up pipeline (two SETs, the prepares: none here, each part
     * ending in a Sync) is answered; the statement after it never is. */
    for (int syncs = 0;;) {
        if (read_full(fd, hdr, 5) != 0)
            break;
        uint32_t len = be32(hdr + 1);
        if (len < 4 || len - 4 > sizeof(body) || read_full(fd, body, len - 4) != 0)
            break;
        if (syncs == 3)
            continue; /* Parse/Bind/Execute/Sync of the statement: never answered. */
        const unsigned char *reply = NULL;
        size_t n = 5;
        switch (hdr[0]) {
        case 'P': reply = parse_done; break;
        case 'B': reply = bind_done; break;
        case 'D': reply = no_data; break;
        case 'E': reply = set_done, n = sizeof(set_done), s->queries++; break;
        case 'S': reply = ready, n = sizeof(ready), syncs++; break;
        default: break;
        }
        if (reply != NULL && write(fd, reply, n) != (ssize_t)n)
            break;
    }
    s->closed = 1;
out:
    close(fd);
    return NULL;
}

/* A statement the server never answers comes back DB_TIMEOUT at the
 * deadline; the connection is closed (it is mid-protocol) and the pool
 * backs off. */
static void test_query_to_hung_server_meets_deadline(void **state)
{
    (void)state;
    struct hang_server s = {0};
    int port;
    s.lfd = listen_any(&port);
    assert_int_equal(pthread_create(&s.tid, NULL, hang_server_run, &s), 0);
    struct db_pool *p = pool_for(port);
    char err[256] = "";
    struct db_conn *c = db_pool_acquire(p, clock_deadline_in(5000), err, sizeof(err));
    assert_non_null(c);
    struct db_pool_stats st;
    db_pool_stats(p, &st);
    assert_int_equal(st.open, 1);
    PGresult *res = (PGresult *)1;
    double ms = -1;
    double t0 = clock_ms();
    enum db_result rc = db_exec(c, 0, NULL, clock_deadline_in(300), &res, &ms);
    double took = clock_ms() - t0;
    db_pool_release(p, c);
    assert_int_equal(rc, DB_TIMEOUT);
    assert_null(res);
    assert_true(took >= 250);
    assert_true(took < 1500);
    assert_true(ms >= 250);
    db_pool_stats(p, &st);
    assert_int_equal(st.open, 0);
    /* Backing off: no new connection, an immediate refusal. */
    t0 = clock_ms();
    assert_null(db_pool_acquire(p, clock_deadline_in(300), err, sizeof(err)));
    assert_true(clock_ms() - t0 < 100);
    pthread_join(s.tid, NULL); /* ends when the client closed its side */
    assert_int_equal(s.queries, 2); /* statement_timeout, client_connection_check_interval */
    assert_int_equal(s.closed, 1);
    db_pool_destroy(p);
    close(s.lfd);
}

/* A deadline already spent: no wait at all. */
static void test_spent_deadline_returns_at_once(void **state)
{
    (void)state;
    int port;
    int lfd = listen_any(&port);
    struct db_pool *p = pool_for(port);
    char err[256];
    double t0 = clock_ms();
    assert_null(db_pool_acquire(p, clock_now_ms() - 1, err, sizeof(err)));
    assert_true(clock_ms() - t0 < 200);
    db_pool_destroy(p);
    close(lfd);
}

/* ---- against a real PostgreSQL (ACCESS_TEST_PG) --------------------------- */

static const struct db_stmt real_stmts[] = {
    {"t_one", "SELECT 1", 0, 1},
    {"t_add", "SELECT $1::int + 1", 1, 1},
    {"t_timeout", "SELECT current_setting('statement_timeout')", 0, 1},
};

static struct db_pool *real_pool(const struct db_stmt *st, size_t n, size_t size)
{
    struct db_pool_options o = {.conninfo = getenv("ACCESS_TEST_PG"), .size = size,
                                .statement_timeout_ms = 4321, .slow_ms = 100000, .prepared = 1,
                                .stmts = st, .nstmts = n};
    return db_pool_create(&o);
}

/* The pipelined set-up applies statement_timeout and prepares every
 * statement; a statement the server refuses fails the connection, named. */
static void test_real_setup_pipeline(void **state)
{
    (void)state;
    char err[256] = "";
    struct db_pool *p = real_pool(real_stmts, 3, 1);
    struct db_conn *c = db_pool_acquire(p, clock_deadline_in(5000), err, sizeof(err));
    assert_non_null(c);
    PGresult *r = NULL;
    const char *v[] = {"41"};
    assert_int_equal(db_exec(c, 1, v, clock_deadline_in(5000), &r, NULL), DB_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    assert_int_equal(db_exec(c, 2, NULL, clock_deadline_in(5000), &r, NULL), DB_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "4321ms");
    PQclear(r);
    db_pool_release(p, c);
    db_pool_destroy(p);

    static const struct db_stmt bad[] = {{"t_one", "SELECT 1", 0, 1},
                                         {"t_bad", "SELECT FROM nowhere_at_all", 0, 1},
                                         {"t_after", "SELECT 2", 0, 1}};
    p = real_pool(bad, 3, 1);
    assert_null(db_pool_acquire(p, clock_deadline_in(5000), err, sizeof(err)));
    assert_non_null(strstr(err, "t_bad"));
    db_pool_destroy(p);
}

struct hammer {
    struct db_pool *pool;
    pthread_barrier_t *go;
    int ok;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    char err[256];
    pthread_barrier_wait(h->go);
    for (int i = 0; i < 100; i++) {
        struct db_conn *c = db_pool_acquire(h->pool, clock_deadline_in(5000), err, sizeof(err));
        if (c == NULL)
            continue;
        PGresult *r = NULL;
        if (db_exec(c, 0, NULL, clock_deadline_in(5000), &r, NULL) == DB_OK &&
            strcmp(PQgetvalue(r, 0, 0), "1") == 0)
            h->ok++;
        PQclear(r);
        db_pool_release(h->pool, c);
    }
    return NULL;
}

/* 32 threads start at once on a cold pool of 16 slots, 100 statements
 * each: every one succeeds while connections open two at a time. */
static void test_real_cold_burst(void **state)
{
    (void)state;
    enum { N = 32 };
    struct db_pool *p = real_pool(real_stmts, 3, 16);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    struct hammer h[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        h[i] = (struct hammer){.pool = p, .go = &go};
        assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(h[i].ok, 100);
    }
    struct db_pool_stats st;
    db_pool_stats(p, &st);
    assert_true(st.open >= 1 && st.open <= 16);
    assert_int_equal(st.in_use, 0);
    pthread_barrier_destroy(&go);
    db_pool_destroy(p);
}

/* The other side of a deadlock: holds row 2, then (after the pool's
 * statement holds row 1 and waits for row 2) asks for row 1. */
struct dl_side {
    PGconn *pg;
    pthread_barrier_t *locked;
};

static void *dl_run(void *arg)
{
    struct dl_side *d = arg;
    PQclear(PQexec(d->pg, "BEGIN"));
    PQclear(PQexec(d->pg, "SELECT id FROM db_test_dl WHERE id = 2 FOR UPDATE"));
    pthread_barrier_wait(d->locked);
    usleep(300 * 1000);
    PQclear(PQexec(d->pg, "SELECT id FROM db_test_dl WHERE id = 1 FOR UPDATE"));
    PQclear(PQexec(d->pg, "COMMIT"));
    return NULL;
}

/* A statement PostgreSQL picks to break a deadlock (40P01: it waited
 * first, so its backend's check finds the cycle) is rolled back; the pool
 * runs it once more and it succeeds once the other side is through. */
static void test_real_deadlock_victim_runs_again(void **state)
{
    (void)state;
    static const struct db_stmt st[] = {
        {"t_lock_both", "SELECT count(*) FROM (SELECT id FROM db_test_dl WHERE id IN (1, 2) "
                        "ORDER BY id FOR UPDATE) x",
         0, 0}};
    PGconn *other = PQconnectdb(getenv("ACCESS_TEST_PG"));
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    PQclear(PQexec(other, "DROP TABLE IF EXISTS db_test_dl"));
    PQclear(PQexec(other, "CREATE TABLE db_test_dl (id int PRIMARY KEY)"));
    PQclear(PQexec(other, "INSERT INTO db_test_dl VALUES (1), (2)"));
    struct db_pool *p = real_pool(st, 1, 1);
    char err[256];
    struct db_conn *c = db_pool_acquire(p, clock_deadline_in(5000), err, sizeof(err));
    assert_non_null(c);
    pthread_barrier_t locked;
    pthread_barrier_init(&locked, NULL, 2);
    struct dl_side d = {.pg = other, .locked = &locked};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, dl_run, &d), 0);
    pthread_barrier_wait(&locked);
    PGresult *r = NULL;
    enum db_result rc = db_exec(c, 0, NULL, clock_deadline_in(8000), &r, NULL);
    pthread_join(t, NULL);
    assert_int_equal(rc, DB_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "2");
    PQclear(r);
    db_pool_release(p, c);
    db_pool_destroy(p);
    pthread_barrier_destroy(&locked);
    PQclear(PQexec(other, "DROP TABLE db_test_dl"));
    PQfinish(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_to_silent_server_meets_deadline),
        cmocka_unit_test(test_burst_opens_few_connections_at_once),
        cmocka_unit_test(test_query_to_hung_server_meets_deadline),
        cmocka_unit_test(test_spent_deadline_returns_at_once),
    };
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test(test_real_setup_pipeline),
        cmocka_unit_test(test_real_cold_burst),
        cmocka_unit_test(test_real_deadlock_victim_runs_again),
    };
    const char *pg_uri = getenv("ACCESS_TEST_PG");
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (pg_uri != NULL && pg_uri[0] != '\0')
        failed += cmocka_run_group_tests_name("db_pg", pg_tests, NULL, NULL);
    return failed;
}
