#include "jwt.h"

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <sodium.h>

#include "b64url.h"
#include "json.h"

static void jwt_put_b64(struct buf *out, const void *data, size_t n)
{
    size_t need = b64url_encoded_len(n);
    buf_reserve(out, need + 1);
    b64url_encode(out->data + out->len, need + 1, data, n);
    out->len += need;
}

/* Sign the compact claims JSON with the active key; append the token. */
static void jwt_sign_claims(const struct keyset *ks, const char *alg, const struct buf *claims,
                            struct buf *out)
{
    const struct keys_entry *k = &ks->k[ks->active];
    struct buf part = {0};
    unsigned char sig[crypto_sign_BYTES];
    size_t start = out->len;

    buf_printf(&part, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, k->kid);
    jwt_put_b64(out, part.data, part.len);
    buf_putc(out, '.');
    jwt_put_b64(out, claims->data, claims->len);
    crypto_sign_detached(sig, NULL, (const unsigned char *)out->data + start, out->len - start,
                         k->sk);
    buf_putc(out, '.');
    jwt_put_b64(out, sig, sizeof(sig));
    buf_free(&part);
}

void jwt_sign(const struct keyset *ks, const char *alg, const char *iss, const char *aud,
              const struct jwt_claims *c, struct buf *out)
{
    struct buf part = {0};
    buf_puts(&part, "{\"iss\":");
    json_put_cstr(&part, iss);
    buf_puts(&part, ",\"aud\":");
    json_put_cstr(&part, aud);
    buf_puts(&part, ",\"sub\":");
    json_put_cstr(&part, c->sub);
    buf_puts(&part, ",\"sid\":");
    json_put_cstr(&part, c->sid);
    buf_puts(&part, ",\"jti\":");
    json_put_cstr(&part, c->jti);
    buf_puts(&part, c->amr_otp ? ",\"amr\":[\"pwd\",\"otp\"]" : ",\"amr\":[\"pwd\"]");
    buf_printf(&part, ",\"iat\":%lld,\"exp\":%lld}", (long long)c->iat, (long long)c->exp);
    jwt_sign_claims(ks, alg, &part, out);
    buf_free(&part);
}

void jwt_sign_client(const struct keyset *ks, const char *alg, const char *iss, const char *aud,
                     const struct jwt_client_claims *c, struct buf *out)
{
    struct buf part = {0};
    buf_puts(&part, "{\"iss\":");
    json_put_cstr(&part, iss);
    buf_puts(&part, ",\"aud\":");
    json_put_cstr(&part, aud);
    buf_puts(&part, ",\"sub\":");
    json_put_cstr(&part, c->client_id);
    buf_puts(&part, ",\"client_id\":");
    json_put_cstr(&part, c->client_id);
    buf_puts(&part, ",\"scope\":");
    json_put_cstr(&part, c->scope);
    buf_puts(&part, ",\"jti\":");
    json_put_cstr(&part, c->jti);
    buf_printf(&part, ",\"iat\":%lld,\"exp\":%lld}", (long long)c->iat, (long long)c->exp);
    jwt_sign_claims(ks, alg, &part, out);
    buf_free(&part);
}

/* Decode a base64url segment that must be a JSON object. */
static json_object *jwt_json_segment(const char *s, size_t n)
{
    unsigned char tmp[JWT_MAX_LEN];
    size_t len;
    if (b64url_decode(tmp, sizeof(tmp), s, n, &len) != 0)
        return NULL;
    json_object *o = NULL;
    char err[64];
    if (json_parse_object((const char *)tmp, len, &o, err, sizeof(err)) != JSON_PARSE_OK)
        return NULL;
    return o;
}

static const char *jwt_get_str(json_object *o, const char *name)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int jwt_get_int(json_object *o, const char *name, int64_t *out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    *out = json_object_get_int64(v);
    return 0;
}

static int jwt_copy(char *dst, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n == 0 || n > JWT_FIELD_MAX)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

/* aud may be a string or an array of strings (RFC 7519 §4.1.3). */
static int jwt_aud_ok(json_object *claims, const char *aud)
{
    json_object *v;
    if (!json_object_object_get_ex(claims, "aud", &v))
        return 0;
    if (json_object_is_type(v, json_type_string))
        return strcmp(json_object_get_string(v), aud) == 0;
    if (json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *e = json_object_array_get_idx(v, i);
            if (json_object_is_type(e, json_type_string) &&
                strcmp(json_object_get_string(e), aud) == 0)
                return 1;
        }
    }
    return 0;
}

/* Check everything both token kinds share: three segments, alg, kid,
 * signature, iss, aud, iat and exp. 0 with *claims (caller puts it), or
 * -1 with why. */
static int jwt_open(const struct keyset *ks, const char *iss, const char *aud, const char *token,
                    size_t len, int64_t now, json_object **claims, int64_t *iat, int64_t *exp,
                    char *why, size_t whylen)
{
    json_object *hdr = NULL, *cl = NULL;
    unsigned char sig[crypto_sign_BYTES + 1];
    size_t siglen;
    int rc = -1;
    const char *d1, *d2;

    *claims = NULL;
    if (len == 0 || len > JWT_MAX_LEN) {
        snprintf(why, whylen, "token length %zu outside 1..%d", len, JWT_MAX_LEN);
        return -1;
    }
    d1 = memchr(token, '.', len);
    d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token))) {
        snprintf(why, whylen, "not three segments");
        return -1;
    }
    hdr = jwt_json_segment(token, (size_t)(d1 - token));
    if (hdr == NULL) {
        snprintf(why, whylen, "bad header");
        goto out;
    }
    const char *alg = jwt_get_str(hdr, "alg"), *kid = jwt_get_str(hdr, "kid");
    if (alg == NULL || (strcmp(alg, "EdDSA") != 0 && strcmp(alg, "Ed25519") != 0)) {
        snprintf(why, whylen, "alg not accepted");
        goto out;
    }
    const struct keys_entry *k = kid ? keys_find(ks, kid, strlen(kid)) : NULL;
    if (k == NULL) {
        snprintf(why, whylen, "unknown kid");
        goto out;
    }
    if (b64url_decode(sig, sizeof(sig), d2 + 1, len - (size_t)(d2 + 1 - token), &siglen) != 0 ||
        siglen != crypto_sign_BYTES) {
        snprintf(why, whylen, "bad signature encoding");
        goto out;
    }
    if (crypto_sign_verify_detached(sig, (const unsigned char *)token, (size_t)(d2 - token),
                                    k->pk) != 0) {
        snprintf(why, whylen, "signature mismatch");
        goto out;
    }
    cl = jwt_json_segment(d1 + 1, (size_t)(d2 - d1 - 1));
    if (cl == NULL) {
        snprintf(why, whylen, "bad claims");
        goto out;
    }
    const char *tiss = jwt_get_str(cl, "iss");
    if (tiss == NULL || strcmp(tiss, iss) != 0 || !jwt_aud_ok(cl, aud)) {
        snprintf(why, whylen, "wrong iss or aud");
        goto out;
    }
    if (jwt_get_int(cl, "exp", exp) != 0 || jwt_get_int(cl, "iat", iat) != 0) {
        snprintf(why, whylen, "exp or iat missing");
        goto out;
    }
    /* exp near INT64_MAX never expires; exp + leeway must not overflow. */
    if (*exp <= INT64_MAX - JWT_LEEWAY_S && now > *exp + JWT_LEEWAY_S) {
        snprintf(why, whylen, "expired");
        goto out;
    }
    rc = 0;
out:
    json_object_put(hdr);
    if (rc == 0)
        *claims = cl;
    else
        json_object_put(cl);
    return rc;
}

int jwt_verify(const struct keyset *ks, const char *iss, const char *aud, const char *token,
               size_t len, int64_t now, struct jwt_claims *out, char *why, size_t whylen)
{
    json_object *cl = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (jwt_open(ks, iss, aud, token, len, now, &cl, &out->iat, &out->exp, why, whylen) != 0)
        goto out;
    if (jwt_copy(out->sub, jwt_get_str(cl, "sub")) != 0 ||
        jwt_copy(out->sid, jwt_get_str(cl, "sid")) != 0 ||
        jwt_copy(out->jti, jwt_get_str(cl, "jti")) != 0) {
        snprintf(why, whylen, "sub, sid or jti missing");
        goto out;
    }
    json_object *amr;
    if (json_object_object_get_ex(cl, "amr", &amr) && json_object_is_type(amr, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(amr); i++) {
            const char *m = json_object_get_string(json_object_array_get_idx(amr, i));
            if (m != NULL && strcmp(m, "otp") == 0)
                out->amr_otp = 1;
        }
    }
    rc = 0;
out:
    json_object_put(cl);
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

int jwt_verify_client(const struct keyset *ks, const char *iss, const char *aud, const char *token,
                      size_t len, int64_t now, struct jwt_client_claims *out, char *why,
                      size_t whylen)
{
    json_object *cl = NULL, *sid;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (jwt_open(ks, iss, aud, token, len, now, &cl, &out->iat, &out->exp, why, whylen) != 0)
        goto out;
    const char *sub = jwt_get_str(cl, "sub"), *cid = jwt_get_str(cl, "client_id");
    const char *scope = jwt_get_str(cl, "scope");
    if (json_object_object_get_ex(cl, "sid", &sid) || sub == NULL || cid == NULL ||
        strcmp(sub, cid) != 0 || jwt_copy(out->client_id, cid) != 0 ||
        jwt_copy(out->jti, jwt_get_str(cl, "jti")) != 0 || scope == NULL ||
        strlen(scope) > JWT_SCOPE_MAX) {
        snprintf(why, whylen, "not a client token");
        goto out;
    }
    memcpy(out->scope, scope, strlen(scope) + 1);
    rc = 0;
out:
    json_object_put(cl);
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}
