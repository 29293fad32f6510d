/* Unit tests for lib/jwt.c: the RFC 8037 A.4 Ed25519 JWS example byte for
 * byte, sign/verify round trips (EdDSA and RFC 9864's Ed25519), every
 * tampering and claim failure of SPEC §4, and key rotation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "b64url.h"
#include "buf.h"
#include "jwt.h"
#include "keys.h"

/* RFC 8037 appendix A.1 (key) and A.4 (JWS). */
#define RFC_D       "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
#define RFC_X       "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
#define RFC_HEADER  "eyJhbGciOiJFZERTQSJ9"
#define RFC_PAYLOAD "RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
#define RFC_SIG                                                                                    \
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"

#define ISS "access"
#define AUD "access-api"
#define SUB "0190f5c2-7a1b-7cde-8f01-23456789abcd"
#define SID "0190f5c2-7a1b-7cde-8f01-23456789abce"
#define JTI "0190f5c2-7a1b-7cde-8f01-23456789abcf"
#define IAT 1700000000LL
#define EXP (IAT + 3600)

/* A key from a fixed seed: the JWK text parts and the raw halves. */
struct tkey {
    char x[48], d[48], kid[KEYS_KID_LEN + 1];
    unsigned char pk[32], sk[64];
};

static void make_key(unsigned char seed_byte, struct tkey *k)
{
    unsigned char seed[32];
    memset(seed, seed_byte, sizeof(seed));
    crypto_sign_seed_keypair(k->pk, k->sk, seed);
    b64url_encode(k->x, sizeof(k->x), k->pk, 32);
    b64url_encode(k->d, sizeof(k->d), seed, 32);
    keys_thumbprint(k->pk, k->kid);
}

static void parse_set(const char *text, struct keyset *ks)
{
    char err[256] = "";
    if (keys_parse(text, strlen(text), ks, err, sizeof(err)) != 0)
        fail_msg("keys_parse: %s", err);
}

/* One private key. */
static void set_of(const struct tkey *k, struct keyset *ks)
{
    char t[512];
    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"%s\"}]}", k->x,
             k->d);
    parse_set(t, ks);
}

static void b64_append(struct buf *out, const void *p, size_t n)
{
    char tmp[8192];
    size_t m = b64url_encode(tmp, sizeof(tmp), p, n);
    assert_true(m > 0 || n == 0);
    buf_append(out, tmp, m);
}

/* A compact token of arbitrary header and claims JSON, signed with sk (or,
 * if sk is NULL, with an empty signature). */
static void make_token(const char *header, const char *claims, const unsigned char *sk,
                       struct buf *out)
{
    unsigned char sig[64];
    buf_reset(out);
    b64_append(out, header, strlen(header));
    buf_putc(out, '.');
    b64_append(out, claims, strlen(claims));
    if (sk != NULL)
        crypto_sign_detached(sig, NULL, (const unsigned char *)out->data, out->len, sk);
    buf_putc(out, '.');
    if (sk != NULL)
        b64_append(out, sig, sizeof(sig));
}

static void header_of(const char *alg, const char *kid, char *out, size_t n)
{
    if (kid != NULL)
        snprintf(out, n, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
    else
        snprintf(out, n, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
}

static void claims_std(char *out, size_t n, long long exp)
{
    snprintf(out, n,
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID
             "\",\"jti\":\"" JTI "\",\"iat\":%lld,\"exp\":%lld}",
             (long long)IAT, exp);
}

static int verify(const struct keyset *ks, const char *tok, size_t len, int64_t now,
                  struct jwt_claims *c, char *why, size_t whylen)
{
    why[0] = '\0';
    return jwt_verify(ks, ISS, AUD, tok, len, now, c, why, whylen);
}

/* The token must be refused, with why containing frag (if given). */
static void expect_reject_n(const struct keyset *ks, const char *tok, size_t len, int64_t now,
                            const char *frag, const char *what)
{
    struct jwt_claims c;
    char why[128];
    memset(&c, 'Z', sizeof(c));
    if (verify(ks, tok, len, now, &c, why, sizeof(why)) != -1)
        fail_msg("%s: accepted", what);
    if (why[0] == '\0')
        fail_msg("%s: no reason given", what);
    if (frag != NULL && strstr(why, frag) == NULL)
        fail_msg("%s: reason '%s' lacks '%s'", what, why, frag);
    /* Nothing of a refused token is handed out. */
    assert_true(sodium_is_zero((const unsigned char *)&c, sizeof(c)));
}

static void expect_reject(const struct keyset *ks, const char *tok, int64_t now, const char *frag,
                          const char *what)
{
    expect_reject_n(ks, tok, strlen(tok), now, frag, what);
}

static void expect_accept(const struct keyset *ks, const char *tok, int64_t now, const char *what)
{
    struct jwt_claims c;
    char why[128];
    if (verify(ks, tok, strlen(tok), now, &c, why, sizeof(why)) != 0)
        fail_msg("%s: refused: %s", what, why);
    assert_string_equal(c.sub, SUB);
    assert_string_equal(c.sid, SID);
    assert_string_equal(c.jti, JTI);
}

static void std_claims(struct jwt_claims *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->sub, SUB);
    strcpy(c->sid, SID);
    strcpy(c->jti, JTI);
    c->iat = IAT;
    c->exp = EXP;
}

/* ---- RFC 8037 A.4 ------------------------------------------------------- */

static void test_rfc8037_a4(void **state)
{
    (void)state;
    struct keyset ks;
    parse_set("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"d\":\"" RFC_D "\",\"x\":\"" RFC_X
              "\"}]}",
              &ks);
    /* The A.1 key itself, straight from its d. */
    unsigned char seed[32], pk[32], sk[64], sig[64];
    size_t n;
    assert_int_equal(b64url_decode(seed, sizeof(seed), RFC_D, strlen(RFC_D), &n), 0);
    assert_int_equal(n, 32);
    crypto_sign_seed_keypair(pk, sk, seed);
    assert_memory_equal(pk, ks.k[0].pk, 32);

    /* Signing input: base64url(header) "." base64url(payload). */
    struct buf in = {0};
    const char *hdr = "{\"alg\":\"EdDSA\"}", *payload = "Example of Ed25519 signing";
    b64_append(&in, hdr, strlen(hdr));
    assert_string_equal(in.data, RFC_HEADER);
    buf_putc(&in, '.');
    b64_append(&in, payload, strlen(payload));
    assert_string_equal(in.data, RFC_HEADER "." RFC_PAYLOAD);

    crypto_sign_detached(sig, NULL, (const unsigned char *)in.data, in.len, sk);
    buf_putc(&in, '.');
    b64_append(&in, sig, sizeof(sig));
    assert_string_equal(in.data, RFC_HEADER "." RFC_PAYLOAD "." RFC_SIG);
    /* Exact bytes, decoded too. */
    unsigned char want[64];
    assert_int_equal(b64url_decode(want, sizeof(want), RFC_SIG, strlen(RFC_SIG), &n), 0);
    assert_int_equal(n, 64);
    assert_memory_equal(sig, want, 64);
    assert_int_equal(crypto_sign_verify_detached(want,
                                                 (const unsigned char *)RFC_HEADER "." RFC_PAYLOAD,
                                                 strlen(RFC_HEADER "." RFC_PAYLOAD), pk),
                     0);

    /* A valid JWS, but not an access token: no kid, and not even claims. */
    expect_reject(&ks, in.data, IAT, "kid", "RFC 8037 A.4 example");
    /* With the kid put in, the payload still is no claim set. */
    char h2[256];
    header_of("EdDSA", ks.k[0].kid, h2, sizeof(h2));
    make_token(h2, payload, ks.k[0].sk, &in);
    expect_reject(&ks, in.data, IAT, "claims", "RFC payload with a kid");

    buf_free(&in);
    keys_wipe(&ks);
}

/* ---- round trips --------------------------------------------------------- */

static void test_sign_verify(void **state)
{
    (void)state;
    struct tkey a;
    struct keyset ks;
    struct jwt_claims in, out;
    struct buf tok = {0};
    char why[128];
    make_key(7, &a);
    set_of(&a, &ks);
    std_claims(&in);

    jwt_sign(&ks, "EdDSA", ISS, AUD, &in, &tok);
    assert_int_equal(tok.len, strlen(tok.data));
    assert_true(tok.len <= JWT_MAX_LEN);
    memset(&out, 'Z', sizeof(out));
    assert_int_equal(verify(&ks, tok.data, tok.len, IAT + 10, &out, why, sizeof(why)), 0);
    assert_string_equal(out.sub, SUB);
    assert_string_equal(out.sid, SID);
    assert_string_equal(out.jti, JTI);
    assert_int_equal(out.iat, IAT);
    assert_int_equal(out.exp, EXP);
    assert_int_equal(out.amr_otp, 0);
    /* amr (RFC 8176) says whether a second factor was used. */
    {
        struct jwt_claims otp = in, back;
        struct buf t2 = {0};
        otp.amr_otp = 1;
        jwt_sign(&ks, "EdDSA", ISS, AUD, &otp, &t2);
        assert_int_equal(verify(&ks, t2.data, t2.len, IAT + 10, &back, why, sizeof(why)), 0);
        assert_int_equal(back.amr_otp, 1);
        buf_free(&t2);
    }

    /* The header says what SPEC §4 says, the kid being the thumbprint. */
    const char *dot = strchr(tok.data, '.');
    assert_non_null(dot);
    unsigned char hdr[256];
    size_t n;
    assert_int_equal(b64url_decode(hdr, sizeof(hdr) - 1, tok.data, (size_t)(dot - tok.data), &n),
                     0);
    hdr[n] = '\0';
    char want[256];
    header_of("EdDSA", a.kid, want, sizeof(want));
    assert_string_equal((const char *)hdr, want);

    /* A token in a longer buffer: only len bytes count. */
    struct buf longer = {0};
    buf_append(&longer, tok.data, tok.len);
    buf_puts(&longer, ".junk");
    assert_int_equal(verify(&ks, longer.data, tok.len, IAT, &out, why, sizeof(why)), 0);
    buf_free(&longer);

    /* RFC 9864's fully-specified name is accepted as well. */
    buf_reset(&tok);
    jwt_sign(&ks, "Ed25519", ISS, AUD, &in, &tok);
    dot = strchr(tok.data, '.');
    assert_int_equal(b64url_decode(hdr, sizeof(hdr) - 1, tok.data, (size_t)(dot - tok.data), &n),
                     0);
    hdr[n] = '\0';
    header_of("Ed25519", a.kid, want, sizeof(want));
    assert_string_equal((const char *)hdr, want);
    expect_accept(&ks, tok.data, IAT, "alg Ed25519 from jwt_sign");

    /* Same for a hand-made header. */
    char h[256], cl[512];
    header_of("Ed25519", a.kid, h, sizeof(h));
    claims_std(cl, sizeof(cl), EXP);
    make_token(h, cl, a.sk, &tok);
    expect_accept(&ks, tok.data, IAT, "alg Ed25519 hand-made");
    header_of("EdDSA", a.kid, h, sizeof(h));
    make_token(h, cl, a.sk, &tok);
    expect_accept(&ks, tok.data, IAT, "alg EdDSA hand-made");

    /* Claim values with characters JSON must escape survive the trip. */
    strcpy(in.sub, "a\"b\\c/\x01");
    buf_reset(&tok);
    jwt_sign(&ks, "EdDSA", ISS, AUD, &in, &tok);
    assert_int_equal(verify(&ks, tok.data, tok.len, IAT, &out, why, sizeof(why)), 0);
    assert_string_equal(out.sub, "a\"b\\c/\x01");

    buf_free(&tok);
    keys_wipe(&ks);
}

/* ---- algorithm and key confusion --------------------------------------- */

static void test_alg_and_kid(void **state)
{
    (void)state;
    struct tkey a, b;
    struct keyset ks;
    struct buf tok = {0};
    char h[256], cl[512];
    make_key(7, &a);
    make_key(8, &b);
    set_of(&a, &ks);
    claims_std(cl, sizeof(cl), EXP);

    /* alg none, unsigned (empty signature segment). */
    header_of("none", a.kid, h, sizeof(h));
    make_token(h, cl, NULL, &tok);
    assert_int_equal(tok.data[tok.len - 1], '.');
    expect_reject(&ks, tok.data, IAT, "alg", "alg none");
    /* ... also with a kid-less header and as "None". */
    header_of("none", NULL, h, sizeof(h));
    make_token(h, cl, NULL, &tok);
    expect_reject(&ks, tok.data, IAT, "alg", "alg none without kid");
    header_of("None", a.kid, h, sizeof(h));
    make_token(h, cl, NULL, &tok);
    expect_reject(&ks, tok.data, IAT, "alg", "alg None");
    /* alg none carrying a real Ed25519 signature. */
    header_of("none", a.kid, h, sizeof(h));
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "alg", "alg none, signed");

    /* HS256 with a valid HMAC keyed with the public key (the classic
     * confusion attack) and with the raw x text. */
    header_of("HS256", a.kid, h, sizeof(h));
    make_token(h, cl, NULL, &tok);
    tok.len--; /* drop the trailing '.', re-add after the MAC */
    tok.data[tok.len] = '\0';
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, a.pk, sizeof(a.pk));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tok.data, tok.len);
    crypto_auth_hmacsha256_final(&st, mac);
    struct buf hs = {0};
    buf_append(&hs, tok.data, tok.len);
    buf_putc(&hs, '.');
    b64_append(&hs, mac, sizeof(mac));
    expect_reject(&ks, hs.data, IAT, "alg", "alg HS256 keyed with pk");
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)a.x, strlen(a.x));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tok.data, tok.len);
    crypto_auth_hmacsha256_final(&st, mac);
    buf_reset(&hs);
    buf_append(&hs, tok.data, tok.len);
    buf_putc(&hs, '.');
    b64_append(&hs, mac, sizeof(mac));
    expect_reject(&ks, hs.data, IAT, "alg", "alg HS256 keyed with x");
    buf_free(&hs);

    /* Other asymmetric algs and odd alg values. */
    const char *algs[] = {"ES256", "RS256", "PS256", "EdDSA ", "eddsa", "ED25519", "", "Ed448"};
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        header_of(algs[i], a.kid, h, sizeof(h));
        make_token(h, cl, a.sk, &tok);
        expect_reject(&ks, tok.data, IAT, "alg", algs[i]);
    }
    /* alg not a string, or missing. */
    snprintf(h, sizeof(h), "{\"alg\":1,\"kid\":\"%s\"}", a.kid);
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "alg", "alg a number");
    snprintf(h, sizeof(h), "{\"typ\":\"JWT\",\"kid\":\"%s\"}", a.kid);
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "alg", "alg missing");

    /* Unknown kid (another key's thumbprint, signed by that key). */
    header_of("EdDSA", b.kid, h, sizeof(h));
    make_token(h, cl, b.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "kid", "unknown kid");
    /* A known kid over another key's signature. */
    header_of("EdDSA", a.kid, h, sizeof(h));
    make_token(h, cl, b.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "signature", "known kid, other key");
    /* kid missing, or not a string, or a prefix of the real one. */
    header_of("EdDSA", NULL, h, sizeof(h));
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "kid", "kid missing");
    snprintf(h, sizeof(h), "{\"alg\":\"EdDSA\",\"kid\":7}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "kid", "kid a number");
    char shortkid[KEYS_KID_LEN];
    memcpy(shortkid, a.kid, KEYS_KID_LEN - 1);
    shortkid[KEYS_KID_LEN - 1] = '\0';
    header_of("EdDSA", shortkid, h, sizeof(h));
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "kid", "kid truncated");

    buf_free(&tok);
    keys_wipe(&ks);
}

/* ---- tampering and malformed tokens ------------------------------------ */

static void test_tampering(void **state)
{
    (void)state;
    struct tkey a;
    struct keyset ks;
    struct jwt_claims in;
    struct buf tok = {0}, t = {0};
    make_key(9, &a);
    set_of(&a, &ks);
    std_claims(&in);
    jwt_sign(&ks, "EdDSA", ISS, AUD, &in, &tok);
    expect_accept(&ks, tok.data, IAT, "untouched");
    const char *d1 = strchr(tok.data, '.'), *d2 = strrchr(tok.data, '.');
    assert_true(d1 != d2);
    size_t hlen = (size_t)(d1 - tok.data), plen = (size_t)(d2 - d1 - 1);
    size_t slen = tok.len - (size_t)(d2 + 1 - tok.data);
    assert_int_equal(slen, 86);

    /* Altered payload: one claim changed, re-encoded, old signature kept. */
    unsigned char payload[1024];
    size_t n;
    assert_int_equal(b64url_decode(payload, sizeof(payload) - 1, d1 + 1, plen, &n), 0);
    payload[n] = '\0';
    char *p = strstr((char *)payload, SUB);
    assert_non_null(p);
    p[strlen(SUB) - 1] = 'e'; /* ...abcd -> ...abce */
    buf_append(&t, tok.data, hlen + 1);
    b64_append(&t, payload, n);
    buf_append(&t, d2, slen + 1);
    assert_int_equal(t.len, tok.len);
    expect_reject(&ks, t.data, IAT, "signature", "payload claim changed");
    /* exp pushed later the same way. */
    buf_reset(&t);
    assert_int_equal(b64url_decode(payload, sizeof(payload) - 1, d1 + 1, plen, &n), 0);
    payload[n] = '\0';
    p = strstr((char *)payload, "\"exp\":");
    assert_non_null(p);
    p[6] = '9';
    buf_append(&t, tok.data, hlen + 1);
    b64_append(&t, payload, n);
    buf_append(&t, d2, slen + 1);
    expect_reject(&ks, t.data, IAT, "signature", "exp changed");
    /* Header changed to the other accepted alg, old signature. */
    char h[256];
    header_of("Ed25519", a.kid, h, sizeof(h));
    buf_reset(&t);
    b64_append(&t, h, strlen(h));
    buf_append(&t, d1, tok.len - hlen);
    expect_reject(&ks, t.data, IAT, "signature", "header alg swapped");

    /* Each signature character altered in turn, keeping the encoding valid
     * (the last one carries 2 unused bits: flip its top bits only). */
    for (size_t i = 0; i < slen; i++) {
        buf_reset(&t);
        buf_append(&t, tok.data, tok.len);
        char *c = t.data + (d2 + 1 - tok.data) + i;
        if (i + 1 < slen)
            *c = *c == 'A' ? 'B' : 'A';
        else
            *c = *c == 'A' ? 'Q' : 'A';
        char what[64];
        snprintf(what, sizeof(what), "signature char %zu altered", i);
        expect_reject(&ks, t.data, IAT, NULL, what);
    }
    /* A signature byte flipped at the byte level. */
    unsigned char sig[64];
    assert_int_equal(b64url_decode(sig, sizeof(sig), d2 + 1, slen, &n), 0);
    for (size_t i = 0; i < 64; i += 9) {
        sig[i] ^= 0x01;
        buf_reset(&t);
        buf_append(&t, tok.data, (size_t)(d2 + 1 - tok.data));
        b64_append(&t, sig, 64);
        expect_reject(&ks, t.data, IAT, "signature", "signature bit flipped");
        sig[i] ^= 0x01;
    }
    /* Signature of 63 bytes, of 65 bytes, empty. */
    buf_reset(&t);
    buf_append(&t, tok.data, (size_t)(d2 + 1 - tok.data));
    b64_append(&t, sig, 63);
    expect_reject(&ks, t.data, IAT, "signature", "63-byte signature");
    buf_reset(&t);
    buf_append(&t, tok.data, (size_t)(d2 + 1 - tok.data));
    unsigned char sig65[65];
    memcpy(sig65, sig, 64);
    sig65[64] = 0;
    b64_append(&t, sig65, 65);
    expect_reject(&ks, t.data, IAT, "signature", "65-byte signature");
    expect_reject_n(&ks, tok.data, (size_t)(d2 + 1 - tok.data), IAT, "signature",
                    "empty signature");

    /* Truncated: every shorter prefix is refused. */
    for (size_t len = 0; len < tok.len; len++)
        expect_reject_n(&ks, tok.data, len, IAT, NULL, "truncated");

    /* Bad base64url: '=' padding, '+', '/', whitespace, in each segment. */
    const char bad[] = {'=', '+', '/', ' ', '\n', '\0'};
    for (size_t seg = 0; seg < 3; seg++) {
        for (size_t b = 0; b < sizeof(bad); b++) {
            const char *segstart = seg == 0 ? tok.data : seg == 1 ? d1 + 1 : d2 + 1;
            size_t seglen = seg == 0 ? hlen : seg == 1 ? plen : slen;
            size_t off = (size_t)(segstart - tok.data);
            char what[64];
            snprintf(what, sizeof(what), "segment %zu with 0x%02x", seg, (unsigned char)bad[b]);
            /* Replacing a character in the middle. */
            buf_reset(&t);
            buf_append(&t, tok.data, tok.len);
            t.data[off + seglen / 2] = bad[b];
            expect_reject_n(&ks, t.data, t.len, IAT, NULL, what);
            /* Appended at the end of the segment (padding style). */
            buf_reset(&t);
            buf_append(&t, tok.data, off + seglen);
            buf_putc(&t, bad[b]);
            if (bad[b] == '=')
                buf_putc(&t, '=');
            buf_append(&t, tok.data + off + seglen, tok.len - off - seglen);
            expect_reject_n(&ks, t.data, t.len, IAT, NULL, what);
        }
    }
    /* The 64-byte signature in standard base64 with padding. */
    {
        char std[100];
        size_t m = b64url_encode(std, sizeof(std), sig, 64);
        for (size_t i = 0; i < m; i++)
            if (std[i] == '-' || std[i] == '_')
                std[i] = std[i] == '-' ? '+' : '/';
        buf_reset(&t);
        buf_append(&t, tok.data, (size_t)(d2 + 1 - tok.data));
        buf_puts(&t, std);
        buf_puts(&t, "==");
        expect_reject(&ks, t.data, IAT, "signature encoding", "standard base64 signature");
    }

    /* Wrong segment counts: 1, 2 and 4 (and 5), and empty segments. */
    expect_reject_n(&ks, tok.data, hlen, IAT, "segments", "one segment");
    expect_reject_n(&ks, tok.data, (size_t)(d2 - tok.data), IAT, "segments", "two segments");
    buf_reset(&t);
    buf_append(&t, tok.data, tok.len);
    buf_puts(&t, ".");
    expect_reject(&ks, t.data, IAT, "segments", "four segments (empty last)");
    buf_puts(&t, "eyJ9");
    expect_reject(&ks, t.data, IAT, "segments", "four segments");
    buf_reset(&t);
    buf_append(&t, tok.data, (size_t)(d2 - tok.data));
    buf_append(&t, d1, tok.len - hlen);
    expect_reject(&ks, t.data, IAT, "segments", "payload doubled: four segments");
    buf_puts(&t, ".x");
    expect_reject(&ks, t.data, IAT, "segments", "five segments");
    expect_reject(&ks, "..", IAT, NULL, "two dots");
    expect_reject(&ks, "...", IAT, "segments", "three dots");
    expect_reject(&ks, ".", IAT, "segments", "a dot");
    /* Header or payload not a JSON object. */
    make_token("[1]", "{}", a.sk, &t);
    expect_reject(&ks, t.data, IAT, "header", "header an array");
    make_token("{\"alg\":\"EdDSA\"", "{}", a.sk, &t);
    expect_reject(&ks, t.data, IAT, "header", "header truncated JSON");
    header_of("EdDSA", a.kid, h, sizeof(h));
    make_token(h, "[\"sub\"]", a.sk, &t);
    expect_reject(&ks, t.data, IAT, "claims", "claims an array");
    make_token(h, "", a.sk, &t);
    expect_reject(&ks, t.data, IAT, "claims", "claims empty");

    /* Huge: JWT_MAX_LEN + 1 bytes refused up front, even if well formed. */
    buf_reset(&t);
    buf_append(&t, tok.data, tok.len);
    while (t.len <= JWT_MAX_LEN)
        buf_putc(&t, 'A');
    expect_reject_n(&ks, t.data, JWT_MAX_LEN + 1, IAT, "length", "JWT_MAX_LEN + 1");
    expect_reject_n(&ks, t.data, t.len, IAT, "length", "huge");
    /* A well-formed signed token of over JWT_MAX_LEN (big claims). */
    {
        struct buf big = {0}, cl = {0};
        buf_puts(&cl, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID
                      "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":1700003600,\"x\":\"");
        for (int i = 0; i < JWT_MAX_LEN; i++)
            buf_putc(&cl, 'x');
        buf_puts(&cl, "\"}");
        make_token(h, cl.data, a.sk, &big);
        assert_true(big.len > JWT_MAX_LEN);
        expect_reject(&ks, big.data, IAT, "length", "big signed token");
        buf_free(&big);
        buf_free(&cl);
    }
    /* Just under the limit with padding claims is still parsed and accepted. */
    {
        struct buf big = {0}, cl = {0};
        size_t fill = 0;
        for (;;) {
            buf_reset(&cl);
            buf_puts(&cl,
                     "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID
                     "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":1700003600,\"x\":\"");
            for (size_t i = 0; i < fill; i++)
                buf_putc(&cl, 'x');
            buf_puts(&cl, "\"}");
            make_token(h, cl.data, a.sk, &big);
            if (big.len > JWT_MAX_LEN - 4)
                break;
            size_t step = (JWT_MAX_LEN - 4 - big.len) * 3 / 4;
            fill += step ? step : 1;
        }
        assert_true(big.len <= JWT_MAX_LEN);
        expect_accept(&ks, big.data, IAT, "token near JWT_MAX_LEN");
        buf_free(&big);
        buf_free(&cl);
    }

    buf_free(&t);
    buf_free(&tok);
    keys_wipe(&ks);
}

/* ---- claims ------------------------------------------------------------ */

static void test_claims(void **state)
{
    (void)state;
    struct tkey a;
    struct keyset ks;
    struct jwt_claims in;
    struct buf tok = {0};
    char h[256], cl[1024];
    make_key(10, &a);
    set_of(&a, &ks);
    std_claims(&in);
    header_of("EdDSA", a.kid, h, sizeof(h));

    /* Expiry: 60 s leeway, not one second more. */
    jwt_sign(&ks, "EdDSA", ISS, AUD, &in, &tok);
    expect_accept(&ks, tok.data, EXP - 1, "before exp");
    expect_accept(&ks, tok.data, EXP, "at exp");
    expect_accept(&ks, tok.data, EXP + 59, "exp + 59");
    expect_accept(&ks, tok.data, EXP + JWT_LEEWAY_S, "exp + 60");
    expect_reject(&ks, tok.data, EXP + 61, "expired", "exp + 61");
    expect_reject(&ks, tok.data, EXP + 100000, "expired", "long expired");
    /* exp at the top of the range neither overflows nor expires. */
    claims_std(cl, sizeof(cl), INT64_MAX);
    make_token(h, cl, a.sk, &tok);
    expect_accept(&ks, tok.data, EXP, "exp INT64_MAX");
    /* exp missing, a string, a float; iat missing. */
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID
             "\",\"jti\":\"" JTI "\",\"iat\":1700000000}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "exp", "exp missing");
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID
             "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":\"1700003600\"}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "exp", "exp a string");
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID
             "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":1700003600.5}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "exp", "exp a float");
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID
             "\",\"jti\":\"" JTI "\",\"exp\":1700003600}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "iat", "iat missing");

    /* Wrong iss, wrong aud (jwt_sign with other values). */
    buf_reset(&tok);
    jwt_sign(&ks, "EdDSA", "someone-else", AUD, &in, &tok);
    expect_reject(&ks, tok.data, IAT, "iss", "wrong iss");
    buf_reset(&tok);
    jwt_sign(&ks, "EdDSA", ISS, "other-api", &in, &tok);
    expect_reject(&ks, tok.data, IAT, "aud", "wrong aud");
    buf_reset(&tok);
    jwt_sign(&ks, "EdDSA", ISS, AUD "x", &in, &tok);
    expect_reject(&ks, tok.data, IAT, "aud", "aud with a suffix");
    /* iss and aud missing or of another type. */
    snprintf(cl, sizeof(cl),
             "{\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID "\",\"jti\":\"" JTI
             "\",\"iat\":1700000000,\"exp\":1700003600}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "iss", "iss missing");
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"sub\":\"" SUB "\",\"sid\":\"" SID "\",\"jti\":\"" JTI
             "\",\"iat\":1700000000,\"exp\":1700003600}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "aud", "aud missing");
    snprintf(cl, sizeof(cl),
             "{\"iss\":[\"" ISS "\"],\"aud\":\"" AUD "\",\"sub\":\"" SUB "\",\"sid\":\"" SID
             "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":1700003600}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "iss", "iss an array");

    /* aud as an array (RFC 7519 §4.1.3). */
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":[\"other\",\"" AUD "\"],\"sub\":\"" SUB
             "\",\"sid\":\"" SID "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":1700003600}");
    make_token(h, cl, a.sk, &tok);
    expect_accept(&ks, tok.data, IAT, "aud array containing the audience");
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":[\"" AUD "\"],\"sub\":\"" SUB "\",\"sid\":\"" SID
             "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":1700003600}");
    make_token(h, cl, a.sk, &tok);
    expect_accept(&ks, tok.data, IAT, "aud array of one");
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":[\"other\",1,null,[\"" AUD "\"]],\"sub\":\"" SUB
             "\",\"sid\":\"" SID "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":1700003600}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "aud", "aud array without the audience");
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":[],\"sub\":\"" SUB "\",\"sid\":\"" SID
             "\",\"jti\":\"" JTI "\",\"iat\":1700000000,\"exp\":1700003600}");
    make_token(h, cl, a.sk, &tok);
    expect_reject(&ks, tok.data, IAT, "aud", "aud empty array");

    /* sub, sid, jti: each missing, empty, not a string, too long. */
    const char *names[] = {"sub", "sid", "jti"};
    for (size_t i = 0; i < 3; i++) {
        const char *vals[] = {NULL, "\"\"", "42", "null", NULL};
        char longv[JWT_FIELD_MAX + 8];
        longv[0] = '"';
        memset(longv + 1, 'a', JWT_FIELD_MAX + 1);
        longv[JWT_FIELD_MAX + 2] = '"';
        longv[JWT_FIELD_MAX + 3] = '\0';
        vals[4] = longv;
        for (size_t v = 0; v < 5; v++) {
            struct buf c = {0};
            buf_puts(&c, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\"");
            const char *std[] = {"\"" SUB "\"", "\"" SID "\"", "\"" JTI "\""};
            for (size_t k = 0; k < 3; k++) {
                if (k != i)
                    buf_printf(&c, ",\"%s\":%s", names[k], std[k]);
                else if (vals[v] != NULL)
                    buf_printf(&c, ",\"%s\":%s", names[k], vals[v]);
            }
            buf_puts(&c, ",\"iat\":1700000000,\"exp\":1700003600}");
            make_token(h, c.data, a.sk, &tok);
            char what[64];
            snprintf(what, sizeof(what), "%s variant %zu", names[i], v);
            expect_reject(&ks, tok.data, IAT, names[i], what);
            buf_free(&c);
        }
        /* Exactly JWT_FIELD_MAX characters fit. */
        struct buf c = {0};
        char maxv[JWT_FIELD_MAX + 1];
        memset(maxv, 'b', JWT_FIELD_MAX);
        maxv[JWT_FIELD_MAX] = '\0';
        buf_printf(&c,
                   "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"%s\",\"sid\":\"%s\","
                   "\"jti\":\"%s\",\"iat\":1700000000,\"exp\":1700003600}",
                   i == 0 ? maxv : SUB, i == 1 ? maxv : SID, i == 2 ? maxv : JTI);
        make_token(h, c.data, a.sk, &tok);
        struct jwt_claims out;
        char why[128];
        if (verify(&ks, tok.data, tok.len, IAT, &out, why, sizeof(why)) != 0)
            fail_msg("%s of %d chars refused: %s", names[i], JWT_FIELD_MAX, why);
        assert_string_equal(i == 0 ? out.sub : i == 1 ? out.sid : out.jti, maxv);
        buf_free(&c);
    }
    buf_free(&tok);
    keys_wipe(&ks);
}

/* ---- rotation ---------------------------------------------------------- */

static void test_rotation(void **state)
{
    (void)state;
    struct tkey a, b, c;
    struct keyset before, after, other;
    struct jwt_claims in;
    struct buf old = {0}, fresh = {0};
    char t[1024];
    make_key(21, &a);
    make_key(22, &b);
    make_key(23, &c);
    std_claims(&in);

    /* Before rotation: only a. */
    set_of(&a, &before);
    jwt_sign(&before, "EdDSA", ISS, AUD, &in, &old);
    expect_accept(&before, old.data, IAT, "old token, old set");

    /* After rotation: a keeps only its public half, b signs. */
    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"%s\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"%s\",\"d\":\"%s\"}]}",
             a.kid, a.x, b.kid, b.x, b.d);
    parse_set(t, &after);
    assert_int_equal(after.n, 2);
    assert_int_equal(after.active, 1);
    expect_accept(&after, old.data, IAT, "old token after rotation");

    jwt_sign(&after, "EdDSA", ISS, AUD, &in, &fresh);
    assert_non_null(strstr(fresh.data, ".")); /* well formed */
    expect_accept(&after, fresh.data, IAT, "new token after rotation");
    /* The new token names b's kid: the pre-rotation set does not know it. */
    expect_reject(&before, fresh.data, IAT, "kid", "new token, old set");
    /* Tokens of a set that dropped a are refused. */
    set_of(&c, &other);
    expect_reject(&other, old.data, IAT, "kid", "old token, unrelated set");
    /* Swapping kids between the two keys breaks the signature. */
    char h[256], cl[512];
    header_of("EdDSA", b.kid, h, sizeof(h));
    claims_std(cl, sizeof(cl), EXP);
    struct buf swapped = {0};
    make_token(h, cl, a.sk, &swapped);
    expect_reject(&after, swapped.data, IAT, "signature", "b's kid, a's signature");

    buf_free(&swapped);
    buf_free(&old);
    buf_free(&fresh);
    keys_wipe(&before);
    keys_wipe(&after);
    keys_wipe(&other);
}

/* Client tokens (SPEC §11): their own claims, and neither verifier accepts
 * the other kind. */
static void test_client_tokens(void **state)
{
    (void)state;
    struct tkey a;
    struct keyset ks;
    struct jwt_client_claims in = {.iat = IAT, .exp = EXP}, out;
    struct jwt_claims uc;
    struct buf tok = {0}, utok = {0};
    char why[128];
    make_key(9, &a);
    set_of(&a, &ks);
    snprintf(in.client_id, sizeof(in.client_id), "%s", SUB);
    snprintf(in.scope, sizeof(in.scope), "api admin");
    snprintf(in.jti, sizeof(in.jti), "%s", JTI);
    jwt_sign_client(&ks, "EdDSA", ISS, AUD, &in, &tok);
    assert_int_equal(jwt_verify_client(&ks, ISS, AUD, tok.data, tok.len, IAT + 1, &out, why,
                                       sizeof(why)),
                     0);
    assert_string_equal(out.client_id, SUB);
    assert_string_equal(out.scope, "api admin");
    assert_string_equal(out.jti, JTI);
    assert_int_equal(out.exp, EXP);
    /* The claims are what §11 lists: sub = client_id, no sid. */
    const char *d1 = strchr(tok.data, '.'), *d2 = strchr(d1 + 1, '.');
    unsigned char raw[1024];
    size_t n;
    assert_int_equal(b64url_decode(raw, sizeof(raw) - 1, d1 + 1, (size_t)(d2 - d1 - 1), &n), 0);
    raw[n] = '\0';
    assert_non_null(strstr((char *)raw, "\"sub\":\"" SUB "\",\"client_id\":\"" SUB "\""));
    assert_null(strstr((char *)raw, "\"sid\""));
    /* User routes' verifier refuses it; the client verifier refuses user tokens. */
    assert_int_equal(verify(&ks, tok.data, tok.len, IAT + 1, &uc, why, sizeof(why)), -1);
    std_claims(&uc);
    jwt_sign(&ks, "EdDSA", ISS, AUD, &uc, &utok);
    assert_int_equal(jwt_verify_client(&ks, ISS, AUD, utok.data, utok.len, IAT + 1, &out, why,
                                       sizeof(why)),
                     -1);
    /* Expired, wrong audience. */
    assert_int_equal(jwt_verify_client(&ks, ISS, AUD, tok.data, tok.len, EXP + JWT_LEEWAY_S + 1,
                                       &out, why, sizeof(why)),
                     -1);
    assert_int_equal(jwt_verify_client(&ks, ISS, "other", tok.data, tok.len, IAT + 1, &out, why,
                                       sizeof(why)),
                     -1);
    buf_free(&tok);
    buf_free(&utok);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc8037_a4),  cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_alg_and_kid), cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_claims),      cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_client_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
