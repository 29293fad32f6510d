"""Foundation: health endpoints, routing errors, the input gate (413, 415,
400, 422 before any handler logic), X-Request-ID, Content-Length and
Cache-Control (SPEC §4)."""

import http.client
import json
import re
import urllib.parse

import pytest

from conftest import OPENAPI

SIGNUP = "/api/v1/access/signup"
PROBLEM = "application/problem+json"
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
POOL_RE = re.compile(r"^(\d+)/(\d+)$")


def assert_problem(r, status, code, field=None):
    """r is a problem document with this status and code (and field)."""
    assert r.status_code == status, (r.status_code, r.text)
    ctype = r.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == PROBLEM, ctype
    body = r.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["code"] == code, body
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body.get("detail"), str) and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    assert r.headers.get("X-Request-ID"), "problem documents carry X-Request-ID too"
    return body


def raw_request(base_url, method, path, body=None, headers=None):
    """One request through http.client (no Accept-Encoding, so nginx never
    compresses): (status, headers dict with lowercase names, raw body)."""
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        OPENAPI.check_raw(method, base_url + path, resp.status, hdrs, data)
        return resp.status, hdrs, data
    finally:
        conn.close()


# ---------------------------------------------------------------- health


def test_health_shape(http, base_url):
    r = http.get(base_url + "/health")
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    db = body["checks"]["database"]
    assert db["status"] == "up"
    m = POOL_RE.match(db["pool"])
    assert m, db["pool"]
    used, size = int(m.group(1)), int(m.group(2))
    assert size >= 1 and 0 <= used <= size
    assert body["checks"]["redis"]["status"] == "up"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime_seconds"], int) and not isinstance(body["uptime_seconds"], bool)
    assert body["uptime_seconds"] >= 0
    assert r.headers["Cache-Control"] == "no-store"


def test_health_body_is_compact(base_url):
    status, hdrs, data = raw_request(base_url, "GET", "/health")
    assert status == 200
    text = data.decode()
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    assert not text.endswith("\n")


def test_health_live(http, base_url):
    r = http.get(base_url + "/health/live")
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.json()["status"] == "ok"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers.get("X-Request-ID")


def test_health_ready(http, base_url):
    r = http.get(base_url + "/health/ready")
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert isinstance(r.json(), dict)
    assert r.headers["Cache-Control"] == "no-store"


def test_health_head(http, base_url):
    r = http.head(base_url + "/health")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers.get("X-Request-ID")


# ---------------------------------------------------------------- routing


def test_unknown_api_path_is_404_problem(http, base_url):
    r = http.get(base_url + "/api/v1/access/no-such-thing")
    assert_problem(r, 404, "not_found")
    assert r.headers["Cache-Control"] == "no-store"


def test_unknown_path_outside_api_is_404_problem(http, base_url):
    r = http.get(base_url + "/definitely/not/here")
    assert r.status_code == 404
    assert r.headers["Content-Type"].split(";")[0] == PROBLEM
    body = r.json()
    assert body["status"] == 404 and body["code"] == "not_found"


def test_unknown_path_outside_api_has_request_id(http, base_url):
    r = http.get(base_url + "/definitely/not/here", headers={"X-Request-ID": "outside-1"})
    assert r.status_code == 404
    assert r.headers.get("X-Request-ID") == "outside-1"


def test_405_on_health_allows_get_head(http, base_url):
    r = http.post(base_url + "/health", data=b"")
    assert_problem(r, 405, "method_not_allowed")
    allow = [m.strip() for m in r.headers["Allow"].split(",")]
    assert allow == ["GET", "HEAD"]


def test_405_on_signup_allows_post(http, base_url):
    r = http.put(base_url + SIGNUP, json={"email": "a@b.cd", "password": "x" * 10})
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("PUT", "/api/v1/access/me", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("GET", "/api/v1/access/login", {"POST"}),
        ("GET", "/api/v1/access/sessions/01a20000-0000-7000-8000-000000000000", {"DELETE"}),
        ("DELETE", "/api/v1/access/sessions", {"GET", "HEAD"}),
        ("POST", "/.well-known/jwks.json", {"GET", "HEAD"}),
        ("OPTIONS", "/health/ready", {"GET", "HEAD"}),
    ],
)
def test_405_allow_lists(http, base_url, method, path, allow):
    r = http.request(method, base_url + path)
    assert_problem(r, 405, "method_not_allowed")
    assert {m.strip() for m in r.headers["Allow"].split(",")} == allow


# ---------------------------------------------------------------- the input gate


def test_body_limit_boundary(http, base_url):
    """16384 bytes pass the gate (and fail validation); 16385 do not."""
    def body_of(n):
        head = '{"email":"edge@example.test","password":"'
        b = head + "p" * (n - len(head) - 2) + '"}'
        assert len(b) == n
        return b

    hdr = {"Content-Type": "application/json"}
    r = http.post(base_url + SIGNUP, data=body_of(16384), headers=hdr)
    assert_problem(r, 422, "invalid_password", "password")
    r = http.post(base_url + SIGNUP, data=body_of(16385), headers=hdr)
    assert_problem(r, 413, "payload_too_large")


def test_413_from_the_app(http, base_url):
    # 20 KB of valid JSON: above max_body_bytes (16384), below nginx's 64 KiB
    body = json.dumps({"email": "big@example.test", "password": "p" * 20000})
    assert 16384 < len(body) < 64 * 1024
    r = http.post(base_url + SIGNUP, data=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 413, "payload_too_large")
    # the service's own detail names the limit; nginx's page does not
    assert "16384" in r.json()["detail"]


def test_413_from_nginx(http, base_url):
    body = b'{"x":"' + b"a" * (100 * 1024) + b'"}'
    r = http.post(
        base_url + SIGNUP,
        data=body,
        headers={"Content-Type": "application/json", "X-Request-ID": "big-body-1"},
    )
    assert_problem(r, 413, "payload_too_large")
    assert r.headers["X-Request-ID"] == "big-body-1"
    assert r.headers["Cache-Control"] == "no-store"


def test_413_from_nginx_replaces_bad_request_id(http, base_url):
    # nginx answers bodies past its own limit itself; it cannot mint a
    # UUIDv7, so its pages use its $request_id (docs/decisions.md).
    body = b'{"x":"' + b"a" * (100 * 1024) + b'"}'
    r = http.post(base_url + SIGNUP, data=body,
                  headers={"Content-Type": "application/json", "X-Request-ID": "bad id"})
    assert r.status_code == 413
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"]), r.headers["X-Request-ID"]


def test_415_text_plain(http, base_url):
    r = http.post(
        base_url + SIGNUP,
        data=json.dumps({"email": "x@example.test", "password": "p" * 10}),
        headers={"Content-Type": "text/plain"},
    )
    assert_problem(r, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "ctype",
    ["application/jsonp", "application/x-www-form-urlencoded", "application/json-patch+json",
     "text/json"],
)
def test_415_other_types(http, base_url, ctype):
    r = http.post(base_url + SIGNUP, data=b'{"email":"x@example.test","password":"pppppppppp"}',
                  headers={"Content-Type": ctype})
    assert_problem(r, 415, "unsupported_media_type")


@pytest.mark.parametrize("ctype", ["application/json;charset=utf-8", "Application/JSON"])
def test_json_type_variants_pass_the_gate(http, base_url, ctype):
    # passes the media-type gate and fails validation (no hashing needed)
    r = http.post(base_url + SIGNUP, data=b'{"email":"x@example.test","password":"short"}',
                  headers={"Content-Type": ctype})
    assert_problem(r, 422, "invalid_password", "password")


def test_415_missing_content_type(http, base_url):
    r = http.post(base_url + SIGNUP, data=b'{"email":"x@example.test","password":"pppppppppp"}')
    assert_problem(r, 415, "unsupported_media_type")


def test_json_with_charset_is_accepted(http, base_url, unique_email):
    email = unique_email("charset")
    data = json.dumps({"email": email, "password": "correct horse"})
    for _ in range(10):
        r = http.post(
            base_url + SIGNUP, data=data,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        if r.status_code != 503:
            break
    assert r.status_code == 201, r.text
    assert r.json()["email"] == email


@pytest.mark.parametrize(
    "body",
    [b"this is not json", b'{"email":', b"{'email': 'a'}", b"",
     b'{"email":"x@example.test","password":"correct horse"} trailing',
     b'{"email":"\xff\xfe@example.test","password":"correct horse"}',
     b"[" * 8000 + b"]" * 8000],
    ids=["garbage", "truncated", "single-quotes", "empty", "trailing-garbage", "invalid-utf8",
         "nested-8000-deep"],
)
def test_400_invalid_json(http, base_url, body):
    r = http.post(base_url + SIGNUP, data=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "invalid_json")


@pytest.mark.parametrize("body", [b"[1]", b'"a string"', b"42", b"null"])
def test_422_body_not_an_object(http, base_url, body):
    r = http.post(base_url + SIGNUP, data=body, headers={"Content-Type": "application/json"})
    b = assert_problem(r, 422, "validation_failed")
    assert "field" in b


# ---------------------------------------------------------------- X-Request-ID


@pytest.mark.parametrize("rid", ["abc", "A.b-c_9", "x" * 64])
def test_request_id_echoed(http, base_url, rid):
    r = http.get(base_url + "/health/live", headers={"X-Request-ID": rid})
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == rid


@pytest.mark.parametrize(
    "rid",
    ["x" * 65, "has space", "semi;colon", "slash/x", "caf\u00e9", ""],
    ids=["65-chars", "space", "semicolon", "slash", "non-ascii", "empty"],
)
def test_request_id_replaced_by_uuidv7(base_url, rid):
    # http.client, so the non-ASCII id goes out as raw bytes
    status, hdrs, _ = raw_request(
        base_url, "GET", "/health/live", headers={"X-Request-ID": rid.encode("utf-8")}
    )
    assert status == 200
    got = hdrs["x-request-id"]
    assert got != rid
    assert UUID7_RE.match(got), got


def test_request_id_generated_when_absent_and_unique(http, base_url):
    ids = set()
    for _ in range(5):
        r = http.get(base_url + "/health/live")
        rid = r.headers["X-Request-ID"]
        assert UUID7_RE.match(rid), rid
        ids.add(rid)
    assert len(ids) == 5


def test_request_id_on_errors(http, base_url):
    r = http.post(base_url + SIGNUP, data=b"nope", headers={
        "Content-Type": "application/json", "X-Request-ID": "err-echo-1"})
    assert r.status_code == 400
    assert r.headers["X-Request-ID"] == "err-echo-1"
    r = http.post(base_url + SIGNUP, data=b"nope", headers={
        "Content-Type": "application/json", "X-Request-ID": "bad id"})
    assert r.status_code == 400
    assert UUID7_RE.match(r.headers["X-Request-ID"])
    r = http.get(base_url + "/api/v1/access/me")
    assert r.status_code == 401
    assert UUID7_RE.match(r.headers["X-Request-ID"])


# ---------------------------------------------------------------- Content-Length, Cache-Control


@pytest.mark.parametrize(
    "method,path,body,headers",
    [
        ("GET", "/health", None, {}),
        ("GET", "/health/live", None, {}),
        ("GET", "/.well-known/jwks.json", None, {}),
        ("GET", "/api/v1/access/nope", None, {}),
        ("POST", SIGNUP, b"garbage", {"Content-Type": "application/json"}),
        ("POST", "/health", b"", {}),
        ("POST", SIGNUP, b"a" * (100 * 1024), {"Content-Type": "application/json"}),
    ],
    ids=["health", "live", "jwks", "404", "400", "405", "413-nginx"],
)
def test_content_length_present_and_correct(base_url, method, path, body, headers):
    status, hdrs, data = raw_request(base_url, method, path, body=body, headers=headers)
    assert "content-length" in hdrs, hdrs
    assert "transfer-encoding" not in hdrs
    assert int(hdrs["content-length"]) == len(data) > 0
    json.loads(data)  # a whole JSON document


def test_cache_control(http, base_url):
    for path in ("/health", "/health/live", "/health/ready"):
        assert http.get(base_url + path).headers["Cache-Control"] == "no-store", path
    r = http.get(base_url + "/.well-known/jwks.json")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "public, max-age=300"
    r = http.post(base_url + SIGNUP, data=b"x", headers={"Content-Type": "application/json"})
    assert r.headers["Cache-Control"] == "no-store"
