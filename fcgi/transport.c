#include "transport.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "net.h"

/* A request that has begun must arrive whole within this long: a blocking
 * read of a half-sent record never keeps a thread for longer. */
#define TRANSPORT_READ_TIMEOUT_S 10

struct transport {
    int ep;
    int listen_fd;
    int tcp;
    int accepting;      /* under mu */
    pthread_mutex_t mu; /* the list of connections */
    struct conn head;   /* sentinel */
    size_t open;
};

/* epoll's data for the listening socket; connections carry their conn. */
static char transport_listen_tag;

static int transport_arm(struct transport *t, int fd, void *ptr, int op)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = ptr};
    return epoll_ctl(t->ep, op, fd, &ev);
}

struct transport *transport_create(int listen_fd, char *err, size_t errlen)
{
    struct transport *t = xcalloc(1, sizeof(*t));
    struct sockaddr_storage ss = {0};
    socklen_t sslen = sizeof(ss);
    t->listen_fd = listen_fd;
    t->head.prev = t->head.next = &t->head;
    pthread_mutex_init(&t->mu, NULL);
    t->ep = epoll_create1(EPOLL_CLOEXEC);
    if (t->ep < 0 || net_set_nonblock(listen_fd, 1) != 0 ||
        getsockname(listen_fd, (struct sockaddr *)&ss, &sslen) != 0 ||
        transport_arm(t, listen_fd, &transport_listen_tag, EPOLL_CTL_ADD) != 0) {
        snprintf(err, errlen, "cannot watch the listening socket: %s", strerror(errno));
        if (t->ep >= 0)
            close(t->ep);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return NULL;
    }
    t->tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
    t->accepting = 1;
    return t;
}

static struct conn *transport_accept(struct transport *t)
{
    int fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    int saved = errno;
    /* Armed again at once, so another thread can take the next one. */
    pthread_mutex_lock(&t->mu);
    if (t->accepting)
        (void)transport_arm(t, t->listen_fd, &transport_listen_tag, EPOLL_CTL_MOD);
    pthread_mutex_unlock(&t->mu);
    if (fd < 0) {
        if (saved != EAGAIN && saved != EWOULDBLOCK && saved != ECONNABORTED && saved != EINTR)
            log_msg(LOG_WARN, "accept failed: %s", strerror(saved));
        return NULL;
    }
    /* Blocking reads bounded in time; replies not delayed by Nagle. */
    struct timeval tv = {TRANSPORT_READ_TIMEOUT_S, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (t->tcp) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    struct conn *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->handoff, NULL);
    /* No listening socket of its own: libfcgi only ever reads this fd, and
     * when the peer has gone its retry to accept fails at once (EBADF). */
    FCGX_InitRequest(&c->req, -1, 0);
    c->req.ipcFd = fd;
    /* FCGX_Accept_r() first finishes "the previous request", closing the
     * fd unless it was kept: this one is, until the web server's first
     * record says otherwise. */
    c->req.keepConnection = 1;
    pthread_mutex_lock(&t->mu);
    c->next = t->head.next;
    c->prev = &t->head;
    t->head.next->prev = c;
    t->head.next = c;
    t->open++;
    pthread_mutex_unlock(&t->mu);
    return c;
}

struct conn *transport_next(struct transport *t, int timeout_ms)
{
    struct epoll_event ev;
    int n = epoll_wait(t->ep, &ev, 1, timeout_ms);
    if (n <= 0)
        return NULL;
    if (ev.data.ptr == &transport_listen_tag)
        return transport_accept(t);
    struct conn *c = ev.data.ptr;
    /* The arming thread may not have returned from epoll_ctl() yet: wait
     * until it has let go of c (this also shows the handoff to TSan, which
     * does not see epoll's ordering). */
    pthread_mutex_lock(&c->handoff);
    pthread_mutex_unlock(&c->handoff);
    return c;
}

static void transport_unlink(struct transport *t, struct conn *c)
{
    pthread_mutex_lock(&t->mu);
    c->prev->next = c->next;
    c->next->prev = c->prev;
    t->open--;
    pthread_mutex_unlock(&t->mu);
}

/* Close a connection after a complete answer: FIN, never a reset. */
static void transport_close(struct conn *c)
{
    shutdown(c->req.ipcFd, SHUT_WR);
    close(c->req.ipcFd);
    c->req.ipcFd = -1;
}

void transport_done(struct transport *t, struct conn *c)
{
    pthread_mutex_lock(&t->mu);
    int draining = !t->accepting;
    pthread_mutex_unlock(&t->mu);
    if (c->req.ipcFd >= 0 && draining)
        transport_close(c);
    if (c->req.ipcFd >= 0) {
        /* Kept by the web server: wait for its next request. Once armed, c
         * belongs to whichever thread the next event goes to (which may
         * free it at once when the peer has closed): not one more write to
         * it here, so the flag is set first. */
        int op = c->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        c->watched = 1;
        pthread_mutex_lock(&c->handoff);
        int rc = transport_arm(t, c->req.ipcFd, c, op);
        int err = errno;
        pthread_mutex_unlock(&c->handoff);
        if (rc == 0)
            return;
        log_msg(LOG_WARN, "cannot watch a kept connection: %s", strerror(err));
    }
    transport_unlink(t, c);
    FCGX_Free(&c->req, 1);
    pthread_mutex_destroy(&c->handoff);
    free(c);
}

void transport_stop_accepting(struct transport *t)
{
    pthread_mutex_lock(&t->mu);
    t->accepting = 0;
    (void)epoll_ctl(t->ep, EPOLL_CTL_DEL, t->listen_fd, NULL);
    pthread_mutex_unlock(&t->mu);
}

size_t transport_open(struct transport *t)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->open;
    pthread_mutex_unlock(&t->mu);
    return n;
}

void transport_destroy(struct transport *t)
{
    if (t == NULL)
        return;
    struct conn *c = t->head.next;
    while (c != &t->head) {
        struct conn *next = c->next;
        if (c->req.ipcFd >= 0)
            transport_close(c);
        FCGX_Free(&c->req, 0);
        pthread_mutex_destroy(&c->handoff);
        free(c);
        c = next;
    }
    t->head.next = t->head.prev = &t->head;
    close(t->ep);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
