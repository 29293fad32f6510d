/* b64url: base64url without padding (RFC 4648 §5), as JOSE uses it.
 * Decoding is strict: only the URL-safe alphabet, no '=' padding, no
 * whitespace, and the unused low bits of the last character must be zero
 * (one text per byte string). Thread-safe (pure). */
#ifndef ACCESS_B64URL_H
#define ACCESS_B64URL_H

#include <stddef.h>

/* Characters needed to encode n bytes (without NUL). */
size_t b64url_encoded_len(size_t n);
/* Encode src[0..n) into dst (dstlen >= b64url_encoded_len(n) + 1, NUL
 * written). Returns the length written, or 0 if dst is too small and n > 0. */
size_t b64url_encode(char *dst, size_t dstlen, const unsigned char *src, size_t n);
/* Decode src[0..n) into dst (dstlen bytes); *outlen gets the byte count.
 * 0 on success, -1 on any malformed input or if dst is too small. */
int b64url_decode(unsigned char *dst, size_t dstlen, const char *src, size_t n, size_t *outlen)
    __attribute__((warn_unused_result));

#endif
