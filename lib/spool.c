#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "json.h"
#include "log.h"
#include "uuid.h"

#define SPOOL_ALARM_LOG_MS 10000 /* at most one alarm log line per this period */
#define SPOOL_LOCK_TRIES   8     /* reopens when the spool keeps being moved */
#define SPOOL_MAX_DEFAULT  (256LL * 1024 * 1024)
#define SPOOL_LINE_MAX     (64 * 1024) /* a longer spool line is not one of ours */

struct spool {
    char *path;
    char *replay_path;      /* the spool moved aside while it is replayed */
    char *replay_lock_path; /* flock'd by the one process replaying */
    long long max;

    pthread_mutex_t mu; /* flock does not exclude threads sharing one fd */
    int fd;

    _Atomic int failing; /* the last append failed */
    _Atomic uint64_t spooled, fsyncs, failures;
    _Atomic int64_t alarm_logged_ms; /* rate limit of the alarm log line */
    _Atomic uint64_t alarms_quiet;   /* alarms not logged since */
};

/* ---- the line format ---------------------------------------------------- */

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" */
static int spool_ts_ok(const char *s, size_t n)
{
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (n != AUDIT_TS_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (pat[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pat[i])
            return 0;
    return 1;
}

void spool_line(struct buf *b, const struct audit_record *r)
{
    const char *type = audit_type_name(r->type);
    buf_puts(b, "{\"id\":");
    json_put_cstr(b, r->id);
    buf_puts(b, ",\"user_id\":");
    if (r->user_id[0] != '\0')
        json_put_cstr(b, r->user_id);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"type\":");
    json_put_cstr(b, type != NULL ? type : "");
    buf_puts(b, ",\"created_at\":");
    json_put_cstr(b, r->created_at);
    buf_puts(b, ",\"ip\":");
    json_put_cstr(b, r->ip);
    buf_puts(b, ",\"user_agent\":");
    json_put_cstr(b, r->user_agent);
    /* As a string: replay hands PostgreSQL the very text the caller gave. */
    buf_puts(b, ",\"detail\":");
    json_put_cstr(b, r->detail);
    buf_puts(b, "}\n");
}

/* ---- reading the spool -------------------------------------------------- */

static int spool_get(json_object *o, const char *key, const char **s, size_t *n)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return 0;
    *s = json_object_get_string(v);
    *n = (size_t)json_object_get_string_len(v);
    return 1;
}

static int spool_get_uuid(json_object *o, const char *key, char out[UUID_STR_LEN + 1])
{
    const char *s;
    size_t n;
    uint8_t raw[16];
    if (!spool_get(o, key, &s, &n) || uuid_parse(s, n, raw) != 0)
        return 0;
    uuid_format(raw, out);
    return 1;
}

/* Fill r from one spool line, checked as strictly as audit_emit() makes it:
 * one bad line must not make a whole batch fail. r borrows from *o. NULL,
 * or what is wrong. */
static const char *spool_line_parse(const char *line, size_t len, json_object **o,
                                    struct audit_record *r)
{
    char err[128];
    const char *s;
    size_t n;
    json_object *v;
    memset(r, 0, sizeof(*r));
    if (json_parse_object(line, len, o, err, sizeof(err)) != JSON_PARSE_OK)
        return "not a JSON object";
    if (!spool_get_uuid(*o, "id", r->id))
        return "bad id";
    if (json_object_object_get_ex(*o, "user_id", &v) && !json_object_is_type(v, json_type_null) &&
        !spool_get_uuid(*o, "user_id", r->user_id))
        return "bad user_id";
    if (!spool_get(*o, "type", &s, &n) || audit_type_parse(s, n, &r->type) != 0)
        return "bad type";
    if (!spool_get(*o, "created_at", &s, &n) || !spool_ts_ok(s, n))
        return "bad created_at";
    memcpy(r->created_at, s, n + 1);
    if (!spool_get(*o, "ip", &r->ip, &n) || n > AUDIT_IP_MAX || !audit_text_valid(r->ip, n))
        return "bad ip";
    if (!spool_get(*o, "user_agent", &r->user_agent, &n) || n > AUDIT_UA_MAX ||
        !audit_text_valid(r->user_agent, n))
        return "bad user_agent";
    if (!spool_get(*o, "detail", &r->detail, &n) || !audit_detail_valid(r->detail, n))
        return "bad detail";
    return NULL;
}

static void spool_bad_line(const char *name, size_t lineno, const char *why, size_t *bad_lines)
{
    log_msg(LOG_WARN, "audit spool %s: line %zu skipped (%s)", name, lineno, why);
    (*bad_lines)++;
}

/* spool_read() on an open file; name is for the log. */
static int spool_scan(int fd, const char *name, spool_fn fn, void *ctx, size_t *bad_lines)
{
    char chunk[16384];
    struct buf line = {0};
    off_t off = 0;
    size_t lineno = 0;
    int too_long = 0, rc = 0;
    *bad_lines = 0;
    for (;;) {
        ssize_t got = pread(fd, chunk, sizeof(chunk), off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            log_msg(LOG_ERROR, "audit spool %s: read failed: %s", name, strerror(errno));
            rc = -1;
            goto out;
        }
        if (got == 0)
            break;
        off += got;
        for (const char *p = chunk, *end = chunk + got; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t take = (size_t)((nl != NULL ? nl : end) - p);
            if (line.len + take > SPOOL_LINE_MAX)
                too_long = 1;
            else
                buf_append(&line, p, take);
            p += take;
            if (nl == NULL)
                break;
            p++;
            lineno++;
            if (too_long) {
                spool_bad_line(name, lineno, "too long", bad_lines);
            } else if (line.len > 0) {
                json_object *o = NULL;
                struct audit_record r;
                const char *why = spool_line_parse(line.data, line.len, &o, &r);
                int stop = 0;
                if (why != NULL)
                    spool_bad_line(name, lineno, why, bad_lines);
                else
                    stop = fn(ctx, &r);
                if (o != NULL)
                    json_object_put(o);
                if (stop) {
                    rc = -1;
                    goto out;
                }
            }
            buf_reset(&line);
            too_long = 0;
        }
    }
    if (line.len > 0 || too_long)
        spool_bad_line(name, lineno + 1, "torn: no newline at the end", bad_lines);
out:
    buf_free(&line);
    return rc;
}

int spool_read(const char *path, spool_fn fn, void *ctx, size_t *bad_lines)
{
    *bad_lines = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        log_msg(LOG_ERROR, "audit spool %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = spool_scan(fd, path, fn, ctx, bad_lines);
    close(fd);
    return rc;
}

/* ---- the spool file ----------------------------------------------------- */

static int spool_flock(int fd, int op)
{
    int rc;
    while ((rc = flock(fd, op)) != 0 && errno == EINTR)
        ;
    return rc;
}

static int spool_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Make the spool's directory entry durable (created, or moved aside). */
static void spool_sync_dir(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    int fd = open(slash != NULL ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Lock the spool: the in-process mutex, then flock on a descriptor that is
 * still the file at spool_path (a replay, here or in another process, may
 * have moved the old one aside: then reopen). 0, or an errno value with
 * nothing held. */
static int spool_lock(struct spool *s)
{
    int e = EAGAIN;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < SPOOL_LOCK_TRIES; i++) {
        struct stat fst, pst;
        if (spool_flock(s->fd, LOCK_EX) != 0) {
            e = errno;
            break;
        }
        if (fstat(s->fd, &fst) == 0 && stat(s->path, &pst) == 0 && fst.st_dev == pst.st_dev &&
            fst.st_ino == pst.st_ino)
            return 0;
        (void)spool_flock(s->fd, LOCK_UN);
        int fd = open(s->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            e = errno;
            break;
        }
        close(s->fd);
        s->fd = fd;
    }
    pthread_mutex_unlock(&s->mu);
    return e;
}

static void spool_unlock(struct spool *s)
{
    (void)spool_flock(s->fd, LOCK_UN);
    pthread_mutex_unlock(&s->mu);
}

/* Write the leading lines that fit the size bound to the locked spool and
 * fsync once: 0 or an errno value (EFBIG: not all of them fit; *nlines
 * then says how many did). ends[i] is the end offset of line i in lines.
 * One write(2): the lock keeps other appenders out, and a failed write is
 * cut off again, so it leaves no torn line. */
static int spool_write(struct spool *s, const char *lines, const size_t *ends, size_t *nlines)
{
    struct stat st;
    char last = '\n';
    int fd = s->fd;
    size_t n = *nlines, fit = 0;
    *nlines = 0;
    if (fstat(fd, &st) != 0)
        return errno;
    long long room = s->max - (long long)st.st_size - 1;
    while (fit < n && (long long)ends[fit] <= room)
        fit++;
    if (fit == 0)
        return n > 0 ? EFBIG : 0;
    size_t len = ends[fit - 1];
    /* A line torn by a crash must not swallow the next one: end it first. */
    if (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n' &&
        spool_write_all(fd, "\n", 1) != 0)
        return errno;
    if (spool_write_all(fd, lines, len) != 0) {
        int e = errno;
        if (ftruncate(fd, st.st_size) != 0)
            log_msg(LOG_ERROR, "audit spool: cannot cut a failed append: %s", strerror(errno));
        return e;
    }
    atomic_fetch_add(&s->fsyncs, 1);
    if (fsync(fd) != 0)
        return errno;
    *nlines = fit;
    return fit < n ? EFBIG : 0;
}

void spool_alarm(struct spool *s, const char *what, int e, size_t n)
{
    int64_t now = clock_now_ms(), last = atomic_load(&s->alarm_logged_ms);
    if (last != 0 && now - last < SPOOL_ALARM_LOG_MS) {
        atomic_fetch_add(&s->alarms_quiet, 1);
        return;
    }
    if (!atomic_compare_exchange_strong(&s->alarm_logged_ms, &last, now)) {
        atomic_fetch_add(&s->alarms_quiet, 1);
        return;
    }
    uint64_t quiet = atomic_exchange(&s->alarms_quiet, 0);
    log_msg(LOG_ERROR, "audit spool %s: %s (%s): %zu events (%llu similar alarms not logged)",
            s->path, what, e == EFBIG ? "spool full: audit_spool_max_bytes" : strerror(e), n,
            (unsigned long long)quiet);
}

size_t spool_append(struct spool *s, const struct audit_record *recs, size_t n)
{
    struct buf b = {0};
    size_t *ends = xcalloc(n > 0 ? n : 1, sizeof(*ends)), done = n;
    for (size_t i = 0; i < n; i++) {
        spool_line(&b, &recs[i]);
        ends[i] = b.len;
    }
    int e = spool_lock(s);
    if (e == 0) {
        e = spool_write(s, b.data, ends, &done);
        spool_unlock(s);
    } else {
        done = 0;
    }
    buf_free(&b);
    free(ends);
    atomic_fetch_add(&s->spooled, done);
    if (e != 0) {
        atomic_fetch_add(&s->failures, 1);
        atomic_store(&s->failing, 1);
        spool_alarm(s, "cannot append; they wait in memory", e, n - done);
        return done;
    }
    if (atomic_exchange(&s->failing, 0))
        log_msg(LOG_INFO, "audit spool %s: appends work again", s->path);
    return done;
}

/* Move a non-empty spool aside to the replay file under the spool lock
 * (a rename: appenders then reopen a new spool at once). 1 moved, 0 not. */
static int spool_move(struct spool *s)
{
    struct stat st;
    int moved = 0;
    if (spool_lock(s) != 0)
        return 0;
    if (fstat(s->fd, &st) == 0 && st.st_size > 0) {
        if (rename(s->path, s->replay_path) == 0) {
            int fd = open(s->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
            moved = 1;
            spool_sync_dir(s->path);
            if (fd >= 0) {
                (void)spool_flock(s->fd, LOCK_UN);
                close(s->fd);
                s->fd = fd;
                pthread_mutex_unlock(&s->mu);
                return moved;
            }
        } else {
            log_msg(LOG_ERROR, "audit spool %s: cannot move it aside for the replay: %s", s->path,
                    strerror(errno));
        }
    }
    spool_unlock(s);
    return moved;
}

static char *spool_path_with(const char *path, const char *suffix)
{
    struct buf b = {0};
    buf_puts(&b, path);
    buf_puts(&b, suffix);
    return b.data;
}

/* ---- replay ------------------------------------------------------------- */

/* Counts the records handed on, for the log line after a replay. */
struct spool_counted {
    spool_fn fn;
    void *ctx;
    size_t n;
};

static int spool_count_one(void *ctx, const struct audit_record *r)
{
    struct spool_counted *c = ctx;
    c->n++;
    return c->fn(c->ctx, r);
}

/* Hand every record of the replay file to fn, then remove it: 0, or -1 when
 * fn stopped or the file could not be read (kept for later). */
static int spool_replay_file(struct spool *s, spool_fn fn, void *ctx)
{
    size_t bad = 0;
    struct spool_counted c = {.fn = fn, .ctx = ctx};
    int rc = spool_read(s->replay_path, spool_count_one, &c, &bad);
    if (rc != 0 || fn(ctx, NULL) != 0)
        return -1;
    if (unlink(s->replay_path) != 0 && errno != ENOENT)
        log_msg(LOG_ERROR, "audit spool %s: cannot remove it after the replay: %s", s->replay_path,
                strerror(errno));
    spool_sync_dir(s->replay_path);
    log_msg(LOG_INFO, "audit spool %s: %zu events replayed, %zu bad lines dropped", s->path, c.n,
            bad);
    return 0;
}

int spool_replay(struct spool *s, spool_fn fn, void *ctx)
{
    int rc = 0;
    int lfd = open(s->replay_lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0 || spool_flock(lfd, LOCK_EX | LOCK_NB) != 0)
        goto out; /* another process is replaying */
    if (access(s->replay_path, F_OK) == 0 && spool_replay_file(s, fn, ctx) != 0) {
        rc = -1;
        goto out;
    }
    if (spool_move(s) && spool_replay_file(s, fn, ctx) != 0)
        rc = -1;
out:
    if (lfd >= 0)
        close(lfd); /* drops the flock */
    return rc;
}

int spool_pending(const struct spool *s)
{
    struct stat st;
    return (stat(s->path, &st) == 0 && st.st_size > 0) || access(s->replay_path, F_OK) == 0;
}

/* ---- the object --------------------------------------------------------- */

struct spool *spool_open(const char *path, long long max_bytes, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "audit spool %s: %s", path, strerror(errno));
        return NULL;
    }
    spool_sync_dir(path);
    struct spool *s = xcalloc(1, sizeof(*s));
    s->path = xstrdup(path);
    s->replay_path = spool_path_with(path, ".replay");
    s->replay_lock_path = spool_path_with(path, ".lock");
    s->max = max_bytes > 0 ? max_bytes : SPOOL_MAX_DEFAULT;
    s->fd = fd;
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void spool_close(struct spool *s)
{
    if (s == NULL)
        return;
    close(s->fd);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s->replay_path);
    free(s->replay_lock_path);
    free(s);
}

const char *spool_path(const struct spool *s)
{
    return s->path;
}

void spool_stats(struct spool *s, struct spool_stats *out)
{
    out->spooled_total = atomic_load(&s->spooled);
    out->fsyncs = atomic_load(&s->fsyncs);
    out->failures = atomic_load(&s->failures);
    out->failing = atomic_load(&s->failing);
}
