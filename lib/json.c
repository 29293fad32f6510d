#include "json.h"

#include <stdio.h>
#include <string.h>

#include "utf8.h"

size_t json_utf8_len(const unsigned char *s, size_t n)
{
    return utf8_seq_len(s, n);
}

void json_put_string(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    buf_reserve(b, n + 2);
    buf_putc(b, '"');
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_append(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (c == '\n') {
                buf_append(b, "\\n", 2);
            } else if (c == '\t') {
                buf_append(b, "\\t", 2);
            } else if (c == '\r') {
                buf_append(b, "\\r", 2);
            } else {
                buf_append(b, esc, 6);
            }
            i++;
        } else if (c < 0x80) {
            buf_putc(b, (char)c);
            i++;
        } else {
            size_t len = json_utf8_len(p + i, n - i);
            if (len == 0) {
                buf_append(b, "\xef\xbf\xbd", 3);
                i++;
            } else {
                buf_append(b, p + i, len);
                i += len;
            }
        }
    }
    buf_putc(b, '"');
}

void json_put_cstr(struct buf *b, const char *s)
{
    json_put_string(b, s, strlen(s));
}

enum json_parse_result json_parse_object(const char *body, size_t len, json_object **out, char *err,
                                         size_t errlen)
{
    enum json_parse_result rc = JSON_PARSE_INVALID;
    json_tokener *tok = NULL;
    json_object *obj = NULL;

    *out = NULL;
    if (len == 0) {
        snprintf(err, errlen, "the request body is empty; a JSON object is expected");
        goto out;
    }
    if (len > (size_t)0x7fffffff) {
        snprintf(err, errlen, "the request body is too large");
        goto out;
    }
    /* RFC 8259 text is UTF-8. json-c's own check lets overlong forms and
     * surrogates through, which PostgreSQL would later refuse. */
    for (size_t i = 0; i < len;) {
        size_t n = json_utf8_len((const unsigned char *)body + i, len - i);
        if (n == 0) {
            snprintf(err, errlen, "the request body is not valid JSON: invalid UTF-8 at byte %zu",
                     i);
            goto out;
        }
        i += n;
    }
    tok = json_tokener_new_ex(32);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (jerr == json_tokener_continue) {
        /* The whole body was consumed. A top-level number, true, false or
         * null has no inherent end: json-c completes it only on a final NUL. */
        obj = json_tokener_parse_ex(tok, "", 1);
        if (json_tokener_get_error(tok) != json_tokener_success) {
            snprintf(err, errlen, "the request body is not valid JSON: unexpected end of input");
            goto out;
        }
    } else if (jerr != json_tokener_success) {
        snprintf(err, errlen, "the request body is not valid JSON: %s at byte %zu",
                 json_tokener_error_desc(jerr), json_tokener_get_parse_end(tok));
        goto out;
    } else {
        /* Only whitespace may follow the value. */
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            char c = body[i];
            if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
                snprintf(err, errlen,
                         "the request body is not valid JSON: trailing data at byte %zu", i);
                goto out;
            }
        }
    }
    if (!json_object_is_type(obj, json_type_object)) {
        snprintf(err, errlen, "the request body must be a JSON object");
        rc = JSON_PARSE_NOT_OBJECT;
        goto out;
    }
    *out = obj;
    obj = NULL;
    rc = JSON_PARSE_OK;
out:
    if (obj != NULL)
        json_object_put(obj);
    if (tok != NULL)
        json_tokener_free(tok);
    return rc;
}
