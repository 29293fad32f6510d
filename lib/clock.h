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

/* Sleep ms milliseconds (less if a signal arrives). */
void clock_sleep_ms(long ms);

/* Next back-off delay after prev ms (0 = none yet): doubled, within
 * [min_ms, max_ms]. */
long clock_backoff_next(long prev, long min_ms, long max_ms);

#endif
