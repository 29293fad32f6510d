#include "template.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

static int template_unsafe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 1;
    return 0;
}

/* Append s[0..n) with the variables replaced. */
static void template_expand(struct buf *out, const char *s, size_t n, const struct template_vars *v,
                            const char *minutes)
{
    static const char *const names[] = {"{{link}}", "{{email}}", "{{expires_minutes}}"};
    const char *vals[] = {v->link, v->email, minutes};
    size_t i = 0;
    while (i < n) {
        int hit = 0;
        for (size_t k = 0; k < 3 && s[i] == '{'; k++) {
            size_t nl = strlen(names[k]);
            if (n - i >= nl && memcmp(s + i, names[k], nl) == 0) {
                buf_puts(out, vals[k] != NULL ? vals[k] : "");
                i += nl;
                hit = 1;
                break;
            }
        }
        if (!hit)
            buf_putc(out, s[i++]);
    }
}

int template_render(const char *tpl, size_t len, const struct template_vars *v, struct buf *subject,
                    struct buf *body, char *err, size_t errlen)
{
    static const char pre[] = "Subject: ";
    char minutes[24];
    const char *nl;
    if ((v->link && template_unsafe(v->link, strlen(v->link))) ||
        (v->email && template_unsafe(v->email, strlen(v->email)))) {
        snprintf(err, errlen, "a template value holds CR, LF or NUL");
        return -1;
    }
    if (len < sizeof(pre) - 1 || memcmp(tpl, pre, sizeof(pre) - 1) != 0 ||
        (nl = memchr(tpl, '\n', len)) == NULL) {
        snprintf(err, errlen, "a template must start with a 'Subject: ' line");
        return -1;
    }
    snprintf(minutes, sizeof(minutes), "%ld", v->expires_minutes);
    size_t slen = (size_t)(nl - tpl) - (sizeof(pre) - 1);
    if (slen > 0 && tpl[sizeof(pre) - 1 + slen - 1] == '\r')
        slen--;
    template_expand(subject, tpl + sizeof(pre) - 1, slen, v, minutes);
    const char *b = nl + 1, *end = tpl + len;
    /* One empty line separates the subject from the body. */
    if (b < end && *b == '\r')
        b++;
    if (b < end && *b == '\n')
        b++;
    template_expand(body, b, (size_t)(end - b), v, minutes);
    return 0;
}

int template_address_ok(const char *s)
{
    size_t n = strlen(s);
    const char *at = strchr(s, '@');
    if (n < 3 || n > 254 || at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* Non-ASCII (SMTPUTF8) addresses cannot be RFC 2047 encoded: refused. */
        if (c <= 0x20 || c >= 0x7f || strchr("<>\",;()\\", c) != NULL)
            return 0;
    }
    return 1;
}

/* Length of the UTF-8 sequence starting with lead byte c (1 for others). */
static size_t template_seq_len(unsigned char c)
{
    return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

int template_header_value(struct buf *out, const char *text, size_t len)
{
    int ascii = 1;
    if (template_unsafe(text, len))
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 || (unsigned char)text[i] >= 0x7f)
            ascii = 0;
    if (ascii) {
        buf_append(out, text, len);
        return 0;
    }
    /* "=?UTF-8?B?" + base64 + "?=" <= 75: at most 45 raw bytes per word. */
    size_t i = 0;
    int first = 1;
    while (i < len) {
        size_t take = 0;
        while (i + take < len) {
            size_t sl = template_seq_len((unsigned char)text[i + take]);
            if (i + take + sl > len)
                sl = len - i - take;
            if (take + sl > 45)
                break;
            take += sl;
        }
        if (take == 0)
            take = 1;
        char b64[sodium_base64_ENCODED_LEN(45, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof(b64), (const unsigned char *)text + i, take,
                          sodium_base64_VARIANT_ORIGINAL);
        buf_printf(out, "%s=?UTF-8?B?%s?=", first ? "" : "\r\n ", b64);
        first = 0;
        i += take;
    }
    return 0;
}

int template_message(const struct template_message *m, struct buf *out, char *err, size_t errlen)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!template_address_ok(m->from) || !template_address_ok(m->to)) {
        snprintf(err, errlen, "From or To is not a plain address");
        return -1;
    }
    for (const char *p = m->message_id; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '-' || *p == '.')) {
            snprintf(err, errlen, "Message-ID holds a byte outside [A-Za-z0-9.-]");
            return -1;
        }
    }
    gmtime_r(&m->date, &tm);
    buf_printf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday], tm.tm_mday,
               months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    buf_printf(out, "Message-ID: <%s@%s>\r\n", m->message_id, strchr(m->from, '@') + 1);
    buf_printf(out, "From: %s\r\nTo: %s\r\nSubject: ", m->from, m->to);
    if (template_header_value(out, m->subject, strlen(m->subject)) != 0) {
        snprintf(err, errlen, "the subject holds CR, LF or NUL");
        return -1;
    }
    buf_puts(out, "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n\r\n");
    for (const char *p = m->body; *p; p++) {
        if (*p == '\r')
            continue;
        if (*p == '\n')
            buf_putc(out, '\r');
        buf_putc(out, *p);
    }
    if (out->len < 2 || out->data[out->len - 1] != '\n')
        buf_puts(out, "\r\n");
    return 0;
}
