#include "outbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <sodium.h>

#include "alloc.h"
#include "clock.h"
#include "json.h"
#include "log.h"
#include "mail.h"
#include "template.h"
#include "uuid.h"

const struct db_stmt outbox_statements[OUTBOX_STMT__COUNT] = {
    [OUTBOX_CLAIM] = {"outbox_claim",
                      "UPDATE outbox o SET attempts = o.attempts + 1, next_at = now() + "
                      "make_interval(secs => $1::int) FROM (SELECT id FROM outbox WHERE state = "
                      "'pending' AND next_at <= now() ORDER BY next_at LIMIT $2::int FOR UPDATE "
                      "SKIP LOCKED) d WHERE o.id = d.id RETURNING o.id, o.kind, o.type, "
                      "o.payload::text, o.attempts, greatest(0, round(extract(epoch FROM "
                      "((o.payload->>'expires_at')::timestamptz - o.created_at)) / 60))::bigint",
                      2, 0},
    [OUTBOX_DELIVERED] = {"outbox_delivered",
                          "UPDATE outbox SET state = 'delivered', done_at = now(), last_error = "
                          "NULL, payload = payload - 'link' WHERE id = $1",
                          1, 1},
    [OUTBOX_RETRY] = {"outbox_retry",
                      "UPDATE outbox SET next_at = now() + make_interval(secs => $2::bigint / "
                      "1000.0), last_error = $3 WHERE id = $1 AND state = 'pending'",
                      3, 1},
    [OUTBOX_DEAD] = {"outbox_dead",
                     "UPDATE outbox SET state = 'dead', done_at = now(), last_error = $2, payload "
                     "= payload - 'link' WHERE id = $1",
                     2, 1},
    [OUTBOX_PENDING] = {"outbox_pending",
                        "SELECT kind, count(*) FROM outbox WHERE state IN ('pending', 'held') "
                        "GROUP BY kind",
                        0, 1},
};

/* ---- writing ---------------------------------------------------------- */

void outbox_rfc3339(time_t t, char *out, size_t outlen)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void outbox_rows_head(struct outbox_rows *r, const char *id, const char *kind,
                             const char *type, const char *user_id, const char *state)
{
    buf_puts(&r->b, r->n++ == 0 ? "[{\"id\":" : ",{\"id\":");
    json_put_cstr(&r->b, id);
    buf_puts(&r->b, ",\"kind\":");
    json_put_cstr(&r->b, kind);
    buf_puts(&r->b, ",\"type\":");
    json_put_cstr(&r->b, type);
    buf_puts(&r->b, ",\"user_id\":");
    if (user_id != NULL)
        json_put_cstr(&r->b, user_id);
    else
        buf_puts(&r->b, "null");
    buf_puts(&r->b, ",\"state\":");
    json_put_cstr(&r->b, state);
    buf_puts(&r->b, ",\"payload\":");
}

void outbox_rows_message(struct outbox_rows *r, const struct config *c, const char *type,
                         const char *user_id, const char *to, const char *link,
                         const char *expires_at)
{
    uint8_t u[16];
    char id[UUID_STR_LEN + 1];
    uuid_v7(u);
    uuid_format(u, id);
    outbox_rows_head(r, id, "message", type, user_id,
                     strcmp(c->mail_transport, "none") == 0 ? "held" : "pending");
    buf_puts(&r->b, "{\"type\":");
    json_put_cstr(&r->b, type);
    buf_puts(&r->b, ",\"to\":");
    json_put_cstr(&r->b, to);
    buf_puts(&r->b, ",\"link\":");
    json_put_cstr(&r->b, link);
    buf_puts(&r->b, ",\"expires_at\":");
    json_put_cstr(&r->b, expires_at);
    buf_puts(&r->b, "}}");
}

void outbox_rows_event(struct outbox_rows *r, const struct config *c, const char *type,
                       const char *user_id, const char *k, const char *v)
{
    uint8_t u[16];
    char id[UUID_STR_LEN + 1], ts[32];
    if (c->events_url == NULL || c->events_url[0] == '\0')
        return;
    uuid_v7(u);
    uuid_format(u, id);
    outbox_rfc3339(time(NULL), ts, sizeof(ts));
    outbox_rows_head(r, id, "event", type, user_id, "pending");
    buf_puts(&r->b, "{\"type\":");
    json_put_cstr(&r->b, type);
    buf_puts(&r->b, ",\"id\":");
    json_put_cstr(&r->b, id);
    buf_puts(&r->b, ",\"occurred_at\":");
    json_put_cstr(&r->b, ts);
    buf_puts(&r->b, ",\"data\":{\"user_id\":");
    json_put_cstr(&r->b, user_id);
    if (k != NULL) {
        buf_putc(&r->b, ',');
        json_put_cstr(&r->b, k);
        buf_putc(&r->b, ':');
        json_put_cstr(&r->b, v != NULL ? v : "");
    }
    buf_puts(&r->b, "}}}");
}

const char *outbox_rows_param(struct outbox_rows *r)
{
    if (r->n == 0)
        buf_puts(&r->b, "[");
    buf_puts(&r->b, "]");
    r->n = -1000000; /* closed: no more rows */
    return r->b.data;
}

void outbox_rows_free(struct outbox_rows *r)
{
    if (r->b.data != NULL)
        sodium_memzero(r->b.data, r->b.cap);
    buf_free(&r->b);
    r->n = 0;
}

long outbox_backoff_ms(long attempts, uint32_t rnd)
{
    long base = 1000;
    for (long i = 1; i < attempts && base < OUTBOX_BACKOFF_MAX_MS; i++)
        base *= 2;
    if (base > OUTBOX_BACKOFF_MAX_MS)
        base = OUTBOX_BACKOFF_MAX_MS;
    return base / 2 + (long)(rnd % (uint32_t)(base / 2 + 1));
}

/* ---- delivering --------------------------------------------------------- */

enum { OUTBOX_TPL_VERIFY = 0, OUTBOX_TPL_RESET, OUTBOX_TPL__COUNT };

static const char *const outbox_tpl_names[OUTBOX_TPL__COUNT] = {"verify.txt", "reset.txt"};
static const char *const outbox_tpl_builtin[OUTBOX_TPL__COUNT] = {
    "Subject: Confirm your email address\n\nOpen this link to confirm {{email}}:\n\n{{link}}\n\n"
    "It expires in {{expires_minutes}} minutes.\n",
    "Subject: Reset your password\n\nOpen this link to choose a new password for {{email}}:\n\n"
    "{{link}}\n\nIt expires in {{expires_minutes}} minutes. If you did not ask, ignore this.\n",
};

struct outbox {
    struct outbox_options o;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int kicked; /* under mu */
    _Atomic int stopping;
    unsigned char key[256];
    size_t keylen;
    struct buf tpl[OUTBOX_TPL__COUNT];
};

/* One claimed row, copied out of the result. */
struct outbox_item {
    char id[UUID_STR_LEN + 1];
    int event;
    int reset;
    char *payload; /* compact JSON */
    long attempts;
    long minutes;
};

static void outbox_load_templates(struct outbox *ob)
{
    for (int i = 0; i < OUTBOX_TPL__COUNT; i++) {
        char path[256], chunk[4096];
        size_t n;
        snprintf(path, sizeof(path), "%s/%s", OUTBOX_TEMPLATES, outbox_tpl_names[i]);
        FILE *f = fopen(path, "r");
        while (f != NULL && (n = fread(chunk, 1, sizeof(chunk), f)) > 0 && ob->tpl[i].len < 65536)
            buf_append(&ob->tpl[i], chunk, n);
        if (f != NULL)
            fclose(f);
        if (ob->tpl[i].len == 0) {
            log_msg(LOG_WARN, "outbox: no template %s; using the built-in text", path);
            buf_puts(&ob->tpl[i], outbox_tpl_builtin[i]);
        }
    }
}

static const char *outbox_jstr(json_object *o, const char *k)
{
    json_object *v;
    if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int outbox_send_smtp(struct outbox *ob, const struct outbox_item *it, char *err,
                            size_t errlen)
{
    const struct config *c = ob->o.cfg;
    struct buf subject = {0}, body = {0}, msg = {0};
    int rc = -1;
    json_object *j = json_tokener_parse(it->payload);
    const char *to = j ? outbox_jstr(j, "to") : NULL, *link = j ? outbox_jstr(j, "link") : NULL;
    if (to == NULL || link == NULL) {
        snprintf(err, errlen, "message row without to or link");
        goto out;
    }
    struct template_vars v = {.link = link, .email = to, .expires_minutes = it->minutes};
    const struct buf *t = &ob->tpl[it->reset ? OUTBOX_TPL_RESET : OUTBOX_TPL_VERIFY];
    if (template_render(t->data, t->len, &v, &subject, &body, err, errlen) != 0)
        goto out;
    buf_putc(&subject, '\0');
    buf_putc(&body, '\0');
    struct template_message m = {.from = c->mail_from,
                                 .to = to,
                                 .subject = subject.data,
                                 .body = body.data,
                                 .date = time(NULL),
                                 .message_id = it->id};
    if (template_message(&m, &msg, err, errlen) != 0)
        goto out;
    struct mail_smtp s = {.url = c->smtp_url,
                          .user = c->smtp_user,
                          .password = c->smtp_password,
                          .from = c->mail_from};
    rc = mail_send_smtp(&s, to, msg.data, msg.len, err, errlen);
out:
    if (j != NULL)
        json_object_put(j);
    /* The link holds a live token. */
    if (body.data != NULL)
        sodium_memzero(body.data, body.cap);
    if (msg.data != NULL)
        sodium_memzero(msg.data, msg.cap);
    buf_free(&subject);
    buf_free(&body);
    buf_free(&msg);
    return rc;
}

/* Send one row: 0 delivered, -1 failed (err), -2 undeliverable now (err). */
static int outbox_send(struct outbox *ob, const struct outbox_item *it, char *err, size_t errlen)
{
    const struct config *c = ob->o.cfg;
    enum metrics_outbox_transport t = METRICS_OT_WEBHOOK;
    int rc;
    if (it->event) {
        if (c->events_url[0] == '\0') {
            snprintf(err, errlen, "events_url is not set");
            return -2;
        }
        rc = mail_post_webhook(c->events_url, ob->key, ob->keylen, it->id, it->payload,
                               strlen(it->payload), err, errlen);
    } else if (strcmp(c->mail_transport, "smtp") == 0) {
        t = METRICS_OT_SMTP;
        rc = outbox_send_smtp(ob, it, err, errlen);
    } else if (strcmp(c->mail_transport, "webhook") == 0) {
        rc = mail_post_webhook(c->webhook_url, ob->key, ob->keylen, it->id, it->payload,
                               strlen(it->payload), err, errlen);
    } else {
        snprintf(err, errlen, "mail_transport is none");
        return -2;
    }
    metrics_outbox_attempt(ob->o.metrics, ob->o.slot, t, rc == 0);
    return rc;
}

static int outbox_stopping(struct outbox *ob)
{
    return atomic_load(&ob->stopping);
}

/* Claim due rows into items: how many, or -1 when PostgreSQL is away. */
static int outbox_claim(struct outbox *ob, struct outbox_item *items)
{
    char err[256], lease[16], lim[16];
    PGresult *res = NULL;
    int n = -1;
    struct db_conn *c = db_pool_acquire(ob->o.db, clock_deadline_in(2000), err, sizeof(err));
    if (c == NULL)
        return -1;
    snprintf(lease, sizeof(lease), "%d", OUTBOX_LEASE_S);
    snprintf(lim, sizeof(lim), "%d", OUTBOX_CLAIM_MAX);
    const char *p[2] = {lease, lim};
    if (db_exec(c, ob->o.stmt_base + OUTBOX_CLAIM, p, clock_deadline_in(5000), &res, NULL) ==
        DB_OK) {
        n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            struct outbox_item *it = &items[i];
            struct buf b = {0};
            snprintf(it->id, sizeof(it->id), "%s", PQgetvalue(res, i, 0));
            it->event = strcmp(PQgetvalue(res, i, 1), "event") == 0;
            it->reset = strcmp(PQgetvalue(res, i, 2), "message.reset") == 0;
            json_put_compact(&b, PQgetvalue(res, i, 3), (size_t)PQgetlength(res, i, 3));
            buf_putc(&b, '\0');
            it->payload = b.data;
            it->attempts = strtol(PQgetvalue(res, i, 4), NULL, 10);
            it->minutes = strtol(PQgetvalue(res, i, 5), NULL, 10);
        }
    } else {
        log_msg(LOG_WARN, "outbox: claim failed (SQLSTATE %s)", db_sqlstate(res));
    }
    PQclear(res);
    db_pool_release(ob->o.db, c);
    return n;
}

/* Record the outcome of each sent row (rc[i] as outbox_send). */
static void outbox_settle(struct outbox *ob, struct outbox_item *items, const int *rc,
                          char (*errs)[160], int n)
{
    char err[256], delay[24];
    struct db_conn *c = db_pool_acquire(ob->o.db, clock_deadline_in(5000), err, sizeof(err));
    if (c == NULL) {
        /* The leases run out and the rows are sent again (at least once). */
        log_msg(LOG_WARN, "outbox: cannot record %d deliveries: %s", n, err);
        return;
    }
    for (int i = 0; i < n; i++) {
        PGresult *res = NULL;
        enum db_result dr;
        int dead =
            rc[i] != 0 && (rc[i] == -2 || items[i].attempts >= ob->o.cfg->outbox_max_attempts);
        if (rc[i] == 0) {
            const char *p[1] = {items[i].id};
            dr = db_exec(c, ob->o.stmt_base + OUTBOX_DELIVERED, p, clock_deadline_in(5000), &res,
                         NULL);
        } else if (dead) {
            const char *p[2] = {items[i].id, errs[i]};
            dr = db_exec(c, ob->o.stmt_base + OUTBOX_DEAD, p, clock_deadline_in(5000), &res, NULL);
            metrics_outbox_dead(ob->o.metrics, ob->o.slot);
            log_msg(LOG_ERROR, "outbox: %s %s is dead after %ld attempts: %s",
                    items[i].event ? "event" : "message", items[i].id, items[i].attempts, errs[i]);
        } else {
            snprintf(delay, sizeof(delay), "%ld",
                     outbox_backoff_ms(items[i].attempts, randombytes_random()));
            const char *p[3] = {items[i].id, delay, errs[i]};
            dr = db_exec(c, ob->o.stmt_base + OUTBOX_RETRY, p, clock_deadline_in(5000), &res, NULL);
            log_msg(LOG_WARN, "outbox: %s %s attempt %ld failed, retry in %s ms: %s",
                    items[i].event ? "event" : "message", items[i].id, items[i].attempts, delay,
                    errs[i]);
        }
        PQclear(res);
        if (dr == DB_UNAVAILABLE || dr == DB_TIMEOUT)
            break;
    }
    db_pool_release(ob->o.db, c);
}

static void outbox_count_pending(struct outbox *ob)
{
    char err[256];
    PGresult *res = NULL;
    struct db_conn *c = db_pool_acquire(ob->o.db, clock_deadline_in(1000), err, sizeof(err));
    if (c == NULL)
        return;
    if (db_exec(c, ob->o.stmt_base + OUTBOX_PENDING, NULL, clock_deadline_in(5000), &res, NULL) ==
        DB_OK) {
        uint64_t n[METRICS_OK__COUNT] = {0};
        for (int i = 0; i < PQntuples(res); i++)
            n[strcmp(PQgetvalue(res, i, 0), "event") == 0 ? METRICS_OK_EVENT : METRICS_OK_MESSAGE] =
                strtoull(PQgetvalue(res, i, 1), NULL, 10);
        for (int k = 0; k < METRICS_OK__COUNT; k++)
            metrics_set_outbox_pending(ob->o.metrics, ob->o.slot, (enum metrics_outbox_kind)k,
                                       n[k]);
    }
    PQclear(res);
    db_pool_release(ob->o.db, c);
}

/* One round: claim, send, settle. Rows claimed, -1 when PostgreSQL is away. */
static int outbox_round(struct outbox *ob)
{
    struct outbox_item items[OUTBOX_CLAIM_MAX];
    int rc[OUTBOX_CLAIM_MAX];
    char errs[OUTBOX_CLAIM_MAX][160];
    memset(items, 0, sizeof(items));
    int n = outbox_claim(ob, items);
    for (int i = 0; i < n; i++) {
        errs[i][0] = '\0';
        rc[i] = outbox_send(ob, &items[i], errs[i], sizeof(errs[i]));
    }
    if (n > 0)
        outbox_settle(ob, items, rc, errs, n);
    for (int i = 0; i < n; i++) {
        if (items[i].payload != NULL)
            sodium_memzero(items[i].payload, strlen(items[i].payload));
        free(items[i].payload);
    }
    return n;
}

static void *outbox_main(void *arg)
{
    struct outbox *ob = arg;
    long poll = ob->o.poll_ms > 0 ? ob->o.poll_ms : 1000;
    int64_t next_count = 0;
    while (!outbox_stopping(ob)) {
        int n = outbox_round(ob);
        if (clock_now_ms() >= next_count) {
            outbox_count_pending(ob);
            next_count = clock_now_ms() + 5000;
        }
        if (n == OUTBOX_CLAIM_MAX)
            continue; /* more may be due */
        pthread_mutex_lock(&ob->mu);
        if (!ob->kicked && !outbox_stopping(ob)) {
            struct timespec ts = clock_deadline(poll);
            pthread_cond_timedwait(&ob->cv, &ob->mu, &ts);
        }
        ob->kicked = 0;
        pthread_mutex_unlock(&ob->mu);
    }
    return NULL;
}

struct outbox *outbox_start(const struct outbox_options *o, char *err, size_t errlen)
{
    struct outbox *ob = xcalloc(1, sizeof(*ob));
    pthread_condattr_t ca;
    ob->o = *o;
    const struct config *c = o->cfg;
    if ((c->webhook_url[0] != '\0' || c->events_url[0] != '\0') &&
        config_webhook_key(c->webhook_secret, ob->key, sizeof(ob->key), &ob->keylen) != 0) {
        snprintf(err, errlen, "webhook_secret: invalid");
        free(ob);
        return NULL;
    }
    outbox_load_templates(ob);
    pthread_mutex_init(&ob->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ob->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&ob->thread, NULL, outbox_main, ob) != 0) {
        snprintf(err, errlen, "outbox: cannot start its thread");
        pthread_cond_destroy(&ob->cv);
        pthread_mutex_destroy(&ob->mu);
        for (int i = 0; i < OUTBOX_TPL__COUNT; i++)
            buf_free(&ob->tpl[i]);
        sodium_memzero(ob->key, sizeof(ob->key));
        free(ob);
        return NULL;
    }
    return ob;
}

void outbox_kick(struct outbox *ob)
{
    if (ob == NULL)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->kicked = 1;
    pthread_cond_signal(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
}

void outbox_stop(struct outbox *ob)
{
    if (ob == NULL)
        return;
    pthread_mutex_lock(&ob->mu);
    atomic_store(&ob->stopping, 1);
    pthread_cond_signal(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
    pthread_join(ob->thread, NULL);
    pthread_cond_destroy(&ob->cv);
    pthread_mutex_destroy(&ob->mu);
    for (int i = 0; i < OUTBOX_TPL__COUNT; i++)
        buf_free(&ob->tpl[i]);
    sodium_memzero(ob->key, sizeof(ob->key));
    free(ob);
}
