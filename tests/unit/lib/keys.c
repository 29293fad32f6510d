/* Unit tests for lib/keys.c: RFC 7638/8037 thumbprints, parsing and its
 * errors, key generation and rotation on disk, the public JWK set. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <sodium.h>

#include "b64url.h"
#include "keys.h"

/* RFC 8037 appendix A.1 / A.3 / A.4. */
#define RFC_D     "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
#define RFC_X     "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
#define RFC_KID   "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
#define RFC_INPUT "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
#define RFC_SIG                                                                                    \
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *s = calloc(1, 65536);
    assert_non_null(s);
    size_t n = fread(s, 1, 65535, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void test_thumbprint_rfc8037(void **state)
{
    (void)state;
    unsigned char pk[32];
    size_t n;
    char kid[KEYS_KID_LEN + 1];
    assert_int_equal(b64url_decode(pk, sizeof(pk), RFC_X, strlen(RFC_X), &n), 0);
    assert_int_equal(n, 32);
    memset(kid, 'Z', sizeof(kid));
    keys_thumbprint(pk, kid);
    assert_int_equal(strlen(kid), KEYS_KID_LEN);
    assert_string_equal(kid, RFC_KID);
}

static void test_parse_rfc_key(void **state)
{
    (void)state;
    struct keyset ks;
    char err[256] = "";
    const char *text = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"d\":\"" RFC_D
                       "\",\"x\":\"" RFC_X "\"}]}";
    assert_int_equal(keys_parse(text, strlen(text), &ks, err, sizeof(err)), 0);
    assert_int_equal(ks.n, 1);
    assert_int_equal(ks.active, 0);
    assert_true(ks.k[0].has_private);
    assert_string_equal(ks.k[0].kid, RFC_KID);
    /* The secret key signs the RFC's example exactly (Ed25519 is deterministic). */
    unsigned char sig[64];
    char sig64[100];
    crypto_sign_detached(sig, NULL, (const unsigned char *)RFC_INPUT, strlen(RFC_INPUT),
                         ks.k[0].sk);
    b64url_encode(sig64, sizeof(sig64), sig, sizeof(sig));
    assert_string_equal(sig64, RFC_SIG);

    assert_ptr_equal(keys_find(&ks, RFC_KID, strlen(RFC_KID)), &ks.k[0]);
    assert_null(keys_find(&ks, RFC_KID, strlen(RFC_KID) - 1));
    assert_null(keys_find(&ks, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4K", KEYS_KID_LEN));
    assert_null(keys_find(&ks, "", 0));
    keys_wipe(&ks);
    assert_int_equal(ks.n, 0);
    assert_true(sodium_is_zero(ks.k[0].sk, sizeof(ks.k[0].sk)));
}

/* A JWK of a fixed seed: x, d and kid in base64url. */
struct jwk_text {
    char x[48], d[48], kid[KEYS_KID_LEN + 1];
};

static void make_jwk(unsigned char seed_byte, struct jwk_text *j)
{
    unsigned char seed[32], pk[32], sk[64];
    memset(seed, seed_byte, sizeof(seed));
    crypto_sign_seed_keypair(pk, sk, seed);
    b64url_encode(j->x, sizeof(j->x), pk, 32);
    b64url_encode(j->d, sizeof(j->d), seed, 32);
    keys_thumbprint(pk, j->kid);
}

static void expect_parse_error(const char *text, const char *frag1, const char *frag2)
{
    struct keyset ks;
    char err[256] = "";
    if (keys_parse(text, strlen(text), &ks, err, sizeof(err)) != -1)
        fail_msg("accepted: %s", text);
    if (strstr(err, frag1) == NULL || (frag2 != NULL && strstr(err, frag2) == NULL))
        fail_msg("error '%s' lacks '%s' / '%s' for %s", err, frag1, frag2 ? frag2 : "", text);
    /* Nothing secret is left behind. */
    assert_int_equal(ks.n, 0);
    assert_true(sodium_is_zero((const unsigned char *)&ks, sizeof(ks)));
}

static void test_parse_errors(void **state)
{
    (void)state;
    struct jwk_text a, b;
    make_jwk(1, &a);
    make_jwk(2, &b);
    char t[1024];

    expect_parse_error("not json", "not valid JSON", NULL);
    expect_parse_error("", "not valid JSON", NULL);
    expect_parse_error("{\"keys\":[", "not valid JSON", NULL);
    expect_parse_error("{\"nokeys\":[]}", "\"keys\" array", NULL);
    expect_parse_error("{\"keys\":{}}", "\"keys\" array", NULL);
    expect_parse_error("[1]", "\"keys\" array", NULL);
    expect_parse_error("{\"keys\":[]}", "0 keys", "1..16");
    expect_parse_error("{\"keys\":[1]}", "key 0", "kty OKP");
    expect_parse_error("{\"keys\":[null]}", "key 0", "kty OKP");

    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"%s\"}]}", a.x,
             a.d);
    expect_parse_error(t, "key 0", "kty OKP");
    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"%s\",\"d\":\"%s\"}]}", a.x,
             a.d);
    expect_parse_error(t, "key 0", "crv Ed25519");
    snprintf(t, sizeof(t), "{\"keys\":[{\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"%s\"}]}", a.x,
             a.d);
    expect_parse_error(t, "key 0", "kty OKP");
    /* x of 31 bytes, x missing, x not base64url. */
    expect_parse_error("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                       "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}",
                       "key 0", "\"x\" must be 32 bytes");
    expect_parse_error("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\"}]}", "key 0",
                       "\"x\" must be 32 bytes");
    snprintf(t, sizeof(t), "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s=\"}]}", a.x);
    expect_parse_error(t, "key 0", "\"x\" must be 32 bytes");
    snprintf(t, sizeof(t), "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":42}]}");
    expect_parse_error(t, "key 0", "\"x\" must be 32 bytes");
    /* d of the wrong length, d of another key. */
    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"AAAA\"}]}", a.x);
    expect_parse_error(t, "key 0", "\"d\" must be 32 bytes");
    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"%s\"}]}", a.x,
             b.d);
    expect_parse_error(t, "key 0", "does not belong");
    /* kid not the thumbprint (here: the other key's). */
    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"%s\",\"d\":\"%"
             "s\"}]}",
             b.kid, a.x, a.d);
    expect_parse_error(t, "key 0", "thumbprint");
    /* The index of the bad key is named. */
    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"%s\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"%s\"}]}",
             a.x, a.d, b.x, a.d);
    expect_parse_error(t, "key 1", "does not belong");
    /* Public keys only: nothing can sign. */
    snprintf(t, sizeof(t), "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"}]}", a.x);
    expect_parse_error(t, "no key has a private part", NULL);
    /* Too many keys. */
    char big[8192];
    size_t j = (size_t)snprintf(big, sizeof(big), "{\"keys\":[");
    for (int i = 0; i < KEYS_MAX + 1; i++)
        j += (size_t)snprintf(big + j, sizeof(big) - j,
                              "%s{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"d\":\"%s\"}",
                              i ? "," : "", a.x, a.d);
    snprintf(big + j, sizeof(big) - j, "]}");
    expect_parse_error(big, "17 keys", "1..16");
}

static void test_parse_two_keys(void **state)
{
    (void)state;
    struct jwk_text a, b;
    make_jwk(1, &a);
    make_jwk(2, &b);
    char t[1024], err[256];
    struct keyset ks;
    /* Old public key first, new private key last (kid given and right). */
    snprintf(t, sizeof(t),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"use\":\"sig\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"%s\",\"d\":\"%s\"}]}",
             a.x, b.kid, b.x, b.d);
    assert_int_equal(keys_parse(t, strlen(t), &ks, err, sizeof(err)), 0);
    assert_int_equal(ks.n, 2);
    assert_int_equal(ks.active, 1);
    assert_false(ks.k[0].has_private);
    assert_true(sodium_is_zero(ks.k[0].sk, sizeof(ks.k[0].sk)));
    assert_true(ks.k[1].has_private);
    assert_string_equal(ks.k[0].kid, a.kid);
    assert_string_equal(ks.k[1].kid, b.kid);

    /* Public JWK set: newest first, no "d", valid JSON. */
    struct buf out = {0};
    keys_public_jwks(&ks, &out);
    assert_null(strstr(out.data, "\"d\""));
    assert_null(strstr(out.data, b.d));
    json_object *root = json_tokener_parse(out.data), *arr, *k0, *kid;
    assert_non_null(root);
    assert_true(json_object_object_get_ex(root, "keys", &arr));
    assert_int_equal(json_object_array_length(arr), 2);
    k0 = json_object_array_get_idx(arr, 0);
    assert_true(json_object_object_get_ex(k0, "kid", &kid));
    assert_string_equal(json_object_get_string(kid), b.kid);
    assert_false(json_object_object_get_ex(k0, "d", NULL));
    json_object_put(root);
    buf_free(&out);
    keys_wipe(&ks);
}

/* A private temporary directory, removed with its files at the end. */
static int setup_dir(void **state)
{
    char *dir = strdup("/tmp/access-keys-test-XXXXXX");
    if (dir == NULL || mkdtemp(dir) == NULL)
        return -1;
    *state = dir;
    return 0;
}

static int teardown_dir(void **state)
{
    char *dir = *state;
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[512];
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
    return 0;
}

static int files_in(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_generate_and_rotate(void **state)
{
    const char *dir = *state;
    char path[512], kid1[KEYS_KID_LEN + 1], kid2[KEYS_KID_LEN + 1], err[512] = "";
    struct stat st;
    struct keyset ks;
    snprintf(path, sizeof(path), "%s/keys.json", dir);

    /* Rotating a file that does not exist fails. */
    assert_int_equal(keys_generate(path, 1, kid1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));

    assert_int_equal(keys_generate(path, 0, kid1, err, sizeof(err)), 0);
    assert_int_equal(strlen(kid1), KEYS_KID_LEN);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(files_in(dir), 1); /* no temporary left */
    char *text = slurp(path);
    assert_int_equal(count(text, "\"d\""), 1);
    free(text);

    assert_int_equal(keys_load(path, &ks, err, sizeof(err)), 0);
    assert_int_equal(ks.n, 1);
    assert_int_equal(ks.active, 0);
    assert_true(ks.k[0].has_private);
    assert_string_equal(ks.k[0].kid, kid1);
    /* The key signs and its public half verifies. */
    unsigned char sig[64];
    crypto_sign_detached(sig, NULL, (const unsigned char *)"m", 1, ks.k[0].sk);
    assert_int_equal(crypto_sign_verify_detached(sig, (const unsigned char *)"m", 1, ks.k[0].pk),
                     0);
    keys_wipe(&ks);

    /* A second plain keygen refuses and leaves the file alone. */
    char *before = slurp(path);
    assert_int_equal(keys_generate(path, 0, kid2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "exists"));
    assert_non_null(strstr(err, "--rotate"));
    char *after = slurp(path);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* Rotation: a new active key; the old one keeps only its public part. */
    assert_int_equal(keys_generate(path, 1, kid2, err, sizeof(err)), 0);
    assert_string_not_equal(kid1, kid2);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(files_in(dir), 1);
    text = slurp(path);
    assert_int_equal(count(text, "\"d\""), 1);
    free(text);
    assert_int_equal(keys_load(path, &ks, err, sizeof(err)), 0);
    assert_int_equal(ks.n, 2);
    assert_int_equal(ks.active, 1);
    assert_int_equal(ks.k[0].has_private, 0);
    assert_true(sodium_is_zero(ks.k[0].sk, sizeof(ks.k[0].sk)));
    assert_true(ks.k[1].has_private);
    assert_string_equal(ks.k[0].kid, kid1);
    assert_string_equal(ks.k[1].kid, kid2);

    struct buf jwks = {0};
    keys_public_jwks(&ks, &jwks);
    assert_null(strstr(jwks.data, "\"d\""));
    assert_non_null(strstr(jwks.data, kid1));
    assert_non_null(strstr(jwks.data, kid2));
    assert_true(strstr(jwks.data, kid2) < strstr(jwks.data, kid1)); /* newest first */
    buf_free(&jwks);
    keys_wipe(&ks);

    /* Past KEYS_MAX the oldest verification key is dropped. */
    char last[KEYS_KID_LEN + 1];
    for (int i = 0; i < KEYS_MAX; i++)
        assert_int_equal(keys_generate(path, 1, last, err, sizeof(err)), 0);
    assert_int_equal(keys_load(path, &ks, err, sizeof(err)), 0);
    assert_int_equal(ks.n, KEYS_MAX);
    assert_int_equal(ks.active, KEYS_MAX - 1);
    assert_string_equal(ks.k[KEYS_MAX - 1].kid, last);
    assert_null(keys_find(&ks, kid1, KEYS_KID_LEN));
    assert_null(keys_find(&ks, kid2, KEYS_KID_LEN));
    for (int i = 0; i < KEYS_MAX - 1; i++)
        assert_false(ks.k[i].has_private);
    keys_wipe(&ks);
}

static void test_load_errors(void **state)
{
    const char *dir = *state;
    char path[512], err[512] = "";
    struct keyset ks;
    snprintf(path, sizeof(path), "%s/missing.json", dir);
    assert_int_equal(keys_load(path, &ks, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));

    snprintf(path, sizeof(path), "%s/empty.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(keys_load(path, &ks, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "empty"));

    snprintf(path, sizeof(path), "%s/bad.json", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"keys\":[]}", f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(keys_load(path, &ks, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "0 keys"));
}

/* A private key file that group or others can read is refused, naming the
 * file and its mode; owner-only modes load. */
static void test_load_refuses_open_modes(void **state)
{
    const char *dir = *state;
    char path[512], kid[KEYS_KID_LEN + 1], err[512] = "";
    struct keyset ks;
    snprintf(path, sizeof(path), "%s/keys.json", dir);
    assert_int_equal(keys_generate(path, 0, kid, err, sizeof(err)), 0);
    static const struct {
        mode_t mode;
        const char *text;
    } refused[] = {{0644, "0644"}, {0640, "0640"}, {0604, "0604"}, {0660, "0660"},
                   {0610, "0610"}, {0601, "0601"}, {0777, "0777"}};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        assert_int_equal(chmod(path, refused[i].mode), 0);
        err[0] = '\0';
        assert_int_equal(keys_load(path, &ks, err, sizeof(err)), -1);
        if (strstr(err, path) == NULL || strstr(err, refused[i].text) == NULL ||
            strstr(err, "chmod 600") == NULL)
            fail_msg("mode %s: %s", refused[i].text, err);
    }
    /* A refusal does not spoil the file: the owner-only modes load it. */
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(keys_load(path, &ks, err, sizeof(err)), 0);
    keys_wipe(&ks);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(keys_load(path, &ks, err, sizeof(err)), 0);
    keys_wipe(&ks);
    /* keygen --rotate of a readable file is refused too (it loads first). */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(keys_generate(path, 1, kid, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "0644"));
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thumbprint_rfc8037),
        cmocka_unit_test(test_parse_rfc_key),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_two_keys),
        cmocka_unit_test_setup_teardown(test_generate_and_rotate, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_load_errors, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_load_refuses_open_modes, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
