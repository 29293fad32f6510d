/* db: a PostgreSQL connection pool for one worker process (Kore-style
 * init -> acquire/exec/release -> destroy lifecycle).
 *
 * The pool holds `size` slots (one per request thread). Connections open
 * lazily on acquire, at most DB_CONNECTS_AT_ONCE at a time, each set up in
 * one pipelined round trip, and reopen after any connection-level failure, with a
 * back-off (50 ms doubling to 1 s) so a down server costs callers nothing
 * but an immediate DB_UNAVAILABLE. Every connection gets the configured
 * statement_timeout and, unless prepared is off (PgBouncer transaction
 * pooling), every registered statement prepared once. Queries slower than
 * slow_ms are logged with their statement name.
 *
 * Deadlines: every call that talks to the server takes an absolute
 * deadline (lib/clock.h, monotonic ms) and returns by it, whatever the
 * server does: libpq runs non-blocking and the pool poll()s the socket for
 * the time left. Connecting, the per-connection SET and PREPAREs, and each
 * statement are all bounded. A connection whose deadline passed mid-way is
 * in an unknown state: it is closed (no PQcancel, which can block on a
 * frozen server; the server drops the orphaned query through
 * client_connection_check_interval or statement_timeout) and the pool backs
 * off as after a failed connect.
 *
 * Thread-safety: the pool is shared by the request threads (mutex + cond);
 * a db_conn belongs to the thread that acquired it until it releases it. */
#ifndef ACCESS_DB_H
#define ACCESS_DB_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

/* Connections one pool opens at once: a burst on a cold pool waits for
 * these (and for connections released meanwhile) rather than making the
 * server start a backend for every waiting thread at the same moment. */
#define DB_CONNECTS_AT_ONCE 2

/* A statement the application runs; its index in the array is its id. */
struct db_stmt {
    const char *name;
    const char *sql;
    int nparams;
    int idempotent; /* safe to re-run once on a fresh connection after a broken one */
};

struct db_pool_options {
    const char *conninfo;
    size_t size;
    long statement_timeout_ms;
    long slow_ms;
    int prepared;
    const struct db_stmt *stmts;
    size_t nstmts;
    /* Called after every statement that reached the server (metrics), from
     * the executing thread; may be NULL. */
    void (*observe)(void *ctx, double ms, int slow);
    void *observe_ctx;
};

enum db_result {
    DB_OK = 0,
    DB_ERROR,       /* the server refused the statement: see db_sqlstate() */
    DB_UNAVAILABLE, /* no connection, or it broke */
    DB_TIMEOUT,     /* the deadline passed first; the connection was closed */
};

struct db_pool;
struct db_conn;

struct db_pool_stats {
    size_t size;
    size_t open;
    size_t in_use;
    uint64_t slow_queries;
};

/* Create a pool; copies the options' strings (stmts must outlive the pool).
 * Opens no connection yet. */
struct db_pool *db_pool_create(const struct db_pool_options *o);
/* A connection for the calling thread, or NULL (err filled) when PostgreSQL
 * is unreachable, or every slot stayed busy, or connecting did not finish,
 * by deadline (clock_now_ms() scale). */
struct db_conn *db_pool_acquire(struct db_pool *p, int64_t deadline, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Give c back. */
void db_pool_release(struct db_pool *p, struct db_conn *c);
/* Run statement `stmt` with text parameters (values may hold NULLs for SQL
 * NULL), answered by deadline. On DB_OK and DB_ERROR *res is a result the
 * caller PQclear()s; on DB_UNAVAILABLE and DB_TIMEOUT *res is NULL. *ms
 * (may be NULL) receives the duration. */
enum db_result db_exec(struct db_conn *c, size_t stmt, const char *const *values, int64_t deadline,
                       PGresult **res, double *ms) __attribute__((warn_unused_result));
/* Whether an error result means the server is in trouble rather than the
 * statement being wrong: a query canceled (statement timeout, SQLSTATE
 * 57014), an administrator shutdown or crash (57P*), no connection (08*),
 * insufficient resources (53*). Such errors are a 503, not a 500. */
int db_error_unavailable(const PGresult *res);
/* SQLSTATE of an error result ("" if none). */
const char *db_sqlstate(const PGresult *res);
/* What of a failed result may be logged: "SQLSTATE 23505 constraint
 * users_email_lower_key table users" (only the parts the server sent).
 * Never the message, DETAIL or hint: they quote the offending values (an
 * email in a unique violation, bytes of a header in an encoding error). */
void db_error_summary(const PGresult *res, char *out, size_t outlen);
/* The name of statement stmt of the pool's table ("?" out of range), for
 * logs. */
const char *db_pool_stmt_name(const struct db_pool *p, size_t stmt);
/* Run statement stmt (one without parameters, "SELECT 1") on a pooled
 * connection: 0 when PostgreSQL answered it by deadline, -1 otherwise. */
int db_ping(struct db_pool *p, size_t stmt, int64_t deadline) __attribute__((warn_unused_result));
/* Counters for /health and metrics. */
void db_pool_stats(struct db_pool *p, struct db_pool_stats *out);
/* Close every connection and free the pool (no thread may still use it). */
void db_pool_destroy(struct db_pool *p);

#endif
