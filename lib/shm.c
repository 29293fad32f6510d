#include "shm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "hashgate.h"

void *shm_alloc(size_t n, char *err, size_t errlen)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap of %zu shared bytes failed: %s", n, strerror(errno));
        return NULL;
    }
    return p;
}

struct shm_state *shm_create(unsigned hash_threads, unsigned nslots, char *err, size_t errlen)
{
    void *p = mmap(NULL, sizeof(struct shm_state), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap of the shared segment failed: %s", strerror(errno));
        return NULL;
    }
    struct shm_state *s = p;
    atomic_store(&s->draining, 0);
    atomic_store(&s->worker_restarts, 0);
    atomic_store(&s->started_unix, (uint64_t)time(NULL));
    size_t gn = hashgate_size(nslots);
    void *g = shm_alloc(gn, err, errlen);
    if (g == NULL || (s->hash = hashgate_init(g, gn, hash_threads, nslots, err, errlen)) == NULL) {
        if (g != NULL)
            munmap(g, gn);
        munmap(p, sizeof(struct shm_state));
        return NULL;
    }
    return s;
}
