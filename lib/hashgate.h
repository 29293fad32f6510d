/* hashgate: the machine-wide admission of Argon2id work (SPEC §5), in the
 * shared segment every worker maps.
 *
 * At most `cap` hashes run at once on the machine, and at most queue_max
 * jobs wait for one. Every count is kept per worker slot, so when a worker
 * dies the supervisor gives back exactly what it held (hashgate_reclaim):
 * no number of crashes, at any moment, lowers the survivors' capacity. The
 * state sits behind a robust process-shared mutex: a worker killed inside
 * the lock leaves the mutex to the next locker (EOWNERDEAD), and since a
 * worker only ever writes its own slot's counts, whatever it left half-done
 * is in the slot the supervisor is about to clear. Totals are recomputed
 * from the slots whenever that happens.
 *
 * Waiters sleep on a futex word that every release bumps, in slices of at
 * most 100 ms; the kernel forgets a waiter that dies.
 *
 * Thread- and process-safety: every function may be called from any thread
 * of any process that maps the segment; hashgate_reclaim() only by the
 * supervisor, for a slot whose process it has reaped. */
#ifndef ACCESS_HASHGATE_H
#define ACCESS_HASHGATE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct hashgate;

struct hashgate_stats {
    int queued;        /* jobs waiting for a slot, machine-wide */
    int active;        /* hashes running, machine-wide */
    uint64_t rejected; /* refused: queue full or waited too long */
    uint64_t repairs;  /* lock owners found dead (EOWNERDEAD) */
};

/* Bytes of shared memory a gate for nslots worker slots needs. */
size_t hashgate_size(unsigned nslots);

/* Initialise a gate in mem (n bytes, zeroed, MAP_SHARED) before any fork.
 * NULL and err filled on failure. */
struct hashgate *hashgate_init(void *mem, size_t n, unsigned cap, unsigned nslots, char *err,
                               size_t errlen);

/* A job of worker `slot` starts waiting: 0, or -1 when queue_max jobs already
 * wait machine-wide (counted as rejected). */
int hashgate_enqueue(struct hashgate *g, unsigned slot, int queue_max)
    __attribute__((warn_unused_result));

/* Wait until `until` (CLOCK_MONOTONIC) for a free hash slot for a job that
 * hashgate_enqueue() admitted. 0: the job holds a slot (no longer queued);
 * release it with hashgate_release(). -1: none came free in time; the job
 * is still queued (wait again, or give up with hashgate_dequeue()). */
int hashgate_acquire(struct hashgate *g, unsigned slot, const struct timespec *until)
    __attribute__((warn_unused_result));

/* A queued job of `slot` leaves without a slot; expired counts it as
 * rejected (it waited past its deadline). */
void hashgate_dequeue(struct hashgate *g, unsigned slot, int expired);

/* Give back the slot a job of `slot` held. */
void hashgate_release(struct hashgate *g, unsigned slot);

/* Count a job refused before it was queued (by a local bound). */
void hashgate_count_rejected(struct hashgate *g);

/* Supervisor only, after reaping the process of `slot`: give back every
 * hash slot and queue place it held. */
void hashgate_reclaim(struct hashgate *g, unsigned slot);

/* Current totals (lock-free reads; may lag a concurrent change). */
void hashgate_stats(struct hashgate *g, struct hashgate_stats *out);

#endif
