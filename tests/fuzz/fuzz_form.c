/* libFuzzer target: form_parse() on hostile bodies (SPEC §11).
 *
 * For any input: no crash or leak; on success every pair has a non-empty
 * NUL-free UTF-8 name and value within the bounds, names are distinct,
 * form_get() finds each, and the count is within FORM_MAX_PAIRS; on
 * failure no pair is exposed. */
#include <stdint.h>
#include <string.h>

#include "form.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct form f;
    char err[128];
    enum form_result r = form_parse((const char *)data, size, &f, err, sizeof(err));
    if (r != FORM_OK) {
        FUZZ_REQUIRE(f.n == 0);
        FUZZ_REQUIRE(strlen(err) < sizeof(err));
    } else {
        FUZZ_REQUIRE(f.n <= FORM_MAX_PAIRS);
        for (size_t i = 0; i < f.n; i++) {
            size_t nl = strlen(f.p[i].name);
            FUZZ_REQUIRE(nl > 0 && nl <= FORM_MAX_NAME);
            FUZZ_REQUIRE(f.p[i].value_len > 0 && f.p[i].value_len <= FORM_MAX_VALUE);
            FUZZ_REQUIRE(strlen(f.p[i].value) == f.p[i].value_len);
            FUZZ_REQUIRE(fuzz_utf8_valid((const unsigned char *)f.p[i].name, nl));
            FUZZ_REQUIRE(
                fuzz_utf8_valid((const unsigned char *)f.p[i].value, f.p[i].value_len));
            FUZZ_REQUIRE(form_get(&f, f.p[i].name) == f.p[i].value);
            for (size_t j = 0; j < i; j++)
                FUZZ_REQUIRE(strcmp(f.p[i].name, f.p[j].name) != 0);
        }
    }
    form_free(&f);
    return 0;
}
