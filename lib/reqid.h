/* reqid: the X-Request-ID rule of SPEC §4: keep the caller's id when it is
 * 1-64 characters of [A-Za-z0-9._-], otherwise make a new UUIDv7.
 * Thread-safe. */
#ifndef ACCESS_REQID_H
#define ACCESS_REQID_H

#include <stddef.h>

#define REQID_MAX 64

/* 1 when s[0..len) is an acceptable caller-supplied request id. */
int reqid_valid(const char *s, size_t len);
/* Fill out (REQID_MAX + 1 bytes) with caller's id (may be NULL) or a new
 * UUIDv7. Returns 1 when the caller's id was kept, 0 when one was made. */
int reqid_choose(const char *caller, char out[REQID_MAX + 1]);

#endif
