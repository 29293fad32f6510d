/* libFuzzer target: lib/template.c on hostile templates and values (SPEC §9).
 *
 * The input is split at the first two NUL bytes into a template, an email
 * and a subject-ish value. For any of them: rendering either refuses or
 * succeeds; a message built from the rendering either is refused or has
 * exactly the eight fixed header lines, no header line beyond them (no
 * injection), only ASCII in the header block, and CRLF line ends only. */
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *z1 = memchr(in, '\0', size);
    size_t tlen = z1 ? (size_t)(z1 - in) : size;
    const char *email = z1 ? z1 + 1 : "";
    size_t left = z1 ? size - tlen - 1 : 0;
    const char *z2 = z1 ? memchr(email, '\0', left) : NULL;
    if (z2 == NULL)
        email = "user@example.org";
    char err[128];
    struct buf subject = {0}, body = {0}, msg = {0};
    struct template_vars v = {"https://x.example/reset?token=abc", email, 30};
    if (template_render(in, tlen, &v, &subject, &body, err, sizeof(err)) == 0) {
        buf_putc(&subject, '\0');
        buf_putc(&body, '\0');
        struct template_message m = {.from = "access@mail.example",
                                     .to = email,
                                     .subject = subject.data,
                                     .body = body.data,
                                     .date = 0,
                                     .message_id = "id-1"};
        if (template_message(&m, &msg, err, sizeof(err)) == 0) {
            const char *end = NULL;
            for (size_t i = 0; i + 3 < msg.len; i++)
                if (memcmp(msg.data + i, "\r\n\r\n", 4) == 0) {
                    end = msg.data + i;
                    break;
                }
            FUZZ_REQUIRE(end != NULL);
            int lines = 0;
            for (const char *p = msg.data; p < end; p++) {
                FUZZ_REQUIRE((unsigned char)*p < 0x80 && *p != '\0');
                if (*p == '\n') {
                    FUZZ_REQUIRE(p > msg.data && p[-1] == '\r');
                    /* A folded continuation starts with a space. */
                    if (p + 1 < end && p[1] != ' ')
                        lines++;
                }
                if (*p == '\r')
                    FUZZ_REQUIRE(p[1] == '\n');
            }
            FUZZ_REQUIRE(lines + 1 == 8); /* Date..Content-Transfer-Encoding */
            for (size_t i = 0; i < msg.len; i++)
                if (msg.data[i] == '\n')
                    FUZZ_REQUIRE(i > 0 && msg.data[i - 1] == '\r');
        }
    }
    buf_free(&subject);
    buf_free(&body);
    buf_free(&msg);
    return 0;
}
