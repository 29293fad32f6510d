/* throttle: the per-account login throttle of SPEC §9.
 *
 * After `max` failed password (or second-factor) attempts on one account
 * within `window` seconds (a fixed window opened by the first counted
 * attempt), every further attempt on that account is refused, from any
 * client address, until the window has passed.
 *
 * Atomic under concurrency: an attempt first TAKES a slot (one Redis Lua
 * script: INCR, and PEXPIRE on the first), before the password is checked;
 * past `max` it is refused (and the slot handed back at once). A correct
 * password GIVES the slot back; a wrong one keeps it: the failure. So
 * parallel wrong attempts can never exceed `max`: each needs a slot before
 * its verdict exists. (A correct password may be refused while an attacker
 * holds every slot: that is what a throttle is.)
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
    int allowed;        /* 1: go on (a slot is taken); 0: refused */
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
/* The attempt v allowed succeeded (or could not be judged): give its slot
 * back where it was taken. */
void throttle_give(struct throttle *t, const char *key, const struct throttle_verdict *v);
/* Forget key's window (a password reset). */
void throttle_clear(struct throttle *t, const char *key);
/* Free (no thread may still use it; the kv pool is not closed). NULL ok. */
void throttle_destroy(struct throttle *t);

/* The Lua script (exposed for tests): KEYS[1] counter, KEYS[2] "first
 * refusal" flag; ARGV op ("take", "give", "clear"), max, window ms. take
 * returns {allowed, pttl ms, first}; give and clear {1, 0, 0}. */
extern const char throttle_script[];

#endif
