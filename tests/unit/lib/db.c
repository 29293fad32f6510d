/* Unit tests for lib/db.c: every call returns by its deadline, whatever the
 * server does (SPEC §5 "PostgreSQL that hangs").
 *
 * The "servers" are loopback TCP sockets: one that the kernel accepts for
 * but nobody ever answers (a SIGSTOPped postmaster), and one that completes
 * the startup handshake and answers the connection's SETs, then never
 * answers a query (a backend that hangs). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
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
    static const unsigned char set_done[] = {'C', 0, 0, 0, 8,   'S', 'E', 'T',
                                             0,   'Z', 0, 0,   0, 5,   'I'};
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    /* Startup message (sslmode=disable: no SSLRequest first). */
    if (read_full(fd, hdr, 4) != 0 || be32(hdr) < 8 || be32(hdr) - 4 > sizeof(body) ||
        read_full(fd, body, be32(hdr) - 4) != 0 ||
        write(fd, auth_ok_ready, sizeof(auth_ok_ready)) != (ssize_t)sizeof(auth_ok_ready))
        goto out;
    for (;;) {
        if (read_full(fd, hdr, 5) != 0)
            break;
        uint32_t len = be32(hdr + 1);
        if (len < 4 || len - 4 > sizeof(body) || read_full(fd, body, len - 4) != 0)
            break;
        if (hdr[0] == 'Q') { /* the connection's SETs */
            s->queries++;
            if (write(fd, set_done, sizeof(set_done)) != (ssize_t)sizeof(set_done))
                break;
        }
        /* Parse/Bind/Execute/Sync of the statement: never answered. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_to_silent_server_meets_deadline),
        cmocka_unit_test(test_query_to_hung_server_meets_deadline),
        cmocka_unit_test(test_spent_deadline_returns_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
