/* ratelimit: GCRA rate limits shared through Redis, per-process when Redis is away.
 *
 * Arithmetic: the generic cell rate algorithm in integer microseconds. A
 * policy allows `limit` units per `window` seconds: emission interval
 * T = window*1e6/limit (floored, at least 1 µs), burst tolerance = window, so
 * `limit` units may come at once and then one every T. The state of a key is
 * one number, its theoretical arrival time (tat). ratelimit_gcra() is the
 * pure form; the same arithmetic runs as one Lua script in Redis (atomic,
 * clock = Redis TIME), keyed prefix + class + ":" + id.
 *
 * Classes: login, signup, anonymous and recover (keyed by client IP) cost one EVALSHA
 * per request. authenticated (keyed by user id) does not: each worker leases
 * a block of max(1, ceil(limit/20)) units of the user's allowance from Redis,
 * spends it locally, and asks again when it is spent or older than the
 * window; a denial is cached until its retry-after, so a flood costs nothing.
 * One thread per user and worker asks Redis at a time (the others wait).
 * Leases trade precision for round trips:
 *   - over the limit: units are charged in Redis when leased but spent up to
 *     one window later, so within a window a user can get up to about
 *     W x block more than Redis alone would grant (each of the W workers
 *     spending a block leased in the previous window);
 *   - under the limit: units leased by a worker the user no longer reaches
 *     stay charged until they expire, so another worker may deny while up to
 *     (W-1) x block units sit unspent elsewhere.
 *   For 6000/60 the block is 300 units (3 s of allowance).
 * The RateLimit remaining/reset of a leased verdict are estimates (Redis's
 * answer at lease time plus the local units left).
 *
 * Redis away (no pool, kv_acquire NULL, a failed command or an error reply):
 * each process applies the policy with limit ceil(limit/W), so the machine
 * as a whole stays near the limit; Redis is used again as soon as
 * kv_acquire() succeeds (the pool already backs off reconnects). The verdict
 * says where it came from.
 *
 * Local tables (leases, fallback state) are sharded hash tables, a mutex per
 * shard, bounded to max_entries each: when a shard is full, entries that hold
 * nothing (full allowance, spent or expired lease) are swept, else the
 * stalest goes.
 *
 * Thread-safety: ratelimit_check() may be called from any number of threads;
 * create/destroy from one. */
#ifndef ACCESS_RATELIMIT_H
#define ACCESS_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "kv.h"

/* RL_TOKEN: per API client id on the OAuth endpoints (SPEC §11). */
enum ratelimit_class {
    RL_LOGIN = 0,
    RL_SIGNUP,
    RL_ANONYMOUS,
    RL_AUTHENTICATED,
    RL_TOKEN,
    RL_RECOVER, /* per client IP: recover, recover/confirm, verify (SPEC §9) */
    RL_CLASS_COUNT
};

/* Where a verdict came from. */
enum ratelimit_source {
    RL_SOURCE_REDIS = 0, /* a Redis round trip of this call */
    RL_SOURCE_LEASE,     /* a unit (or cached denial) of a Redis lease, no round trip */
    RL_SOURCE_LOCAL,     /* the per-process fallback: Redis absent or failing */
};

struct ratelimit_policy {
    const char *name; /* "login", "signup", "anonymous", "authenticated", "token" */
    long limit;       /* q: units ... */
    long window;      /* w: ... per this many seconds */
};

struct ratelimit_verdict {
    long granted;       /* units granted; a request (1 unit) is allowed iff 1 */
    long remaining;     /* units still available after this */
    long reset_s;       /* seconds until the allowance is full again */
    long retry_after_s; /* granted == 0: seconds until one unit is available (>= 1); else 0 */
    enum ratelimit_source source;
};

/* Take up to `want` units at now_us under policy p from the state *tat_us
 * (0 for a new key), updating it; fill v (source left untouched). want <= 0
 * only looks. Pure; p->limit and p->window must be >= 1. */
void ratelimit_gcra(const struct ratelimit_policy *p, int64_t now_us, int64_t *tat_us, long want,
                    struct ratelimit_verdict *v);

/* The Lua script run in Redis (exposed for tests): KEYS[1] = key,
 * ARGV = limit, window seconds, want; returns {granted, remaining, reset_ms,
 * retry_after_ms}. */
extern const char ratelimit_script[];

struct ratelimit_options {
    struct config_rate rate[RL_CLASS_COUNT]; /* indexed by enum ratelimit_class */
    long workers;                            /* W, worker processes sharing Redis (>= 1) */
    struct kv_pool *kv;                      /* NULL: no Redis configured; not owned */
    const char *prefix;                      /* Redis key prefix, e.g. "rl:" */
    size_t max_entries;                      /* per local table; 0 = 65536 */
};

struct ratelimit;

/* A limiter for this process; NULL (logged) when a rate has a count or
 * window below 1 or the prefix is over 63 bytes. */
struct ratelimit *ratelimit_create(const struct ratelimit_options *o);
/* One request (one unit) of class cls by id (client IP or user id, 1..255
 * bytes): 0 and v filled (v->granted == 1 means allowed), whether or not
 * Redis answers; -1 only on invalid arguments. */
int ratelimit_check(struct ratelimit *rl, enum ratelimit_class cls, const char *id,
                    struct ratelimit_verdict *v) __attribute__((warn_unused_result));
/* The configured policy of cls (name, limit, window), for the headers; they
 * advertise the machine-wide limit in fallback mode too. */
const struct ratelimit_policy *ratelimit_policy(const struct ratelimit *rl,
                                                enum ratelimit_class cls);
/* Header values of draft-ietf-httpapi-ratelimit-headers-09: policy_hdr gets
 * the RateLimit-Policy value `"login";q=100;w=3600`, rl_hdr the RateLimit
 * value `"login";r=0;t=1800` (r = remaining, t = reset seconds). 0, or -1 when
 * a buffer is too small. */
int ratelimit_format_headers(const struct ratelimit_policy *p, const struct ratelimit_verdict *v,
                             char *policy_hdr, size_t policy_len, char *rl_hdr, size_t rl_len)
    __attribute__((warn_unused_result));
/* Room for any ratelimit_addr_key() result ("xxxx:…:xxxx/64" and NUL). */
#define RATELIMIT_ADDR_KEY_MAX 64

/* The identity a client address is limited by: an IPv4 address as
 * inet_ntop writes it; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as
 * that IPv4 address; any other IPv6 address as its /64 prefix, normalised
 * ("2001:db8:1:2::/64"), since one client usually holds a whole /64. out
 * (outlen >= RATELIMIT_ADDR_KEY_MAX) gets it, NUL-terminated. 0; or -1
 * when addr is not an IP address, and out gets addr itself (cut to fit). */
int ratelimit_addr_key(const char *addr, char *out, size_t outlen);

/* Free (no thread may still use it; the kv pool is not closed). */
void ratelimit_destroy(struct ratelimit *rl);

#endif
