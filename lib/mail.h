/* mail: the outbox's transports through libcurl (SPEC §9). Nothing of SMTP
 * or HTTP is written by hand: libcurl speaks SMTP (STARTTLS whenever the
 * server offers it, or smtps://) and HTTP(S).
 *
 * mail_webhook_signature() and mail_webhook_headers() are pure (unit-tested):
 * Standard Webhooks signs "<webhook-id>.<webhook-timestamp>.<body>" with
 * HMAC-SHA256 (libsodium crypto_auth_hmacsha256) under the secret's decoded
 * bytes, sent as "v1,<base64 signature>".
 *
 * Thread-safety: mail_global_init() once before any thread uses the rest;
 * the senders may run on any thread (one curl handle per call). Every call
 * is bounded by MAIL_CONNECT_MS to connect and MAIL_TOTAL_MS in all. */
#ifndef ACCESS_MAIL_H
#define ACCESS_MAIL_H

#include <stddef.h>
#include <stdint.h>

#define MAIL_CONNECT_MS 5000
#define MAIL_TOTAL_MS   15000
#define MAIL_SIG_MAX    64 /* "v1," + base64 of 32 bytes + NUL */

/* curl_global_init; 0 or -1. Call once, before threads. */
int mail_global_init(void) __attribute__((warn_unused_result));

/* "v1,<base64 HMAC-SHA256(key, id "." ts "." body)>" into out (>=
 * MAIL_SIG_MAX bytes). */
void mail_webhook_signature(const unsigned char *key, size_t keylen, const char *id, int64_t ts,
                            const char *body, size_t bodylen, char out[MAIL_SIG_MAX]);

struct mail_smtp {
    const char *url;             /* smtp://host:port or smtps://host:port */
    const char *user, *password; /* "" or NULL: no AUTH */
    const char *from;
};

/* Send one RFC 5322 message (msg, len bytes, CRLF line ends) to rcpt. 0, or
 * -1 with err (never the message or a credential). */
int mail_send_smtp(const struct mail_smtp *s, const char *rcpt, const char *msg, size_t len,
                   char *err, size_t errlen) __attribute__((warn_unused_result));

/* POST body (application/json) to url, signed as Standard Webhooks with
 * key under webhook-id id and the current time. 0 on any 2xx, -1 with err
 * (status or transport error) otherwise. */
int mail_post_webhook(const char *url, const unsigned char *key, size_t keylen, const char *id,
                      const char *body, size_t len, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
