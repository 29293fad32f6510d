#include "supervisor.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "cache.h"
#include "hashgate.h"
#include "l2.h"
#include "log.h"
#include "metrics.h"
#include "shm.h"
#include "assertion.h"
#include "worker.h"

#define SUP_BACKOFF_MIN_MS 100
#define SUP_BACKOFF_MAX_MS 10000
#define SUP_STABLE_MS      2000
/* SIGKILL only after a worker's whole shutdown: the drain, the audit flush,
 * and a margin for the rest (pools closing, the janitor's last statement). */
#define SUP_STOP_MARGIN_MS 2000
#define SUP_STOP_MS        (WORKER_DRAIN_MS + WORKER_FLUSH_MS + SUP_STOP_MARGIN_MS)

struct sup_slot {
    pid_t pid; /* 0 when not running */
    int64_t started_ms;
    int64_t restart_at_ms; /* when to start it again (pid == 0) */
    long backoff_ms;
};

static void sup_noop(int sig)
{
    (void)sig;
}

static pid_t sup_spawn(const struct config *cfg, struct shm_state *shm, int listen_fd,
                       unsigned slot, const sigset_t *oldmask)
{
    pid_t pid = fork();
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, oldmask, NULL);
        _exit(worker_run(cfg, shm, listen_fd, slot));
    }
    if (pid < 0)
        log_msg(LOG_ERROR, "fork failed: %s", strerror(errno));
    return pid;
}

/* Client assertions' jti remembered on this host (6 MiB of the shared
 * segment): about 800 grants/s with 5-minute assertions before buckets
 * fill, and then Redis alone decides. */
#define SUP_JTI_ENTRIES 262144

int supervisor_run(const struct config *cfg, int listen_fd)
{
    char err[256];
    size_t n = (size_t)cfg->workers;
    struct shm_state *shm = shm_create((unsigned)cfg->hash_threads, (unsigned)n, err, sizeof(err));
    struct sup_slot *slots = xcalloc(n, sizeof(*slots));
    sigset_t set, old;
    struct sigaction sa;
    int64_t stop_deadline = 0;

    void *mreg = NULL, *l2mem = NULL, *jtimem = NULL;
    if (shm == NULL || (shm->cache = shm_alloc(cache_shared_size(), err, sizeof(err))) == NULL ||
        (l2mem = shm_alloc(l2_shared_size((unsigned)n), err, sizeof(err))) == NULL ||
        (mreg = shm_alloc(metrics_size((unsigned)n), err, sizeof(err))) == NULL ||
        (jtimem = shm_alloc(assertion_jti_table_size(SUP_JTI_ENTRIES), err, sizeof(err))) == NULL) {
        log_msg(LOG_ERROR, "%s", err);
        free(slots);
        return 1;
    }
    cache_shared_init(shm->cache);
    shm->l2 = l2_shared_init(l2mem, (unsigned)n);
    shm->jti = assertion_jti_table_init(jtimem, SUP_JTI_ENTRIES);
    shm->metrics = metrics_init(mreg, metrics_size((unsigned)n), (unsigned)n);
    if (shm->metrics == NULL) {
        log_msg(LOG_ERROR, "metrics registry setup failed");
        free(slots);
        return 1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sup_noop;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);

    log_msg(LOG_INFO, "supervisor %d starting %zu workers", (int)getpid(), n);
    for (size_t i = 0; i < n; i++) {
        slots[i].pid = sup_spawn(cfg, shm, listen_fd, (unsigned)i, &old);
        slots[i].started_ms = clock_now_ms();
    }
    for (;;) {
        struct timespec ts = {0, 50 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &ts);
        int64_t now = clock_now_ms();
        int draining = atomic_load(&shm->draining);
        if ((sig == SIGTERM || sig == SIGINT) && !draining) {
            log_msg(LOG_INFO, "supervisor: draining");
            atomic_store(&shm->draining, 1);
            draining = 1;
            stop_deadline = now + SUP_STOP_MS;
            for (size_t i = 0; i < n; i++)
                if (slots[i].pid > 0)
                    kill(slots[i].pid, SIGTERM);
        } else if (sig == SIGHUP) {
            for (size_t i = 0; i < n; i++)
                if (slots[i].pid > 0)
                    kill(slots[i].pid, SIGHUP);
        }
        /* Reap every dead worker; plan its restart unless draining. */
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0)
                break;
            for (size_t i = 0; i < n; i++) {
                if (slots[i].pid != pid)
                    continue;
                slots[i].pid = 0;
                if (draining)
                    break;
                int64_t lived = now - slots[i].started_ms;
                if (lived < SUP_STABLE_MS) {
                    slots[i].backoff_ms = clock_backoff_next(
                        slots[i].backoff_ms, SUP_BACKOFF_MIN_MS, SUP_BACKOFF_MAX_MS);
                } else {
                    slots[i].backoff_ms = 0;
                }
                slots[i].restart_at_ms = now + slots[i].backoff_ms;
                /* Its pool and queue died with it: give back its hash
                 * slots and queue places, zero its gauges. */
                hashgate_reclaim(shm->hash, (unsigned)i);
                l2_shared_reclaim(shm->l2, (unsigned)i);
                metrics_clear_gauges(shm->metrics, (unsigned)i);
                log_msg(LOG_WARN, "worker %d died (%s %d); restarting in %ld ms", (int)pid,
                        WIFSIGNALED(status) ? "signal" : "exit",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                        slots[i].backoff_ms);
                break;
            }
        }
        size_t alive = 0;
        for (size_t i = 0; i < n; i++) {
            if (slots[i].pid > 0) {
                alive++;
            } else if (!draining && now >= slots[i].restart_at_ms) {
                slots[i].pid = sup_spawn(cfg, shm, listen_fd, (unsigned)i, &old);
                slots[i].started_ms = now;
                if (slots[i].pid > 0) {
                    atomic_fetch_add(&shm->worker_restarts, 1);
                    alive++;
                }
            }
        }
        if (draining && alive == 0)
            break;
        if (draining && now >= stop_deadline) {
            for (size_t i = 0; i < n; i++)
                if (slots[i].pid > 0)
                    kill(slots[i].pid, SIGKILL);
            log_msg(LOG_WARN, "supervisor: workers killed after the drain deadline");
            break;
        }
    }
    log_msg(LOG_INFO, "supervisor: stopped");
    free(slots);
    return 0;
}
