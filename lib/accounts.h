/* accounts: the use cases behind the account and token endpoints (SPEC §4):
 * signup, login, refresh rotation, logout, profile update, password
 * change, session listing and revocation. Who is calling (bearer tokens)
 * and the cached reads and invalidations behind it are lib/authn.h.
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
#include "outbox.h"
#include "password.h"
#include "throttle.h"

/* Statements of the whole service; indexes into accounts_statements[]. */
enum accounts_stmt {
    STMT_PING = 0,
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
    STMT_JANITOR_DEAD_TOKENS,
    STMT_JANITOR_DEAD_SESSIONS,
    STMT_JANITOR_USED_TOKENS,
    STMT_JANITOR_OLD_AUDIT,
    STMT_JANITOR_OLD_OUTBOX,
    STMT_JANITOR_EXPIRED_TOKENS,
    STMT_JANITOR_EXPIRED_MFA,
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
    ACC_INVALID_GRANT,    /* 400 invalid_grant: a verification/reset token unknown, used, expired */
    ACC_THROTTLED,        /* 429: the account's login throttle (r->retry_after_s) */
    ACC_INVALID_CODE,     /* 401 invalid_code: a wrong second-factor or recovery code */
    ACC_NO_SECRETS_KEY,   /* 503: secrets_key missing or unreadable (the log says why) */
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
    /* Kicked after a commit that wrote outbox rows (SPEC §9); may be NULL. */
    struct outbox *outbox;
    /* The per-account login throttle (SPEC §9); NULL: none. Set like l1. */
    struct throttle *throttle;
    /* The second factor's keys (SPEC §10, lib/secretbox.h); NULL when
     * secrets_key is empty or could not be read, secrets_err saying why.
     * Set like l1. */
    const struct secretbox *secrets;
    const char *secrets_err;
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
    /* For ACC_THROTTLED: seconds until the account may try again. */
    long retry_after_s;
};

struct accounts_user {
    const char *id, *email, *name, *created_at;
    long long version;
    int email_verified;
    int mfa_enabled;
};

struct accounts_tokens {
    const char *session_id;
    const char *access_token;
    const char *refresh_token;
    long expires_in;
    /* Login of an account with MFA on: the password was right, but instead
     * of a session there is this mfa_token (SPEC §10); the rest is NULL. */
    const char *mfa_token;
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

enum accounts_status accounts_login(struct accounts *a, struct accounts_req *r, const char *email,
                                    const char *password, size_t pwlen,
                                    struct accounts_tokens *out);
enum accounts_status accounts_refresh(struct accounts *a, struct accounts_req *r,
                                      const char *refresh_token, struct accounts_tokens *out);
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
enum accounts_status accounts_revoke_session(struct accounts *a, struct accounts_req *r,
                                             const struct accounts_principal *p,
                                             const char *session_id, size_t len);

/* ---- shared with the sibling use-case modules (lifecycle, mfa, authn) ----
 * They run their own statements through the same pool, hashing, audit and
 * cache invalidation paths, so every write invalidates the same way. */

/* The columns of a user row, in the order accounts_user_from() reads them. */
#define ACCOUNTS_USER_COLS                                                                         \
    "id, email, name, to_char(created_at AT TIME ZONE 'UTC', "                                     \
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), version, email_verified, mfa_enabled"

/* The request's deadline (r->deadline, set from request_timeout_ms on
 * first use when the caller gave none): what every wait of a use case ends
 * by, cached reads included (lib/authn.h). */
int64_t accounts_deadline(struct accounts *a, struct accounts_req *r);
/* Run statement stmt (any index of the pool's table) on a pooled connection
 * by the request's deadline, adding its time to r->db_ms. A server in
 * trouble (statement timeout, shutdown) is DB_UNAVAILABLE; never logs the
 * server's message. On DB_OK and DB_ERROR *res is for the caller to clear. */
enum db_result accounts_db(struct accounts *a, struct accounts_req *r, size_t stmt,
                           const char *const *params, PGresult **res)
    __attribute__((warn_unused_result));
/* The status of a failed db result: 503 for unavailable/timeout, else 500. */
enum accounts_status accounts_db_status(enum db_result rc);
/* Fill u from row 0 of res (ACCOUNTS_USER_COLS), strings in r's arena. */
void accounts_user_from(struct accounts_req *r, PGresult *res, struct accounts_user *u);
/* The "\x<hex>" bytea text of BLAKE2b-256(token): how every token the
 * service hands out (refresh, verification, reset) is stored. */
void accounts_token_hash(const char *token, size_t len, char out[2 + 64 + 1]);

/* A job for the hash pool: verify pw against stored (NULL: none), then hash
 * new_pw if given (or rehash pw when asked and stored is outdated). */
struct accounts_hash_job {
    const struct password_params *pp;
    const char *stored; /* verify against this, or NULL to only hash */
    const char *pw;
    size_t pwlen;
    const char *new_pw; /* hash this too when verify succeeded (or always if no stored) */
    size_t new_pwlen;
    int rehash; /* also rehash pw when stored uses other params */
    enum password_verdict verdict;
    int hash_failed;
    char out[PASSWORD_PHC_MAX];
};
/* Run j on the hash pool within the request's budget (no db connection may
 * be held): ACC_OK (see j->verdict), ACC_OVERLOADED, ACC_UNAVAILABLE or
 * ACC_INTERNAL. The caller wipes j->out. */
enum accounts_status accounts_run_hash(struct accounts *a, struct accounts_req *r,
                                       struct accounts_hash_job *j)
    __attribute__((warn_unused_result));
/* Queue one audit event with detail {"k1":"v1"[,"k2":"v2"]} (k1 NULL: {}). */
void accounts_audit(struct accounts *a, struct accounts_req *r, enum audit_type type,
                    const char *user_id, const char *k1, const char *v1, const char *k2,
                    const char *v2);
/* Take a slot of the account's throttle before checking a password
 * (user_id, or email when no account has it): ACC_OK (key and v filled),
 * or ACC_THROTTLED with r->retry_after_s (and login_throttled audited on
 * the window's first refusal). */
enum accounts_status accounts_throttle_take(struct accounts *a, struct accounts_req *r,
                                            const char *user_id, const char *email,
                                            char key[THROTTLE_KEY_MAX], struct throttle_verdict *v);
/* After the check: st is its outcome; only a wrong password keeps the slot. */
void accounts_throttle_done(struct accounts *a, const char *key, const struct throttle_verdict *v,
                            enum accounts_status st);
/* Check password against user_id's stored hash, under the account's
 * throttle (a wrong one counts): ACC_OK, ACC_BAD_CREDENTIALS, ACC_THROTTLED,
 * ACC_INVALID_TOKEN (no such user any more), or what the pool or the hash
 * pool answered. For confirmations by a signed-in user (deletion, removing
 * the second factor). */
enum accounts_status accounts_verify_password_of(struct accounts *a, struct accounts_req *r,
                                                 const char *user_id, const char *password,
                                                 size_t pwlen) __attribute__((warn_unused_result));
/* Open a session for user_id with a fresh refresh token (revoking the
 * oldest past max_sessions_per_user) and issue its tokens; amr_otp: a
 * second factor was used (the session's tokens carry amr ["pwd","otp"]). */
enum accounts_status accounts_open_session(struct accounts *a, struct accounts_req *r,
                                           const char *user_id, int amr_otp,
                                           struct accounts_tokens *out);

#endif
