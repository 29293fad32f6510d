/* Helpers shared by the unit tests of lib/spool.c and lib/audit.c: records
 * with the characters that break naive encoders, a collector for
 * spool_read() and spool_replay() that copies what it is handed, and temp
 * files. Include once, in the test file. */
#ifndef ACCESS_TEST_SPOOL_FIXTURE_H
#define ACCESS_TEST_SPOOL_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "spool.h"

#define ID1 "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
#define ID2 "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"
#define UID "11111111-2222-4333-8444-555555555555"

struct collected {
    size_t n;
    struct audit_record r[512];
    char *mem[512]; /* the strings of r[i], owned */
    int stop_after; /* 0 = never */
};

static int collect(void *ctx, const struct audit_record *r)
{
    struct collected *c = ctx;
    if (c->n == sizeof(c->r) / sizeof(c->r[0]))
        return -1;
    size_t ip = strlen(r->ip) + 1, ua = strlen(r->user_agent) + 1, d = strlen(r->detail) + 1;
    char *m = malloc(ip + ua + d);
    assert_non_null(m);
    memcpy(m, r->ip, ip);
    memcpy(m + ip, r->user_agent, ua);
    memcpy(m + ip + ua, r->detail, d);
    c->r[c->n] = *r;
    c->r[c->n].ip = m;
    c->r[c->n].user_agent = m + ip;
    c->r[c->n].detail = m + ip + ua;
    c->mem[c->n++] = m;
    return c->stop_after != 0 && c->n == (size_t)c->stop_after;
}

static void collected_free(struct collected *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->mem[i]);
    c->n = 0;
}

/* Read the spool at path into c (appended) and check how many records and
 * bad lines came back. */
static void read_expect(const char *path, struct collected *c, size_t n, size_t bad_lines)
{
    size_t bad = 99; /* spool_read() must set it */
    assert_int_equal(spool_read(path, collect, c, &bad), 0);
    assert_int_equal(bad, bad_lines);
    assert_int_equal(c->n, n);
}

static void temp_path(char *out, size_t len)
{
    snprintf(out, len, "/tmp/audit-test-XXXXXX");
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
}

/* Bytes in the file at path; -1 when it is missing (a spool renamed aside
 * for its replay and not made again yet, which is not empty either). */
static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Two records with the characters that break naive encoders. */
static const struct audit_record tricky[2] = {
    {.id = ID1,
     .user_id = UID,
     .type = AUDIT_LOGIN_SUCCEEDED,
     .created_at = "2024-05-01T12:00:00.123456Z",
     .ip = "2001:db8::1",
     .user_agent =
         "Mozilla/5.0 \"quoted\" back\\slash\nnew line\ttab \xc3\xbc\xe2\x82\xac\xf0\x9f\x98"
         "\x80 {,} NULL",
     .detail = "{\"session_id\":\"" ID2 "\",\"note\":\"a \\\"q\\\" \\\\ \\n \xc3\xa9\"}"},
    {.id = ID2,
     .user_id = "",
     .type = AUDIT_LOGIN_FAILED,
     .created_at = "1999-12-31T23:59:59.999999Z",
     .ip = "",
     .user_agent = "",
     .detail = "{}"},
};

#endif
