#include "kv.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

struct kv_conn {
    struct kv_pool *pool;
    redisContext *ctx;
    int busy;
};

struct kv_pool {
    pthread_mutex_t mu;
    struct kv_url url;
    long timeout_ms;
    size_t size;
    struct kv_conn *slots;
    /* Back-off after a failed connect or command: no attempt before
     * retry_at. Atomic so the command path can test it without the lock. */
    _Atomic int64_t retry_at_ms;
    _Atomic long backoff_ms;
};

#define KV_BACKOFF_MIN_MS 50
#define KV_BACKOFF_MAX_MS 1000

int kv_url_parse(const char *url, struct kv_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        if (*path == '\0' || strlen(path) >= sizeof(out->path)) {
            snprintf(err, errlen, "redis_url: invalid unix socket path in '%s'", url);
            return -1;
        }
        snprintf(out->path, sizeof(out->path), "%s", path);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis_url: '%s' is not redis://HOST:PORT[/DB] or unix:PATH", url);
        return -1;
    }
    const char *p = url + 8;
    const char *at = strchr(p, '@');
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        size_t n = (size_t)(at - pw);
        if (n >= sizeof(out->password)) {
            snprintf(err, errlen, "redis_url: password too long");
            return -1;
        }
        memcpy(out->password, pw, n);
        out->password[n] = '\0';
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof(out->host)) {
        snprintf(err, errlen, "redis_url: missing or overlong host in '%s'", url);
        return -1;
    }
    memcpy(out->host, p, hl);
    out->host[hl] = '\0';
    p += hl;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535 || (*end != '\0' && *end != '/')) {
            snprintf(err, errlen, "redis_url: invalid port in '%s' (allowed 1..65535)", url);
            return -1;
        }
        out->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1] != '\0') {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end != '\0' || db < 0 || db > 15) {
            snprintf(err, errlen, "redis_url: invalid database in '%s' (allowed 0..15)", url);
            return -1;
        }
        out->db = (int)db;
    } else if (*p != '\0' && strcmp(p, "/") != 0) {
        snprintf(err, errlen, "redis_url: unexpected '%s' in '%s'", p, url);
        return -1;
    }
    return 0;
}

struct kv_pool *kv_pool_create(const char *url, size_t size, long timeout_ms, char *err,
                               size_t errlen)
{
    struct kv_url u;
    if (kv_url_parse(url, &u, err, errlen) != 0)
        return NULL;
    struct kv_pool *p = xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    p->url = u;
    p->timeout_ms = timeout_ms;
    p->size = size ? size : 1;
    p->slots = xcalloc(p->size, sizeof(*p->slots));
    for (size_t i = 0; i < p->size; i++)
        p->slots[i].pool = p;
    return p;
}

static redisContext *kv_connect(struct kv_pool *p)
{
    struct timeval tv = {p->timeout_ms / 1000, (p->timeout_ms % 1000) * 1000};
    redisContext *ctx = p->url.path[0] ? redisConnectUnixWithTimeout(p->url.path, tv)
                                       : redisConnectWithTimeout(p->url.host, p->url.port, tv);
    redisReply *r = NULL;
    if (ctx == NULL || ctx->err)
        goto fail;
    if (redisSetTimeout(ctx, tv) != REDIS_OK)
        goto fail;
    if (p->url.password[0]) {
        r = redisCommand(ctx, "AUTH %s", p->url.password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            goto fail;
        freeReplyObject(r);
        r = NULL;
    }
    if (p->url.db != 0) {
        r = redisCommand(ctx, "SELECT %d", p->url.db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            goto fail;
        freeReplyObject(r);
        r = NULL;
    }
    return ctx;
fail:
    if (r != NULL)
        freeReplyObject(r);
    if (ctx != NULL)
        redisFree(ctx);
    return NULL;
}

/* A connect or a command failed: back off (doubling) before the next try,
 * for every slot: a Redis that accepts connections but never answers (a
 * stopped process, a full disk) must cost one timeout, not one a request. */
static void kv_backoff(struct kv_pool *p)
{
    pthread_mutex_lock(&p->mu);
    long b = clock_backoff_next(atomic_load(&p->backoff_ms), KV_BACKOFF_MIN_MS, KV_BACKOFF_MAX_MS);
    atomic_store(&p->backoff_ms, b);
    atomic_store(&p->retry_at_ms, clock_now_ms() + b);
    pthread_mutex_unlock(&p->mu);
}

/* A command was answered: Redis is healthy again. */
static void kv_healthy(struct kv_pool *p)
{
    if (atomic_load_explicit(&p->backoff_ms, memory_order_relaxed) != 0) {
        atomic_store(&p->backoff_ms, 0);
        atomic_store(&p->retry_at_ms, 0);
    }
}

/* The context is unusable after an I/O or protocol error (or a timeout). */
static void kv_broken(struct kv_conn *c)
{
    redisFree(c->ctx);
    c->ctx = NULL;
    kv_backoff(c->pool);
}

struct kv_conn *kv_acquire(struct kv_pool *p)
{
    struct kv_conn *c = NULL;
    if (clock_now_ms() < atomic_load(&p->retry_at_ms))
        return NULL;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->size; i++) {
        if (!p->slots[i].busy && (c == NULL || (c->ctx == NULL && p->slots[i].ctx != NULL)))
            c = &p->slots[i];
    }
    if (c == NULL) {
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    c->busy = 1;
    pthread_mutex_unlock(&p->mu);
    if (c->ctx != NULL)
        return c;
    /* A successful connect does not end the back-off: a hung server still
     * accepts connections. The first answered command does. */
    c->ctx = kv_connect(p);
    if (c->ctx == NULL) {
        kv_backoff(p);
        pthread_mutex_lock(&p->mu);
        c->busy = 0;
        pthread_mutex_unlock(&p->mu);
        c = NULL;
    }
    return c;
}

void kv_release(struct kv_pool *p, struct kv_conn *c)
{
    pthread_mutex_lock(&p->mu);
    c->busy = 0;
    pthread_mutex_unlock(&p->mu);
}

redisReply *kv_command(struct kv_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = c->ctx != NULL ? redisvCommand(c->ctx, fmt, ap) : NULL;
    va_end(ap);
    if (r == NULL && c->ctx != NULL)
        kv_broken(c);
    else if (r != NULL)
        kv_healthy(c->pool);
    return r;
}

redisContext *kv_connect_dedicated(struct kv_pool *p)
{
    return kv_connect(p);
}

/* The script's sha, loading it when reload or not yet loaded: 0 or -1. */
static int kv_script_sha(struct kv_conn *c, struct kv_script *s, int reload, char sha[41])
{
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (reload || s->sha[0] == '\0') {
        redisReply *r = kv_command(c, "SCRIPT LOAD %s", s->source);
        if (r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40)
            memcpy(s->sha, r->str, 41);
        else
            rc = -1;
        if (r != NULL)
            freeReplyObject(r);
    }
    memcpy(sha, s->sha, 41);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

#define KV_EVAL_MAX_ARGS 16

redisReply *kv_eval(struct kv_conn *c, struct kv_script *s, int nkeys, int argc,
                    const char *const *argv, const size_t *lens)
{
    const char *av[KV_EVAL_MAX_ARGS + 3];
    size_t al[KV_EVAL_MAX_ARGS + 3];
    char sha[41], nk[16];
    if (argc < 0 || argc > KV_EVAL_MAX_ARGS || nkeys < 0 || nkeys > argc)
        return NULL;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = sha;
    al[1] = 40;
    av[2] = nk;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens[i];
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (kv_script_sha(c, s, attempt > 0, sha) != 0 || c->ctx == NULL)
            return NULL;
        redisReply *r = redisCommandArgv(c->ctx, argc + 3, av, al);
        if (r == NULL) {
            kv_broken(c);
            return NULL;
        }
        kv_healthy(c->pool);
        if (attempt == 0 && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
            freeReplyObject(r);
            continue;
        }
        return r;
    }
    return NULL;
}

int kv_ping(struct kv_pool *p)
{
    struct kv_conn *c = kv_acquire(p);
    if (c == NULL)
        return -1;
    redisReply *r = kv_command(c, "PING");
    int ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    if (r != NULL)
        freeReplyObject(r);
    kv_release(p, c);
    return ok ? 0 : -1;
}

void kv_pool_destroy(struct kv_pool *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->size; i++)
        if (p->slots[i].ctx != NULL)
            redisFree(p->slots[i].ctx);
    free(p->slots);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
