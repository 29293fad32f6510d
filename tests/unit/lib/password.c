/* Unit tests for lib/password.c: Argon2id PHC strings made by libsodium
 * (p = 1) and libargon2 (any p), verified across the two libraries; the
 * parameter parser and its refusals; the rehash decision; both
 * implementations (libsodium, libargon2 on huge-page memory) read each
 * other's strings; the canonical decoder and encoder. Small costs
 * (t = 1, m = 1024 KiB) keep it fast. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <argon2.h>
#include <sodium.h>

#include "password.h"

#define PW    "correct horse battery staple"
#define OTHER "correct horse battery stapLe"

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static const struct password_params small = {.t_cost = 1, .m_kib = 1024, .parallelism = 1};
static const struct password_params small_a2 = {
    .t_cost = 1, .m_kib = 1024, .parallelism = 1, .impl = PASSWORD_IMPL_LIBARGON2};

/* A PHC string from libargon2 directly. */
static void argon2_made(unsigned t, unsigned m, unsigned p, const char *pw, char *out, size_t n)
{
    unsigned char salt[16];
    randombytes_buf(salt, sizeof(salt));
    int rc = argon2id_hash_encoded(t, m, p, pw, strlen(pw), salt, sizeof(salt), 32, out, n);
    if (rc != ARGON2_OK)
        fail_msg("argon2id_hash_encoded: %s", argon2_error_message(rc));
}

static void test_sodium_roundtrip(void **state)
{
    (void)state;
    char phc[PASSWORD_PHC_MAX], phc2[PASSWORD_PHC_MAX];
    memset(phc, 'Z', sizeof(phc));
    assert_int_equal(password_hash(&small, PW, strlen(PW), phc), 0);
    assert_true(strlen(phc) < PASSWORD_PHC_MAX);
    assert_true(starts_with(phc, "$argon2id$v=19$m=1024,t=1,p=1$"));
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, PW, strlen(PW)), PASSWORD_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, OTHER, strlen(OTHER)),
                     PASSWORD_MISMATCH);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, PW, strlen(PW) - 1),
                     PASSWORD_MISMATCH);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, "", 0), PASSWORD_MISMATCH);
    /* A fresh salt each time. */
    assert_int_equal(password_hash(&small, PW, strlen(PW), phc2), 0);
    assert_string_not_equal(phc, phc2);
    /* Passwords are bytes: NUL inside counts. */
    const char nul[] = "abc\0defgh";
    assert_int_equal(password_hash(&small, nul, sizeof(nul) - 1, phc), 0);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, nul, sizeof(nul) - 1),
                     PASSWORD_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, nul, 3), PASSWORD_MISMATCH);
}

static void test_cross_library(void **state)
{
    (void)state;
    char phc[PASSWORD_PHC_MAX];

    /* libargon2-made, p = 1: password_verify takes the libsodium path. */
    argon2_made(1, 1024, 1, PW, phc, sizeof(phc));
    assert_true(starts_with(phc, "$argon2id$v=19$m=1024,t=1,p=1$"));
    assert_int_equal(crypto_pwhash_str_verify(phc, PW, strlen(PW)), 0); /* libsodium reads it */
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, PW, strlen(PW)), PASSWORD_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, OTHER, strlen(OTHER)),
                     PASSWORD_MISMATCH);

    /* libsodium-made (through password_hash): libargon2 verifies it. */
    assert_int_equal(password_hash(&small, PW, strlen(PW), phc), 0);
    assert_int_equal(argon2id_verify(phc, PW, strlen(PW)), ARGON2_OK);
    assert_int_equal(argon2id_verify(phc, OTHER, strlen(OTHER)), ARGON2_VERIFY_MISMATCH);

    /* p = 2 from libargon2: only libargon2 can verify it. */
    argon2_made(1, 1024, 2, PW, phc, sizeof(phc));
    assert_true(starts_with(phc, "$argon2id$v=19$m=1024,t=1,p=2$"));
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, PW, strlen(PW)), PASSWORD_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, OTHER, strlen(OTHER)),
                     PASSWORD_MISMATCH);

    /* password_hash with p = 2 goes to libargon2 and round-trips. */
    const struct password_params p2 = {.t_cost = 1, .m_kib = 1024, .parallelism = 2};
    assert_int_equal(password_hash(&p2, PW, strlen(PW), phc), 0);
    assert_true(starts_with(phc, "$argon2id$v=19$m=1024,t=1,p=2$"));
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, PW, strlen(PW)), PASSWORD_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, OTHER, strlen(OTHER)),
                     PASSWORD_MISMATCH);
    assert_int_equal(argon2id_verify(phc, PW, strlen(PW)), ARGON2_OK);
}

static void test_params_of(void **state)
{
    (void)state;
    char phc[PASSWORD_PHC_MAX];
    struct password_params pp;

    assert_int_equal(password_hash(&small, PW, strlen(PW), phc), 0);
    memset(&pp, 0xff, sizeof(pp));
    assert_int_equal(password_params_of(phc, &pp), 0);
    assert_int_equal(pp.t_cost, 1);
    assert_int_equal(pp.m_kib, 1024);
    assert_int_equal(pp.parallelism, 1);

    argon2_made(2, 2048, 3, PW, phc, sizeof(phc));
    memset(&pp, 0xff, sizeof(pp));
    assert_int_equal(password_params_of(phc, &pp), 0);
    assert_int_equal(pp.t_cost, 2);
    assert_int_equal(pp.m_kib, 2048);
    assert_int_equal(pp.parallelism, 3);

    const char *tail = "$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    char good[256];
    snprintf(good, sizeof(good), "$argon2id$v=19$m=65536,t=3,p=4%s", tail);
    assert_int_equal(password_params_of(good, &pp), 0);
    assert_int_equal(pp.m_kib, 65536);
    assert_int_equal(pp.t_cost, 3);
    assert_int_equal(pp.parallelism, 4);

    const char *heads[] = {
        "",
        "$",
        "$argon2id",
        "$argon2id$",
        "argon2id$v=19$m=1024,t=1,p=1",                  /* no leading $ */
        "$argon2x$v=19$m=1024,t=1,p=1",                  /* wrong prefix */
        "$argon2i$v=19$m=1024,t=1,p=1",                  /* argon2i */
        "$argon2d$v=19$m=1024,t=1,p=1",                  /* argon2d */
        "$ARGON2ID$v=19$m=1024,t=1,p=1",                 /* case */
        "$scrypt$ln=15,r=8,p=1",                         /* another scheme */
        "$argon2id$v=16$m=1024,t=1,p=1",                 /* Argon2 1.0 */
        "$argon2id$v=20$m=1024,t=1,p=1",                 /* unknown version */
        "$argon2id$m=1024,t=1,p=1",                      /* v missing (libargon2 reads it as 1.0) */
        "$argon2id$v=19$m=1024,t=1",                     /* p missing */
        "$argon2id$v=19$m=1024,p=1",                     /* t missing */
        "$argon2id$v=19$t=1,p=1",                        /* m missing */
        "$argon2id$v=19$t=1,m=1024,p=1",                 /* order */
        "$argon2id$v=19$m=,t=1,p=1",                     /* empty value */
        "$argon2id$v=19$m=-1,t=1,p=1",                   /* negative */
        "$argon2id$v=19$m=+1024,t=1,p=1",                /* sign */
        "$argon2id$v=19$m= 1024,t=1,p=1",                /* space */
        "$argon2id$v=19$m=1024,t=0,p=1",                 /* t 0 */
        "$argon2id$v=19$m=4,t=1,p=1",                    /* m under 8 KiB */
        "$argon2id$v=19$m=1024,t=1,p=0",                 /* p 0 */
        "$argon2id$v=19$m=1024,t=1,p=256",               /* p over 255 */
        "$argon2id$v=19$m=99999999999999999999,t=1,p=1", /* overflow */
        "$argon2id$v=19$m=4294967296,t=1,p=1",           /* 2^32 */
        "$argon2id$v=19$m=1024,t=1,p=1,data=abc",        /* extra field */
        "$argon2id$v=19,m=1024,t=1,p=1",                 /* wrong separator */
    };
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        char s[256];
        /* Each with the salt/hash tail, and bare. */
        snprintf(s, sizeof(s), "%s%s", heads[i], tail);
        memset(&pp, 0, sizeof(pp));
        if (password_params_of(s, &pp) != -1)
            fail_msg("accepted %s", s);
        if (password_params_of(heads[i], &pp) != -1)
            fail_msg("accepted %s", heads[i]);
        /* password_verify refuses the same strings as malformed. */
        if (password_verify(PASSWORD_IMPL_LIBSODIUM, s, PW, strlen(PW)) != PASSWORD_ERROR ||
            password_verify(PASSWORD_IMPL_LIBARGON2, s, PW, strlen(PW)) != PASSWORD_ERROR)
            fail_msg("password_verify did not refuse %s", s);
        /* And asks for a rehash. */
        assert_true(password_needs_rehash(s, &small));
    }
    /* The string of another variant, really made by libargon2. */
    unsigned char salt[16] = {0};
    assert_int_equal(
        argon2i_hash_encoded(1, 1024, 1, PW, strlen(PW), salt, sizeof(salt), 32, phc, sizeof(phc)),
        ARGON2_OK);
    assert_int_equal(password_params_of(phc, &pp), -1);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, PW, strlen(PW)), PASSWORD_ERROR);
}

static void test_needs_rehash(void **state)
{
    (void)state;
    char phc[PASSWORD_PHC_MAX];
    assert_int_equal(password_hash(&small, PW, strlen(PW), phc), 0);
    assert_false(password_needs_rehash(phc, &small));

    struct password_params pp = small;
    pp.t_cost = 2;
    assert_true(password_needs_rehash(phc, &pp));
    pp = small;
    pp.m_kib = 2048;
    assert_true(password_needs_rehash(phc, &pp));
    pp = small;
    pp.parallelism = 2;
    assert_true(password_needs_rehash(phc, &pp));

    argon2_made(2, 2048, 2, PW, phc, sizeof(phc));
    pp = (struct password_params){.t_cost = 2, .m_kib = 2048, .parallelism = 2};
    assert_false(password_needs_rehash(phc, &pp));
    assert_true(password_needs_rehash(phc, &small));
}

/* password_hasher = libargon2: the same strings, verified by either side. */
static void test_libargon2_impl(void **state)
{
    (void)state;
    char phc[PASSWORD_PHC_MAX], phc2[PASSWORD_PHC_MAX];
    const enum password_impl both[2] = {PASSWORD_IMPL_LIBSODIUM, PASSWORD_IMPL_LIBARGON2};

    memset(phc, 'Z', sizeof(phc));
    assert_int_equal(password_hash(&small_a2, PW, strlen(PW), phc), 0);
    assert_true(starts_with(phc, "$argon2id$v=19$m=1024,t=1,p=1$"));
    assert_int_equal(strlen(phc), strlen("$argon2id$v=19$m=1024,t=1,p=1$") + 22 + 1 + 43);
    assert_int_equal(crypto_pwhash_str_verify(phc, PW, strlen(PW)), 0); /* libsodium reads it */
    assert_int_equal(argon2id_verify(phc, PW, strlen(PW)), ARGON2_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(password_verify(both[i], phc, PW, strlen(PW)), PASSWORD_OK);
        assert_int_equal(password_verify(both[i], phc, OTHER, strlen(OTHER)), PASSWORD_MISMATCH);
        assert_int_equal(password_verify(both[i], phc, PW, strlen(PW) - 1), PASSWORD_MISMATCH);
        assert_int_equal(password_verify(both[i], phc, "", 0), PASSWORD_MISMATCH);
    }
    assert_int_equal(password_hash(&small_a2, PW, strlen(PW), phc2), 0);
    assert_string_not_equal(phc, phc2); /* a fresh salt each time */

    /* libsodium-made, verified through libargon2's path. */
    assert_int_equal(password_hash(&small, PW, strlen(PW), phc), 0);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBARGON2, phc, PW, strlen(PW)), PASSWORD_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBARGON2, phc, OTHER, strlen(OTHER)),
                     PASSWORD_MISMATCH);

    /* NUL inside a password counts on this path too. */
    const char nul[] = "abc\0defgh";
    assert_int_equal(password_hash(&small_a2, nul, sizeof(nul) - 1, phc), 0);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBARGON2, phc, nul, sizeof(nul) - 1),
                     PASSWORD_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBARGON2, phc, nul, 3), PASSWORD_MISMATCH);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBSODIUM, phc, nul, sizeof(nul) - 1),
                     PASSWORD_OK);

    /* A salt and hash of other lengths (imported): decoded, not assumed. */
    unsigned char salt[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(
        argon2id_hash_encoded(1, 1024, 1, PW, strlen(PW), salt, sizeof(salt), 48, phc, sizeof(phc)),
        ARGON2_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBARGON2, phc, PW, strlen(PW)), PASSWORD_OK);
    assert_int_equal(password_verify(PASSWORD_IMPL_LIBARGON2, phc, OTHER, strlen(OTHER)),
                     PASSWORD_MISMATCH);

    /* The real defaults once (64 MiB: the huge-page mapping is exercised). */
    const struct password_params dflt = {
        .t_cost = 3, .m_kib = 65536, .parallelism = 1, .impl = PASSWORD_IMPL_LIBARGON2};
    assert_int_equal(password_hash(&dflt, PW, strlen(PW), phc), 0);
    assert_int_equal(crypto_pwhash_str_verify(phc, PW, strlen(PW)), 0);
}

static void test_phc_codec(void **state)
{
    (void)state;
    char phc[PASSWORD_PHC_MAX], again[PASSWORD_PHC_MAX];
    struct password_phc ph, ph2;

    assert_int_equal(password_hash(&small, PW, strlen(PW), phc), 0);
    assert_int_equal(password_phc_decode(phc, &ph), 0);
    assert_int_equal(ph.pp.t_cost, 1);
    assert_int_equal(ph.pp.m_kib, 1024);
    assert_int_equal(ph.pp.parallelism, 1);
    assert_int_equal(ph.salt_len, 16);
    assert_int_equal(ph.hash_len, 32);
    assert_int_equal(password_phc_encode(&ph, again), 0);
    assert_string_equal(phc, again); /* libsodium's form is the canonical one */

    /* Known bytes: "somesaltsomesalt" and 32 x 'h'. */
    const char *known = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$"
                        "aGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGg";
    assert_int_equal(password_phc_decode(known, &ph), 0);
    assert_int_equal(ph.pp.parallelism, 4);
    assert_memory_equal(ph.salt, "somesaltsomesalt", 16);
    assert_int_equal(ph.hash_len, 32);
    for (size_t i = 0; i < ph.hash_len; i++)
        assert_int_equal(ph.hash[i], 'h');
    assert_int_equal(password_phc_encode(&ph, again), 0);
    assert_string_equal(known, again);

    const char *bad[] = {
        "$argon2id$v=19$m=65536,t=3,p=4",                                      /* no salt */
        "$argon2id$v=19$m=65536,t=3,p=4$",                                     /* empty salt */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA",               /* no hash */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$",              /* empty hash */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbA$aGhoaGhoaGg",               /* salt 7 bytes */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$aGg",           /* hash 2 bytes */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA==$aGhoaGhoaGg", /* padding */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdB$aGhoaGhoaGg",   /* stray low bits */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNh*HRzb21lc2FsdA$aGhoaGhoaGg",   /* not base64 */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$aGhoaGhoaGg$",  /* trailing $ */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$aGhoaGhoaGg ",  /* trailing space */
        "$argon2id$v=19$m=65536,t=3,p=4$c29t_XNhbHRzb21lc2FsdA$aGhoaGhoaGg",   /* url alphabet */
        "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$aGhoaGhoaGg\n", /* newline */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&ph, 0x55, sizeof(ph));
        if (password_phc_decode(bad[i], &ph) != -1)
            fail_msg("decoded %s", bad[i]);
        assert_int_equal(ph.salt_len, 0); /* wiped on failure */
    }
    /* 65 bytes of hash is over PASSWORD_BIN_MAX: refused, not overflowed. */
    char longer[256];
    unsigned char big[65];
    char b64[128];
    memset(big, 7, sizeof(big));
    sodium_bin2base64(b64, sizeof(b64), big, sizeof(big),
                      sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    snprintf(longer, sizeof(longer), "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$%s",
             b64);
    assert_int_equal(password_phc_decode(longer, &ph), -1);

    /* The encoder refuses lengths the decoder would, and what does not fit. */
    assert_int_equal(password_phc_decode(known, &ph), 0);
    ph2 = ph;
    ph2.salt_len = 7;
    assert_int_equal(password_phc_encode(&ph2, again), -1);
    ph2 = ph;
    ph2.hash_len = 65;
    assert_int_equal(password_phc_encode(&ph2, again), -1);
    ph2 = ph;
    ph2.salt_len = 64;
    ph2.hash_len = 64;
    ph2.pp.m_kib = 4000000000u;
    assert_int_equal(password_phc_encode(&ph2, again), -1); /* 200+ characters */
    assert_string_equal(again, "");
}

static void test_calibrate(void **state)
{
    (void)state;
    double ms[2] = {-2, -2};
    enum password_impl impl = password_calibrate(&small, ms);
    assert_true(ms[PASSWORD_IMPL_LIBSODIUM] > 0);
    assert_true(ms[PASSWORD_IMPL_LIBARGON2] > 0);
    if (impl == PASSWORD_IMPL_LIBARGON2)
        assert_true(ms[PASSWORD_IMPL_LIBARGON2] < 0.9 * ms[PASSWORD_IMPL_LIBSODIUM]);
    else
        assert_int_equal(impl, PASSWORD_IMPL_LIBSODIUM);
    assert_string_equal(password_impl_name(PASSWORD_IMPL_LIBARGON2), "libargon2");
    assert_string_equal(password_impl_name(PASSWORD_IMPL_LIBSODIUM), "libsodium");
    enum password_impl got = PASSWORD_IMPL_LIBSODIUM;
    assert_int_equal(password_impl_from_name("libargon2", &got), 0);
    assert_int_equal(got, PASSWORD_IMPL_LIBARGON2);
    assert_int_equal(password_impl_from_name("libsodium", &got), 0);
    assert_int_equal(got, PASSWORD_IMPL_LIBSODIUM);
    assert_int_equal(password_impl_from_name("auto", &got), -1);
    assert_int_equal(password_impl_from_name("", &got), -1);
    assert_int_equal(password_impl_from_name("libargon", &got), -1);
    /* A hash that cannot run (m under 8 x p) counts as failed, never chosen. */
    const struct password_params broken = {.t_cost = 1, .m_kib = 8, .parallelism = 2};
    assert_int_equal(password_calibrate(&broken, ms), PASSWORD_IMPL_LIBSODIUM);
    assert_true(ms[PASSWORD_IMPL_LIBARGON2] < 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sodium_roundtrip), cmocka_unit_test(test_cross_library),
        cmocka_unit_test(test_params_of),        cmocka_unit_test(test_needs_rehash),
        cmocka_unit_test(test_libargon2_impl),   cmocka_unit_test(test_phc_codec),
        cmocka_unit_test(test_calibrate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
