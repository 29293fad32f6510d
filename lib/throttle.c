#include "throttle.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

const char throttle_script[] =
    "local op, max, win = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "if op == 'clear' then redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) return {1, 0, 0} end\n"
    "local function release()\n"
    "  if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end\n"
    "end\n"
    "if op == 'give' then release() return {1, 0, 0} end\n"
    "if op == 'fail' then\n"
    "  release()\n"
    "  if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], win) end\n"
    "  return {1, 0, 0}\n"
    "end\n"
    "local f = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if f >= max then\n"
    "  local ttl = redis.call('PTTL', KEYS[1])\n"
    "  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], win) ttl = win end\n"
    "  local first = redis.call('SET', KEYS[3], '1', 'NX', 'PX', ttl)\n"
    "  return {0, ttl, first and 1 or 0}\n"
    "end\n"
    "local p = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "if f + p >= max then return {2, 0, 0} end\n"
    "redis.call('INCR', KEYS[2])\n"
    "redis.call('PEXPIRE', KEYS[2], 60000)\n"
    "return {1, 0, 0}\n";

static struct kv_script throttle_kv = KV_SCRIPT_INIT(throttle_script);

#define THROTTLE_SHARDS 16

struct throttle_entry {
    char key[THROTTLE_KEY_MAX];
    long count;      /* failures in the window */
    long pending;    /* attempts being checked */
    int64_t ends_ms; /* window end, clock_now_ms() scale */
    int flagged;     /* the first refusal was reported */
};

struct throttle_shard {
    pthread_mutex_t mu;
    struct throttle_entry *e;
    size_t n, cap;
};

struct throttle {
    struct throttle_options o;
    char prefix[32];
    long local_max;
    struct throttle_shard shard[THROTTLE_SHARDS];
};

struct throttle *throttle_create(const struct throttle_options *o)
{
    if (o->max < 1 || o->window < 1 || o->workers < 1 || o->prefix == NULL ||
        strlen(o->prefix) > 31) {
        log_msg(LOG_ERROR, "throttle: invalid options");
        return NULL;
    }
    struct throttle *t = xcalloc(1, sizeof(*t));
    t->o = *o;
    snprintf(t->prefix, sizeof(t->prefix), "%s", o->prefix);
    t->o.prefix = t->prefix;
    /* floor, at least 1: the W processes together never pass max (unless
     * max < W) */
    t->local_max = o->max / o->workers > 0 ? o->max / o->workers : 1;
    if (t->o.max_entries == 0)
        t->o.max_entries = 65536;
    for (int i = 0; i < THROTTLE_SHARDS; i++)
        pthread_mutex_init(&t->shard[i].mu, NULL);
    return t;
}

void throttle_key(const struct throttle *t, const char *user_id, const char *email,
                  char out[THROTTLE_KEY_MAX])
{
    if (user_id != NULL && user_id[0] != '\0') {
        snprintf(out, THROTTLE_KEY_MAX, "u:%.70s", user_id);
        return;
    }
    unsigned char h[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, t->o.email_key, sizeof(t->o.email_key), sizeof(h));
    for (const char *p = email; *p; p++) {
        unsigned char c = (unsigned char)tolower((unsigned char)*p);
        crypto_generichash_update(&st, &c, 1);
    }
    crypto_generichash_final(&st, h, sizeof(h));
    memcpy(out, "e:", 2);
    sodium_bin2hex(out + 2, THROTTLE_KEY_MAX - 2, h, sizeof(h));
}

/* Run the script; 0 with out[3], -1 when Redis did not answer. */
static int throttle_redis(struct throttle *t, const char *op, const char *key, long long out[3])
{
    if (t->o.kv == NULL)
        return -1;
    struct kv_conn *c = kv_acquire(t->o.kv);
    if (c == NULL)
        return -1;
    char k1[THROTTLE_KEY_MAX + 40], k2[THROTTLE_KEY_MAX + 42], k3[THROTTLE_KEY_MAX + 42];
    char mx[24], win[24];
    int l1 = snprintf(k1, sizeof(k1), "%s%s", t->prefix, key);
    int l2 = snprintf(k2, sizeof(k2), "%s%s:p", t->prefix, key);
    int l3 = snprintf(k3, sizeof(k3), "%s%s:t", t->prefix, key);
    snprintf(mx, sizeof(mx), "%ld", t->o.max);
    snprintf(win, sizeof(win), "%ld", t->o.window * 1000);
    const char *argv[6] = {k1, k2, k3, op, mx, win};
    size_t lens[6] = {(size_t)l1, (size_t)l2, (size_t)l3, strlen(op), strlen(mx), strlen(win)};
    int rc = -1;
    redisReply *r = kv_eval(c, &throttle_kv, 3, 6, argv, lens);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        rc = 0;
        for (size_t i = 0; i < 3; i++) {
            if (r->element[i]->type != REDIS_REPLY_INTEGER)
                rc = -1;
            else
                out[i] = r->element[i]->integer;
        }
    } else if (r != NULL) {
        log_msg(LOG_WARN, "throttle: EVALSHA failed: %s",
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    if (r != NULL)
        freeReplyObject(r);
    kv_release(t->o.kv, c);
    return rc;
}

static struct throttle_shard *throttle_shard_of(struct throttle *t, const char *key)
{
    uint32_t h = 2166136261u;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &t->shard[h % THROTTLE_SHARDS];
}

/* The live entry of key in s (created when create), or NULL. Under s->mu. */
static struct throttle_entry *throttle_find(struct throttle *t, struct throttle_shard *s,
                                            const char *key, int64_t now, int create)
{
    size_t i, w = 0;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->e[i].key, key) == 0)
            break;
    if (i < s->n && s->e[i].ends_ms <= now) {
        s->e[i] = s->e[--s->n]; /* the window passed */
        i = s->n;
    }
    if (i < s->n || !create)
        return i < s->n ? &s->e[i] : NULL;
    if (s->n >= t->o.max_entries / THROTTLE_SHARDS + 1) {
        /* Full: drop the windows that passed; if none did, the oldest. */
        for (i = 0; i < s->n; i++)
            if (s->e[i].ends_ms > now)
                s->e[w++] = s->e[i];
        s->n = w;
        if (s->n >= t->o.max_entries / THROTTLE_SHARDS + 1) {
            size_t old = 0;
            for (i = 1; i < s->n; i++)
                if (s->e[i].ends_ms < s->e[old].ends_ms)
                    old = i;
            s->e[old] = s->e[--s->n];
        }
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->e = xrealloc(s->e, s->cap * sizeof(*s->e));
    }
    struct throttle_entry *e = &s->e[s->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->ends_ms = now + t->o.window * 1000;
    return e;
}

static void throttle_local_take(struct throttle *t, const char *key, struct throttle_verdict *v)
{
    struct throttle_shard *s = throttle_shard_of(t, key);
    int64_t now = clock_now_ms();
    pthread_mutex_lock(&s->mu);
    struct throttle_entry *e = throttle_find(t, s, key, now, 1);
    if (e->count >= t->local_max) {
        v->allowed = 0;
        v->retry_after_s = (long)((e->ends_ms - now + 999) / 1000);
        v->first = !e->flagged;
        e->flagged = 1;
    } else if (e->count + e->pending >= t->local_max) {
        v->busy = 1;
    } else {
        e->pending++;
        v->allowed = 1;
    }
    pthread_mutex_unlock(&s->mu);
}

/* op: 0 give, 1 fail, 2 clear. */
static void throttle_local_done(struct throttle *t, const char *key, int op)
{
    struct throttle_shard *s = throttle_shard_of(t, key);
    int64_t now = clock_now_ms();
    pthread_mutex_lock(&s->mu);
    struct throttle_entry *e = throttle_find(t, s, key, now, op == 1);
    if (e != NULL && op == 2) {
        e->ends_ms = 0; /* passed: dropped on the next look */
    } else if (e != NULL) {
        if (e->pending > 0)
            e->pending--;
        if (op == 1) {
            if (e->count == 0)
                e->ends_ms = now + t->o.window * 1000; /* the window opens */
            e->count++;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

void throttle_take(struct throttle *t, const char *key, struct throttle_verdict *v)
{
    long long out[3];
    memset(v, 0, sizeof(*v));
    if (throttle_redis(t, "take", key, out) == 0) {
        v->allowed = out[0] == 1;
        v->busy = out[0] == 2;
        if (out[0] == 0) {
            v->retry_after_s = (long)((out[1] + 999) / 1000);
            v->first = out[2] == 1;
        }
    } else {
        v->local = 1;
        throttle_local_take(t, key, v);
    }
    if (!v->allowed && !v->busy && v->retry_after_s < 1)
        v->retry_after_s = 1;
}

void throttle_done(struct throttle *t, const char *key, const struct throttle_verdict *v,
                   int failed)
{
    long long out[3];
    if (!v->allowed)
        return;
    if (v->local)
        throttle_local_done(t, key, failed ? 1 : 0);
    else if (throttle_redis(t, failed ? "fail" : "give", key, out) != 0 && failed)
        throttle_local_done(t, key, 1); /* Redis went away meanwhile: count here */
}

void throttle_clear(struct throttle *t, const char *key)
{
    long long out[3];
    (void)throttle_redis(t, "clear", key, out);
    throttle_local_done(t, key, 2);
}

void throttle_destroy(struct throttle *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < THROTTLE_SHARDS; i++) {
        pthread_mutex_destroy(&t->shard[i].mu);
        free(t->shard[i].e);
    }
    sodium_memzero(t->o.email_key, sizeof(t->o.email_key));
    free(t);
}
