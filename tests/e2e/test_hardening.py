"""Contract and security hardening through nginx (SPEC §3, §4, §6): hostile
header bytes, strict JSON, compact audit detail, Cache-Control and
WWW-Authenticate, what reaches the log, the unix socket mode, and /metrics as
a real Prometheus scrapes it."""

import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest
import requests

from test_accounts import (
    API,
    JSON,
    PASSWORD,
    assert_problem,
    bearer,
    must_login,
    must_signup,
    post_retry,
)

FFFD = "\ufffd"
ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- header bytes

HOSTILE_UAS = {
    "latin1": b"Mozilla \xe9t\xe9",
    # 800 bytes of two-byte characters: cut at 512 bytes, on a boundary
    "long": b"x" + "\u00e9".encode() * 400,
    # an overlong "/", a lone surrogate, a truncated sequence, past U+10FFFF
    "overlong": b"Mozilla \xc0\xaf \xed\xa0\x80 \xe2\x82 \xf4\x90\x80\x80 " + b"y" * 700,
}


def _check_ua(ua, sent):
    raw = ua.encode("utf-8")
    assert len(raw) <= 512, len(raw)
    assert ua, ua
    if sent.isascii():
        assert ua == sent.decode()[:512]
    elif sent.startswith(b"x\xc3\xa9"):
        assert ua == ("x" + "\u00e9" * 400).encode()[:511].decode(), ua  # 1 + 255 * 2 bytes
    else:
        assert FFFD in ua, ua
        assert ua.startswith("Mozilla "), ua


@pytest.mark.parametrize("kind", sorted(HOSTILE_UAS))
def test_hostile_user_agent_is_stored_repaired_and_cut(http, base_url, unique_email, wait_for,
                                                        kind):
    sent = HOSTILE_UAS[kind]
    email = unique_email("ua")
    must_signup(http, base_url, email)
    r = http.post(base_url + API + "/login", json={"email": email, "password": PASSWORD},
                  headers={"User-Agent": sent}, timeout=15)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    r = http.get(base_url + API + "/sessions", headers=bearer(token))
    assert r.status_code == 200, r.text
    sessions = r.json()["items"]
    assert len(sessions) == 1
    _check_ua(sessions[0]["user_agent"], sent)

    def login_event():
        r = http.get(base_url + API + "/audit", headers=bearer(token))
        assert r.status_code == 200, r.text
        ev = [e for e in r.json()["items"] if e["type"] == "login_succeeded"]
        return ev[0] if ev else None

    ev = wait_for(login_event, timeout=10, message="the login_succeeded audit event")
    _check_ua(ev["user_agent"], sent)


# ---------------------------------------------------------------- audit detail


def test_audit_detail_is_compact_json(http, base_url, unique_email, wait_for):
    email = unique_email("audit")
    must_signup(http, base_url, email)
    token = must_login(http, base_url, email)["access_token"]

    def body_with_detail():
        r = http.get(base_url + API + "/audit", headers=bearer(token))
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        if any(e["type"] == "login_succeeded" for e in items):
            return r
        return None

    r = wait_for(body_with_detail, timeout=10, message="the login_succeeded event")
    assert b'": "' not in r.content, r.content
    assert b", " not in r.content, r.content
    ev = [e for e in r.json()["items"] if e["type"] == "login_succeeded"][0]
    assert set(ev["detail"]) == {"session_id"}, ev


# ---------------------------------------------------------------- strict JSON

NOT_JSON = {
    "raw_control_char": b'{"email":"a\x01b@example.com","password":"correct horse"}',
    "raw_newline": b'{"email":"a@example.com","password":"correct\nhorse"}',
    "nan": b'{"email":"a@example.com","password":"correct horse","n":NaN}',
    "infinity": b'{"email":"a@example.com","password":"correct horse","n":-Infinity}',
    "single_quotes": b"{'email':'a@example.com','password':'correct horse'}",
    "comment": b'{"email":"a@example.com",/* x */"password":"correct horse"}',
    "line_comment": b'{"email":"a@example.com","password":"correct horse"}// x',
    "trailing": b'{"email":"a@example.com","password":"correct horse"}x',
    "bom": b'\xef\xbb\xbf{"email":"a@example.com","password":"correct horse"}',
    "bad_utf8": b'{"email":"a@example.com","password":"correct \xff horse"}',
    "duplicate": b'{"email":"a@example.com","password":"correct horse","email":"b@example.com"}',
    "deep": b'{"a":' + b"[" * 600 + b"]" * 600 + b"}",
    "trailing_comma": b'{"email":"a@example.com","password":"correct horse",}',
    "hex_number": b'{"email":"a@example.com","password":"correct horse","n":0x10}',
}


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_not_json_is_400(http, base_url, case):
    r = http.post(base_url + API + "/signup", data=NOT_JSON[case], headers=JSON)
    assert_problem(r, 400, "invalid_json")


def test_big_number_is_json(http, base_url):
    """A number beyond double precision is JSON (RFC 8259 §6): the body is
    read; the unknown member is ignored and the bad email decides (422)."""
    body = b'{"email":"nope","password":"correct horse","n":1' + b"0" * 400 + b"}"
    r = http.post(base_url + API + "/signup", data=body, headers=JSON)
    assert_problem(r, 422, "invalid_email", field="email")


# ---------------------------------------------------------------- headers


def test_cache_control_of_me(http, base_url, unique_email):
    email = unique_email("cc")
    must_signup(http, base_url, email)
    token = must_login(http, base_url, email)["access_token"]
    r = http.get(base_url + API + "/me", headers=bearer(token))
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "private, no-cache"
    r = http.patch(base_url + API + "/me", json={"name": "n"}, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers.get("ETag")


@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer ", "Basic abc", "Bearer nope.nope.nope"])
def test_401_bad_or_missing_bearer_has_www_authenticate(http, base_url, auth):
    headers = {"Authorization": auth} if auth is not None else {}
    for method, path in (("GET", "/me"), ("GET", "/sessions"), ("POST", "/logout")):
        r = http.request(method, base_url + API + path, headers=headers)
        assert_problem(r, 401, "invalid_token")
        assert r.headers.get("WWW-Authenticate") == 'Bearer error="invalid_token"', r.headers


def test_401_refused_login_has_realm(http, base_url, unique_email):
    email = unique_email("realm")
    must_signup(http, base_url, email)
    for who in (email, unique_email("nobody")):
        r = post_retry(http, base_url + API + "/login", {"email": who, "password": "wrong pass"})
        assert_problem(r, 401, "invalid_credentials")
        assert r.headers.get("WWW-Authenticate") == 'Bearer realm="access"', r.headers


# ---------------------------------------------------------------- logs


def test_conflict_leaves_no_email_in_the_log(http, base_url, unique_email, stack):
    email = unique_email("leak")
    must_signup(http, base_url, email)
    since = stack.log_offset()
    rid = "leak-" + str(time.time_ns())
    r = post_retry(http, base_url + API + "/signup",
                   {"email": email.upper(), "password": PASSWORD},
                   headers={"X-Request-ID": rid})
    assert_problem(r, 409, "email_taken")
    stack.wait_log(lambda rec: rec.get("request_id") == rid, since=since)
    with open(stack.log_path, "rb") as f:
        f.seek(since)
        logged = f.read().decode(errors="replace").lower()
    local = email.split("@")[0].lower()
    assert local not in logged, logged
    assert "23505" in logged  # the conflict is still logged, as SQLSTATE + constraint


# ---------------------------------------------------------------- unix socket


def _start_listener(tmp, env_extra):
    sock = tmp / "access.sock"
    env = dict(os.environ)
    env.update(ACCESS_WORKERS="1", ACCESS_THREADS="2", ACCESS_LOG_LEVEL="warn")
    env.update(env_extra)
    proc = subprocess.Popen(
        [str(ROOT / "build" / "access.fcgi"), "-c", str(ROOT / "var" / "access.conf"),
         "--listen", "unix:" + str(sock)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.umask(0),  # the most permissive umask a caller may have
        start_new_session=True,
    )
    return proc, sock


@pytest.mark.parametrize("env,want", [({}, 0o660), ({"ACCESS_SOCKET_MODE": "0600"}, 0o600)])
def test_listen_unix_socket_mode(wait_for, env, want):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="access-sock-"))
    proc, sock = _start_listener(tmp, env)
    try:
        def ready():
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode(errors="replace"))
            return sock.exists()
        wait_for(ready, timeout=10, message="the socket file")
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode == want, oct(mode)
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("bad", ["0778", "1777", "abc", "", "-1", "07777"])
def test_socket_mode_out_of_range_stops_the_program(bad):
    env = dict(os.environ, ACCESS_SOCKET_MODE=bad)
    r = subprocess.run([str(ROOT / "build" / "access.fcgi"), "check-config", "-c",
                        str(ROOT / "var" / "access.conf")], env=env, capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "socket_mode" in r.stderr and "0000..0777" in r.stderr, r.stderr


# ---------------------------------------------------------------- key file


def test_keygen_writes_0600_and_a_readable_key_file_is_refused(tmp_path):
    path = tmp_path / "jwks.json"
    old = os.umask(0)
    try:
        r = subprocess.run([str(ROOT / "build" / "access.fcgi"), "keygen", str(path)],
                           capture_output=True, text=True, timeout=10)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    env = dict(os.environ, ACCESS_JWT_KEYS=str(path))
    os.chmod(path, 0o644)
    r = subprocess.run([str(ROOT / "build" / "access.fcgi"), "-c",
                        str(ROOT / "var" / "access.conf"), "--listen",
                        "unix:" + str(tmp_path / "x.sock")], env=env, capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0
    assert str(path) in r.stderr and "0644" in r.stderr, r.stderr


# ---------------------------------------------------------------- Prometheus


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape_value(text, name, labels):
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{([^}]*)\} (\S+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted(m.group(2).split(",")))
            if got == want:
                return float(m.group(3))
    return 0.0


@pytest.fixture
def prometheus(base_url):
    """A real Prometheus scraping /metrics through nginx every second, on a
    free loopback port, with its own config and storage; killed after."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="access-prom-"))
    port = _free_port()
    target = base_url.split("://", 1)[1]
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: access\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    log = open(tmp / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1h", "--log.level=warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "prometheus not ready within 30 s"
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _prom_query(prom, q):
    r = requests.get(prom + "/api/v1/query", params={"query": q}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_real_prometheus_scrapes_metrics(http, base_url, unique_email, prometheus, wait_for):
    email = unique_email("prom")
    must_signup(http, base_url, email)
    token = must_login(http, base_url, email)["access_token"]
    me_route = API + "/me"
    before = requests.get(base_url + "/metrics", timeout=5).text
    sent = {"GET": 3, "PATCH": 2}
    for _ in range(sent["GET"]):
        assert http.get(base_url + me_route, headers=bearer(token)).status_code == 200
    for i in range(sent["PATCH"]):
        r = http.patch(base_url + me_route, json={"name": f"p{i}"}, headers=bearer(token))
        assert r.status_code == 200
    want = {m: _scrape_value(before, "http_requests_total",
                             {"route": me_route, "method": m, "status": "200"}) + n
            for m, n in sent.items()}

    def targets_up():
        active = requests.get(prometheus + "/api/v1/targets", timeout=5).json()
        active = active["data"]["activeTargets"]
        assert len(active) == 1, active
        t = active[0]
        return t if t["health"] == "up" and t["lastScrape"] != "0001-01-01T00:00:00Z" else None

    # A first scrape with a duplicate series fails: health "down", lastError set.
    target = wait_for(targets_up, timeout=20, interval=0.5, message="the scrape target up")
    assert target["lastError"] == "", target
    up = _prom_query(prometheus, 'up{job="access"}')
    assert [s["value"][1] for s in up] == ["1"], up

    def counters_seen():
        got = {}
        for m in sent:
            res = _prom_query(prometheus, f'http_requests_total{{route="{me_route}",'
                                          f'method="{m}",status="200"}}')
            if len(res) != 1:
                return None
            got[m] = float(res[0]["value"][1])
        return got if got == want else None

    wait_for(counters_seen, timeout=20, interval=0.5,
             message=f"Prometheus to see the request counters {want}")
    # One histogram series per route that sums over its methods: its count
    # is every request of the route (a duplicate series would be dropped by
    # Prometheus, keeping one method's count only).
    res = _prom_query(prometheus, f'http_request_duration_seconds_count{{route="{me_route}"}}')
    assert len(res) == 1, res
    total = _prom_query(prometheus, f'sum(http_requests_total{{route="{me_route}"}})')
    assert float(res[0]["value"][1]) == float(total[0]["value"][1]), (res, total)
    # Prometheus counts the samples it dropped as duplicates: none.
    own = requests.get(prometheus + "/metrics", timeout=5).text
    dup = re.search(r"^prometheus_target_scrapes_sample_duplicate_timestamp_total (\S+)$", own,
                    re.M)
    assert dup is not None and float(dup.group(1)) == 0, dup and dup.group(0)
    # Every scrape since the start succeeded.
    res = _prom_query(prometheus, 'min_over_time(up{job="access"}[1m])')
    assert [s["value"][1] for s in res] == ["1"], res
    res = _prom_query(prometheus, 'db_pool_connections{state="idle"}')
    assert len(res) == 1 and 0 <= float(res[0]["value"][1]) < 1e6, res


def test_promtool_accepts_metrics_after_get_and_patch(http, base_url, unique_email):
    email = unique_email("promtool")
    must_signup(http, base_url, email)
    token = must_login(http, base_url, email)["access_token"]
    assert http.get(base_url + API + "/me", headers=bearer(token)).status_code == 200
    r = http.patch(base_url + API + "/me", json={"name": "x"}, headers=bearer(token))
    assert r.status_code == 200
    text = requests.get(base_url + "/metrics", timeout=5).text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0 and check.stdout == "" and check.stderr == "", (
        check.stdout + check.stderr)
    families = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(families) == len(set(families))
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines()
              if line and not line.startswith("#")]
    dups = {s for s in series if series.count(s) > 1}
    assert not dups, dups
