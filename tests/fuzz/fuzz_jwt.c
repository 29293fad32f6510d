/* libFuzzer target: access tokens (SPEC §4 "Tokens").
 *
 * The first input byte selects a mode (byte % 4):
 *   0  jwt_verify() of the rest as a token (iss and aud "access").
 *   1  round trip: sign claims taken from the input with jwt_sign(); the
 *      result must verify to the same claims at now = exp and now = exp+60,
 *      and must be refused at now = exp+61.
 *   2  tamper: sign as in 1, then flip bits of one byte or truncate; the
 *      result must be refused.
 *   3  signed garbage: the rest is "header\0payload" (raw JSON text); it is
 *      base64url-encoded and signed with the key, so jwt_verify() gets past
 *      the signature and parses attacker-shaped claims; when it accepts, the
 *      claims it returns must be sane.
 * Claims layout after the mode byte (short inputs read as zero-padded):
 *   [1] flags (bit 0: alg Ed25519 rather than EdDSA; bit 1: truncate in mode 2)
 *   [2..3] tamper position (little endian), [4] tamper xor mask
 *   [5..12] iat, [13..20] exp (little endian int64)
 *   [21..] "sub\0sid\0jti" (each cut at 64 bytes; a missing one is "s"). */
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "b64url.h"
#include "buf.h"
#include "jwt.h"
#include "keys.h"
#include "fuzz_util.h"

/* RFC 8037 Appendix A.1 key; A.3 gives its thumbprint. */
#define RFC8037_D   "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
#define RFC8037_X   "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
#define RFC8037_KID "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
#define HDR_LEN     21

static struct keyset ks;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    unsigned char pk[32];
    char kid[KEYS_KID_LEN + 1], text[512], err[256];
    size_t n;
    FUZZ_REQUIRE(sodium_init() >= 0);
    FUZZ_REQUIRE(b64url_decode(pk, sizeof(pk), RFC8037_X, strlen(RFC8037_X), &n) == 0 && n == 32);
    keys_thumbprint(pk, kid);
    FUZZ_REQUIRE(strcmp(kid, RFC8037_KID) == 0);
    snprintf(text, sizeof(text),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"%s\","
             "\"d\":\"%s\"}]}",
             kid, RFC8037_X, RFC8037_D);
    if (keys_parse(text, strlen(text), &ks, err, sizeof(err)) != 0) {
        fprintf(stderr, "keys_parse: %s\n", err);
        abort();
    }
    FUZZ_REQUIRE(ks.n == 1 && ks.k[0].has_private);
    return 0;
}

static int64_t get_i64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return (int64_t)v;
}

/* Next NUL-separated part of s[*pos..n) into dst (at most 64 bytes). */
static void take_part(const uint8_t *s, size_t n, size_t *pos, char dst[JWT_FIELD_MAX + 1])
{
    size_t i = *pos, k = 0;
    if (i >= n) {
        strcpy(dst, "s");
        return;
    }
    while (i < n && s[i] != 0) {
        if (k < JWT_FIELD_MAX)
            dst[k++] = (char)s[i];
        i++;
    }
    dst[k] = '\0';
    *pos = i < n ? i + 1 : i;
    if (k == 0)
        strcpy(dst, "s");
}

static int claim_ok(const char *s)
{
    return fuzz_utf8_valid((const unsigned char *)s, strlen(s));
}

static int verify(const char *tok, size_t len, int64_t now, struct jwt_claims *out)
{
    char why[128];
    return jwt_verify(&ks, "access", "access", tok, len, now, out, why, sizeof(why));
}

static void round_trip(const uint8_t *data, size_t size, int tamper)
{
    uint8_t h[HDR_LEN] = {0};
    struct jwt_claims c, got;
    struct buf tok = {0};
    size_t pos = HDR_LEN;

    memcpy(h, data, size < HDR_LEN ? size : HDR_LEN);
    memset(&c, 0, sizeof(c));
    c.iat = get_i64(h + 5);
    c.exp = get_i64(h + 13);
    take_part(data, size, &pos, c.sub);
    take_part(data, size, &pos, c.sid);
    take_part(data, size, &pos, c.jti);
    jwt_sign(&ks, (h[1] & 1) ? "Ed25519" : "EdDSA", "access", "access", &c, &tok);
    FUZZ_REQUIRE(tok.len > 0 && strlen(tok.data) == tok.len);

    if (!tamper) {
        /* Claims that are valid UTF-8 must come back exactly. */
        if (claim_ok(c.sub) && claim_ok(c.sid) && claim_ok(c.jti) && tok.len <= JWT_MAX_LEN) {
            FUZZ_REQUIRE(verify(tok.data, tok.len, c.exp, &got) == 0);
            FUZZ_REQUIRE(got.iat == c.iat && got.exp == c.exp);
            FUZZ_REQUIRE(strcmp(got.sub, c.sub) == 0 && strcmp(got.sid, c.sid) == 0 &&
                         strcmp(got.jti, c.jti) == 0);
            if (c.exp <= INT64_MAX - JWT_LEEWAY_S - 1) {
                FUZZ_REQUIRE(verify(tok.data, tok.len, c.exp + JWT_LEEWAY_S, &got) == 0);
                FUZZ_REQUIRE(verify(tok.data, tok.len, c.exp + JWT_LEEWAY_S + 1, &got) != 0);
            }
        } else {
            (void)verify(tok.data, tok.len, c.exp, &got);
        }
    } else {
        size_t at = (size_t)(h[2] | h[3] << 8) % tok.len;
        uint8_t mask = h[4] ? h[4] : 1;
        size_t len = tok.len;
        if (h[1] & 2)
            len = at; /* a strict prefix */
        else
            tok.data[at] = (char)(tok.data[at] ^ mask);
        FUZZ_REQUIRE(verify(tok.data, len, c.exp, &got) != 0);
    }
    buf_free(&tok);
}

static void put_b64(struct buf *b, const void *p, size_t n)
{
    size_t need = b64url_encoded_len(n);
    buf_reserve(b, need + 1);
    FUZZ_REQUIRE(b64url_encode(b->data + b->len, need + 1, p, n) == need);
    b->len += need;
}

static void check_claims(const struct jwt_claims *got, int64_t now)
{
    size_t a = strlen(got->sub), b = strlen(got->sid), c = strlen(got->jti);
    FUZZ_REQUIRE(a >= 1 && a <= JWT_FIELD_MAX && b >= 1 && b <= JWT_FIELD_MAX && c >= 1 &&
                 c <= JWT_FIELD_MAX);
    FUZZ_REQUIRE(got->exp >= now - JWT_LEEWAY_S);
}

static void signed_garbage(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t hlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *pl = nul ? nul + 1 : data + size;
    size_t plen = (size_t)(data + size - pl);
    unsigned char sig[crypto_sign_BYTES];
    struct buf tok = {0};
    struct jwt_claims got;

    put_b64(&tok, data, hlen);
    buf_putc(&tok, '.');
    put_b64(&tok, pl, plen);
    crypto_sign_detached(sig, NULL, (const unsigned char *)tok.data, tok.len, ks.k[ks.active].sk);
    buf_putc(&tok, '.');
    put_b64(&tok, sig, sizeof(sig));
    if (verify(tok.data, tok.len, 1700000000, &got) == 0)
        check_claims(&got, 1700000000);
    else
        FUZZ_REQUIRE(got.sub[0] == '\0' && got.exp == 0); /* nothing half-filled */
    buf_free(&tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jwt_claims got;
    if (size == 0)
        return 0;
    switch (data[0] % 4) {
    case 0:
        if (verify((const char *)data + 1, size - 1, 1700000000, &got) == 0)
            check_claims(&got, 1700000000);
        break;
    case 1:
        round_trip(data, size, 0);
        break;
    case 2:
        round_trip(data, size, 1);
        break;
    default:
        signed_garbage(data + 1, size - 1);
        break;
    }
    return 0;
}
