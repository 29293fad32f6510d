/* Unit tests for lib/secretbox.c: round trip, fresh nonces, tampering and
 * a wrong key refused, the key file's checks and keygen's refusal to
 * overwrite, the keyed hash. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "secretbox.h"

static void key_of(struct secretbox *sb, unsigned char fill)
{
    unsigned char k[SECRETBOX_KEY_BYTES];
    memset(k, fill, sizeof(k));
    secretbox_from_key(sb, k);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct secretbox sb;
    key_of(&sb, 7);
    const unsigned char m[20] = "12345678901234567890";
    unsigned char c[SECRETBOX_SEALED_LEN(20)], c2[SECRETBOX_SEALED_LEN(20)], out[20];
    size_t n = 0;
    assert_int_equal(secretbox_seal(&sb, m, sizeof(m), c, sizeof(c)), 0);
    /* The plaintext does not appear in the sealed bytes. */
    assert_null(memmem(c, sizeof(c), m, 8));
    assert_int_equal(secretbox_open(&sb, c, sizeof(c), out, sizeof(out), &n), 0);
    assert_int_equal(n, sizeof(m));
    assert_memory_equal(out, m, sizeof(m));
    /* A fresh nonce each time: the same secret seals differently. */
    assert_int_equal(secretbox_seal(&sb, m, sizeof(m), c2, sizeof(c2)), 0);
    assert_memory_not_equal(c, c2, sizeof(c));
    /* Too small an output is refused. */
    assert_int_equal(secretbox_seal(&sb, m, sizeof(m), c2, sizeof(c2) - 1), -1);
    secretbox_wipe(&sb);
}

static void test_tampering(void **state)
{
    (void)state;
    struct secretbox sb;
    key_of(&sb, 9);
    const unsigned char m[20] = "abcdefghijklmnopqrst";
    unsigned char c[SECRETBOX_SEALED_LEN(20)], out[20];
    size_t n = 0;
    assert_int_equal(secretbox_seal(&sb, m, sizeof(m), c, sizeof(c)), 0);
    /* Every single flipped bit, in nonce, ciphertext or tag, is refused. */
    for (size_t i = 0; i < sizeof(c); i++) {
        for (int bit = 0; bit < 8; bit++) {
            c[i] ^= (unsigned char)(1u << bit);
            memset(out, 0, sizeof(out));
            assert_int_equal(secretbox_open(&sb, c, sizeof(c), out, sizeof(out), &n), -1);
            c[i] ^= (unsigned char)(1u << bit);
        }
    }
    /* Truncated. */
    assert_int_equal(secretbox_open(&sb, c, sizeof(c) - 1, out, sizeof(out), &n), -1);
    assert_int_equal(secretbox_open(&sb, c, SECRETBOX_SEALED_LEN(0) - 1, out, sizeof(out), &n),
                     -1);
    /* Intact still opens. */
    assert_int_equal(secretbox_open(&sb, c, sizeof(c), out, sizeof(out), &n), 0);
    assert_memory_equal(out, m, sizeof(m));
}

static void test_wrong_key(void **state)
{
    (void)state;
    struct secretbox a, b;
    key_of(&a, 1);
    key_of(&b, 2);
    const unsigned char m[4] = {1, 2, 3, 4};
    unsigned char c[SECRETBOX_SEALED_LEN(4)], out[4];
    size_t n = 0;
    assert_int_equal(secretbox_seal(&a, m, sizeof(m), c, sizeof(c)), 0);
    assert_int_equal(secretbox_open(&b, c, sizeof(c), out, sizeof(out), &n), -1);
    /* The hashes differ by key and by input, and are stable. */
    unsigned char h1[32], h2[32], h3[32], h4[32];
    secretbox_hash(&a, "ABCDEFGHIJ", 10, h1);
    secretbox_hash(&b, "ABCDEFGHIJ", 10, h2);
    secretbox_hash(&a, "ABCDEFGHIK", 10, h3);
    secretbox_hash(&a, "ABCDEFGHIJ", 10, h4);
    assert_memory_not_equal(h1, h2, 32);
    assert_memory_not_equal(h1, h3, 32);
    assert_memory_equal(h1, h4, 32);
}

static void test_key_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/secretbox-test-XXXXXX", path[128], err[256];
    struct secretbox sb, sb2;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/secrets.key", dir);
    err[0] = '\0';
    assert_int_equal(secretbox_load(&sb, path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "missing"));
    mode_t old = umask(022);
    assert_int_equal(secretbox_keygen(path, err, sizeof(err)), 0);
    umask(old);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, SECRETBOX_KEY_BYTES);
    /* Never overwritten. */
    assert_int_equal(secretbox_keygen(path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "refusing"));
    assert_int_equal(secretbox_load(&sb, path, err, sizeof(err)), 0);
    /* The same file gives the same keys: what one worker seals, another opens. */
    assert_int_equal(secretbox_load(&sb2, path, err, sizeof(err)), 0);
    unsigned char c[SECRETBOX_SEALED_LEN(3)], out[3];
    size_t n = 0;
    assert_int_equal(secretbox_seal(&sb, (const unsigned char *)"abc", 3, c, sizeof(c)), 0);
    assert_int_equal(secretbox_open(&sb2, c, sizeof(c), out, sizeof(out), &n), 0);
    /* Readable by others: refused. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(secretbox_load(&sb, path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "0644"));
    /* Wrong length: refused. */
    assert_int_equal(chmod(path, 0600), 0);
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    fputc('x', f);
    fclose(f);
    assert_int_equal(secretbox_load(&sb, path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "want 32"));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_key_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
