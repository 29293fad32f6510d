/* Unit tests for lib/audit.c: type names, PostgreSQL array literals, and
 * the audit object with PostgreSQL unreachable (closed port) or stuck (a
 * listener that never answers, so the one-slot queue fills): every event
 * ends in the spool exactly once. The spool itself: tests/unit/lib/spool.c.
 *
 * With ACCESS_TEST_PG set to a libpq URI of a migrated database, a second
 * group inserts through PostgreSQL and replays a spool (twice, without
 * duplicates); it cleans up its rows. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "buf.h"
#include "db.h"
#include "spool.h"
#include "spool_fixture.h"

/* ---- pure helpers -------------------------------------------------------- */

static void test_type_names(void **state)
{
    (void)state;
    enum audit_type t;
    for (int i = 0; i < AUDIT__COUNT; i++) {
        const char *name = audit_type_name((enum audit_type)i);
        assert_non_null(name);
        assert_int_equal(audit_type_parse(name, strlen(name), &t), 0);
        assert_int_equal(t, i);
    }
    assert_string_equal(audit_type_name(AUDIT_REFRESH_REUSE_DETECTED), "refresh_reuse_detected");
    assert_null(audit_type_name(AUDIT__COUNT));
    assert_int_equal(audit_type_parse("login", 5, &t), -1);
    assert_int_equal(audit_type_parse("logout_", 7, &t), -1);
    assert_int_equal(audit_type_parse("logout_", 6, &t), 0);
    assert_int_equal(t, AUDIT_LOGOUT);
}

static void test_pg_array(void **state)
{
    (void)state;
    struct buf b = {0};
    const char *elems[] = {"plain", "a\"b", "back\\slash", "",          NULL,
                           "{,}",   "NULL", "\\\"",        "new\nline", "\xc3\xbc"};
    audit_pg_array(&b, elems, sizeof(elems) / sizeof(elems[0]));
    assert_string_equal(b.data, "{\"plain\",\"a\\\"b\",\"back\\\\slash\",\"\",NULL,\"{,}\","
                                "\"NULL\",\"\\\\\\\"\",\"new\nline\",\"\xc3\xbc\"}");
    buf_reset(&b);
    audit_pg_array(&b, elems, 0);
    assert_string_equal(b.data, "{}");
    buf_reset(&b);
    const char *one_null[] = {NULL};
    audit_pg_array(&b, one_null, 1);
    assert_string_equal(b.data, "{NULL}");
    buf_free(&b);
}

/* ---- the audit object without PostgreSQL ---------------------------------- */

#define THREADS    4
#define PER_THREAD 25

static const struct db_stmt test_stmts[] = {
    {AUDIT_INSERT_NAME, AUDIT_INSERT_SQL, AUDIT_INSERT_NPARAMS, 1},
};

static struct db_pool *test_pool(const char *conninfo)
{
    struct db_pool_options o = {.conninfo = conninfo,
                                .size = 2,
                                .statement_timeout_ms = 5000,
                                .slow_ms = 1000,
                                .prepared = 1,
                                .stmts = test_stmts,
                                .nstmts = 1};
    return db_pool_create(&o);
}

static struct audit *test_audit_opts(struct audit_options *o)
{
    char err[256] = "";
    struct audit *a = audit_create(o, err, sizeof(err));
    if (a == NULL)
        fail_msg("audit_create: %s", err);
    return a;
}

static struct audit *test_audit(struct db_pool *db, const char *spool, size_t queue_max)
{
    char err[256] = "";
    struct audit_options o = {
        .db = db, .insert_stmt = 0, .spool_path = spool, .queue_max = queue_max, .retry_ms = 200};
    struct audit *a = audit_create(&o, err, sizeof(err));
    if (a == NULL)
        fail_msg("audit_create: %s", err);
    return a;
}

struct emitter {
    struct audit *a;
    int thread;
    int spooled, lost;
};

static void *emit_many(void *arg)
{
    struct emitter *e = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char detail[64];
        snprintf(detail, sizeof(detail), "{\"t\":%d,\"i\":%d}", e->thread, i);
        struct audit_event ev = {.type = AUDIT_REFRESH, .user_id = UID, .detail = detail};
        enum audit_result r = audit_emit(e->a, &ev);
        e->spooled += r == AUDIT_SPOOLED;
        e->lost += r == AUDIT_LOST;
    }
    return NULL;
}

/* The (t, i) of a detail {"t":T,"i":I} made by the emitters. */
static void detail_ti(const char *detail, int *t, int *i)
{
    char *end;
    assert_int_equal(strncmp(detail, "{\"t\":", 5), 0);
    *t = (int)strtol(detail + 5, &end, 10);
    assert_int_equal(strncmp(end, ",\"i\":", 5), 0);
    *i = (int)strtol(end + 5, &end, 10);
    assert_string_equal(end, "}");
}

/* Every (thread, i) detail exactly once in the spool. */
static void assert_each_once(const struct collected *c)
{
    int seen[THREADS][PER_THREAD] = {{0}};
    assert_int_equal(c->n, THREADS * PER_THREAD);
    for (size_t k = 0; k < c->n; k++) {
        int t = -1, i = -1;
        detail_ti(c->r[k].detail, &t, &i);
        assert_true(t >= 0 && t < THREADS && i >= 0 && i < PER_THREAD);
        seen[t][i]++;
        for (size_t j = 0; j < k; j++)
            assert_string_not_equal(c->r[j].id, c->r[k].id);
    }
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++)
            assert_int_equal(seen[t][i], 1);
}

static void test_pg_down_everything_spooled(void **state)
{
    (void)state;
    char path[64], now[32];
    struct collected c = {0};
    struct emitter e[THREADS];
    pthread_t tid[THREADS];
    struct audit_stats st;
    temp_path(path, sizeof(path));
    /* A line torn by an earlier crash must not swallow the next append. */
    write_file(path, "{\"id\":\"to", 9);
    struct db_pool *db = test_pool("host=127.0.0.1 port=1 connect_timeout=1");
    struct audit *a = test_audit(db, path, 8);

    /* Normalisation on the way in. */
    struct buf ua = {0};
    buf_putc(&ua, 'a');
    for (int i = 0; i < 300; i++)
        buf_puts(&ua, "\xc3\xa9"); /* 601 bytes: cut to 511, not inside a character */
    time_t t0 = time(NULL);
    struct audit_event ev = {.type = AUDIT_LOGIN_FAILED,
                             .user_id = "not-a-uuid",
                             .ip = "10.0.0.1",
                             .user_agent = ua.data,
                             .detail = "{\"x\":\"\\u0000\"}"};
    assert_int_not_equal(audit_emit(a, &ev), AUDIT_LOST);
    struct audit_event ev2 = {.type = AUDIT_LOGOUT,
                              .user_id = "11111111-2222-4333-8444-55555555555A",
                              .user_agent = "bad \xff byte",
                              .detail = "{\"ok\":\"\xe2\x82\xac\"}"};
    assert_int_not_equal(audit_emit(a, &ev2), AUDIT_LOST);
    /* jsonb takes a surrogate pair but refuses a lone surrogate. */
    struct audit_event pair = {.type = AUDIT_SIGNUP, .detail = "{\"e\":\"\\ud83d\\ude00\"}"};
    struct audit_event lone = {.type = AUDIT_SIGNUP, .detail = "{\"e\":\"\\ud83d\\u0041\"}"};
    assert_int_not_equal(audit_emit(a, &pair), AUDIT_LOST);
    assert_int_not_equal(audit_emit(a, &lone), AUDIT_LOST);
    struct audit_event ev3 = {.type = AUDIT__COUNT};
    assert_int_equal(audit_emit(a, &ev3), AUDIT_LOST);
    assert_int_equal(audit_flush(a, 5000), 0);
    read_expect(path, &c, 4, 1);
    assert_string_equal(c.r[2].detail, "{\"e\":\"\\ud83d\\ude00\"}");
    assert_string_equal(c.r[3].detail, "{}");
    const struct audit_record *r = &c.r[0];
    assert_int_equal(r->type, AUDIT_LOGIN_FAILED);
    assert_string_equal(r->user_id, ""); /* malformed: left out */
    assert_string_equal(r->ip, "10.0.0.1");
    assert_int_equal(strlen(r->user_agent), 511);
    assert_memory_equal(r->user_agent, ua.data, 511);
    assert_string_equal(r->detail, "{}"); /* jsonb would refuse \u0000 */
    assert_int_equal(strlen(r->id), UUID_STR_LEN);
    assert_int_equal(r->id[14], '7'); /* version 7 */
    struct tm tm;
    gmtime_r(&t0, &tm);
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M", &tm);
    assert_memory_equal(r->created_at, now, 16); /* may fail only at a minute's turn */
    r = &c.r[1];
    assert_int_equal(r->type, AUDIT_LOGOUT);
    assert_string_equal(r->user_id, "11111111-2222-4333-8444-55555555555a");
    assert_string_equal(r->user_agent, "bad \xef\xbf\xbd byte");
    assert_string_equal(r->detail, "{\"ok\":\"\xe2\x82\xac\"}");
    assert_true(strcmp(c.r[0].id, c.r[1].id) < 0); /* v7 ids grow */
    collected_free(&c);
    buf_free(&ua);
    assert_int_equal(truncate(path, 0), 0);
    audit_stats(a, &st);
    assert_int_equal(st.spooled_total, 4);

    /* Concurrent emitters: each event in the spool exactly once. */
    for (int i = 0; i < THREADS; i++) {
        e[i] = (struct emitter){.a = a, .thread = i};
        assert_int_equal(pthread_create(&tid[i], NULL, emit_many, &e[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(e[i].lost, 0);
    }
    assert_int_equal(audit_flush(a, 5000), 0);
    audit_stats(a, &st);
    assert_int_equal(st.queue_depth, 0);
    assert_int_equal(st.spooled_total, 4 + THREADS * PER_THREAD);
    assert_int_equal(st.dropped_total, 0);
    /* Request threads never fsync: the writer spooled whole batches. */
    assert_true(st.spool_fsyncs < st.spooled_total);
    audit_destroy(a);
    db_pool_destroy(db);

    read_expect(path, &c, THREADS * PER_THREAD, 0);
    assert_each_once(&c);
    collected_free(&c);
    unlink(path);
}

/* A server that takes connections and never says a word: the writer sits in
 * libpq's connect for its timeout while the one-slot queue fills. */
static int silent_listener(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Each (0, i) detail of the spool at path, counted into seen[0..n). */
static void spool_seen(const char *path, int *seen, int n)
{
    struct collected c = {0};
    size_t bad = 0;
    assert_int_equal(spool_read(path, collect, &c, &bad), 0);
    assert_int_equal(bad, 0);
    for (size_t k = 0; k < c.n; k++) {
        int t = -1, i = -1;
        detail_ti(c.r[k].detail, &t, &i);
        assert_true(t == 0 && i >= 0 && i < n);
        seen[i]++;
    }
    collected_free(&c);
}

static enum audit_result emit_i(struct audit *a, int i)
{
    char detail[64];
    snprintf(detail, sizeof(detail), "{\"t\":0,\"i\":%d}", i);
    struct audit_event ev = {.type = AUDIT_SIGNUP, .user_id = UID, .detail = detail};
    return audit_emit(a, &ev);
}

/* Request threads never fsync: while the writer sits in a connect that
 * never completes, 100 events are queued and nothing is written; then the
 * writer spools them in batches, one fsync per batch (at most two: the
 * batch it took before the connect, and the rest). */
static void test_batches_one_fsync_each(void **state)
{
    (void)state;
    char path[64], conninfo[96];
    struct audit_stats st;
    int port, seen[100] = {0};
    int lfd = silent_listener(&port);
    temp_path(path, sizeof(path));
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d sslmode=disable gssencmode=disable", port);
    struct db_pool *db = test_pool(conninfo);
    struct audit *a = test_audit(db, path, 256);

    for (int i = 0; i < 100; i++)
        assert_int_equal(emit_i(a, i), AUDIT_QUEUED);
    audit_stats(a, &st);
    assert_int_equal(st.spool_fsyncs, 0);
    assert_int_equal(st.spooled_total, 0);
    assert_int_equal(st.queue_depth, 100);

    assert_int_equal(audit_flush(a, 10000), 0);
    audit_stats(a, &st);
    assert_int_equal(st.spooled_total, 100);
    assert_true(st.spool_fsyncs >= 1 && st.spool_fsyncs <= 2);
    assert_int_equal(st.queue_depth, 0);
    audit_destroy(a);
    db_pool_destroy(db);
    close(lfd);
    spool_seen(path, seen, 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(seen[i], 1);
    unlink(path);
}

/* A full spool is an alarm, never a loss: the events wait in memory, and
 * once there is room again (the spool emptied) they are written. */
static void test_spool_full_keeps_events(void **state)
{
    (void)state;
    char path[64];
    struct audit_stats st;
    int seen[40] = {0};
    temp_path(path, sizeof(path));
    struct db_pool *db = test_pool("host=127.0.0.1 port=1 connect_timeout=1");
    struct audit_options o = {.db = db,
                              .spool_path = path,
                              .queue_max = 64,
                              .retry_ms = 100,
                              .spool_max_bytes = 6000};
    struct audit *a = test_audit_opts(&o);

    for (int i = 0; i < 10; i++)
        assert_int_equal(emit_i(a, i), AUDIT_QUEUED);
    assert_int_equal(audit_flush(a, 5000), 0);
    audit_stats(a, &st);
    assert_int_equal(st.spooled_total, 10);
    assert_int_equal(st.spool_failing, 0);
    spool_seen(path, seen, 40); /* the first ten, before the room is made */

    /* 30 more lines of about 170 bytes do not fit beside the ten in 6000
     * bytes (alone they do). */
    for (int i = 10; i < 40; i++)
        assert_int_equal(emit_i(a, i), AUDIT_QUEUED);
    for (int i = 0; i < 100; i++) {
        audit_stats(a, &st);
        if (st.spool_failing)
            break;
        usleep(20000);
    }
    assert_int_equal(st.spool_failing, 1);
    assert_true(st.spool_failures >= 1);
    assert_int_equal(st.dropped_total, 0);
    assert_int_equal(st.spooled_total + st.queue_depth, 40); /* nothing lost */
    assert_true(st.queue_depth > 0);
    uint64_t spooled_while_full = st.spooled_total;

    /* Room again (as after a replay): the writer's retry writes them. */
    assert_int_equal(truncate(path, 0), 0);
    for (int i = 0; i < 100; i++) {
        audit_stats(a, &st);
        if (!st.spool_failing && st.queue_depth == 0)
            break;
        usleep(20000);
    }
    assert_int_equal(st.spool_failing, 0);
    assert_int_equal(st.queue_depth, 0);
    assert_int_equal(st.spooled_total, 40);
    assert_int_equal(st.dropped_total, 0);
    audit_destroy(a);
    db_pool_destroy(db);
    /* What was spooled before the room was made is gone with the truncate
     * (it stood for a replay); the rest is there, each event once. */
    int after[40] = {0}, total = 0;
    spool_seen(path, after, 40);
    for (int i = 0; i < 40; i++) {
        assert_true(after[i] <= 1);
        assert_false(after[i] && seen[i]);
        total += after[i];
    }
    assert_int_equal(total, 40 - (int)spooled_while_full);
    unlink(path);
}

/* Spool refusing everything and the queue full: audit_emit() waits
 * emit_wait_ms, then the event is dropped, counted, never silently. */
static void test_queue_full_counted_drop(void **state)
{
    (void)state;
    char path[64];
    struct audit_stats st;
    temp_path(path, sizeof(path));
    struct db_pool *db = test_pool("host=127.0.0.1 port=1 connect_timeout=1");
    struct audit_options o = {.db = db,
                              .spool_path = path,
                              .queue_max = 2,
                              .retry_ms = 100,
                              .spool_max_bytes = 100,
                              .emit_wait_ms = 50};
    struct audit *a = test_audit_opts(&o);
    assert_int_equal(emit_i(a, 0), AUDIT_QUEUED);
    for (int i = 0; i < 100; i++) {
        audit_stats(a, &st);
        if (st.spool_failing)
            break;
        usleep(20000);
    }
    assert_int_equal(st.spool_failing, 1);
    assert_int_equal(emit_i(a, 1), AUDIT_QUEUED);
    assert_int_equal(emit_i(a, 2), AUDIT_QUEUED);
    assert_int_equal(emit_i(a, 3), AUDIT_LOST);
    audit_stats(a, &st);
    assert_int_equal(st.dropped_total, 1);
    assert_int_equal(st.queue_depth, 3);
    assert_int_equal(st.spooled_total, 0);
    /* The flush cannot spool them either: it says so. */
    assert_int_equal(audit_flush(a, 200), -1);
    audit_destroy(a);
    db_pool_destroy(db);
    unlink(path);
}

/* ---- against a real PostgreSQL (ACCESS_TEST_PG) --------------------------- */

#include "pg_fixture.h"

static int pg_setup(void **state)
{
    (void)state;
    return pg_fixture_setup("audit");
}

/* Rows of the marker, oldest first, in the spool's text forms. */
static PGresult *pg_rows(void)
{
    const char *p[] = {marker};
    PGresult *res = PQexecParams(
        pg,
        "SELECT id, coalesce(user_id::text, ''), type, to_char(created_at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ip, user_agent, detail->>'n' "
        "FROM audit_events WHERE detail->>'m' = $1 ORDER BY created_at, id",
        1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    return res;
}

/* A created_at `minutes` ago with these microseconds: the rows a PG test
 * writes must be younger than audit_retention_days, or the stack's janitor,
 * running beside the unit tests, deletes them mid-test. */
static void recent_ts(char out[AUDIT_TS_LEN + 1], int minutes, long usec)
{
    time_t t = time(NULL) - (time_t)minutes * 60;
    struct tm tm;
    char ts[64];
    gmtime_r(&t, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%06ldZ", usec % 1000000);
    assert_int_equal(strlen(ts), AUDIT_TS_LEN);
    memcpy(out, ts, AUDIT_TS_LEN + 1);
}

static void test_pg_insert_and_replay(void **state)
{
    (void)state;
    char path[64], detail[3][160];
    struct buf b = {0};
    temp_path(path, sizeof(path));
    struct db_pool *db = test_pool(getenv("ACCESS_TEST_PG"));

    /* Spooled events from an earlier outage (one torn line at the end) are
     * replayed with their own ids and times. */
    struct audit_record old[2] = {tricky[0], tricky[1]};
    recent_ts(old[0].created_at, 60, 123456);
    recent_ts(old[1].created_at, 120, 999999);
    for (int i = 0; i < 2; i++) {
        snprintf(detail[i], sizeof(detail[i]), "{\"m\":\"%s\",\"n\":\"old%d \\\"\\\\\"}", marker,
                 i);
        old[i].detail = detail[i];
        old[i].user_id[0] = '\0'; /* no such user needed: user_id has no foreign key */
        spool_line(&b, &old[i]);
    }
    buf_puts(&b, "{\"id\":\"torn");
    write_file(path, b.data, b.len);

    struct audit *a = test_audit(db, path, 16);
    snprintf(detail[2], sizeof(detail[2]), "{\"m\":\"%s\",\"n\":\"new \\u00e9\"}", marker);
    struct audit_event ev = {.type = AUDIT_PASSWORD_CHANGED,
                             .user_id = UID,
                             .ip = "192.0.2.1",
                             .user_agent = tricky[0].user_agent,
                             .detail = detail[2]};
    assert_int_equal(audit_emit(a, &ev), AUDIT_QUEUED);
    assert_int_equal(audit_flush(a, 5000), 0);
    off_t size = 1;
    for (int i = 0; i < 50 && size != 0; i++) {
        usleep(100000);
        size = file_size(path);
    }
    assert_int_equal(size, 0); /* replayed, then emptied */
    audit_destroy(a);

    PGresult *res = pg_rows();
    assert_int_equal(PQntuples(res), 3);
    for (int i = 0; i < 2; i++) { /* old[1] is the older */
        int row = i == 0 ? 0 : 1;
        const struct audit_record *o = &old[i == 0 ? 1 : 0];
        assert_string_equal(PQgetvalue(res, row, 0), o->id);
        assert_string_equal(PQgetvalue(res, row, 1), "");
        assert_string_equal(PQgetvalue(res, row, 2), audit_type_name(o->type));
        assert_string_equal(PQgetvalue(res, row, 3), o->created_at);
        assert_string_equal(PQgetvalue(res, row, 4), o->ip);
        assert_string_equal(PQgetvalue(res, row, 5), o->user_agent);
    }
    assert_string_equal(PQgetvalue(res, 0, 6), "old1 \"\\");
    assert_string_equal(PQgetvalue(res, 2, 1), UID);
    assert_string_equal(PQgetvalue(res, 2, 2), "password_changed");
    assert_string_equal(PQgetvalue(res, 2, 4), "192.0.2.1");
    assert_string_equal(PQgetvalue(res, 2, 5), tricky[0].user_agent);
    assert_string_equal(PQgetvalue(res, 2, 6), "new \xc3\xa9");
    PQclear(res);

    /* A second replay of the same lines (a crash before the truncate) adds
     * nothing: the ids are the idempotency key. */
    b.len -= strlen("{\"id\":\"torn");
    write_file(path, b.data, b.len);
    a = test_audit(db, path, 16);
    size = 1;
    for (int i = 0; i < 50 && size != 0; i++) {
        usleep(100000);
        size = file_size(path);
    }
    assert_int_equal(size, 0);
    audit_destroy(a);
    res = pg_rows();
    assert_int_equal(PQntuples(res), 3);
    PQclear(res);

    db_pool_destroy(db);
    buf_free(&b);
    unlink(path);
}

/* The insert made slow (half a second a batch), to catch a replay holding
 * the spool lock across its inserts. */
static const struct db_stmt slow_stmts[] = {
    {AUDIT_INSERT_NAME,
     "INSERT INTO audit_events (id, user_id, type, created_at, ip, user_agent, detail) "
     "SELECT u.* FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], "
     "$6::text[], $7::jsonb[]) AS u, pg_sleep(0.5) ON CONFLICT (id) DO NOTHING",
     AUDIT_INSERT_NPARAMS, 1},
};

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* While one audit object replays a spool of six events in three slow
 * batches, another on the same spool (a second worker, PostgreSQL away for
 * it) appends and fsyncs at once; its event is replayed in a later round.
 * Every event lands in the table once. */
static void test_pg_replay_does_not_block_appends(void **state)
{
    (void)state;
    char path[64], replay[80], detail[7][160];
    struct buf b = {0};
    struct audit_stats st;
    temp_path(path, sizeof(path));
    snprintf(replay, sizeof(replay), "%s.replay", path);
    struct db_pool_options po = {.conninfo = getenv("ACCESS_TEST_PG"),
                                 .size = 2,
                                 .statement_timeout_ms = 10000,
                                 .slow_ms = 10000,
                                 .prepared = 1,
                                 .stmts = slow_stmts,
                                 .nstmts = 1};
    struct db_pool *slow = db_pool_create(&po);
    struct db_pool *down = test_pool("host=127.0.0.1 port=1 connect_timeout=1");
    for (int i = 0; i < 6; i++) {
        struct audit_record r = tricky[1];
        uint8_t raw[16];
        uuid_v7(raw);
        uuid_format(raw, r.id);
        recent_ts(r.created_at, 60, 0);
        snprintf(detail[i], sizeof(detail[i]), "{\"m\":\"%s\",\"n\":\"r%d\"}", marker, i);
        r.detail = detail[i];
        spool_line(&b, &r);
    }
    write_file(path, b.data, b.len);

    struct audit_options o = {
        .db = slow, .spool_path = path, .queue_max = 16, .batch_max = 2, .retry_ms = 100};
    const char *mp[] = {marker};
    PQclear(PQexecParams(pg, "DELETE FROM audit_events WHERE detail->>'m' = $1", 1, NULL, mp, NULL,
                         NULL, 0));
    struct audit *replayer = test_audit_opts(&o);
    for (int i = 0; i < 100 && !exists(replay); i++)
        usleep(10000);
    assert_true(exists(replay)); /* moved aside: the replay runs */

    struct audit *other = test_audit(down, path, 16);
    snprintf(detail[6], sizeof(detail[6]), "{\"m\":\"%s\",\"n\":\"late\"}", marker);
    struct audit_event ev = {.type = AUDIT_LOGOUT, .user_id = UID, .detail = detail[6]};
    assert_int_equal(audit_emit(other, &ev), AUDIT_QUEUED);
    assert_int_equal(audit_flush(other, 5000), 0);
    audit_stats(other, &st);
    assert_int_equal(st.spooled_total, 1);
    /* The append is done while the replay still inserts (1.5 s in all). */
    assert_true(exists(replay));
    audit_destroy(other);

    /* Both the replay file and the late event reach the table (a generous
     * deadline: TSan on a shared two-core box is slow). */
    PGresult *res = NULL;
    for (int i = 0; i < 300; i++) {
        PQclear(res);
        res = pg_rows();
        if (PQntuples(res) == 7 && !exists(replay))
            break;
        usleep(100000);
    }
    assert_int_equal(PQntuples(res), 7);
    int late = 0;
    for (int i = 0; i < 7; i++)
        late += strcmp(PQgetvalue(res, i, 6), "late") == 0;
    assert_int_equal(late, 1);
    PQclear(res);
    assert_false(exists(replay));
    audit_destroy(replayer);
    db_pool_destroy(slow);
    db_pool_destroy(down);
    buf_free(&b);
    unlink(path);
    char lock[80];
    snprintf(lock, sizeof(lock), "%s.lock", path);
    unlink(lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_pg_array),
        cmocka_unit_test(test_pg_down_everything_spooled),
        cmocka_unit_test(test_batches_one_fsync_each),
        cmocka_unit_test(test_spool_full_keeps_events),
        cmocka_unit_test(test_queue_full_counted_drop),
    };
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test(test_pg_insert_and_replay),
        cmocka_unit_test(test_pg_replay_does_not_block_appends),
    };
    const char *pg_uri = getenv("ACCESS_TEST_PG");
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* Only with a database to talk to; otherwise the group does not exist. */
    if (pg_uri != NULL && pg_uri[0] != '\0')
        failed += cmocka_run_group_tests_name("audit_pg", pg_tests, pg_setup, pg_teardown);
    return failed;
}
