/* form: a strict application/x-www-form-urlencoded decoder for the OAuth
 * endpoints (SPEC §11, RFC 6749 §3.1, WHATWG URL "urlencoded parser" with
 * the refusals an authorization server may apply).
 *
 * Rules: pairs are separated by '&'; every pair is name=value with a
 * non-empty name; '+' is a space; '%' must be followed by two hex digits;
 * decoded names and values must be valid UTF-8 without NUL, C0 control
 * bytes or DEL (no OAuth parameter holds one); a name given twice is
 * refused (RFC 6749 §3.1: "parameters MUST NOT be included more than once");
 * a pair with an empty value counts as omitted (RFC 6749 §3.1) but still as
 * given for the duplicate rule; empty segments ("a=1&&b=2", a trailing '&')
 * are refused. Bounds: FORM_MAX_PAIRS pairs, names up to FORM_MAX_NAME and
 * values up to FORM_MAX_VALUE decoded bytes, bodies up to FORM_MAX_BODY.
 *
 * Pure and thread-safe; a parsed form owns one heap block (form_free). */
#ifndef ACCESS_FORM_H
#define ACCESS_FORM_H

#include <stddef.h>

#define FORM_MAX_PAIRS 16
#define FORM_MAX_NAME  64
#define FORM_MAX_VALUE 8192
#define FORM_MAX_BODY  16384

enum form_result {
    FORM_OK = 0,
    FORM_TOO_LARGE, /* body, pair count, a name or a value past its bound */
    FORM_MALFORMED, /* empty segment, no '=', empty name, bad percent escape */
    FORM_BAD_TEXT,  /* decoded bytes not UTF-8, or holding control bytes */
    FORM_DUPLICATE, /* a name given twice */
};

struct form_pair {
    const char *name; /* NUL-terminated, decoded */
    const char *value;
    size_t value_len;
};

struct form {
    size_t n; /* pairs with a non-empty value */
    struct form_pair p[FORM_MAX_PAIRS];
    char *mem; /* names and values, wiped by form_free() */
    size_t memlen;
};

/* Decode body[0..len) into *out (zeroed first). FORM_OK, or another result
 * with err naming the problem (never quoting a value: it may be a secret).
 * On any result the caller calls form_free(). */
enum form_result form_parse(const char *body, size_t len, struct form *out, char *err,
                            size_t errlen) __attribute__((warn_unused_result));
/* The value of name, or NULL when absent or empty. */
const char *form_get(const struct form *f, const char *name);
/* Free what form_parse() allocated; wipes it (assertions are credentials). */
void form_free(struct form *f);

#endif
