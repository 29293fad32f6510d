/* Unit tests for fcgi/transport.c over a real unix socket and libfcgi:
 * request threads serve connections that the client keeps, closes right
 * after each answer (what nginx does without `keepalive`) or leaves idle,
 * thousands of times in parallel (run under ASan and TSan by make test):
 * every request is answered, no connection is lost or leaked, and idle kept
 * connections outnumbering the threads never stop a new one from being
 * served. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "clock.h"
#include "transport.h"

#define SERVERS 4
#define CLIENTS 4
#define ROUNDS  1500 /* connections per client */

struct server {
    struct transport *t;
    _Atomic int stop;
    _Atomic long served;
    pthread_t th[SERVERS];
};

static char sock_path[108];

static void *server_main(void *arg)
{
    struct server *s = arg;
    for (;;) {
        struct conn *c = transport_next(s->t, 20);
        if (c == NULL) {
            if (atomic_load(&s->stop))
                break;
            continue;
        }
        if (FCGX_Accept_r(&c->req) == 0) {
            static const char resp[] = "Status: 200 OK\r\nContent-Length: 2\r\n\r\nok";
            FCGX_PutStr(resp, (int)sizeof(resp) - 1, c->req.out);
            atomic_fetch_add(&s->served, 1); /* before the client can see the answer */
            FCGX_Finish_r(&c->req);
        }
        transport_done(s->t, c);
    }
    return NULL;
}

static int listen_unix(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sock_path, sizeof(sock_path), "/tmp/access-transport-test-%d.sock", (int)getpid());
    unlink(sock_path);
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1024), 0);
    return fd;
}

static void server_start(struct server *s, int listen_fd, int nthreads)
{
    char err[256];
    s->t = transport_create(listen_fd, err, sizeof(err));
    assert_non_null(s->t);
    for (int i = 0; i < nthreads; i++)
        assert_int_equal(pthread_create(&s->th[i], NULL, server_main, s), 0);
}

static void server_stop(struct server *s, int nthreads)
{
    transport_stop_accepting(s->t);
    atomic_store(&s->stop, 1);
    for (int i = 0; i < nthreads; i++)
        pthread_join(s->th[i], NULL);
    transport_destroy(s->t);
}

/* ---- a minimal FastCGI client ------------------------------------------ */

static void record(unsigned char *out, int type, const void *body, int len)
{
    out[0] = 1;
    out[1] = (unsigned char)type;
    out[2] = 0;
    out[3] = 1;
    out[4] = (unsigned char)(len >> 8);
    out[5] = (unsigned char)len;
    out[6] = 0;
    out[7] = 0;
    if (len > 0)
        memcpy(out + 8, body, (size_t)len);
}

static int client_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int read_full(int fd, unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* One request with FCGI_KEEP_CONN; 0 when the answer came whole. */
static int client_request(int fd)
{
    unsigned char msg[8 + 8 + 8 + 8];
    const unsigned char begin[8] = {0, 1 /* responder */, 1 /* keep conn */};
    record(msg, 1 /* BEGIN_REQUEST */, begin, 8);
    record(msg + 16, 4 /* PARAMS */, NULL, 0);
    record(msg + 24, 5 /* STDIN */, NULL, 0);
    if (write(fd, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
        return -1;
    for (;;) {
        unsigned char h[8], body[65536 + 256];
        if (read_full(fd, h, 8) != 0)
            return -1;
        size_t len = ((size_t)h[4] << 8 | h[5]) + h[6];
        if (read_full(fd, body, len) != 0)
            return -1;
        if (h[1] == 3 /* END_REQUEST */)
            return 0;
    }
}

struct client {
    _Atomic long ok, failed;
    int id;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    for (int i = 0; i < ROUNDS; i++) {
        int fd = client_connect();
        if (fd < 0) {
            atomic_fetch_add(&c->failed, 1);
            continue;
        }
        /* Half the connections answer one request and close at once (nginx
         * without keepalive), the rest carry three requests. */
        int n = (i + c->id) % 2 ? 1 : 3;
        for (int k = 0; k < n; k++) {
            if (client_request(fd) == 0)
                atomic_fetch_add(&c->ok, 1);
            else
                atomic_fetch_add(&c->failed, 1);
        }
        close(fd);
    }
    return NULL;
}

static void test_parallel_keep_and_close(void **state)
{
    (void)state;
    struct server s = {0};
    int lfd = listen_unix();
    server_start(&s, lfd, SERVERS);
    struct client cl[CLIENTS];
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = (struct client){.id = i};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    long ok = 0, failed = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        ok += atomic_load(&cl[i].ok);
        failed += atomic_load(&cl[i].failed);
    }
    print_message("transport: %ld requests answered on %d connections, %ld failed\n", ok,
                  CLIENTS * ROUNDS, failed);
    assert_int_equal(failed, 0);
    assert_int_equal(ok, CLIENTS * ROUNDS * 2);
    assert_int_equal(atomic_load(&s.served), ok);
    /* Every closed connection is noticed and freed. */
    double t0 = clock_ms();
    while (transport_open(s.t) != 0 && clock_ms() - t0 < 5000)
        clock_sleep_ms(5);
    assert_int_equal(transport_open(s.t), 0);
    server_stop(&s, SERVERS);
    close(lfd);
    unlink(sock_path);
}

/* 40 idle kept connections and 2 threads: a new connection is served at
 * once, and so is a second request on an old one; the destroy closes the
 * idle ones (the client reads EOF). */
#define IDLE 40

static void test_idle_kept_connections_hold_no_thread(void **state)
{
    (void)state;
    struct server s = {0};
    int lfd = listen_unix();
    server_start(&s, lfd, 2);
    int idle[IDLE];
    for (int i = 0; i < IDLE; i++) {
        idle[i] = client_connect();
        assert_true(idle[i] >= 0);
        assert_int_equal(client_request(idle[i]), 0);
    }
    double t0 = clock_ms();
    int fd = client_connect();
    assert_true(fd >= 0);
    assert_int_equal(client_request(fd), 0);
    assert_int_equal(client_request(idle[7]), 0);
    assert_true(clock_ms() - t0 < 2000); /* a bound, not a speed claim */
    assert_int_equal((long)transport_open(s.t), IDLE + 1);
    server_stop(&s, 2);
    for (int i = 0; i < IDLE; i++) {
        char b;
        assert_int_equal(read(idle[i], &b, 1), 0); /* FIN, not a reset */
        close(idle[i]);
    }
    close(fd);
    close(lfd);
    unlink(sock_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_keep_and_close),
        cmocka_unit_test(test_idle_kept_connections_hold_no_thread),
    };
    if (FCGX_Init() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
