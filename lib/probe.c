#include "probe.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "alloc.h"
#include "clock.h"

struct probe {
    probe_check check;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t started; /* checks begun; under mu */
    uint64_t done;    /* the newest finished check's number */
    int running;
    int result; /* of check number `done` */
};

struct probe *probe_create(probe_check check, void *ctx)
{
    struct probe *p = xcalloc(1, sizeof(*p));
    pthread_condattr_t ca;
    p->check = check;
    p->ctx = ctx;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    return p;
}

int probe_run(struct probe *p, int64_t deadline)
{
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    /* Checks finish in the order they began (one runs at a time), so any
     * finished number >= want began after this call. */
    uint64_t want = p->started + 1;
    for (;;) {
        if (p->done >= want) {
            rc = p->result;
            break;
        }
        if (!p->running) {
            uint64_t mine = ++p->started;
            p->running = 1;
            pthread_mutex_unlock(&p->mu);
            int r = p->check(p->ctx, deadline) == 0 ? 0 : -1;
            pthread_mutex_lock(&p->mu);
            p->running = 0;
            p->done = mine;
            p->result = r;
            pthread_cond_broadcast(&p->cv);
            rc = r;
            break;
        }
        if (clock_remaining_ms(deadline) <= 0)
            break;
        struct timespec until = clock_deadline_ts(deadline);
        (void)pthread_cond_timedwait(&p->cv, &p->mu, &until);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

uint64_t probe_checks(struct probe *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->started;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void probe_free(struct probe *p)
{
    if (p == NULL)
        return;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
