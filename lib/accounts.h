/* accounts: the use cases behind the account and token endpoints (SPEC §4):
 * signup, login, refresh rotation, logout, profile read/update, password
 * change, session listing and revocation, bearer-token authentication.
 *
 * Handlers parse HTTP and call these; these validate, talk to PostgreSQL
 * through the db pool (never holding a connection while a hash runs), run
 * Argon2id on the hash pool, and sign tokens with the key set. Results are
 * an enum plus output structs; output strings live in the caller's arena.
 *
 * Thread-safety: all functions may run concurrently; struct accounts is
 * read-only after accounts_init() except the key set, which
 * accounts_reload_keys() swaps under a read-write lock. */
#ifndef ACCESS_ACCOUNTS_H
#define ACCESS_ACCOUNTS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "audit.h"
#include "buf.h"
#include "cache.h"
#include "config.h"
#include "db.h"
#include "hashpool.h"
#include "keys.h"
#include "l2.h"
#include "password.h"

/* Statements of the whole service; indexes into accounts_statements[]. */
enum accounts_stmt {
    STMT_PING = 0,
    STMT_USER_INSERT,
    STMT_USER_BY_EMAIL,
    STMT_USER_HASH_BY_ID,
    STMT_USER_SET_HASH,
    STMT_USER_SET_NAME,
    STMT_SESSION_CREATE,
    STMT_SESSIONS_TRIM,
    STMT_USER_BY_ID,
    STMT_SESSION_REVOKE,
    STMT_REFRESH_ROTATE,
    STMT_REFRESH_REUSE,
    STMT_PASSWORD_CHANGE,
    STMT_SESSIONS_PAGE,
    STMT_USER_BY_SESSION,
    STMT_AUDIT_PAGE,
    STMT_AUDIT_INSERT, /* the audit writer's batch insert (lib/audit.h) */
    /* The janitor's, in the order of enum janitor_stmt (lib/janitor.h). */
    STMT_JANITOR_LOCK,
    STMT_JANITOR_UNLOCK,
    STMT_JANITOR_DEAD_TOKENS,
    STMT_JANITOR_DEAD_SESSIONS,
    STMT_JANITOR_USED_TOKENS,
    STMT_JANITOR_OLD_AUDIT,
    STMT__COUNT
};

extern const struct db_stmt accounts_statements[STMT__COUNT];

enum accounts_status {
    ACC_OK = 0,
    ACC_INVALID,          /* input rule broken: see the problem fields */
    ACC_EMAIL_TAKEN,      /* 409 */
    ACC_BAD_CREDENTIALS,  /* 401 invalid_credentials */
    ACC_WRONG_PASSWORD,   /* 403 */
    ACC_INVALID_TOKEN,    /* 401 invalid_token */
    ACC_NOT_FOUND,        /* 404 */
    ACC_OVERLOADED,       /* 503 + Retry-After: hash queue full or wait too long */
    ACC_UNAVAILABLE,      /* 503: PostgreSQL unreachable or in trouble, or the deadline passed */
    ACC_INTERNAL,         /* 500 */
    ACC_ACCOUNT_DISABLED, /* 403 account_disabled (SPEC §12) */
    ACC_FORBIDDEN,        /* 403 insufficient_scope: not an admin client */
};

struct accounts {
    const struct config *cfg;
    struct db_pool *db;
    struct hashpool *hash;
    struct password_params pw;
    char dummy_hash[PASSWORD_PHC_MAX]; /* verified for unknown emails */
    pthread_rwlock_t keys_lock;
    struct keyset *keys;
    unsigned char cursor_key[32]; /* pagination cursor MAC key, under keys_lock */
    /* Caches, set by the caller after accounts_init() and before use; both
     * required (l2 over no Redis simply loads). See lib/cache.h for keys. */
    struct cache *l1;
    struct l2 *l2;
    /* Where events go (SPEC §5); NULL: none are recorded. Set like l1. */
    struct audit *audit;
};

/* The slowest layer a request's cached reads reached (for the log). */
enum accounts_layer { ACC_LAYER_NONE = 0, ACC_LAYER_L1, ACC_LAYER_L2, ACC_LAYER_DB };

/* Per-request context: who asks, by when, and what it cost (for the
 * request log). */
struct accounts_req {
    struct arena *arena;
    const char *ip;
    const char *user_agent;
    /* The request's whole budget (SPEC §3 request_timeout_ms) as a deadline
     * on clock_now_ms()'s scale: every wait of the use case (pool, query,
     * hash queue, single-flight) ends by it, and a use case that reaches it
     * returns ACC_UNAVAILABLE. 0: request_timeout_ms from the first wait. */
    int64_t deadline;
    double db_ms;
    double hash_ms;
    enum accounts_layer layer;
    /* For ACC_INVALID: the problem code, detail and field. */
    const char *code;
    const char *detail;
    const char *field;
};

struct accounts_user {
    const char *id, *email, *name, *created_at;
    long long version;
};

struct accounts_tokens {
    const char *session_id;
    const char *access_token;
    const char *refresh_token;
    long expires_in;
};

struct accounts_principal {
    char user_id[37];
    char session_id[37];
};

/* Set up: load the key set, make the dummy hash. 0 or -1 with err. */
int accounts_init(struct accounts *a, const struct config *cfg, struct db_pool *db,
                  struct hashpool *hash, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Reload the key set from cfg->jwt_keys (SIGHUP); keeps the old on error. */
int accounts_reload_keys(struct accounts *a, char *err, size_t errlen);
void accounts_destroy(struct accounts *a);

/* Input rules of SPEC §4 (pure): 0 valid, -1 with r->code/detail/field. */
int accounts_check_email(struct accounts_req *r, const char *email, size_t len);
int accounts_check_password(struct accounts_req *r, const char *field, const char *pw, size_t len);
int accounts_check_name(struct accounts_req *r, const char *name, size_t len);

enum accounts_status accounts_signup(struct accounts *a, struct accounts_req *r, const char *email,
                                     const char *password, size_t pwlen, const char *name,
                                     struct accounts_user *out);
enum accounts_status accounts_login(struct accounts *a, struct accounts_req *r, const char *email,
                                    const char *password, size_t pwlen,
                                    struct accounts_tokens *out);
enum accounts_status accounts_refresh(struct accounts *a, struct accounts_req *r,
                                      const char *refresh_token, struct accounts_tokens *out);
/* Verify a bearer token and that its session is live, through L1 (verified
 * tokens, sessions), L2 and PostgreSQL. When profile is not NULL it also
 * receives the user's profile: the ready JSON of GET /me with its ETag and
 * version (a reference the caller releases with cache_value_release()). */
enum accounts_status accounts_authenticate(struct accounts *a, struct accounts_req *r,
                                           const char *token, size_t len,
                                           struct accounts_principal *out,
                                           struct cache_value **profile);
enum accounts_status accounts_logout(struct accounts *a, struct accounts_req *r,
                                     const struct accounts_principal *p);
/* Change the name; *profile gets the new profile as GET /me serves it (a
 * reference the caller releases), NULL on failure. */
enum accounts_status accounts_set_name(struct accounts *a, struct accounts_req *r,
                                       const struct accounts_principal *p, const char *name,
                                       struct cache_value **profile);
enum accounts_status accounts_change_password(struct accounts *a, struct accounts_req *r,
                                              const struct accounts_principal *p,
                                              const char *current, size_t curlen, const char *next,
                                              size_t nextlen);
/* The listings of GET /sessions and GET /audit. */
enum accounts_list { ACCOUNTS_LIST_SESSIONS = 0, ACCOUNTS_LIST_AUDIT };

/* A page of the caller's own live sessions or audit events, newest first.
 * cursor may be NULL (ACC_INVALID when forged or malformed); fields is a
 * bit set of ACCOUNTS_SF_* / ACCOUNTS_AF_*. Appends
 * {"items":[…],"next_cursor":…} to out. */
enum accounts_status accounts_list(struct accounts *a, struct accounts_req *r,
                                   const struct accounts_principal *p, enum accounts_list list,
                                   const char *cursor, long limit, unsigned fields,
                                   struct buf *out);
enum accounts_status accounts_revoke_session(struct accounts *a, struct accounts_req *r,
                                             const struct accounts_principal *p,
                                             const char *session_id, size_t len);
/* The public JWK set (from L1; rebuilt after a key reload). A reference
 * the caller releases. */
struct cache_value *accounts_jwks(struct accounts *a);
/* The profile JSON of u, as signup, GET /me and PATCH /me return it. */
void accounts_user_json(struct buf *b, const struct accounts_user *u);

/* Session fields for ?fields= */
enum {
    ACCOUNTS_SF_ID = 1u << 0,
    ACCOUNTS_SF_CREATED_AT = 1u << 1,
    ACCOUNTS_SF_LAST_USED_AT = 1u << 2,
    ACCOUNTS_SF_EXPIRES_AT = 1u << 3,
    ACCOUNTS_SF_IP = 1u << 4,
    ACCOUNTS_SF_USER_AGENT = 1u << 5,
    ACCOUNTS_SF_CURRENT = 1u << 6,
    ACCOUNTS_SF_ALL = (1u << 7) - 1,
};
/* Audit event fields for ?fields= */
enum {
    ACCOUNTS_AF_ID = 1u << 0,
    ACCOUNTS_AF_TYPE = 1u << 1,
    ACCOUNTS_AF_CREATED_AT = 1u << 2,
    ACCOUNTS_AF_IP = 1u << 3,
    ACCOUNTS_AF_USER_AGENT = 1u << 4,
    ACCOUNTS_AF_DETAIL = 1u << 5,
    ACCOUNTS_AF_ALL = (1u << 6) - 1,
};
/* Parse "id,created_at" for list into a bit set; -1 naming the unknown
 * field in *bad (pointer into s) and its length. Empty string: all. */
int accounts_parse_fields(enum accounts_list list, const char *s, unsigned *out, const char **bad,
                          size_t *badlen);
/* Cursor codec (keyset on created_at microseconds + id), MAC'd with key so
 * a forged cursor is refused: pure. */
#define ACCOUNTS_CURSOR_KEY_LEN 32
void accounts_cursor_encode(const unsigned char key[ACCOUNTS_CURSOR_KEY_LEN], long long micros,
                            const char *id, char *out, size_t outlen);
int accounts_cursor_decode(const unsigned char key[ACCOUNTS_CURSOR_KEY_LEN], const char *s,
                           long long *micros, char id[37]) __attribute__((warn_unused_result));

#endif
