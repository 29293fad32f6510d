#include "b64url.h"

static const char b64url_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t b64url_encoded_len(size_t n)
{
    return (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0);
}

size_t b64url_encode(char *dst, size_t dstlen, const unsigned char *src, size_t n)
{
    size_t need = b64url_encoded_len(n);
    size_t j = 0, i = 0;
    if (dstlen < need + 1)
        return 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)src[i] << 16 | (unsigned)src[i + 1] << 8 | src[i + 2];
        dst[j++] = b64url_alpha[v >> 18];
        dst[j++] = b64url_alpha[(v >> 12) & 63];
        dst[j++] = b64url_alpha[(v >> 6) & 63];
        dst[j++] = b64url_alpha[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)src[i] << 16;
        dst[j++] = b64url_alpha[v >> 18];
        dst[j++] = b64url_alpha[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)src[i] << 16 | (unsigned)src[i + 1] << 8;
        dst[j++] = b64url_alpha[v >> 18];
        dst[j++] = b64url_alpha[(v >> 12) & 63];
        dst[j++] = b64url_alpha[(v >> 6) & 63];
    }
    dst[j] = '\0';
    return j;
}

static int b64url_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int b64url_decode(unsigned char *dst, size_t dstlen, const char *src, size_t n, size_t *outlen)
{
    size_t rem = n % 4;
    size_t need = (n / 4) * 3 + (rem ? rem - 1 : 0);
    size_t i = 0, j = 0;
    if (rem == 1 || need > dstlen)
        return -1;
    for (; i + 3 < n; i += 4) {
        int a = b64url_val(src[i]), b = b64url_val(src[i + 1]);
        int c = b64url_val(src[i + 2]), d = b64url_val(src[i + 3]);
        if ((a | b | c | d) < 0)
            return -1;
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        dst[j++] = (unsigned char)(v >> 16);
        dst[j++] = (unsigned char)(v >> 8);
        dst[j++] = (unsigned char)v;
    }
    if (rem == 2) {
        int a = b64url_val(src[i]), b = b64url_val(src[i + 1]);
        if ((a | b) < 0 || (b & 15) != 0)
            return -1;
        dst[j++] = (unsigned char)(a << 2 | b >> 4);
    } else if (rem == 3) {
        int a = b64url_val(src[i]), b = b64url_val(src[i + 1]), c = b64url_val(src[i + 2]);
        if ((a | b | c) < 0 || (c & 3) != 0)
            return -1;
        unsigned v = (unsigned)a << 12 | (unsigned)b << 6 | (unsigned)c;
        dst[j++] = (unsigned char)(v >> 10);
        dst[j++] = (unsigned char)(v >> 2);
    }
    *outlen = j;
    return 0;
}
