#include "form.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "utf8.h"

static int form_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode s[0..n) into dst (room for n + 1): '+' is a space, %XX a byte.
 * The length, or -1 on a bad escape. */
static long form_decode(const char *s, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            dst[o++] = ' ';
        } else if (s[i] == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = form_hex(s[i + 1]);
            int lo = form_hex(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            dst[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[o++] = s[i];
        }
    }
    dst[o] = '\0';
    return (long)o;
}

/* Valid UTF-8 without C0 controls or DEL. */
static int form_text_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x20 || u[i] == 0x7f)
            return 0;
        size_t k = utf8_seq_len(u + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

enum form_result form_parse(const char *body, size_t len, struct form *out, char *err,
                            size_t errlen)
{
    const char *names[FORM_MAX_PAIRS];
    size_t given = 0;
    char *w;
    enum form_result rc = FORM_OK;

    memset(out, 0, sizeof(*out));
    if (len > FORM_MAX_BODY) {
        snprintf(err, errlen, "the form is %zu bytes; at most %d are allowed", len, FORM_MAX_BODY);
        return FORM_TOO_LARGE;
    }
    if (len == 0)
        return FORM_OK;
    /* Decoding never grows: one block of len + one NUL per segment. */
    out->memlen = 2 * len + 2;
    out->mem = malloc(out->memlen);
    if (out->mem == NULL) {
        snprintf(err, errlen, "out of memory");
        return FORM_TOO_LARGE;
    }
    w = out->mem;
    const char *p = body, *end = body + len;
    while (p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *seg_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(seg_end - p));
        if (seg_end == p || eq == NULL || eq == p) {
            snprintf(err, errlen, "parameter %zu is not name=value", given + 1);
            rc = FORM_MALFORMED;
            goto out;
        }
        if (given == FORM_MAX_PAIRS) {
            snprintf(err, errlen, "more than %d parameters", FORM_MAX_PAIRS);
            rc = FORM_TOO_LARGE;
            goto out;
        }
        size_t nlen_raw = (size_t)(eq - p), vlen_raw = (size_t)(seg_end - eq - 1);
        char *name = w;
        long nl = form_decode(p, nlen_raw, name);
        if (nl < 0) {
            snprintf(err, errlen, "parameter %zu: a bad percent escape in the name", given + 1);
            rc = FORM_MALFORMED;
            goto out;
        }
        w += nl + 1;
        char *value = w;
        long vl = form_decode(eq + 1, vlen_raw, value);
        if (vl < 0) {
            snprintf(err, errlen, "parameter %.64s: a bad percent escape in the value", name);
            rc = FORM_MALFORMED;
            goto out;
        }
        w += vl + 1;
        if (nl == 0 || !form_text_ok(name, (size_t)nl)) {
            snprintf(err, errlen, "parameter %zu: the name is empty or not text", given + 1);
            rc = nl == 0 ? FORM_MALFORMED : FORM_BAD_TEXT;
            goto out;
        }
        if (nl > FORM_MAX_NAME || vl > FORM_MAX_VALUE) {
            snprintf(err, errlen, "parameter %.64s is too long", name);
            rc = FORM_TOO_LARGE;
            goto out;
        }
        if (!form_text_ok(value, (size_t)vl)) {
            snprintf(err, errlen, "parameter %s: the value is not text", name);
            rc = FORM_BAD_TEXT;
            goto out;
        }
        for (size_t i = 0; i < given; i++) {
            if (strcmp(names[i], name) == 0) {
                snprintf(err, errlen, "parameter %s is given more than once", name);
                rc = FORM_DUPLICATE;
                goto out;
            }
        }
        names[given++] = name;
        if (vl > 0) {
            out->p[out->n].name = name;
            out->p[out->n].value = value;
            out->p[out->n].value_len = (size_t)vl;
            out->n++;
        }
        if (amp == NULL)
            break;
        p = amp + 1;
        if (p == end) {
            snprintf(err, errlen, "the form ends with '&'");
            rc = FORM_MALFORMED;
            goto out;
        }
    }
out:
    if (rc != FORM_OK)
        out->n = 0;
    return rc;
}

const char *form_get(const struct form *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->p[i].name, name) == 0)
            return f->p[i].value;
    return NULL;
}

void form_free(struct form *f)
{
    if (f->mem != NULL) {
        sodium_memzero(f->mem, f->memlen);
        free(f->mem);
    }
    memset(f, 0, sizeof(*f));
}
