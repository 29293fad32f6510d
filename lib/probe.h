/* probe: one dependency check (PostgreSQL's SELECT 1, Redis's PING) shared
 * by the concurrent callers of a worker (single-flight).
 *
 * A caller is answered by a check that began after it called, never by an
 * older one: callers arriving while a check runs wait for the next, which
 * one of them runs for all. So a flood of /health costs one round trip per
 * round-trip time, not one per request, and an answer is never staler than
 * the request. A caller whose deadline passes first gets -1 (the check did
 * not answer in its time).
 *
 * Thread-safety: probe_run() may run concurrently; create and free while no
 * other thread uses the probe. */
#ifndef ACCESS_PROBE_H
#define ACCESS_PROBE_H

#include <stdint.h>

/* A check: 0 when the dependency answered by deadline (clock_now_ms()
 * scale), -1 otherwise. */
typedef int (*probe_check)(void *ctx, int64_t deadline);

struct probe;

/* A probe running check(ctx, deadline); ctx is the caller's and must
 * outlive the probe. */
struct probe *probe_create(probe_check check, void *ctx);

/* The result of a check that began after this call, waited for no later
 * than deadline: 0 passed, -1 failed or not answered in time. The check
 * runs on a caller's thread, with that caller's deadline. */
int probe_run(struct probe *p, int64_t deadline) __attribute__((warn_unused_result));

/* Checks run so far (for tests and figures). */
uint64_t probe_checks(struct probe *p);

void probe_free(struct probe *p);

#endif
