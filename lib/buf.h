/* buf: a growable byte buffer, always NUL-terminated after len bytes.
 *
 * The owner calls buf_free(); a zeroed struct buf is a valid empty buffer.
 * Not thread-safe: one owner at a time. */
#ifndef ACCESS_BUF_H
#define ACCESS_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Make room for n more bytes past len. */
void buf_reserve(struct buf *b, size_t n);
/* Append n bytes from p. */
void buf_append(struct buf *b, const void *p, size_t n);
/* Append the NUL-terminated s. */
void buf_puts(struct buf *b, const char *s);
/* Append one byte. */
void buf_putc(struct buf *b, char c);
/* Append printf-formatted text (bounded: the buffer grows to fit). */
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same with a va_list. */
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Forget the contents, keep the memory. */
void buf_reset(struct buf *b);
/* Release the memory; b becomes an empty buffer. */
void buf_free(struct buf *b);

#endif
