/* alloc: allocation wrappers that abort on out-of-memory (as Redis' zmalloc).
 *
 * A service that cannot allocate a few bytes cannot answer sensibly; dying
 * loudly lets the supervisor restart the worker. Thread-safe (wraps libc). */
#ifndef ACCESS_ALLOC_H
#define ACCESS_ALLOC_H

#include <stddef.h>

/* Return a block of at least n bytes (n may be 0); never NULL. */
void *xmalloc(size_t n);
/* Like calloc; aborts on overflow of n * size or on out-of-memory. */
void *xcalloc(size_t n, size_t size);
/* Like realloc; never returns NULL. */
void *xrealloc(void *p, size_t n);
/* Copy of the NUL-terminated s; caller frees. */
char *xstrdup(const char *s);
/* Copy of the first n bytes of s, NUL-terminated; caller frees. */
char *xstrndup(const char *s, size_t n);

#endif
