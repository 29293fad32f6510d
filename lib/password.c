#include "password.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <argon2.h>
#include <sodium.h>

#define PASSWORD_SALT_LEN 16
#define PASSWORD_HASH_LEN 32

int password_hash(const struct password_params *pp, const char *pw, size_t len,
                  char out[PASSWORD_PHC_MAX])
{
    if (pp->parallelism == 1) {
        /* libsodium: opslimit is t, memlimit in bytes. */
        return crypto_pwhash_str_alg(out, pw, len, pp->t_cost, (size_t)pp->m_kib * 1024,
                                     crypto_pwhash_ALG_ARGON2ID13) == 0
                   ? 0
                   : -1;
    }
    unsigned char salt[PASSWORD_SALT_LEN];
    randombytes_buf(salt, sizeof(salt));
    int rc = argon2id_hash_encoded(pp->t_cost, pp->m_kib, pp->parallelism, pw, len, salt,
                                   sizeof(salt), PASSWORD_HASH_LEN, out, PASSWORD_PHC_MAX);
    return rc == ARGON2_OK ? 0 : -1;
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

int password_params_of(const char *phc, struct password_params *out)
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
    return 0;
}

enum password_verdict password_verify(const char *phc, const char *pw, size_t len)
{
    struct password_params pp;
    if (password_params_of(phc, &pp) != 0)
        return PASSWORD_ERROR;
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
