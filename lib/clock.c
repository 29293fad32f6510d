#include "clock.h"

double clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

int64_t clock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec clock_deadline(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int64_t clock_deadline_in(long ms)
{
    return clock_now_ms() + (ms > 0 ? ms : 0);
}

#define CLOCK_REMAINING_MAX (24L * 24 * 3600 * 1000)

long clock_remaining_ms(int64_t deadline)
{
    int64_t now = clock_now_ms();
    if (deadline <= now)
        return 0;
    return deadline - now > CLOCK_REMAINING_MAX ? CLOCK_REMAINING_MAX : (long)(deadline - now);
}

int64_t clock_deadline_min(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

struct timespec clock_deadline_ts(int64_t deadline)
{
    /* Through the remaining time: CLOCK_NEVER must not overflow tv_sec. */
    return clock_deadline(clock_remaining_ms(deadline));
}

void clock_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

long clock_backoff_next(long prev, long min_ms, long max_ms)
{
    long next = prev * 2;
    return next < min_ms ? min_ms : next > max_ms ? max_ms : next;
}
