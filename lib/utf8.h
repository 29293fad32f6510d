/* utf8: untrusted bytes made into valid UTF-8 (SPEC §4: header values are
 * untrusted bytes; what is stored or shown of them is valid UTF-8 and at most
 * 512 bytes). Pure functions, thread-safe. */
#ifndef ACCESS_UTF8_H
#define ACCESS_UTF8_H

#include <stddef.h>

/* Bytes kept of a header value that is stored or shown (user agent, address). */
#define UTF8_HEADER_MAX 512

/* Length of the well-formed UTF-8 sequence at s (n > 0 bytes left): 1..4, or
 * 0 when it is not one (a stray continuation byte, an overlong form, a
 * surrogate, a value past U+10FFFF, a sequence cut short by n). NUL is a
 * well-formed one-byte sequence here. */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* Copy in[0..inlen) into out (outlen >= 1 bytes) as valid UTF-8: every byte
 * that does not start a well-formed sequence, and every NUL (PostgreSQL text
 * cannot hold one), becomes U+FFFD; the copy stops before the first
 * character that would not fit in outlen - 1 bytes, so it is cut at a
 * character boundary. out is NUL-terminated; returns its length. */
size_t utf8_sanitize(const char *in, size_t inlen, char *out, size_t outlen);

#endif
