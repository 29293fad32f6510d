/* metrics: the Prometheus registry of every worker (SPEC §6).
 *
 * The supervisor maps one block MAP_SHARED (metrics_size() bytes), calls
 * metrics_init() once and then forks; the returned pointer is valid in every
 * worker. Each worker owns a slot 0..workers-1 and writes only there; a
 * restarted worker reuses its predecessor's slot, so counters never go back.
 * metrics_render() sums the slots into the text exposition format 0.0.4.
 *
 * Every label dimension is a fixed enum or table, so a series is an array
 * index: no allocation, no lock on the hot path.
 *
 * Thread- and process-safety: all writers are relaxed atomic adds (counters,
 * histograms) or stores (per-slot gauges) on lock-free 64-bit atomics, so any
 * thread of any process may call any function at any time. Slots are padded
 * to cache lines, so workers never contend. A render is not a snapshot:
 * series written during the render may be caught mid-way (each value is
 * read atomically, and a histogram's _count always equals its +Inf bucket).
 * Out-of-range slot, route or enum arguments are ignored (a metrics bug must
 * not take a worker down). */
#ifndef ACCESS_METRICS_H
#define ACCESS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Route indexes are the caller's (index 0 may be "unmatched"); names come
 * at render time. */
#define METRICS_MAX_ROUTES 48

enum metrics_method {
    METRICS_GET = 0,
    METRICS_POST,
    METRICS_PATCH,
    METRICS_DELETE,
    METRICS_PUT,
    METRICS_HEAD,
    METRICS_OPTIONS,
    METRICS_OTHER,
    METRICS_METHOD__COUNT
};

enum metrics_layer { METRICS_L1 = 0, METRICS_L2, METRICS_LAYER__COUNT };

enum metrics_auth {
    METRICS_AUTH_PASSWORD = 0,
    METRICS_AUTH_REFRESH,
    METRICS_AUTH_BEARER,
    METRICS_AUTH__COUNT
};

enum metrics_rl_class {
    METRICS_RL_LOGIN = 0,
    METRICS_RL_SIGNUP,
    METRICS_RL_ANONYMOUS,
    METRICS_RL_AUTHENTICATED,
    METRICS_RL_TOKEN,
    METRICS_RL_RECOVER,
    METRICS_RL__COUNT
};

/* Results of oauth_grants_total{grant_type,result} (SPEC §6): success or
 * the RFC 6749 §5.2 error; "error" for a 5xx. Other grant types than
 * client_credentials are counted as unsupported_grant_type under it. */
enum metrics_oauth_result {
    METRICS_OAUTH_SUCCESS = 0,
    METRICS_OAUTH_INVALID_REQUEST,
    METRICS_OAUTH_INVALID_CLIENT,
    METRICS_OAUTH_INVALID_GRANT,
    METRICS_OAUTH_UNSUPPORTED_GRANT_TYPE,
    METRICS_OAUTH_INVALID_SCOPE,
    METRICS_OAUTH_ERROR,
    METRICS_OAUTH__COUNT
};

/* Results of mfa_attempts_total{result} (SPEC §6): a second-factor code
 * checked at login/mfa, confirmation or removal. */
enum metrics_mfa_result {
    METRICS_MFA_SUCCESS = 0,
    METRICS_MFA_INVALID_CODE,  /* wrong TOTP or recovery code (401) */
    METRICS_MFA_INVALID_GRANT, /* mfa_token unknown, used, spent or expired (400) */
    METRICS_MFA_THROTTLED,     /* the account's login throttle (429) */
    METRICS_MFA_ERROR,         /* 5xx */
    METRICS_MFA__COUNT
};

/* Tables the janitor deletes from (janitor_deleted_total{table}). */
enum metrics_janitor_table {
    METRICS_JT_SESSIONS = 0,
    METRICS_JT_REFRESH_TOKENS,
    METRICS_JT_AUDIT_EVENTS,
    METRICS_JT_OUTBOX,
    METRICS_JT_ACCOUNT_TOKENS,
    METRICS_JT_MFA_TOKENS,
    METRICS_JT__COUNT
};

/* Outbox transports and kinds (SPEC §6 outbox metrics). */
enum metrics_outbox_transport { METRICS_OT_SMTP = 0, METRICS_OT_WEBHOOK, METRICS_OT__COUNT };
enum metrics_outbox_kind { METRICS_OK_MESSAGE = 0, METRICS_OK_EVENT, METRICS_OK__COUNT };

/* Values kept elsewhere (the supervisor's shared state), rendered as is. */
struct metrics_external {
    int64_t hash_queue_depth;
    int64_t hash_active;
    uint64_t hash_rejected_total;
    uint64_t worker_restarts_total;
};

struct metrics;

/* Bytes metrics_init() needs for `workers` slots. */
size_t metrics_size(unsigned workers);
/* Zero and lay out the registry in mem (len bytes, 64-byte aligned, e.g. from
 * mmap). NULL when workers is 0, len is short or mem misaligned. Call once,
 * before fork. */
struct metrics *metrics_init(void *mem, size_t len, unsigned workers)
    __attribute__((warn_unused_result));

/* Map an HTTP method (case-sensitive, as HTTP says) to its index; NULL and
 * unknown methods give METRICS_OTHER. */
enum metrics_method metrics_method_index(const char *method);

/* ---- hot path: slot is the calling worker's own slot ---------------- */

/* One answered request: http_requests_total and the route's duration.
 * Status codes outside the fixed table count as status="other". */
void metrics_http(struct metrics *m, unsigned slot, unsigned route, enum metrics_method method,
                  int status, double seconds);
/* One cache lookup in layer; hit != 0 for a hit. */
void metrics_cache(struct metrics *m, unsigned slot, enum metrics_layer layer, int hit);
/* n lookups at once (counters kept elsewhere, folded in as deltas). */
void metrics_cache_add(struct metrics *m, unsigned slot, enum metrics_layer layer, int hit,
                       uint64_t n);
/* One Argon2id hash that ran for seconds. */
void metrics_hash_observe(struct metrics *m, unsigned slot, double seconds);
/* One query that took seconds; slow != 0 also counts db_slow_queries_total. */
void metrics_db_observe(struct metrics *m, unsigned slot, double seconds, int slow);
/* One authentication attempt; ok != 0 for success. */
void metrics_auth(struct metrics *m, unsigned slot, enum metrics_auth method, int ok);
/* One request refused by the rate limiter. */
void metrics_ratelimited(struct metrics *m, unsigned slot, enum metrics_rl_class cls);
/* n audit events written to the spool file. */
void metrics_audit_spooled(struct metrics *m, unsigned slot, uint64_t n);
/* Audit spool alarms (SPEC §5): failed spool writes (full spool, full
 * disk) and events dropped because memory was full too. */
void metrics_audit_alarm(struct metrics *m, unsigned slot, uint64_t spool_failures,
                         uint64_t dropped);
/* Whether this worker's audit spool is failing right now (gauge 0/1). */
void metrics_set_audit_spool_failing(struct metrics *m, unsigned slot, int failing);
/* One answer of /oauth/token. */
void metrics_oauth_grant(struct metrics *m, unsigned slot, enum metrics_oauth_result result);
/* One second-factor attempt. */
void metrics_mfa(struct metrics *m, unsigned slot, enum metrics_mfa_result result);
/* n rows the janitor deleted from table. */
void metrics_janitor_deleted(struct metrics *m, unsigned slot, enum metrics_janitor_table table,
                             uint64_t n);
/* One delivery attempt of an outbox row over transport; ok != 0 when the
 * other side took it (outbox_delivered_total{transport,result}). */
void metrics_outbox_attempt(struct metrics *m, unsigned slot, enum metrics_outbox_transport t,
                            int ok);
/* One outbox row given up (outbox_dead_total). */
void metrics_outbox_dead(struct metrics *m, unsigned slot);
/* Rows waiting for delivery (pending or held) of kind, as this worker last
 * counted them in PostgreSQL. The table is shared, so render shows the
 * largest slot's value, not the sum. */
void metrics_set_outbox_pending(struct metrics *m, unsigned slot, enum metrics_outbox_kind kind,
                                uint64_t n);
/* This worker's PostgreSQL pool right now: open connections and busy slots
 * (gauges; render sums workers). idle is open - in_use, 0 when in_use is
 * larger (the two are sampled apart). */
void metrics_set_db_pool(struct metrics *m, unsigned slot, uint64_t open, uint64_t in_use);
/* This worker's audit queue depth right now. */
void metrics_set_audit_depth(struct metrics *m, unsigned slot, uint64_t depth);
/* Zero a slot's gauges (supervisor, after its worker died: its pool and
 * queue are gone). Counters are kept. */
void metrics_clear_gauges(struct metrics *m, unsigned slot);

/* ---- readers (tests, /health): totals over all slots ----------------- */

uint64_t metrics_cache_total(const struct metrics *m, enum metrics_layer layer, int hit);
/* Workers whose audit spool is failing now (for /health). */
uint64_t metrics_audit_spool_failing(const struct metrics *m);
/* http_requests_total for one series (status mapped as in metrics_http). */
uint64_t metrics_http_total(const struct metrics *m, unsigned route, enum metrics_method method,
                            int status);

/* Append the whole exposition to out. route_names[0..nroutes-1] name the
 * route indexes (NULL entries and indexes >= nroutes are not rendered;
 * indexes that share a name, as GET and PATCH of one template do, are
 * rendered once, summed, so every series appears once;
 * nroutes is capped at METRICS_MAX_ROUTES). ext may be NULL (zeros); version
 * labels build_info. Series: http_requests_total only where non-zero,
 * route histograms only where count > 0, everything else always. */
void metrics_render(const struct metrics *m, const char *const *route_names, size_t nroutes,
                    const struct metrics_external *ext, const char *version, struct buf *out);

#endif
