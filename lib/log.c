#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "json.h"
#include "utf8.h"

/* Set once by log_init() before any thread starts; read-only afterwards. */
static enum log_level log_threshold = LOG_INFO;
static enum log_format log_fmt = LOG_FORMAT_JSON;

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

/* Request lines may be batched (log_start_batching): under load one write(2)
 * per request line, with every thread of both workers queueing on the log
 * file's inode lock, cost more than the rest of a cached request. Lines
 * collect here and go out in one write when the buffer is half full, every
 * LOG_BATCH_MS, and before any other line, so order is kept. */
#define LOG_BATCH_CAP (64 * 1024)
#define LOG_BATCH_MS  50

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_batch[LOG_BATCH_CAP];
static size_t log_batch_len;
static _Atomic int log_batching;
static _Atomic int log_flusher_stop;
static pthread_t log_flusher;

static void log_write_all(const char *p, size_t left)
{
    while (left > 0) {
        ssize_t n = write(STDERR_FILENO, p, left);
        if (n <= 0)
            break;
        p += n;
        left -= (size_t)n;
    }
}

/* Under log_mu. */
static void log_batch_out(void)
{
    log_write_all(log_batch, log_batch_len);
    log_batch_len = 0;
}

void log_flush(void)
{
    pthread_mutex_lock(&log_mu);
    log_batch_out();
    pthread_mutex_unlock(&log_mu);
}

static void *log_flusher_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&log_flusher_stop)) {
        clock_sleep_ms(LOG_BATCH_MS);
        log_flush();
    }
    return NULL;
}

int log_start_batching(void)
{
    atomic_store(&log_flusher_stop, 0);
    if (pthread_create(&log_flusher, NULL, log_flusher_main, NULL) != 0)
        return -1;
    atomic_store(&log_batching, 1);
    return 0;
}

void log_stop_batching(void)
{
    if (!atomic_exchange(&log_batching, 0))
        return;
    atomic_store(&log_flusher_stop, 1);
    pthread_join(log_flusher, NULL);
    log_flush();
}

void log_init(enum log_level level, enum log_format format)
{
    log_threshold = level;
    log_fmt = format;
}

int log_enabled(enum log_level level)
{
    return level >= log_threshold;
}

/* RFC 3339 UTC with milliseconds. */
static void log_timestamp(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
}

static void log_begin(struct buf *b, enum log_level level)
{
    char ts[80];
    log_timestamp(ts, sizeof(ts));
    if (log_fmt == LOG_FORMAT_JSON) {
        buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, log_level_names[level]);
    } else {
        buf_printf(b, "%s %s", ts, log_level_names[level]);
    }
}

void log_text_value(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    int bare = n > 0;
    for (size_t i = 0; i < n && bare; i++)
        bare = p[i] > 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '=' && p[i] != '\\';
    if (bare) {
        buf_append(b, s, n);
        return;
    }
    buf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = c >= 0x80 ? utf8_seq_len(p + i, n - i) : 1;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_append(b, esc, 2);
        } else if (c == '\n') {
            buf_puts(b, "\\n");
        } else if (c == '\r') {
            buf_puts(b, "\\r");
        } else if (c == '\t') {
            buf_puts(b, "\\t");
        } else if (c < 0x20 || c == 0x7f || len == 0) {
            /* Other controls and bytes that are not UTF-8: visible, inert. */
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            buf_append(b, esc, 4);
        } else {
            buf_append(b, p + i, len);
            i += len;
            continue;
        }
        i++;
    }
    buf_putc(b, '"');
}

static void log_field_str(struct buf *b, const char *key, const char *val)
{
    if (log_fmt == LOG_FORMAT_JSON) {
        buf_printf(b, ",\"%s\":", key);
        json_put_cstr(b, val);
    } else {
        buf_printf(b, " %s=", key);
        log_text_value(b, val, strlen(val));
    }
}

static void log_field_num(struct buf *b, const char *key, const char *fmt, double v)
{
    buf_printf(b, log_fmt == LOG_FORMAT_JSON ? ",\"%s\":" : " %s=", key);
    buf_printf(b, fmt, v);
}

/* Finish the line and write it: one write(2) per line (or per batch of
 * whole lines) keeps lines whole across threads and processes. */
static void log_end(struct buf *b, int batchable)
{
    if (log_fmt == LOG_FORMAT_JSON)
        buf_putc(b, '}');
    buf_putc(b, '\n');
    if (!atomic_load_explicit(&log_batching, memory_order_relaxed)) {
        log_write_all(b->data, b->len);
    } else {
        pthread_mutex_lock(&log_mu);
        if (!batchable || log_batch_len + b->len > LOG_BATCH_CAP / 2)
            log_batch_out();
        if (batchable && b->len <= LOG_BATCH_CAP / 2) {
            memcpy(log_batch + log_batch_len, b->data, b->len);
            log_batch_len += b->len;
        } else {
            log_write_all(b->data, b->len);
        }
        pthread_mutex_unlock(&log_mu);
    }
    buf_free(b);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    struct buf msg = {0}, b = {0};
    buf_reserve(&b, 256);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    log_begin(&b, level);
    log_field_str(&b, "msg", msg.data ? msg.data : "");
    buf_free(&msg);
    log_end(&b, 0);
}

void log_request(const struct log_request *r)
{
    if (!log_enabled(LOG_INFO))
        return;
    struct buf b = {0};
    buf_reserve(&b, 320);
    log_begin(&b, LOG_INFO);
    log_field_str(&b, "request_id", r->request_id ? r->request_id : "");
    log_field_str(&b, "method", r->method ? r->method : "");
    log_field_str(&b, "route", r->route ? r->route : "");
    log_field_num(&b, "status", "%.0f", r->status);
    log_field_num(&b, "dur_ms", "%.3f", r->dur_ms);
    if (r->hash_ms >= 0)
        log_field_num(&b, "hash_ms", "%.3f", r->hash_ms);
    if (r->db_ms >= 0)
        log_field_num(&b, "db_ms", "%.3f", r->db_ms);
    if (r->cache != NULL)
        log_field_str(&b, "cache", r->cache);
    log_end(&b, 1);
}

void log_slow_query(const char *statement, double dur_ms)
{
    if (!log_enabled(LOG_WARN))
        return;
    struct buf b = {0};
    log_begin(&b, LOG_WARN);
    log_field_str(&b, "msg", "slow query");
    log_field_str(&b, "statement", statement);
    log_field_num(&b, "dur_ms", "%.3f", dur_ms);
    log_end(&b, 0);
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
        if (strcmp(s, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "json") == 0) {
        *out = LOG_FORMAT_JSON;
        return 0;
    }
    if (strcmp(s, "text") == 0) {
        *out = LOG_FORMAT_TEXT;
        return 0;
    }
    return -1;
}
