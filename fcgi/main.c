/* access.fcgi: entry point. Subcommands:
 *   access.fcgi [serve] [-c FILE] [--listen unix:PATH|HOST:PORT]
 *   access.fcgi check-config [-c FILE]
 *   access.fcgi migrate [-c FILE] [--dir DIR]
 *   access.fcgi keygen [--rotate] FILE
 *   access.fcgi client create --name NAME [--scope S]... [-c FILE]
 *   access.fcgi client list [-c FILE]
 *   access.fcgi client delete ID [-c FILE]
 *   access.fcgi routes
 *   access.fcgi version
 * The file comes from -c, else $ACCESS_CONFIG, else none (environment only).
 * Configuration errors exit 2 with one line naming key, value and range. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "clients.h"
#include "config.h"
#include "keys.h"
#include "secretbox.h"
#include "l2.h"
#include "reqdb.h"
#include "router.h"
#include "worker.h"
#include "log.h"
#include "migrate.h"
#include "net.h"
#include "password.h"
#include "supervisor.h"

#ifndef ACCESS_VERSION
#define ACCESS_VERSION "dev"
#endif

extern char **environ;

struct main_args {
    const char *cmd;
    const char *config;
    const char *listen;
    const char *dir;
    const char *file;
    const char *arg2; /* client delete ID */
    const char *name; /* client create --name */
    char scopes[256]; /* client create --scope, space-separated */
    int rotate;
    int secrets; /* keygen --secrets: a secrets_key file, not a JWK set */
};

static void main_usage(FILE *out)
{
    fprintf(out, "usage: access.fcgi [serve] [-c FILE] [--listen unix:PATH|HOST:PORT]\n"
                 "       access.fcgi check-config [-c FILE]\n"
                 "       access.fcgi migrate [-c FILE] [--dir DIR]\n"
                 "       access.fcgi keygen [--rotate] FILE\n"
                 "       access.fcgi keygen --secrets FILE\n"
                 "       access.fcgi client create --name NAME [--scope S]... [-c FILE]\n"
                 "       access.fcgi client list [-c FILE]\n"
                 "       access.fcgi client delete ID [-c FILE]\n"
                 "       access.fcgi routes\n"
                 "       access.fcgi version\n");
}

static int main_parse_args(int argc, char **argv, struct main_args *a)
{
    memset(a, 0, sizeof(*a));
    a->cmd = "serve";
    a->dir = "sql";
    a->config = getenv("ACCESS_CONFIG");
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if ((strcmp(s, "-c") == 0 || strcmp(s, "--config") == 0) && i + 1 < argc) {
            a->config = argv[++i];
        } else if (strcmp(s, "--listen") == 0 && i + 1 < argc) {
            a->listen = argv[++i];
        } else if (strcmp(s, "--dir") == 0 && i + 1 < argc) {
            a->dir = argv[++i];
        } else if (strcmp(s, "--name") == 0 && i + 1 < argc) {
            a->name = argv[++i];
        } else if (strcmp(s, "--scope") == 0 && i + 1 < argc) {
            size_t n = strlen(a->scopes);
            snprintf(a->scopes + n, sizeof(a->scopes) - n, "%s%s", n ? " " : "", argv[++i]);
        } else if (strcmp(s, "--rotate") == 0) {
            a->rotate = 1;
        } else if (strcmp(s, "--secrets") == 0) {
            a->secrets = 1;
        } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            main_usage(stdout);
            exit(0);
        } else if (s[0] != '-' && i == 1) {
            a->cmd = s;
        } else if (s[0] != '-' && a->file == NULL) {
            a->file = s;
        } else if (s[0] != '-' && a->arg2 == NULL) {
            a->arg2 = s;
        } else {
            fprintf(stderr, "access: unexpected argument '%s'\n", s);
            main_usage(stderr);
            return -1;
        }
    }
    return 0;
}

/* Defaults, then the file, then the environment, then validation. */
static int main_load_config(const struct main_args *a, struct config *cfg)
{
    char err[600];
    config_defaults(cfg);
    if (a->config != NULL && config_load_file(cfg, a->config, err, sizeof(err)) != 0)
        goto fail;
    if (config_apply_env(cfg, environ, err, sizeof(err)) != 0)
        goto fail;
    if (config_validate(cfg, err, sizeof(err)) != 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "access: configuration error: %s\n", err);
    return -1;
}

/* password_hasher = auto: time both implementations here, before the fork,
 * so every worker (restarted ones too) uses the same one (lib/password.h). */
static int main_choose_hasher(struct config *cfg)
{
    char err[200];
    double ms[2];
    struct password_params pp = {.t_cost = (unsigned)cfg->argon2_time_cost,
                                 .m_kib = (unsigned)cfg->argon2_memory_kib,
                                 .parallelism = (unsigned)cfg->argon2_parallelism};
    if (strcmp(cfg->password_hasher, "auto") != 0)
        return 0;
    enum password_impl impl = password_calibrate(&pp, ms);
    log_msg(LOG_INFO,
            "password_hasher auto: %s (best of two hashes: libsodium %.0f ms, libargon2 %.0f ms)",
            password_impl_name(impl), ms[PASSWORD_IMPL_LIBSODIUM], ms[PASSWORD_IMPL_LIBARGON2]);
    if (config_set(cfg, "password_hasher", password_impl_name(impl), err, sizeof(err)) != 0) {
        fprintf(stderr, "access: %s\n", err);
        return -1;
    }
    return 0;
}

static int main_serve(const struct main_args *a, struct config *cfg)
{
    char err[300];
    struct keyset ks;
    int fd;
    /* Refuse to start without a usable signing key rather than fail later. */
    if (keys_load(cfg->jwt_keys, &ks, err, sizeof(err)) != 0) {
        fprintf(stderr, "access: %s\n", err);
        return 2;
    }
    keys_wipe(&ks);
    if (main_choose_hasher(cfg) != 0)
        return 2;
    if (a->listen != NULL) {
        fd = net_listen(a->listen, 1024, (unsigned)cfg->socket_mode, err, sizeof(err));
        if (fd < 0) {
            fprintf(stderr, "access: %s\n", err);
            return 1;
        }
    } else if (net_is_listening(0)) {
        fd = 0;
    } else {
        fprintf(stderr, "access: fd 0 is not a listening socket: start under spawn-fcgi or "
                        "lighttpd, or pass --listen unix:PATH|HOST:PORT\n");
        return 2;
    }
    return supervisor_run(cfg, fd);
}

/* `client create|list|delete` (SPEC §12): the only way to an admin client.
 * Talks to PostgreSQL directly and, when Redis is configured, publishes a
 * deletion like the workers do, so theirs caches drop the client. */
static int main_client(const struct main_args *args, const struct config *cfg)
{
    char err[300];
    struct buf out = {0};
    struct arena arena;
    struct accounts a;
    struct kv_pool *kv = NULL;
    int rc = 1;
    struct db_pool_options dbo = {.conninfo = cfg->database_url,
                                  .size = 1,
                                  .statement_timeout_ms = cfg->db_statement_timeout_ms,
                                  .slow_ms = cfg->db_slow_query_ms,
                                  .prepared = 0,
                                  .stmts = reqdb_statements(),
                                  .nstmts = REQDB_STMT__COUNT};
    struct cache_options co = {.max_entries = 16, .max_bytes = 65536, .ttl_ms = 1000};
    memset(&a, 0, sizeof(a));
    arena_init(&arena, 4096);
    a.cfg = cfg;
    a.db = db_pool_create(&dbo);
    pthread_rwlock_init(&a.keys_lock, NULL);
    if (cfg->redis_url != NULL && cfg->redis_url[0] != '\0')
        kv = kv_pool_create(cfg->redis_url, 1, 1000, err, sizeof(err));
    struct l2_options lo = {.kv = kv,
                            .ttl_ms = cfg->l2_ttl * 1000,
                            .lock_ms = 2000,
                            .wait_ms = 100,
                            .prefix = WORKER_CACHE_PREFIX,
                            .channel = WORKER_CACHE_CHANNEL};
    a.l1 = cache_create(&co, NULL);
    a.l2 = l2_create(&lo);
    struct accounts_req r = {.arena = &arena, .ip = "", .user_agent = "access.fcgi client"};
    enum accounts_status st = ACC_INVALID;
    const char *what = args->file != NULL ? args->file : "";
    if (strcmp(what, "create") == 0 && args->name != NULL) {
        st = clients_create(&a, &r, NULL, args->name, strlen(args->name),
                            args->scopes[0] ? args->scopes : NULL, NULL, &out);
        if (st == ACC_OK)
            buf_putc(&out, '\n');
    } else if (strcmp(what, "list") == 0) {
        st = clients_list_all(&a, &r, &out);
    } else if (strcmp(what, "delete") == 0 && args->arg2 != NULL) {
        st = clients_delete(&a, &r, NULL, args->arg2, strlen(args->arg2));
    } else {
        main_usage(stderr);
        rc = 2;
        goto out;
    }
    if (st == ACC_OK) {
        fwrite(out.data != NULL ? out.data : "", 1, out.len, stdout);
        rc = 0;
    } else {
        fprintf(stderr, "access: client %s: %s\n", what,
                st == ACC_INVALID       ? (r.detail ? r.detail : "invalid")
                : st == ACC_NOT_FOUND   ? "no such client"
                : st == ACC_UNAVAILABLE ? "PostgreSQL is unreachable"
                                        : "failed");
    }
out:
    if (out.data != NULL)
        sodium_memzero(out.data, out.len); /* a private JWK */
    buf_free(&out);
    l2_destroy(a.l2);
    cache_destroy(a.l1);
    kv_pool_destroy(kv);
    db_pool_destroy(a.db);
    pthread_rwlock_destroy(&a.keys_lock);
    arena_free(&arena);
    return rc;
}

int main(int argc, char **argv)
{
    struct main_args a;
    struct config cfg;
    int rc = 2;
    char err[600];

    if (main_parse_args(argc, argv, &a) != 0)
        return 2;
    if (sodium_init() < 0) {
        fprintf(stderr, "access: libsodium failed to initialise\n");
        return 1;
    }
    if (strcmp(a.cmd, "version") == 0) {
        printf("access %s\n", ACCESS_VERSION);
        return 0;
    }
    if (strcmp(a.cmd, "routes") == 0) { /* METHOD PATH lines: the OpenAPI parity test */
        const char *m, *p;
        for (size_t i = 0; router_route(i, &m, &p) == 0; i++)
            printf("%s %s\n", m, p);
        return 0;
    }
    if (strcmp(a.cmd, "keygen") == 0) {
        char kid[KEYS_KID_LEN + 1];
        if (a.file == NULL || (a.secrets && a.rotate)) {
            main_usage(stderr);
            return 2;
        }
        if (a.secrets) {
            if (secretbox_keygen(a.file, err, sizeof(err)) != 0) {
                fprintf(stderr, "access: keygen --secrets: %s\n", err);
                return 1;
            }
            printf("secrets key written to %s\n", a.file);
            return 0;
        }
        if (keys_generate(a.file, a.rotate, kid, err, sizeof(err)) != 0) {
            fprintf(stderr, "access: keygen: %s\n", err);
            return 1;
        }
        printf("%s key %s written to %s\n", a.rotate ? "new active" : "signing", kid, a.file);
        return 0;
    }
    if (main_load_config(&a, &cfg) != 0)
        return 2;
    log_init(cfg.log_level, cfg.log_format);
    if (strcmp(a.cmd, "check-config") == 0) {
        char *dump = config_dump(&cfg);
        fputs(dump, stdout);
        free(dump);
        printf("# configuration OK\n");
        rc = 0;
    } else if (strcmp(a.cmd, "migrate") == 0) {
        int n = migrate_run(cfg.database_url, a.dir, err, sizeof(err));
        if (n < 0) {
            fprintf(stderr, "access: migrate: %s\n", err);
            rc = 1;
        } else {
            printf("migrate: %d migration%s applied\n", n, n == 1 ? "" : "s");
            rc = 0;
        }
    } else if (strcmp(a.cmd, "client") == 0) {
        rc = main_client(&a, &cfg);
    } else if (strcmp(a.cmd, "serve") == 0) {
        rc = main_serve(&a, &cfg);
    } else {
        fprintf(stderr, "access: unknown command '%s'\n", a.cmd);
        main_usage(stderr);
    }
    config_free(&cfg);
    return rc;
}
