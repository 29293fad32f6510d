#include "totp.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <liboath/oath.h>
#include <sodium.h>

static pthread_once_t totp_once = PTHREAD_ONCE_INIT;
static int totp_init_rc = -1;

static void totp_init_once(void)
{
    totp_init_rc = oath_init() == OATH_OK ? 0 : -1;
}

int totp_init(void)
{
    pthread_once(&totp_once, totp_init_once);
    return totp_init_rc;
}

int totp_base32(const unsigned char *secret, size_t len, char *out, size_t outlen)
{
    char *b32 = NULL;
    size_t n = 0;
    int rc = -1;
    if (oath_base32_encode((const char *)secret, len, &b32, &n) != OATH_OK)
        goto out;
    /* liboath pads with '='; otpauth URIs carry the secret unpadded. */
    while (n > 0 && b32[n - 1] == '=')
        n--;
    if (n + 1 > outlen)
        goto out;
    memcpy(out, b32, n);
    out[n] = '\0';
    rc = 0;
out:
    if (b32 != NULL) {
        sodium_memzero(b32, strlen(b32));
        free(b32);
    }
    return rc;
}

int totp_generate(const unsigned char *secret, size_t len, time_t now, char out[TOTP_DIGITS + 1])
{
    if (totp_init() != 0)
        return -1;
    return oath_totp_generate((const char *)secret, len, now, TOTP_STEP_S, 0, TOTP_DIGITS, out) ==
                   OATH_OK
               ? 0
               : -1;
}

int totp_verify(const unsigned char *secret, size_t len, time_t now, unsigned window,
                const char *code, size_t codelen, int64_t *step)
{
    char otp[TOTP_DIGITS + 1];
    uint64_t counter = 0;
    int pos = 0;
    if (codelen != TOTP_DIGITS || totp_init() != 0)
        return -1;
    for (size_t i = 0; i < codelen; i++)
        if (code[i] < '0' || code[i] > '9')
            return -1;
    memcpy(otp, code, TOTP_DIGITS);
    otp[TOTP_DIGITS] = '\0';
    int rc = oath_totp_validate4((const char *)secret, len, now, TOTP_STEP_S, 0, window, &pos,
                                 &counter, 0, otp);
    if (rc < 0)
        return -1;
    *step = (int64_t)counter;
    return 0;
}
