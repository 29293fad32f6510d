/* uuid: RFC 9562 UUIDv7 (48-bit Unix milliseconds, 12-bit counter, 62 random
 * bits), monotonic per process: every id is greater than the one before it,
 * also within one millisecond and if the clock steps back. Thread-safe
 * (lock-free compare-and-swap on the process's last timestamp+counter). */
#ifndef ACCESS_UUID_H
#define ACCESS_UUID_H

#include <stddef.h>
#include <stdint.h>

#define UUID_STR_LEN 36 /* without the NUL */

/* Write a new UUIDv7 into out. */
void uuid_v7(uint8_t out[16]);
/* Same with an explicit time in ms (for tests); still monotonic. */
void uuid_v7_at(uint8_t out[16], uint64_t unix_ms);
/* Lower-case 8-4-4-4-12 text plus NUL into out (37 bytes). */
void uuid_format(const uint8_t in[16], char out[UUID_STR_LEN + 1]);
/* Parse the 36-character form (either case); 0 or -1. */
int uuid_parse(const char *s, size_t len, uint8_t out[16]) __attribute__((warn_unused_result));
/* The 48-bit millisecond timestamp of a v7 UUID. */
uint64_t uuid_v7_time(const uint8_t in[16]);

#endif
