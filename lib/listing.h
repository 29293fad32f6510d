/* listing: keyset pages, newest first (SPEC §4 sessions and audit, §11
 * clients, §12 admin users): the MAC'd cursor codec, ?fields= parsing, the
 * page's closing {…,"next_cursor":…}, and the signed-in user's own
 * sessions and audit pages.
 *
 * A cursor is opaque to clients: created_at in microseconds and the row's
 * id, MAC'd with the cursor key (derived from the signing keys, rotated
 * with them), so a forged or stale-key cursor is refused, never trusted.
 *
 * Thread-safety: pure functions, plus listing_cursor_key() and
 * listing_page(), which read struct accounts under its keys_lock; any
 * number of threads at once. */
#ifndef ACCESS_LISTING_H
#define ACCESS_LISTING_H

#include <stddef.h>

#include <libpq-fe.h>

#include "accounts.h"
#include "buf.h"

/* The listings of GET /sessions and GET /audit. */
enum listing_kind { LISTING_SESSIONS = 0, LISTING_AUDIT };

/* Session fields for ?fields= */
enum {
    LISTING_SF_ID = 1u << 0,
    LISTING_SF_CREATED_AT = 1u << 1,
    LISTING_SF_LAST_USED_AT = 1u << 2,
    LISTING_SF_EXPIRES_AT = 1u << 3,
    LISTING_SF_IP = 1u << 4,
    LISTING_SF_USER_AGENT = 1u << 5,
    LISTING_SF_CURRENT = 1u << 6,
    LISTING_SF_ALL = (1u << 7) - 1,
};
/* Audit event fields for ?fields= */
enum {
    LISTING_AF_ID = 1u << 0,
    LISTING_AF_TYPE = 1u << 1,
    LISTING_AF_CREATED_AT = 1u << 2,
    LISTING_AF_IP = 1u << 3,
    LISTING_AF_USER_AGENT = 1u << 4,
    LISTING_AF_DETAIL = 1u << 5,
    LISTING_AF_ALL = (1u << 6) - 1,
};

/* A page of the caller's own live sessions or audit events, newest first.
 * cursor may be NULL (ACC_INVALID when forged or malformed); fields is a
 * bit set of LISTING_SF_* / LISTING_AF_*. Appends
 * {"items":[…],"next_cursor":…} to out. */
enum accounts_status listing_page(struct accounts *a, struct accounts_req *r,
                                  const struct accounts_principal *p, enum listing_kind list,
                                  const char *cursor, long limit, unsigned fields, struct buf *out);

/* Parse "id,created_at" for list into a bit set; -1 naming the unknown
 * field in *bad (pointer into s) and its length. Empty string: all. */
int listing_parse_fields(enum listing_kind list, const char *s, unsigned *out, const char **bad,
                         size_t *badlen);

/* Cursor codec (keyset on created_at microseconds + id), MAC'd with key so
 * a forged cursor is refused: pure. */
#define LISTING_CURSOR_KEY_LEN 32
void listing_cursor_encode(const unsigned char key[LISTING_CURSOR_KEY_LEN], long long micros,
                           const char *id, char *out, size_t outlen);
int listing_cursor_decode(const unsigned char key[LISTING_CURSOR_KEY_LEN], const char *s,
                          long long *micros, char id[37]) __attribute__((warn_unused_result));

/* Copy a's current cursor key into out (the caller wipes it). */
void listing_cursor_key(struct accounts *a, unsigned char out[LISTING_CURSOR_KEY_LEN]);

/* Close a page whose items are written: ],"next_cursor":…} with the cursor
 * of row last - 1 of res (id in column 0, created_at microseconds in
 * micros_col), or null when last is 0 (no further page). */
void listing_page_end(struct buf *out, const unsigned char key[LISTING_CURSOR_KEY_LEN],
                      const PGresult *res, int last, int micros_col);

#endif
