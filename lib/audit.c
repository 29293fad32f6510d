#include "audit.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "json.h"
#include "log.h"
#include "spool.h"
#include "utf8.h"

#define AUDIT_QUEUE_DEFAULT 4096
#define AUDIT_BATCH_DEFAULT 256
#define AUDIT_RETRY_DEFAULT 1000
/* The writer's bound for a pool slot plus a connection, and for each
 * insert: a PostgreSQL that takes longer is treated as away and the events
 * go to the spool (a shutdown must not wait on a hung server). */
#define AUDIT_ACQUIRE_MS   1000
#define AUDIT_EXEC_MS      1000
#define AUDIT_EMIT_WAIT_MS 250 /* a request thread's wait for room in a full queue */

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
    struct spool *spool;
    size_t batch_max;
    long retry_ms;
    long emit_wait_ms;

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

    _Atomic int pg_down; /* the last contact with PostgreSQL failed */
    _Atomic uint64_t dropped;
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

int audit_text_valid(const char *s, size_t n)
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

int audit_detail_valid(const char *s, size_t n)
{
    json_object *o = NULL;
    char err[128];
    if (n > AUDIT_DETAIL_MAX || !audit_text_valid(s, n) || !audit_escapes_ok(s, n))
        return 0;
    if (json_parse_object(s, n, &o, err, sizeof(err)) != JSON_PARSE_OK)
        return 0;
    json_object_put(o);
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
    if (!audit_detail_valid(detail, strlen(detail))) {
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

/* ---- PostgreSQL --------------------------------------------------------- */

static void audit_set_down(struct audit *a, int down)
{
    if (atomic_exchange(&a->pg_down, down) == down)
        return;
    if (down)
        log_msg(LOG_WARN, "audit: PostgreSQL unavailable; events go to the spool %s",
                spool_path(a->spool));
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

/* Append items[0..n) to the spool with one fsync; how many leading items
 * went (the rest stay the caller's). */
static size_t audit_spool(struct audit *a, const struct audit_item *items, size_t n)
{
    struct audit_record *recs = xcalloc(n > 0 ? n : 1, sizeof(*recs));
    for (size_t i = 0; i < n; i++)
        recs[i] = items[i].r; /* the strings stay borrowed */
    size_t done = spool_append(a->spool, recs, n);
    free(recs);
    return done;
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
        done += audit_spool(a, items + done, n - done);
    return done;
}

/* The spool's consumer during a replay: batch_max records per insert. */
struct audit_replay {
    struct audit *a;
    struct db_conn *c;
    struct audit_item *items;
    size_t n;
    int away; /* an insert found PostgreSQL away */
};

static int audit_replay_batch(struct audit_replay *rp)
{
    size_t done = audit_insert(rp->a, rp->c, rp->items, rp->n);
    int away = done < rp->n;
    audit_items_free(rp->items, rp->n);
    rp->n = 0;
    rp->away = away;
    return away ? -1 : 0;
}

/* r NULL: the end of a replay file, insert what is gathered. */
static int audit_replay_line(void *ctx, const struct audit_record *r)
{
    struct audit_replay *rp = ctx;
    if (r == NULL)
        return rp->n > 0 ? audit_replay_batch(rp) : 0;
    audit_item_copy(&rp->items[rp->n++], r);
    return rp->n == rp->a->batch_max ? audit_replay_batch(rp) : 0;
}

/* Replay the spool if it has events (or probe PostgreSQL if it was away),
 * on one connection; the spool takes its own locks (appends never wait for
 * the inserts) and lets one process replay at a time. */
static void audit_replay(struct audit *a)
{
    char err[256];
    int pending = spool_pending(a->spool);
    if (!pending && !atomic_load(&a->pg_down))
        return;
    struct db_conn *c =
        db_pool_acquire(a->db, clock_deadline_in(AUDIT_ACQUIRE_MS), err, sizeof(err));
    audit_set_down(a, c == NULL);
    if (c == NULL)
        return;
    if (pending) {
        struct audit_replay rp = {
            .a = a, .c = c, .items = xcalloc(a->batch_max, sizeof(*rp.items))};
        (void)spool_replay(a->spool, audit_replay_line, &rp);
        if (rp.away)
            audit_set_down(a, 1);
        audit_items_free(rp.items, rp.n);
        free(rp.items);
    }
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
    struct spool_stats ss;
    spool_stats(a->spool, &ss);
    if (a->nheld > 0 && ss.failing) {
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

struct audit *audit_create(const struct audit_options *o, char *err, size_t errlen)
{
    struct spool *sp = spool_open(o->spool_path, o->spool_max_bytes, err, errlen);
    if (sp == NULL)
        return NULL;
    struct audit *a = xcalloc(1, sizeof(*a));
    pthread_condattr_t ca;
    a->db = o->db;
    a->insert_stmt = o->insert_stmt;
    a->spool = sp;
    a->cap = o->queue_max ? o->queue_max : AUDIT_QUEUE_DEFAULT;
    a->batch_max = o->batch_max ? o->batch_max : AUDIT_BATCH_DEFAULT;
    a->retry_ms = o->retry_ms > 0 ? o->retry_ms : AUDIT_RETRY_DEFAULT;
    a->emit_wait_ms = o->emit_wait_ms > 0 ? o->emit_wait_ms : AUDIT_EMIT_WAIT_MS;
    a->ring = xcalloc(a->cap, sizeof(*a->ring));
    a->held = xcalloc(a->batch_max, sizeof(*a->held));
    pthread_mutex_init(&a->mu, NULL);
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
    free(a->ring);
    free(a->held);
    spool_close(sp);
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
        size_t done = audit_spool(a, &it, 1);
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
    spool_alarm(a->spool, "queue full too: event dropped", ENOBUFS, 1);
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
        size_t done = audit_spool(a, left, n);
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
    struct spool_stats ss;
    spool_stats(a->spool, &ss);
    out->spooled_total = ss.spooled_total;
    out->spool_fsyncs = ss.fsyncs;
    out->spool_failures = ss.failures;
    out->dropped_total = atomic_load(&a->dropped);
    out->spool_failing = ss.failing;
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
    spool_close(a->spool);
    pthread_cond_destroy(&a->work);
    pthread_cond_destroy(&a->drained);
    pthread_cond_destroy(&a->room);
    pthread_mutex_destroy(&a->mu);
    free(a->ring);
    free(a->held);
    free(a);
}
