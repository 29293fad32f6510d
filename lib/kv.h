/* kv: a Redis connection pool for one worker process (hiredis 0.14, RESP2).
 *
 * URL forms: redis://[:PASSWORD@]HOST[:PORT][/DB] and unix:PATH. Contexts
 * open lazily, carry a short command timeout, and are dropped on any I/O or
 * protocol error; reconnects back off (50 ms doubling to 1 s) so a down
 * Redis costs callers an immediate NULL. kv_url_parse() is pure.
 *
 * Thread-safety: the pool is shared (mutex); a kv_conn belongs to the thread
 * that acquired it until released. */
#ifndef ACCESS_KV_H
#define ACCESS_KV_H

#include <pthread.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

struct kv_url {
    char host[256];
    int port;
    int db;
    char path[256];     /* unix socket path, or "" */
    char password[256]; /* "" when none */
};

/* Parse url into out; 0 or -1 with err filled. */
int kv_url_parse(const char *url, struct kv_url *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

struct kv_pool;
struct kv_conn;

/* A pool of `size` slots for url (validated here); NULL and err on a bad
 * URL. timeout_ms bounds connect and each command. */
struct kv_pool *kv_pool_create(const char *url, size_t size, long timeout_ms, char *err,
                               size_t errlen);
/* A connected context, or NULL when Redis is down or backing off. */
struct kv_conn *kv_acquire(struct kv_pool *p) __attribute__((warn_unused_result));
/* Give c back. */
void kv_release(struct kv_pool *p, struct kv_conn *c);
/* Run a command (hiredis format). NULL on failure, which also drops the
 * connection; a REDIS_REPLY_ERROR reply is returned as is. The caller frees
 * the reply with freeReplyObject(). */
redisReply *kv_command(struct kv_conn *c, const char *fmt, ...);
/* A Lua script run with EVALSHA; loaded with SCRIPT LOAD on first use and
 * again after a NOSCRIPT error (a restarted or flushed Redis). Define one
 * per script with KV_SCRIPT_INIT and share it between threads. */
struct kv_script {
    const char *source;
    pthread_mutex_t mu;
    char sha[41]; /* "" until loaded; under mu */
};
#define KV_SCRIPT_INIT(src)                                                                        \
    {                                                                                              \
        (src), PTHREAD_MUTEX_INITIALIZER, ""                                                       \
    }

/* EVALSHA script with nkeys keys followed by the other arguments (argc in
 * all, each with its length). Reply as kv_command: NULL on failure. */
redisReply *kv_eval(struct kv_conn *c, struct kv_script *s, int nkeys, int argc,
                    const char *const *argv, const size_t *lens);

/* A new dedicated connection to the pool's server, outside the pool (for a
 * subscriber); NULL when Redis is unreachable. Caller redisFree()s it. */
redisContext *kv_connect_dedicated(struct kv_pool *p);

/* PING through the pool: 0 when Redis answered PONG, -1 otherwise. */
int kv_ping(struct kv_pool *p);
/* Close all and free (no thread may still use it). */
void kv_pool_destroy(struct kv_pool *p);

#endif
