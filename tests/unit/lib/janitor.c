/* Unit tests for lib/janitor.c: the thread stops promptly (however long its
 * interval, and with PostgreSQL unreachable), and, with ACCESS_TEST_PG set
 * to a libpq URI of a migrated database, one round deletes old rows in
 * batches, skips the work while another session holds the advisory lock,
 * and stops between statements when asked. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "db.h"
#include "janitor.h"
#include "metrics.h"

static const struct db_stmt stmts[JANITOR_STMT__COUNT] = {
    [JANITOR_DEAD_TOKENS] = {JANITOR_DEAD_TOKENS_NAME, JANITOR_DEAD_TOKENS_SQL, JANITOR_NPARAMS, 1},
    [JANITOR_DEAD_SESSIONS] = {JANITOR_DEAD_SESSIONS_NAME, JANITOR_DEAD_SESSIONS_SQL, JANITOR_NPARAMS, 1},
    [JANITOR_USED_TOKENS] = {JANITOR_USED_TOKENS_NAME, JANITOR_USED_TOKENS_SQL, JANITOR_NPARAMS, 1},
    [JANITOR_OLD_AUDIT] = {JANITOR_OLD_AUDIT_NAME, JANITOR_OLD_AUDIT_SQL, JANITOR_NPARAMS, 1},
    [JANITOR_OLD_OUTBOX] = {JANITOR_OLD_OUTBOX_NAME, JANITOR_OLD_OUTBOX_SQL, JANITOR_NPARAMS, 1},
    [JANITOR_EXPIRED_TOKENS] = {JANITOR_EXPIRED_TOKENS_NAME, JANITOR_EXPIRED_TOKENS_SQL, JANITOR_NPARAMS, 1},
    [JANITOR_EXPIRED_MFA] = {JANITOR_EXPIRED_MFA_NAME, JANITOR_EXPIRED_MFA_SQL, JANITOR_NPARAMS, 1},
};

static struct db_pool *pool(const char *conninfo)
{
    struct db_pool_options o = {.conninfo = conninfo,
                                .size = 2,
                                .statement_timeout_ms = 5000,
                                .slow_ms = 5000,
                                .prepared = 1,
                                .stmts = stmts,
                                .nstmts = JANITOR_STMT__COUNT};
    return db_pool_create(&o);
}

/* Retentions far beyond anything but the rows these tests make (20 years
 * old), so a shared database keeps everything else. */
static struct janitor_options options(struct db_pool *db, long batch)
{
    return (struct janitor_options){.db = db,
                                    .interval_ms = 3600 * 1000L,
                                    .session_retention_s = 15L * 365 * 86400,
                                    .refresh_ttl_s = 15L * 365 * 86400,
                                    .audit_retention_days = 15 * 365,
                                    .batch = batch};
}

static void test_stop_is_prompt(void **state)
{
    (void)state;
    char err[128];
    struct db_pool *db = pool("host=127.0.0.1 port=1 connect_timeout=1");
    /* A round every 20 ms against a closed port, then an hour's wait. */
    for (long interval = 20; interval <= 3600 * 1000L; interval *= 180000) {
        struct janitor_options o = options(db, 0);
        o.interval_ms = interval;
        struct janitor *j = janitor_start(&o, err, sizeof(err));
        assert_non_null(j);
        usleep(100000);
        struct janitor_counts c;
        janitor_totals(j, &c);
        for (int t = 0; t < METRICS_JT__COUNT; t++)
            assert_int_equal(c.n[t], 0);
        double t0 = clock_ms();
        janitor_stop(j);
        assert_true(clock_ms() - t0 < 2000); /* a bounded wait, not a speed claim */
    }
    janitor_stop(NULL);
    db_pool_destroy(db);
}

/* ---- against a real PostgreSQL (ACCESS_TEST_PG) --------------------------- */

#include "pg_fixture.h"

static int pg_setup(void **state)
{
    (void)state;
    return pg_fixture_setup("janitor");
}

static void sql(const char *q)
{
    const char *p[] = {marker};
    PGresult *r = PQexecParams(pg, q, 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQerrorMessage(pg));
    PQclear(r);
}

static long count_old(void)
{
    const char *p[] = {marker};
    PGresult *r = PQexecParams(pg, "SELECT count(*) FROM audit_events WHERE detail->>'m' = $1", 1,
                               NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    long n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return n;
}

static void insert_old(int n)
{
    char q[400];
    snprintf(q, sizeof(q),
             "INSERT INTO audit_events (id, type, created_at, detail) SELECT gen_random_uuid(), "
             "'login_failed', now() - interval '20 years', jsonb_build_object('m', $1::text) "
             "FROM generate_series(1, %d)",
             n);
    sql(q);
}

static void test_round_deletes_in_batches(void **state)
{
    (void)state;
    struct db_pool *db = pool(getenv("ACCESS_TEST_PG"));
    struct janitor_options o = options(db, 3);
    struct janitor_counts c = {{0}};
    insert_old(7);
    assert_int_equal(count_old(), 7);
    /* Batches of 3: 3, 3, 1. */
    assert_int_equal(janitor_round(&o, NULL, &c), JANITOR_DONE);
    assert_int_equal(c.n[METRICS_JT_AUDIT_EVENTS], 7);
    assert_int_equal(count_old(), 0);
    db_pool_destroy(db);
}

static void test_round_busy_while_locked(void **state)
{
    (void)state;
    struct db_pool *db = pool(getenv("ACCESS_TEST_PG"));
    struct janitor_options o = options(db, 0);
    struct janitor_counts c = {{0}};
    insert_old(2);
    PQclear(PQexec(pg, "SELECT pg_advisory_lock(" JANITOR_LOCK_KEY ")"));
    assert_int_equal(janitor_round(&o, NULL, &c), JANITOR_BUSY);
    assert_int_equal(count_old(), 2);
    assert_int_equal(c.n[METRICS_JT_AUDIT_EVENTS], 0);
    PQclear(PQexec(pg, "SELECT pg_advisory_unlock(" JANITOR_LOCK_KEY ")"));
    /* The round gave the lock back: a second one works. */
    assert_int_equal(janitor_round(&o, NULL, &c), JANITOR_DONE);
    assert_int_equal(janitor_round(&o, NULL, &c), JANITOR_DONE);
    assert_int_equal(c.n[METRICS_JT_AUDIT_EVENTS], 2);
    assert_int_equal(count_old(), 0);
    db_pool_destroy(db);
}

static void test_round_stops_between_statements(void **state)
{
    (void)state;
    struct db_pool *db = pool(getenv("ACCESS_TEST_PG"));
    struct janitor_options o = options(db, 1);
    struct janitor_counts c = {{0}};
    _Atomic int stop = 1;
    insert_old(3);
    assert_int_equal(janitor_round(&o, &stop, &c), JANITOR_DONE);
    assert_int_equal(c.n[METRICS_JT_AUDIT_EVENTS], 0);
    assert_int_equal(count_old(), 3);
    atomic_store(&stop, 0);
    assert_int_equal(janitor_round(&o, &stop, &c), JANITOR_DONE);
    assert_int_equal(c.n[METRICS_JT_AUDIT_EVENTS], 3);
    db_pool_destroy(db);
}

/* SPEC §13: outbox rows delivered or dead over 7 days ago and expired
 * verification/reset tokens go; pending rows and live tokens stay. */
static void test_round_outbox_and_tokens(void **state)
{
    (void)state;
    struct db_pool *db = pool(getenv("ACCESS_TEST_PG"));
    struct janitor_options o = options(db, 2);
    struct janitor_counts c = {{0}};
    sql("INSERT INTO users (id, email, password_hash) VALUES (gen_random_uuid(), $1 || "
        "'@janitor.test', 'x')");
    sql("INSERT INTO outbox (id, kind, type, payload, state, done_at) SELECT gen_random_uuid(), "
        "'event', $1, '{}', s, now() - interval '8 days' FROM unnest(ARRAY['delivered', "
        "'dead', 'delivered', 'pending']) s");
    sql("INSERT INTO outbox (id, kind, type, payload, state, done_at) SELECT gen_random_uuid(), "
        "'event', $1, '{}', 'delivered', now() - interval '6 days'");
    sql("INSERT INTO account_tokens (token_hash, user_id, purpose, expires_at) SELECT "
        "decode(md5($1 || g), 'hex'), (SELECT id FROM users WHERE email = $1 || "
        "'@janitor.test'), 'reset', now() + CASE WHEN g < 4 THEN interval '-1 minute' ELSE "
        "interval '1 hour' END FROM generate_series(1, 5) g");
    /* mfa_tokens (SPEC §10): 2 expired, 1 live. */
    sql("INSERT INTO mfa_tokens (token_hash, user_id, expires_at) SELECT "
        "decode(md5($1 || 'mfa' || g), 'hex'), (SELECT id FROM users WHERE email = $1 || "
        "'@janitor.test'), now() + CASE WHEN g < 3 THEN interval '-1 minute' ELSE "
        "interval '5 minutes' END FROM generate_series(1, 3) g");
    assert_int_equal(janitor_round(&o, NULL, &c), JANITOR_DONE);
    assert_true(c.n[METRICS_JT_OUTBOX] >= 3);
    assert_true(c.n[METRICS_JT_ACCOUNT_TOKENS] >= 3);
    assert_true(c.n[METRICS_JT_MFA_TOKENS] >= 2);
    const char *p[] = {marker};
    PGresult *r = PQexecParams(pg,
                               "SELECT (SELECT count(*) FROM outbox WHERE type = $1), (SELECT "
                               "count(*) FROM account_tokens t JOIN users u ON u.id = t.user_id "
                               "WHERE u.email = $1 || '@janitor.test'), (SELECT count(*) FROM "
                               "mfa_tokens t JOIN users u ON u.id = t.user_id WHERE u.email = $1 "
                               "|| '@janitor.test')",
                               1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "2"); /* pending + the 6-day-old one */
    assert_string_equal(PQgetvalue(r, 0, 1), "2"); /* the live tokens */
    assert_string_equal(PQgetvalue(r, 0, 2), "1"); /* the live mfa_token */
    PQclear(r);
    sql("DELETE FROM outbox WHERE type = $1");
    sql("DELETE FROM users WHERE email = $1 || '@janitor.test'");
    db_pool_destroy(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_is_prompt),
    };
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test(test_round_deletes_in_batches),
        cmocka_unit_test(test_round_busy_while_locked),
        cmocka_unit_test(test_round_stops_between_statements),
        cmocka_unit_test(test_round_outbox_and_tokens),
    };
    const char *pg_uri = getenv("ACCESS_TEST_PG");
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (pg_uri != NULL && pg_uri[0] != '\0')
        failed += cmocka_run_group_tests_name("janitor_pg", pg_tests, pg_setup, pg_teardown);
    return failed;
}
