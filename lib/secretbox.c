#include "secretbox.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

/* crypto_kdf contexts are 8 bytes; subkey ids 1 and 2 of this context. */
static const char secretbox_ctx[crypto_kdf_CONTEXTBYTES] = {'a', 'c', 'c', 'm', 'f', 'a', '0', '1'};

void secretbox_from_key(struct secretbox *sb, const unsigned char key[SECRETBOX_KEY_BYTES])
{
    crypto_kdf_derive_from_key(sb->box_key, sizeof(sb->box_key), 1, secretbox_ctx, key);
    crypto_kdf_derive_from_key(sb->hash_key, sizeof(sb->hash_key), 2, secretbox_ctx, key);
}

int secretbox_load(struct secretbox *sb, const char *path, char *err, size_t errlen)
{
    unsigned char key[SECRETBOX_KEY_BYTES + 1];
    struct stat st;
    int rc = -1;
    ssize_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "secrets_key %s: %s", path,
                 errno == ENOENT ? "missing" : strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "secrets_key %s: not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errlen, "secrets_key %s: mode %04o is open to group or others, want 0600",
                 path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    /* One byte more than a key: a longer file is refused, not cut. */
    size_t got = 0;
    while (got < sizeof(key)) {
        n = read(fd, key + got, sizeof(key) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (n < 0) {
        snprintf(err, errlen, "secrets_key %s: %s", path, strerror(errno));
        goto out;
    }
    if (got != SECRETBOX_KEY_BYTES) {
        snprintf(err, errlen, "secrets_key %s: %s%zu bytes, want %d", path,
                 got > SECRETBOX_KEY_BYTES ? "at least " : "", got, SECRETBOX_KEY_BYTES);
        goto out;
    }
    secretbox_from_key(sb, key);
    rc = 0;
out:
    sodium_memzero(key, sizeof(key));
    if (fd >= 0)
        close(fd);
    return rc;
}

int secretbox_keygen(const char *path, char *err, size_t errlen)
{
    unsigned char key[SECRETBOX_KEY_BYTES];
    int rc = -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path,
                 errno == EEXIST ? "exists; refusing to overwrite a key" : strerror(errno));
        return -1;
    }
    randombytes_buf(key, sizeof(key));
    size_t put = 0;
    while (put < sizeof(key)) {
        ssize_t n = write(fd, key + put, sizeof(key) - put);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "short write");
            goto out;
        }
        put += (size_t)n;
    }
    /* fchmod: the umask may have taken bits from 0600; keep exactly 0600. */
    if (fchmod(fd, 0600) != 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(key, sizeof(key));
    if (close(fd) != 0 && rc == 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc != 0)
        unlink(path);
    return rc;
}

int secretbox_seal(const struct secretbox *sb, const unsigned char *m, size_t mlen,
                   unsigned char *out, size_t outlen)
{
    if (outlen < SECRETBOX_SEALED_LEN(mlen))
        return -1;
    randombytes_buf(out, SECRETBOX_NONCE_BYTES);
    return crypto_secretbox_xchacha20poly1305_easy(out + SECRETBOX_NONCE_BYTES, m, mlen, out,
                                                   sb->box_key) == 0
               ? 0
               : -1;
}

int secretbox_open(const struct secretbox *sb, const unsigned char *c, size_t clen,
                   unsigned char *m, size_t mlen, size_t *outlen)
{
    if (clen < SECRETBOX_SEALED_LEN(0) || mlen < clen - SECRETBOX_SEALED_LEN(0))
        return -1;
    size_t n = clen - SECRETBOX_SEALED_LEN(0);
    if (crypto_secretbox_xchacha20poly1305_open_easy(
            m, c + SECRETBOX_NONCE_BYTES, clen - SECRETBOX_NONCE_BYTES, c, sb->box_key) != 0)
        return -1;
    *outlen = n;
    return 0;
}

void secretbox_hash(const struct secretbox *sb, const char *s, size_t len,
                    unsigned char out[SECRETBOX_HASH_BYTES])
{
    crypto_generichash(out, SECRETBOX_HASH_BYTES, (const unsigned char *)s, len, sb->hash_key,
                       sizeof(sb->hash_key));
}

void secretbox_wipe(struct secretbox *sb)
{
    sodium_memzero(sb, sizeof(*sb));
}
