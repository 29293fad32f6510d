#include "password.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <argon2.h>
#include <sodium.h>

#define PASSWORD_SALT_LEN 16
#define PASSWORD_HASH_LEN 32
#define PASSWORD_B64      sodium_base64_VARIANT_ORIGINAL_NO_PADDING

/* libargon2's memory: mapped per hash like libsodium's, but asking for
 * transparent huge pages: 32 faults of 2 MiB instead of 16,384 of 4 KiB
 * for 64 MiB. munmap returns it all; nothing stays resident between hashes. */
static int password_map(uint8_t **memory, size_t bytes)
{
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        *memory = NULL;
        return ARGON2_MEMORY_ALLOCATION_ERROR;
    }
    (void)madvise(m, bytes, MADV_HUGEPAGE); /* a hint: 4 KiB pages still work */
    *memory = m;
    return ARGON2_OK;
}

static void password_unmap(uint8_t *memory, size_t bytes)
{
    munmap(memory, bytes);
}

/* Argon2id of pw with ph's costs and salt into out[0..outlen). */
static int password_argon2(const struct password_phc *ph, const char *pw, size_t len,
                           unsigned char *out, size_t outlen)
{
    if (len > ARGON2_MAX_PWD_LENGTH)
        return -1;
    argon2_context ctx = {.out = out,
                          .outlen = (uint32_t)outlen,
                          .pwd = (uint8_t *)(uintptr_t)pw, /* read only: no CLEAR_PASSWORD flag */
                          .pwdlen = (uint32_t)len,
                          .salt = (uint8_t *)(uintptr_t)ph->salt,
                          .saltlen = (uint32_t)ph->salt_len,
                          .t_cost = ph->pp.t_cost,
                          .m_cost = ph->pp.m_kib,
                          .lanes = ph->pp.parallelism,
                          .threads = ph->pp.parallelism,
                          .version = ARGON2_VERSION_13,
                          .allocate_cbk = password_map,
                          .free_cbk = password_unmap,
                          .flags = ARGON2_DEFAULT_FLAGS};
    return argon2_ctx(&ctx, Argon2_id) == ARGON2_OK ? 0 : -1;
}

int password_hash(const struct password_params *pp, const char *pw, size_t len,
                  char out[PASSWORD_PHC_MAX])
{
    if (pp->parallelism == 1 && pp->impl == PASSWORD_IMPL_LIBSODIUM) {
        /* libsodium: opslimit is t, memlimit in bytes. */
        return crypto_pwhash_str_alg(out, pw, len, pp->t_cost, (size_t)pp->m_kib * 1024,
                                     crypto_pwhash_ALG_ARGON2ID13) == 0
                   ? 0
                   : -1;
    }
    struct password_phc ph = {
        .pp = *pp, .salt_len = PASSWORD_SALT_LEN, .hash_len = PASSWORD_HASH_LEN};
    randombytes_buf(ph.salt, ph.salt_len);
    int rc = -1;
    if (password_argon2(&ph, pw, len, ph.hash, ph.hash_len) == 0)
        rc = password_phc_encode(&ph, out);
    sodium_memzero(ph.hash, sizeof(ph.hash));
    return rc;
}

/* Read "<key>=<digits>" at *p, advancing past it. */
static int password_field(const char **p, const char *key, unsigned *out)
{
    size_t kl = strlen(key);
    char *end;
    if (strncmp(*p, key, kl) != 0 || (*p)[kl] != '=' || (*p)[kl + 1] < '0' || (*p)[kl + 1] > '9')
        return -1;
    errno = 0;
    unsigned long v = strtoul(*p + kl + 1, &end, 10);
    if (errno != 0 || v > 0xffffffffUL)
        return -1;
    *out = (unsigned)v;
    *p = end;
    return 0;
}

/* The "$argon2id$v=19$m=…,t=…,p=…" head; *rest is left at the '$' after it. */
static int password_head(const char *phc, struct password_params *out, const char **rest)
{
    unsigned v, m, t, p;
    const char *s;
    if (strncmp(phc, "$argon2id$", 10) != 0)
        return -1;
    s = phc + 10; /* only now known to be inside the string */
    if (password_field(&s, "v", &v) != 0 || *s++ != '$' || password_field(&s, "m", &m) != 0 ||
        *s++ != ',' || password_field(&s, "t", &t) != 0 || *s++ != ',' ||
        password_field(&s, "p", &p) != 0 || *s != '$')
        return -1;
    if (v != 19 || t < 1 || m < 8 || p < 1 || p > 255)
        return -1;
    out->m_kib = m;
    out->t_cost = t;
    out->parallelism = p;
    *rest = s;
    return 0;
}

int password_params_of(const char *phc, struct password_params *out)
{
    const char *rest;
    return password_head(phc, out, &rest);
}

/* Unpadded base64 of exactly s[0..n) into out; length in [min, PASSWORD_BIN_MAX]. */
static int password_b64(const char *s, size_t n, size_t min, unsigned char *out, size_t *outlen)
{
    const char *end = NULL;
    if (sodium_base642bin(out, PASSWORD_BIN_MAX, s, n, NULL, outlen, &end, PASSWORD_B64) != 0 ||
        end != s + n || *outlen < min)
        return -1;
    return 0;
}

int password_phc_decode(const char *phc, struct password_phc *out)
{
    const char *s, *dollar;
    memset(out, 0, sizeof(*out));
    if (password_head(phc, &out->pp, &s) != 0)
        return -1;
    s++; /* the '$' after p= */
    dollar = strchr(s, '$');
    if (dollar == NULL || password_b64(s, (size_t)(dollar - s), ARGON2_MIN_SALT_LENGTH, out->salt,
                                       &out->salt_len) != 0)
        goto fail;
    s = dollar + 1;
    if (password_b64(s, strlen(s), ARGON2_MIN_OUTLEN, out->hash, &out->hash_len) != 0)
        goto fail;
    return 0;
fail:
    sodium_memzero(out, sizeof(*out));
    return -1;
}

int password_phc_encode(const struct password_phc *in, char out[PASSWORD_PHC_MAX])
{
    char salt[sodium_base64_ENCODED_LEN(PASSWORD_BIN_MAX, PASSWORD_B64)];
    char hash[sizeof(salt)];
    if (in->salt_len < ARGON2_MIN_SALT_LENGTH || in->salt_len > PASSWORD_BIN_MAX ||
        in->hash_len < ARGON2_MIN_OUTLEN || in->hash_len > PASSWORD_BIN_MAX)
        return -1;
    sodium_bin2base64(salt, sizeof(salt), in->salt, in->salt_len, PASSWORD_B64);
    sodium_bin2base64(hash, sizeof(hash), in->hash, in->hash_len, PASSWORD_B64);
    int n = snprintf(out, PASSWORD_PHC_MAX, "$argon2id$v=19$m=%u,t=%u,p=%u$%s$%s", in->pp.m_kib,
                     in->pp.t_cost, in->pp.parallelism, salt, hash);
    if (n < 0 || n >= PASSWORD_PHC_MAX) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

enum password_verdict password_verify(enum password_impl impl, const char *phc, const char *pw,
                                      size_t len)
{
    struct password_params pp;
    struct password_phc ph;
    if (password_params_of(phc, &pp) != 0)
        return PASSWORD_ERROR;
    if ((impl == PASSWORD_IMPL_LIBARGON2 || pp.parallelism > 1) &&
        password_phc_decode(phc, &ph) == 0) {
        unsigned char got[PASSWORD_BIN_MAX];
        enum password_verdict v = PASSWORD_ERROR;
        if (password_argon2(&ph, pw, len, got, ph.hash_len) == 0)
            v = sodium_memcmp(got, ph.hash, ph.hash_len) == 0 ? PASSWORD_OK : PASSWORD_MISMATCH;
        sodium_memzero(got, sizeof(got));
        sodium_memzero(&ph, sizeof(ph));
        return v;
    }
    /* Not in the canonical form (or libsodium chosen): the libraries' own parsers. */
    if (pp.parallelism == 1 && strlen(phc) < crypto_pwhash_STRBYTES)
        return crypto_pwhash_str_verify(phc, pw, len) == 0 ? PASSWORD_OK : PASSWORD_MISMATCH;
    int rc = argon2id_verify(phc, pw, len);
    if (rc == ARGON2_OK)
        return PASSWORD_OK;
    return rc == ARGON2_VERIFY_MISMATCH ? PASSWORD_MISMATCH : PASSWORD_ERROR;
}

int password_needs_rehash(const char *phc, const struct password_params *pp)
{
    struct password_params have;
    if (password_params_of(phc, &have) != 0)
        return 1;
    return have.t_cost != pp->t_cost || have.m_kib != pp->m_kib ||
           have.parallelism != pp->parallelism;
}

static double password_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One hash with impl at pp's costs: its duration in ms, or -1. */
static double password_time_one(const struct password_params *pp, enum password_impl impl)
{
    static const char pw[] = "calibration";
    char out[PASSWORD_PHC_MAX];
    struct password_params p = *pp;
    p.impl = impl;
    double t0 = password_now_ms();
    return password_hash(&p, pw, sizeof(pw) - 1, out) == 0 ? password_now_ms() - t0 : -1;
}

enum password_impl password_calibrate(const struct password_params *pp, double ms[2])
{
    /* Untimed: a process's first huge-page mapping may wait for the kernel
     * to compact memory (measured 270-400 ms against 130-200 later). */
    (void)password_time_one(pp, PASSWORD_IMPL_LIBARGON2);
    int failed[2] = {0, 0};
    ms[0] = ms[1] = -1;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2; i++) {
            double t = failed[i] ? -1 : password_time_one(pp, (enum password_impl)i);
            if (t < 0) {
                failed[i] = 1;
                ms[i] = -1;
            } else if (ms[i] < 0 || t < ms[i]) {
                ms[i] = t; /* the best of two: noise only ever adds time */
            }
        }
    }
    if (ms[PASSWORD_IMPL_LIBARGON2] >= 0 &&
        (ms[PASSWORD_IMPL_LIBSODIUM] < 0 ||
         ms[PASSWORD_IMPL_LIBARGON2] < 0.9 * ms[PASSWORD_IMPL_LIBSODIUM]))
        return PASSWORD_IMPL_LIBARGON2;
    return PASSWORD_IMPL_LIBSODIUM;
}

const char *password_impl_name(enum password_impl impl)
{
    return impl == PASSWORD_IMPL_LIBARGON2 ? "libargon2" : "libsodium";
}

int password_impl_from_name(const char *name, enum password_impl *out)
{
    for (int i = PASSWORD_IMPL_LIBSODIUM; i <= PASSWORD_IMPL_LIBARGON2; i++) {
        if (strcmp(name, password_impl_name((enum password_impl)i)) == 0) {
            *out = (enum password_impl)i;
            return 0;
        }
    }
    return -1;
}
