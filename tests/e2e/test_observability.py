"""Observability through nginx (SPEC §3, §4, §5, §6): rate limits with their
429s and RateLimit headers, /metrics, the audit log and its spool.

Real nginx, PostgreSQL and Redis; no mocks. The local stack configures huge
rate limits, so the tests that need real ones restart the service with
ACCESS_RATELIMIT_* overrides through the `reconfigure` fixture, which
restarts it with var/access.conf alone afterwards (whatever the outcome), so
other test files see the usual configuration in any order.

Client addresses: every request here goes out on a fresh TCP connection from
a chosen loopback source address (http.client's source_address); nginx passes
it as REMOTE_ADDR, which is what the per-IP limiter keys on. Each test takes
addresses nobody used before (random ones in 127.0.0.0/8, never 127.0.0.1):
limiter state lives in Redis and survives service restarts, so a fixed
address would carry one run's exhausted allowance into the next run.
"""

import base64
import concurrent.futures
import http.client
import json
import math
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid

import jwt
import pytest
from conftest import OPENAPI
from conftest import wait_for as wait_until

API = "/api/v1/access"
PROBLEM = "application/problem+json"
PASSWORD = "correct horse battery"
WRONG = "wrong horse battery"
UA = "obs-e2e/1.0"
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RFC3339_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
# draft-ietf-httpapi-ratelimit-headers-09: a quoted policy name, then parameters
RL_POLICY_RE = re.compile(r'^"([a-z]+)";q=(\d+);w=(\d+)$')
RL_RE = re.compile(r'^"([a-z]+)";r=(\d+);t=(\d+)$')

# SPEC §6, with the type each family must have
FAMILIES = {
    "http_requests_total": "counter",
    "http_request_duration_seconds": "histogram",
    "cache_requests_total": "counter",
    "hash_queue_depth": "gauge",
    "hash_active": "gauge",
    "hash_duration_seconds": "histogram",
    "hash_rejected_total": "counter",
    "db_pool_connections": "gauge",
    "db_query_duration_seconds": "histogram",
    "db_slow_queries_total": "counter",
    "auth_attempts_total": "counter",
    "rate_limit_exceeded_total": "counter",
    "audit_queue_depth": "gauge",
    "audit_spooled_total": "counter",
    "worker_restarts_total": "counter",
    "build_info": "gauge",
}


# ---------------------------------------------------------------- HTTP helpers


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # http.client.HTTPMessage: case-insensitive
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Resp {self.status} {self.body[:300]!r}>"


def call(base_url, method, path, body=None, headers=None, source=None, timeout=15):
    """One request on a fresh connection, from loopback address `source`
    (None: the kernel's choice, 127.0.0.1)."""
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(
        u.hostname, u.port, timeout=timeout,
        source_address=(source, 0) if source else None)
    hdrs = {"User-Agent": UA}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        resp = Resp(r.status, r.msg, r.read())
        OPENAPI.check_raw(method, base_url + path, resp.status, r.getheaders(), resp.body)
        return resp
    finally:
        conn.close()


def bearer(token):
    return {"Authorization": "Bearer " + token}


def retry_overloaded(fn, attempts=20, pause=0.3):
    """fn() again while the hash pool sheds load (503 overloaded)."""
    for _ in range(attempts - 1):
        r = fn()
        if not (r.status == 503 and b'"overloaded"' in r.body):
            return r
        time.sleep(pause)
    return fn()


def signup(base_url, email):
    return retry_overloaded(lambda: call(base_url, "POST", API + "/signup",
                                         {"email": email, "password": PASSWORD}))


def login(base_url, email, password=PASSWORD):
    """(Not for tests of the login limit: a retry costs a unit.)"""
    return retry_overloaded(lambda: call(base_url, "POST", API + "/login",
                                         {"email": email, "password": password}))


def must_signup(base_url, email):
    r = signup(base_url, email)
    assert r.status == 201, r
    return r.json()


def must_login(base_url, email, password=PASSWORD):
    r = login(base_url, email, password)
    assert r.status == 200, r
    return r.json()


def sid_of(tokens):
    return jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]


def assert_problem(r, status, code=None, field=None):
    assert r.status == status, r
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == PROBLEM, r.headers
    assert int(r.headers["Content-Length"]) == len(r.body)
    body = r.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body.get("code"), str) and body["code"]
    if code is not None:
        assert body["code"] == code, body
    if field is not None:
        assert body.get("field") == field, body
    return body


def fresh_addr():
    """A loopback address no test has used (127.0.0.1 excluded)."""
    b = uuid.uuid4().bytes
    return f"127.{1 + b[0] % 254}.{b[1]}.{1 + b[2] % 254}"


# ---------------------------------------------------------------- rate-limit helpers


def rl_headers(r):
    """(policy name, q, w, r, t) from RateLimit-Policy and RateLimit, which
    must both be there and name the same policy."""
    pol, cur = r.headers.get("RateLimit-Policy"), r.headers.get("RateLimit")
    assert pol is not None and cur is not None, (r, dict(r.headers))
    mp, mc = RL_POLICY_RE.match(pol), RL_RE.match(cur)
    assert mp, f"RateLimit-Policy {pol!r} is not draft-09 syntax"
    assert mc, f"RateLimit {cur!r} is not draft-09 syntax"
    assert mp.group(1) == mc.group(1), (pol, cur)
    return mp.group(1), int(mp.group(2)), int(mp.group(3)), int(mc.group(2)), int(mc.group(3))


def assert_no_rl_headers(r):
    assert "RateLimit" not in r.headers and "RateLimit-Policy" not in r.headers, dict(r.headers)


def assert_429(r, name, q, w):
    """A rate-limited answer: problem document, Retry-After in whole seconds
    within the window, and both RateLimit headers with r=0. Returns
    Retry-After."""
    assert_problem(r, 429, "rate_limited")
    ra = r.headers.get("Retry-After")
    assert ra is not None and re.fullmatch(r"\d+", ra), f"Retry-After {ra!r}"
    assert 0 < int(ra) <= w, ra
    got = rl_headers(r)
    assert got[:3] == (name, q, w), got
    assert got[3] == 0, got
    assert 0 < got[4] <= w, got
    return int(ra)


# ---------------------------------------------------------------- stack helpers


def configured_workers(stack):
    for line in stack.conf_path.read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == "workers":
            return int(v.strip())
    raise AssertionError("no workers line in var/access.conf")


def wait_serving(stack, count, since=0, timeout=15):
    """Wait until `count` workers run and each has logged that it serves
    (a forked worker takes a moment to connect its pools and start its
    threads; until then its sibling gets every request). Returns the pids."""
    pids = stack.wait_workers(count, timeout=timeout)

    def serving():
        msgs = {rec.get("msg", "") for rec in stack.log_records(since)}
        return all(any(m.startswith(f"worker {p} serving") for m in msgs) for p in pids)

    wait_until(serving, timeout=timeout, interval=0.1, message=f"workers {pids} serving")
    return pids


@pytest.fixture
def reconfigure(stack):
    """reconfigure(env) restarts the service with these ACCESS_* overrides and
    returns the number of workers W once all W run. Afterwards the service is
    restarted with var/access.conf alone (everything else started first, in
    case the test stopped Redis or PostgreSQL)."""
    used = []

    def apply(env):
        used.append(env)
        since = stack.log_offset()
        stack.app_restart(env)
        w = int(env.get("ACCESS_WORKERS", configured_workers(stack)))
        wait_serving(stack, w, since)
        stack.wait_healthy()
        return w

    yield apply
    if used:
        stack.run("start")
        since = stack.log_offset()
        stack.app_restart()
        wait_serving(stack, configured_workers(stack), since)
        stack.wait_healthy()


def psql(stack, sql):
    """Run SQL as the service's role over TCP (the stack's pg_hba trusts
    loopback); the rows as text, '|'-separated."""
    out = subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "access", "-d",
         "access", "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        check=True, capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def sql_list(values):
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def proc_syscw(pid):
    """Write syscalls of pid so far (each answered request writes the
    response and a log line)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    raise AssertionError(f"no syscw in /proc/{pid}/io")


# ---------------------------------------------------------------- /metrics helpers

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset of label pairs): value} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"unparseable sample line {line!r}"
        labels = frozenset(LABEL_RE.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def get_metrics(base_url, source=None):
    r = call(base_url, "GET", "/metrics", source=source)
    assert r.status == 200, r
    return r


def metric(base_url, name, **labels):
    """One series' value (0 when the series is not rendered: http_requests_total
    only lists series that counted something)."""
    samples = parse_metrics(get_metrics(base_url).body.decode())
    return samples.get((name, frozenset(labels.items())), 0.0)


# ================================================================ 1. per-IP limits


@pytest.fixture
def small_ip_limits(reconfigure):
    return reconfigure({
        "ACCESS_RATELIMIT_LOGIN": "5/3600",
        "ACCESS_RATELIMIT_SIGNUP": "3/86400",
        "ACCESS_RATELIMIT_ANONYMOUS": "4/3600",
    })


def test_login_limit_per_address(small_ip_limits, base_url, unique_email):
    a, b = fresh_addr(), fresh_addr()
    email = unique_email("rl-login")
    metric_before = metric(base_url, "rate_limit_exceeded_total", **{"class": "login"})
    login_429 = dict(route=API + "/login", method="POST", status="429")
    http_before = metric(base_url, "http_requests_total", **login_429)
    # 5 logins pass the limiter (wrong password: 401) and say how many are left
    for i in range(1, 6):
        # (no retry on 503 overloaded here: every attempt costs a unit)
        r = call(base_url, "POST", API + "/login", {"email": email, "password": WRONG},
                 source=a)
        assert_problem(r, 401, "invalid_credentials")
        name, q, w, rem, t = rl_headers(r)
        assert (name, q, w) == ("login", 5, 3600)
        assert r.headers["RateLimit-Policy"] == '"login";q=5;w=3600'
        assert rem == 5 - i, r.headers["RateLimit"]
        # GCRA: each unit pushes the full-again time one interval (720 s) out
        assert i * 720 - 60 <= t <= i * 720, r.headers["RateLimit"]
        assert "Retry-After" not in r.headers
    # the 6th and 7th are refused before any password check, right or wrong
    for pw in (WRONG, PASSWORD):
        r = call(base_url, "POST", API + "/login", {"email": email, "password": pw}, source=a)
        ra = assert_429(r, "login", 5, 3600)
        assert r.headers["RateLimit-Policy"] == '"login";q=5;w=3600'
        # one unit comes back after one interval
        assert 600 <= ra <= 720, ra
    # X-Forwarded-For is not the client address (SPEC §4: REMOTE_ADDR only)
    r = call(base_url, "POST", API + "/login", {"email": email, "password": WRONG}, source=a,
             headers={"X-Forwarded-For": fresh_addr(), "X-Real-IP": fresh_addr()})
    assert_429(r, "login", 5, 3600)
    # another address has its own allowance
    r = call(base_url, "POST", API + "/login", {"email": email, "password": WRONG}, source=b)
    assert_problem(r, 401, "invalid_credentials")
    assert rl_headers(r)[3] == 4
    after = metric(base_url, "rate_limit_exceeded_total", **{"class": "login"})
    assert after == metric_before + 3
    assert metric(base_url, "http_requests_total", **login_429) == http_before + 3


def test_signup_limit_per_address(small_ip_limits, base_url, unique_email):
    a, b = fresh_addr(), fresh_addr()
    for i in range(1, 4):
        r = call(base_url, "POST", API + "/signup",
                 {"email": unique_email("rl-signup"), "password": PASSWORD}, source=a)
        assert r.status == 201, r
        assert r.headers["RateLimit-Policy"] == '"signup";q=3;w=86400'
        assert rl_headers(r)[3] == 3 - i
    email = unique_email("rl-signup")
    r = call(base_url, "POST", API + "/signup", {"email": email, "password": PASSWORD}, source=a)
    assert_429(r, "signup", 3, 86400)
    # nothing was stored for the refused one: the address next door may take it
    r = call(base_url, "POST", API + "/signup", {"email": email, "password": PASSWORD},
             source=b)
    assert r.status == 201, r
    assert rl_headers(r)[3] == 2


def test_anonymous_limit_per_address(small_ip_limits, base_url):
    a, b = fresh_addr(), fresh_addr()
    for i in range(1, 5):
        r = call(base_url, "GET", "/.well-known/jwks.json", source=a)
        assert r.status == 200, r
        assert r.headers["Cache-Control"] == "public, max-age=300"
        assert r.headers["RateLimit-Policy"] == '"anonymous";q=4;w=3600'
        assert rl_headers(r)[3] == 4 - i
    r = call(base_url, "GET", "/.well-known/jwks.json", source=a)
    assert_429(r, "anonymous", 4, 3600)
    # refresh is an anonymous route too, charged before the body is looked at
    r = call(base_url, "POST", API + "/refresh", {"refresh_token": "x"}, source=a)
    assert_429(r, "anonymous", 4, 3600)
    r = call(base_url, "GET", "/.well-known/jwks.json", source=b)
    assert r.status == 200 and rl_headers(r)[3] == 3


def test_anonymous_limit_exact_under_concurrency(small_ip_limits, base_url):
    """Redis decides every per-IP request atomically: a burst of 24 from 8
    threads (spread over every worker) lets exactly the limit through."""
    a = fresh_addr()
    results, lock = [], threading.Lock()

    def client():
        for _ in range(3):
            r = call(base_url, "GET", "/.well-known/jwks.json", source=a)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 24
    ok = [r for r in results if r.status == 200]
    assert len(ok) == 4, sorted(r.status for r in results)
    assert sorted(rl_headers(r)[3] for r in ok) == [0, 1, 2, 3]
    for r in results:
        if r.status != 200:
            assert_429(r, "anonymous", 4, 3600)


def test_health_and_metrics_never_limited(small_ip_limits, base_url):
    a = fresh_addr()
    # use up the address's anonymous allowance first
    codes = [call(base_url, "GET", "/.well-known/jwks.json", source=a).status for _ in range(5)]
    assert codes == [200] * 4 + [429]
    for path, source in (("/health", a), ("/health/ready", a), ("/health/live", a),
                         ("/metrics", None)):  # /metrics only for metrics_allow (127.0.0.1)
        statuses = {}
        for _ in range(200):
            r = call(base_url, "GET", path, source=source)
            statuses[r.status] = statuses.get(r.status, 0) + 1
            assert_no_rl_headers(r)
        assert statuses == {200: 200}, (path, statuses)


# ================================================================ 2. Redis away


def test_limits_fall_back_per_process_without_redis(reconfigure, fault_stack, base_url,
                                                    wait_for, no_keepalive):
    stack = fault_stack
    w = configured_workers(stack)
    assert w >= 2, "this test needs several workers"
    # A limit that W does not divide, so the per-process fallback (each worker
    # allows ceil(L/W), W*ceil(L/W) > L in all) is told apart from Redis (L).
    limit = 2 * w + 1
    per_worker = math.ceil(limit / w)
    reconfigure({"ACCESS_RATELIMIT_ANONYMOUS": f"{limit}/3600"})

    stack.redis_stop()

    def degraded():
        r = call(base_url, "GET", "/health")
        return r.status == 200 and r.json()["status"] == "degraded"

    wait_for(degraded, timeout=10, message="/health degraded with Redis down")
    def one_address():
        a = fresh_addr()
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(
                lambda _: call(base_url, "GET", "/.well-known/jwks.json", source=a),
                range(12 * w)))
        allowed, refused = 0, 0
        for r in results:
            if r.status == 200:
                allowed += 1
                name, q, win, rem, _t = rl_headers(r)
                # the policy advertised is the machine-wide one; what is left
                # is this worker's share
                assert (name, q, win) == ("anonymous", limit, 3600)
                assert rem < per_worker
            else:
                assert_429(r, "anonymous", limit, 3600)
                refused += 1
        # never more than every worker's share
        assert allowed <= w * per_worker, (allowed, refused)
        assert allowed + refused == 12 * w
        return allowed, refused

    # Each worker allows ceil(L/W) to an address; requests on fresh
    # connections spread over the workers, and once every worker has had
    # its share more than L got through. Which worker accepts is up to the
    # scheduler (on a busy box one can win every accept of a batch), so a
    # new address is tried, at most 5 times, until the sum shows it.
    for _ in range(5):
        allowed, refused = one_address()
        if allowed > limit:
            break
    assert limit < allowed <= w * per_worker, (allowed, refused)

    stack.redis_start()
    wait_for(lambda: call(base_url, "GET", "/health").json()["status"] == "ok", timeout=10,
             message="/health ok with Redis back")

    # Redis is used again by every worker: a fresh address's first request
    # sees the shared allowance (L-1 left), not a worker's share
    # (ceil(L/W)-1). Ask until 4W fresh addresses in a row say so.
    def shared_again():
        for _ in range(4 * w):
            r = call(base_url, "GET", "/.well-known/jwks.json", source=fresh_addr())
            if r.status != 200 or rl_headers(r)[3] != limit - 1:
                return False
        return True

    wait_for(shared_again, timeout=15, interval=0.2, message="every worker on Redis again")
    b = fresh_addr()
    results = [call(base_url, "GET", "/.well-known/jwks.json", source=b) for _ in range(12 * w)]
    ok = [r for r in results if r.status == 200]
    assert len(ok) == limit, [r.status for r in results]
    assert [rl_headers(r)[3] for r in ok] == list(range(limit - 1, -1, -1))
    for r in results:
        if r.status != 200:
            assert_429(r, "anonymous", limit, 3600)


# ================================================================ 3. per-user limit


def test_authenticated_limit_per_user(reconfigure, stack, base_url, unique_email):
    limit, window = 40, 60
    w = reconfigure({"ACCESS_RATELIMIT_AUTHENTICATED": f"{limit}/{window}"})
    block = max(1, math.ceil(limit / 20))  # lib/ratelimit.h: the lease size
    interval = window / limit  # GCRA: one unit comes back every 1.5 s
    email, other = unique_email("rl-user"), unique_email("rl-other")
    must_signup(base_url, email)
    must_signup(base_url, other)
    tok = must_login(base_url, email)["access_token"]
    other_tok = must_login(base_url, other)["access_token"]

    denied0 = metric(base_url, "rate_limit_exceeded_total", **{"class": "authenticated"})
    statuses = []
    t0 = time.monotonic()
    for _ in range(200):
        r = call(base_url, "GET", API + "/me", headers=bearer(tok))
        statuses.append(r.status)
        if r.status == 200:
            assert rl_headers(r)[:3] == ("authenticated", limit, window)
        else:
            ra = assert_429(r, "authenticated", limit, window)
            assert ra <= math.ceil(interval) + 1, ra
    elapsed = time.monotonic() - t0
    allowed = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    # Bounds (lib/ratelimit.h). Each worker leases `block` units of the user's
    # allowance from Redis and spends them locally:
    # - at most W blocks leased before the last window can be spent on top
    #   of what Redis grants: <= limit + W*block;
    # - units a worker leased but the user no longer reaches stay charged:
    #   at most (W-1)*block lie unspent elsewhere: >= limit - (W-1)*block.
    # GCRA also gives one unit back every window/limit seconds, so a run
    # lasting `elapsed` seconds may see that many more.
    regained = math.floor(elapsed / interval) + 1
    assert limit - (w - 1) * block <= allowed <= limit + w * block + regained, \
        (allowed, elapsed, w)
    assert metric(base_url, "rate_limit_exceeded_total", **{"class": "authenticated"}) == \
        denied0 + statuses.count(429)
    # the limit is per user: the other user is not affected
    r = call(base_url, "GET", API + "/me", headers=bearer(other_tok))
    assert r.status == 200, r
    name, q, win, rem, _t = rl_headers(r)
    assert (name, q, win) == ("authenticated", limit, window)
    assert rem >= limit - 2 * block
    # the per-user class is charged after the token check: an unknown token
    # is a 401, not a 429
    r = call(base_url, "GET", API + "/me", headers=bearer("x.y.z"))
    assert_problem(r, 401, "invalid_token")


# ================================================================ 4. /metrics


def test_metrics_format(base_url, stack):
    # some traffic on a few routes and statuses first
    for path in ("/health", "/health/live", "/.well-known/jwks.json", API + "/me",
                 API + "/nope"):
        call(base_url, "GET", path)
    time.sleep(0.05)
    r = get_metrics(base_url)
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    assert int(r.headers["Content-Length"]) == len(r.body)
    assert r.headers.get("X-Request-ID")
    text = r.body.decode()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    helps = dict(re.findall(r"^# HELP (\S+) (.+)$", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name, kind in FAMILIES.items():
        assert name in helps and helps[name].strip(), f"# HELP {name} missing"
        assert types.get(name) == kind, f"# TYPE {name}: {types.get(name)} (want {kind})"
    samples = parse_metrics(text)
    names = {n for n, _ in samples}
    for name, kind in FAMILIES.items():
        if kind == "histogram":
            if name == "http_request_duration_seconds":
                continue  # per route, only routes that ran; checked below
            assert {name + "_bucket", name + "_sum", name + "_count"} <= names, name
        else:
            assert name in names, name
    # labels as SPEC §6 names them
    for (name, labels) in samples:
        keys = {k for k, _ in labels}
        if name == "http_requests_total":
            assert keys == {"route", "method", "status"}, labels
        elif name == "cache_requests_total":
            assert keys == {"layer", "result"}
        elif name == "auth_attempts_total":
            assert keys == {"method", "result"}
        elif name == "rate_limit_exceeded_total":
            assert keys == {"class"}
        elif name == "db_pool_connections":
            assert keys == {"state"}
        elif name.startswith("http_request_duration_seconds"):
            assert "route" in keys
    # histograms: cumulative buckets, +Inf == _count; and every answered
    # request is in both http_requests_total and its route's histogram
    hists = {}
    for (name, labels), v in samples.items():
        if name.endswith("_bucket"):
            d = dict(labels)
            le = d.pop("le")
            key = (name[:-len("_bucket")], frozenset(d.items()))
            hists.setdefault(key, []).append((math.inf if le == "+Inf" else float(le), v))
    assert hists
    for (base, labels), buckets in hists.items():
        buckets.sort()
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), (base, labels, buckets)
        assert buckets[-1][0] == math.inf
        assert samples[(base + "_count", labels)] == counts[-1], (base, labels)
        assert samples[(base + "_sum", labels)] >= 0
    per_route = {}
    for (name, labels), v in samples.items():
        if name == "http_requests_total":
            route = dict(labels)["route"]
            per_route[route] = per_route.get(route, 0) + v
    for route, n in per_route.items():
        key = ("http_request_duration_seconds_count", frozenset({"route": route}.items()))
        # (the request asking for /metrics is counted after it is answered)
        assert samples.get(key) == n, (route, n, samples.get(key))
    build = [v for (n, _), v in samples.items() if n == "build_info"]
    assert build == [1.0]
    # the request that asked is counted once it is over: the next one sees it
    assert metric(base_url, "http_requests_total", route="/metrics", method="GET",
                  status="200") >= 1


def test_metrics_counters_add_up_across_workers(base_url, stack, wait_for, no_keepalive):
    workers = wait_serving(stack, configured_workers(stack))
    assert len(workers) >= 2, workers
    series = dict(route="/health/live", method="GET", status="200")
    before = metric(base_url, "http_requests_total", **series)
    writes = {p: proc_syscw(p) for p in workers}
    # A FastCGI connection per request (no_keepalive), in parallel: whichever
    # worker accepts answers. Rounds until at least two workers have answered
    # some, each from a reloaded nginx.
    n, par, sent = 200, 20, 0
    statuses = []

    def client():
        for _ in range(n // par):
            statuses.append(call(base_url, "GET", "/health/live").status)

    served = {}
    for _round in range(8):
        stack.nginx_reload()
        threads = [threading.Thread(target=client) for _ in range(par)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sent += n
        # >= 2 writes per request: response, log line
        served = {p: proc_syscw(p) - writes[p] for p in workers}
        if sum(1 for v in served.values() if v >= 20) >= 2:
            break
    assert statuses == [200] * sent
    assert sum(1 for v in served.values() if v >= 20) >= 2, served
    # the worker counts a request right after it has answered it
    want = before + sent
    got = wait_for(lambda: (lambda v: v if v == want else None)(
        metric(base_url, "http_requests_total", **series)), timeout=3,
        message=f"http_requests_total /health/live == {want}")
    assert got == want
    time.sleep(0.3)
    assert metric(base_url, "http_requests_total", **series) == want, "counted more than sent"


def _age(pid):
    with open(f"/proc/{pid}/stat") as f:
        start = int(f.read().rpartition(")")[2].split()[19])
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return up - start / os.sysconf("SC_CLK_TCK")


def test_metrics_survive_a_worker_kill(fault_stack, base_url, wait_for):
    """A restarted worker takes over its predecessor's slot: totals never go
    back, and worker_restarts_total counts the restart."""
    stack = fault_stack
    sup, workers = stack.app_pids()
    assert sup and len(workers) >= 2
    series = dict(route="/health/live", method="GET", status="200")
    for _ in range(40):
        assert call(base_url, "GET", "/health/live").status == 200
    time.sleep(0.05)
    before = metric(base_url, "http_requests_total", **series)
    restarts = metric(base_url, "worker_restarts_total")
    victim = workers[0]
    # the supervisor backs off for workers that die young: kill a settled one
    time.sleep(max(0.0, 2.5 - _age(victim)))
    os.kill(victim, signal.SIGKILL)
    stack.wait_workers(len(workers), timeout=10, exclude=(victim,))
    wait_for(lambda: metric(base_url, "worker_restarts_total") == restarts + 1, timeout=5,
             message="worker_restarts_total += 1")
    assert metric(base_url, "http_requests_total", **series) == before
    for _ in range(40):
        assert call(base_url, "GET", "/health/live").status == 200
    time.sleep(0.05)
    assert metric(base_url, "http_requests_total", **series) == before + 40


def test_metrics_routes_are_templates(base_url, unique_email):
    email = unique_email("tmpl")
    must_signup(base_url, email)
    a = must_login(base_url, email)
    b = must_login(base_url, email)
    sid_b, stray = sid_of(b), str(uuid.uuid4())
    tok = a["access_token"]
    before_204 = metric(base_url, "http_requests_total", route=API + "/sessions/{id}",
                        method="DELETE", status="204")
    before_404 = metric(base_url, "http_requests_total", route=API + "/sessions/{id}",
                        method="DELETE", status="404")
    r = call(base_url, "DELETE", API + "/sessions/" + sid_b, headers=bearer(tok))
    assert r.status == 204, r
    r = call(base_url, "DELETE", API + "/sessions/" + stray, headers=bearer(tok))
    assert_problem(r, 404, "not_found")
    unknown = API + "/no-such-thing-" + uuid.uuid4().hex
    assert_problem(call(base_url, "GET", unknown), 404, "not_found")
    time.sleep(0.05)
    text = get_metrics(base_url).body.decode()
    samples = parse_metrics(text)
    key = lambda status: ("http_requests_total", frozenset(  # noqa: E731
        {"route": API + "/sessions/{id}", "method": "DELETE", "status": status}.items()))
    assert samples.get(key("204")) == before_204 + 1
    assert samples.get(key("404")) == before_404 + 1
    for raw in (sid_b, stray, unknown):
        assert raw not in text, f"raw path {raw} in /metrics"
    routes = {dict(labels).get("route") for (n, labels) in samples if n == "http_requests_total"}
    templates = {"unmatched", "/health", "/health/live", "/health/ready", "/metrics",
                 "/.well-known/jwks.json"} | {API + p for p in (
                     "/signup", "/login", "/refresh", "/logout", "/me", "/password",
                     "/sessions", "/sessions/{id}", "/audit")}
    assert routes <= templates, routes - templates
    assert "unmatched" in routes


def test_metrics_forbidden_outside_metrics_allow(reconfigure, base_url):
    reconfigure({"ACCESS_METRICS_ALLOW": "127.0.0.1/32"})
    for source in ("127.0.0.2", fresh_addr()):
        r = call(base_url, "GET", "/metrics", source=source)
        body = assert_problem(r, 403)
        assert b"http_requests_total" not in r.body
        assert body["title"] == "Forbidden"
    assert get_metrics(base_url, source="127.0.0.1").status == 200


def test_metrics_auth_attempts_and_cache(base_url, unique_email, wait_for):
    email = unique_email("authm")
    must_signup(base_url, email)
    fail = dict(method="password", result="failure")
    ok = dict(method="password", result="success")
    f0, s0 = metric(base_url, "auth_attempts_total", **fail), \
        metric(base_url, "auth_attempts_total", **ok)
    assert_problem(login(base_url, email, WRONG), 401, "invalid_credentials")
    assert metric(base_url, "auth_attempts_total", **fail) == f0 + 1
    tok = must_login(base_url, email)["access_token"]
    assert metric(base_url, "auth_attempts_total", **ok) == s0 + 1

    bearer_ok = dict(method="bearer", result="success")
    b0 = metric(base_url, "auth_attempts_total", **bearer_ok)
    hits0 = metric(base_url, "cache_requests_total", layer="l1", result="hit")
    for _ in range(30):
        assert call(base_url, "GET", API + "/me", headers=bearer(tok)).status == 200
    assert metric(base_url, "auth_attempts_total", **bearer_ok) == b0 + 30
    # cache counters are per process, folded into the registry every second
    # (and by /metrics on the worker that answers it)
    wait_for(lambda: metric(base_url, "cache_requests_total", layer="l1",
                            result="hit") >= hits0 + 20,
             timeout=3, message="cache_requests_total{layer=l1,result=hit} to rise")


# ================================================================ 5. GET /audit


def audit_page(base_url, token, **params):
    q = urllib.parse.urlencode(params)
    return call(base_url, "GET", API + "/audit" + ("?" + q if q else ""), headers=bearer(token))


def test_audit_lists_own_events_newest_first(base_url, unique_email, wait_for):
    email, other = unique_email("audit"), unique_email("audit-other")
    must_signup(base_url, email)                                         # signup
    s1 = must_login(base_url, email)                                     # login_succeeded
    assert login(base_url, email, WRONG).status == 401                   # login_failed
    s2 = must_login(base_url, email)                                     # login_succeeded
    r = call(base_url, "POST", API + "/refresh", {"refresh_token": s2["refresh_token"]})
    assert r.status == 200, r                                            # refresh
    r = call(base_url, "POST", API + "/refresh", {"refresh_token": s2["refresh_token"]})
    assert_problem(r, 401, "invalid_token")                              # refresh_reuse_detected
    s3 = must_login(base_url, email)                                     # login_succeeded
    r = call(base_url, "DELETE", API + "/sessions/" + sid_of(s1),
             headers=bearer(s3["access_token"]))
    assert r.status == 204, r                                            # session_revoked
    new_pw = PASSWORD + " 2"
    r = retry_overloaded(lambda: call(
        base_url, "POST", API + "/password",
        {"current_password": PASSWORD, "new_password": new_pw},
        headers=bearer(s3["access_token"])))
    assert r.status == 204, r                                            # password_changed
    r = call(base_url, "POST", API + "/logout", headers=bearer(s3["access_token"]))
    assert r.status == 204, r                                            # logout
    s4 = must_login(base_url, email, new_pw)                             # login_succeeded
    tok = s4["access_token"]
    expected = ["login_succeeded", "logout", "password_changed", "session_revoked",
                "login_succeeded", "refresh_reuse_detected", "refresh", "login_succeeded",
                "login_failed", "login_succeeded", "signup"]

    # someone else's events, made meanwhile
    must_signup(base_url, other)
    o = must_login(base_url, other)
    assert login(base_url, other, WRONG).status == 401

    # the writer inserts in batches: wait until all are there
    def complete():
        r = audit_page(base_url, tok, limit=100)
        return r.json()["items"] if r.status == 200 and \
            len(r.json()["items"]) >= len(expected) else None

    items = wait_for(complete, timeout=10, message="all audit events listed")
    assert [e["type"] for e in items] == expected, [e["type"] for e in items]
    for e in items:
        assert set(e) == {"id", "type", "created_at", "ip", "user_agent", "detail"}, e
        assert UUID7_RE.match(e["id"]), e
        assert RFC3339_UTC_RE.match(e["created_at"]), e
        assert e["ip"] == "127.0.0.1"
        assert e["user_agent"] == UA
        assert isinstance(e["detail"], dict)
    stamps = [(e["created_at"], e["id"]) for e in items]
    assert stamps == sorted(stamps, reverse=True)
    assert len({e["id"] for e in items}) == len(items)
    # details name the session or the failed attempt
    assert items[9]["detail"]["session_id"] == sid_of(s1)
    assert items[8]["detail"] == {"email": email, "reason": "bad_credentials"}
    assert items[7]["detail"]["session_id"] == sid_of(s2)
    assert items[6]["detail"]["session_id"] == sid_of(s2)
    assert items[5]["detail"]["session_id"] == sid_of(s2)
    assert items[4]["detail"]["session_id"] == sid_of(s3)
    assert items[3]["detail"]["session_id"] == sid_of(s1)
    assert items[1]["detail"]["session_id"] == sid_of(s3)
    assert items[0]["detail"]["session_id"] == sid_of(s4)

    # default page: 20
    r = audit_page(base_url, tok)
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert r.json() == {"items": items, "next_cursor": None}

    # the other user sees only their own three
    def other_complete():
        r = audit_page(base_url, o["access_token"], limit=100)
        return r.json()["items"] if len(r.json()["items"]) >= 3 else None

    o_items = wait_for(other_complete, timeout=10, message="the other user's events")
    assert [e["type"] for e in o_items] == ["login_failed", "login_succeeded", "signup"]
    assert not {e["id"] for e in o_items} & {e["id"] for e in items}
    assert o_items[0]["detail"]["email"] == other
    # and that did not leak into the first user's list
    assert [e["id"] for e in audit_page(base_url, tok, limit=100).json()["items"]] == \
        [e["id"] for e in items]


@pytest.fixture
def audited_user(base_url, unique_email, wait_for):
    """A user with 7 audit events (signup, 5 logins, 1 failed login) listed."""
    email = unique_email("auditpg")
    must_signup(base_url, email)
    toks = [must_login(base_url, email) for _ in range(5)]
    assert login(base_url, email, WRONG).status == 401
    tok = toks[-1]["access_token"]
    wait_for(lambda: len(audit_page(base_url, tok, limit=100).json()["items"]) == 7,
             timeout=10, message="7 audit events")
    return tok


def test_audit_pagination(base_url, audited_user):
    tok = audited_user
    full = audit_page(base_url, tok, limit=100).json()
    assert full["next_cursor"] is None
    ids = [e["id"] for e in full["items"]]
    for size in (1, 2, 3, 7):
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": size}
            if cursor:
                params["cursor"] = cursor
            r = audit_page(base_url, tok, **params)
            assert r.status == 200, r
            page = r.json()
            assert set(page) == {"items", "next_cursor"}
            assert 1 <= len(page["items"]) <= size
            seen += [e["id"] for e in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert isinstance(cursor, str) and cursor
            assert pages <= 7
        assert seen == ids, f"limit={size}: gaps or duplicates"
        assert pages == math.ceil(7 / size)


def test_audit_fields(base_url, audited_user):
    tok = audited_user
    r = audit_page(base_url, tok, fields="id,type", limit=3)
    assert r.status == 200, r
    items = r.json()["items"]
    assert len(items) == 3
    assert all(set(e) == {"id", "type"} for e in items), items
    r = audit_page(base_url, tok, fields="detail")
    assert r.status == 200
    assert all(set(e) == {"detail"} for e in r.json()["items"])
    for bad in ("id,nope", "user_id", "id,password_hash", ""):
        r = audit_page(base_url, tok, fields=bad)
        if bad == "" and r.status == 200:
            continue  # an empty list may mean "all fields"
        assert_problem(r, 422, "validation_failed", "fields")


def _b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_audit_bad_cursor_limit_and_token(base_url, audited_user):
    tok = audited_user
    cursor = audit_page(base_url, tok, limit=2).json()["next_cursor"]
    assert cursor
    assert audit_page(base_url, tok, cursor=cursor).status == 200
    raw = bytearray(_b64url_decode(cursor))
    for i in (len(raw) - 1, len(raw) // 2, 0):
        forged = bytearray(raw)
        c = chr(forged[i])
        forged[i] = (ord("0") if c != "0" else ord("1")) if c in "0123456789abcdef" \
            else forged[i] ^ 1
        r = audit_page(base_url, tok, cursor=_b64url(bytes(forged)))
        assert_problem(r, 400, "invalid_cursor")
    for bad in ("garbage!!", "AAAA", "x" * 300):
        assert_problem(audit_page(base_url, tok, cursor=bad), 400, "invalid_cursor")
    for limit in ("0", "101", "abc"):
        assert_problem(audit_page(base_url, tok, limit=limit), 422, "validation_failed", "limit")
    r = call(base_url, "GET", API + "/audit")
    assert_problem(r, 401, "invalid_token")
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_audit_cursor_of_another_user_lists_nothing_of_theirs(base_url, audited_user,
                                                              unique_email):
    """A cursor is a position, not a capability: used with another token it
    pages through that token's user only."""
    cursor = audit_page(base_url, audited_user, limit=1).json()["next_cursor"]
    theirs = {e["id"] for e in audit_page(base_url, audited_user, limit=100).json()["items"]}
    email = unique_email("audit-stranger")
    must_signup(base_url, email)
    tok = must_login(base_url, email)["access_token"]
    r = audit_page(base_url, tok, cursor=cursor, limit=100)
    if r.status == 200:
        assert not {e["id"] for e in r.json()["items"]} & theirs
    else:
        assert_problem(r, 400, "invalid_cursor")


# ================================================================ 6. audit without PostgreSQL


def spool_lines(stack):
    """The spooled events: the spool, and the replay file a replay round
    moved them to (a failed round, PostgreSQL still away, leaves them there
    for the next round; lib/audit.h)."""
    lines = []
    for name in ("audit.spool", "audit.spool.replay"):
        try:
            lines += (stack.var / name).read_text().splitlines()
        except FileNotFoundError:
            pass
    return lines


def failed_logins_in_db(stack, emails):
    """{email: [reason, ...]} of login_failed events stored for these emails."""
    rows = psql(stack, "SELECT detail->>'email', detail->>'reason' FROM audit_events "
                       f"WHERE type = 'login_failed' AND detail->>'email' IN ({sql_list(emails)})")
    out = {}
    for line in rows.splitlines():
        e, _, reason = line.partition("|")
        out.setdefault(e, []).append(reason)
    return out


def test_audit_spooled_while_postgres_is_down(fault_stack, base_url, unique_email, wait_for):
    stack = fault_stack
    spooled0 = metric(base_url, "audit_spooled_total")
    # sessions to log out of while PostgreSQL is away (max_sessions_per_user
    # is 10: four users with five sessions each)
    sessions = []
    for _ in range(4):
        owner = unique_email("spool-owner")
        must_signup(base_url, owner)
        sessions += [must_login(base_url, owner)["access_token"] for _ in range(5)]
    for tok in sessions:  # cached, so the token check needs no database
        assert call(base_url, "GET", API + "/me", headers=bearer(tok)).status == 200
    owner_ids = {jwt.decode(t, options={"verify_signature": False})["sub"] for t in sessions}
    emails = [unique_email("spool") for _ in range(20)]

    stack.pg_stop()
    try:
        wait_for(lambda: call(base_url, "GET", "/health/ready").status == 503, timeout=10,
                 message="/health/ready 503 with PostgreSQL down")
        for e in emails:
            r = call(base_url, "POST", API + "/login", {"email": e, "password": PASSWORD})
            assert_problem(r, 503, "unavailable")
            assert r.headers.get("Retry-After")
        # revoking a session needs PostgreSQL: 503, and no session is revoked
        for tok in sessions:
            r = call(base_url, "POST", API + "/logout", headers=bearer(tok))
            assert_problem(r, 503, "unavailable")
        # every refused login is in the spool file already (fsync'd before
        # the answer, or moved there by the writer when its insert failed)
        wait_for(lambda: all(sum(e in line for line in spool_lines(stack)) == 1
                             for e in emails),
                 timeout=5, message="20 login_failed events in the spool")
    finally:
        pg_back_at = time.time()
        stack.pg_start()

    got = wait_for(lambda: (lambda d: d if len(d) == 20 else None)(
        failed_logins_in_db(stack, emails)), timeout=15, message="20 events replayed")
    assert sorted(got) == sorted(emails)
    assert all(v == ["unavailable"] for v in got.values()), got
    # replayed as they were made: time of the attempt, address, user agent
    rows = psql(stack, "SELECT count(*) FROM audit_events WHERE type = 'login_failed' "
                       f"AND detail->>'email' IN ({sql_list(emails)}) AND user_id IS NULL "
                       f"AND ip = '127.0.0.1' AND user_agent = '{UA}' "
                       f"AND created_at < to_timestamp({pg_back_at})")
    assert rows == "20"
    wait_for(lambda: (stack.var / "audit.spool").stat().st_size == 0, timeout=10,
             message="the spool emptied after the replay")
    # replaying once more must not duplicate anything
    time.sleep(1.5)
    assert failed_logins_in_db(stack, emails) == got
    assert psql(stack, "SELECT count(*) FROM audit_events WHERE type = 'logout' "
                       f"AND user_id IN ({sql_list(owner_ids)})") == "0"
    # each event went to the spool once (folded into the registry every second)
    wait_for(lambda: metric(base_url, "audit_spooled_total") >= spooled0 + 20, timeout=5,
             message="audit_spooled_total += 20")
    time.sleep(1.2)
    assert metric(base_url, "audit_spooled_total") == spooled0 + 20
    assert metric(base_url, "audit_queue_depth") == 0
    # the refused logouts left the sessions alive
    wait_for(lambda: call(base_url, "GET", "/health/ready").status == 200, timeout=15)
    for tok in sessions:
        assert call(base_url, "GET", API + "/me", headers=bearer(tok)).status == 200


def test_audit_flushed_on_sigterm(fault_stack, base_url, unique_email, wait_for):
    stack = fault_stack
    emails = [unique_email("drain") for _ in range(10)]
    for e in emails:
        assert_problem(login(base_url, e, WRONG), 401, "invalid_credentials")
    # straight away: the events may still be queued in the workers
    stack.app_stop()
    # stopped: what is not in PostgreSQL now can only be in the spool
    stored = failed_logins_in_db(stack, emails)
    spooled = spool_lines(stack)
    for e in emails:
        n = len(stored.get(e, [])) + sum(e in line for line in spooled)
        assert n == 1, f"{e}: {n} copies after the drain"
    stack.app_start()
    got = wait_for(lambda: (lambda d: d if len(d) == 10 else None)(
        failed_logins_in_db(stack, emails)), timeout=10, message="10 events in audit_events")
    assert all(v == ["bad_credentials"] for v in got.values()), got


def test_audit_not_lost_with_logins_in_flight_at_sigterm(fault_stack, base_url, unique_email,
                                                         wait_for):
    """Logins keep coming while the service drains: every login the service
    answered 401 has its login_failed event stored exactly once."""
    stack = fault_stack
    answered, lock, stop = [], threading.Lock(), threading.Event()

    def client():
        while not stop.is_set():
            e = unique_email("inflight")
            try:
                r = call(base_url, "POST", API + "/login", {"email": e, "password": WRONG},
                         timeout=10)
            except OSError:
                continue
            if r.status == 401:
                with lock:
                    answered.append(e)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(answered) >= 8, timeout=20, message="some answered logins")
    try:
        stack.app_stop()
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    stack.app_start()
    with lock:
        emails = list(answered)
    assert emails
    got = wait_for(lambda: (lambda d: d if len(d) == len(emails) else None)(
        failed_logins_in_db(stack, emails)), timeout=10,
        message=f"{len(emails)} events in audit_events")
    assert all(v == ["bad_credentials"] for v in got.values()), got


def test_audit_spool_survives_a_restart_while_postgres_is_down(fault_stack, base_url,
                                                               unique_email, wait_for):
    """Events spooled by one instance are replayed by the next: stop the
    service (SIGTERM) while PostgreSQL is away, bring both back."""
    stack = fault_stack
    emails = [unique_email("respool") for _ in range(5)]
    stack.pg_stop()
    try:
        wait_for(lambda: call(base_url, "GET", "/health/ready").status == 503, timeout=10,
                 message="/health/ready 503 with PostgreSQL down")
        for e in emails:
            assert_problem(call(base_url, "POST", API + "/login",
                                {"email": e, "password": PASSWORD}), 503, "unavailable")
        t0 = time.monotonic()
        stack.app_stop()
        # SIGTERM: drain, flush the queue (to the spool: PostgreSQL is away), exit
        assert time.monotonic() - t0 < 7, "the drain took longer than 5 s (+ margin)"
        lines = spool_lines(stack)
        for e in emails:
            assert sum(e in line for line in lines) == 1, (e, len(lines))
    finally:
        stack.pg_start()
    stack.app_start()
    got = wait_for(lambda: (lambda d: d if len(d) == 5 else None)(
        failed_logins_in_db(stack, emails)), timeout=15, message="5 events replayed")
    assert all(v == ["unavailable"] for v in got.values()), got
    wait_for(lambda: (stack.var / "audit.spool").stat().st_size == 0, timeout=10,
             message="the spool emptied after the replay")


# ================================================================ a hung Redis


def _median_ms(base_url, method, path, n=20, **kw):
    times, statuses = [], set()
    for _ in range(n):
        t0 = time.monotonic()
        r = call(base_url, method, path, **kw)
        times.append((time.monotonic() - t0) * 1000)
        statuses.add(r.status)
    times.sort()
    return times[n // 2], statuses


def test_hung_redis_is_treated_as_down(fault_stack, base_url, unique_email, wait_for, no_keepalive):
    """Redis that accepts connections but never answers (SIGSTOP here; a
    stuck fork or a wedged host in production) must be handled like Redis
    down (SPEC §5: rate limits fall back to per-process counters,
    reconnection with backoff): after the first timeouts the service stops
    waiting for it on every request.

    Found failing: kv_command() drops a connection whose command timed out
    (250 ms) without any backoff, and kv_acquire() reconnects at once: the
    TCP connect succeeds (the kernel accepts for the stopped server), so
    every request pays the full timeout again for each Redis call: about
    250 ms per rate-limited request and about 770 ms per GET /me (lease,
    L2 session, L2 profile), for as long as Redis hangs.
    Reproduce: tools/stack.sh start; kill -STOP $(cat var/run/redis.pid);
    time curl -s localhost:$PORT/.well-known/jwks.json (repeat); kill -CONT."""
    stack = fault_stack
    email = unique_email("hung")
    must_signup(base_url, email)
    tok = must_login(base_url, email)["access_token"]
    pid = int((stack.var / "run" / "redis.pid").read_text().split()[0])
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"redis-server" in f.read()
    os.kill(pid, signal.SIGSTOP)
    try:
        # every worker notices (each request thread may hold a connection)
        wait_for(lambda: call(base_url, "GET", "/health").json()["status"] == "degraded",
                 timeout=10, message="/health degraded with Redis hung")
        # Enough failed calls for every worker's pool to reach its longest
        # back-off (1 s): from then on at most one call a second waits for
        # the timeout, so the medians below are of fast answers. (Right
        # after the first failures the back-off is still short, 50 ms
        # doubling, and a loaded box made half of 9 calls pay 250 ms.)
        for _ in range(12):
            call(base_url, "GET", "/.well-known/jwks.json")
            call(base_url, "GET", API + "/me", headers=bearer(tok))
        jwks_ms, jwks_st = _median_ms(base_url, "GET", "/.well-known/jwks.json", n=15)
        me_ms, me_st = _median_ms(base_url, "GET", API + "/me", n=15, headers=bearer(tok))
        live_ms, _ = _median_ms(base_url, "GET", "/health/live", n=15)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert jwks_st == {200} and me_st == {200}, (jwks_st, me_st)
    # /health/live never touches Redis: the yardstick of a fast answer here
    assert jwks_ms < 50 + live_ms, f"JWKS median {jwks_ms:.0f} ms with Redis hung"
    assert me_ms < 50 + live_ms, f"/me median {me_ms:.0f} ms with Redis hung"



def _redis_pings(stack):
    m = re.search(r"cmdstat_ping:calls=(\d+)", stack.redis_cli("INFO", "commandstats"))
    return int(m.group(1)) if m else 0


def test_concurrent_health_checks_share_round_trips(base_url, stack):
    """Concurrent /health calls in a worker share one Redis PING that began
    after they arrived (lib/probe.c). Redis is paused for 150 ms (CLIENT
    PAUSE, shorter than the pool's 250 ms timeout) while 30 calls arrive:
    each worker's first call starts a PING that waits out the pause, the
    others wait for the next one, which one of them runs for all. Every
    call answers 200 with Redis "up"; far fewer PINGs than calls."""
    stack.wait_healthy()
    n = 30
    results = []
    go = threading.Barrier(n + 1, timeout=30)

    def client():
        go.wait()  # every thread is running before the pause begins
        r = call(base_url, "GET", "/health")
        results.append((r.status, r.json()["checks"]["redis"]["status"]))

    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    before = _redis_pings(stack)
    stack.redis_cli("CLIENT", "PAUSE", "150", "ALL")
    go.wait()
    for t in threads:
        t.join(60)
    assert results == [(200, "up")] * n, results
    ran = _redis_pings(stack) - before
    # Without sharing: >= 30. With it: two per worker for the calls that
    # arrived in the pause, a few for stragglers and the invalidation
    # subscriber's keep-alive PINGs.
    assert 0 < ran <= 12, ran
