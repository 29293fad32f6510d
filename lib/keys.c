#include "keys.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <json-c/printbuf.h>
#include <sodium.h>

#include "b64url.h"

void keys_thumbprint(const unsigned char pk[32], char out[KEYS_KID_LEN + 1])
{
    char x[48], members[128];
    unsigned char h[crypto_hash_sha256_BYTES];
    b64url_encode(x, sizeof(x), pk, 32);
    /* Required members in lexicographic order, no whitespace (RFC 7638 §3). */
    int n =
        snprintf(members, sizeof(members), "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x);
    crypto_hash_sha256(h, (const unsigned char *)members, (unsigned long long)n);
    b64url_encode(out, KEYS_KID_LEN + 1, h, sizeof(h));
}

static const char *keys_str(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int keys_parse_one(json_object *jwk, size_t idx, struct keys_entry *e, char *err,
                          size_t errlen)
{
    const char *kty = keys_str(jwk, "kty"), *crv = keys_str(jwk, "crv");
    const char *x = keys_str(jwk, "x"), *d = keys_str(jwk, "d"), *kid = keys_str(jwk, "kid");
    unsigned char seed[32], pk[32];
    size_t n;
    memset(e, 0, sizeof(*e));
    if (kty == NULL || strcmp(kty, "OKP") != 0 || crv == NULL || strcmp(crv, "Ed25519") != 0) {
        snprintf(err, errlen, "key %zu: only kty OKP with crv Ed25519 is supported", idx);
        return -1;
    }
    if (x == NULL || b64url_decode(e->pk, sizeof(e->pk), x, strlen(x), &n) != 0 || n != 32) {
        snprintf(err, errlen, "key %zu: \"x\" must be 32 bytes of base64url", idx);
        return -1;
    }
    if (d != NULL) {
        if (b64url_decode(seed, sizeof(seed), d, strlen(d), &n) != 0 || n != 32) {
            snprintf(err, errlen, "key %zu: \"d\" must be 32 bytes of base64url", idx);
            sodium_memzero(seed, sizeof(seed));
            return -1;
        }
        crypto_sign_seed_keypair(pk, e->sk, seed);
        sodium_memzero(seed, sizeof(seed));
        if (sodium_memcmp(pk, e->pk, 32) != 0) {
            snprintf(err, errlen, "key %zu: \"d\" does not belong to \"x\"", idx);
            sodium_memzero(e->sk, sizeof(e->sk));
            return -1;
        }
        e->has_private = 1;
    }
    keys_thumbprint(e->pk, e->kid);
    if (kid != NULL && strcmp(kid, e->kid) != 0) {
        snprintf(err, errlen, "key %zu: \"kid\" %s is not the RFC 7638 thumbprint %s", idx, kid,
                 e->kid);
        sodium_memzero(e->sk, sizeof(e->sk));
        return -1;
    }
    return 0;
}

/* json-c keeps what it parsed in its objects and in the tokener's scratch
 * buffer, and frees both without wiping: wipe every "d" and the scratch. */
static void keys_wipe_json(json_object *root, json_tokener *tok)
{
    json_object *arr, *v;
    if (root != NULL && json_object_object_get_ex(root, "keys", &arr) &&
        json_object_is_type(arr, json_type_array)) {
        size_t n = json_object_array_length(arr);
        for (size_t i = 0; i < n; i++) {
            json_object *jwk = json_object_array_get_idx(arr, i);
            if (json_object_is_type(jwk, json_type_object) &&
                json_object_object_get_ex(jwk, "d", &v) && json_object_is_type(v, json_type_string))
                sodium_memzero((void *)(uintptr_t)json_object_get_string(v),
                               (size_t)json_object_get_string_len(v));
        }
    }
    /* The deprecation of these fields is about API stability, not access. */
    if (tok != NULL && tok->pb != NULL && tok->pb->buf != NULL)
        sodium_memzero(tok->pb->buf, (size_t)tok->pb->size);
}

int keys_parse(const char *text, size_t len, struct keyset *out, char *err, size_t errlen)
{
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, text, (int)len);
    json_object *arr;
    int rc = -1, have_active = 0;
    memset(out, 0, sizeof(*out));
    if (json_tokener_get_error(tok) != json_tokener_success || root == NULL) {
        snprintf(err, errlen, "not valid JSON");
        goto out;
    }
    if (!json_object_object_get_ex(root, "keys", &arr) ||
        !json_object_is_type(arr, json_type_array)) {
        snprintf(err, errlen, "expected a JWK set: an object with a \"keys\" array");
        goto out;
    }
    size_t n = json_object_array_length(arr);
    if (n == 0 || n > KEYS_MAX) {
        snprintf(err, errlen, "the set holds %zu keys; 1..%d are allowed", n, KEYS_MAX);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (keys_parse_one(json_object_array_get_idx(arr, i), i, &out->k[i], err, errlen) != 0)
            goto out;
        out->n = i + 1;
        if (out->k[i].has_private) {
            out->active = i;
            have_active = 1;
        }
    }
    if (!have_active) {
        snprintf(err, errlen, "no key has a private part \"d\": nothing can sign");
        goto out;
    }
    rc = 0;
out:
    if (rc != 0)
        keys_wipe(out);
    keys_wipe_json(root, tok);
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

int keys_load(const char *path, struct keyset *out, char *err, size_t errlen)
{
    char sub[200];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        snprintf(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size > 1024 * 1024) {
        snprintf(err, errlen, "key file %s is empty or larger than 1 MiB", path);
        close(fd);
        return -1;
    }
    /* Checked on the open file, so a chmod between check and read cannot slip by. */
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        snprintf(err, errlen,
                 "key file %s has mode %04o: it holds private keys, so group and others must "
                 "have no access (chmod 600 %s)",
                 path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    char *text = sodium_malloc(len + 1);
    ssize_t got = text ? read(fd, text, len) : -1;
    close(fd);
    if (got != (ssize_t)len) {
        snprintf(err, errlen, "cannot read key file %s", path);
        if (text)
            sodium_free(text);
        return -1;
    }
    text[len] = '\0';
    int rc = keys_parse(text, len, out, sub, sizeof(sub));
    sodium_free(text); /* wipes the private text */
    if (rc != 0)
        snprintf(err, errlen, "key file %s: %s", path, sub);
    return rc;
}

static void keys_put_jwk(struct buf *b, const struct keys_entry *e, int with_private)
{
    char x[48], d[48];
    b64url_encode(x, sizeof(x), e->pk, 32);
    buf_printf(b,
               "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"use\":\"sig\",\"x\":\"%s\"",
               e->kid, x);
    if (with_private && e->has_private) {
        b64url_encode(d, sizeof(d), e->sk, 32); /* the seed half */
        buf_printf(b, ",\"d\":\"%s\"", d);
        sodium_memzero(d, sizeof(d));
    }
    buf_putc(b, '}');
}

void keys_public_jwks(const struct keyset *ks, struct buf *out)
{
    buf_puts(out, "{\"keys\":[");
    /* Newest first: clients that take the first key take the active one. */
    for (size_t i = ks->n; i-- > 0;) {
        keys_put_jwk(out, &ks->k[i], 0);
        if (i > 0)
            buf_putc(out, ',');
    }
    buf_puts(out, "]}");
}

/* Write ks (only the active key keeps "d") to path atomically, mode 0600. */
static int keys_write(const char *path, const struct keyset *ks, char *err, size_t errlen)
{
    struct buf b = {0}, tmp = {0};
    int rc = -1, fd = -1;
    /* Room for KEYS_MAX keys up front: a realloc would free a copy of "d"
     * unwiped. */
    buf_reserve(&b, 256 * (KEYS_MAX + 1));
    buf_puts(&b, "{\"keys\":[");
    for (size_t i = 0; i < ks->n; i++) {
        if (i)
            buf_putc(&b, ',');
        keys_put_jwk(&b, &ks->k[i], i == ks->active);
    }
    buf_puts(&b, "]}\n");
    buf_printf(&tmp, "%s.tmp.%d", path, (int)getpid());
    fd = open(tmp.data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp.data, strerror(errno));
        goto out;
    }
    if (write(fd, b.data, b.len) != (ssize_t)b.len || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp.data, strerror(errno));
        unlink(tmp.data);
        goto out;
    }
    if (rename(tmp.data, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp.data, path, strerror(errno));
        unlink(tmp.data);
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (b.data)
        sodium_memzero(b.data, b.cap);
    buf_free(&b);
    buf_free(&tmp);
    return rc;
}

int keys_generate(const char *path, int rotate, char kid_out[KEYS_KID_LEN + 1], char *err,
                  size_t errlen)
{
    struct keyset ks;
    struct stat st;
    int rc = -1;
    memset(&ks, 0, sizeof(ks));
    if (rotate) {
        if (keys_load(path, &ks, err, errlen) != 0)
            return -1;
    } else if (stat(path, &st) == 0) {
        snprintf(err, errlen, "%s exists; use 'keygen --rotate %s' to add a key", path, path);
        return -1;
    }
    if (ks.n == KEYS_MAX) {
        /* Drop the oldest verification key to make room. */
        memmove(&ks.k[0], &ks.k[1], sizeof(ks.k[0]) * (KEYS_MAX - 1));
        ks.n--;
    }
    for (size_t i = 0; i < ks.n; i++) {
        sodium_memzero(ks.k[i].sk, sizeof(ks.k[i].sk));
        ks.k[i].has_private = 0;
    }
    struct keys_entry *e = &ks.k[ks.n];
    crypto_sign_keypair(e->pk, e->sk);
    e->has_private = 1;
    keys_thumbprint(e->pk, e->kid);
    ks.active = ks.n;
    ks.n++;
    rc = keys_write(path, &ks, err, errlen);
    if (rc == 0)
        memcpy(kid_out, e->kid, KEYS_KID_LEN + 1);
    keys_wipe(&ks);
    return rc;
}

const struct keys_entry *keys_find(const struct keyset *ks, const char *kid, size_t kid_len)
{
    for (size_t i = 0; i < ks->n; i++)
        if (kid_len == KEYS_KID_LEN && memcmp(ks->k[i].kid, kid, KEYS_KID_LEN) == 0)
            return &ks->k[i];
    return NULL;
}

void keys_wipe(struct keyset *ks)
{
    sodium_memzero(ks, sizeof(*ks));
}
