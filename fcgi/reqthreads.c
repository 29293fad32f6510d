#include "reqthreads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "alloc.h"
#include "arena.h"
#include "clock.h"
#include "http.h"
#include "log.h"

#define REQTHREADS_POLL_MS  200
#define REQTHREADS_SPARE_MS 1000

struct reqthread {
    pthread_t tid;
    struct reqthreads *pool;
    _Atomic int done;
};

struct reqthreads {
    struct app *app;
    struct transport *tr;
    pthread_mutex_t mu;
    pthread_cond_t spare_cv;
    size_t target;            /* threads that should be serving */
    size_t serving;           /* under mu */
    _Atomic size_t serving_a; /* its copy for the lock-free check */
    size_t idle;              /* spares asleep */
    size_t wake;              /* spares called back, not yet awake */
    size_t n, cap;            /* threads started / room for */
    int stopping;
    struct reqthread *t;
};

static void *reqthread_main(void *arg);

/* Under mu. */
static void reqthreads_set_serving(struct reqthreads *p, size_t n)
{
    p->serving = n;
    atomic_store(&p->serving_a, n);
}

/* Under mu: one more thread, serving from the start. */
static int reqthreads_spawn(struct reqthreads *p)
{
    if (p->n >= p->cap)
        return -1;
    struct reqthread *t = &p->t[p->n];
    t->pool = p;
    atomic_store(&t->done, 0);
    if (pthread_create(&t->tid, NULL, reqthread_main, t) != 0)
        return -1;
    p->n++;
    reqthreads_set_serving(p, p->serving + 1);
    return 0;
}

/* More threads serve than wanted: sleep as a spare until called back.
 * -1 when the worker stops instead. */
static int reqthreads_retire(struct reqthreads *p)
{
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    if (p->serving > p->target && !p->stopping) {
        reqthreads_set_serving(p, p->serving - 1);
        p->idle++;
        while (p->wake == 0 && !p->stopping) {
            struct timespec until = clock_deadline(REQTHREADS_SPARE_MS);
            pthread_cond_timedwait(&p->spare_cv, &p->mu, &until);
        }
        p->idle--;
        if (p->wake > 0)
            p->wake--; /* the waker counted this thread as serving */
        else
            rc = -1;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Wait in transport_next() for a connection with a request (a new one, or
 * one nginx keeps and has sent on again), read and serve that request, and
 * give the connection back. No thread ever blocks on an idle connection or
 * holds the accept for others (SPEC §8). While draining, a thread leaves
 * once a poll brings nothing. */
static void *reqthread_main(void *arg)
{
    struct reqthread *t = arg;
    struct reqthreads *p = t->pool;
    struct arena arena;

    arena_init(&arena, 8192);
    for (;;) {
        if (atomic_load_explicit(&p->serving_a, memory_order_relaxed) > p->target &&
            reqthreads_retire(p) != 0)
            break;
        struct conn *c = transport_next(p->tr, REQTHREADS_POLL_MS);
        if (c == NULL) {
            if (atomic_load(&p->app->stopping))
                break;
            continue;
        }
        if (FCGX_Accept_r(&c->req) == 0) {
            http_serve(p->app, &c->req, &arena);
            arena_reset(&arena);
        }
        transport_done(p->tr, c);
    }
    arena_free(&arena);
    atomic_store(&t->done, 1);
    return NULL;
}

struct reqthreads *reqthreads_start(struct app *app, struct transport *tr, size_t serving,
                                    size_t spare_max, char *err, size_t errlen)
{
    struct reqthreads *p = xcalloc(1, sizeof(*p));
    pthread_condattr_t ca;
    p->app = app;
    p->tr = tr;
    p->target = serving;
    p->cap = serving + spare_max;
    p->t = xcalloc(p->cap, sizeof(*p->t));
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->spare_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < serving; i++) {
        if (reqthreads_spawn(p) != 0) {
            log_msg(LOG_ERROR, "pthread_create failed after %zu request threads", i);
            break;
        }
    }
    size_t n = p->n;
    pthread_mutex_unlock(&p->mu);
    if (n == 0) {
        snprintf(err, errlen, "no request thread could be started");
        reqthreads_free(p);
        return NULL;
    }
    return p;
}

void reqthreads_wait_hook(void *ctx, int waiting)
{
    struct reqthreads *p = ctx;
    pthread_mutex_lock(&p->mu);
    if (!waiting) {
        reqthreads_set_serving(p, p->serving + 1);
    } else {
        reqthreads_set_serving(p, p->serving - 1);
        if (!p->stopping && p->serving < p->target) {
            if (p->idle > p->wake) {
                p->wake++;
                reqthreads_set_serving(p, p->serving + 1);
                pthread_cond_signal(&p->spare_cv);
            } else if (reqthreads_spawn(p) != 0 && p->n < p->cap) {
                log_msg(LOG_WARN, "no spare request thread could be started");
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
}

size_t reqthreads_count(struct reqthreads *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->n;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t reqthreads_drain(struct reqthreads *p, double deadline_ms)
{
    size_t left;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->spare_cv);
    size_t n = p->n;
    pthread_mutex_unlock(&p->mu);
    do {
        left = 0;
        for (size_t i = 0; i < n; i++)
            left += !atomic_load(&p->t[i].done);
        if (left)
            clock_sleep_ms(10);
    } while (left && clock_ms() < deadline_ms);
    return left;
}

void reqthreads_free(struct reqthreads *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        pthread_join(p->t[i].tid, NULL);
    pthread_cond_destroy(&p->spare_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->t);
    free(p);
}
