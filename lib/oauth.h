/* oauth: the OAuth 2.0 endpoints' use cases (SPEC §11): the
 * client-credentials grant (RFC 6749 §4.4) with private_key_jwt client
 * authentication (RFC 7523 §2.2, checks in lib/assertion.h), token
 * introspection (RFC 7662), revocation (RFC 7009), server metadata
 * (RFC 8414), and the verification of client access tokens for the admin
 * routes.
 *
 * Client tokens: claims iss aud sub=client_id client_id scope jti iat exp,
 * signed by the service key; jti is a UUIDv7 so its time orders it against
 * the client's tokens_after (lib/clients.h). They are refused once the
 * client is deleted, a key of it revoked after they were issued, or they
 * themselves revoked (a row in revoked_client_tokens until exp, cached
 * under "j:<jti>" and published like a session).
 *
 * Thread-safety: all functions may run concurrently. */
#ifndef ACCESS_OAUTH_H
#define ACCESS_OAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "accounts.h"
#include "assertion.h"
#include "buf.h"
#include "clients.h"
#include "db.h"
#include "form.h"
#include "jwt.h"

enum oauth_stmt { OA_REVOKE_JTI = 0, OA_JTI_REVOKED, OA_REFRESH_LOOKUP, OAUTH_STMT__COUNT };
extern const struct db_stmt oauth_statements[OAUTH_STMT__COUNT];

/* RFC 6749 §5.2 errors (and the two statuses that are not OAuth's). */
enum oauth_error {
    OAUTH_OK = 0,
    OAUTH_INVALID_REQUEST,
    OAUTH_INVALID_CLIENT, /* 401 + WWW-Authenticate */
    OAUTH_INVALID_GRANT,
    OAUTH_UNSUPPORTED_GRANT_TYPE,
    OAUTH_INVALID_SCOPE,
    OAUTH_UNAVAILABLE, /* 503 */
    OAUTH_INTERNAL,    /* 500 */
};

#define OAUTH_ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

struct oauth {
    struct accounts *a;
    struct assertion_jti *jti; /* replay guard (Redis + local fallback) */
    /* Accepted assertion audiences: public_url, jwt_issuer, the token URL. */
    char issuer[520];
    char token_url[540];
    const char *auds[3];
};

/* Set up o over a (whose cfg, caches and pools are set) with a jti guard
 * over kv (may be NULL) and the host's table jti_table (NULL: one of this
 * process). 0, or -1 on out-of-memory. */
int oauth_init(struct oauth *o, struct accounts *a, struct kv_pool *kv, const char *redis_prefix,
               struct assertion_jti_table *jti_table) __attribute__((warn_unused_result));
void oauth_destroy(struct oauth *o);

/* The error code's name ("invalid_client"); "" for OAUTH_OK. */
const char *oauth_error_name(enum oauth_error e);

/* Authenticate the client of form f (client_assertion_type,
 * client_assertion, optional client_id that must match): 0 with *client
 * filled, or the error with *desc. */
enum oauth_error oauth_client_auth(struct oauth *o, struct accounts_req *r, const struct form *f,
                                   struct clients_record *client, const char **desc);
/* POST /oauth/token for the authenticated client: appends the token JSON. */
enum oauth_error oauth_grant(struct oauth *o, struct accounts_req *r, const struct form *f,
                             const struct clients_record *client, struct buf *out,
                             const char **desc);
/* POST /oauth/introspect: appends {"active":…} for token (any kind). */
enum oauth_error oauth_introspect(struct oauth *o, struct accounts_req *r, const char *token,
                                  struct buf *out);
/* POST /oauth/revoke: revokes token (a refresh token or user access token:
 * its session; a client token: that token). Unknown tokens are fine. */
enum oauth_error oauth_revoke(struct oauth *o, struct accounts_req *r,
                              const struct clients_record *client, const char *token);
/* RFC 8414 metadata of public_url. */
void oauth_metadata(const struct config *cfg, struct buf *out);

/* A client access token of a live client (not revoked, not older than its
 * client's last key revocation): ACC_OK with the claims, ACC_INVALID_TOKEN,
 * ACC_UNAVAILABLE. */
enum accounts_status oauth_verify_client_token(struct oauth *o, struct accounts_req *r,
                                               const char *token, size_t len,
                                               struct jwt_client_claims *out);

#endif
