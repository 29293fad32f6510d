#include "metrics.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* Workers share these atomics through MAP_SHARED memory: only lock-free
 * atomics are address-free, so anything else would be a silent bug. */
_Static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "64-bit atomics must be lock-free to be shared between processes");

#define NS_PER_S UINT64_C(1000000000)

/* Status codes with their own series; the rest is status="other". */
#define N_STATUS 18
static const int status_codes[N_STATUS] = {200, 201, 204, 304, 400, 401, 403, 404, 405,
                                           409, 413, 415, 422, 429, 500, 502, 503, 504};

static const char *const method_names[METRICS_METHOD__COUNT] = {"GET", "POST", "PATCH",   "DELETE",
                                                                "PUT", "HEAD", "OPTIONS", "OTHER"};
static const char *const layer_names[METRICS_LAYER__COUNT] = {"l1", "l2"};
static const char *const auth_names[METRICS_AUTH__COUNT] = {"password", "refresh", "bearer"};
static const char *const jt_names[METRICS_JT__COUNT] = {
    "sessions", "refresh_tokens", "audit_events", "outbox", "account_tokens", "mfa_tokens"};
static const char *const rl_names[METRICS_RL__COUNT] = {"login",         "signup", "anonymous",
                                                        "authenticated", "token",  "recover"};
static const char *const mfa_result_names[METRICS_MFA__COUNT] = {
    "success", "invalid_code", "invalid_grant", "throttled", "error"};
static const char *const oauth_result_names[METRICS_OAUTH__COUNT] = {
    "success",       "invalid_request",        "invalid_client",
    "invalid_grant", "unsupported_grant_type", "invalid_scope",
    "error"};
static const char *const ot_names[METRICS_OT__COUNT] = {"smtp", "webhook"};
static const char *const ok_names[METRICS_OK__COUNT] = {"message", "event"};

/* Histogram upper bounds in nanoseconds (integers compare exactly and
 * render back to the listed decimals). */
#define HTTP_NB 14
#define HASH_NB 11
static const uint64_t http_le[HTTP_NB] = {500000,     1000000,    2500000,    5000000,    10000000,
                                          25000000,   50000000,   100000000,  250000000,  500000000,
                                          1000000000, 2500000000, 5000000000, 10000000000};
static const uint64_t hash_le[HASH_NB] = {25000000,   50000000,   75000000,  100000000,
                                          150000000,  200000000,  300000000, 500000000,
                                          1000000000, 2500000000, 5000000000};

/* One worker's series. Histogram buckets are per bucket (not cumulative);
 * index NB is the +Inf overflow, and the count is the sum of all buckets. */
struct metrics_slot {
    _Alignas(64) _Atomic uint64_t http[METRICS_MAX_ROUTES][METRICS_METHOD__COUNT][N_STATUS + 1];
    _Atomic uint64_t http_b[METRICS_MAX_ROUTES][HTTP_NB + 1];
    _Atomic uint64_t http_sum[METRICS_MAX_ROUTES];
    _Atomic uint64_t hash_b[HASH_NB + 1], hash_sum;
    _Atomic uint64_t db_b[HTTP_NB + 1], db_sum, db_slow;
    _Atomic uint64_t cache[METRICS_LAYER__COUNT][2]; /* [layer][hit] */
    _Atomic uint64_t auth[METRICS_AUTH__COUNT][2];   /* [method][ok] */
    _Atomic uint64_t rl[METRICS_RL__COUNT];
    _Atomic uint64_t audit_spooled, audit_spool_failures, audit_dropped;
    _Atomic uint64_t janitor[METRICS_JT__COUNT];
    _Atomic uint64_t oauth_grants[METRICS_OAUTH__COUNT];
    _Atomic uint64_t mfa[METRICS_MFA__COUNT];
    _Atomic uint64_t outbox_attempts[METRICS_OT__COUNT][2];
    _Atomic uint64_t outbox_dead;
    _Atomic uint64_t outbox_pending[METRICS_OK__COUNT]; /* gauge */
    /* Gauges, set by the owning worker. */
    _Atomic uint64_t db_idle, db_in_use, audit_depth, audit_spool_failing;
};

struct metrics {
    unsigned workers;
    struct metrics_slot slot[];
};

size_t metrics_size(unsigned workers)
{
    return sizeof(struct metrics) + (size_t)workers * sizeof(struct metrics_slot);
}

struct metrics *metrics_init(void *mem, size_t len, unsigned workers)
{
    if (workers == 0 || len < metrics_size(workers) ||
        (uintptr_t)mem % _Alignof(struct metrics) != 0)
        return NULL;
    memset(mem, 0, metrics_size(workers));
    struct metrics *m = mem;
    m->workers = workers;
    return m;
}

enum metrics_method metrics_method_index(const char *method)
{
    if (method != NULL)
        for (int i = 0; i < METRICS_OTHER; i++)
            if (strcmp(method, method_names[i]) == 0)
                return (enum metrics_method)i;
    return METRICS_OTHER;
}

static unsigned status_index(int code)
{
    for (unsigned i = 0; i < N_STATUS; i++)
        if (status_codes[i] == code)
            return i;
    return N_STATUS;
}

/* ---- writers --------------------------------------------------------- */

static void add(_Atomic uint64_t *p, uint64_t n)
{
    atomic_fetch_add_explicit(p, n, memory_order_relaxed);
}

static void set(_Atomic uint64_t *p, uint64_t v)
{
    atomic_store_explicit(p, v, memory_order_relaxed);
}

static struct metrics_slot *slot_of(struct metrics *m, unsigned slot)
{
    return m != NULL && slot < m->workers ? &m->slot[slot] : NULL;
}

static uint64_t to_ns(double seconds)
{
    if (!(seconds > 0)) /* also NaN */
        return 0;
    if (seconds > 1e9) /* 31 years: keeps the conversion defined */
        seconds = 1e9;
    return (uint64_t)(seconds * 1e9 + 0.5);
}

static void observe(_Atomic uint64_t *buckets, _Atomic uint64_t *sum, const uint64_t *le, size_t n,
                    double seconds)
{
    uint64_t ns = to_ns(seconds);
    size_t i = 0;
    while (i < n && ns > le[i])
        i++;
    add(&buckets[i], 1);
    add(sum, ns);
}

void metrics_http(struct metrics *m, unsigned slot, unsigned route, enum metrics_method method,
                  int status, double seconds)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s == NULL || route >= METRICS_MAX_ROUTES || (unsigned)method >= METRICS_METHOD__COUNT)
        return;
    add(&s->http[route][method][status_index(status)], 1);
    observe(s->http_b[route], &s->http_sum[route], http_le, HTTP_NB, seconds);
}

void metrics_cache(struct metrics *m, unsigned slot, enum metrics_layer layer, int hit)
{
    metrics_cache_add(m, slot, layer, hit, 1);
}

void metrics_cache_add(struct metrics *m, unsigned slot, enum metrics_layer layer, int hit,
                       uint64_t n)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL && (unsigned)layer < METRICS_LAYER__COUNT)
        add(&s->cache[layer][hit != 0], n);
}

void metrics_hash_observe(struct metrics *m, unsigned slot, double seconds)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL)
        observe(s->hash_b, &s->hash_sum, hash_le, HASH_NB, seconds);
}

void metrics_db_observe(struct metrics *m, unsigned slot, double seconds, int slow)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s == NULL)
        return;
    observe(s->db_b, &s->db_sum, http_le, HTTP_NB, seconds);
    if (slow)
        add(&s->db_slow, 1);
}

void metrics_auth(struct metrics *m, unsigned slot, enum metrics_auth method, int ok)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL && (unsigned)method < METRICS_AUTH__COUNT)
        add(&s->auth[method][ok != 0], 1);
}

void metrics_ratelimited(struct metrics *m, unsigned slot, enum metrics_rl_class cls)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL && (unsigned)cls < METRICS_RL__COUNT)
        add(&s->rl[cls], 1);
}

void metrics_audit_spooled(struct metrics *m, unsigned slot, uint64_t n)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL)
        add(&s->audit_spooled, n);
}

void metrics_audit_alarm(struct metrics *m, unsigned slot, uint64_t spool_failures,
                         uint64_t dropped)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s == NULL)
        return;
    add(&s->audit_spool_failures, spool_failures);
    add(&s->audit_dropped, dropped);
}

void metrics_set_audit_spool_failing(struct metrics *m, unsigned slot, int failing)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL)
        set(&s->audit_spool_failing, failing != 0);
}

void metrics_outbox_attempt(struct metrics *m, unsigned slot, enum metrics_outbox_transport t,
                            int ok)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL && (unsigned)t < METRICS_OT__COUNT)
        add(&s->outbox_attempts[t][ok != 0], 1);
}

void metrics_outbox_dead(struct metrics *m, unsigned slot)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL)
        add(&s->outbox_dead, 1);
}

void metrics_set_outbox_pending(struct metrics *m, unsigned slot, enum metrics_outbox_kind kind,
                                uint64_t n)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL && (unsigned)kind < METRICS_OK__COUNT)
        set(&s->outbox_pending[kind], n);
}

void metrics_janitor_deleted(struct metrics *m, unsigned slot, enum metrics_janitor_table table,
                             uint64_t n)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL && (unsigned)table < METRICS_JT__COUNT)
        add(&s->janitor[table], n);
}

void metrics_oauth_grant(struct metrics *m, unsigned slot, enum metrics_oauth_result result)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL && (unsigned)result < METRICS_OAUTH__COUNT)
        add(&s->oauth_grants[result], 1);
}

void metrics_mfa(struct metrics *m, unsigned slot, enum metrics_mfa_result result)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL && (unsigned)result < METRICS_MFA__COUNT)
        add(&s->mfa[result], 1);
}

void metrics_set_db_pool(struct metrics *m, unsigned slot, uint64_t open, uint64_t in_use)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s == NULL)
        return;
    /* The two are read apart: a slot may be busy before its connection
     * counts as open, so in_use can exceed open for a moment. */
    set(&s->db_idle, open > in_use ? open - in_use : 0);
    set(&s->db_in_use, in_use);
}

void metrics_set_audit_depth(struct metrics *m, unsigned slot, uint64_t depth)
{
    struct metrics_slot *s = slot_of(m, slot);
    if (s != NULL)
        set(&s->audit_depth, depth);
}

void metrics_clear_gauges(struct metrics *m, unsigned slot)
{
    metrics_set_db_pool(m, slot, 0, 0);
    metrics_set_audit_depth(m, slot, 0);
    metrics_set_audit_spool_failing(m, slot, 0);
}

/* ---- readers --------------------------------------------------------- */

/* The sum over all slots of the field at offset off (offsetof(struct
 * metrics_slot, field), array indexes allowed). */
static uint64_t sum_slots(const struct metrics *m, size_t off)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < m->workers; i++) {
        const _Atomic uint64_t *p = (const void *)((const char *)&m->slot[i] + off);
        total += atomic_load_explicit(p, memory_order_relaxed);
    }
    return total;
}

/* SUM(m, cache[l][h]): one field summed over the slots. (A member
 * designator cannot take parentheses.) */
// NOLINTNEXTLINE(bugprone-macro-parentheses)
#define SUM(m, field) sum_slots((m), offsetof(struct metrics_slot, field))

/* The largest value of a per-slot gauge (a count of shared state). */
static uint64_t max_slots(const struct metrics *m, size_t off)
{
    uint64_t best = 0;
    for (unsigned i = 0; i < m->workers; i++) {
        const _Atomic uint64_t *p =
            (const _Atomic uint64_t *)(const void *)((const char *)&m->slot[i] + off);
        uint64_t v = atomic_load_explicit(p, memory_order_relaxed);
        if (v > best)
            best = v;
    }
    return best;
}

uint64_t metrics_cache_total(const struct metrics *m, enum metrics_layer layer, int hit)
{
    if ((unsigned)layer >= METRICS_LAYER__COUNT)
        return 0;
    return SUM(m, cache[layer][hit != 0]);
}

uint64_t metrics_audit_spool_failing(const struct metrics *m)
{
    return m != NULL ? SUM(m, audit_spool_failing) : 0;
}

uint64_t metrics_http_total(const struct metrics *m, unsigned route, enum metrics_method method,
                            int status)
{
    if (route >= METRICS_MAX_ROUTES || (unsigned)method >= METRICS_METHOD__COUNT)
        return 0;
    return SUM(m, http[route][method][status_index(status)]);
}

/* ---- rendering ------------------------------------------------------- */

struct label {
    const char *name, *value;
};

/* ns as decimal seconds, exact and without exponent: "0.0005", "1", "2.5". */
static const char *fmt_seconds(char *dst, size_t len, uint64_t ns)
{
    uint64_t frac = ns % NS_PER_S;
    if (frac == 0) {
        snprintf(dst, len, "%" PRIu64, ns / NS_PER_S);
        return dst;
    }
    int n = snprintf(dst, len, "%" PRIu64 ".%09" PRIu64, ns / NS_PER_S, frac);
    if (n > 0 && (size_t)n < len)
        while (dst[n - 1] == '0')
            dst[--n] = '\0';
    return dst;
}

/* A label value escaped per the text format: \\, \" and \n. */
static void put_escaped(struct buf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            buf_puts(b, "\\\\");
        else if (*s == '"')
            buf_puts(b, "\\\"");
        else if (*s == '\n')
            buf_puts(b, "\\n");
        else
            buf_putc(b, *s);
    }
}

static void family(struct buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* "name[suffix]{k="v",...} ", ready for the value. */
static void head(struct buf *b, const char *name, const char *suffix, const struct label *l,
                 size_t nl)
{
    buf_puts(b, name);
    buf_puts(b, suffix);
    for (size_t i = 0; i < nl; i++) {
        buf_printf(b, "%c%s=\"", i == 0 ? '{' : ',', l[i].name);
        put_escaped(b, l[i].value);
        buf_putc(b, '"');
    }
    buf_puts(b, nl > 0 ? "} " : " ");
}

static void sample_u(struct buf *b, const char *name, const struct label *l, size_t nl, uint64_t v)
{
    head(b, name, "", l, nl);
    buf_printf(b, "%" PRIu64 "\n", v);
}

/* A histogram's series from per-bucket counts[0..n] (counts[n] is +Inf);
 * route is its only label, or NULL. */
static void render_hist(struct buf *b, const char *name, const char *route, const uint64_t *le,
                        size_t n, const uint64_t *counts, uint64_t sum_ns)
{
    struct label l[2] = {{"route", route}, {NULL, NULL}};
    size_t nl = route != NULL;
    char s[32];
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += counts[i];
        l[nl] = (struct label){"le", i < n ? fmt_seconds(s, sizeof(s), le[i]) : "+Inf"};
        head(b, name, "_bucket", l, nl + 1);
        buf_printf(b, "%" PRIu64 "\n", cum);
    }
    head(b, name, "_sum", l, nl);
    buf_printf(b, "%s\n", fmt_seconds(s, sizeof(s), sum_ns));
    head(b, name, "_count", l, nl);
    buf_printf(b, "%" PRIu64 "\n", cum);
}

/* Sum the bucket array at offset off0 over the slots into counts[0..n]; the total. */
static uint64_t sum_buckets(const struct metrics *m, size_t off0, size_t n, uint64_t *counts)
{
    uint64_t total = 0;
    for (size_t i = 0; i <= n; i++) {
        counts[i] = sum_slots(m, off0 + i * sizeof(_Atomic uint64_t));
        total += counts[i];
    }
    return total;
}

/* Index of the first route named like names[r]: routes that share a
 * template (GET and PATCH of /me) are one route to Prometheus. */
static size_t route_first(const char *const *names, size_t r)
{
    for (size_t i = 0; i < r; i++)
        if (names[i] != NULL && strcmp(names[i], names[r]) == 0)
            return i;
    return r;
}

static void render_http(const struct metrics *m, const char *const *names, size_t nroutes,
                        struct buf *b)
{
    family(b, "http_requests_total", "counter",
           "HTTP requests answered, by route template, method and status.");
    for (size_t r = 0; r < nroutes; r++) {
        if (names[r] == NULL || route_first(names, r) != r)
            continue;
        for (int me = 0; me < METRICS_METHOD__COUNT; me++) {
            for (unsigned st = 0; st <= N_STATUS; st++) {
                uint64_t v = 0;
                for (size_t r2 = r; r2 < nroutes; r2++)
                    if (names[r2] != NULL && strcmp(names[r2], names[r]) == 0)
                        v += SUM(m, http[r2][me][st]);
                if (v == 0)
                    continue;
                char code[16] = "other";
                if (st < N_STATUS)
                    snprintf(code, sizeof(code), "%d", status_codes[st]);
                const struct label l[] = {
                    {"route", names[r]}, {"method", method_names[me]}, {"status", code}};
                sample_u(b, "http_requests_total", l, 3, v);
            }
        }
    }

    /* One histogram per route template, summed over its methods (SPEC §6). */
    family(b, "http_request_duration_seconds", "histogram",
           "Time from request start to response, by route template.");
    for (size_t r = 0; r < nroutes; r++) {
        uint64_t counts[HTTP_NB + 1] = {0}, part[HTTP_NB + 1], total = 0, sum_ns = 0;
        if (names[r] == NULL || route_first(names, r) != r)
            continue;
        for (size_t r2 = r; r2 < nroutes; r2++) {
            if (names[r2] == NULL || strcmp(names[r2], names[r]) != 0)
                continue;
            total += sum_buckets(m, offsetof(struct metrics_slot, http_b[r2]), HTTP_NB, part);
            for (size_t i = 0; i <= HTTP_NB; i++)
                counts[i] += part[i];
            sum_ns += SUM(m, http_sum[r2]);
        }
        if (total > 0)
            render_hist(b, "http_request_duration_seconds", names[r], http_le, HTTP_NB, counts,
                        sum_ns);
    }
}

void metrics_render(const struct metrics *m, const char *const *route_names, size_t nroutes,
                    const struct metrics_external *ext, const char *version, struct buf *out)
{
    static const struct metrics_external zero;
    uint64_t counts[HTTP_NB + 1];
    if (ext == NULL)
        ext = &zero;
    if (nroutes > METRICS_MAX_ROUTES)
        nroutes = METRICS_MAX_ROUTES;

    render_http(m, route_names, nroutes, out);

    family(out, "cache_requests_total", "counter", "Cache lookups by layer (l1, l2) and result.");
    for (int la = 0; la < METRICS_LAYER__COUNT; la++)
        for (int hit = 1; hit >= 0; hit--) {
            const struct label l[] = {{"layer", layer_names[la]}, {"result", hit ? "hit" : "miss"}};
            sample_u(out, "cache_requests_total", l, 2, SUM(m, cache[la][hit]));
        }

    family(out, "hash_queue_depth", "gauge", "Password hashes waiting for a slot, machine-wide.");
    buf_printf(out, "hash_queue_depth %" PRId64 "\n", ext->hash_queue_depth);
    family(out, "hash_active", "gauge", "Password hashes running, machine-wide.");
    buf_printf(out, "hash_active %" PRId64 "\n", ext->hash_active);
    family(out, "hash_duration_seconds", "histogram", "Time one Argon2id hash ran.");
    sum_buckets(m, offsetof(struct metrics_slot, hash_b), HASH_NB, counts);
    render_hist(out, "hash_duration_seconds", NULL, hash_le, HASH_NB, counts, SUM(m, hash_sum));
    family(out, "hash_rejected_total", "counter", "Password hashes refused: queue full.");
    sample_u(out, "hash_rejected_total", NULL, 0, ext->hash_rejected_total);

    family(out, "db_pool_connections", "gauge", "PostgreSQL connections by state.");
    const struct label idle[] = {{"state", "idle"}}, in_use[] = {{"state", "in_use"}};
    sample_u(out, "db_pool_connections", idle, 1, SUM(m, db_idle));
    sample_u(out, "db_pool_connections", in_use, 1, SUM(m, db_in_use));
    family(out, "db_query_duration_seconds", "histogram", "Time one PostgreSQL query took.");
    sum_buckets(m, offsetof(struct metrics_slot, db_b), HTTP_NB, counts);
    render_hist(out, "db_query_duration_seconds", NULL, http_le, HTTP_NB, counts, SUM(m, db_sum));
    family(out, "db_slow_queries_total", "counter", "PostgreSQL queries over the slow threshold.");
    sample_u(out, "db_slow_queries_total", NULL, 0, SUM(m, db_slow));

    family(out, "auth_attempts_total", "counter", "Authentication attempts by method and result.");
    for (int me = 0; me < METRICS_AUTH__COUNT; me++)
        for (int ok = 1; ok >= 0; ok--) {
            const struct label l[] = {{"method", auth_names[me]},
                                      {"result", ok ? "success" : "failure"}};
            sample_u(out, "auth_attempts_total", l, 2, SUM(m, auth[me][ok]));
        }

    family(out, "rate_limit_exceeded_total", "counter", "Requests refused by the rate limiter.");
    for (int c = 0; c < METRICS_RL__COUNT; c++) {
        const struct label l[] = {{"class", rl_names[c]}};
        sample_u(out, "rate_limit_exceeded_total", l, 1, SUM(m, rl[c]));
    }

    family(out, "audit_queue_depth", "gauge", "Audit events waiting to be written.");
    sample_u(out, "audit_queue_depth", NULL, 0, SUM(m, audit_depth));
    family(out, "audit_spooled_total", "counter",
           "Audit events written to the spool file while PostgreSQL was away.");
    sample_u(out, "audit_spooled_total", NULL, 0, SUM(m, audit_spooled));
    family(out, "audit_spool_failures_total", "counter",
           "Spool writes that failed (spool full, disk full): events waited in memory.");
    sample_u(out, "audit_spool_failures_total", NULL, 0, SUM(m, audit_spool_failures));
    family(out, "audit_spool_failing", "gauge",
           "Workers whose audit spool is failing now (an alarm: /health is degraded).");
    sample_u(out, "audit_spool_failing", NULL, 0, SUM(m, audit_spool_failing));
    family(out, "audit_dropped_total", "counter",
           "Audit events dropped: PostgreSQL, the spool and the memory queue all full.");
    sample_u(out, "audit_dropped_total", NULL, 0, SUM(m, audit_dropped));
    family(out, "janitor_deleted_total", "counter", "Rows deleted by the janitor, by table.");
    for (int t = 0; t < METRICS_JT__COUNT; t++) {
        const struct label l[] = {{"table", jt_names[t]}};
        sample_u(out, "janitor_deleted_total", l, 1, SUM(m, janitor[t]));
    }
    family(out, "oauth_grants_total", "counter",
           "Requests to /oauth/token by grant type and result (an OAuth error code).");
    for (int r = 0; r < METRICS_OAUTH__COUNT; r++) {
        const struct label l[] = {{"grant_type", "client_credentials"},
                                  {"result", oauth_result_names[r]}};
        sample_u(out, "oauth_grants_total", l, 2, SUM(m, oauth_grants[r]));
    }
    family(out, "mfa_attempts_total", "counter",
           "Second-factor codes checked (login/mfa, confirmation, removal), by result.");
    for (int r = 0; r < METRICS_MFA__COUNT; r++) {
        const struct label l[] = {{"result", mfa_result_names[r]}};
        sample_u(out, "mfa_attempts_total", l, 1, SUM(m, mfa[r]));
    }
    family(out, "outbox_pending", "gauge", "Outbox rows waiting for delivery (or held), by kind.");
    for (int k = 0; k < METRICS_OK__COUNT; k++) {
        const struct label l[] = {{"kind", ok_names[k]}};
        sample_u(out, "outbox_pending", l, 1,
                 max_slots(m, offsetof(struct metrics_slot, outbox_pending) +
                                  (size_t)k * sizeof(_Atomic uint64_t)));
    }
    family(out, "outbox_delivered_total", "counter",
           "Outbox delivery attempts by transport and result.");
    for (int t = 0; t < METRICS_OT__COUNT; t++)
        for (int ok = 1; ok >= 0; ok--) {
            const struct label l[] = {{"transport", ot_names[t]},
                                      {"result", ok ? "success" : "failure"}};
            sample_u(out, "outbox_delivered_total", l, 2, SUM(m, outbox_attempts[t][ok]));
        }
    family(out, "outbox_dead_total", "counter", "Outbox rows given up after outbox_max_attempts.");
    sample_u(out, "outbox_dead_total", NULL, 0, SUM(m, outbox_dead));
    family(out, "worker_restarts_total", "counter", "Workers started again after dying.");
    sample_u(out, "worker_restarts_total", NULL, 0, ext->worker_restarts_total);

    family(out, "build_info", "gauge", "Build of the running service; always 1.");
    const struct label v[] = {{"version", version != NULL ? version : "unknown"}};
    sample_u(out, "build_info", v, 1, 1);
}
