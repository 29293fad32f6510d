/* spool: the audit spool (SPEC §5), a durable append-only file of audit
 * records, one JSON object per line, for when PostgreSQL is away or the
 * audit queue cannot be placed. One struct spool per open path; lib/audit.c
 * is its one user and calls it, never the reverse: the spool knows the
 * record (struct audit_record and its pure helpers in audit.h) but not the
 * writer, the queue or PostgreSQL.
 *
 * spool_append() writes a batch of records with one write(2) and one fsync,
 * as many leading records as the size bound (max_bytes) allows; a line torn
 * by an earlier crash is ended first so it cannot swallow the next one. An
 * append that fails (the bound, a full disk) is an alarm: counted
 * (failures), logged (at most one line per 10 s, spool_alarm()) and
 * `failing` is set until an append works.
 *
 * spool_replay() hands every record once to a consumer: under the spool lock
 * it renames the spool to <path>.replay (appenders reopen a fresh spool at
 * once), then reads the replay file without any spool lock and removes it
 * once the consumer took all of it. One process replays at a time (flock on
 * <path>.lock); a replay file left by a crash or a failed round goes first.
 * A crash mid-replay only hands the same records (the same ids) again.
 *
 * Several processes may share one path: appends and the rename hold
 * flock(LOCK_EX) on it (and an in-process mutex, as flock does not exclude
 * threads sharing one open file); an appender that finds its descriptor no
 * longer names the path reopens it.
 *
 * Thread-safety: spool_append(), spool_alarm(), spool_stats() and
 * spool_path() may be called from any thread; spool_replay() from one
 * thread of a process at a time; spool_open() and spool_close() once each,
 * with no other call running. spool_line() and spool_read() share no
 * state. */
#ifndef ACCESS_SPOOL_H
#define ACCESS_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "buf.h"

struct spool_stats {
    uint64_t spooled_total; /* records appended */
    uint64_t fsyncs;        /* fsync(2) calls on the spool: one per append */
    uint64_t failures;      /* appends that failed (bound, full disk): alarms */
    int failing;            /* the last append failed: an alarm is on */
};

struct spool;

/* Open (or create, 0600) the spool at path; its directory must exist.
 * max_bytes bounds the file; 0 = 256 MiB. Copies path. NULL and err when the
 * file cannot be opened. */
struct spool *spool_open(const char *path, long long max_bytes, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Close the file and free s. NULL is a no-op. */
void spool_close(struct spool *s);

/* The path given to spool_open(), for log lines; lives as long as s. */
const char *spool_path(const struct spool *s);

/* Append recs[0..n) (borrowed) with one fsync: as many leading records as
 * the size bound allows. How many were appended; fewer than n is a spool
 * failure (counted, alarmed), and the rest stay the caller's. */
size_t spool_append(struct spool *s, const struct audit_record *recs, size_t n);

/* An alarm (SPEC §5) about n events, e the errno value behind it (EFBIG:
 * the size bound): counted by the caller, logged here at most once per 10 s
 * with the number of alarms left unlogged since. */
void spool_alarm(struct spool *s, const char *what, int e, size_t n);

void spool_stats(struct spool *s, struct spool_stats *out);

/* Called once per valid spool line; the record lives until the call
 * returns. Non-zero stops the read. */
typedef int (*spool_fn)(void *ctx, const struct audit_record *r);

/* Replay the spool if this process may (no other holds <path>.lock): the
 * replay file left over first, then the spool moved aside. fn gets each
 * record; at the end of each file fn(ctx, NULL) asks it to finish what it
 * holds. A file is removed (and "N events replayed" logged) only when
 * neither call returned non-zero. 0; -1 when fn stopped it or a file could
 * not be read (the file is kept for the next round). */
int spool_replay(struct spool *s, spool_fn fn, void *ctx);
/* Whether spool_replay() has anything to do: the spool is not empty or a
 * replay file is left. */
int spool_pending(const struct spool *s);

/* Append r as one spool line (a JSON object and "\n") to b. */
void spool_line(struct buf *b, const struct audit_record *r);

/* Call fn for every complete, valid line of the spool at path, in order. A
 * line that is not a valid event, and a last line without its newline (torn
 * by a crash), is skipped, logged (its number, never its content) and
 * counted in *bad_lines. A missing file is empty. 0, or -1 on a read error
 * or when fn stopped the read. */
int spool_read(const char *path, spool_fn fn, void *ctx, size_t *bad_lines)
    __attribute__((warn_unused_result));

#endif
