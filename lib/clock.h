/* clock: monotonic time helpers. Thread-safe. */
#ifndef ACCESS_CLOCK_H
#define ACCESS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds (fractional). */
double clock_ms(void);
/* Monotonic whole milliseconds. */
int64_t clock_now_ms(void);
/* A CLOCK_MONOTONIC timespec ms milliseconds from now (for timed waits on
 * condition variables created with pthread_condattr_setclock). */
struct timespec clock_deadline(long ms);

/* Deadlines: an absolute time on clock_now_ms()'s scale (monotonic whole
 * milliseconds). CLOCK_NEVER is no deadline at all; every wait on a request
 * path has a real one. */
#define CLOCK_NEVER INT64_MAX
/* The deadline ms milliseconds from now (ms < 0 counts as 0). */
int64_t clock_deadline_in(long ms);
/* Milliseconds left until deadline: 0 once it has passed, capped at
 * 24 days so it fits poll()'s and the callers' ints (CLOCK_NEVER too). */
long clock_remaining_ms(int64_t deadline);
/* The earlier of two deadlines. */
int64_t clock_deadline_min(int64_t a, int64_t b);
/* deadline as a CLOCK_MONOTONIC timespec, for pthread_cond_timedwait on a
 * condition variable created with pthread_condattr_setclock. */
struct timespec clock_deadline_ts(int64_t deadline);

/* Sleep ms milliseconds (less if a signal arrives). */
void clock_sleep_ms(long ms);

/* Next back-off delay after prev ms (0 = none yet): doubled, within
 * [min_ms, max_ms]. */
long clock_backoff_next(long prev, long min_ms, long max_ms);

#endif
