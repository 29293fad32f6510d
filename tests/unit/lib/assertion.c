/* Unit tests for lib/assertion.c: parsing (alg none/HS256 refused, aud
 * forms), every check of SPEC §11, and the jti guard: once, per client,
 * until expiry, a bounded table, and a race of many threads presenting the
 * same jti (exactly one wins, every round). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "assertion.h"
#include "b64url.h"
#include "buf.h"

#define CID  "0190f5c2-7a1b-7cde-8f01-23456789abcd"
#define AUD1 "http://127.0.0.1:8080"
#define NOW  1700000000LL

static unsigned char pk[32], sk[64], pk2[32], sk2[64];
static struct clients_record client;
static const char *const auds[] = {AUD1, "access", AUD1 "/oauth/token"};

static void b64(struct buf *out, const char *s, size_t n)
{
    char tmp[2048];
    b64url_encode(tmp, sizeof(tmp), (const unsigned char *)s, n);
    buf_puts(out, tmp);
}

/* header.claims.signature by key (sk NULL: an empty signature). */
static void make(struct buf *out, const char *header, const char *claims, const unsigned char *k)
{
    unsigned char sig[64];
    char s[100];
    buf_reset(out);
    b64(out, header, strlen(header));
    buf_putc(out, '.');
    b64(out, claims, strlen(claims));
    if (k != NULL)
        crypto_sign_detached(sig, NULL, (const unsigned char *)out->data, out->len, k);
    else
        memset(sig, 0, sizeof(sig));
    b64url_encode(s, sizeof(s), sig, 64);
    buf_putc(out, '.');
    buf_puts(out, s);
}

static int run(const char *header, const char *claims, const unsigned char *k, char *why,
               size_t whylen)
{
    struct buf t = {0};
    struct assertion as;
    make(&t, header, claims, k);
    int rc = assertion_parse(t.data, t.len, &as, why, whylen);
    if (rc == 0)
        rc = assertion_check(&as, t.data, &client, auds, 3, NOW, why, whylen);
    buf_free(&t);
    return rc;
}

static char hdr[200];

static int setup(void **state)
{
    (void)state;
    unsigned char seed[32];
    memset(seed, 1, 32);
    crypto_sign_seed_keypair(pk, sk, seed);
    memset(seed, 2, 32);
    crypto_sign_seed_keypair(pk2, sk2, seed);
    memset(&client, 0, sizeof(client));
    snprintf(client.id, sizeof(client.id), CID);
    client.nkeys = 1;
    memcpy(client.keys[0].pk, pk, 32);
    keys_thumbprint(pk, client.keys[0].kid);
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"EdDSA\",\"kid\":\"%s\"}", client.keys[0].kid);
    return 0;
}

static void claims(char *out, size_t n, const char *iss, const char *sub, const char *aud,
                   long long exp)
{
    snprintf(out, n, "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":%s,\"jti\":\"j1\",\"exp\":%lld}", iss,
             sub, aud, exp);
}

static void test_accepts(void **state)
{
    (void)state;
    char c[512], why[128];
    claims(c, sizeof(c), CID, CID, "\"" AUD1 "\"", NOW + 60);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), 0);
    claims(c, sizeof(c), CID, CID, "[\"x\",\"access\"]", NOW + 300);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), 0);
    claims(c, sizeof(c), CID, CID, "\"" AUD1 "/oauth/token\"", NOW);
    /* Ed25519 (RFC 9864) and no kid: any live key is tried. */
    assert_int_equal(run("{\"alg\":\"Ed25519\"}", c, sk, why, sizeof(why)), 0);
}

static void test_refusals(void **state)
{
    (void)state;
    char c[512], why[128], h[200];
    claims(c, sizeof(c), CID, CID, "\"" AUD1 "\"", NOW + 60);
    /* alg none, HS256, missing alg. */
    assert_int_equal(run("{\"alg\":\"none\"}", c, NULL, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "alg"));
    assert_int_equal(run("{\"alg\":\"HS256\"}", c, sk, why, sizeof(why)), -1);
    assert_int_equal(run("{\"kid\":\"x\"}", c, sk, why, sizeof(why)), -1);
    /* Another key, with and without this client's kid. */
    assert_int_equal(run(hdr, c, sk2, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "signature"));
    char kid2[KEYS_KID_LEN + 1];
    keys_thumbprint(pk2, kid2);
    snprintf(h, sizeof(h), "{\"alg\":\"EdDSA\",\"kid\":\"%s\"}", kid2);
    assert_int_equal(run(h, c, sk2, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "kid"));
    /* iss != sub, sub another client, wrong aud, expired, too far ahead,
     * not yet valid. */
    claims(c, sizeof(c), "other", CID, "\"" AUD1 "\"", NOW + 60);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), -1);
    claims(c, sizeof(c), "0190f5c2-7a1b-7cde-8f01-23456789abce",
           "0190f5c2-7a1b-7cde-8f01-23456789abce", "\"" AUD1 "\"", NOW + 60);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), -1);
    claims(c, sizeof(c), CID, CID, "\"https://evil.example\"", NOW + 60);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), -1);
    claims(c, sizeof(c), CID, CID, "[\"a\",\"b\",\"c\",\"d\",\"access\"]", NOW + 60);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), -1);
    claims(c, sizeof(c), CID, CID, "\"" AUD1 "\"", NOW - ASSERTION_LEEWAY_S - 1);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "expired"));
    claims(c, sizeof(c), CID, CID, "\"" AUD1 "\"", NOW + ASSERTION_MAX_LIFETIME_S + 1);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), -1);
    snprintf(c, sizeof(c),
             "{\"iss\":\"" CID "\",\"sub\":\"" CID "\",\"aud\":\"access\",\"jti\":\"j\","
             "\"exp\":%lld,\"nbf\":%lld}",
             NOW + 60, NOW + 120);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), -1);
    /* Missing or mistyped claims. */
    static const char *const bad[] = {
        "{\"iss\":\"" CID "\",\"sub\":\"" CID "\",\"aud\":\"access\",\"exp\":1700000060}",
        "{\"iss\":\"" CID "\",\"sub\":\"" CID "\",\"aud\":\"access\",\"jti\":\"j\"}",
        "{\"iss\":\"" CID "\",\"sub\":\"" CID "\",\"jti\":\"j\",\"exp\":1700000060}",
        "{\"iss\":\"" CID "\",\"sub\":\"" CID "\",\"aud\":7,\"jti\":\"j\",\"exp\":1700000060}",
        "{\"iss\":\"" CID "\",\"sub\":\"" CID "\",\"aud\":\"access\",\"jti\":\"\",\"exp\":1}",
        "{\"iss\":\"" CID "\",\"sub\":\"" CID "\",\"aud\":\"access\",\"jti\":\"j\",\"exp\":\"1\"}",
        "[]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(run(hdr, bad[i], sk, why, sizeof(why)), -1);
    /* A revoked key (the client has none left). */
    struct clients_record saved = client;
    client.nkeys = 0;
    claims(c, sizeof(c), CID, CID, "\"" AUD1 "\"", NOW + 60);
    assert_int_equal(run(hdr, c, sk, why, sizeof(why)), -1);
    client = saved;
    /* Not a JWS at all. */
    struct assertion as;
    assert_int_equal(assertion_parse("a.b", 3, &as, why, sizeof(why)), -1);
    assert_int_equal(assertion_parse("a.b.c.d", 7, &as, why, sizeof(why)), -1);
    assert_int_equal(assertion_parse("", 0, &as, why, sizeof(why)), -1);
}

static void test_jti_once(void **state)
{
    (void)state;
    struct assertion_jti *g = assertion_jti_create(NULL, "t:", NULL, 0);
    assert_non_null(g);
    int64_t now_ms = NOW * 1000;
    assert_int_equal(assertion_jti_once(g, CID, "a", NOW + 60, now_ms), ASSERTION_JTI_FIRST);
    assert_int_equal(assertion_jti_once(g, CID, "a", NOW + 60, now_ms + 1), ASSERTION_JTI_REPLAY);
    /* Another client may use the same jti. */
    assert_int_equal(assertion_jti_once(g, "0190f5c2-7a1b-7cde-8f01-23456789abce", "a", NOW + 60,
                                        now_ms),
                     ASSERTION_JTI_FIRST);
    /* Remembered until exp + leeway, then free again. */
    int64_t until = (NOW + 60 + ASSERTION_LEEWAY_S) * 1000;
    assert_int_equal(assertion_jti_once(g, CID, "a", NOW + 60, until - 1), ASSERTION_JTI_REPLAY);
    assert_int_equal(assertion_jti_once(g, CID, "a", NOW + 60, until + 1), ASSERTION_JTI_FIRST);
    assertion_jti_destroy(g);
}

static void test_jti_bounded(void **state)
{
    (void)state;
    struct assertion_jti *g = assertion_jti_create(NULL, "t:", NULL, 1024);
    int64_t now_ms = NOW * 1000;
    char jti[32];
    size_t first = 0;
    enum assertion_jti_result r = ASSERTION_JTI_FIRST;
    for (size_t i = 0; i < 2000 && r == ASSERTION_JTI_FIRST; i++) {
        snprintf(jti, sizeof(jti), "j%zu", i);
        r = assertion_jti_once(g, CID, jti, NOW + 60, now_ms);
        if (r == ASSERTION_JTI_FIRST)
            first++;
    }
    /* A bucket full of live entries: refused (never forgetting a live jti). */
    assert_int_equal(r, ASSERTION_JTI_FULL);
    assert_true(first >= 64 && first <= 1024);
    for (size_t i = 0; i < first; i++) {
        snprintf(jti, sizeof(jti), "j%zu", i);
        assert_int_equal(assertion_jti_once(g, CID, jti, NOW + 60, now_ms), ASSERTION_JTI_REPLAY);
    }
    /* Once they expired, the table is swept and takes new ones. */
    int64_t later = (NOW + 60 + ASSERTION_LEEWAY_S) * 1000 + 1;
    assert_int_equal(assertion_jti_once(g, CID, "fresh", NOW + 200, later), ASSERTION_JTI_FIRST);
    assertion_jti_destroy(g);
}

#define RACE_THREADS 8
#define RACE_ROUNDS  2000

struct race {
    struct assertion_jti *g;
    pthread_barrier_t *start;
    int round;
    int first;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    char jti[32];
    snprintf(jti, sizeof(jti), "race-%d", r->round);
    pthread_barrier_wait(r->start);
    if (assertion_jti_once(r->g, CID, jti, NOW + 60, NOW * 1000) == ASSERTION_JTI_FIRST)
        r->first = 1;
    return NULL;
}

/* Two guards over one table (two workers of a host): a jti the first
 * accepted, the second refuses. */
static void test_jti_shared_table(void **state)
{
    (void)state;
    static unsigned char mem[1 << 16];
    assert_true(assertion_jti_table_size(1024) <= sizeof(mem));
    struct assertion_jti_table *t = assertion_jti_table_init(mem, 1024);
    struct assertion_jti *w1 = assertion_jti_create(NULL, "t:", t, 0);
    struct assertion_jti *w2 = assertion_jti_create(NULL, "t:", t, 0);
    assert_int_equal(assertion_jti_once(w1, CID, "x", NOW + 60, NOW * 1000), ASSERTION_JTI_FIRST);
    assert_int_equal(assertion_jti_once(w2, CID, "x", NOW + 60, NOW * 1000), ASSERTION_JTI_REPLAY);
    assertion_jti_destroy(w1);
    assertion_jti_destroy(w2);
}

/* Many threads present one jti at the same moment: exactly one wins. */
static void test_jti_race(void **state)
{
    (void)state;
    struct assertion_jti *g = assertion_jti_create(NULL, "t:", NULL, 1 << 16);
    pthread_barrier_t start;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        pthread_t t[RACE_THREADS];
        struct race r[RACE_THREADS];
        int winners = 0;
        pthread_barrier_init(&start, NULL, RACE_THREADS);
        for (int i = 0; i < RACE_THREADS; i++) {
            r[i] = (struct race){.g = g, .start = &start, .round = round};
            pthread_create(&t[i], NULL, race_thread, &r[i]);
        }
        for (int i = 0; i < RACE_THREADS; i++) {
            pthread_join(t[i], NULL);
            winners += r[i].first;
        }
        pthread_barrier_destroy(&start);
        if (winners != 1)
            fail_msg("round %d: %d threads accepted one jti", round, winners);
    }
    assertion_jti_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),   cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_jti_once),  cmocka_unit_test(test_jti_bounded),
        cmocka_unit_test(test_jti_race),  cmocka_unit_test(test_jti_shared_table),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
