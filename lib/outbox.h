/* outbox: the transactional outbox of SPEC §9.
 *
 * Writing: a use case adds its rows (messages, events) to a struct
 * outbox_rows and passes outbox_rows_param() as one parameter of the very
 * statement that makes the change: OUTBOX_INSERT_SQL inserts every element
 * of that JSON array, so the rows commit or roll back with the change.
 * Messages are `held` when mail_transport = none; events are only written
 * when events_url is set.
 *
 * Delivering: one thread per worker process (outbox_start). A round claims
 * up to OUTBOX_CLAIM_MAX due `pending` rows in one statement (UPDATE ...
 * FROM (SELECT ... FOR UPDATE SKIP LOCKED)) that also counts the attempt
 * and pushes next_at OUTBOX_LEASE_S ahead: no other process or host picks
 * the row while it is being sent, and no transaction stays open during the
 * send; a worker that dies mid-way leaves the row due again after the lease
 * (delivery is at least once). No connection is held while sending. Then
 * each row is `delivered`, retried at now + outbox_backoff_ms(attempts), or
 * `dead` after outbox_max_attempts (counted, logged). Delivered and dead
 * rows lose their link (it holds a live token) and the janitor deletes
 * them after 7 days.
 *
 * Transports: messages by mail_transport (smtp: an RFC 5322 message from
 * conf/templates/<verify|reset>.txt, read at start relative to the working
 * directory, built-in text when missing; webhook: the row's JSON, signed),
 * events to events_url, signed the same way (lib/mail.h).
 *
 * Thread-safety: outbox_kick() from any thread; start/stop from one. */
#ifndef ACCESS_OUTBOX_H
#define ACCESS_OUTBOX_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "db.h"
#include "metrics.h"

#define OUTBOX_CLAIM_MAX      16
#define OUTBOX_LEASE_S        60 /* a claimed row is due again after this (sender died) */
#define OUTBOX_BACKOFF_MAX_MS 3600000L
#define OUTBOX_TEMPLATES      "conf/templates"

/* Insert the rows of JSON array parameter `param` (e.g. "$5"). */
#define OUTBOX_INSERT_SQL(param)                                                                   \
    "INSERT INTO outbox (id, kind, type, user_id, payload, state) SELECT (e->>'id')::uuid, "       \
    "e->>'kind', e->>'type', (e->>'user_id')::uuid, e->'payload', e->>'state' FROM "               \
    "jsonb_array_elements(" param "::jsonb) e"

struct outbox_rows {
    struct buf b; /* "[{…},{…}" until outbox_rows_param() closes it */
    int n;
};

/* Add a message row: type "message.verify" or "message.reset", to the
 * address, link the full link (prefix + token), expires_at RFC 3339. */
void outbox_rows_message(struct outbox_rows *r, const struct config *c, const char *type,
                         const char *user_id, const char *to, const char *link,
                         const char *expires_at);
/* Add an event row (nothing when events_url is empty): type "user.created"
 * etc., data {"user_id":…} plus {k: v} when k is not NULL. */
void outbox_rows_event(struct outbox_rows *r, const struct config *c, const char *type,
                       const char *user_id, const char *k, const char *v);
/* The JSON array text ("[]" when empty); valid until outbox_rows_free(). */
const char *outbox_rows_param(struct outbox_rows *r);
/* Wipe (links hold tokens) and free. */
void outbox_rows_free(struct outbox_rows *r);

/* RFC 3339 UTC ("2026-01-02T03:04:05Z") of t into out (>= 21 bytes). */
void outbox_rfc3339(time_t t, char *out, size_t outlen);

/* Delay before retry number `attempts` (the failed attempt's number, >= 1):
 * base 1 s doubling per attempt, capped at 1 h; "equal jitter": base/2 +
 * rnd % (base/2 + 1), so between half and all of base. Pure. */
long outbox_backoff_ms(long attempts, uint32_t rnd);

enum outbox_stmt {
    OUTBOX_CLAIM = 0, /* $1 lease s, $2 limit */
    OUTBOX_DELIVERED, /* $1 id */
    OUTBOX_RETRY,     /* $1 id, $2 delay ms, $3 error */
    OUTBOX_DEAD,      /* $1 id, $2 error */
    OUTBOX_PENDING,   /* counts by kind */
    OUTBOX_STMT__COUNT
};
/* Registered by the caller from stmt_base on, in this order. */
extern const struct db_stmt outbox_statements[OUTBOX_STMT__COUNT];

struct outbox_options {
    const struct config *cfg;
    struct db_pool *db;
    size_t stmt_base; /* index of OUTBOX_CLAIM in the pool's statements */
    long poll_ms;     /* between rounds when nothing was kicked; 0 = 1000 */
    struct metrics *metrics;
    unsigned slot;
};

struct outbox;

/* Start the delivery thread (templates read now). NULL and err on failure. */
struct outbox *outbox_start(const struct outbox_options *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Wake the thread: rows were just committed. NULL is a no-op. */
void outbox_kick(struct outbox *ob);
/* Stop (leaves after the row being sent) and free. NULL is a no-op. */
void outbox_stop(struct outbox *ob);

#endif
