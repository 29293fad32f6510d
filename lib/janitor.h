/* janitor: housekeeping (SPEC §13). Every worker runs one janitor thread;
 * one at a time in the whole cluster works: each batch statement takes the
 * PostgreSQL advisory lock JANITOR_LOCK_KEY for its own transaction
 * (pg_try_advisory_xact_lock, no wait), and a round that finds it taken by
 * another worker or host ends there (JANITOR_BUSY). A statement is its own
 * transaction, so this also holds behind PgBouncer in transaction mode,
 * where a session lock taken by one statement and released by the next
 * reached different server connections and stayed taken for good.
 *
 * Every interval_ms a round takes a connection of the db pool and deletes,
 * in statements of at most `batch` rows each, looping on a table until a
 * statement deletes fewer than `batch` rows:
 *   - refresh tokens of sessions expired or revoked more than
 *     session_retention_s ago, then those sessions;
 *   - used refresh tokens of live sessions issued more than refresh_ttl_s ago;
 *   - audit events older than audit_retention_days;
 *   - outbox rows delivered or dead more than JANITOR_OUTBOX_RETENTION_S ago;
 *   - verification and reset tokens past their expiry.
 * Then it gives the connection back. Each statement commits on its own, so
 * no lock is held longer than one batch. Deleted rows are
 * counted in janitor_deleted_total{table} (when metrics is set).
 *
 * Stopping: janitor_stop() wakes the thread, which leaves between two
 * statements; one statement is bounded by the pool's statement timeout.
 *
 * The statements: the caller registers JANITOR_STMT__COUNT consecutive
 * entries in the pool's statement table, from stmt_base on, in the order of
 * enum janitor_stmt, as {name, sql, nparams, idempotent} from the macros
 * below (see accounts_statements). */
#ifndef ACCESS_JANITOR_H
#define ACCESS_JANITOR_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "metrics.h"

/* pg_try_advisory_lock key of the janitor ("accessjn"); migrate uses
 * another. */
#define JANITOR_LOCK_KEY   "7021789497208138350"
#define JANITOR_BATCH_MAX  1000  /* rows per statement (SPEC §13) */
#define JANITOR_ACQUIRE_MS 1000  /* wait for a pool slot before skipping a round */
#define JANITOR_EXEC_MS    30000 /* one batch; statement_timeout normally ends it first */
#define JANITOR_RETENTION_OR                                                                       \
    "s.expires_at < now() - make_interval(secs => $1::bigint) OR s.revoked_at < now() - "          \
    "make_interval(secs => $1::bigint)"

/* Every statement: $3 JANITOR_LOCK_KEY; its one row is (locked, rows). */
enum janitor_stmt {
    JANITOR_DEAD_TOKENS = 0, /* $1 session_retention s, $2 batch */
    JANITOR_DEAD_SESSIONS,   /* $1 session_retention s, $2 batch */
    JANITOR_USED_TOKENS,     /* $1 refresh_token_ttl s, $2 batch */
    JANITOR_OLD_AUDIT,       /* $1 audit_retention_days, $2 batch */
    JANITOR_OLD_OUTBOX,      /* $1 JANITOR_OUTBOX_RETENTION_S, $2 batch */
    JANITOR_EXPIRED_TOKENS,  /* $1 0 (grace s), $2 batch */
    JANITOR_EXPIRED_MFA,     /* $1 0 (grace s), $2 batch */
    JANITOR_STMT__COUNT
};

#define JANITOR_NPARAMS 3
/* A batch: DELETE ... WHERE JANITOR_LOCKED <its rows>, inside these. */
#define JANITOR_BATCH_HEAD       "WITH l AS (SELECT pg_try_advisory_xact_lock($3::bigint) AS ok), d AS ("
#define JANITOR_LOCKED           "(SELECT ok FROM l) AND "
#define JANITOR_BATCH_TAIL       " RETURNING 1) SELECT (SELECT ok FROM l), (SELECT count(*) FROM d)"
#define JANITOR_DEAD_TOKENS_NAME "janitor_dead_tokens"
#define JANITOR_DEAD_TOKENS_SQL                                                                    \
    JANITOR_BATCH_HEAD "DELETE FROM refresh_tokens WHERE " JANITOR_LOCKED                          \
                       "token_hash IN (SELECT rt.token_hash FROM refresh_tokens rt "               \
                       "JOIN sessions s ON s.id = rt.session_id WHERE " JANITOR_RETENTION_OR       \
                       " LIMIT $2::bigint)" JANITOR_BATCH_TAIL
#define JANITOR_DEAD_SESSIONS_NAME "janitor_dead_sessions"
#define JANITOR_DEAD_SESSIONS_SQL                                                                  \
    JANITOR_BATCH_HEAD "DELETE FROM sessions WHERE " JANITOR_LOCKED                                \
                       "id IN (SELECT s.id FROM sessions s WHERE " JANITOR_RETENTION_OR            \
                       " LIMIT $2::bigint)" JANITOR_BATCH_TAIL
#define JANITOR_USED_TOKENS_NAME "janitor_used_tokens"
#define JANITOR_USED_TOKENS_SQL                                                                    \
    JANITOR_BATCH_HEAD                                                                             \
    "DELETE FROM refresh_tokens WHERE " JANITOR_LOCKED                                             \
    "token_hash IN (SELECT rt.token_hash FROM refresh_tokens rt "                                  \
    "JOIN sessions s ON s.id = rt.session_id WHERE rt.used_at IS NOT NULL AND rt.issued_at < "     \
    "now() - make_interval(secs => $1::bigint) AND s.revoked_at IS NULL AND s.expires_at > "       \
    "now() "                                                                                       \
    "LIMIT $2::bigint)" JANITOR_BATCH_TAIL
#define JANITOR_OLD_AUDIT_NAME "janitor_old_audit"
#define JANITOR_OLD_AUDIT_SQL                                                                      \
    JANITOR_BATCH_HEAD "DELETE FROM audit_events WHERE " JANITOR_LOCKED                            \
                       "id IN (SELECT id FROM audit_events WHERE created_at < now() "              \
                       "- "                                                                        \
                       "make_interval(days => $1::int) LIMIT $2::bigint)" JANITOR_BATCH_TAIL

#define JANITOR_OUTBOX_RETENTION_S 604800 /* 7 days (SPEC §13) */
#define JANITOR_OLD_OUTBOX_NAME    "janitor_old_outbox"
#define JANITOR_OLD_OUTBOX_SQL                                                                     \
    JANITOR_BATCH_HEAD "DELETE FROM outbox WHERE " JANITOR_LOCKED                                  \
                       "id IN (SELECT id FROM outbox WHERE state IN ('delivered', 'dead') "        \
                       "AND done_at < now() - make_interval(secs => $1::bigint) LIMIT "            \
                       "$2::bigint)" JANITOR_BATCH_TAIL
#define JANITOR_EXPIRED_TOKENS_NAME "janitor_expired_tokens"
#define JANITOR_EXPIRED_TOKENS_SQL                                                                 \
    JANITOR_BATCH_HEAD "DELETE FROM account_tokens WHERE " JANITOR_LOCKED                          \
                       "token_hash IN (SELECT token_hash FROM account_tokens WHERE "               \
                       "expires_at < now() - make_interval(secs => $1::bigint) LIMIT "             \
                       "$2::bigint)" JANITOR_BATCH_TAIL

/* Login's mfa_tokens (SPEC §10): expired ones, used or not. */
#define JANITOR_EXPIRED_MFA_NAME "janitor_expired_mfa"
#define JANITOR_EXPIRED_MFA_SQL                                                                    \
    JANITOR_BATCH_HEAD "DELETE FROM mfa_tokens WHERE " JANITOR_LOCKED                              \
                       "token_hash IN (SELECT token_hash FROM mfa_tokens WHERE "                   \
                       "expires_at < now() - make_interval(secs => $1::bigint) LIMIT "             \
                       "$2::bigint)" JANITOR_BATCH_TAIL

struct janitor_options {
    struct db_pool *db;
    size_t stmt_base; /* index of JANITOR_DEAD_TOKENS in the pool's statements */
    long interval_ms;
    long session_retention_s;
    long refresh_ttl_s;
    long audit_retention_days;
    long batch; /* rows per statement; 0 = JANITOR_BATCH_MAX */
    struct metrics *metrics;
    unsigned slot;
};

/* Rows deleted, by table (the label of janitor_deleted_total). */
struct janitor_counts {
    uint64_t n[METRICS_JT__COUNT];
};

enum janitor_round { JANITOR_DONE = 0, JANITOR_BUSY, JANITOR_FAILED };

struct janitor;

/* Start the thread; its first round comes one interval after the start.
 * NULL and err when the thread cannot start. Copies o. */
struct janitor *janitor_start(const struct janitor_options *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Stop and free j: wakes the thread and joins it (it leaves between two
 * statements). NULL is a no-op. */
void janitor_stop(struct janitor *j);
/* Ask j to stop without waiting: a round in progress ends after its current
 * statement. janitor_stop() still joins and frees. NULL is a no-op. */
void janitor_signal_stop(struct janitor *j);
/* Rows j deleted so far. */
void janitor_totals(struct janitor *j, struct janitor_counts *out);

/* One round on the calling thread (the thread's body; tests call it): adds
 * what it deleted to *out. JANITOR_BUSY when another session held the
 * lock at one of its statements (what came before stays deleted), JANITOR_FAILED when PostgreSQL is
 * away or a statement failed (logged). stop, if not NULL, is polled between statements. */
enum janitor_round janitor_round(const struct janitor_options *o, const _Atomic int *stop,
                                 struct janitor_counts *out);

#endif
