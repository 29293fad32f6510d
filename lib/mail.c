#include "mail.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <sodium.h>

int mail_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void mail_webhook_signature(const unsigned char *key, size_t keylen, const char *id, int64_t ts,
                            const char *body, size_t bodylen, char out[MAIL_SIG_MAX])
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char tsbuf[24];
    int n = snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long)ts);
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)id, strlen(id));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tsbuf, (size_t)n);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, bodylen);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
    memcpy(out, "v1,", 3);
    sodium_bin2base64(out + 3, MAIL_SIG_MAX - 3, mac, sizeof(mac), sodium_base64_VARIANT_ORIGINAL);
}

struct mail_reader {
    const char *p;
    size_t left;
};

static size_t mail_read(char *dst, size_t size, size_t n, void *ctx)
{
    struct mail_reader *r = ctx;
    size_t want = size * n;
    if (want > r->left)
        want = r->left;
    memcpy(dst, r->p, want);
    r->p += want;
    r->left -= want;
    return want;
}

static size_t mail_discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

static void mail_common(CURL *c, char *errbuf)
{
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)MAIL_CONNECT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)MAIL_TOTAL_MS);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps,http,https");
    errbuf[0] = '\0';
}

int mail_send_smtp(const struct mail_smtp *s, const char *rcpt, const char *msg, size_t len,
                   char *err, size_t errlen)
{
    char errbuf[CURL_ERROR_SIZE], from[300], to[300];
    struct curl_slist *rcpts = NULL;
    struct mail_reader rd = {msg, len};
    int rc = -1;
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(err, errlen, "curl_easy_init failed");
        return -1;
    }
    snprintf(from, sizeof(from), "<%s>", s->from);
    snprintf(to, sizeof(to), "<%s>", rcpt);
    rcpts = curl_slist_append(NULL, to);
    mail_common(c, errbuf);
    curl_easy_setopt(c, CURLOPT_URL, s->url);
    /* STARTTLS whenever offered (smtps:// is TLS from the start). */
    curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    if (s->user != NULL && s->user[0] != '\0') {
        curl_easy_setopt(c, CURLOPT_USERNAME, s->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, s->password != NULL ? s->password : "");
    }
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, mail_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &rd);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK)
        snprintf(err, errlen, "smtp: %s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    else
        rc = 0;
    curl_slist_free_all(rcpts);
    curl_easy_cleanup(c);
    return rc;
}

int mail_post_webhook(const char *url, const unsigned char *key, size_t keylen, const char *id,
                      const char *body, size_t len, char *err, size_t errlen)
{
    char errbuf[CURL_ERROR_SIZE], sig[MAIL_SIG_MAX], h[160];
    struct curl_slist *hs = NULL;
    long status = 0;
    int rc = -1;
    int64_t ts = (int64_t)time(NULL);
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(err, errlen, "curl_easy_init failed");
        return -1;
    }
    mail_webhook_signature(key, keylen, id, ts, body, len, sig);
    hs = curl_slist_append(hs, "Content-Type: application/json");
    snprintf(h, sizeof(h), "webhook-id: %s", id);
    hs = curl_slist_append(hs, h);
    snprintf(h, sizeof(h), "webhook-timestamp: %lld", (long long)ts);
    hs = curl_slist_append(hs, h);
    snprintf(h, sizeof(h), "webhook-signature: %s", sig);
    hs = curl_slist_append(hs, h);
    hs = curl_slist_append(hs, "Expect:");
    mail_common(c, errbuf);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mail_discard);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "webhook: %s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300)
            rc = 0;
        else
            snprintf(err, errlen, "webhook: HTTP status %ld", status);
    }
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    return rc;
}
