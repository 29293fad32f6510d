"""Accounts and tokens through nginx: signup, login, refresh rotation and
reuse detection, logout, /me with ETags, password change, sessions with
cursor pagination, token tampering, JWKS verification, concurrent signups and
signing-key rotation (SPEC §4, §5)."""

import base64
import calendar
import concurrent.futures
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import uuid

import jwt
import pytest
import requests

API = "/api/v1/access"
PROBLEM = "application/problem+json"
PASSWORD = "correct horse battery"
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RFC3339_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------- helpers


def post_retry(session, url, payload, headers=None, attempts=10, pause=0.3):
    """POST JSON, retrying while the hash pool sheds load (503 overloaded)."""
    for i in range(attempts):
        r = session.post(url, json=payload, headers=headers, timeout=15)
        if r.status_code != 503 or i == attempts - 1:
            return r
        time.sleep(pause)
    return r


def signup(http, base_url, email, password=PASSWORD, name=None):
    payload = {"email": email, "password": password}
    if name is not None:
        payload["name"] = name
    return post_retry(http, base_url + API + "/signup", payload)


def login(http, base_url, email, password=PASSWORD):
    return post_retry(http, base_url + API + "/login", {"email": email, "password": password})


def must_signup(http, base_url, email, password=PASSWORD, name=None):
    r = signup(http, base_url, email, password, name)
    assert r.status_code == 201, r.text
    return r.json()


def must_login(http, base_url, email, password=PASSWORD):
    r = login(http, base_url, email, password)
    assert r.status_code == 200, r.text
    return r.json()


def bearer(token):
    return {"Authorization": "Bearer " + token}


def me(http, base_url, token, **kw):
    headers = dict(bearer(token))
    headers.update(kw.pop("headers", {}))
    return http.get(base_url + API + "/me", headers=headers, **kw)


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def assert_problem(r, status, code, field=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == PROBLEM
    body = r.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"]
    if field is not None:
        assert body.get("field") == field, body
    return body


def assert_invalid_token(r):
    assert_problem(r, 401, "invalid_token")
    assert r.headers.get("WWW-Authenticate") == 'Bearer error="invalid_token"', r.headers


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def parse_rfc3339(s):
    base = s.split(".")[0].rstrip("Z")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))


@pytest.fixture
def account(http, base_url, unique_email):
    """A fresh user with one logged-in session: dict(email, user, tokens)."""
    email = unique_email("acct")
    user = must_signup(http, base_url, email)
    tokens = must_login(http, base_url, email)
    return {"email": email, "user": user, "tokens": tokens}


def psql(stack, sql):
    url = None
    for line in stack.conf_path.read_text().splitlines():
        if line.strip().startswith("database_url"):
            url = line.split("=", 1)[1].strip()
    assert url, "database_url in var/access.conf"
    out = subprocess.run(
        ["psql", url, "-tAc", sql], check=True, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


# ---------------------------------------------------------------- signup


def test_signup_shape(http, base_url, unique_email):
    email = unique_email("Shape").replace("shape", "Shape").replace("example", "Example")
    before = time.time()
    r = signup(http, base_url, email)
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.headers["Cache-Control"] == "no-store"
    u = r.json()
    # SPEC §4 v2: the two booleans (no MFA exists yet: always false).
    assert set(u) == {"id", "email", "name", "created_at", "email_verified", "mfa_enabled"}
    assert u["email_verified"] is False and u["mfa_enabled"] is False
    assert UUID7_RE.match(u["id"]), u["id"]
    assert u["email"] == email
    assert u["name"] == ""
    assert RFC3339_UTC_RE.match(u["created_at"]), u["created_at"]
    assert abs(parse_rfc3339(u["created_at"]) - before) < 120
    # UUIDv7: the first 48 bits are the creation time in ms
    ms = int(u["id"].replace("-", "")[:12], 16)
    assert abs(ms / 1000 - before) < 120


def test_signup_with_name(http, base_url, unique_email):
    u = must_signup(http, base_url, unique_email("named"), name="Zoë Example")
    assert u["name"] == "Zoë Example"


def test_signup_password_boundaries_are_bytes(http, base_url, unique_email):
    # 4 characters, 8 bytes: long enough
    must_signup(http, base_url, unique_email("pw8"), password="éééé")
    # 1024 bytes: the longest allowed
    must_signup(http, base_url, unique_email("pw1024"), password="p" * 1024)
    # 7 bytes
    r = signup(http, base_url, unique_email("pw7"), password="é" * 3 + "x")
    assert_problem(r, 422, "invalid_password", "password")


def _email_of_length(n):
    local = "e-" + uuid.uuid4().hex  # 34 bytes
    need = n - len(local) - 1 - len(".test")
    labels = []
    while need > 0:
        size = min(63, need)
        if need - size == 1:  # never leave a lone dot
            size -= 1
        labels.append("d" * size)
        need -= size + 1 if need - size > 0 else size
    email = local + "@" + ".".join(labels) + ".test"
    assert len(email.encode()) == n, len(email)
    return email


def test_signup_email_254_bytes_ok_255_rejected(http, base_url):
    e254 = _email_of_length(254)
    u = must_signup(http, base_url, e254)
    assert u["email"] == e254
    r = signup(http, base_url, _email_of_length(255))
    assert_problem(r, 422, "invalid_email", "email")


@pytest.mark.parametrize(
    "payload,status,code,field",
    [
        ({}, 422, "validation_failed", "email"),
        ({"password": PASSWORD}, 422, "validation_failed", "email"),
        ({"email": None, "password": PASSWORD}, 422, "validation_failed", "email"),
        ({"email": 42, "password": PASSWORD}, 422, "validation_failed", "email"),
        ({"email": ["a@example.test"], "password": PASSWORD}, 422, "validation_failed", "email"),
        ({"email": "v@example.test"}, 422, "validation_failed", "password"),
        ({"email": "v@example.test", "password": 12345678}, 422, "validation_failed", "password"),
        ({"email": "v@example.test", "password": PASSWORD, "name": 7}, 422,
         "validation_failed", "name"),
        ({"email": "plainaddress", "password": PASSWORD}, 422, "invalid_email", "email"),
        ({"email": "@example.test", "password": PASSWORD}, 422, "invalid_email", "email"),
        ({"email": "a@@example.test", "password": PASSWORD}, 422, "invalid_email", "email"),
        ({"email": "a b@example.test", "password": PASSWORD}, 422, "invalid_email", "email"),
        ({"email": "a@b", "password": PASSWORD}, 422, "invalid_email", "email"),
        ({"email": "", "password": PASSWORD}, 422, "invalid_email", "email"),
        ({"email": "v@example.test", "password": "short7!"}, 422, "invalid_password", "password"),
        ({"email": "v@example.test", "password": ""}, 422, "invalid_password", "password"),
        ({"email": "v@example.test", "password": "p" * 1025}, 422, "invalid_password",
         "password"),
    ],
    ids=[
        "empty-object", "no-email", "null-email", "numeric-email", "array-email",
        "no-password", "numeric-password", "numeric-name", "no-at", "no-local",
        "two-at", "space", "no-dot-domain", "empty-email", "password-7", "password-empty",
        "password-1025",
    ],
)
def test_signup_input_rules(http, base_url, payload, status, code, field):
    r = http.post(base_url + API + "/signup", json=payload)
    assert_problem(r, status, code, field)


def test_rejected_signup_stores_nothing(http, base_url, unique_email, stack):
    email = unique_email("nostore")
    r = http.post(base_url + API + "/signup", json={"email": email, "password": "short"})
    assert_problem(r, 422, "invalid_password", "password")
    assert psql(stack, f"select count(*) from users where lower(email) = lower('{email}')") == "0"
    # and the address is still free
    must_signup(http, base_url, email)


def test_duplicate_email_any_case_is_409(http, base_url, unique_email):
    email = unique_email("dup")
    must_signup(http, base_url, email)
    r = signup(http, base_url, email.upper())
    assert_problem(r, 409, "email_taken")
    r = signup(http, base_url, email)
    assert_problem(r, 409, "email_taken")


# ---------------------------------------------------------------- login


def test_login_tokens_shape_and_case_insensitive_email(http, base_url, unique_email):
    email = unique_email("login")
    user = must_signup(http, base_url, email)
    r = login(http, base_url, email.upper())
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    t = r.json()
    assert set(t) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert t["token_type"] == "Bearer"
    assert t["expires_in"] == 3600
    assert len(b64url_decode(t["refresh_token"])) == 32  # 256 random bits
    c = claims(t["access_token"])
    assert c["sub"] == user["id"]
    assert UUID7_RE.match(c["sid"])
    assert c["exp"] - c["iat"] == 3600
    for k in ("iss", "aud", "jti"):
        assert k in c


def _logged(stack, wait_for, off, prefix, want):
    """Messages starting with prefix logged after off, once `want` are there
    (log lines are written in batches)."""
    def enough():
        msgs = [r["msg"] for r in stack.log_records(off) if r.get("msg", "").startswith(prefix)]
        return msgs if len(msgs) >= want else None
    return wait_for(enough, timeout=3, message=f"{want} log lines starting {prefix!r}")


def test_password_hashers_read_each_others_hashes(stack, http, base_url, unique_email, wait_for):
    """password_hasher (docs/decisions.md): libsodium and libargon2 write the
    same PHC strings, so a hash stored under one is verified under the other;
    `auto` times both once at start and logs its choice."""
    users = {}
    try:
        for hasher in ("libsodium", "libargon2"):
            off = stack.log_offset()
            stack.app_restart({"ACCESS_PASSWORD_HASHER": hasher})
            used = _logged(stack, wait_for, off, "password hashing: ", 2)
            assert {m.split()[2] for m in used} == {hasher}, used  # every worker that started
            email = unique_email(hasher)
            must_signup(http, base_url, email)
            users[hasher] = email
            stored = psql(stack, "SELECT password_hash FROM users WHERE email = '%s'" % email)
            assert re.fullmatch(r"\$argon2id\$v=19\$m=65536,t=3,p=1\$[A-Za-z0-9+/]{22}"
                                r"\$[A-Za-z0-9+/]{43}", stored), stored
        for hasher, other in (("libargon2", "libsodium"), ("libsodium", "libargon2")):
            stack.app_restart({"ACCESS_PASSWORD_HASHER": hasher})
            must_login(http, base_url, users[other])  # made by the other one
            must_login(http, base_url, users[hasher])
            r = login(http, base_url, users[other], PASSWORD + "!")
            assert r.status_code == 401, r.text
        off = stack.log_offset()
        stack.app_restart()  # password_hasher = auto, the default
        chose = _logged(stack, wait_for, off, "password_hasher auto: ", 1)
        assert len(chose) == 1, chose  # once, before the workers fork
        assert re.match(r"password_hasher auto: lib(sodium|argon2) \(best of two hashes: libsodium \d+ ms, "
                        r"libargon2 \d+ ms\)$", chose[0]), chose[0]
        for email in users.values():
            must_login(http, base_url, email)
    finally:
        stack.app_restart()


def test_login_wrong_password_and_unknown_email(http, base_url, unique_email):
    email = unique_email("badlogin")
    must_signup(http, base_url, email)
    r1 = login(http, base_url, email, "wrong password!")
    b1 = assert_problem(r1, 401, "invalid_credentials")
    r2 = login(http, base_url, unique_email("nobody"), PASSWORD)
    b2 = assert_problem(r2, 401, "invalid_credentials")
    # no hint which one was wrong
    assert b1 == b2


@pytest.mark.parametrize(
    "payload,code,field",
    [
        ({"email": "x@example.test"}, "validation_failed", "password"),
        ({"password": PASSWORD}, "validation_failed", "email"),
        ({"email": True, "password": PASSWORD}, "validation_failed", "email"),
    ],
)
def test_login_input_rules(http, base_url, payload, code, field):
    r = http.post(base_url + API + "/login", json=payload)
    assert_problem(r, 422, code, field)


@pytest.mark.parametrize("path", ["/login", "/refresh", "/password", "/me"])
def test_input_gate_on_every_body_route(http, base_url, account, path):
    method = "PATCH" if path == "/me" else "POST"
    hdr = bearer(account["tokens"]["access_token"])
    url = base_url + API + path
    r = http.request(method, url, data=b'{"a":1}', headers={**hdr, "Content-Type": "text/plain"})
    assert_problem(r, 415, "unsupported_media_type")
    r = http.request(method, url, data=b"{nope", headers={**hdr, **JSON})
    assert_problem(r, 400, "invalid_json")
    r = http.request(method, url, data=b"", headers={**hdr, **JSON})
    assert_problem(r, 400, "invalid_json")
    r = http.request(method, url, data=b"[]", headers={**hdr, **JSON})
    assert_problem(r, 422, "validation_failed")
    r = http.request(method, url, data=json.dumps({"x": "y" * 17000}), headers={**hdr, **JSON})
    assert_problem(r, 413, "payload_too_large")
    # none of that touched the session
    assert me(http, base_url, account["tokens"]["access_token"]).status_code == 200


# ---------------------------------------------------------------- token life


def test_token_life_refresh_rotation_and_reuse(http, base_url, unique_email):
    email = unique_email("life")
    user = must_signup(http, base_url, email)
    t1 = must_login(http, base_url, email)
    r = me(http, base_url, t1["access_token"])
    assert r.status_code == 200
    assert r.json() == user

    r = http.post(base_url + API + "/refresh", json={"refresh_token": t1["refresh_token"]})
    assert r.status_code == 200, r.text
    t2 = r.json()
    assert t2["token_type"] == "Bearer"
    assert t2["refresh_token"] != t1["refresh_token"]
    assert t2["access_token"] != t1["access_token"]
    assert claims(t2["access_token"])["sid"] == claims(t1["access_token"])["sid"]
    assert claims(t2["access_token"])["sub"] == user["id"]
    assert me(http, base_url, t2["access_token"]).status_code == 200

    # the first refresh token again: reuse → 401 and the session is revoked
    r = http.post(base_url + API + "/refresh", json={"refresh_token": t1["refresh_token"]})
    assert_problem(r, 401, "invalid_token")
    assert_invalid_token(me(http, base_url, t1["access_token"]))
    assert_invalid_token(me(http, base_url, t2["access_token"]))
    # the rotated refresh token died with the session
    r = http.post(base_url + API + "/refresh", json={"refresh_token": t2["refresh_token"]})
    assert_problem(r, 401, "invalid_token")
    # another login still works: only that session was revoked
    t3 = must_login(http, base_url, email)
    assert me(http, base_url, t3["access_token"]).status_code == 200


def test_concurrent_refresh_with_one_token(http, base_url, account):
    """Single use under a race: of 10 simultaneous refreshes with the same
    token exactly one gets new tokens."""
    rt = account["tokens"]["refresh_token"]

    def one(_):
        with requests.Session() as s:
            return s.post(base_url + API + "/refresh", json={"refresh_token": rt}, timeout=15)

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as ex:
        results = list(ex.map(one, range(10)))
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [401] * 9, codes


@pytest.mark.parametrize(
    "payload,status,code",
    [
        ({}, 422, "validation_failed"),
        ({"refresh_token": 5}, 422, "validation_failed"),
        ({"refresh_token": ""}, 401, "invalid_token"),
        ({"refresh_token": "not-a-token"}, 401, "invalid_token"),
        ({"refresh_token": b64url(os.urandom(32))}, 401, "invalid_token"),
    ],
    ids=["missing", "number", "empty", "garbage", "random-256-bits"],
)
def test_refresh_bad_tokens(http, base_url, payload, status, code):
    r = http.post(base_url + API + "/refresh", json=payload)
    body = assert_problem(r, status, code)
    if status == 422:
        assert body["field"] == "refresh_token"


def test_logout(http, base_url, account):
    t = account["tokens"]
    r = http.post(base_url + API + "/logout", headers=bearer(t["access_token"]))
    assert r.status_code == 204
    assert r.content == b""
    assert "Content-Length" not in r.headers or r.headers["Content-Length"] == "0"
    assert_invalid_token(me(http, base_url, t["access_token"]))
    r = http.post(base_url + API + "/refresh", json={"refresh_token": t["refresh_token"]})
    assert_problem(r, 401, "invalid_token")
    # logging out twice: the token is already dead
    assert_invalid_token(http.post(base_url + API + "/logout", headers=bearer(t["access_token"])))


def test_me_requires_a_bearer_token(http, base_url):
    r = http.get(base_url + API + "/me")
    assert_problem(r, 401, "invalid_token")
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    r = http.get(base_url + API + "/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_problem(r, 401, "invalid_token")
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")


# ---------------------------------------------------------------- /me


def test_me_etag_and_patch(http, base_url, account):
    tok = account["tokens"]["access_token"]
    r = me(http, base_url, tok)
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "private, no-cache"
    etag = r.headers["ETag"]
    assert etag
    assert r.json() == account["user"]

    r = me(http, base_url, tok, headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers.get("ETag") == etag

    r = http.patch(base_url + API + "/me", json={"name": "New Name"}, headers=bearer(tok))
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["name"] == "New Name"
    assert u["email"] == account["email"]
    assert u["id"] == account["user"]["id"]
    etag2 = r.headers.get("ETag")
    assert etag2 and etag2 != etag

    # the old ETag no longer matches: a full 200 with the new name
    r = me(http, base_url, tok, headers={"If-None-Match": etag})
    assert r.status_code == 200
    assert r.json()["name"] == "New Name"
    assert r.headers["ETag"] == etag2
    r = me(http, base_url, tok, headers={"If-None-Match": etag2})
    assert r.status_code == 304


def test_me_patch_is_coherent_across_workers(http, base_url, account, no_keepalive):
    """After PATCH, every worker serves the new name (L1 invalidation): read
    /me many times on fresh connections so both workers answer."""
    tok = account["tokens"]["access_token"]
    for _ in range(10):  # warm both workers' L1
        assert requests.get(base_url + API + "/me", headers=bearer(tok), timeout=10).ok
    r = http.patch(base_url + API + "/me", json={"name": "coherent"}, headers=bearer(tok))
    assert r.status_code == 200
    deadline = time.monotonic() + 2.0  # pub/sub delay
    while True:
        names = [requests.get(base_url + API + "/me", headers=bearer(tok), timeout=10)
                 .json()["name"] for _ in range(20)]
        if all(n == "coherent" for n in names) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(n == "coherent" for n in names), names


def test_me_patch_never_changes_email(http, base_url, account):
    tok = account["tokens"]["access_token"]
    r = http.patch(base_url + API + "/me", json={"name": "only name"}, headers=bearer(tok))
    assert r.status_code == 200
    assert r.json()["email"] == account["email"]
    r = http.patch(base_url + API + "/me",
                   json={"name": "n2", "email": "hijack-" + account["email"]},
                   headers=bearer(tok))
    assert r.status_code in (200, 422), r.text
    assert me(http, base_url, tok).json()["email"] == account["email"]


@pytest.mark.parametrize("payload", [{}, {"name": 3}, {"name": None}],
                         ids=["missing", "number", "null"])
def test_me_patch_validation(http, base_url, account, payload):
    tok = account["tokens"]["access_token"]
    r = http.patch(base_url + API + "/me", json=payload, headers=bearer(tok))
    assert_problem(r, 422, "validation_failed", "name")


# ---------------------------------------------------------------- password


def test_password_change(http, base_url, account):
    email = account["email"]
    a = account["tokens"]
    b = must_login(http, base_url, email)
    url = base_url + API + "/password"
    new = "a brand new password"

    r = http.post(url, json={"current_password": "not the password", "new_password": new},
                  headers=bearer(a["access_token"]))
    assert_problem(r, 403, "wrong_password")
    r = http.post(url, json={"current_password": PASSWORD, "new_password": "short"},
                  headers=bearer(a["access_token"]))
    assert_problem(r, 422, "invalid_password", "new_password")
    r = http.post(url, json={"current_password": PASSWORD}, headers=bearer(a["access_token"]))
    assert_problem(r, 422, "validation_failed", "new_password")
    # nothing changed so far
    assert me(http, base_url, b["access_token"]).status_code == 200

    r = post_retry(http, url, {"current_password": PASSWORD, "new_password": new},
                   headers=bearer(a["access_token"]))
    assert r.status_code == 204, r.text
    assert r.content == b""

    assert_invalid_token(me(http, base_url, b["access_token"]))
    r = http.post(base_url + API + "/refresh", json={"refresh_token": b["refresh_token"]})
    assert_problem(r, 401, "invalid_token")
    assert me(http, base_url, a["access_token"]).status_code == 200

    assert_problem(login(http, base_url, email, PASSWORD), 401, "invalid_credentials")
    must_login(http, base_url, email, new)


def test_password_requires_token(http, base_url):
    r = http.post(base_url + API + "/password",
                  json={"current_password": PASSWORD, "new_password": "whatever123"})
    assert_problem(r, 401, "invalid_token")


# ---------------------------------------------------------------- sessions


def list_sessions(http, base_url, token, **params):
    return http.get(base_url + API + "/sessions", headers=bearer(token), params=params)


def test_sessions_pagination(http, base_url, unique_email):
    email = unique_email("pages")
    must_signup(http, base_url, email)
    tokens = [must_login(http, base_url, email) for _ in range(7)]
    sids = [claims(t["access_token"])["sid"] for t in tokens]
    assert len(set(sids)) == 7
    me_tok = tokens[3]["access_token"]

    items, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = list_sessions(http, base_url, me_tok, **params)
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        page = r.json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= 3
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
        assert pages < 10, "pagination does not end"
    assert pages == 3
    ids = [s["id"] for s in items]
    assert len(ids) == len(set(ids)), "pages overlap"
    assert set(ids) == set(sids)
    # newest first: logins were sequential
    assert ids == list(reversed(sids))
    stamps = [(s["created_at"], s["id"]) for s in items]
    assert stamps == sorted(stamps, reverse=True)
    current = [s for s in items if s["current"] is True]
    assert len(current) == 1 and current[0]["id"] == sids[3]
    assert all(s["current"] is False for s in items if s["id"] != sids[3])
    s = items[0]
    assert set(s) == {"id", "created_at", "last_used_at", "expires_at", "ip", "user_agent",
                      "current"}
    assert UUID7_RE.match(s["id"])
    for k in ("created_at", "expires_at"):
        assert RFC3339_UTC_RE.match(s[k]), s[k]
    assert parse_rfc3339(s["expires_at"]) > parse_rfc3339(s["created_at"])
    assert s["ip"] == "127.0.0.1"
    assert s["user_agent"].startswith("python-requests")

    # default limit is 20: all seven on one page
    r = list_sessions(http, base_url, me_tok)
    assert r.status_code == 200
    assert [x["id"] for x in r.json()["items"]] == ids
    assert r.json()["next_cursor"] is None


def test_max_sessions_per_user(http, base_url, unique_email):
    """max_sessions_per_user (default 10): the oldest session is revoked."""
    email = unique_email("many")
    must_signup(http, base_url, email)
    tokens = [must_login(http, base_url, email) for _ in range(11)]
    assert_invalid_token(me(http, base_url, tokens[0]["access_token"]))
    for t in tokens[1:]:
        assert me(http, base_url, t["access_token"]).status_code == 200
    r = list_sessions(http, base_url, tokens[-1]["access_token"], limit=100)
    listed = {s["id"] for s in r.json()["items"]}
    assert listed == {claims(t["access_token"])["sid"] for t in tokens[1:]}


def test_bearer_scheme_is_case_insensitive(http, base_url, account):
    tok = account["tokens"]["access_token"]
    r = http.get(base_url + API + "/me", headers={"Authorization": "bearer " + tok})
    assert r.status_code == 200


def test_sessions_fields(http, base_url, account):
    tok = account["tokens"]["access_token"]
    r = list_sessions(http, base_url, tok, fields="id,created_at")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items
    for s in items:
        assert set(s) == {"id", "created_at"}
    r = list_sessions(http, base_url, tok, fields="id,password_hash")
    assert_problem(r, 422, "validation_failed", "fields")
    r = list_sessions(http, base_url, tok, fields="nope")
    assert_problem(r, 422, "validation_failed", "fields")


@pytest.mark.parametrize("limit", ["101", "0", "-1", "abc", "1000000000000000000000"])
def test_sessions_bad_limit(http, base_url, account, limit):
    r = list_sessions(http, base_url, account["tokens"]["access_token"], limit=limit)
    assert_problem(r, 422, "validation_failed", "limit")


def _forge(cursor):
    """A different cursor of the same shape: the last byte of its decoded form
    changed (a hex digit stays a hex digit)."""
    raw = bytearray(b64url_decode(cursor))
    last = raw[-1]
    if chr(last) in "0123456789abcdef":
        raw[-1] = ord("0") if chr(last) != "0" else ord("1")
    else:
        raw[-1] = last ^ 1
    return b64url(bytes(raw))


def test_sessions_forged_cursor(http, base_url, unique_email):
    email = unique_email("forge")
    must_signup(http, base_url, email)
    tok = [must_login(http, base_url, email) for _ in range(3)][-1]["access_token"]
    page = list_sessions(http, base_url, tok, limit=1).json()
    cursor = page["next_cursor"]
    assert cursor
    assert list_sessions(http, base_url, tok, cursor=cursor).status_code == 200
    r = list_sessions(http, base_url, tok, cursor=_forge(cursor))
    assert_problem(r, 400, "invalid_cursor")


@pytest.mark.parametrize("cursor", ["garbage!!", "AAAA", "x" * 300])
def test_sessions_bad_cursor(http, base_url, account, cursor):
    r = list_sessions(http, base_url, account["tokens"]["access_token"], cursor=cursor)
    assert_problem(r, 400, "invalid_cursor")


def test_sessions_limits_ok(http, base_url, account):
    tok = account["tokens"]["access_token"]
    for limit in ("1", "100"):
        r = list_sessions(http, base_url, tok, limit=limit)
        assert r.status_code == 200, r.text


def test_sessions_require_token(http, base_url):
    r = http.get(base_url + API + "/sessions")
    assert_problem(r, 401, "invalid_token")


def test_delete_sessions(http, base_url, unique_email):
    email = unique_email("del")
    must_signup(http, base_url, email)
    a = must_login(http, base_url, email)
    b = must_login(http, base_url, email)
    other_email = unique_email("other")
    must_signup(http, base_url, other_email)
    o = must_login(http, base_url, other_email)
    sid_b = claims(b["access_token"])["sid"]
    sid_o = claims(o["access_token"])["sid"]
    url = base_url + API + "/sessions/"

    # someone else's session: 404, and it keeps working
    r = http.delete(url + sid_o, headers=bearer(a["access_token"]))
    assert_problem(r, 404, "not_found")
    assert me(http, base_url, o["access_token"]).status_code == 200
    # unknown and malformed ids
    assert_problem(http.delete(url + str(uuid.uuid4()), headers=bearer(a["access_token"])),
                   404, "not_found")
    assert_problem(http.delete(url + "not-a-uuid", headers=bearer(a["access_token"])),
                   404, "not_found")

    r = http.delete(url + sid_b, headers=bearer(a["access_token"]))
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_invalid_token(me(http, base_url, b["access_token"]))
    r = http.post(base_url + API + "/refresh", json={"refresh_token": b["refresh_token"]})
    assert_problem(r, 401, "invalid_token")
    assert me(http, base_url, a["access_token"]).status_code == 200
    listed = [s["id"] for s in list_sessions(http, base_url, a["access_token"]).json()["items"]]
    assert sid_b not in listed
    # deleting it again: idempotent (204) or gone (404), never revived
    r = http.delete(url + sid_b, headers=bearer(a["access_token"]))
    assert r.status_code in (204, 404), r.text
    assert_invalid_token(me(http, base_url, b["access_token"]))


# ---------------------------------------------------------------- tampered tokens


def _tampered(token):
    h, p, s = token.split(".")
    header = json.loads(b64url_decode(h))
    payload = json.loads(b64url_decode(p))
    out = {}
    none_h = dict(header, alg="none")
    out["alg-none"] = b64url(json.dumps(none_h).encode()) + "." + p + "."
    out["alg-none-with-sig"] = b64url(json.dumps(none_h).encode()) + "." + p + "." + s
    out["alg-HS256"] = jwt.encode(payload, "secret", algorithm="HS256",
                                  headers={"kid": header["kid"]})
    evil = dict(payload, sub=str(uuid.uuid4()))
    out["altered-sub"] = h + "." + b64url(json.dumps(evil, separators=(",", ":")).encode()) + \
        "." + s
    longer = dict(payload, exp=payload["exp"] + 86400)
    out["altered-exp"] = h + "." + b64url(json.dumps(longer, separators=(",", ":")).encode()) + \
        "." + s
    sig = bytearray(b64url_decode(s))
    sig[0] ^= 1
    out["flipped-signature-bit"] = h + "." + p + "." + b64url(bytes(sig))
    out["unknown-kid"] = b64url(json.dumps(dict(header, kid="nope")).encode()) + "." + p + "." + s
    out["truncated"] = token[:-10]
    out["no-signature"] = h + "." + p
    out["garbage"] = "garbage.garbage.garbage"
    out["random"] = b64url(os.urandom(48))
    out["empty-parts"] = ".."
    return out


def test_tampered_tokens_rejected(http, base_url, account):
    tok = account["tokens"]["access_token"]
    assert me(http, base_url, tok).status_code == 200
    for name, bad in _tampered(tok).items():
        r = me(http, base_url, bad)
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert_invalid_token(r)
    # the genuine token is untouched by all that
    assert me(http, base_url, tok).status_code == 200


# ---------------------------------------------------------------- JWKS


def test_jwks_verifies_access_token(http, base_url, account):
    r = http.get(base_url + "/.well-known/jwks.json")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "public, max-age=300"
    jwks = r.json()
    assert jwks["keys"]
    for k in jwks["keys"]:
        assert k["kty"] == "OKP" and k["crv"] == "Ed25519"
        assert "d" not in k, "private key material in the public JWK set"
        assert len(b64url_decode(k["x"])) == 32
        # kid is the RFC 7638 thumbprint
        canon = json.dumps({"crv": k["crv"], "kty": k["kty"], "x": k["x"]},
                           separators=(",", ":"), sort_keys=True)
        assert k["kid"] == b64url(hashlib.sha256(canon.encode()).digest())

    tok = account["tokens"]["access_token"]
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "EdDSA"
    assert header.get("typ") == "JWT"
    kids = {k["kid"]: k for k in jwks["keys"]}
    assert header["kid"] in kids
    key = jwt.PyJWK(kids[header["kid"]]).key
    c = jwt.decode(tok, key=key, algorithms=["EdDSA"], audience="access", issuer="access")
    assert c["sub"] == account["user"]["id"]
    listed = list_sessions(http, base_url, tok).json()["items"]
    current = [s["id"] for s in listed if s["current"]]
    assert current == [c["sid"]]
    assert c["exp"] > time.time() > c["iat"] - 60
    # and verification really checks the signature
    with pytest.raises(jwt.InvalidSignatureError):
        h, p, s = tok.split(".")
        sig = bytearray(b64url_decode(s))
        sig[5] ^= 0x40
        jwt.decode(h + "." + p + "." + b64url(bytes(sig)), key=key, algorithms=["EdDSA"],
                   audience="access", issuer="access")


# ---------------------------------------------------------------- concurrency


def test_concurrent_distinct_signups(base_url, stack):
    prefix = f"conc-{uuid.uuid4().hex[:12]}-"
    emails = [f"{prefix}{i}@example.test" for i in range(50)]

    def one(email, path, payload):
        with requests.Session() as s:
            return post_retry(s, base_url + API + path, payload)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(
            lambda e: one(e, "/signup", {"email": e, "password": PASSWORD}), emails))
    codes = [r.status_code for r in results]
    assert codes == [201] * 50, codes
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 50
    assert psql(stack, f"select count(*) from users where email like '{prefix}%'") == "50"

    # exactly one row each (checked above); a sample of them can log in
    sample = emails[::5]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        logins = list(ex.map(
            lambda e: one(e, "/login", {"email": e, "password": PASSWORD}), sample))
    codes = [r.status_code for r in logins]
    assert codes == [200] * len(sample), codes
    by_email = {r.json()["email"]: r.json()["id"] for r in results}
    for e, r in zip(sample, logins):
        assert claims(r.json()["access_token"])["sub"] == by_email[e]


def test_concurrent_same_email_signups(base_url, stack):
    email = f"same-{uuid.uuid4().hex[:12]}@example.test"

    def one(i):
        with requests.Session() as s:
            # vary the case: uniqueness is case-insensitive
            e = email.upper() if i % 2 else email
            return post_retry(s, base_url + API + "/signup", {"email": e, "password": PASSWORD})

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(one, range(20)))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * 19, codes
    for r in results:
        if r.status_code == 409:
            assert r.json()["code"] == "email_taken"
    assert psql(stack, f"select count(*) from users where lower(email) = lower('{email}')") == "1"


# ---------------------------------------------------------------- key rotation (last: it
# leaves the stack with one more key)


def test_key_rotation_with_sighup(http, base_url, stack, account, wait_for, no_keepalive):
    old_tok = account["tokens"]["access_token"]
    before = http.get(base_url + "/.well-known/jwks.json").json()["keys"]
    old_kid = jwt.get_unverified_header(old_tok)["kid"]
    assert old_kid in {k["kid"] for k in before}

    keyfile = stack.var / "keys" / "jwks.json"
    out = subprocess.run(
        [str(stack.root / "build" / "access.fcgi"), "keygen", "--rotate", str(keyfile)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    new_kids = [k for k in re.findall(r"[A-Za-z0-9_-]{43}", out) if k not in
                {b["kid"] for b in before}]
    assert len(new_kids) == 1, out
    new_kid = new_kids[0]

    sup = stack.supervisor_pid()
    assert sup
    workers = stack.worker_pids(sup)
    os.kill(sup, signal.SIGHUP)

    def rotated():
        # both workers must have reloaded: ask on fresh connections, many times
        for _ in range(10):
            keys = requests.get(base_url + "/.well-known/jwks.json", timeout=5).json()["keys"]
            kids = {k["kid"] for k in keys}
            # (a full set drops its oldest verification key to make room)
            if new_kid not in kids or old_kid not in kids or len(keys) > len(before) + 1:
                return False
            # at most one old key (the oldest, when the set was full) is gone
            if len({b["kid"] for b in before} - kids) > 1:
                return False
        return True

    wait_for(rotated, timeout=10, message="JWKS to list the new key in every worker")
    # SIGHUP reloads keys; it does not restart anything
    assert stack.supervisor_pid() == sup
    assert stack.worker_pids(sup) == workers

    # tokens signed with the old key keep working
    for _ in range(6):
        assert me(http, base_url, old_tok).status_code == 200
    # new tokens are signed with the new key, and verify against the JWKS
    jwks = {k["kid"]: k for k in http.get(base_url + "/.well-known/jwks.json").json()["keys"]}
    for _ in range(3):
        t = must_login(http, base_url, account["email"])
        assert jwt.get_unverified_header(t["access_token"])["kid"] == new_kid
        jwt.decode(t["access_token"], key=jwt.PyJWK(jwks[new_kid]).key, algorithms=["EdDSA"],
                   audience="access", issuer="access")
        assert me(http, base_url, t["access_token"]).status_code == 200
