/* Unit tests for lib/mail.c: the Standard Webhooks signature against the
 * specification's published example and an independent HMAC-SHA256
 * computation, and a webhook POST to a closed port failing within its
 * deadline. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "clock.h"
#include "config.h"
#include "mail.h"

/* The example of the Standard Webhooks specification (and its reference
 * libraries' tests): secret, id, timestamp, payload and signature. */
static void test_signature_reference(void **state)
{
    (void)state;
    unsigned char key[64];
    size_t klen;
    char sig[MAIL_SIG_MAX];
    const char *payload = "{\"test\": 2432232314}";
    assert_int_equal(
        config_webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, sizeof(key), &klen), 0);
    mail_webhook_signature(key, klen, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload,
                           strlen(payload), sig);
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

/* The same bytes through libsodium's one-shot HMAC: id.ts.body. */
static void test_signature_matches_hmac(void **state)
{
    (void)state;
    unsigned char key[32], mac[32];
    char sig[MAIL_SIG_MAX], want[MAIL_SIG_MAX] = "v1,";
    const char *body = "{\"type\":\"message.reset\",\"to\":\"a@b.example\"}";
    char msg[256];
    randombytes_buf(key, sizeof(key));
    mail_webhook_signature(key, sizeof(key), "01a233bf-913d-70bb-8402-3d784e485f8e", 1767225600,
                           body, strlen(body), sig);
    int n = snprintf(msg, sizeof(msg), "%s.%d.%s", "01a233bf-913d-70bb-8402-3d784e485f8e",
                     1767225600, body);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, sizeof(key));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, (size_t)n);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2base64(want + 3, sizeof(want) - 3, mac, sizeof(mac), sodium_base64_VARIANT_ORIGINAL);
    assert_string_equal(sig, want);
    /* Another body or id: another signature. */
    mail_webhook_signature(key, sizeof(key), "01a233bf-913d-70bb-8402-3d784e485f8f", 1767225600,
                           body, strlen(body), want);
    assert_string_not_equal(sig, want);
}

static void test_post_closed_port_fails(void **state)
{
    (void)state;
    assert_int_equal(mail_global_init(), 0);
    /* A port nobody listens on: bind one, note it, close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    char url[64], err[256] = "";
    unsigned char key[24] = {0};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", ntohs(a.sin_port));
    double t0 = clock_ms();
    assert_int_equal(mail_post_webhook(url, key, sizeof(key), "id", "{}", 2, err, sizeof(err)), -1);
    assert_true(clock_ms() - t0 < MAIL_TOTAL_MS + 1000);
    assert_non_null(strstr(err, "webhook"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_reference),
        cmocka_unit_test(test_signature_matches_hmac),
        cmocka_unit_test(test_post_closed_port_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
