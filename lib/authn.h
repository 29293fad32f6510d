/* authn: who is calling (bearer-token authentication through the
 * verified-token cache) and the cached reads behind it (session and user
 * profile in L1/L2, the JWKS document), with the invalidations that keep
 * every worker's caches right.
 *
 * The keys ("t:", "s:", "u:", "jwks") are listed in lib/cache.h. Writes of
 * the use-case modules invalidate through authn_session_gone() and
 * authn_user_changed().
 *
 * Beside lib/accounts.h, whose struct accounts, request context and
 * statuses it uses (accounts.h does not include this header).
 *
 * Thread-safety: all functions may run concurrently; they read struct
 * accounts (the key set under its read-write lock) and go through L1 and
 * L2, which are thread-safe. */
#ifndef ACCESS_AUTHN_H
#define ACCESS_AUTHN_H

#include <stdint.h>

#include "accounts.h"
#include "buf.h"
#include "cache.h"

/* Verify a bearer token and that its session is live, through L1 (verified
 * tokens, sessions), L2 and PostgreSQL. When profile is not NULL it also
 * receives the user's profile: the ready JSON of GET /me with its ETag and
 * version (a reference the caller releases with cache_value_release()). */
enum accounts_status authn_authenticate(struct accounts *a, struct accounts_req *r,
                                        const char *token, size_t len,
                                        struct accounts_principal *out,
                                        struct cache_value **profile);
/* The public JWK set (from L1; rebuilt after a key reload). A reference
 * the caller releases. */
struct cache_value *authn_jwks(struct accounts *a);
/* The profile JSON of u, as signup, GET /me and PATCH /me return it. */
void authn_user_json(struct buf *b, const struct accounts_user *u);
/* The cached profile value of u (one reference, released by the caller). */
struct cache_value *authn_profile_value(const struct accounts_user *u);
/* A session is no longer live: every worker and host refuses its tokens. */
void authn_session_gone(struct accounts *a, const char *sid);
/* The profile of uid changed to version (v the new profile, or NULL: a
 * tombstone makes older cached copies stale in every worker). */
void authn_user_changed(struct accounts *a, const char *uid, struct cache_value *v,
                        int64_t version);

#endif
