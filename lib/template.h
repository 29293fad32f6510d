/* template: message templates and RFC 5322 messages (SPEC §9). Pure: no
 * I/O, no clock, no randomness of its own; unit-tested and fuzzed.
 *
 * A template is text whose first line is "Subject: …", then an empty line,
 * then the body. {{link}}, {{email}} and {{expires_minutes}} are replaced
 * everywhere; any other {{…}} is left as it is.
 *
 * Safety: values never reach a header unchecked. A value holding CR, LF or
 * NUL is refused (no header injection through an email address or a link);
 * addresses must be a plain addr-spec (no space, quote, angle bracket,
 * comma or control byte); a Subject with non-ASCII bytes is RFC 2047
 * encoded (UTF-8, base64 words), so no raw 8-bit byte is ever in a header. */
#ifndef ACCESS_TEMPLATE_H
#define ACCESS_TEMPLATE_H

#include <stddef.h>
#include <time.h>

#include "buf.h"

struct template_vars {
    const char *link;
    const char *email;
    long expires_minutes;
};

/* Render tpl (len bytes) with v: subject (one line) and body appended to
 * the two buffers. 0, or -1 with err when the template has no Subject line
 * or a value holds CR/LF/NUL. */
int template_render(const char *tpl, size_t len, const struct template_vars *v, struct buf *subject,
                    struct buf *body, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Whether s is safe as an address in From/To: 3..254 bytes, one '@', no
 * byte <= 0x20 or >= 0x7f (no SMTPUTF8), '<', '>', '"', ',', ';', '(', ')',
 * '\\'. */
int template_address_ok(const char *s);

/* Append text as a header value: as is when it is printable ASCII, else as
 * RFC 2047 encoded words ("=?UTF-8?B?…?=", whole UTF-8 sequences per word,
 * words of at most 75 bytes folded with CRLF SP). -1 when text holds CR, LF
 * or NUL (nothing appended). */
int template_header_value(struct buf *out, const char *text, size_t len)
    __attribute__((warn_unused_result));

struct template_message {
    const char *from;
    const char *to;
    const char *subject; /* UTF-8, no CR/LF */
    const char *body;    /* UTF-8; line ends become CRLF */
    time_t date;
    const char *message_id; /* the left part of Message-ID: <message_id@domain of from> */
};

/* Append the RFC 5322 message (Date, Message-ID, From, To, Subject,
 * MIME-Version, Content-Type: text/plain; charset=utf-8,
 * Content-Transfer-Encoding: 8bit, a blank line, the body with CRLF line
 * ends). 0, or -1 with err (nothing sensible appended) on an unsafe
 * address, subject or message id. */
int template_message(const struct template_message *m, struct buf *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
