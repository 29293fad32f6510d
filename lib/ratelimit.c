#include "ratelimit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

#define RL_US          1000000LL
#define RL_SHARDS      64
#define RL_MAX_DEFAULT 65536
#define RL_ID_MAX      255
#define RL_PREFIX_MAX  63
/* Longest wait for another thread's lease refresh of the same user. */
#define RL_LEASE_WAIT_MS 1000

/* Lua numbers are doubles: integers below 2^53 are exact (µs timestamps are
 * ~2^51, windows at most ~2^45), so sums and products here are exact; idiv
 * still checks the floor of each quotient, and the state is written with
 * %.0f rather than left to a number-to-string conversion. The clock is
 * Redis TIME (effects replication, the Redis 7 default). */
const char ratelimit_script[] =
    "local function idiv(a, b)\n"
    "  local d = math.floor(a / b)\n"
    "  if d * b > a then d = d - 1 end\n"
    "  return d\n"
    "end\n"
    "local q = tonumber(ARGV[1])\n"
    "local w = tonumber(ARGV[2]) * 1000000\n"
    "local want = tonumber(ARGV[3])\n"
    "local t = math.max(idiv(w, q), 1)\n"
    "local tm = redis.call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0\n"
    "if tat < now then tat = now end\n"
    "local avail = math.max(math.min(idiv(now + w - tat, t), q), 0)\n"
    "local granted = math.max(math.min(want, avail), 0)\n"
    "if granted > 0 then\n"
    "  tat = tat + granted * t\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',\n"
    "             string.format('%.0f', math.ceil((tat - now) / 1000) + 1000))\n"
    "end\n"
    "local retry = 0\n"
    "if avail == 0 then retry = math.max(math.ceil((tat + t - w - now) / 1000), 1) end\n"
    "return {granted, avail - granted, math.ceil((tat - now) / 1000), retry}\n";

static const char *const rl_names[RL_CLASS_COUNT] = {"login",         "signup", "anonymous",
                                                     "authenticated", "token",  "recover"};

/* One key in a local table: fallback GCRA state or an authenticated lease. */
struct rl_entry {
    struct rl_entry *next;
    uint64_t hash;
    int cls;
    int refreshing;  /* lease: a thread is asking Redis; never evicted meanwhile */
    int64_t used_us; /* last use, for eviction */
    int64_t tat_us;  /* fallback: theoretical arrival time */
    long tokens;     /* lease: units left */
    long lease_rem;  /* lease: Redis's remaining when leased */
    int64_t lease_us, full_us, deny_us; /* lease: taken at, allowance full at, denied until */
    char id[];
};

struct rl_shard {
    pthread_mutex_t mu;
    pthread_cond_t refreshed; /* a lease refresh ended */
    struct rl_entry **bucket;
    size_t count;
};

struct rl_table {
    struct rl_shard shard[RL_SHARDS];
    size_t mask; /* buckets per shard - 1 */
    size_t cap;  /* entries per shard */
    int lease;   /* lease table (else fallback GCRA table) */
    int64_t window_us;
};

struct ratelimit {
    struct ratelimit_policy policy[RL_CLASS_COUNT];
    struct ratelimit_policy local[RL_CLASS_COUNT]; /* limit ceil(limit/W) */
    long block;                                    /* authenticated lease size */
    struct kv_pool *kv;
    char prefix[RL_PREFIX_MAX + 1];
    atomic_int degraded;
    struct rl_table lease, fallback;
};

static int64_t rl_ceil_div(int64_t a, int64_t b)
{
    return a <= 0 ? 0 : (a + b - 1) / b;
}

static int64_t rl_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * RL_US + ts.tv_nsec / 1000;
}

void ratelimit_gcra(const struct ratelimit_policy *p, int64_t now_us, int64_t *tat_us, long want,
                    struct ratelimit_verdict *v)
{
    int64_t w = p->window * RL_US, t = w / p->limit;
    if (t < 1)
        t = 1;
    int64_t tat = *tat_us > now_us ? *tat_us : now_us;
    int64_t avail = (now_us + w - tat) / t;
    avail = avail > p->limit ? p->limit : avail < 0 ? 0 : avail;
    long granted = want < 0 ? 0 : want < avail ? want : (long)avail;
    tat += granted * t;
    *tat_us = tat;
    v->granted = granted;
    v->remaining = (long)avail - granted;
    v->reset_s = (long)rl_ceil_div(tat - now_us, RL_US);
    v->retry_after_s = 0;
    if (avail == 0) {
        long s = (long)rl_ceil_div(tat + t - w - now_us, RL_US);
        v->retry_after_s = s < 1 ? 1 : s;
    }
}

/* ---- local tables ---------------------------------------------------- */

static uint64_t rl_hash(int cls, const char *id)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)cls;
    for (; *id != '\0'; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return h;
}

static void rl_table_init(struct rl_table *t, size_t max_entries, int lease, int64_t window_us)
{
    t->cap = max_entries / RL_SHARDS ? max_entries / RL_SHARDS : 1;
    size_t n = 1;
    while (n < t->cap)
        n <<= 1;
    t->mask = n - 1;
    t->lease = lease;
    t->window_us = window_us;
    for (size_t i = 0; i < RL_SHARDS; i++) {
        pthread_mutex_init(&t->shard[i].mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&t->shard[i].refreshed, &ca);
        pthread_condattr_destroy(&ca);
        t->shard[i].bucket = xcalloc(n, sizeof(struct rl_entry *));
    }
}

static void rl_table_free(struct rl_table *t)
{
    for (size_t i = 0; i < RL_SHARDS; i++) {
        struct rl_shard *sh = &t->shard[i];
        for (size_t b = 0; b <= t->mask; b++) {
            for (struct rl_entry *e = sh->bucket[b], *next; e != NULL; e = next) {
                next = e->next;
                free(e);
            }
        }
        free(sh->bucket);
        pthread_cond_destroy(&sh->refreshed);
        pthread_mutex_destroy(&sh->mu);
    }
}

static struct rl_shard *rl_shard_of(struct rl_table *t, uint64_t h)
{
    return &t->shard[h % RL_SHARDS];
}

/* An entry that holds nothing worth keeping. */
static int rl_idle(const struct rl_table *t, const struct rl_entry *e, int64_t now)
{
    if (!t->lease)
        return e->tat_us <= now;
    return !e->refreshing && e->deny_us <= now &&
           (e->tokens == 0 || now - e->lease_us >= t->window_us);
}

static void rl_unlink(struct rl_table *t, struct rl_shard *sh, const struct rl_entry *e)
{
    struct rl_entry **pp = &sh->bucket[(e->hash / RL_SHARDS) & t->mask];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    sh->count--;
}

/* Make room in a full shard: sweep idle entries, else drop the stalest. */
static void rl_evict(struct rl_table *t, struct rl_shard *sh, int64_t now)
{
    size_t before = sh->count;
    struct rl_entry *stalest = NULL;
    for (size_t b = 0; b <= t->mask; b++) {
        for (struct rl_entry **pp = &sh->bucket[b]; *pp != NULL;) {
            struct rl_entry *e = *pp;
            if (rl_idle(t, e, now)) {
                *pp = e->next;
                sh->count--;
                free(e);
                continue;
            }
            if (!e->refreshing && (stalest == NULL || e->used_us < stalest->used_us))
                stalest = e;
            pp = &e->next;
        }
    }
    if (sh->count == before && stalest != NULL) {
        rl_unlink(t, sh, stalest);
        free(stalest);
    }
}

/* The entry of (cls, id), created if absent; shard locked. */
static struct rl_entry *rl_get(struct rl_table *t, struct rl_shard *sh, uint64_t h, int cls,
                               const char *id, int64_t now)
{
    struct rl_entry **head = &sh->bucket[(h / RL_SHARDS) & t->mask], *e;
    for (e = *head; e != NULL; e = e->next)
        if (e->hash == h && e->cls == cls && strcmp(e->id, id) == 0)
            goto out;
    if (sh->count >= t->cap)
        rl_evict(t, sh, now);
    size_t n = strlen(id) + 1;
    e = xcalloc(1, sizeof(*e) + n);
    memcpy(e->id, id, n);
    e->hash = h;
    e->cls = cls;
    e->next = *head;
    *head = e;
    sh->count++;
out:
    e->used_us = now;
    return e;
}

/* The per-process fallback: GCRA with limit ceil(limit/W). */
static void rl_local(struct ratelimit *rl, enum ratelimit_class cls, const char *id,
                     struct ratelimit_verdict *v)
{
    uint64_t h = rl_hash((int)cls, id);
    struct rl_shard *sh = rl_shard_of(&rl->fallback, h);
    pthread_mutex_lock(&sh->mu);
    int64_t now = rl_now_us();
    struct rl_entry *e = rl_get(&rl->fallback, sh, h, (int)cls, id, now);
    ratelimit_gcra(&rl->local[cls], now, &e->tat_us, 1, v);
    pthread_mutex_unlock(&sh->mu);
    v->source = RL_SOURCE_LOCAL;
    if (rl->kv != NULL && !atomic_load(&rl->degraded) && atomic_exchange(&rl->degraded, 1) == 0)
        log_msg(LOG_WARN, "ratelimit: Redis unavailable, using per-process limits");
}

/* ---- Redis ----------------------------------------------------------- */

static struct kv_script rl_script = KV_SCRIPT_INIT(ratelimit_script);

/* Run the script for (cls, id, want): 0 and out = {granted, remaining,
 * reset_ms, retry_after_ms}, or -1 when Redis is absent or failed. */
static int rl_redis(struct ratelimit *rl, enum ratelimit_class cls, const char *id, long want,
                    long long out[4])
{
    if (rl->kv == NULL)
        return -1;
    struct kv_conn *c = kv_acquire(rl->kv);
    if (c == NULL)
        return -1;
    int rc = -1;
    char key[RL_PREFIX_MAX + 32 + 256], nums[3][24];
    const struct ratelimit_policy *p = &rl->policy[cls];
    int kl = snprintf(key, sizeof(key), "%s%s:%s", rl->prefix, rl_names[cls], id);
    snprintf(nums[0], sizeof(nums[0]), "%ld", p->limit);
    snprintf(nums[1], sizeof(nums[1]), "%ld", p->window);
    snprintf(nums[2], sizeof(nums[2]), "%ld", want);
    const char *argv[4] = {key, nums[0], nums[1], nums[2]};
    size_t lens[4] = {(size_t)kl, strlen(nums[0]), strlen(nums[1]), strlen(nums[2])};
    /* Loaded once; reloaded after NOSCRIPT (Redis restarted or flushed). */
    redisReply *r = kv_eval(c, &rl_script, 1, 4, argv, lens);
    if (r == NULL)
        goto out;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        log_msg(LOG_WARN, "ratelimit: EVALSHA failed: %s",
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        goto out;
    }
    for (size_t i = 0; i < 4; i++) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            goto out;
        out[i] = r->element[i]->integer;
    }
    rc = 0;
    if (atomic_load(&rl->degraded) && atomic_exchange(&rl->degraded, 0) == 1)
        log_msg(LOG_INFO, "ratelimit: Redis back, shared limits again");
out:
    if (r != NULL)
        freeReplyObject(r);
    kv_release(rl->kv, c);
    return rc;
}

/* ---- authenticated leases --------------------------------------------- */

static void rl_lease_verdict(const struct rl_entry *e, int64_t now, long granted,
                             struct ratelimit_verdict *v)
{
    v->granted = granted;
    v->remaining = granted ? e->lease_rem + e->tokens : 0;
    v->reset_s = (long)rl_ceil_div(e->full_us - now, RL_US);
    v->retry_after_s = granted ? 0 : (long)rl_ceil_div(e->deny_us - now, RL_US);
    if (!granted && v->retry_after_s < 1)
        v->retry_after_s = 1;
    v->source = RL_SOURCE_LEASE;
}

static void rl_leased(struct ratelimit *rl, const char *id, struct ratelimit_verdict *v)
{
    struct rl_table *t = &rl->lease;
    uint64_t h = rl_hash(RL_AUTHENTICATED, id);
    struct rl_shard *sh = rl_shard_of(t, h);
    struct rl_entry *e;
    int64_t now;
    /* The refresher's Redis call is bounded by the kv timeout; this bounds
     * the wait for it even so (SPEC §5: no wait without a deadline). */
    struct timespec until = clock_deadline(RL_LEASE_WAIT_MS);
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        now = rl_now_us();
        e = rl_get(t, sh, h, RL_AUTHENTICATED, id, now);
        if (e->deny_us > now || (e->tokens > 0 && now - e->lease_us < t->window_us)) {
            long granted = e->deny_us > now ? 0 : 1;
            e->tokens -= granted;
            rl_lease_verdict(e, now, granted, v);
            pthread_mutex_unlock(&sh->mu);
            return;
        }
        if (!e->refreshing)
            break;
        /* Another thread is leasing for this user: wait for its block, or
         * count locally (as when Redis fails) once that takes too long. */
        if (pthread_cond_timedwait(&sh->refreshed, &sh->mu, &until) == ETIMEDOUT) {
            pthread_mutex_unlock(&sh->mu);
            rl_local(rl, RL_AUTHENTICATED, id, v);
            return;
        }
    }
    e->refreshing = 1;
    e->tokens = 0; /* an expired lease's units are not spent */
    pthread_mutex_unlock(&sh->mu);

    long long r[4];
    int rc = rl_redis(rl, RL_AUTHENTICATED, id, rl->block, r);

    pthread_mutex_lock(&sh->mu);
    now = rl_now_us();
    e->refreshing = 0;
    pthread_cond_broadcast(&sh->refreshed);
    if (rc == 0) {
        e->full_us = now + r[2] * 1000;
        if (r[0] > 0) {
            e->tokens = (long)r[0] - 1;
            e->lease_rem = (long)r[1];
            e->lease_us = now;
        } else {
            e->deny_us = now + r[3] * 1000;
        }
        rl_lease_verdict(e, now, r[0] > 0, v);
        v->source = RL_SOURCE_REDIS;
    }
    pthread_mutex_unlock(&sh->mu);
    if (rc != 0)
        rl_local(rl, RL_AUTHENTICATED, id, v);
}

/* ---- public ------------------------------------------------------------ */

struct ratelimit *ratelimit_create(const struct ratelimit_options *o)
{
    const char *prefix = o->prefix != NULL ? o->prefix : "";
    if (strlen(prefix) > RL_PREFIX_MAX) {
        log_msg(LOG_ERROR, "ratelimit: key prefix over %d bytes", RL_PREFIX_MAX);
        return NULL;
    }
    for (int i = 0; i < RL_CLASS_COUNT; i++) {
        if (o->rate[i].count < 1 || o->rate[i].window < 1) {
            log_msg(LOG_ERROR, "ratelimit: %s: count and window must be >= 1", rl_names[i]);
            return NULL;
        }
    }
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));
    long workers = o->workers > 1 ? o->workers : 1;
    for (int i = 0; i < RL_CLASS_COUNT; i++) {
        rl->policy[i] = (struct ratelimit_policy){rl_names[i], o->rate[i].count, o->rate[i].window};
        rl->local[i] = rl->policy[i];
        rl->local[i].limit = (o->rate[i].count + workers - 1) / workers;
    }
    rl->block = (rl->policy[RL_AUTHENTICATED].limit + 19) / 20;
    rl->kv = o->kv;
    snprintf(rl->prefix, sizeof(rl->prefix), "%s", prefix);
    atomic_init(&rl->degraded, 0);
    size_t max = o->max_entries ? o->max_entries : RL_MAX_DEFAULT;
    rl_table_init(&rl->lease, max, 1, rl->policy[RL_AUTHENTICATED].window * RL_US);
    rl_table_init(&rl->fallback, max, 0, 0);
    return rl;
}

int ratelimit_check(struct ratelimit *rl, enum ratelimit_class cls, const char *id,
                    struct ratelimit_verdict *v)
{
    if ((unsigned)cls >= RL_CLASS_COUNT || id == NULL || id[0] == '\0' ||
        strnlen(id, RL_ID_MAX + 1) > RL_ID_MAX)
        return -1;
    if (cls == RL_AUTHENTICATED) {
        rl_leased(rl, id, v);
        return 0;
    }
    long long r[4];
    if (rl_redis(rl, cls, id, 1, r) != 0) {
        rl_local(rl, cls, id, v);
        return 0;
    }
    v->granted = (long)r[0];
    v->remaining = (long)r[1];
    v->reset_s = (long)rl_ceil_div(r[2], 1000);
    v->retry_after_s = r[0] > 0 ? 0 : (long)rl_ceil_div(r[3] > 0 ? r[3] : 1, 1000);
    v->source = RL_SOURCE_REDIS;
    return 0;
}

const struct ratelimit_policy *ratelimit_policy(const struct ratelimit *rl,
                                                enum ratelimit_class cls)
{
    return (unsigned)cls < RL_CLASS_COUNT ? &rl->policy[cls] : NULL;
}

int ratelimit_format_headers(const struct ratelimit_policy *p, const struct ratelimit_verdict *v,
                             char *policy_hdr, size_t policy_len, char *rl_hdr, size_t rl_len)
{
    /* draft-ietf-httpapi-ratelimit-headers-09: a policy is a quoted name
     * with q (quota) and w (window); RateLimit carries r (remaining) and t
     * (seconds until reset) for the same name. */
    int n = snprintf(policy_hdr, policy_len, "\"%s\";q=%ld;w=%ld", p->name, p->limit, p->window);
    if (n < 0 || (size_t)n >= policy_len)
        return -1;
    n = snprintf(rl_hdr, rl_len, "\"%s\";r=%ld;t=%ld", p->name, v->remaining, v->reset_s);
    return n < 0 || (size_t)n >= rl_len ? -1 : 0;
}

void ratelimit_destroy(struct ratelimit *rl)
{
    if (rl == NULL)
        return;
    rl_table_free(&rl->lease);
    rl_table_free(&rl->fallback);
    free(rl);
}

int ratelimit_addr_key(const char *addr, char *out, size_t outlen)
{
    unsigned char a[16];
    if (outlen == 0)
        return -1;
    out[0] = '\0';
    if (inet_pton(AF_INET, addr, a) == 1)
        return inet_ntop(AF_INET, a, out, (socklen_t)outlen) != NULL ? 0 : -1;
    if (inet_pton(AF_INET6, addr, a) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, sizeof(mapped)) == 0)
            return inet_ntop(AF_INET, a + 12, out, (socklen_t)outlen) != NULL ? 0 : -1;
        memset(a + 8, 0, 8);
        if (inet_ntop(AF_INET6, a, out, (socklen_t)outlen) == NULL)
            return -1;
        size_t n = strlen(out);
        if (n + 4 > outlen)
            return -1;
        memcpy(out + n, "/64", 4);
        return 0;
    }
    snprintf(out, outlen, "%s", addr);
    return -1;
}
