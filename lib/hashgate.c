#include "hashgate.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

#define GATE_SLICE_MS 100

struct gate_slot {
    int queued;
    int held;
};

/* Waiters sleep on a futex word bumped by every release, not on a
 * process-shared condition variable: glibc's pthread_cond_broadcast() waits
 * for every earlier waiter to leave, and one killed while waiting never
 * does (it hung the supervisor). The kernel forgets a dead futex waiter. */
struct hashgate {
    pthread_mutex_t mu; /* robust, process-shared */
    _Atomic uint32_t wake_seq;
    unsigned cap;
    unsigned nslots;
    /* Sums of the slots, rewritten under mu; read without it. */
    _Atomic int queued;
    _Atomic int active;
    _Atomic uint64_t rejected;
    _Atomic uint64_t repairs;
    struct gate_slot slot[];
};

size_t hashgate_size(unsigned nslots)
{
    return sizeof(struct hashgate) + (size_t)nslots * sizeof(struct gate_slot);
}

/* Totals from the slots: the truth after a worker died mid-update. */
static void gate_recount(struct hashgate *g)
{
    int q = 0, a = 0;
    for (unsigned i = 0; i < g->nslots; i++) {
        q += g->slot[i].queued;
        a += g->slot[i].held;
    }
    atomic_store(&g->queued, q);
    atomic_store(&g->active, a);
}

static void gate_after_lock(struct hashgate *g, int rc)
{
    if (rc == EOWNERDEAD) {
        /* Its owner died inside; only its own slot can be half-written, and
         * the supervisor clears that slot once it reaps the process. */
        gate_recount(g);
        atomic_fetch_add(&g->repairs, 1);
        pthread_mutex_consistent(&g->mu);
    } else if (rc != 0 && rc != ETIMEDOUT) {
        log_msg(LOG_ERROR, "hashgate: lock failed: %s", strerror(rc));
        abort();
    }
}

static void gate_lock(struct hashgate *g)
{
    gate_after_lock(g, pthread_mutex_lock(&g->mu));
}

/* Wake every waiter (a handful of pool threads per worker). */
static void gate_wake(struct hashgate *g)
{
    atomic_fetch_add(&g->wake_seq, 1);
    syscall(SYS_futex, &g->wake_seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static struct gate_slot *gate_slot(struct hashgate *g, unsigned slot)
{
    if (slot >= g->nslots) {
        log_msg(LOG_ERROR, "hashgate: slot %u out of %u", slot, g->nslots);
        abort();
    }
    return &g->slot[slot];
}

struct hashgate *hashgate_init(void *mem, size_t n, unsigned cap, unsigned nslots, char *err,
                               size_t errlen)
{
    struct hashgate *g = mem;
    pthread_mutexattr_t ma;
    if (mem == NULL || n < hashgate_size(nslots) || cap == 0 || nslots == 0) {
        snprintf(err, errlen, "hashgate: bad arguments");
        return NULL;
    }
    memset(mem, 0, hashgate_size(nslots));
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&g->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    if (rc != 0) {
        snprintf(err, errlen, "hashgate: cannot create the shared lock: %s", strerror(rc));
        return NULL;
    }
    g->cap = cap;
    g->nslots = nslots;
    return g;
}

int hashgate_enqueue(struct hashgate *g, unsigned slot, int queue_max)
{
    int rc = 0;
    gate_lock(g);
    if (atomic_load(&g->queued) >= queue_max) {
        atomic_fetch_add(&g->rejected, 1);
        rc = -1;
    } else {
        gate_slot(g, slot)->queued++;
        atomic_fetch_add(&g->queued, 1);
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

int hashgate_acquire(struct hashgate *g, unsigned slot, const struct timespec *until)
{
    struct gate_slot *s = gate_slot(g, slot);
    for (;;) {
        gate_lock(g);
        if ((unsigned)atomic_load(&g->active) < g->cap) {
            s->queued--;
            s->held++;
            atomic_fetch_sub(&g->queued, 1);
            atomic_fetch_add(&g->active, 1);
            pthread_mutex_unlock(&g->mu);
            return 0;
        }
        /* Read under the lock: a release after it changes the word, so the
         * wait below returns at once instead of missing it. */
        uint32_t seq = atomic_load(&g->wake_seq);
        pthread_mutex_unlock(&g->mu);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long left =
            (long long)(until->tv_sec - now.tv_sec) * 1000000000LL + (until->tv_nsec - now.tv_nsec);
        if (left <= 0)
            return -1;
        if (left > GATE_SLICE_MS * 1000000LL)
            left = GATE_SLICE_MS * 1000000LL;
        struct timespec rel = {(time_t)(left / 1000000000LL), (long)(left % 1000000000LL)};
        syscall(SYS_futex, &g->wake_seq, FUTEX_WAIT, seq, &rel, NULL, 0);
    }
}

void hashgate_dequeue(struct hashgate *g, unsigned slot, int expired)
{
    gate_lock(g);
    gate_slot(g, slot)->queued--;
    atomic_fetch_sub(&g->queued, 1);
    if (expired)
        atomic_fetch_add(&g->rejected, 1);
    pthread_mutex_unlock(&g->mu);
}

void hashgate_release(struct hashgate *g, unsigned slot)
{
    gate_lock(g);
    gate_slot(g, slot)->held--;
    atomic_fetch_sub(&g->active, 1);
    pthread_mutex_unlock(&g->mu);
    gate_wake(g);
}

void hashgate_count_rejected(struct hashgate *g)
{
    atomic_fetch_add(&g->rejected, 1);
}

void hashgate_reclaim(struct hashgate *g, unsigned slot)
{
    gate_lock(g);
    struct gate_slot *s = gate_slot(g, slot);
    if (s->held != 0 || s->queued != 0)
        log_msg(LOG_WARN, "hashgate: worker slot %u died holding %d hash slots and %d queued jobs",
                slot, s->held, s->queued);
    s->held = 0;
    s->queued = 0;
    gate_recount(g);
    pthread_mutex_unlock(&g->mu);
    gate_wake(g);
}

void hashgate_stats(struct hashgate *g, struct hashgate_stats *out)
{
    out->queued = atomic_load(&g->queued);
    out->active = atomic_load(&g->active);
    out->rejected = atomic_load(&g->rejected);
    out->repairs = atomic_load(&g->repairs);
}
