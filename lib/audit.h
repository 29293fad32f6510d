/* audit: security events (SPEC §5) written to PostgreSQL in batches, with an
 * fsync'd spool file (lib/spool.h) for when PostgreSQL is away. One struct
 * audit per worker process.
 *
 * audit_emit() stamps the event with its id (a UUIDv7: the idempotency key)
 * and its time and copies it into a bounded queue; it never writes a file.
 * A writer thread takes up to batch_max events at a time and inserts them
 * with the single statement AUDIT_INSERT_SQL (unnest of seven array
 * parameters, ON CONFLICT (id) DO NOTHING). When PostgreSQL is away (no
 * connection, or the insert came back DB_UNAVAILABLE or DB_TIMEOUT) the
 * writer appends the
 * whole batch to the spool, one JSON object per line, with one fsync.
 *
 * The spool has a size bound (spool_max_bytes). When an append fails (the
 * bound, a full disk) the writer keeps the batch in memory and tries again
 * every retry_ms; that is an alarm: counted (spool_failures), logged (at most
 * one line per 10 s), and spool_failing is set until an append works. While
 * the writer holds a batch the queue fills; a full queue makes audit_emit()
 * wait up to emit_wait_ms for room and then drop the event, counted
 * (dropped_total) and alarmed (docs/decisions.md: a bounded back-pressure,
 * then a counted drop).
 *
 * Every retry_ms, while the spool is non-empty or PostgreSQL is away, the
 * writer replays (spool_replay(): the spool is renamed aside, so appends
 * never wait for the inserts) and inserts the replayed events in batches. A
 * crash mid-replay only causes a second insert of the same ids, which ON
 * CONFLICT ignores. Several processes may share one spool path.
 *
 * The writer uses one connection of the db pool at a time: size the pool one
 * above the request threads, so a busy pool is never mistaken for a down
 * server.
 *
 * Thread-safety: audit_emit(), audit_flush(), audit_shutdown() and
 * audit_stats() may be called from any thread; audit_create() and
 * audit_destroy() once each, with no other call running. The pure helpers
 * (audit_type_*, audit_*_valid, audit_pg_array) share no state. */
#ifndef ACCESS_AUDIT_H
#define ACCESS_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "db.h"
#include "uuid.h"

/* The batch insert; the caller registers it in the db pool's statement table
 * as {AUDIT_INSERT_NAME, AUDIT_INSERT_SQL, AUDIT_INSERT_NPARAMS, 1}. */
#define AUDIT_INSERT_NAME    "audit_insert"
#define AUDIT_INSERT_NPARAMS 7
#define AUDIT_INSERT_SQL                                                                           \
    "INSERT INTO audit_events (id, user_id, type, created_at, ip, user_agent, detail) "            \
    "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], "     \
    "$6::text[], $7::jsonb[]) ON CONFLICT (id) DO NOTHING"

#define AUDIT_IP_MAX     128  /* bytes kept of an ip */
#define AUDIT_UA_MAX     512  /* bytes kept of a user agent (cut at a UTF-8 boundary) */
#define AUDIT_DETAIL_MAX 4096 /* longer details are replaced by "{}" */
#define AUDIT_TS_LEN     27   /* "2024-05-01T12:00:00.123456Z" */

/* The CHECK list of audit_events.type (sql/001_init.sql). */
enum audit_type {
    AUDIT_SIGNUP = 0,
    AUDIT_LOGIN_SUCCEEDED,
    AUDIT_LOGIN_FAILED,
    AUDIT_REFRESH,
    AUDIT_REFRESH_REUSE_DETECTED,
    AUDIT_LOGOUT,
    AUDIT_PASSWORD_CHANGED,
    AUDIT_SESSION_REVOKED,
    /* API clients and administration (SPEC §11, §12) */
    AUDIT_CLIENT_CREATED,
    AUDIT_CLIENT_DELETED,
    AUDIT_CLIENT_KEY_ADDED,
    AUDIT_CLIENT_KEY_REVOKED,
    AUDIT_ACCOUNT_DISABLED,
    AUDIT_ACCOUNT_ENABLED,
    /* v2, the life cycle (SPEC §9) */
    AUDIT_PASSWORD_CHANGE_FAILED,
    AUDIT_LOGIN_THROTTLED,
    AUDIT_EMAIL_VERIFIED,
    AUDIT_PASSWORD_RESET_REQUESTED,
    AUDIT_PASSWORD_RESET,
    AUDIT_ACCOUNT_DELETED,
    /* v2, the second factor (SPEC §10) */
    AUDIT_MFA_ENABLED,
    AUDIT_MFA_DISABLED,
    AUDIT_MFA_FAILED,
    AUDIT_RECOVERY_CODE_USED,
    AUDIT__COUNT
};

/* What a caller reports. Strings are copied; NULL means "". */
struct audit_event {
    enum audit_type type;
    const char *user_id;    /* uuid text; NULL or "" when unknown (failed login) */
    const char *ip;         /* cut to AUDIT_IP_MAX bytes */
    const char *user_agent; /* cut to AUDIT_UA_MAX bytes */
    const char *detail;     /* a JSON object, e.g. {"session_id":"…"}; NULL or "" = "{}" */
};

/* An event as stored: what audit_emit() made of a struct audit_event. All
 * strings are valid UTF-8 without NUL bytes; detail is a JSON object. */
struct audit_record {
    char id[UUID_STR_LEN + 1];
    char user_id[UUID_STR_LEN + 1]; /* "" = NULL */
    enum audit_type type;
    char created_at[AUDIT_TS_LEN + 1]; /* UTC, microseconds */
    const char *ip;
    const char *user_agent;
    const char *detail;
};

struct audit_options {
    struct db_pool *db;
    size_t insert_stmt;        /* index of AUDIT_INSERT_SQL in the pool's statements */
    const char *spool_path;    /* created 0600 if missing; its directory must exist */
    size_t queue_max;          /* 0 = 4096 */
    size_t batch_max;          /* 0 = 256 */
    long retry_ms;             /* replay / reconnect / spool retry period; 0 = 1000 */
    long long spool_max_bytes; /* size bound of the spool; 0 = 256 MiB */
    long emit_wait_ms;         /* audit_emit()'s wait for room; 0 = 250 */
};

enum audit_result {
    AUDIT_QUEUED = 0, /* in the queue: the writer inserts it (or spools it) */
    AUDIT_SPOOLED,    /* after audit_shutdown(): appended to the spool, fsync'd */
    AUDIT_LOST,       /* dropped: queue full past emit_wait_ms, or (after
                         audit_shutdown()) the spool refused it; counted */
};

struct audit_stats {
    size_t queue_depth;      /* queued, or taken by the writer and not placed */
    uint64_t spooled_total;  /* events appended to the spool */
    uint64_t spool_fsyncs;   /* fsync(2) calls on the spool: one per append */
    uint64_t spool_failures; /* appends that failed (bound, full disk): alarms */
    uint64_t dropped_total;  /* events lost, see AUDIT_LOST */
    int spool_failing;       /* the last append failed: an alarm is on */
    int pg_down;             /* the last contact with PostgreSQL failed */
};

struct audit;

/* Open (or create) the spool and start the writer thread. NULL and err on
 * failure (spool not openable). Copies the options' strings. */
struct audit *audit_create(const struct audit_options *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Record one event; see above. Never waits for PostgreSQL or a disk
 * (except after audit_shutdown()); waits at most emit_wait_ms when the
 * queue is full. A malformed user_id or detail is dropped from the event
 * (logged), never the event itself. */
enum audit_result audit_emit(struct audit *a, const struct audit_event *ev);
/* Drain the queue to PostgreSQL within timeout_ms; what is still queued
 * then, and the batch the writer is still placing, goes to the spool from
 * the calling thread. 0, or -1 if events could not be spooled (logged). */
int audit_flush(struct audit *a, long timeout_ms);
/* The last flush before the process exits (SIGTERM, SPEC §5): from now on
 * audit_emit() appends each event to the spool itself (threads still
 * running must not answer for an event nobody writes), then as
 * audit_flush(). 0 when everything is placed and the writer is idle; 1 when
 * the writer is still busy with a batch (also spooled: do not wait for it);
 * -1 when events could not be spooled (logged). */
int audit_shutdown(struct audit *a, long timeout_ms) __attribute__((warn_unused_result));
void audit_stats(struct audit *a, struct audit_stats *out);
/* Stop the writer after it drained the queue (to PostgreSQL or the spool),
 * close the spool, free a. NULL is a no-op. */
void audit_destroy(struct audit *a);

/* "login_failed" for AUDIT_LOGIN_FAILED; NULL when out of range. */
const char *audit_type_name(enum audit_type t);
/* The type named s[0..len); 0 or -1. */
int audit_type_parse(const char *s, size_t len, enum audit_type *out)
    __attribute__((warn_unused_result));

/* Append a PostgreSQL array literal of n elements to b: every element
 * double-quoted with " and \ escaped by a backslash, a NULL element as the
 * bare word NULL. {"a","b\"c",NULL} */
void audit_pg_array(struct buf *b, const char *const *elems, size_t n);

/* Whether s[0..n) may be a text field of a record: valid UTF-8 without NUL
 * bytes (PostgreSQL text cannot hold them). 1 or 0. */
int audit_text_valid(const char *s, size_t n);
/* Whether s[0..n) fits the jsonb detail column: a JSON object in valid
 * UTF-8 that jsonb accepts (no \u0000, no lone surrogate escape), at most
 * AUDIT_DETAIL_MAX bytes. 1 or 0. */
int audit_detail_valid(const char *s, size_t n);

#endif
