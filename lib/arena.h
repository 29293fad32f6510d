/* arena: a per-request memory pool (as h2o's mem pool).
 *
 * Handlers allocate from the request's arena and never free; the worker
 * calls arena_reset() when the request ends, which keeps the first chunk
 * for the next request. Not thread-safe: one request thread owns it. */
#ifndef ACCESS_ARENA_H
#define ACCESS_ARENA_H

#include <stddef.h>

struct arena_chunk;

struct arena {
    struct arena_chunk *head;
    size_t chunk_size;
};

/* Prepare an empty arena whose chunks hold at least chunk_size bytes. */
void arena_init(struct arena *a, size_t chunk_size);
/* n bytes aligned for any type; never NULL; valid until reset/free. */
void *arena_alloc(struct arena *a, size_t n);
/* Copy of n bytes of s plus a NUL. */
char *arena_strndup(struct arena *a, const char *s, size_t n);
/* Copy of the NUL-terminated s. */
char *arena_strdup(struct arena *a, const char *s);
/* Free every chunk but the first and rewind it. */
void arena_reset(struct arena *a);
/* Free everything. */
void arena_free(struct arena *a);

#endif
