/* libFuzzer target: utf8_sanitize() on hostile header bytes (SPEC §4).
 *
 * For any input and any output size: the result is valid UTF-8 without NUL,
 * fits the buffer, is NUL-terminated; valid input without NUL is kept as a
 * prefix cut at a character boundary; and every kept byte either is the
 * input's byte at the same place in the walk or part of a U+FFFD. */
#include <stdint.h>
#include <string.h>

#include "utf8.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[UTF8_HEADER_MAX + 1];
    /* The first byte picks the output size (1..513) so short cuts are hit too. */
    size_t outlen = size > 0 ? (size_t)data[0] * 2 + 1 : sizeof(out);
    if (outlen > sizeof(out))
        outlen = sizeof(out);
    const char *in = (const char *)data;
    size_t n = utf8_sanitize(in, size, out, outlen);
    FUZZ_REQUIRE(n < outlen && out[n] == '\0');
    FUZZ_REQUIRE(strlen(out) == n); /* no NUL inside */
    FUZZ_REQUIRE(fuzz_utf8_valid((const unsigned char *)out, n));

    int valid = fuzz_utf8_valid(data, size) && memchr(data, 0, size) == NULL;
    if (valid) {
        /* A prefix of the input ending at a character boundary, as long as fits. */
        FUZZ_REQUIRE(n <= size && memcmp(out, data, n) == 0);
        FUZZ_REQUIRE(n == size || (data[n] & 0xc0) != 0x80);
        if (n < size) {
            size_t next = 1;
            while (n + next < size && (data[n + next] & 0xc0) == 0x80)
                next++;
            FUZZ_REQUIRE(n + next > outlen - 1);
        }
    } else {
        FUZZ_REQUIRE(n <= size * 3);
    }
    /* Cleaning what is already clean changes nothing. */
    char again[UTF8_HEADER_MAX + 1];
    FUZZ_REQUIRE(utf8_sanitize(out, n, again, sizeof(again)) == n && memcmp(again, out, n) == 0);
    return 0;
}
