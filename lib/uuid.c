#include "uuid.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

/* The last (ms << 12 | counter) handed out by this process. */
static _Atomic uint64_t uuid_last;

/* Per-thread buffer of OS randomness: one getrandom(2) per 32 UUIDs instead
 * of two per UUID (a request id is minted for every request). A fork
 * empties the forking thread's copy so parent and child never share it. */
#define UUID_POOL 256
static _Thread_local unsigned char uuid_pool[UUID_POOL];
static _Thread_local size_t uuid_pool_left;
static pthread_once_t uuid_once = PTHREAD_ONCE_INIT;

static void uuid_after_fork(void)
{
    sodium_memzero(uuid_pool, sizeof(uuid_pool));
    uuid_pool_left = 0;
}

static void uuid_register_fork(void)
{
    pthread_atfork(NULL, NULL, uuid_after_fork);
}

static void uuid_random(unsigned char *out, size_t n)
{
    pthread_once(&uuid_once, uuid_register_fork);
    if (uuid_pool_left < n) {
        randombytes_buf(uuid_pool, sizeof(uuid_pool));
        uuid_pool_left = sizeof(uuid_pool);
    }
    unsigned char *p = uuid_pool + sizeof(uuid_pool) - uuid_pool_left;
    memcpy(out, p, n);
    sodium_memzero(p, n);
    uuid_pool_left -= n;
}

void uuid_v7_at(uint8_t out[16], uint64_t unix_ms)
{
    uint64_t prev = atomic_load_explicit(&uuid_last, memory_order_relaxed);
    uint64_t next;
    do {
        uint64_t cand = (unix_ms & 0xffffffffffffULL) << 12;
        /* Start each millisecond at a small random counter value. */
        unsigned char r = 0;
        if (cand > prev)
            uuid_random(&r, 1);
        next = cand > prev ? cand | r : prev + 1;
    } while (!atomic_compare_exchange_weak_explicit(&uuid_last, &prev, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    uint64_t ms = next >> 12;
    uint16_t seq = (uint16_t)(next & 0xfff);
    out[0] = (uint8_t)(ms >> 40);
    out[1] = (uint8_t)(ms >> 32);
    out[2] = (uint8_t)(ms >> 24);
    out[3] = (uint8_t)(ms >> 16);
    out[4] = (uint8_t)(ms >> 8);
    out[5] = (uint8_t)ms;
    out[6] = (uint8_t)(0x70 | (seq >> 8));
    out[7] = (uint8_t)seq;
    uuid_random(out + 8, 8);
    out[8] = (uint8_t)(0x80 | (out[8] & 0x3f));
}

void uuid_v7(uint8_t out[16])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uuid_v7_at(out, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

void uuid_format(const uint8_t in[16], char out[UUID_STR_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t j = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[in[i] >> 4];
        out[j++] = hex[in[i] & 15];
    }
    out[j] = '\0';
}

static int uuid_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int uuid_parse(const char *s, size_t len, uint8_t out[16])
{
    if (len != UUID_STR_LEN)
        return -1;
    size_t j = 0;
    for (size_t i = 0; i < 16; i++) {
        if (j == 8 || j == 13 || j == 18 || j == 23) {
            if (s[j] != '-')
                return -1;
            j++;
        }
        int hi = uuid_hexval(s[j]), lo = uuid_hexval(s[j + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
        j += 2;
    }
    return 0;
}

uint64_t uuid_v7_time(const uint8_t in[16])
{
    uint64_t ms = 0;
    for (size_t i = 0; i < 6; i++)
        ms = ms << 8 | in[i];
    return ms;
}
