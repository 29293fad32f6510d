/* json: small helpers for writing compact JSON by hand on hot paths and for
 * reading request bodies with json-c.
 *
 * Writing: json_put_string() appends a quoted, escaped JSON string; invalid
 * UTF-8 bytes are replaced by U+FFFD so output is always valid JSON.
 * Reading: json_parse_object() parses a whole body with json-c and demands an
 * object; where json-c is lenient RFC 8259 decides (see docs/decisions.md,
 * "Strict JSON"). Thread-safe (no shared state). */
#ifndef ACCESS_JSON_H
#define ACCESS_JSON_H

#include <stddef.h>

#include <json-c/json.h>

#include "buf.h"

/* Append s[0..n) as a JSON string literal (with the quotes). */
void json_put_string(struct buf *b, const char *s, size_t n);
/* Same for a NUL-terminated string. */
void json_put_cstr(struct buf *b, const char *s);
/* Append the JSON text s[0..n) without the whitespace outside its strings
 * (PostgreSQL prints jsonb as {"k": "v", "n": 1}; bodies are compact). The
 * text must be valid JSON (it is not checked); strings are copied as is. */
void json_put_compact(struct buf *b, const char *s, size_t n);

/* Nesting of arrays and objects json_parse_object() accepts. */
#define JSON_MAX_DEPTH 32

enum json_parse_result {
    JSON_PARSE_OK = 0,
    JSON_PARSE_INVALID,    /* not JSON (or empty, or trailing bytes) */
    JSON_PARSE_NOT_OBJECT, /* JSON, but not an object */
};

/* Parse body[0..len) as one JSON value. On JSON_PARSE_OK *out is an object
 * the caller releases with json_object_put(). On error *out is NULL and err
 * (errlen bytes) says why in words fit for a problem document's detail. */
enum json_parse_result json_parse_object(const char *body, size_t len, json_object **out, char *err,
                                         size_t errlen);

/* Length of the well-formed UTF-8 sequence at s (n > 0 bytes left): 1..4,
 * or 0 when it is not (overlong, surrogate, past U+10FFFF, truncated). */
size_t json_utf8_len(const unsigned char *s, size_t n);

#endif
