/* libFuzzer target: pagination cursors and base64url (SPEC §4 "page").
 *
 * 1. listing_cursor_decode(TEST_CURSOR_KEY, ) of the input as a C string; a cursor it takes
 *    must survive listing_cursor_encode(TEST_CURSOR_KEY, ) and decode to the same values.
 * 2. b64url_decode() is strict (one text per byte string): when it takes the
 *    input, b64url_encode() of the bytes must give the input back exactly.
 *    Decoding into a buffer one byte short must fail, not overflow.
 * 3. b64url_encode() of the input must decode back to the input. */
#include <stdint.h>
#include <string.h>

#include "accounts.h"
#include "b64url.h"
#include "fuzz_util.h"
#include "listing.h"

static const unsigned char TEST_CURSOR_KEY[LISTING_CURSOR_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_cursor(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    long long micros, m2;
    char id[37], id2[37], enc[256];

    FUZZ_REQUIRE(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    if (listing_cursor_decode(TEST_CURSOR_KEY, s, &micros, id) == 0) {
        FUZZ_REQUIRE(micros >= 0 && strlen(id) == 36);
        memset(enc, 0x55, sizeof(enc));
        listing_cursor_encode(TEST_CURSOR_KEY, micros, id, enc, sizeof(enc));
        FUZZ_REQUIRE(memchr(enc, '\0', sizeof(enc)) != NULL);
        FUZZ_REQUIRE(listing_cursor_decode(TEST_CURSOR_KEY, enc, &m2, id2) == 0);
        FUZZ_REQUIRE(m2 == micros && strcmp(id, id2) == 0);
    }
    free(s);
}

static void check_b64url(const uint8_t *data, size_t size)
{
    const char *src = (const char *)data;
    size_t rem = size % 4;
    size_t need = (size / 4) * 3 + (rem > 1 ? rem - 1 : 0); /* bytes for a valid text */
    unsigned char *dst = malloc(need ? need : 1);
    size_t n = 0;

    FUZZ_REQUIRE(dst != NULL);
    if (b64url_decode(dst, need, src, size, &n) == 0) {
        FUZZ_REQUIRE(n == need);
        size_t elen = b64url_encoded_len(n);
        char *enc = malloc(elen + 1);
        FUZZ_REQUIRE(enc != NULL);
        FUZZ_REQUIRE(b64url_encode(enc, elen + 1, dst, n) == elen);
        FUZZ_REQUIRE(elen == size && memcmp(enc, src, size) == 0);
        free(enc);
        if (need > 0) {
            size_t n2;
            FUZZ_REQUIRE(b64url_decode(dst, need - 1, src, size, &n2) != 0);
        }
    }
    free(dst);

    /* Any bytes encode to a text that decodes back to them. */
    size_t elen = b64url_encoded_len(size);
    char *enc = malloc(elen + 1);
    unsigned char *back = malloc(size ? size : 1);
    FUZZ_REQUIRE(enc != NULL && back != NULL);
    FUZZ_REQUIRE(b64url_encode(enc, elen + 1, data, size) == elen && strlen(enc) == elen);
    if (size > 0)
        FUZZ_REQUIRE(b64url_encode(enc, elen, data, size) == 0); /* too small: refused */
    FUZZ_REQUIRE(b64url_encode(enc, elen + 1, data, size) == elen);
    FUZZ_REQUIRE(b64url_decode(back, size, enc, elen, &n) == 0 && n == size);
    FUZZ_REQUIRE(memcmp(back, data, size) == 0);
    free(back);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_cursor(data, size);
    check_b64url(data, size);
    return 0;
}
