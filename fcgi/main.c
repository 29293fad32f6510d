/* access.fcgi: entry point. Subcommands:
 *   access.fcgi [serve] [-c FILE] [--listen unix:PATH|HOST:PORT]
 *   access.fcgi check-config [-c FILE]
 *   access.fcgi migrate [-c FILE] [--dir DIR]
 *   access.fcgi keygen [--rotate] FILE
 *   access.fcgi version
 * The file comes from -c, else $ACCESS_CONFIG, else none (environment only).
 * Configuration errors exit 2 with one line naming key, value and range. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "keys.h"
#include "log.h"
#include "migrate.h"
#include "net.h"
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
    int rotate;
};

static void main_usage(FILE *out)
{
    fprintf(out, "usage: access.fcgi [serve] [-c FILE] [--listen unix:PATH|HOST:PORT]\n"
                 "       access.fcgi check-config [-c FILE]\n"
                 "       access.fcgi migrate [-c FILE] [--dir DIR]\n"
                 "       access.fcgi keygen [--rotate] FILE\n"
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
        } else if (strcmp(s, "--rotate") == 0) {
            a->rotate = 1;
        } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            main_usage(stdout);
            exit(0);
        } else if (s[0] != '-' && i == 1) {
            a->cmd = s;
        } else if (s[0] != '-' && a->file == NULL) {
            a->file = s;
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
    if (strcmp(a.cmd, "keygen") == 0) {
        char kid[KEYS_KID_LEN + 1];
        if (a.file == NULL) {
            main_usage(stderr);
            return 2;
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
    } else if (strcmp(a.cmd, "serve") == 0) {
        rc = main_serve(&a, &cfg);
    } else {
        fprintf(stderr, "access: unknown command '%s'\n", a.cmd);
        main_usage(stderr);
    }
    config_free(&cfg);
    return rc;
}
