"""The second factor (SPEC §10) end to end, through nginx, with an
independent TOTP implementation (Debian's python3-pyotp) and an independent
JOSE library (python3-jwt): enrolment and login, replay of a step, clock
skew of ±1 step accepted and ±2 refused, recovery codes once each (and one
winner among concurrent uses), one winner among concurrent uses of one TOTP
code, the per-account throttle, the mfa_token spent by 5 wrong codes, amr,
the secret unreadable in its row, a missing key answered with 503, DELETE
/me and removal needing the code, and a password reset keeping the factor."""

import base64
import concurrent.futures
import time
import urllib.parse

import jwt
import pyotp
import pytest
import requests

from test_lifecycle import link_token, psql, wait_link

API = "/api/v1/access"
PW = "password123"


# ---------------------------------------------------------------- helpers


def call(http, base_url, method, path, body=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.request(method, base_url + API + path, json=body, headers=headers)


def signup_login(http, base_url, addr):
    r = call(http, base_url, "POST", "/signup", {"email": addr, "password": PW})
    assert r.status_code == 201, r.text
    r = call(http, base_url, "POST", "/login", {"email": addr, "password": PW})
    assert r.status_code == 200, r.text
    return r.json()


def steady_step():
    """Wait until the current 30 s step has at least 6 s left, so codes made
    for now ± k steps name the same steps when the server checks them."""
    left = 30 - time.time() % 30
    if left < 6:
        time.sleep(left + 0.5)
    return time.time()


def at(totp, t, steps):
    return totp.at(t + 30 * steps)


def enrol(http, base_url, token):
    r = call(http, base_url, "POST", "/mfa/totp", token=token)
    assert r.status_code == 200, r.text
    return r.json()


def mfa_account(http, base_url, addr):
    """An account with MFA on, confirmed with the code of the previous step
    (so codes of now and now+1 are still unused). Returns (tokens, totp,
    recovery codes, t0)."""
    tokens = signup_login(http, base_url, addr)
    e = enrol(http, base_url, tokens["access_token"])
    totp = pyotp.TOTP(e["secret"])
    t0 = steady_step()
    r = call(http, base_url, "POST", "/mfa/totp/confirm", {"code": at(totp, t0, -1)},
             token=tokens["access_token"])
    assert r.status_code == 200, r.text
    return tokens, totp, r.json()["recovery_codes"], t0


def mfa_token(http, base_url, addr):
    r = call(http, base_url, "POST", "/login", {"email": addr, "password": PW})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mfa_required"] is True and body["expires_in"] == 300, body
    assert "access_token" not in body and "refresh_token" not in body
    return body["mfa_token"]


def login_mfa(http, base_url, tok, code):
    return call(http, base_url, "POST", "/login/mfa", {"mfa_token": tok, "code": code})


def claims(http, base_url, access_token):
    jwks = http.get(base_url + "/.well-known/jwks.json").json()
    kid = jwt.get_unverified_header(access_token)["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid)).key
    return jwt.decode(access_token, key, algorithms=["EdDSA"], audience="access",
                      issuer="access")


def audit_types(http, base_url, token):
    r = call(http, base_url, "GET", "/audit?limit=100", token=token)
    assert r.status_code == 200, r.text
    return [e["type"] for e in r.json()["items"]]


def pool_post(base_url, path, bodies):
    """POST every body at once (one connection each); the responses."""
    def one(b):
        return requests.post(base_url + API + path, json=b, timeout=30)
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as ex:
        return list(ex.map(one, bodies))


# ---------------------------------------------------------------- tests


def test_enrolment_and_login(http, base_url, unique_email):
    addr = unique_email("mfa")
    tokens = signup_login(http, base_url, addr)
    at0 = tokens["access_token"]
    e = enrol(http, base_url, at0)
    # ≥ 160 bits of base32 and the URI of SPEC §10.
    assert len(base64.b32decode(e["secret"] + "=" * (-len(e["secret"]) % 8))) >= 20
    u = urllib.parse.urlparse(e["otpauth_uri"])
    q = urllib.parse.parse_qs(u.query)
    assert u.scheme == "otpauth" and u.netloc == "totp"
    assert urllib.parse.unquote(u.path) == f"/access:{addr}"
    assert q == {"secret": [e["secret"]], "issuer": ["access"], "algorithm": ["SHA1"],
                 "digits": ["6"], "period": ["30"]}
    # Not active before confirmation.
    assert call(http, base_url, "GET", "/me", token=at0).json()["mfa_enabled"] is False
    assert "access_token" in call(http, base_url, "POST", "/login",
                                  {"email": addr, "password": PW}).json()
    totp = pyotp.parse_uri(e["otpauth_uri"])
    t0 = steady_step()
    r = call(http, base_url, "POST", "/mfa/totp/confirm", {"code": "000000" if
             at(totp, t0, 0) != "000000" else "111111"}, token=at0)
    assert r.status_code == 401 and r.json()["code"] == "invalid_code", r.text
    r = call(http, base_url, "POST", "/mfa/totp/confirm", {"code": totp.at(t0)}, token=at0)
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(len(c) == 10 and set(c) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for c in codes)
    me = call(http, base_url, "GET", "/me", token=at0).json()
    assert me["mfa_enabled"] is True
    # A second confirmation is refused: the codes are shown once.
    r = call(http, base_url, "POST", "/mfa/totp/confirm", {"code": at(totp, t0, 1)}, token=at0)
    assert r.status_code == 422, r.text
    # Login stops at mfa_required; login/mfa gives the tokens.
    tok = mfa_token(http, base_url, addr)
    r = login_mfa(http, base_url, tok, at(totp, t0, 1))
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["token_type"] == "Bearer" and t["refresh_token"]
    assert call(http, base_url, "GET", "/me", token=t["access_token"]).status_code == 200
    # The mfa_token was single-use.
    r = login_mfa(http, base_url, tok, codes[0])
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant", r.text
    types = audit_types(http, base_url, t["access_token"])
    assert "mfa_enabled" in types and "mfa_failed" in types and "login_succeeded" in types
    m = http.get(base_url + "/metrics").text
    assert 'mfa_attempts_total{result="success"}' in m


def test_replay_of_a_step_is_refused(http, base_url, unique_email):
    addr = unique_email("mfa-replay")
    _, totp, _, t0 = mfa_account(http, base_url, addr)
    code = at(totp, t0, 0)
    assert login_mfa(http, base_url, mfa_token(http, base_url, addr), code).status_code == 200
    # The same code (the same step) with a new login, through any worker.
    for _ in range(3):
        r = login_mfa(http, base_url, mfa_token(http, base_url, addr), code)
        assert r.status_code == 401 and r.json()["code"] == "invalid_code", r.text
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="access"'
    # The confirmation's step was used too.
    r = login_mfa(http, base_url, mfa_token(http, base_url, addr), at(totp, t0, -1))
    assert r.status_code == 401, r.text


def test_clock_skew_one_step_accepted_two_refused(http, base_url, unique_email):
    addr = unique_email("mfa-skew")
    tokens = signup_login(http, base_url, addr)
    e = enrol(http, base_url, tokens["access_token"])
    totp = pyotp.TOTP(e["secret"])
    t0 = steady_step()
    # Confirmation checks the window alone (no step used yet): ±2 refused.
    for k in (-2, 2):
        r = call(http, base_url, "POST", "/mfa/totp/confirm", {"code": at(totp, t0, k)},
                 token=tokens["access_token"])
        assert r.status_code == 401, (k, r.text)
    r = call(http, base_url, "POST", "/mfa/totp/confirm", {"code": at(totp, t0, -1)},
             token=tokens["access_token"])
    assert r.status_code == 200, r.text  # -1 accepted
    r = login_mfa(http, base_url, mfa_token(http, base_url, addr), at(totp, t0, 2))
    assert r.status_code == 401, r.text  # +2 refused
    r = login_mfa(http, base_url, mfa_token(http, base_url, addr), at(totp, t0, 1))
    assert r.status_code == 200, r.text  # +1 accepted


def test_recovery_codes_once_each(http, base_url, unique_email):
    addr = unique_email("mfa-rc")
    _, _, codes, _ = mfa_account(http, base_url, addr)
    r = login_mfa(http, base_url, mfa_token(http, base_url, addr), codes[0])
    assert r.status_code == 200, r.text
    t = r.json()["access_token"]
    r = login_mfa(http, base_url, mfa_token(http, base_url, addr), codes[0])
    assert r.status_code == 401 and r.json()["code"] == "invalid_code", r.text
    # Typed in lower case with a dash: still the code, and still once.
    typed = codes[1][:5].lower() + "-" + codes[1][5:].lower()
    assert login_mfa(http, base_url, mfa_token(http, base_url, addr), typed).status_code == 200
    assert login_mfa(http, base_url, mfa_token(http, base_url, addr), codes[1]).status_code == 401
    assert claims(http, base_url, t)["amr"] == ["pwd", "otp"]
    types = audit_types(http, base_url, t)
    assert types.count("recovery_code_used") == 2


def test_amr_claim(http, base_url, unique_email):
    plain = signup_login(http, base_url, unique_email("mfa-amr-plain"))
    assert claims(http, base_url, plain["access_token"])["amr"] == ["pwd"]
    addr = unique_email("mfa-amr")
    _, totp, _, t0 = mfa_account(http, base_url, addr)
    r = login_mfa(http, base_url, mfa_token(http, base_url, addr), at(totp, t0, 0))
    assert r.status_code == 200, r.text
    t = r.json()
    c = claims(http, base_url, t["access_token"])
    assert c["amr"] == ["pwd", "otp"] and c["sid"]
    # A refreshed token of that session keeps it.
    r = call(http, base_url, "POST", "/refresh", {"refresh_token": t["refresh_token"]})
    assert r.status_code == 200, r.text
    assert claims(http, base_url, r.json()["access_token"])["amr"] == ["pwd", "otp"]


def test_secret_not_readable_in_the_row(http, base_url, stack, unique_email):
    addr = unique_email("mfa-row")
    tokens = signup_login(http, base_url, addr)
    e = enrol(http, base_url, tokens["access_token"])
    raw = base64.b32decode(e["secret"] + "=" * (-len(e["secret"]) % 8))
    totp = pyotp.TOTP(e["secret"])
    t0 = steady_step()
    r = call(http, base_url, "POST", "/mfa/totp/confirm", {"code": totp.at(t0)},
             token=tokens["access_token"])
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    row = psql(stack, "SELECT encode(totp_secret, 'hex'), totp_pending IS NULL, mfa_enabled "
                      f"FROM users WHERE email = '{addr}'")
    sealed_hex, pending_null, enabled = row.split("|")
    assert pending_null == "t" and enabled == "t"
    sealed = bytes.fromhex(sealed_hex)
    assert len(sealed) == 24 + 20 + 16  # nonce, ciphertext, tag
    assert raw not in sealed and raw.hex() not in sealed_hex
    assert e["secret"] not in psql(stack, f"SELECT u::text FROM users u WHERE email = '{addr}'")
    hashes = psql(stack, "SELECT encode(code_hash, 'hex') FROM recovery_codes r JOIN users u ON "
                         f"u.id = r.user_id WHERE u.email = '{addr}'").split()
    assert len(hashes) == 10
    for c in codes:
        assert c.encode().hex() not in hashes and all(c not in h for h in hashes)


def test_mfa_token_spent_after_five_wrong_codes_and_throttle(http, base_url, unique_email):
    """Default throttle (10 failures per 900 s): 5 wrong codes spend a
    token; 5 more on a second token reach the limit; then even the right
    password gets 429 from the account's throttle."""
    addr = unique_email("mfa-thr")
    _, totp, codes, t0 = mfa_account(http, base_url, addr)
    right = at(totp, t0, 0)
    wrong = "123456" if right != "123456" else "654321"
    tok = mfa_token(http, base_url, addr)
    for _ in range(5):
        r = login_mfa(http, base_url, tok, wrong)
        assert r.status_code == 401 and r.json()["code"] == "invalid_code", r.text
    r = login_mfa(http, base_url, tok, right)  # spent: even the right code
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant", r.text
    tok = mfa_token(http, base_url, addr)
    for _ in range(5):
        assert login_mfa(http, base_url, tok, "ZZZZZZZZZZ").status_code == 401
    r = call(http, base_url, "POST", "/login", {"email": addr, "password": PW})
    assert r.status_code == 429 and r.json()["code"] == "rate_limited", r.text
    assert int(r.headers["Retry-After"]) > 0
    # An unknown or malformed token: invalid_grant.
    r = login_mfa(http, base_url, "A" * 43, right)
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
    r = login_mfa(http, base_url, "short", right)
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant"


def test_delete_me_needs_the_code(http, base_url, stack, unique_email):
    addr = unique_email("mfa-del")
    tokens, totp, codes, t0 = mfa_account(http, base_url, addr)
    t = tokens["access_token"]
    r = call(http, base_url, "DELETE", "/me", {"password": PW}, token=t)
    assert r.status_code == 422 and r.json()["field"] == "code", r.text
    r = call(http, base_url, "DELETE", "/me", {"password": PW, "code": "ABCDEFGHIJ"}, token=t)
    assert r.status_code == 401 and r.json()["code"] == "invalid_code", r.text
    r = call(http, base_url, "DELETE", "/me", {"password": "wrongpassword", "code": codes[0]},
             token=t)
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials", r.text
    r = call(http, base_url, "DELETE", "/me", {"password": PW, "code": at(totp, t0, 0)}, token=t)
    assert r.status_code == 204, r.text
    assert call(http, base_url, "GET", "/me", token=t).status_code == 401
    n = psql(stack, "SELECT count(*) FROM recovery_codes r LEFT JOIN users u ON u.id = r.user_id "
                    "WHERE u.id IS NULL")
    assert n == "0"


def test_remove_needs_password_and_code(http, base_url, stack, unique_email):
    addr = unique_email("mfa-rm")
    tokens, totp, codes, t0 = mfa_account(http, base_url, addr)
    t = tokens["access_token"]
    r = call(http, base_url, "DELETE", "/mfa/totp", {"password": "wrongpassword",
                                                     "code": at(totp, t0, 0)}, token=t)
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials", r.text
    r = call(http, base_url, "DELETE", "/mfa/totp", {"password": PW, "code": "000000" if
             at(totp, t0, 0) != "000000" else "111111"}, token=t)
    assert r.status_code == 401 and r.json()["code"] == "invalid_code", r.text
    r = call(http, base_url, "DELETE", "/mfa/totp", {"password": PW, "code": codes[3]}, token=t)
    assert r.status_code == 204, r.text
    assert call(http, base_url, "GET", "/me", token=t).json()["mfa_enabled"] is False
    r = call(http, base_url, "POST", "/login", {"email": addr, "password": PW})
    assert r.status_code == 200 and "access_token" in r.json(), r.text
    assert psql(stack, "SELECT count(*) FROM recovery_codes r JOIN users u ON u.id = r.user_id "
                       f"WHERE u.email = '{addr}'") == "0"
    assert psql(stack, f"SELECT totp_secret IS NULL FROM users WHERE email = '{addr}'") == "t"
    types = audit_types(http, base_url, t)
    assert "mfa_disabled" in types and "mfa_failed" in types
    # Nothing to remove now.
    r = call(http, base_url, "DELETE", "/mfa/totp", {"password": PW, "code": codes[4]}, token=t)
    assert r.status_code == 404, r.text


def test_reset_password_keeps_mfa(http, base_url, unique_email):
    """docs/decisions.md: a reset proves the mailbox, not the second factor;
    the factor stays and the next login still needs a code."""
    addr = unique_email("mfa-reset")
    _, totp, _, t0 = mfa_account(http, base_url, addr)
    assert call(http, base_url, "POST", "/recover", {"email": addr}).status_code == 202
    tok = link_token(wait_link(addr, "reset")[0], "reset")
    r = call(http, base_url, "POST", "/recover/confirm", {"token": tok,
                                                          "new_password": "newpassword1"})
    assert r.status_code == 204, r.text
    r = call(http, base_url, "POST", "/login", {"email": addr, "password": "newpassword1"})
    assert r.status_code == 200 and r.json().get("mfa_required") is True, r.text
    r = login_mfa(http, base_url, r.json()["mfa_token"], at(totp, t0, 0))
    assert r.status_code == 200, r.text


def test_missing_key_answers_503(http, base_url, fault_stack, unique_email):
    stack = fault_stack
    addr = unique_email("mfa-nokey")
    since = stack.log_offset()
    stack.app_restart({"ACCESS_SECRETS_KEY": "/nonexistent/secrets.key"})
    try:
        tokens = signup_login(http, base_url, addr)
        r = call(http, base_url, "POST", "/mfa/totp", token=tokens["access_token"])
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["code"] == "unavailable" and "secrets_key" in body["detail"]
        stack.wait_log(lambda rec: "secrets_key /nonexistent/secrets.key: missing" in
                       rec.get("msg", ""), since=since, timeout=5)
        assert psql(stack, "SELECT totp_pending IS NULL AND totp_secret IS NULL FROM users "
                           f"WHERE email = '{addr}'") == "t"
    finally:
        stack.app_restart()


class TestConcurrency:
    """Races on one code, many rounds. The losers' wrong codes count toward
    the throttle, so the service runs with a high limit here."""

    @pytest.fixture(scope="class", autouse=True)
    def lenient(self, stack):
        stack.app_restart({"ACCESS_LOGIN_FAILURES_MAX": 100000})
        yield
        stack.app_restart()

    def test_one_recovery_code_used_at_once(self, http, base_url, unique_email):
        rounds, parallel = 20, 4
        wins = []
        for acct in range(2):  # 10 codes each
            addr = unique_email(f"mfa-race-rc{acct}")
            _, _, codes, _ = mfa_account(http, base_url, addr)
            for code in codes:
                toks = [mfa_token(http, base_url, addr) for _ in range(parallel)]
                rs = pool_post(base_url, "/login/mfa",
                               [{"mfa_token": tk, "code": code} for tk in toks])
                statuses = sorted(r.status_code for r in rs)
                assert statuses == [200] + [401] * (parallel - 1), statuses
                wins.append(1)
        assert len(wins) == rounds

    def test_one_totp_code_used_at_once(self, http, base_url, unique_email):
        parallel, rounds = 6, 0
        for acct in range(5):
            addr = unique_email(f"mfa-race-totp{acct}")
            _, totp, _, t0 = mfa_account(http, base_url, addr)
            for k in (0, 1):  # the confirmation used step -1
                code = at(totp, t0, k)
                toks = [mfa_token(http, base_url, addr) for _ in range(parallel)]
                rs = pool_post(base_url, "/login/mfa",
                               [{"mfa_token": tk, "code": code} for tk in toks])
                statuses = sorted(r.status_code for r in rs)
                assert statuses == [200] + [401] * (parallel - 1), statuses
                rounds += 1
        assert rounds == 10


def test_parallel_second_factor_logins_of_one_account(http, base_url, unique_email):
    """Ten login/mfa of one account at once (its ten recovery codes), past
    max_sessions_per_user: every one 200. Their session trims used to lock
    the account's sessions in different orders: PostgreSQL broke the
    deadlock by failing one (a 500)."""
    for i in range(3):
        addr = unique_email(f"mfa-par{i}")
        _, _, codes, _ = mfa_account(http, base_url, addr)
        toks = [mfa_token(http, base_url, addr) for _ in codes]
        rs = pool_post(base_url, "/login/mfa",
                       [{"mfa_token": t, "code": c} for t, c in zip(toks, codes)])
        assert [r.status_code for r in rs] == [200] * len(codes), [r.text for r in rs
                                                                    if r.status_code != 200]
