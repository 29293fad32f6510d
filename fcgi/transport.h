/* transport: the FastCGI connections of one worker process (SPEC §8).
 *
 * Every connection owns its FCGX_Request; no request thread owns one. The
 * listening socket and every idle connection wait in one epoll set per
 * worker, each armed one-shot, and the request threads all wait in
 * transport_next(): the kernel hands each ready connection to exactly one
 * thread, which reads and serves one request on it and gives it back with
 * transport_done(). A connection the web server keeps (nginx `keepalive` +
 * `fastcgi_keep_conn on`) is then armed again and costs no thread while it
 * is idle, however many nginx keeps; one it does not keep is closed by
 * libfcgi's FCGX_Finish_r(). So new connections are always accepted and an
 * idle kept connection never holds a thread hostage.
 *
 * The service never closes an idle kept connection while it runs (a request
 * nginx sends on it at that moment would be lost, and nginx does not retry a
 * POST): only nginx does (its `keepalive_timeout`), or transport_destroy()
 * at exit after the drain.
 *
 * Thread-safety: transport_next() and transport_done() from any number of
 * threads; create, stop_accepting and destroy from the worker's main
 * thread (destroy after the request threads have left). */
#ifndef ACCESS_TRANSPORT_H
#define ACCESS_TRANSPORT_H

#include <pthread.h>
#include <stddef.h>

#include <fcgiapp.h>

struct transport;

/* One connection. req is the FastCGI request read and answered on it;
 * between transport_next() and transport_done() it belongs to the calling
 * thread alone. */
struct conn {
    FCGX_Request req;
    int watched;              /* in the epoll set (armed or fired) */
    pthread_mutex_t handoff;  /* held while arming: see transport_next() */
    struct conn *prev, *next; /* every open connection, under the lock */
};

/* Watch listen_fd (made non-blocking). NULL and err filled on failure. */
struct transport *transport_create(int listen_fd, char *err, size_t errlen);

/* Wait up to timeout_ms for a connection with a request to read: a new one
 * just accepted, or a kept one that became readable. NULL when none came
 * (or only a failed accept). The caller reads the request with
 * FCGX_Accept_r(&c->req) (which reads, never accepts: the connection's fd
 * is set), serves it, finishes it, then calls transport_done(). */
struct conn *transport_next(struct transport *t, int timeout_ms);

/* The request on c is finished: arm c again when the web server keeps it
 * (its fd is still open), else free it; while draining, close a kept one
 * (after its complete answer). c must not be used afterwards. */
void transport_done(struct transport *t, struct conn *c);

/* Drain: accept no new connection (kept ones are still served). */
void transport_stop_accepting(struct transport *t);

/* Connections open now (idle or being served). */
size_t transport_open(struct transport *t);

/* Close every connection (each with an orderly shutdown) and free t. */
void transport_destroy(struct transport *t);

#endif
