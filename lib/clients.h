/* clients: API clients and their Ed25519 keys (SPEC §11, §12): the use
 * cases behind /api/v1/access/clients and the `client` subcommands, and
 * the cached client record the OAuth endpoints authenticate against.
 *
 * A client belongs to a user (or to nobody, when made on the command line:
 * the only way to the admin scope). Only public keys are stored; a key the
 * service generates is handed out once, as a private JWK in the answer,
 * then wiped. kid is the RFC 7638 thumbprint (keys_thumbprint()).
 *
 * The record (owner, scopes, live keys, the time before which its tokens
 * are refused) is cached under "c:<id>" in L1 and L2 like a session;
 * deleting the client, adding or revoking a key publishes the key on the
 * invalidation channel (reqdb_publish()), so every worker and host drops
 * its copy within the pub/sub delay.
 *
 * Results are enum accounts_status; ACC_INVALID fills r->code/detail/field.
 * Thread-safety: all functions may run concurrently. */
#ifndef ACCESS_CLIENTS_H
#define ACCESS_CLIENTS_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "accounts.h"
#include "buf.h"
#include "db.h"
#include "keys.h"

#define CLIENTS_MAX_KEYS   10  /* live keys per client */
#define CLIENTS_SCOPES_MAX 256 /* bytes of the space-separated scope list */

enum clients_stmt {
    CL_INSERT = 0,
    CL_PAGE,
    CL_DELETE,
    CL_DELETE_ANY,
    CL_KEY_ADD,
    CL_KEY_REVOKE,
    CL_LOAD,
    CL_LIST_ALL,
    CLIENTS_STMT__COUNT
};
extern const struct db_stmt clients_statements[CLIENTS_STMT__COUNT];

/* A client as the OAuth endpoints see it (from the cache). */
struct clients_record {
    char id[37];
    char owner[37]; /* "" for a command-line client */
    char scopes[CLIENTS_SCOPES_MAX + 1];
    int64_t version;
    int64_t tokens_after_ms; /* tokens whose jti time is not after this are refused */
    size_t nkeys;
    struct {
        char kid[KEYS_KID_LEN + 1];
        unsigned char pk[32];
    } keys[CLIENTS_MAX_KEYS];
};

/* Create a client of owner (NULL: a command-line client, which may have
 * the admin scope) named name with scopes (space-separated; NULL: all of
 * client_scopes) and public_jwk (NULL: the service makes the key pair).
 * Appends the client JSON (SPEC §11) to out, with "private_jwk" when the
 * service made the key. Writes client_created. */
enum accounts_status clients_create(struct accounts *a, struct accounts_req *r, const char *owner,
                                    const char *name, size_t name_len, const char *scopes,
                                    json_object *public_jwk, struct buf *out);
/* A page of owner's clients, newest first (cursor as listing_page()). */
enum accounts_status clients_list(struct accounts *a, struct accounts_req *r, const char *owner,
                                  const char *cursor, long limit, struct buf *out);
/* Delete owner's client id (owner NULL: any client; the command line).
 * ACC_NOT_FOUND for an unknown client or another user's. Writes
 * client_deleted; its tokens are refused from then on. */
enum accounts_status clients_delete(struct accounts *a, struct accounts_req *r, const char *owner,
                                    const char *id, size_t id_len);
/* Add a key (public_jwk, or made here) to owner's client id; appends
 * {"kid":…[,"private_jwk":…]}. Writes client_key_added. */
enum accounts_status clients_add_key(struct accounts *a, struct accounts_req *r, const char *owner,
                                     const char *id, size_t id_len, json_object *public_jwk,
                                     struct buf *out);
/* Revoke key kid of owner's client id: assertions signed by it are refused,
 * and so are the client's tokens issued up to now. Writes
 * client_key_revoked. */
enum accounts_status clients_revoke_key(struct accounts *a, struct accounts_req *r,
                                        const char *owner, const char *id, size_t id_len,
                                        const char *kid, size_t kid_len);
/* Every client (the command line's `client list`), one JSON object a line. */
enum accounts_status clients_list_all(struct accounts *a, struct accounts_req *r, struct buf *out);
/* The cached record of client id: ACC_OK, ACC_NOT_FOUND (unknown,
 * deleted, or its owner's account disabled), ACC_UNAVAILABLE. */
enum accounts_status clients_lookup(struct accounts *a, struct accounts_req *r, const char *id,
                                    struct clients_record *out);

/* Pure helpers, unit-tested. */
/* The key of an OKP/Ed25519 public JWK (no "d" allowed): 0 with pk, or -1
 * with why. */
int clients_parse_jwk(json_object *jwk, unsigned char pk[32], char *why, size_t whylen)
    __attribute__((warn_unused_result));
/* Whether every scope of want (space-separated, non-empty) is in allowed
 * (space-separated). */
int clients_scopes_subset(const char *want, const char *allowed);
/* Cached record text <-> struct: "<version> <tokens_after_ms> <owner|->\n
 * <scopes>\n" then "<kid> <hex pk>\n" per key. */
void clients_record_encode(const struct clients_record *rec, struct buf *out);
int clients_record_decode(const char *s, size_t len, struct clients_record *out)
    __attribute__((warn_unused_result));

#endif
