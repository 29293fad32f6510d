#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "json.h"
#include "log.h"
#include "utf8.h"

#define AUDIT_QUEUE_DEFAULT 4096
#define AUDIT_BATCH_DEFAULT 256
#define AUDIT_RETRY_DEFAULT 1000
/* The writer's bound for a pool slot plus a connection, and for each
 * insert: a PostgreSQL that takes longer is treated as away and the events
 * go to the spool (a shutdown must not wait on a hung server). */
#define AUDIT_ACQUIRE_MS        1000
#define AUDIT_EXEC_MS           1000
#define AUDIT_EMIT_WAIT_MS      250   /* a request thread's wait for room in a full queue */
#define AUDIT_ALARM_LOG_MS      10000 /* at most one alarm log line per this period */
#define AUDIT_LOCK_TRIES        8     /* reopens when the spool keeps being moved */
#define AUDIT_SPOOL_MAX_DEFAULT (256LL * 1024 * 1024)
#define AUDIT_LINE_MAX          (64 * 1024) /* a longer spool line is not one of ours */

static const char *const audit_type_names[AUDIT__COUNT] = {
    [AUDIT_SIGNUP] = "signup",
    [AUDIT_LOGIN_SUCCEEDED] = "login_succeeded",
    [AUDIT_LOGIN_FAILED] = "login_failed",
    [AUDIT_REFRESH] = "refresh",
    [AUDIT_REFRESH_REUSE_DETECTED] = "refresh_reuse_detected",
    [AUDIT_LOGOUT] = "logout",
    [AUDIT_PASSWORD_CHANGED] = "password_changed",
    [AUDIT_SESSION_REVOKED] = "session_revoked",
    [AUDIT_CLIENT_CREATED] = "client_created",
    [AUDIT_CLIENT_DELETED] = "client_deleted",
    [AUDIT_CLIENT_KEY_ADDED] = "client_key_added",
    [AUDIT_CLIENT_KEY_REVOKED] = "client_key_revoked",
    [AUDIT_ACCOUNT_DISABLED] = "account_disabled",
    [AUDIT_ACCOUNT_ENABLED] = "account_enabled",
    [AUDIT_PASSWORD_CHANGE_FAILED] = "password_change_failed",
    [AUDIT_LOGIN_THROTTLED] = "login_throttled",
    [AUDIT_EMAIL_VERIFIED] = "email_verified",
    [AUDIT_PASSWORD_RESET_REQUESTED] = "password_reset_requested",
    [AUDIT_PASSWORD_RESET] = "password_reset",
    [AUDIT_ACCOUNT_DELETED] = "account_deleted",
    [AUDIT_MFA_ENABLED] = "mfa_enabled",
    [AUDIT_MFA_DISABLED] = "mfa_disabled",
    [AUDIT_MFA_FAILED] = "mfa_failed",
    [AUDIT_RECOVERY_CODE_USED] = "recovery_code_used",
};

/* A record owning its strings (ip, user_agent, detail) in one block. */
struct audit_item {
    struct audit_record r;
    char *mem;
};

struct audit {
    struct db_pool *db;
    size_t insert_stmt;
    char *spool_path;
    char *replay_path;      /* the spool moved aside while it is replayed */
    char *replay_lock_path; /* flock'd by the one process replaying */
    size_t batch_max;
    long retry_ms;
    long emit_wait_ms;
    long long spool_max;

    pthread_mutex_t mu;     /* guards the ring, held, and the flags up to writer */
    pthread_cond_t work;    /* the writer waits for events */
    pthread_cond_t drained; /* audit_flush() waits for an empty queue */
    pthread_cond_t room;    /* audit_emit() waits for room in a full ring */
    struct audit_item *ring;
    size_t cap, head, count;
    /* The writer's batch: taken from the ring, not yet placed. The writer
     * reads it without mu while placing it and changes it only under mu, so
     * audit_flush() may copy it under mu. */
    struct audit_item *held;
    size_t nheld;
    unsigned flush_gen; /* bumped by each audit_flush(): one early retry each */
    int stopping;
    int closed; /* after audit_shutdown(): emits append to the spool themselves */
    pthread_t writer;

    _Atomic int pg_down;       /* the last contact with PostgreSQL failed */
    _Atomic int spool_failing; /* the last spool append failed */
    _Atomic uint64_t spooled, fsyncs, spool_failures, dropped;
    _Atomic int64_t alarm_logged_ms; /* rate limit of the alarm log line */
    _Atomic uint64_t alarms_quiet;   /* alarms not logged since */

    pthread_mutex_t spool_mu; /* flock does not exclude threads sharing one fd */
    int spool_fd;
};

/* ---- pure helpers ------------------------------------------------------- */

const char *audit_type_name(enum audit_type t)
{
    return (unsigned)t < AUDIT__COUNT ? audit_type_names[t] : NULL;
}

int audit_type_parse(const char *s, size_t len, enum audit_type *out)
{
    for (int t = 0; t < AUDIT__COUNT; t++) {
        if (strlen(audit_type_names[t]) == len && memcmp(audit_type_names[t], s, len) == 0) {
            *out = (enum audit_type)t;
            return 0;
        }
    }
    return -1;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0; NUL is
 * invalid here (PostgreSQL text cannot hold it). */
static size_t audit_utf8_len(const unsigned char *s, size_t n)
{
    return s[0] == 0 ? 0 : json_utf8_len(s, n);
}

static int audit_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0, len; i < n; i += len)
        if ((len = audit_utf8_len(p + i, n - i)) == 0)
            return 0;
    return 1;
}

/* Append s (NULL = "") cut to at most max bytes at a character boundary, a
 * bad byte replaced by U+FFFD, then a NUL. */
static void audit_utf8_put(struct buf *b, const char *s, size_t max)
{
    char tmp[(AUDIT_UA_MAX > AUDIT_IP_MAX ? AUDIT_UA_MAX : AUDIT_IP_MAX) + 1];
    const char *src = s != NULL ? s : "";
    size_t cap = max < sizeof(tmp) - 1 ? max + 1 : sizeof(tmp);
    size_t n = utf8_sanitize(src, strlen(src), tmp, cap);
    buf_append(b, tmp, n + 1);
}

static unsigned long audit_hex4(const char *s)
{
    char hex[5] = {0};
    memcpy(hex, s, 4);
    return strtoul(hex, NULL, 16);
}

/* jsonb refuses two escapes that JSON allows: \u0000 and a surrogate
 * escape that is not a high-low pair. */
static int audit_escapes_ok(const char *s, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\')
            continue;
        if (s[++i] != 'u' || n - i < 5)
            continue;
        unsigned long cp = audit_hex4(s + i + 1);
        if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
            return 0;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (n - i < 11 || s[i + 5] != '\\' || s[i + 6] != 'u')
                return 0;
            cp = audit_hex4(s + i + 7);
            if (cp < 0xdc00 || cp > 0xdfff)
                return 0;
            i += 6;
        }
        i += 4;
    }
    return 1;
}

/* Whether s[0..n) fits the jsonb detail column: a JSON object in valid
 * UTF-8, at most AUDIT_DETAIL_MAX bytes. */
static int audit_detail_ok(const char *s, size_t n)
{
    json_object *o = NULL;
    char err[128];
    if (n > AUDIT_DETAIL_MAX || !audit_utf8_valid(s, n) || !audit_escapes_ok(s, n))
        return 0;
    if (json_parse_object(s, n, &o, err, sizeof(err)) != JSON_PARSE_OK)
        return 0;
    json_object_put(o);
    return 1;
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" */
static int audit_ts_ok(const char *s, size_t n)
{
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (n != AUDIT_TS_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (pat[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pat[i])
            return 0;
    return 1;
}

static void audit_array_elem(struct buf *b, const char *s)
{
    if (s == NULL) {
        buf_puts(b, "NULL");
        return;
    }
    buf_putc(b, '"');
    while (*s != '\0') {
        size_t run = strcspn(s, "\"\\");
        buf_append(b, s, run);
        s += run;
        if (*s != '\0') {
            char esc[2] = {'\\', *s++};
            buf_append(b, esc, 2);
        }
    }
    buf_putc(b, '"');
}

void audit_pg_array(struct buf *b, const char *const *elems, size_t n)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            buf_putc(b, ',');
        audit_array_elem(b, elems[i]);
    }
    buf_putc(b, '}');
}

void audit_spool_line(struct buf *b, const struct audit_record *r)
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

static int audit_get(json_object *o, const char *key, const char **s, size_t *n)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return 0;
    *s = json_object_get_string(v);
    *n = (size_t)json_object_get_string_len(v);
    return 1;
}

static int audit_get_uuid(json_object *o, const char *key, char out[UUID_STR_LEN + 1])
{
    const char *s;
    size_t n;
    uint8_t raw[16];
    if (!audit_get(o, key, &s, &n) || uuid_parse(s, n, raw) != 0)
        return 0;
    uuid_format(raw, out);
    return 1;
}

/* Fill r from one spool line, checked as strictly as audit_emit() makes it:
 * one bad line must not make a whole batch fail. r borrows from *o. NULL,
 * or what is wrong. */
static const char *audit_line_parse(const char *line, size_t len, json_object **o,
                                    struct audit_record *r)
{
    char err[128];
    const char *s;
    size_t n;
    json_object *v;
    memset(r, 0, sizeof(*r));
    if (json_parse_object(line, len, o, err, sizeof(err)) != JSON_PARSE_OK)
        return "not a JSON object";
    if (!audit_get_uuid(*o, "id", r->id))
        return "bad id";
    if (json_object_object_get_ex(*o, "user_id", &v) && !json_object_is_type(v, json_type_null) &&
        !audit_get_uuid(*o, "user_id", r->user_id))
        return "bad user_id";
    if (!audit_get(*o, "type", &s, &n) || audit_type_parse(s, n, &r->type) != 0)
        return "bad type";
    if (!audit_get(*o, "created_at", &s, &n) || !audit_ts_ok(s, n))
        return "bad created_at";
    memcpy(r->created_at, s, n + 1);
    if (!audit_get(*o, "ip", &r->ip, &n) || n > AUDIT_IP_MAX || !audit_utf8_valid(r->ip, n))
        return "bad ip";
    if (!audit_get(*o, "user_agent", &r->user_agent, &n) || n > AUDIT_UA_MAX ||
        !audit_utf8_valid(r->user_agent, n))
        return "bad user_agent";
    if (!audit_get(*o, "detail", &r->detail, &n) || !audit_detail_ok(r->detail, n))
        return "bad detail";
    return NULL;
}

static void audit_bad_line(const char *name, size_t lineno, const char *why, size_t *bad_lines)
{
    log_msg(LOG_WARN, "audit spool %s: line %zu skipped (%s)", name, lineno, why);
    (*bad_lines)++;
}

/* audit_spool_read() on an open file; name is for the log. */
static int audit_spool_scan(int fd, const char *name, audit_spool_fn fn, void *ctx,
                            size_t *bad_lines)
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
            if (line.len + take > AUDIT_LINE_MAX)
                too_long = 1;
            else
                buf_append(&line, p, take);
            p += take;
            if (nl == NULL)
                break;
            p++;
            lineno++;
            if (too_long) {
                audit_bad_line(name, lineno, "too long", bad_lines);
            } else if (line.len > 0) {
                json_object *o = NULL;
                struct audit_record r;
                const char *why = audit_line_parse(line.data, line.len, &o, &r);
                int stop = 0;
                if (why != NULL)
                    audit_bad_line(name, lineno, why, bad_lines);
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
        audit_bad_line(name, lineno + 1, "torn: no newline at the end", bad_lines);
out:
    buf_free(&line);
    return rc;
}

int audit_spool_read(const char *path, audit_spool_fn fn, void *ctx, size_t *bad_lines)
{
    *bad_lines = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        log_msg(LOG_ERROR, "audit spool %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = audit_spool_scan(fd, path, fn, ctx, bad_lines);
    close(fd);
    return rc;
}

/* ---- records ------------------------------------------------------------ */

static void audit_now(char out[AUDIT_TS_LEN + 1])
{
    struct timespec ts;
    struct tm tm;
    char tmp[96]; /* room for any int, to keep -Wformat-truncation quiet */
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
    memcpy(out, tmp, AUDIT_TS_LEN);
    out[AUDIT_TS_LEN] = '\0';
}

/* Stamp and normalise ev into it; -1 (logged) for an unknown type. */
static int audit_item_make(const struct audit_event *ev, struct audit_item *it)
{
    const char *name = audit_type_name(ev->type);
    const char *detail = ev->detail != NULL && ev->detail[0] != '\0' ? ev->detail : "{}";
    struct buf b = {0};
    uint8_t raw[16];
    if (name == NULL) {
        log_msg(LOG_ERROR, "audit: event of unknown type %d dropped", (int)ev->type);
        return -1;
    }
    memset(it, 0, sizeof(*it));
    uuid_v7(raw);
    uuid_format(raw, it->r.id);
    it->r.type = ev->type;
    audit_now(it->r.created_at);
    if (ev->user_id != NULL && ev->user_id[0] != '\0') {
        if (uuid_parse(ev->user_id, strlen(ev->user_id), raw) == 0)
            uuid_format(raw, it->r.user_id);
        else
            log_msg(LOG_WARN, "audit: %s event %s: malformed user_id left out", name, it->r.id);
    }
    if (!audit_detail_ok(detail, strlen(detail))) {
        log_msg(LOG_WARN, "audit: %s event %s: invalid detail replaced by {}", name, it->r.id);
        detail = "{}";
    }
    audit_utf8_put(&b, ev->ip, AUDIT_IP_MAX);
    size_t ua = b.len;
    audit_utf8_put(&b, ev->user_agent, AUDIT_UA_MAX);
    size_t det = b.len;
    buf_append(&b, detail, strlen(detail) + 1);
    it->mem = b.data;
    it->r.ip = b.data;
    it->r.user_agent = b.data + ua;
    it->r.detail = b.data + det;
    return 0;
}

static void audit_item_copy(struct audit_item *it, const struct audit_record *r)
{
    size_t ip = strlen(r->ip) + 1, ua = strlen(r->user_agent) + 1, det = strlen(r->detail) + 1;
    it->r = *r;
    it->mem = xmalloc(ip + ua + det);
    memcpy(it->mem, r->ip, ip);
    memcpy(it->mem + ip, r->user_agent, ua);
    memcpy(it->mem + ip + ua, r->detail, det);
    it->r.ip = it->mem;
    it->r.user_agent = it->mem + ip;
    it->r.detail = it->mem + ip + ua;
}

static void audit_items_free(struct audit_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].mem);
        items[i].mem = NULL;
    }
}

/* ---- the spool file ----------------------------------------------------- */

static int audit_flock(int fd, int op)
{
    int rc;
    while ((rc = flock(fd, op)) != 0 && errno == EINTR)
        ;
    return rc;
}

static int audit_write_all(int fd, const char *p, size_t n)
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
static void audit_sync_dir(const char *path)
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
static int audit_spool_lock(struct audit *a)
{
    int e = EAGAIN;
    pthread_mutex_lock(&a->spool_mu);
    for (int i = 0; i < AUDIT_LOCK_TRIES; i++) {
        struct stat fst, pst;
        if (audit_flock(a->spool_fd, LOCK_EX) != 0) {
            e = errno;
            break;
        }
        if (fstat(a->spool_fd, &fst) == 0 && stat(a->spool_path, &pst) == 0 &&
            fst.st_dev == pst.st_dev && fst.st_ino == pst.st_ino)
            return 0;
        (void)audit_flock(a->spool_fd, LOCK_UN);
        int fd = open(a->spool_path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            e = errno;
            break;
        }
        close(a->spool_fd);
        a->spool_fd = fd;
    }
    pthread_mutex_unlock(&a->spool_mu);
    return e;
}

static void audit_spool_unlock(struct audit *a)
{
    (void)audit_flock(a->spool_fd, LOCK_UN);
    pthread_mutex_unlock(&a->spool_mu);
}

/* Write the leading lines that fit the size bound to the locked spool and
 * fsync once: 0 or an errno value (EFBIG: not all of them fit; *nlines
 * then says how many did). ends[i] is the end offset of line i in lines.
 * One write(2): the lock keeps other appenders out, and a failed write is
 * cut off again, so it leaves no torn line. */
static int audit_spool_write(struct audit *a, const char *lines, const size_t *ends, size_t *nlines)
{
    struct stat st;
    char last = '\n';
    int fd = a->spool_fd;
    size_t n = *nlines, fit = 0;
    *nlines = 0;
    if (fstat(fd, &st) != 0)
        return errno;
    long long room = a->spool_max - (long long)st.st_size - 1;
    while (fit < n && (long long)ends[fit] <= room)
        fit++;
    if (fit == 0)
        return n > 0 ? EFBIG : 0;
    size_t len = ends[fit - 1];
    /* A line torn by a crash must not swallow the next one: end it first. */
    if (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n' &&
        audit_write_all(fd, "\n", 1) != 0)
        return errno;
    if (audit_write_all(fd, lines, len) != 0) {
        int e = errno;
        if (ftruncate(fd, st.st_size) != 0)
            log_msg(LOG_ERROR, "audit spool: cannot cut a failed append: %s", strerror(errno));
        return e;
    }
    atomic_fetch_add(&a->fsyncs, 1);
    if (fsync(fd) != 0)
        return errno;
    *nlines = fit;
    return fit < n ? EFBIG : 0;
}

/* An alarm (SPEC §5): counted always, logged at most once per
 * AUDIT_ALARM_LOG_MS with the number of alarms left unlogged. */
static void audit_alarm(struct audit *a, const char *what, int e, size_t n)
{
    int64_t now = clock_now_ms(), last = atomic_load(&a->alarm_logged_ms);
    if (last != 0 && now - last < AUDIT_ALARM_LOG_MS) {
        atomic_fetch_add(&a->alarms_quiet, 1);
        return;
    }
    if (!atomic_compare_exchange_strong(&a->alarm_logged_ms, &last, now)) {
        atomic_fetch_add(&a->alarms_quiet, 1);
        return;
    }
    uint64_t quiet = atomic_exchange(&a->alarms_quiet, 0);
    log_msg(LOG_ERROR, "audit spool %s: %s (%s): %zu events (%llu similar alarms not logged)",
            a->spool_path, what, e == EFBIG ? "spool full: audit_spool_max_bytes" : strerror(e), n,
            (unsigned long long)quiet);
}

/* Append items to the spool with one fsync: as many leading items as the
 * size bound allows. How many were appended; fewer than n is a spool
 * failure (counted, alarmed), and the rest stay the caller's. */
static size_t audit_spool_append(struct audit *a, const struct audit_item *items, size_t n)
{
    struct buf b = {0};
    size_t *ends = xcalloc(n > 0 ? n : 1, sizeof(*ends)), done = n;
    for (size_t i = 0; i < n; i++) {
        audit_spool_line(&b, &items[i].r);
        ends[i] = b.len;
    }
    int e = audit_spool_lock(a);
    if (e == 0) {
        e = audit_spool_write(a, b.data, ends, &done);
        audit_spool_unlock(a);
    } else {
        done = 0;
    }
    buf_free(&b);
    free(ends);
    atomic_fetch_add(&a->spooled, done);
    if (e != 0) {
        atomic_fetch_add(&a->spool_failures, 1);
        atomic_store(&a->spool_failing, 1);
        audit_alarm(a, "cannot append; they wait in memory", e, n - done);
        return done;
    }
    if (atomic_exchange(&a->spool_failing, 0))
        log_msg(LOG_INFO, "audit spool %s: appends work again", a->spool_path);
    return done;
}

/* ---- PostgreSQL --------------------------------------------------------- */

static void audit_set_down(struct audit *a, int down)
{
    if (atomic_exchange(&a->pg_down, down) == down)
        return;
    if (down)
        log_msg(LOG_WARN, "audit: PostgreSQL unavailable; events go to the spool %s",
                a->spool_path);
    else
        log_msg(LOG_INFO, "audit: PostgreSQL reachable again; events go to the database");
}

/* Insert items[0..n) in one statement: 0 done; 1 refused for its data
 * (SQLSTATE class 22 or 23: no retry can help; state filled); -1 PostgreSQL
 * away or failing otherwise (timeouts, missing table: worth a retry). */
static int audit_exec(struct audit *a, struct db_conn *c, const struct audit_item *items, size_t n,
                      char state[6])
{
    struct buf col[AUDIT_INSERT_NPARAMS] = {{0}};
    const char *values[AUDIT_INSERT_NPARAMS];
    PGresult *res = NULL;
    int rc = -1;
    for (size_t k = 0; k < AUDIT_INSERT_NPARAMS; k++)
        buf_putc(&col[k], '{');
    for (size_t i = 0; i < n; i++) {
        const struct audit_record *r = &items[i].r;
        const char *v[AUDIT_INSERT_NPARAMS] = {r->id,
                                               r->user_id[0] != '\0' ? r->user_id : NULL,
                                               audit_type_name(r->type),
                                               r->created_at,
                                               r->ip,
                                               r->user_agent,
                                               r->detail};
        for (size_t k = 0; k < AUDIT_INSERT_NPARAMS; k++) {
            if (i > 0)
                buf_putc(&col[k], ',');
            audit_array_elem(&col[k], v[k]);
        }
    }
    for (size_t k = 0; k < AUDIT_INSERT_NPARAMS; k++) {
        buf_putc(&col[k], '}');
        values[k] = col[k].data;
    }
    enum db_result dr =
        db_exec(c, a->insert_stmt, values, clock_deadline_in(AUDIT_EXEC_MS), &res, NULL);
    snprintf(state, 6, "%s", db_sqlstate(res));
    if (dr == DB_OK) {
        rc = 0;
    } else if (dr == DB_ERROR && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)) {
        rc = 1;
    } else if (dr == DB_ERROR) {
        log_msg(LOG_WARN, "audit: insert of %zu events failed (SQLSTATE %s); will retry", n, state);
    }
    PQclear(res);
    for (size_t k = 0; k < AUDIT_INSERT_NPARAMS; k++)
        buf_free(&col[k]);
    return rc;
}

/* Insert items[0..n). A batch refused for its data is retried one event at a
 * time, and the events refused alone are dropped (logged by id and type).
 * Returns how many leading items are placed; fewer than n means PostgreSQL
 * went away and the rest must be spooled. */
static size_t audit_insert(struct audit *a, struct db_conn *c, const struct audit_item *items,
                           size_t n)
{
    char state[6];
    int rc = audit_exec(a, c, items, n, state);
    if (rc <= 0)
        return rc == 0 ? n : 0;
    for (size_t i = 0; i < n; i++) {
        if (n > 1 && (rc = audit_exec(a, c, items + i, 1, state)) < 0)
            return i;
        if (rc > 0)
            log_msg(LOG_ERROR, "audit: PostgreSQL refused event %s (%s, SQLSTATE %s); dropped",
                    items[i].r.id, audit_type_name(items[i].r.type), state);
    }
    return n;
}

/* Place items[0..n): in PostgreSQL unless it is away, else in the spool
 * (one fsync for the batch). How many leading items are placed: n, or fewer
 * when the spool refused the rest (they stay the caller's). */
static size_t audit_place(struct audit *a, const struct audit_item *items, size_t n)
{
    char err[256];
    size_t done = 0;
    if (!atomic_load(&a->pg_down)) {
        struct db_conn *c =
            db_pool_acquire(a->db, clock_deadline_in(AUDIT_ACQUIRE_MS), err, sizeof(err));
        if (c != NULL) {
            done = audit_insert(a, c, items, n);
            db_pool_release(a->db, c);
        }
        audit_set_down(a, done < n);
    }
    if (done < n)
        done += audit_spool_append(a, items + done, n - done);
    return done;
}

struct audit_replay {
    struct audit *a;
    struct db_conn *c;
    struct audit_item *items;
    size_t n;
    size_t total;
    int away; /* an insert found PostgreSQL away */
};

static int audit_replay_batch(struct audit_replay *rp)
{
    size_t done = audit_insert(rp->a, rp->c, rp->items, rp->n);
    int away = done < rp->n;
    audit_items_free(rp->items, rp->n);
    rp->total += done;
    rp->n = 0;
    rp->away = away;
    return away ? -1 : 0;
}

static int audit_replay_line(void *ctx, const struct audit_record *r)
{
    struct audit_replay *rp = ctx;
    audit_item_copy(&rp->items[rp->n++], r);
    return rp->n == rp->a->batch_max ? audit_replay_batch(rp) : 0;
}

/* Insert every event of the replay file, then remove it: 0, or -1 when
 * PostgreSQL went away or the file could not be read (kept for later). */
static int audit_replay_file(struct audit *a, struct db_conn *c)
{
    size_t bad = 0;
    struct audit_replay rp = {.a = a, .c = c, .items = xcalloc(a->batch_max, sizeof(*rp.items))};
    int rc = audit_spool_read(a->replay_path, audit_replay_line, &rp, &bad);
    if (rc == 0 && rp.n > 0)
        rc = audit_replay_batch(&rp);
    if (rp.away) {
        audit_set_down(a, 1);
        rc = -1;
    } else if (rc == 0) {
        if (unlink(a->replay_path) != 0 && errno != ENOENT)
            log_msg(LOG_ERROR, "audit spool %s: cannot remove it after the replay: %s",
                    a->replay_path, strerror(errno));
        audit_sync_dir(a->replay_path);
        log_msg(LOG_INFO, "audit spool %s: %zu events replayed, %zu bad lines dropped",
                a->spool_path, rp.total, bad);
    }
    audit_items_free(rp.items, rp.n);
    free(rp.items);
    return rc;
}

/* Move a non-empty spool aside to the replay file under the spool lock
 * (a rename: appenders then reopen a new spool at once). 1 moved, 0 not. */
static int audit_spool_move(struct audit *a)
{
    struct stat st;
    int moved = 0;
    if (audit_spool_lock(a) != 0)
        return 0;
    if (fstat(a->spool_fd, &st) == 0 && st.st_size > 0) {
        if (rename(a->spool_path, a->replay_path) == 0) {
            int fd = open(a->spool_path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
            moved = 1;
            audit_sync_dir(a->spool_path);
            if (fd >= 0) {
                (void)audit_flock(a->spool_fd, LOCK_UN);
                close(a->spool_fd);
                a->spool_fd = fd;
                pthread_mutex_unlock(&a->spool_mu);
                return moved;
            }
        } else {
            log_msg(LOG_ERROR, "audit spool %s: cannot move it aside for the replay: %s",
                    a->spool_path, strerror(errno));
        }
    }
    audit_spool_unlock(a);
    return moved;
}

/* Replay the spool if it has events (or probe PostgreSQL if it was away).
 * The spool lock is held only for the rename: appends never wait for the
 * inserts. One process replays at a time (flock on the lock file); a replay
 * file left by a crash or an earlier failed round goes first. */
static void audit_replay(struct audit *a)
{
    struct stat st;
    char err[256];
    int pending =
        (stat(a->spool_path, &st) == 0 && st.st_size > 0) || access(a->replay_path, F_OK) == 0;
    if (!pending && !atomic_load(&a->pg_down))
        return;
    struct db_conn *c =
        db_pool_acquire(a->db, clock_deadline_in(AUDIT_ACQUIRE_MS), err, sizeof(err));
    audit_set_down(a, c == NULL);
    if (c == NULL)
        return;
    int lfd = -1;
    if (!pending)
        goto out;
    lfd = open(a->replay_lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0 || audit_flock(lfd, LOCK_EX | LOCK_NB) != 0)
        goto out; /* another process is replaying */
    if (access(a->replay_path, F_OK) == 0 && audit_replay_file(a, c) != 0)
        goto out;
    if (audit_spool_move(a))
        (void)audit_replay_file(a, c);
out:
    if (lfd >= 0)
        close(lfd); /* drops the flock */
    db_pool_release(a->db, c);
}

/* ---- the queue and the writer ------------------------------------------ */

/* Move up to max queued items into out; under a->mu. */
static size_t audit_take(struct audit *a, struct audit_item *out, size_t max)
{
    size_t n = a->count < max ? a->count : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = a->ring[a->head];
        a->head = (a->head + 1) % a->cap;
    }
    a->count -= n;
    if (n > 0)
        pthread_cond_broadcast(&a->room);
    return n;
}

/* The writer's wait; under a->mu. While the spool refuses its batch it
 * waits out retry_ms (new events do not make it retry sooner; a new flush
 * or a stop does, once). */
static void audit_writer_wait(struct audit *a, unsigned *flush_seen)
{
    struct timespec deadline = clock_deadline(a->retry_ms);
    if (a->nheld > 0 && atomic_load(&a->spool_failing)) {
        while (!a->stopping && a->flush_gen == *flush_seen)
            if (pthread_cond_timedwait(&a->work, &a->mu, &deadline) == ETIMEDOUT)
                break;
    } else if (a->nheld == 0 && a->count == 0 && !a->stopping) {
        pthread_cond_timedwait(&a->work, &a->mu, &deadline);
    }
    *flush_seen = a->flush_gen;
}

static void *audit_writer(void *arg)
{
    struct audit *a = arg;
    int64_t next_replay = 0;
    unsigned flush_seen = 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        audit_writer_wait(a, &flush_seen);
        if (a->nheld == 0)
            a->nheld = audit_take(a, a->held, a->batch_max);
        if (a->nheld == 0 && a->stopping)
            break;
        size_t n = a->nheld, done = 0;
        pthread_mutex_unlock(&a->mu);
        if (n > 0)
            done = audit_place(a, a->held, n);
        pthread_mutex_lock(&a->mu);
        if (done < n && a->stopping) {
            /* Stopping, and neither PostgreSQL nor the spool takes them. */
            log_msg(LOG_ERROR, "audit: %zu events lost at shutdown: no database, no spool",
                    n - done);
            atomic_fetch_add(&a->dropped, n - done);
            done = n;
        }
        audit_items_free(a->held, done);
        memmove(a->held, a->held + done, (n - done) * sizeof(*a->held));
        a->nheld = n - done;
        if (a->count == 0 && a->nheld == 0)
            pthread_cond_broadcast(&a->drained);
        if (!a->stopping && clock_now_ms() >= next_replay) {
            pthread_mutex_unlock(&a->mu);
            audit_replay(a);
            next_replay = clock_now_ms() + a->retry_ms;
            pthread_mutex_lock(&a->mu);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static char *audit_path_with(const char *path, const char *suffix)
{
    struct buf b = {0};
    buf_puts(&b, path);
    buf_puts(&b, suffix);
    return b.data;
}

struct audit *audit_create(const struct audit_options *o, char *err, size_t errlen)
{
    int fd = open(o->spool_path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "audit spool %s: %s", o->spool_path, strerror(errno));
        return NULL;
    }
    audit_sync_dir(o->spool_path);
    struct audit *a = xcalloc(1, sizeof(*a));
    pthread_condattr_t ca;
    a->db = o->db;
    a->insert_stmt = o->insert_stmt;
    a->spool_path = xstrdup(o->spool_path);
    a->replay_path = audit_path_with(o->spool_path, ".replay");
    a->replay_lock_path = audit_path_with(o->spool_path, ".lock");
    a->spool_fd = fd;
    a->cap = o->queue_max ? o->queue_max : AUDIT_QUEUE_DEFAULT;
    a->batch_max = o->batch_max ? o->batch_max : AUDIT_BATCH_DEFAULT;
    a->retry_ms = o->retry_ms > 0 ? o->retry_ms : AUDIT_RETRY_DEFAULT;
    a->emit_wait_ms = o->emit_wait_ms > 0 ? o->emit_wait_ms : AUDIT_EMIT_WAIT_MS;
    a->spool_max = o->spool_max_bytes > 0 ? o->spool_max_bytes : AUDIT_SPOOL_MAX_DEFAULT;
    a->ring = xcalloc(a->cap, sizeof(*a->ring));
    a->held = xcalloc(a->batch_max, sizeof(*a->held));
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->spool_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->work, &ca);
    pthread_cond_init(&a->drained, &ca);
    pthread_cond_init(&a->room, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&a->writer, NULL, audit_writer, a) != 0) {
        snprintf(err, errlen, "audit: cannot start the writer thread");
        goto fail;
    }
    return a;
fail:
    pthread_cond_destroy(&a->work);
    pthread_cond_destroy(&a->drained);
    pthread_cond_destroy(&a->room);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->spool_mu);
    free(a->ring);
    free(a->held);
    free(a->spool_path);
    free(a->replay_path);
    free(a->replay_lock_path);
    close(fd);
    free(a);
    return NULL;
}

enum audit_result audit_emit(struct audit *a, const struct audit_event *ev)
{
    struct audit_item it;
    if (audit_item_make(ev, &it) != 0)
        return AUDIT_LOST;
    pthread_mutex_lock(&a->mu);
    if (a->closed) {
        /* Shut down: no writer will take it any more. */
        pthread_mutex_unlock(&a->mu);
        size_t done = audit_spool_append(a, &it, 1);
        free(it.mem);
        if (done == 1)
            return AUDIT_SPOOLED;
        atomic_fetch_add(&a->dropped, 1);
        return AUDIT_LOST;
    }
    struct timespec deadline = clock_deadline(a->emit_wait_ms);
    while (a->count == a->cap)
        if (pthread_cond_timedwait(&a->room, &a->mu, &deadline) == ETIMEDOUT)
            break;
    if (a->count < a->cap) {
        a->ring[(a->head + a->count) % a->cap] = it;
        a->count++;
        pthread_cond_signal(&a->work);
        pthread_mutex_unlock(&a->mu);
        return AUDIT_QUEUED;
    }
    pthread_mutex_unlock(&a->mu);
    atomic_fetch_add(&a->dropped, 1);
    audit_alarm(a, "queue full too: event dropped", ENOBUFS, 1);
    free(it.mem);
    return AUDIT_LOST;
}

/* Wait until the queue and the writer's batch are placed, or the deadline;
 * then spool what is left, the writer's batch included (copied: the writer
 * may yet insert it too, which the ids make harmless). *busy: the writer
 * still had events. 0, or -1 if the spool refused them. */
static int audit_drain(struct audit *a, long timeout_ms, int *busy)
{
    struct timespec deadline = clock_deadline(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&a->mu);
    a->flush_gen++;
    pthread_cond_signal(&a->work);
    while (a->count > 0 || a->nheld > 0)
        if (pthread_cond_timedwait(&a->drained, &a->mu, &deadline) == ETIMEDOUT)
            break;
    size_t nq = a->count, nh = a->nheld, n = nq + nh;
    struct audit_item *left = xcalloc(n > 0 ? n : 1, sizeof(*left));
    audit_take(a, left, nq);
    for (size_t i = 0; i < nh; i++)
        audit_item_copy(&left[nq + i], &a->held[i].r);
    *busy = nh > 0;
    pthread_mutex_unlock(&a->mu);
    if (n > 0) {
        log_msg(LOG_WARN, "audit: flush timed out; spooling %zu events", n);
        size_t done = audit_spool_append(a, left, n);
        if (done < n) {
            rc = -1;
            log_msg(LOG_ERROR, "audit: %zu events could not be spooled at the flush", n - done);
            /* Of the queue's part, what did not fit is lost with this call;
             * the writer's batch (copied last) it still holds. */
            if (done < nq)
                atomic_fetch_add(&a->dropped, nq - done);
        }
        audit_items_free(left, n);
    }
    free(left);
    return rc;
}

int audit_flush(struct audit *a, long timeout_ms)
{
    int busy = 0;
    return audit_drain(a, timeout_ms, &busy);
}

int audit_shutdown(struct audit *a, long timeout_ms)
{
    int busy = 0;
    pthread_mutex_lock(&a->mu);
    a->closed = 1;
    pthread_mutex_unlock(&a->mu);
    int rc = audit_drain(a, timeout_ms, &busy);
    return rc != 0 ? -1 : busy;
}

void audit_stats(struct audit *a, struct audit_stats *out)
{
    pthread_mutex_lock(&a->mu);
    out->queue_depth = a->count + a->nheld;
    pthread_mutex_unlock(&a->mu);
    out->spooled_total = atomic_load(&a->spooled);
    out->spool_fsyncs = atomic_load(&a->fsyncs);
    out->spool_failures = atomic_load(&a->spool_failures);
    out->dropped_total = atomic_load(&a->dropped);
    out->spool_failing = atomic_load(&a->spool_failing);
    out->pg_down = atomic_load(&a->pg_down);
}

void audit_destroy(struct audit *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->writer, NULL);
    close(a->spool_fd);
    pthread_cond_destroy(&a->work);
    pthread_cond_destroy(&a->drained);
    pthread_cond_destroy(&a->room);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->spool_mu);
    free(a->ring);
    free(a->held);
    free(a->spool_path);
    free(a->replay_path);
    free(a->replay_lock_path);
    free(a);
}
