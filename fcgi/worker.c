#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>
#include <sodium.h>

#include "app.h"
#include "arena.h"
#include "clock.h"
#include "handlers.h"
#include "http.h"
#include "janitor.h"
#include "log.h"
#include "reqdb.h"
#include "mail.h"
#include "outbox.h"
#include "reqthreads.h"
#include "secretbox.h"
#include "statements.h"
#include "totp.h"
#include "transport.h"

static void worker_noop_handler(int sig)
{
    (void)sig;
}

/* Signals: SIGTERM/SIGINT/SIGHUP are blocked in every thread and taken by
 * the main thread with sigtimedwait; SIGPIPE is ignored. Installed before
 * FCGX_Init so libfcgi keeps its hands off them. */
static void worker_signals(sigset_t *set)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = worker_noop_handler;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGCHLD);
    pthread_sigmask(SIG_SETMASK, set, NULL);
}

/* The checks behind /health and /health/ready (probe.h). */
static int worker_check_db(void *ctx, int64_t deadline)
{
    return db_ping(ctx, STMT_PING, deadline);
}

static int worker_check_kv(void *ctx, int64_t deadline)
{
    (void)deadline; /* the pool's own command timeout bounds a PING */
    return kv_ping(ctx);
}

/* db pool hook: every statement's duration into the registry. */
static void worker_observe_query(void *ctx, double ms, int slow)
{
    struct app *app = ctx;
    metrics_db_observe(app->metrics, app->slot, ms / 1000.0, slow);
}

int worker_run(const struct config *cfg, struct shm_state *shm, int listen_fd, unsigned slot)
{
    sigset_t set;
    struct app app = {.cfg = cfg, .shm = shm, .metrics = shm->metrics, .slot = slot};
    char err[256];
    size_t nthreads = (size_t)cfg->threads;
    struct reqthreads *threads = NULL;
    int status = 1;
    struct secretbox secrets; /* app.acc.secrets points here when loaded */
    char secrets_err[600] = "";

    /* Die with the supervisor instead of serving unsupervised. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    worker_signals(&set);
    if (FCGX_Init() != 0) {
        log_msg(LOG_ERROR, "FCGX_Init failed");
        return 1;
    }
    /* libcurl (the outbox's transports) is set up before any thread runs. */
    if (mail_global_init() != 0) {
        log_msg(LOG_ERROR, "curl_global_init failed");
        return 1;
    }
    struct transport *tr = transport_create(listen_fd, err, sizeof(err));
    if (tr == NULL) {
        log_msg(LOG_ERROR, "%s", err);
        return 1;
    }
    struct db_pool_options dbo = {
        .conninfo = cfg->database_url,
        /* + the threads finishing a request after its hash, + the audit
         * writer, the janitor and the outbox's delivery thread */
        .size = nthreads + (size_t)cfg->hash_threads + 3,
        .statement_timeout_ms = cfg->db_statement_timeout_ms,
        .slow_ms = cfg->db_slow_query_ms,
        .prepared = cfg->db_prepared,
        .stmts = statements_all(),
        .nstmts = STATEMENTS_COUNT,
        .observe = worker_observe_query,
        .observe_ctx = &app,
    };
    pthread_mutex_init(&app.sync_mu, NULL);
    app.db = db_pool_create(&dbo);
    app.db_probe = probe_create(worker_check_db, app.db);
    if (cfg->redis_url != NULL && cfg->redis_url[0] != '\0') {
        app.kv = kv_pool_create(cfg->redis_url, nthreads + (size_t)cfg->hash_threads + 1, 250, err,
                                sizeof(err));
        if (app.kv == NULL) {
            log_msg(LOG_ERROR, "%s", err);
            goto out;
        }
        app.kv_probe = probe_create(worker_check_kv, app.kv);
    }
    /* A request waiting for a hash hands its serving role to a spare thread
     * (reqthreads.h), so the queue's own bounds are the only ones. */
    app.hash = hashpool_create(shm, slot, (size_t)cfg->hash_threads, (int)cfg->hash_queue_max,
                               (int)cfg->hash_queue_max);
    if (accounts_init(&app.acc, cfg, app.db, app.hash, err, sizeof(err)) != 0) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    struct cache_options co = {.max_entries = cfg->l1_max_entries,
                               .max_bytes = cfg->l1_max_bytes,
                               .ttl_ms = cfg->l1_ttl * 1000};
    struct l2_options lo = {.kv = app.kv,
                            .shared = shm->l2,
                            .slot = slot,
                            .ttl_ms = cfg->l2_ttl * 1000,
                            .lock_ms = 2000,
                            .wait_ms = 100,
                            .prefix = WORKER_CACHE_PREFIX,
                            .channel = WORKER_CACHE_CHANNEL};
    app.l1 = cache_create(&co, shm->cache);
    app.l2 = l2_create(&lo);
    app.acc.l1 = app.l1;
    app.acc.l2 = app.l2;
    app.inv = invalidate_start(app.kv, WORKER_CACHE_CHANNEL, app.l1, app.l2);
    struct ratelimit_options ro = {
        .rate = {[RL_LOGIN] = cfg->ratelimit_login,
                 [RL_SIGNUP] = cfg->ratelimit_signup,
                 [RL_ANONYMOUS] = cfg->ratelimit_anonymous,
                 [RL_AUTHENTICATED] = cfg->ratelimit_authenticated,
                 [RL_TOKEN] = cfg->ratelimit_token,
                 [RL_RECOVER] = cfg->ratelimit_recover},
        .workers = cfg->workers,
        .kv = app.kv,
        .prefix = WORKER_RATELIMIT_PREFIX,
    };
    /* BENCH_BARE=1 (benchmarks only, not a configuration key): no rate
     * limiter and no metrics, to measure what the two cost. */
    const char *bench_bare = getenv("BENCH_BARE");
    int bare = bench_bare != NULL && strcmp(bench_bare, "1") == 0;
    app.rl = bare ? NULL : ratelimit_create(&ro);
    if (bare) {
        app.metrics = NULL;
        log_msg(LOG_WARN, "BENCH_BARE=1: rate limits and metrics are off in this worker");
    }
    struct audit_options ao = {.db = app.db,
                               .insert_stmt = STMT_AUDIT_INSERT,
                               .spool_path = cfg->audit_spool,
                               .spool_max_bytes = cfg->audit_spool_max_bytes};
    app.audit = audit_create(&ao, err, sizeof(err));
    if ((app.rl == NULL && !bare) || app.audit == NULL) {
        log_msg(LOG_ERROR, "%s", app.audit == NULL ? err : "rate limiter setup failed");
        goto out;
    }
    struct janitor_options jo = {.db = app.db,
                                 .stmt_base = STMT_JANITOR_DEAD_TOKENS,
                                 .interval_ms = cfg->janitor_interval * 1000,
                                 .session_retention_s = cfg->session_retention,
                                 .refresh_ttl_s = cfg->refresh_token_ttl,
                                 .audit_retention_days = cfg->audit_retention_days,
                                 .metrics = app.metrics,
                                 .slot = slot};
    app.janitor = janitor_start(&jo, err, sizeof(err));
    if (app.janitor == NULL) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    app.acc.audit = app.audit;
    if (oauth_init(&app.oauth, &app.acc, app.kv, WORKER_JTI_PREFIX, shm->jti) != 0) {
        log_msg(LOG_ERROR, "out of memory for the jti guard");
        goto out;
    }
    struct outbox_options oo = {.cfg = cfg,
                                .db = app.db,
                                .stmt_base = OUTBOX_STMT_BASE,
                                .metrics = app.metrics,
                                .slot = slot};
    if ((app.outbox = outbox_start(&oo, err, sizeof(err))) == NULL) {
        log_msg(LOG_ERROR, "outbox: %s", err);
        goto out;
    }
    app.acc.outbox = app.outbox;
    struct throttle_options to = {.kv = app.kv,
                                  .prefix = WORKER_THROTTLE_PREFIX,
                                  .max = cfg->login_failures_max,
                                  .window = cfg->login_failures_window,
                                  .workers = cfg->workers};
    {
        /* Emails without an account are keyed by a keyed hash: the same
         * key on every host (it follows the signing key). */
        static const char label[] = "access login throttle v1";
        pthread_rwlock_rdlock(&app.acc.keys_lock);
        crypto_generichash(to.email_key, sizeof(to.email_key), (const unsigned char *)label,
                           sizeof(label) - 1, app.acc.keys->k[app.acc.keys->active].sk, 32);
        pthread_rwlock_unlock(&app.acc.keys_lock);
    }
    app.throttle = throttle_create(&to);
    sodium_memzero(to.email_key, sizeof(to.email_key));
    if (app.throttle == NULL)
        goto out;
    app.acc.throttle = app.throttle;
    /* The second factor's key (SPEC §10). Without it the service runs, and
     * enrolment answers 503 with the reason in the log. */
    if (totp_init() != 0) {
        log_msg(LOG_ERROR, "liboath failed to initialise");
        goto out;
    }
    if (cfg->secrets_key[0] == '\0') {
        snprintf(secrets_err, sizeof(secrets_err), "secrets_key is not set in the configuration");
    } else if (secretbox_load(&secrets, cfg->secrets_key, secrets_err, sizeof(secrets_err)) == 0) {
        app.acc.secrets = &secrets;
    }
    if (app.acc.secrets == NULL) {
        app.acc.secrets_err = secrets_err;
        log_msg(LOG_WARN, "second factor unavailable: %s", secrets_err);
    }
    threads = reqthreads_start(&app, tr, nthreads, (size_t)cfg->hash_queue_max, err, sizeof(err));
    if (threads == NULL) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    hashpool_set_wait_hook(app.hash, reqthreads_wait_hook, threads);
    if (log_start_batching() != 0)
        log_msg(LOG_WARN, "worker %d: request log lines are not batched", (int)getpid());
    log_msg(LOG_INFO, "worker %d serving with %zu threads (web server keeps connections: %s)",
            (int)getpid(), nthreads, cfg->fastcgi_keep_conn ? "on" : "off");

    while (!atomic_load(&app.stopping)) {
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            atomic_store(&app.stopping, 1);
        } else if (sig == SIGHUP) {
            if (accounts_reload_keys(&app.acc, err, sizeof(err)) != 0)
                log_msg(LOG_ERROR, "worker %d: key reload failed, keeping the old keys: %s",
                        (int)getpid(), err);
            else
                log_msg(LOG_INFO, "worker %d: signing keys reloaded", (int)getpid());
        }
        if (getppid() == 1)
            atomic_store(&app.stopping, 1);
        app_metrics_sync(&app);
    }
    /* Drain: no new connections; threads finish the requests under way (and
     * any a kept connection still brings, closing it after the answer) and
     * leave once a poll brings nothing; the janitor leaves after its current
     * statement. */
    transport_stop_accepting(tr);
    janitor_signal_stop(app.janitor);
    size_t left = reqthreads_drain(threads, clock_ms() + WORKER_DRAIN_MS);
    if (left) {
        /* The stuck threads may still emit events: the shutdown spools what
         * is queued and makes every later event a synchronous spool append,
         * so an answer never goes out for an event that could be lost. */
        log_msg(LOG_WARN, "worker %d: %zu requests still running after the drain; exiting",
                (int)getpid(), left);
        if (audit_shutdown(app.audit, WORKER_FLUSH_MS) < 0)
            log_msg(LOG_ERROR, "worker %d: audit events could not be spooled", (int)getpid());
        log_flush();
        _exit(0);
    }
    reqthreads_free(threads);
    threads = NULL;
    transport_destroy(tr);
    tr = NULL;
    /* Events of the last requests reach PostgreSQL or the spool. */
    int flushed = audit_shutdown(app.audit, WORKER_FLUSH_MS);
    if (flushed != 0) {
        /* The writer is stuck in PostgreSQL (its batch is in the spool too;
         * the ids make the second insert a no-op): do not wait for it. */
        log_msg(flushed < 0 ? LOG_ERROR : LOG_WARN, "worker %d: audit writer %s; exiting",
                (int)getpid(), flushed < 0 ? "could not spool every event" : "still busy");
        log_flush();
        _exit(0);
    }
    status = 0;
out:
    if (threads != NULL) {
        atomic_store(&app.stopping, 1);
        (void)reqthreads_drain(threads, clock_ms() + WORKER_DRAIN_MS);
        reqthreads_free(threads);
    }
    transport_destroy(tr);
    janitor_stop(app.janitor);
    outbox_stop(app.outbox);
    throttle_destroy(app.throttle);
    secretbox_wipe(&secrets);
    invalidate_stop(app.inv);
    audit_destroy(app.audit);
    ratelimit_destroy(app.rl);
    l2_destroy(app.l2);
    cache_destroy(app.l1);
    log_stop_batching();
    oauth_destroy(&app.oauth);
    accounts_destroy(&app.acc);
    hashpool_destroy(app.hash);
    probe_free(app.kv_probe);
    probe_free(app.db_probe);
    kv_pool_destroy(app.kv);
    db_pool_destroy(app.db);
    return status;
}
