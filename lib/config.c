#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "alloc.h"
#include "buf.h"
#include "password.h"

enum config_type {
    CT_INT,    /* decimal integer in [min, max] */
    CT_SIZE,   /* bytes, optional K/KiB/M/MiB/G/GiB suffix, in [min, max] */
    CT_BOOL,   /* on/off/true/false/yes/no/1/0 */
    CT_STR,    /* any text; max = maximum length, min = 1 when it may not be empty */
    CT_RATE,   /* N/SECONDS */
    CT_CIDRS,  /* comma-separated CIDR list */
    CT_LEVEL,  /* log level */
    CT_FORMAT, /* log format */
    CT_ALG,    /* EdDSA | Ed25519 */
    CT_MODE,   /* file mode: 1..4 octal digits in [min, max] */
};

struct config_key {
    const char *name;
    enum config_type type;
    size_t offset;
    long min;
    long max;
    const char *def; /* NULL: no default, or computed in config_defaults */
};

#define OFF(f) offsetof(struct config, f)

static const struct config_key config_keys[] = {
    {"workers", CT_INT, OFF(workers), 1, 256, NULL},
    {"threads", CT_INT, OFF(threads), 1, 1024, "16"},
    {"database_url", CT_STR, OFF(database_url), 0, 4096, NULL},
    {"db_statement_timeout_ms", CT_INT, OFF(db_statement_timeout_ms), 0, 3600000, "5000"},
    {"db_slow_query_ms", CT_INT, OFF(db_slow_query_ms), 0, 3600000, "100"},
    {"db_prepared", CT_BOOL, OFF(db_prepared), 0, 1, "on"},
    {"redis_url", CT_STR, OFF(redis_url), 0, 4096, ""},
    {"hash_threads", CT_INT, OFF(hash_threads), 1, 256, NULL},
    {"hash_queue_max", CT_INT, OFF(hash_queue_max), 0, 100000, "64"},
    {"hash_queue_timeout_ms", CT_INT, OFF(hash_queue_timeout_ms), 1, 600000, "2000"},
    {"argon2_time_cost", CT_INT, OFF(argon2_time_cost), 1, 64, "3"},
    {"argon2_memory_kib", CT_INT, OFF(argon2_memory_kib), 8, 4194304, "65536"},
    {"argon2_parallelism", CT_INT, OFF(argon2_parallelism), 1, 16, "1"},
    {"password_hasher", CT_STR, OFF(password_hasher), 1, 16, "auto"},
    {"jwt_keys", CT_STR, OFF(jwt_keys), 0, 4096, NULL},
    {"jwt_issuer", CT_STR, OFF(jwt_issuer), 1, 256, "access"},
    {"jwt_audience", CT_STR, OFF(jwt_audience), 1, 256, "access"},
    {"jwt_alg", CT_ALG, OFF(jwt_alg), 0, 0, "EdDSA"},
    {"access_token_ttl", CT_INT, OFF(access_token_ttl), 60, 86400, "3600"},
    {"refresh_token_ttl", CT_INT, OFF(refresh_token_ttl), 60, 31536000, "2592000"},
    {"max_sessions_per_user", CT_INT, OFF(max_sessions_per_user), 1, 1000, "10"},
    {"l1_max_entries", CT_INT, OFF(l1_max_entries), 0, 10000000, "10000"},
    {"l1_max_bytes", CT_SIZE, OFF(l1_max_bytes), 0, 4294967296L, "50MiB"},
    {"l1_ttl", CT_INT, OFF(l1_ttl), 0, 86400, "60"},
    {"l2_ttl", CT_INT, OFF(l2_ttl), 0, 604800, "300"},
    {"ratelimit_login", CT_RATE, OFF(ratelimit_login), 0, 0, "100/3600"},
    {"ratelimit_signup", CT_RATE, OFF(ratelimit_signup), 0, 0, "5/86400"},
    {"ratelimit_authenticated", CT_RATE, OFF(ratelimit_authenticated), 0, 0, "6000/60"},
    {"ratelimit_anonymous", CT_RATE, OFF(ratelimit_anonymous), 0, 0, "600/60"},
    {"metrics_allow", CT_CIDRS, OFF(metrics_allow), 0, 0, "127.0.0.1/32,::1/128"},
    {"max_body_bytes", CT_SIZE, OFF(max_body_bytes), 256, 16777216, "16384"},
    {"request_timeout_ms", CT_INT, OFF(request_timeout_ms), 100, 600000, "30000"},
    {"audit_spool", CT_STR, OFF(audit_spool), 1, 4096, "./var/audit.spool"},
    {"audit_spool_max_bytes", CT_SIZE, OFF(audit_spool_max_bytes), 65536, 1099511627776L,
     "268435456"},
    {"session_retention", CT_INT, OFF(session_retention), 0, 315360000, "604800"},
    {"audit_retention_days", CT_INT, OFF(audit_retention_days), 1, 36500, "365"},
    {"janitor_interval", CT_INT, OFF(janitor_interval), 1, 86400, "60"},
    {"log_level", CT_LEVEL, OFF(log_level), 0, 0, "info"},
    {"log_format", CT_FORMAT, OFF(log_format), 0, 0, "json"},
    {"socket_mode", CT_MODE, OFF(socket_mode), 0, 0777, "0660"},
    {"fastcgi_keep_conn", CT_BOOL, OFF(fastcgi_keep_conn), 0, 1, "off"},
    {"public_url", CT_STR, OFF(public_url), 1, 512, "http://127.0.0.1:8080"},
    {"client_token_ttl", CT_INT, OFF(client_token_ttl), 60, 86400, "3600"},
    {"client_scopes", CT_STR, OFF(client_scopes), 1, 512, "api"},
    {"ratelimit_token", CT_RATE, OFF(ratelimit_token), 0, 0, "1200/60"},
    {"verify_url", CT_STR, OFF(verify_url), 0, 2048, ""},
    {"reset_url", CT_STR, OFF(reset_url), 0, 2048, ""},
    {"verify_token_ttl", CT_INT, OFF(verify_token_ttl), 60, 604800, "86400"},
    {"reset_token_ttl", CT_INT, OFF(reset_token_ttl), 60, 604800, "1800"},
    {"mail_transport", CT_STR, OFF(mail_transport), 1, 16, "none"},
    {"smtp_url", CT_STR, OFF(smtp_url), 0, 2048, ""},
    {"smtp_user", CT_STR, OFF(smtp_user), 0, 256, ""},
    {"smtp_password", CT_STR, OFF(smtp_password), 0, 256, ""},
    {"mail_from", CT_STR, OFF(mail_from), 3, 254, "access@localhost"},
    {"webhook_url", CT_STR, OFF(webhook_url), 0, 2048, ""},
    {"events_url", CT_STR, OFF(events_url), 0, 2048, ""},
    {"webhook_secret", CT_STR, OFF(webhook_secret), 0, 1024, ""},
    {"outbox_max_attempts", CT_INT, OFF(outbox_max_attempts), 1, 1000, "12"},
    {"login_failures_max", CT_INT, OFF(login_failures_max), 1, 1000000, "10"},
    {"login_failures_window", CT_INT, OFF(login_failures_window), 1, 86400, "900"},
    {"ratelimit_recover", CT_RATE, OFF(ratelimit_recover), 0, 0, "5/3600"},
    {"secrets_key", CT_STR, OFF(secrets_key), 0, 4096, ""},
};

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* Rate limits allow at most this many requests and this long a window. */
#define RATE_MAX_COUNT  100000000L
#define RATE_MAX_WINDOW 31536000L

static const struct config_key *config_find(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* client_scopes (SPEC §3): scope tokens of [A-Za-z0-9_.:-] separated by
 * single spaces, none of them "admin" (only the command line gives it). */
static int config_scopes_ok(const char *s)
{
    const char *p = s;
    while (*p != '\0') {
        const char *e = p;
        while (*e != '\0' && *e != ' ') {
            char c = *e;
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '-'))
                return 0;
            e++;
        }
        if (e == p || (e - p == 5 && strncmp(p, "admin", 5) == 0))
            return 0;
        p = *e == ' ' ? e + 1 : e;
        if (*e == ' ' && *p == '\0')
            return 0;
    }
    return p != s;
}

/* Strict decimal: optional sign, digits only, no overflow. */
static int config_parse_long(const char *s, long *out)
{
    char *end;
    if (*s == '\0' || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int config_parse_size(const char *s, long *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    while (*end == ' ')
        end++;
    unsigned long long mul = 1;
    if (*end == '\0' || strcmp(end, "B") == 0)
        mul = 1;
    else if (strcmp(end, "K") == 0 || strcmp(end, "KiB") == 0 || strcmp(end, "k") == 0)
        mul = 1024ULL;
    else if (strcmp(end, "M") == 0 || strcmp(end, "MiB") == 0)
        mul = 1024ULL * 1024;
    else if (strcmp(end, "G") == 0 || strcmp(end, "GiB") == 0)
        mul = 1024ULL * 1024 * 1024;
    else
        return -1;
    if (v > (unsigned long long)LONG_MAX / mul)
        return -1;
    *out = (long)(v * mul);
    return 0;
}

static int config_parse_cidr(const char *s, size_t n, struct config_cidr *out)
{
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *slash = strchr(tmp, '/');
    long prefix = -1;
    if (slash != NULL) {
        *slash = '\0';
        if (config_parse_long(slash + 1, &prefix) != 0 || prefix < 0)
            return -1;
    }
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, tmp, out->addr) == 1) {
        out->family = AF_INET;
        if (prefix < 0)
            prefix = 32;
        if (prefix > 32)
            return -1;
    } else if (inet_pton(AF_INET6, tmp, out->addr) == 1) {
        out->family = AF_INET6;
        if (prefix < 0)
            prefix = 128;
        if (prefix > 128)
            return -1;
    } else {
        return -1;
    }
    out->prefix = (int)prefix;
    return 0;
}

static int config_parse_cidrs(struct config *c, const char *value)
{
    struct config_cidr tmp[CONFIG_MAX_CIDRS];
    size_t count = 0;
    memset(tmp, 0, sizeof(tmp));
    const char *p = value;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        const char *start = p;
        while (*p != '\0' && *p != ',' && *p != ' ')
            p++;
        if (count == CONFIG_MAX_CIDRS)
            return -1;
        if (config_parse_cidr(start, (size_t)(p - start), &tmp[count]) != 0)
            return -1;
        count++;
    }
    memcpy(c->metrics_cidrs, tmp, sizeof(tmp[0]) * count);
    c->metrics_cidr_count = count;
    return 0;
}

static void config_set_str(char **slot, const char *value)
{
    free(*slot);
    *slot = xstrdup(value);
}

int config_set(struct config *c, const char *key, const char *value, char *err, size_t errlen)
{
    const struct config_key *k = config_find(key);
    char *base = (char *)c;
    long v;
    if (k == NULL) {
        snprintf(err, errlen, "unknown configuration key '%s'", key);
        return -1;
    }
    switch (k->type) {
    case CT_INT:
        if (config_parse_long(value, &v) != 0 || v < k->min || v > k->max) {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: integer %ld..%ld)", key, value,
                     k->min, k->max);
            return -1;
        }
        *(long *)(base + k->offset) = v;
        return 0;
    case CT_SIZE:
        if (config_parse_size(value, &v) != 0 || v < k->min || v > k->max) {
            snprintf(err, errlen,
                     "%s: invalid value '%s' (allowed: %ld..%ld bytes, suffix K, M or G optional)",
                     key, value, k->min, k->max);
            return -1;
        }
        *(long *)(base + k->offset) = v;
        return 0;
    case CT_BOOL:
        if (strcmp(value, "on") == 0 || strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 ||
            strcmp(value, "1") == 0) {
            *(int *)(base + k->offset) = 1;
        } else if (strcmp(value, "off") == 0 || strcmp(value, "false") == 0 ||
                   strcmp(value, "no") == 0 || strcmp(value, "0") == 0) {
            *(int *)(base + k->offset) = 0;
        } else {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: on or off)", key, value);
            return -1;
        }
        return 0;
    case CT_STR: {
        size_t n = strlen(value);
        if ((long)n > k->max || (k->min > 0 && n == 0)) {
            snprintf(err, errlen, "%s: invalid value '%.64s%s' (allowed: %s%ld characters)", key,
                     value, n > 64 ? "..." : "", k->min > 0 ? "1.." : "up to ", k->max);
            return -1;
        }
        if (strcmp(key, "client_scopes") == 0 && !config_scopes_ok(value)) {
            snprintf(err, errlen,
                     "%s: invalid value '%.64s%s' (allowed: space-separated scopes of "
                     "[A-Za-z0-9_.:-], never admin)",
                     key, value, n > 64 ? "..." : "");
            return -1;
        }
        config_set_str((char **)(void *)(base + k->offset), value);
        return 0;
    }
    case CT_RATE: {
        const char *slash = strchr(value, '/');
        long count, window;
        char num[32];
        size_t n = slash ? (size_t)(slash - value) : 0;
        if (slash == NULL || n == 0 || n >= sizeof(num)) {
            goto bad_rate;
        }
        memcpy(num, value, n);
        num[n] = '\0';
        if (config_parse_long(num, &count) != 0 || config_parse_long(slash + 1, &window) != 0 ||
            count < 1 || count > RATE_MAX_COUNT || window < 1 || window > RATE_MAX_WINDOW)
            goto bad_rate;
        struct config_rate *r = (struct config_rate *)(void *)(base + k->offset);
        r->count = count;
        r->window = window;
        return 0;
    bad_rate:
        snprintf(err, errlen,
                 "%s: invalid value '%s' (allowed: COUNT/SECONDS, COUNT 1..%ld, SECONDS 1..%ld)",
                 key, value, RATE_MAX_COUNT, RATE_MAX_WINDOW);
        return -1;
    }
    case CT_CIDRS:
        if (config_parse_cidrs(c, value) != 0) {
            snprintf(
                err, errlen,
                "%s: invalid value '%s' (allowed: comma-separated IPv4/IPv6 CIDRs, at most %d)",
                key, value, CONFIG_MAX_CIDRS);
            return -1;
        }
        config_set_str(&c->metrics_allow, value);
        return 0;
    case CT_LEVEL:
        if (log_level_parse(value, &c->log_level) != 0) {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: debug, info, warn, error)", key,
                     value);
            return -1;
        }
        return 0;
    case CT_FORMAT:
        if (log_format_parse(value, &c->log_format) != 0) {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: json, text)", key, value);
            return -1;
        }
        return 0;
    case CT_MODE: {
        size_t n = strlen(value);
        v = 0;
        for (size_t i = 0; i < n && n <= 4; i++) {
            if (value[i] < '0' || value[i] > '7') {
                n = 0;
                break;
            }
            v = v * 8 + (value[i] - '0');
        }
        if (n == 0 || n > 4 || v < k->min || v > k->max) {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: octal mode %04lo..%04lo)", key,
                     value, (unsigned long)k->min, (unsigned long)k->max);
            return -1;
        }
        *(long *)(base + k->offset) = v;
        return 0;
    }
    case CT_ALG:
        if (strcmp(value, "EdDSA") != 0 && strcmp(value, "Ed25519") != 0) {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: EdDSA, Ed25519)", key, value);
            return -1;
        }
        config_set_str(&c->jwt_alg, value);
        return 0;
    }
    snprintf(err, errlen, "%s: unsupported key type", key);
    return -1;
}

void config_defaults(struct config *c)
{
    char err[256];
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NKEYS; i++) {
        if (config_keys[i].def != NULL &&
            config_set(c, config_keys[i].name, config_keys[i].def, err, sizeof(err)) != 0) {
            fprintf(stderr, "access: broken built-in default: %s\n", err);
            abort();
        }
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        cpus = 1;
    c->workers = cpus > 256 ? 256 : cpus;
    c->hash_threads = cpus < 4 ? cpus : 4;
}

static char *config_trim(char *s, char *end)
{
    while (s < end && isspace((unsigned char)*s))
        s++;
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    return s;
}

int config_parse(struct config *c, const char *text, size_t len, const char *origin, char *err,
                 size_t errlen)
{
    char *copy = xstrndup(text, len);
    char *line = copy;
    int lineno = 0;
    int rc = -1;
    while (line != NULL && *line != '\0') {
        char *nl = strchr(line, '\n');
        char *next = NULL;
        if (nl != NULL) {
            *nl = '\0';
            next = nl + 1;
        }
        lineno++;
        char *hash = strchr(line, '#');
        char *end = hash != NULL ? hash : line + strlen(line);
        char *s = config_trim(line, end);
        if (*s != '\0') {
            char *eq = strchr(s, '=');
            if (eq == NULL) {
                snprintf(err, errlen, "%s:%d: expected 'key = value', got '%.64s'", origin, lineno,
                         s);
                goto out;
            }
            char *key = config_trim(s, eq);
            char *value = config_trim(eq + 1, eq + 1 + strlen(eq + 1));
            char sub[512];
            if (config_set(c, key, value, sub, sizeof(sub)) != 0) {
                snprintf(err, errlen, "%s:%d: %s", origin, lineno, sub);
                goto out;
            }
        }
        line = next;
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    struct buf b = {0};
    char chunk[4096];
    size_t n;
    int rc = -1;
    if (f == NULL) {
        snprintf(err, errlen, "cannot open configuration file '%s': %s", path, strerror(errno));
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        buf_append(&b, chunk, n);
        if (b.len > 1024 * 1024) {
            snprintf(err, errlen, "configuration file '%s' is larger than 1 MiB", path);
            goto out;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read configuration file '%s'", path);
        goto out;
    }
    rc = config_parse(c, b.data ? b.data : "", b.len, path, err, errlen);
out:
    fclose(f);
    buf_free(&b);
    return rc;
}

int config_apply_env(struct config *c, char *const *envp, char *err, size_t errlen)
{
    for (; envp != NULL && *envp != NULL; envp++) {
        const char *e = *envp;
        if (strncmp(e, "ACCESS_", 7) != 0)
            continue;
        const char *eq = strchr(e, '=');
        if (eq == NULL)
            continue;
        char key[64];
        size_t n = (size_t)(eq - e) - 7;
        if (n == 0 || n >= sizeof(key)) {
            snprintf(err, errlen, "unknown configuration variable '%.*s'", (int)(eq - e), e);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            key[i] = (char)tolower((unsigned char)e[7 + i]);
        key[n] = '\0';
        if (strcmp(key, "config") == 0)
            continue;
        char sub[512];
        if (config_set(c, key, eq + 1, sub, sizeof(sub)) != 0) {
            snprintf(err, errlen, "environment %.*s: %s", (int)(eq - e), e, sub);
            return -1;
        }
    }
    return 0;
}

int config_validate(const struct config *c, char *err, size_t errlen)
{
    if (c->database_url == NULL || c->database_url[0] == '\0') {
        snprintf(err, errlen, "database_url: required (a libpq URI, e.g. postgresql:///access)");
        return -1;
    }
    if (c->jwt_keys == NULL || c->jwt_keys[0] == '\0') {
        snprintf(err, errlen, "jwt_keys: required (path of the private JWK set; see 'keygen')");
        return -1;
    }
    if (c->redis_url != NULL && c->redis_url[0] != '\0' &&
        strncmp(c->redis_url, "redis://", 8) != 0 && strncmp(c->redis_url, "unix:", 5) != 0) {
        snprintf(err, errlen,
                 "redis_url: invalid value '%s' (allowed: empty, redis://HOST:PORT[/DB] or "
                 "unix:PATH)",
                 c->redis_url);
        return -1;
    }
    enum password_impl impl;
    if (strcmp(c->password_hasher, "auto") != 0 &&
        password_impl_from_name(c->password_hasher, &impl) != 0) {
        snprintf(err, errlen,
                 "password_hasher: invalid value '%s' (allowed: auto, libsodium, libargon2)",
                 c->password_hasher);
        return -1;
    }
    const char *t = c->mail_transport;
    if (strcmp(t, "smtp") != 0 && strcmp(t, "webhook") != 0 && strcmp(t, "none") != 0) {
        snprintf(err, errlen, "mail_transport: invalid value '%s' (allowed: smtp, webhook, none)",
                 t);
        return -1;
    }
    if (strcmp(t, "smtp") == 0 && strncmp(c->smtp_url, "smtp://", 7) != 0 &&
        strncmp(c->smtp_url, "smtps://", 8) != 0) {
        snprintf(err, errlen,
                 "smtp_url: invalid value '%s' (allowed: smtp://HOST:PORT or smtps://HOST:PORT; "
                 "required when mail_transport = smtp)",
                 c->smtp_url);
        return -1;
    }
    if (strcmp(t, "webhook") == 0 && c->webhook_url[0] == '\0') {
        snprintf(err, errlen, "webhook_url: required when mail_transport = webhook");
        return -1;
    }
    const char *urls[2] = {c->webhook_url, c->events_url};
    const char *names[2] = {"webhook_url", "events_url"};
    for (int i = 0; i < 2; i++) {
        if (urls[i][0] != '\0' && strncmp(urls[i], "http://", 7) != 0 &&
            strncmp(urls[i], "https://", 8) != 0) {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: empty, http://… or https://…)",
                     names[i], urls[i]);
            return -1;
        }
    }
    if (c->webhook_url[0] != '\0' || c->events_url[0] != '\0') {
        unsigned char key[256];
        size_t klen;
        int bad = config_webhook_key(c->webhook_secret, key, sizeof(key), &klen) != 0;
        sodium_memzero(key, sizeof(key));
        if (bad) {
            snprintf(err, errlen,
                     "webhook_secret: invalid or missing (allowed: whsec_ + base64 of at least 24 "
                     "bytes; required when webhook_url or events_url is set)");
            return -1;
        }
    }
    return 0;
}

void config_link_prefix(const struct config *c, int reset, char *out, size_t outlen)
{
    const char *set = reset ? c->reset_url : c->verify_url;
    if (set != NULL && set[0] != '\0')
        snprintf(out, outlen, "%s", set);
    else
        snprintf(out, outlen, "%s%s", c->public_url, reset ? "/reset?token=" : "/verify?token=");
}

int config_webhook_key(const char *secret, unsigned char *out, size_t outmax, size_t *outlen)
{
    static const char pre[] = "whsec_";
    if (secret == NULL || strncmp(secret, pre, sizeof(pre) - 1) != 0)
        return -1;
    const char *b64 = secret + sizeof(pre) - 1;
    const char *end;
    if (sodium_base642bin(out, outmax, b64, strlen(b64), NULL, outlen, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        *end != '\0' || *outlen < 24)
        return -1;
    return 0;
}

/* Copy url into b with the password of user:password@ replaced by ***. */
static void config_put_masked_url(struct buf *b, const char *url)
{
    const char *scheme = strstr(url, "://");
    const char *at = strchr(url, '@');
    if (scheme != NULL && at != NULL && at > scheme) {
        const char *colon = memchr(scheme + 3, ':', (size_t)(at - (scheme + 3)));
        if (colon != NULL) {
            buf_append(b, url, (size_t)(colon - url) + 1);
            buf_puts(b, "***");
            buf_puts(b, at);
            return;
        }
    }
    const char *pw = strstr(url, "password=");
    if (pw != NULL) {
        buf_append(b, url, (size_t)(pw - url) + 9);
        buf_puts(b, "***");
        const char *amp = strchr(pw, '&');
        if (amp != NULL)
            buf_puts(b, amp);
        return;
    }
    buf_puts(b, url);
}

char *config_dump(const struct config *c)
{
    struct buf b = {0};
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    const char *base = (const char *)c;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &config_keys[i];
        buf_printf(&b, "%s = ", k->name);
        switch (k->type) {
        case CT_INT:
        case CT_SIZE:
            buf_printf(&b, "%ld", *(const long *)(base + k->offset));
            break;
        case CT_BOOL:
            buf_puts(&b, *(const int *)(base + k->offset) ? "on" : "off");
            break;
        case CT_STR:
        case CT_CIDRS:
        case CT_ALG: {
            const char *s = *(char *const *)(const void *)(base + k->offset);
            if (s == NULL)
                s = "";
            if (strcmp(k->name, "database_url") == 0 || strcmp(k->name, "redis_url") == 0 ||
                strcmp(k->name, "smtp_url") == 0)
                config_put_masked_url(&b, s);
            else if ((strcmp(k->name, "smtp_password") == 0 ||
                      strcmp(k->name, "webhook_secret") == 0) &&
                     s[0] != '\0')
                buf_puts(&b, "***");
            else
                buf_puts(&b, s);
            break;
        }
        case CT_RATE: {
            const struct config_rate *r =
                (const struct config_rate *)(const void *)(base + k->offset);
            buf_printf(&b, "%ld/%ld", r->count, r->window);
            break;
        }
        case CT_LEVEL:
            buf_puts(&b, levels[c->log_level]);
            break;
        case CT_FORMAT:
            buf_puts(&b, c->log_format == LOG_FORMAT_JSON ? "json" : "text");
            break;
        case CT_MODE:
            buf_printf(&b, "%04lo", (unsigned long)*(const long *)(base + k->offset));
            break;
        }
        buf_putc(&b, '\n');
    }
    return b.data;
}

int config_metrics_allowed(const struct config *c, int family, const unsigned char *addr)
{
    for (size_t i = 0; i < c->metrics_cidr_count; i++) {
        const struct config_cidr *r = &c->metrics_cidrs[i];
        if (r->family != family)
            continue;
        int bits = r->prefix;
        int full = bits / 8, rest = bits % 8;
        if (memcmp(r->addr, addr, (size_t)full) != 0)
            continue;
        if (rest != 0) {
            unsigned char mask = (unsigned char)(0xff << (8 - rest));
            if ((r->addr[full] & mask) != (addr[full] & mask))
                continue;
        }
        return 1;
    }
    return 0;
}

void config_free(struct config *c)
{
    free(c->database_url);
    free(c->redis_url);
    free(c->jwt_keys);
    free(c->jwt_issuer);
    free(c->jwt_audience);
    free(c->jwt_alg);
    free(c->metrics_allow);
    free(c->audit_spool);
    free(c->client_scopes);
    free(c->password_hasher);
    char **life[] = {&c->public_url,  &c->verify_url, &c->reset_url,      &c->mail_transport,
                     &c->smtp_url,    &c->smtp_user,  &c->smtp_password,  &c->mail_from,
                     &c->webhook_url, &c->events_url, &c->webhook_secret, &c->secrets_key};
    for (size_t i = 0; i < sizeof(life) / sizeof(life[0]); i++) {
        if (*life[i] != NULL && (life[i] == &c->smtp_password || life[i] == &c->webhook_secret))
            sodium_memzero(*life[i], strlen(*life[i]));
        free(*life[i]);
    }
    memset(c, 0, sizeof(*c));
}
