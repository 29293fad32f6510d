#include "probe.h"

#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"

/* No mutex: callers read two counters and a result. A finished check
 * wakes every waiter at once, and they must not then queue on a lock to
 * read one int (under a flood of /health that hand-off cost more than the
 * round trip itself). Checks are numbered from 1 in the order they begin;
 * one runs at a time, so they finish in that order too. Counters are 32
 * bits (a futex word) and compared modulo 2^32. */
struct probe {
    probe_check check;
    void *ctx;
    _Atomic uint32_t started; /* the newest check's number */
    _Atomic uint32_t done;    /* the newest finished check's number: the futex word */
    _Atomic int running;      /* a check is under way */
    _Atomic int result;       /* of check `done` (or of a newer one, also finished) */
};

struct probe *probe_create(probe_check check, void *ctx)
{
    struct probe *p = xcalloc(1, sizeof(*p));
    p->check = check;
    p->ctx = ctx;
    return p;
}

int probe_run(struct probe *p, int64_t deadline)
{
    /* Any check numbered past `started` as read here begins after it. */
    uint32_t want = atomic_load(&p->started) + 1;
    for (;;) {
        uint32_t done = atomic_load(&p->done);
        if ((int32_t)(done - want) >= 0)
            return atomic_load(&p->result);
        int idle = 0;
        if (atomic_compare_exchange_strong(&p->running, &idle, 1)) {
            uint32_t mine = atomic_fetch_add(&p->started, 1) + 1;
            int r = p->check(p->ctx, deadline) == 0 ? 0 : -1;
            /* The result before the number that publishes it. */
            atomic_store(&p->result, r);
            atomic_store(&p->done, mine);
            atomic_store(&p->running, 0);
            syscall(SYS_futex, &p->done, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
            return r;
        }
        long left = clock_remaining_ms(deadline);
        if (left <= 0)
            return -1;
        /* Sleeps only while `done` still says what was read above; a
         * check finishing in between makes this return at once. */
        struct timespec rel = {left / 1000, (left % 1000) * 1000000L};
        syscall(SYS_futex, &p->done, FUTEX_WAIT_PRIVATE, done, &rel, NULL, 0);
    }
}

uint64_t probe_checks(struct probe *p)
{
    return atomic_load(&p->started);
}

void probe_free(struct probe *p)
{
    free(p);
}
