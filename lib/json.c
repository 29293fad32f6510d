#include "json.h"

#include <ctype.h>
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

void json_put_compact(struct buf *b, const char *s, size_t n)
{
    int in_str = 0;
    buf_reserve(b, n);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            buf_putc(b, c);
            if (c == '\\' && i + 1 < n)
                buf_putc(b, s[++i]);
            else if (c == '"')
                in_str = 0;
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            buf_putc(b, c);
            in_str = c == '"';
        }
    }
    b->data[b->len] = '\0'; /* reserved above, even when nothing was appended */
}

/* Where json-c is lenient, RFC 8259 decides: check every token's shape
 * (strings without raw control characters and with valid escapes, numbers
 * of the RFC grammar, only true/false/null as words, nothing else outside
 * strings but structure and whitespace) and count the name separators, one
 * per object member. The structure itself is left to json-c. 0, or -1 with
 * *at and *why set. */
static int json_lex_strict(const char *s, size_t n, size_t *colons, size_t *at, const char **why)
{
    static const char *const words[] = {"true", "false", "null"};
    size_t i = 0;
    *colons = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        *at = i;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '{' || c == '}' || c == '[' ||
            c == ']' || c == ',') {
            i++;
        } else if (c == ':') {
            (*colons)++;
            i++;
        } else if (c == '"') {
            for (i++;; i++) {
                if (i >= n) {
                    *why = "unterminated string";
                    return -1;
                }
                c = (unsigned char)s[i];
                if (c == '"')
                    break;
                if (c < 0x20) {
                    *at = i;
                    *why = "raw control character in a string";
                    return -1;
                }
                if (c != '\\')
                    continue;
                *at = i;
                if (++i >= n || strchr("\"\\/bfnrtu", s[i]) == NULL || s[i] == '\0') {
                    *why = "invalid escape in a string";
                    return -1;
                }
                if (s[i] == 'u') {
                    for (int k = 0; k < 4; k++)
                        if (++i >= n || !isxdigit((unsigned char)s[i])) {
                            *why = "invalid \\u escape in a string";
                            return -1;
                        }
                }
            }
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (c == '-')
                i++;
            if (i < n && s[i] == '0') {
                i++;
            } else if (i < n && s[i] >= '1' && s[i] <= '9') {
                while (i < n && isdigit((unsigned char)s[i]))
                    i++;
            } else {
                *why = "invalid number";
                return -1;
            }
            if (i < n && s[i] == '.') {
                size_t d = ++i;
                while (i < n && isdigit((unsigned char)s[i]))
                    i++;
                if (i == d) {
                    *why = "invalid number";
                    return -1;
                }
            }
            if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                i++;
                if (i < n && (s[i] == '+' || s[i] == '-'))
                    i++;
                size_t d = i;
                while (i < n && isdigit((unsigned char)s[i]))
                    i++;
                if (i == d) {
                    *why = "invalid number";
                    return -1;
                }
            }
            /* json-c reads "00" or "1x" as one token; a number ends here. */
            if (i < n && (isalnum((unsigned char)s[i]) || strchr(".+-", s[i]) != NULL) &&
                s[i] != '\0') {
                *why = "invalid number";
                return -1;
            }
        } else {
            size_t w;
            for (w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
                size_t wl = strlen(words[w]);
                if (n - i >= wl && memcmp(s + i, words[w], wl) == 0 &&
                    (n - i == wl || !isalnum((unsigned char)s[i + wl]))) {
                    i += wl;
                    break;
                }
            }
            if (w == sizeof(words) / sizeof(words[0])) {
                *why = c >= 0x20 && c < 0x7f ? "unexpected character (NaN, Infinity, a comment "
                                               "or a quote other than \")"
                                             : "unexpected byte";
                return -1;
            }
        }
    }
    return 0;
}

/* Members of every object in o (json-c keeps one of duplicate names). The
 * parser's depth limit bounds the recursion. */
static size_t json_count_members(json_object *o)
{
    size_t count = 0;
    if (json_object_is_type(o, json_type_object)) {
        json_object_object_foreach(o, key, val)
        {
            (void)key;
            count += 1 + json_count_members(val);
        }
    } else if (json_object_is_type(o, json_type_array)) {
        size_t len = json_object_array_length(o);
        for (size_t i = 0; i < len; i++)
            count += json_count_members(json_object_array_get_idx(o, i));
    }
    return count;
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
    size_t colons = 0, at = 0;
    const char *why = NULL;
    if (json_lex_strict(body, len, &colons, &at, &why) != 0) {
        snprintf(err, errlen, "the request body is not valid JSON: %s at byte %zu", why, at);
        goto out;
    }
    tok = json_tokener_new_ex(JSON_MAX_DEPTH);
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
    if (json_count_members(obj) != colons) {
        snprintf(err, errlen,
                 "the request body is not valid JSON: an object repeats a member "
                 "name");
        goto out;
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
