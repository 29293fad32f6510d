/* Unit tests for lib/spool.c: the line format read back field by field
 * (tricky strings included), torn and bad lines skipped and counted, the
 * size bound of an append (an alarm, never a torn line), and the replay:
 * every record handed over once, the leftover replay file first, and a file
 * kept while its consumer does not take it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "spool.h"
#include "spool_fixture.h"

/* ---- helpers ------------------------------------------------------------- */

static void record_equal(const struct audit_record *a, const struct audit_record *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->user_id, b->user_id);
    assert_int_equal(a->type, b->type);
    assert_string_equal(a->created_at, b->created_at);
    assert_string_equal(a->ip, b->ip);
    assert_string_equal(a->user_agent, b->user_agent);
    assert_string_equal(a->detail, b->detail);
}

static struct spool *test_spool(const char *path, long long max_bytes)
{
    char err[256] = "";
    struct spool *s = spool_open(path, max_bytes, err, sizeof(err));
    if (s == NULL)
        fail_msg("spool_open: %s", err);
    return s;
}

/* ---- the spool format ---------------------------------------------------- */

static void test_spool_roundtrip(void **state)
{
    (void)state;
    char path[64];
    struct buf b = {0};
    struct collected c = {0};
    temp_path(path, sizeof(path));
    for (int i = 0; i < 3; i++)
        spool_line(&b, &tricky[i % 2]);
    /* One JSON object per line: the newlines inside are escaped. */
    size_t lines = 0;
    for (size_t i = 0; i < b.len; i++)
        lines += b.data[i] == '\n';
    assert_int_equal(lines, 3);
    assert_non_null(strstr(b.data, "\"user_id\":null"));
    write_file(path, b.data, b.len);

    read_expect(path, &c, 3, 0);
    record_equal(&c.r[0], &tricky[0]);
    record_equal(&c.r[1], &tricky[1]);
    record_equal(&c.r[2], &tricky[0]);
    collected_free(&c);
    buf_free(&b);
    unlink(path);
}

static void test_spool_torn_last_line(void **state)
{
    (void)state;
    char path[64];
    struct buf b = {0};
    struct collected c = {0};
    temp_path(path, sizeof(path));
    spool_line(&b, &tricky[0]);
    spool_line(&b, &tricky[1]);
    size_t two = b.len;

    /* Cut inside the third line. */
    spool_line(&b, &tricky[0]);
    write_file(path, b.data, two + 40);
    read_expect(path, &c, 2, 1);
    record_equal(&c.r[1], &tricky[1]);
    collected_free(&c);

    /* A complete object whose newline never reached the disk is torn too. */
    write_file(path, b.data, b.len - 1);
    read_expect(path, &c, 2, 1);
    collected_free(&c);

    /* With its newline it counts. */
    write_file(path, b.data, b.len);
    read_expect(path, &c, 3, 0);
    collected_free(&c);
    buf_free(&b);
    unlink(path);
}

static void test_spool_bad_middle_lines(void **state)
{
    (void)state;
    char path[64];
    struct buf b = {0};
    struct collected c = {0};
    size_t bad = 0;
    temp_path(path, sizeof(path));
    spool_line(&b, &tricky[0]);
    buf_puts(&b, "{\"id\":\"" ID1 "\",\"type\":\"log\n"); /* torn, then more appended */
    buf_puts(&b, "\n");                                   /* blank: ignored */
    struct audit_record wrong = tricky[1];
    wrong.type = AUDIT__COUNT; /* an unknown type */
    spool_line(&b, &wrong);
    wrong = tricky[1];
    wrong.detail = "[1,2]"; /* not an object */
    spool_line(&b, &wrong);
    wrong = tricky[1];
    memcpy(wrong.created_at, "2024-05-01 12:00:00", 20); /* not our format */
    spool_line(&b, &wrong);
    buf_puts(&b, "{\"id\":\"not-a-uuid\"}\n");
    spool_line(&b, &tricky[1]);
    write_file(path, b.data, b.len);

    read_expect(path, &c, 2, 5);
    record_equal(&c.r[0], &tricky[0]);
    record_equal(&c.r[1], &tricky[1]);
    collected_free(&c);

    /* The callback can stop the read. */
    c.stop_after = 1;
    assert_int_equal(spool_read(path, collect, &c, &bad), -1);
    assert_int_equal(c.n, 1);
    collected_free(&c);

    /* No file: nothing to replay. */
    unlink(path);
    read_expect(path, &c, 0, 0);
    buf_free(&b);
}

/* ---- the spool object ---------------------------------------------------- */

/* The bound takes the leading lines that fit, with one fsync; the rest stay
 * the caller's and the alarm is on until an append works again. */
static void test_append_bound(void **state)
{
    (void)state;
    char path[64];
    struct buf b = {0};
    struct collected c = {0};
    struct spool_stats st;
    temp_path(path, sizeof(path));
    spool_line(&b, &tricky[1]);
    /* Room for two lines of tricky[1] (the bound keeps one byte spare). */
    struct spool *s = test_spool(path, (long long)(2 * b.len + 1));
    const struct audit_record recs[3] = {tricky[1], tricky[1], tricky[1]};

    assert_int_equal(spool_append(s, recs, 3), 2);
    spool_stats(s, &st);
    assert_int_equal(st.spooled_total, 2);
    assert_int_equal(st.fsyncs, 1);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.failing, 1);
    assert_int_equal(file_size(path), (off_t)(2 * b.len));

    assert_int_equal(spool_append(s, recs, 1), 0);
    spool_stats(s, &st);
    assert_int_equal(st.failures, 2);
    assert_int_equal(st.fsyncs, 1); /* nothing written, nothing synced */

    /* Room again: the alarm is off. */
    assert_int_equal(truncate(path, 0), 0);
    assert_int_equal(spool_append(s, recs, 1), 1);
    spool_stats(s, &st);
    assert_int_equal(st.spooled_total, 3);
    assert_int_equal(st.failing, 0);
    assert_string_equal(spool_path(s), path);
    spool_close(s);

    read_expect(path, &c, 1, 0);
    record_equal(&c.r[0], &tricky[1]);
    collected_free(&c);
    buf_free(&b);
    unlink(path);
}

/* A consumer that copies the records and counts the ends of files. */
struct consumer {
    struct collected c;
    int ends;
    int refuse_end; /* returned at the end of a file */
};

static int consume(void *ctx, const struct audit_record *r)
{
    struct consumer *k = ctx;
    if (r == NULL) {
        k->ends++;
        return k->refuse_end;
    }
    return collect(&k->c, r);
}

static void test_replay(void **state)
{
    (void)state;
    char path[64], replay[80], lock[80];
    struct consumer *k = calloc(1, sizeof(*k));
    assert_non_null(k);
    temp_path(path, sizeof(path));
    snprintf(replay, sizeof(replay), "%s.replay", path);
    snprintf(lock, sizeof(lock), "%s.lock", path);
    struct spool *s = test_spool(path, 0);
    const struct audit_record *recs = tricky;

    assert_int_equal(spool_pending(s), 0);
    assert_int_equal(spool_replay(s, consume, k), 0);
    assert_int_equal(k->ends, 0); /* nothing to move aside */

    /* The consumer does not take the end: the file is kept for later. */
    assert_int_equal(spool_append(s, recs, 2), 2);
    assert_int_equal(spool_pending(s), 1);
    k->refuse_end = -1;
    assert_int_equal(spool_replay(s, consume, k), -1);
    assert_int_equal(k->c.n, 2);
    assert_int_equal(k->ends, 1);
    assert_int_equal(file_size(path), 0); /* appends go to a fresh spool */
    assert_int_equal(access(replay, F_OK), 0);
    assert_int_equal(spool_pending(s), 1);
    collected_free(&k->c);

    /* Then: the leftover replay file first, the new spool after it; both
     * removed once taken. */
    assert_int_equal(spool_append(s, recs + 1, 1), 1);
    k->refuse_end = 0;
    k->ends = 0;
    assert_int_equal(spool_replay(s, consume, k), 0);
    assert_int_equal(k->ends, 2);
    assert_int_equal(k->c.n, 3);
    record_equal(&k->c.r[0], &tricky[0]);
    record_equal(&k->c.r[1], &tricky[1]);
    record_equal(&k->c.r[2], &tricky[1]);
    assert_int_not_equal(access(replay, F_OK), 0);
    assert_int_equal(file_size(path), 0);
    assert_int_equal(spool_pending(s), 0);
    collected_free(&k->c);

    spool_close(s);
    free(k);
    unlink(path);
    unlink(lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spool_roundtrip),
        cmocka_unit_test(test_spool_torn_last_line),
        cmocka_unit_test(test_spool_bad_middle_lines),
        cmocka_unit_test(test_append_bound),
        cmocka_unit_test(test_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
