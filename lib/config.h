/* config: the service configuration of SPEC §3.
 *
 * Sources, later ones winning: built-in defaults, the file (`key = value`,
 * `#` comments), then ACCESS_<KEY> environment variables. Every setter
 * validates; an unknown key or a bad value yields -1 and one line in err
 * naming the key, the value and the allowed range. The struct owns its
 * strings: config_free() releases them. A loaded config is read-only and may
 * be shared by threads. */
#ifndef ACCESS_CONFIG_H
#define ACCESS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"

struct config_rate {
    long count;  /* requests allowed ... */
    long window; /* ... per this many seconds */
};

struct config_cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;
};

#define CONFIG_MAX_CIDRS 32

struct config {
    long workers;
    long threads;
    char *database_url;
    long db_statement_timeout_ms;
    long db_slow_query_ms;
    int db_prepared;
    char *redis_url;
    long hash_threads;
    long hash_queue_max;
    long hash_queue_timeout_ms;
    long argon2_time_cost;
    long argon2_memory_kib;
    long argon2_parallelism;
    char *password_hasher; /* auto | libsodium | libargon2 (lib/password.h) */
    char *jwt_keys;
    char *jwt_issuer;
    char *jwt_audience;
    char *jwt_alg;
    long access_token_ttl;
    long refresh_token_ttl;
    long max_sessions_per_user;
    long l1_max_entries;
    long l1_max_bytes;
    long l1_ttl;
    long l2_ttl;
    struct config_rate ratelimit_login;
    struct config_rate ratelimit_signup;
    struct config_rate ratelimit_authenticated;
    struct config_rate ratelimit_anonymous;
    char *metrics_allow;
    struct config_cidr metrics_cidrs[CONFIG_MAX_CIDRS];
    size_t metrics_cidr_count;
    long max_body_bytes;
    long request_timeout_ms;
    char *audit_spool;
    long audit_spool_max_bytes; /* size bound of the spool (SPEC §5) */
    long session_retention;     /* s a dead session is kept (SPEC §13) */
    long audit_retention_days;
    long janitor_interval; /* s between housekeeping rounds */
    enum log_level log_level;
    enum log_format log_format;
    long socket_mode;      /* of a unix socket made by --listen unix: */
    int fastcgi_keep_conn; /* what the web server does; informational (SPEC §3, §8) */
    char *public_url;      /* OAuth issuer and metadata base (SPEC §11) */
    long client_token_ttl; /* s, API clients' access tokens */
    char *client_scopes;   /* space-separated; never "admin" */
    struct config_rate ratelimit_token;
    /* The account's life cycle (SPEC §9). */
    char *verify_url; /* "": <public_url>/verify?token= (config_link_prefix) */
    char *reset_url;  /* "": <public_url>/reset?token= */
    long verify_token_ttl;
    long reset_token_ttl;
    char *mail_transport; /* "smtp", "webhook" or "none" (checked by config_validate) */
    char *smtp_url;
    char *smtp_user;
    char *smtp_password;
    char *mail_from;
    char *webhook_url;
    char *events_url;
    char *webhook_secret; /* whsec_ + base64 of >= 24 bytes when a webhook URL is set */
    long outbox_max_attempts;
    long login_failures_max;
    long login_failures_window;
    struct config_rate ratelimit_recover;
    char *secrets_key; /* path of the 32-byte key file (SPEC §10); "": MFA cannot be enabled */
};

/* Fill c with the defaults of SPEC §3 (CPU-dependent ones from the machine). */
void config_defaults(struct config *c);
/* Set one key from its textual value. 0 on success; -1 and err filled. */
int config_set(struct config *c, const char *key, const char *value, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Apply a whole file's text (not NUL-terminated necessarily: len bytes).
 * `origin` names the file in messages. */
int config_parse(struct config *c, const char *text, size_t len, const char *origin, char *err,
                 size_t errlen) __attribute__((warn_unused_result));
/* Read and apply the file at path. */
int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Apply ACCESS_<KEY> variables from envp (NULL-terminated "K=V" strings);
 * an ACCESS_ variable naming no key is an error too. ACCESS_CONFIG is
 * reserved for the file path and skipped. */
int config_apply_env(struct config *c, char *const *envp, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Cross-key checks and required keys (database_url, jwt_keys). */
int config_validate(const struct config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Write the effective configuration as `key = value` lines; the password in
 * database_url and redis_url is masked. Returns a malloc'd string. */
char *config_dump(const struct config *c);
/* Whether addr (AF_INET/AF_INET6 bytes) is inside one of metrics_allow. */
int config_metrics_allowed(const struct config *c, int family, const unsigned char *addr);
/* The link prefix of verification (reset = 0) or reset (reset = 1)
 * messages: verify_url / reset_url, or the default built from public_url.
 * out (outlen bytes) gets it, cut to fit. */
void config_link_prefix(const struct config *c, int reset, char *out, size_t outlen);
/* Decode a Standard Webhooks secret ("whsec_" + base64): 0 with the key in
 * out (*outlen bytes), or -1 when it is malformed or shorter than 24 bytes.
 * The caller wipes out. */
int config_webhook_key(const char *secret, unsigned char *out, size_t outmax, size_t *outlen)
    __attribute__((warn_unused_result));
/* Release owned strings. */
void config_free(struct config *c);

#endif
