#include "invalidate.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

#define INV_TICK_MS     100
#define INV_PING_MS     500
#define INV_SILENCE_MS  1500
#define INV_BACKOFF_MIN 50
#define INV_BACKOFF_MAX 1000

struct invalidate {
    struct kv_pool *kv;
    char *channel;
    struct cache *l1;
    struct l2 *l2;
    pthread_t thread;
    int started;
    _Atomic int stop;
    _Atomic int up;
};

/* Flush queued output; 0 or -1. */
static int inv_flush(redisContext *ctx)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(ctx, &done) != REDIS_OK)
            return -1;
    return 0;
}

/* Handle one reply of the subscribed connection: 0, or -1 if unexpected. */
static int inv_reply(struct invalidate *inv, const redisReply *r, int *subscribed)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return -1;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "message") == 0 && r->elements == 3 &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        cache_drop(inv->l1, r->element[2]->str, r->element[2]->len);
        return 0;
    }
    if (strcmp(kind, "subscribe") == 0) {
        *subscribed = 1;
        return 0;
    }
    return strcmp(kind, "pong") == 0 ? 0 : -1;
}

/* One subscription lifetime on ctx; returns when it breaks or on stop. */
static void inv_session(struct invalidate *inv, redisContext *ctx)
{
    int subscribed = 0;
    int64_t last_heard = clock_now_ms(), last_ping = last_heard;
    if (redisAppendCommand(ctx, "SUBSCRIBE %s", inv->channel) != REDIS_OK || inv_flush(ctx) != 0)
        return;
    while (!atomic_load(&inv->stop)) {
        void *reply = NULL;
        if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK)
            return;
        if (reply != NULL) {
            int was = subscribed;
            int bad = inv_reply(inv, reply, &subscribed);
            freeReplyObject(reply);
            if (bad)
                return;
            last_heard = clock_now_ms();
            if (subscribed && !was) {
                /* Subscribed first, then flush: nothing published from now
                 * on can be missed, and nothing older survives. */
                cache_flush(inv->l1);
                cache_set_short_lived(inv->l1, 0);
                atomic_store(&inv->up, 1);
                if (l2_retry_pending(inv->l2) != 0)
                    log_msg(LOG_WARN, "invalidate: some queued L2 writes still pending");
                log_msg(LOG_INFO, "invalidation channel subscribed; L1 flushed");
            }
            continue;
        }
        int64_t now = clock_now_ms();
        if (now - last_heard > INV_SILENCE_MS)
            return;
        if (now - last_ping >= INV_PING_MS) {
            if (redisAppendCommand(ctx, "PING") != REDIS_OK || inv_flush(ctx) != 0)
                return;
            last_ping = now;
            /* Writes queued while the data connections were backing off
             * (they may still be when the subscription comes back). */
            struct l2_stats st;
            l2_stats(inv->l2, &st);
            if (subscribed && st.pending > 0)
                (void)l2_retry_pending(inv->l2);
        }
        struct pollfd pfd = {.fd = ctx->fd, .events = POLLIN};
        int n = poll(&pfd, 1, INV_TICK_MS);
        if (n > 0 && redisBufferRead(ctx) != REDIS_OK)
            return;
    }
}

static void *inv_main(void *arg)
{
    struct invalidate *inv = arg;
    long backoff = 0;
    while (!atomic_load(&inv->stop)) {
        redisContext *ctx = kv_connect_dedicated(inv->kv);
        if (ctx != NULL) {
            inv_session(inv, ctx);
            redisFree(ctx);
            if (atomic_exchange(&inv->up, 0)) {
                backoff = 0;
                log_msg(LOG_WARN, "invalidation channel lost; L1 entries now live at most %d ms",
                        CACHE_SHORT_TTL_MS);
            }
            cache_set_short_lived(inv->l1, 1);
        }
        if (atomic_load(&inv->stop))
            break;
        backoff = clock_backoff_next(backoff, INV_BACKOFF_MIN, INV_BACKOFF_MAX);
        for (long waited = 0; waited < backoff && !atomic_load(&inv->stop); waited += INV_TICK_MS)
            clock_sleep_ms(backoff - waited < INV_TICK_MS ? backoff - waited : INV_TICK_MS);
    }
    return NULL;
}

struct invalidate *invalidate_start(struct kv_pool *kv, const char *channel, struct cache *l1,
                                    struct l2 *l2)
{
    struct invalidate *inv = xcalloc(1, sizeof(*inv));
    inv->kv = kv;
    inv->channel = xstrdup(channel);
    inv->l1 = l1;
    inv->l2 = l2;
    cache_set_short_lived(l1, 1);
    if (kv != NULL && pthread_create(&inv->thread, NULL, inv_main, inv) == 0)
        inv->started = 1;
    else if (kv != NULL)
        log_msg(LOG_ERROR, "invalidate: cannot start the subscriber thread");
    return inv;
}

int invalidate_up(struct invalidate *inv)
{
    return atomic_load(&inv->up);
}

void invalidate_stop(struct invalidate *inv)
{
    if (inv == NULL)
        return;
    atomic_store(&inv->stop, 1);
    if (inv->started)
        pthread_join(inv->thread, NULL);
    free(inv->channel);
    free(inv);
}
