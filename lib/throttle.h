/* throttle: the per-account login throttle of SPEC §9.
 *
 * After `max` failed password (or second-factor) attempts on one account
 * within `window` seconds (a fixed window opened by the first counted
 * attempt), every further attempt on that account is refused, from any
 * client address, until the window has passed.
 *
 * Atomic under concurrency: an attempt first TAKES a slot (one Redis Lua
 * script) before its password is checked; the script keeps two counters,
 * F failures in the window and P attempts being checked, and grants a slot
 * only while F + P < max (P++); a wrong password then turns its slot into
 * a failure (P--, F++, the window opens with the first), a correct one
 * gives it back (P--). So F never passes max, however many attempts run in
 * parallel. With F >= max the attempt is refused (429, Retry-After = what
 * is left of the window); with F + P >= max it is BUSY: the caller waits
 * (polls) for a slot within its own deadline, so concurrent correct logins
 * only queue. P carries a 60 s expiry, renewed by every take, against
 * slots a crashed worker never gave back.
 *
 * Keys: "u:<user id>" for accounts, "e:<keyed BLAKE2b of the lowercased
 * email>" for emails that have none (same treatment, nothing revealed, no
 * email in Redis). The BLAKE2b key is the caller's (derived from the
 * signing key: the same on every host).
 *
 * Redis away (none configured, kv_acquire NULL, an error): each process
 * counts alone with a limit of max(1, floor(max/W)) for W workers, so the
 * machine as a whole stays within max (unless max < W); the shared counter
 * is used again as soon as Redis answers.
 *
 * Thread-safety: every function may run on any thread. */
#ifndef ACCESS_THROTTLE_H
#define ACCESS_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

#include "kv.h"

#define THROTTLE_KEY_MAX 80

struct throttle_options {
    struct kv_pool *kv; /* NULL: local only; not owned */
    const char *prefix; /* Redis key prefix, e.g. "access:lt:" (<= 31 bytes) */
    long max;           /* failures per window (>= 1) */
    long window;        /* seconds (>= 1) */
    long workers;       /* W, for the local limit */
    size_t max_entries; /* local table bound; 0 = 65536 */
    unsigned char email_key[32];
};

struct throttle_verdict {
    int allowed;        /* 1: go on (a slot is taken); 0: refused or busy */
    int busy;           /* every slot is being checked: try again shortly */
    long retry_after_s; /* refused: seconds until the window ends (>= 1) */
    int first;          /* refused, and the first refusal of this window */
    int local;          /* counted by this process (Redis did not answer) */
};

struct throttle;

/* NULL (logged) on a bad option. Copies the options (the key is wiped on
 * destroy). */
struct throttle *throttle_create(const struct throttle_options *o);
/* The key of an account (user_id not NULL) or of an email without one. */
void throttle_key(const struct throttle *t, const char *user_id, const char *email,
                  char out[THROTTLE_KEY_MAX]);
/* Take a slot for one attempt on key. Always fills v (local counting when
 * Redis fails). */
void throttle_take(struct throttle *t, const char *key, struct throttle_verdict *v);
/* The attempt v allowed is judged: failed (a wrong password) counts as a
 * failure, otherwise (correct, or not judged) its slot is given back; where
 * it was taken. */
void throttle_done(struct throttle *t, const char *key, const struct throttle_verdict *v,
                   int failed);
/* Forget key's window (a password reset). */
void throttle_clear(struct throttle *t, const char *key);
/* Free (no thread may still use it; the kv pool is not closed). NULL ok. */
void throttle_destroy(struct throttle *t);

/* The Lua script (exposed for tests): KEYS[1] failures, KEYS[2] attempts
 * being checked, KEYS[3] "first refusal" flag; ARGV op ("take", "fail",
 * "give", "clear"), max, window ms. take returns {1 allowed | 0 refused |
 * 2 busy, pttl ms, first}; the others {1, 0, 0}. */
extern const char throttle_script[];

#endif
