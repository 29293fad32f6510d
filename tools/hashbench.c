/* hashbench: the Argon2id ceiling for `make bench` (SPEC §7): hashes per
 * second with THREADS threads for libsodium, Debian's libargon2, and
 * libargon2 with memory pre-faulted once per thread and handed over through
 * its allocate/deallocate callbacks.
 *
 * usage: hashbench THREADS SECONDS [t_cost m_kib]
 * prints: libsodium <hashes/s> <ms/hash>\nlibargon2 …\nlibargon2_prefault …\n
 * libargon2_thp …\n (lib/password.c's libargon2 path: fresh memory per hash
 * with MADV_HUGEPAGE, what password_hasher = libargon2 runs) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <argon2.h>
#include <sodium.h>

#include "password.h"

static unsigned hb_t = 3, hb_m = 65536;
static double hb_seconds = 5;

enum hb_lib { HB_SODIUM, HB_ARGON2, HB_ARGON2_PREFAULT, HB_ARGON2_THP };

struct hb_thread {
    enum hb_lib lib;
    long count;
    double ms_total;
    pthread_t tid;
};

static double hb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One pre-faulted region per thread, handed to libargon2 on each call. */
static __thread uint8_t *hb_region;
static __thread size_t hb_region_len;

static int hb_alloc(uint8_t **memory, size_t bytes)
{
    if (hb_region == NULL || hb_region_len < bytes) {
        hb_region = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (hb_region == MAP_FAILED)
            return ARGON2_MEMORY_ALLOCATION_ERROR;
        memset(hb_region, 0, bytes); /* fault every page in once */
        hb_region_len = bytes;
    }
    *memory = hb_region;
    return ARGON2_OK;
}

static void hb_free(uint8_t *memory, size_t bytes)
{
    (void)memory;
    (void)bytes;
}

static int hb_one(enum hb_lib lib)
{
    static const char pw[] = "correct horse battery staple";
    uint8_t salt[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    uint8_t out[32];
    char str[crypto_pwhash_STRBYTES];
    if (lib == HB_SODIUM)
        return crypto_pwhash_str_alg(str, pw, sizeof(pw) - 1, hb_t, (size_t)hb_m * 1024,
                                     crypto_pwhash_ALG_ARGON2ID13);
    if (lib == HB_ARGON2_THP) { /* exactly the service's libargon2 path */
        struct password_params pp = {
            .t_cost = hb_t, .m_kib = hb_m, .parallelism = 1, .impl = PASSWORD_IMPL_LIBARGON2};
        return password_hash(&pp, pw, sizeof(pw) - 1, str);
    }
    argon2_context ctx = {.out = out,
                          .outlen = sizeof(out),
                          .pwd = (uint8_t *)(uintptr_t)pw,
                          .pwdlen = sizeof(pw) - 1,
                          .salt = salt,
                          .saltlen = sizeof(salt),
                          .t_cost = hb_t,
                          .m_cost = hb_m,
                          .lanes = 1,
                          .threads = 1,
                          .version = ARGON2_VERSION_13,
                          .allocate_cbk = lib == HB_ARGON2_PREFAULT ? hb_alloc : NULL,
                          .free_cbk = lib == HB_ARGON2_PREFAULT ? hb_free : NULL,
                          .flags = ARGON2_DEFAULT_FLAGS};
    return argon2_ctx(&ctx, Argon2_id) == ARGON2_OK ? 0 : -1;
}

static void *hb_main(void *arg)
{
    struct hb_thread *t = arg;
    double end = hb_now() + hb_seconds;
    while (hb_now() < end) {
        double t0 = hb_now();
        if (hb_one(t->lib) != 0) {
            fprintf(stderr, "hash failed\n");
            exit(1);
        }
        t->ms_total += (hb_now() - t0) * 1000;
        t->count++;
    }
    return NULL;
}

static void hb_run(enum hb_lib lib, int threads, const char *name)
{
    struct hb_thread *t = calloc((size_t)threads, sizeof(*t));
    double t0 = hb_now();
    for (int i = 0; i < threads; i++) {
        t[i].lib = lib;
        pthread_create(&t[i].tid, NULL, hb_main, &t[i]);
    }
    long n = 0;
    double ms = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i].tid, NULL);
        n += t[i].count;
        ms += t[i].ms_total;
    }
    double wall = hb_now() - t0;
    printf("%s %.2f %.1f\n", name, (double)n / wall, n ? ms / (double)n : 0.0);
    fflush(stdout);
    free(t);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: hashbench THREADS SECONDS [t_cost m_kib]\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    hb_seconds = atof(argv[2]);
    if (argc >= 5) {
        hb_t = (unsigned)atoi(argv[3]);
        hb_m = (unsigned)atoi(argv[4]);
    }
    if (threads < 1 || sodium_init() < 0)
        return 2;
    hb_run(HB_SODIUM, threads, "libsodium");
    hb_run(HB_ARGON2, threads, "libargon2");
    hb_run(HB_ARGON2_PREFAULT, threads, "libargon2_prefault");
    hb_run(HB_ARGON2_THP, threads, "libargon2_thp");
    return 0;
}
