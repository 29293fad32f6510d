#include "utf8.h"

#include <string.h>

size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned int cp;
    if (c < 0x80)
        return 1;
    /* 0xc0, 0xc1 only start overlong forms; past 0xf4 only values past U+10FFFF. */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

size_t utf8_sanitize(const char *in, size_t inlen, char *out, size_t outlen)
{
    static const char fffd[] = "\xef\xbf\xbd";
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0;
    if (outlen == 0)
        return 0;
    for (size_t i = 0; i < inlen;) {
        size_t len = p[i] == 0 ? 0 : utf8_seq_len(p + i, inlen - i);
        const void *seq = len ? (const void *)(p + i) : fffd;
        size_t seqlen = len ? len : sizeof(fffd) - 1;
        if (seqlen > outlen - 1 - o)
            break;
        memcpy(out + o, seq, seqlen);
        o += seqlen;
        i += len ? len : 1;
    }
    out[o] = '\0';
    return o;
}
