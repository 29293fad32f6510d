/* log: structured logging to stderr, one line per event.
 *
 * log_init() is called once at start (before threads); afterwards every call
 * is thread-safe: a line is formatted in a local buffer and written with a
 * single write(2) (alone, or with other whole lines when batching), so
 * lines from threads and processes never interleave.
 * Nothing here ever logs a password, token or hash: callers pass only
 * non-secret fields. */
#ifndef ACCESS_LOG_H
#define ACCESS_LOG_H

#include <stddef.h>

#include "buf.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT };

/* Set the threshold and the output format (default: info, json). */
void log_init(enum log_level level, enum log_format format);
/* Whether a message of this level would be written. */
int log_enabled(enum log_level level);
/* Batch request lines (log_request) and write them every 50 ms, or sooner
 * when 32 KiB have gathered; other lines flush the batch and go out at
 * once. A process that dies by a signal loses at most 50 ms of request
 * lines. Start once threads may log; 0 or -1. */
int log_start_batching(void);
/* Write what is batched now. */
void log_flush(void);
/* Stop the flusher thread and flush (before the process exits). */
void log_stop_batching(void);

/* A free-form message: {"ts":…,"level":…,"msg":…}. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One request, as SPEC §6 lists its fields. Negative hash_ms/db_ms and a
 * NULL cache are left out. */
struct log_request {
    const char *request_id;
    const char *method;
    const char *route;
    int status;
    double dur_ms;
    double hash_ms;
    double db_ms;
    const char *cache;
};
void log_request(const struct log_request *r);

/* A slow query: statement name and duration. */
void log_slow_query(const char *statement, double dur_ms);

/* A value as log_format = text writes it: bare when it is 1+ printable
 * ASCII bytes without space, '"', '=' or '\\'; otherwise in double quotes
 * with \", \\, \n, \r, \t, and \xNN for other control bytes, DEL and
 * bytes that are not UTF-8. So no value can end a line or fake a field. */
void log_text_value(struct buf *b, const char *s, size_t n);

/* Parse "debug|info|warn|error" / "json|text"; 0 on success, -1 otherwise. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);

#endif
