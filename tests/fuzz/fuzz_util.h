/* Helpers shared by the libFuzzer targets in tests/fuzz/. */
#ifndef ACCESS_FUZZ_UTIL_H
#define ACCESS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

/* Abort with a message: libFuzzer records the input as a crash. */
#define FUZZ_REQUIRE(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Well-formed UTF-8 (Unicode Table 3-7), written independently of lib/json.c
 * so the two check each other. */
static inline int fuzz_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c == 0xe0) {
            len = 3;
            lo = 0xa0;
        } else if (c == 0xed) {
            len = 3;
            hi = 0x9f;
        } else if (c >= 0xe1 && c <= 0xef) {
            len = 3;
        } else if (c == 0xf0) {
            len = 4;
            lo = 0x90;
        } else if (c == 0xf4) {
            len = 4;
            hi = 0x8f;
        } else if (c >= 0xf1 && c <= 0xf3) {
            len = 4;
        } else {
            return 0;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return 0;
        i += len;
    }
    return 1;
}

#endif
