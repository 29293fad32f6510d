/* assertion: RFC 7523 client assertions (private_key_jwt, SPEC §11).
 *
 * assertion_parse() (pure) splits a compact JWS and reads what the checks
 * need: header alg (only EdDSA or Ed25519: "none", HS256 and the rest are
 * refused here) and kid; claims iss, sub, aud (a string or an array of up
 * to ASSERTION_MAX_AUD strings), exp, jti, and nbf/iat when present; the
 * 64-byte signature.
 *
 * assertion_check() (pure) checks a parsed assertion against a client
 * record at time now: iss = sub = the client id; aud names one of the
 * accepted audiences; exp not passed (ASSERTION_LEEWAY_S of leeway) and at
 * most ASSERTION_MAX_LIFETIME_S ahead; nbf not in the future; the
 * signature by the live key with that kid (or, without a kid, by any live
 * key of the client).
 *
 * The jti guard accepts each (client, jti) once until the assertion's exp
 * (+ leeway): Redis SET NX PX with the remaining lifetime, so across
 * workers and hosts; and always this host's table too (in the segment the
 * supervisor shares with every worker, or per process), so that while
 * Redis is away replays are still refused on this host (and a jti seen
 * while Redis was up is not accepted again here once it is down). The
 * table is bounded (buckets of 8 entries): when a bucket is full of live
 * entries Redis alone decides, and without Redis new assertions hashed to
 * it are refused (safe side) until some expire.
 *
 * Thread-safety: parse/check are pure; the guard is shared (mutex). */
#ifndef ACCESS_ASSERTION_H
#define ACCESS_ASSERTION_H

#include <stddef.h>
#include <stdint.h>

#include "clients.h"
#include "keys.h"
#include "kv.h"

#define ASSERTION_MAX_LEN        4096
#define ASSERTION_MAX_AUD        4
#define ASSERTION_FIELD_MAX      128 /* iss, sub, jti */
#define ASSERTION_AUD_MAX        512
#define ASSERTION_MAX_LIFETIME_S 300
#define ASSERTION_LEEWAY_S       30

struct assertion {
    char kid[KEYS_KID_LEN + 1]; /* "" when the header has none */
    char iss[ASSERTION_FIELD_MAX + 1];
    char sub[ASSERTION_FIELD_MAX + 1];
    char jti[ASSERTION_FIELD_MAX + 1];
    char aud[ASSERTION_MAX_AUD][ASSERTION_AUD_MAX + 1];
    size_t naud;
    int64_t exp;
    int64_t nbf;        /* 0 when absent */
    size_t signing_len; /* bytes of header.claims at the token's start */
    unsigned char sig[64];
};

/* 0 with out filled, or -1 with why (never quoting the token). */
int assertion_parse(const char *token, size_t len, struct assertion *out, char *why, size_t whylen)
    __attribute__((warn_unused_result));
/* 0 when the assertion (parsed from token) proves client at now, or -1
 * with why. auds: the accepted audiences. */
int assertion_check(const struct assertion *as, const char *token,
                    const struct clients_record *client, const char *const *auds, size_t naud,
                    int64_t now, char *why, size_t whylen) __attribute__((warn_unused_result));

enum assertion_jti_result {
    ASSERTION_JTI_FIRST = 0, /* accepted: never seen */
    ASSERTION_JTI_REPLAY,    /* seen before within its lifetime */
    ASSERTION_JTI_FULL,      /* no Redis, and the local bucket is full of live entries */
};

struct assertion_jti;
struct assertion_jti_table;
/* Bytes of a table for about entries entries, and its set-up in zeroed or
 * any memory (e.g. shm_alloc(), before fork: its mutex is process-shared
 * and robust). NULL mem gives NULL. */
size_t assertion_jti_table_size(size_t entries);
struct assertion_jti_table *assertion_jti_table_init(void *mem, size_t entries);
/* A guard over kv (NULL: local only) with Redis keys prefix + hash, using
 * shared as this host's table (NULL: its own of local_max entries, 0:
 * 65536). */
struct assertion_jti *assertion_jti_create(struct kv_pool *kv, const char *prefix,
                                           struct assertion_jti_table *shared, size_t local_max);
void assertion_jti_destroy(struct assertion_jti *g);
/* Record (client_id, jti) until exp (Unix s) + ASSERTION_LEEWAY_S, at
 * now_ms (Unix ms). */
enum assertion_jti_result assertion_jti_once(struct assertion_jti *g, const char *client_id,
                                             const char *jti, int64_t exp, int64_t now_ms)
    __attribute__((warn_unused_result));

#endif
