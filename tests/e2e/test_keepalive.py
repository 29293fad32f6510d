"""FastCGI keep-alive (SPEC §8): nginx keeps its connections to the service
(`keepalive` in the upstream, `fastcgi_keep_conn on`), and that must be safe
whatever nginx does: idle kept connections hold no request thread, a mixed
load sees no 502/504 and no socket error, a worker killed while it holds kept
connections costs new requests nothing, and a drain closes kept connections
with a FIN after their last answer.

The stack's nginx keeps up to 32 connections per nginx worker
(tools/stack.sh); the service is restarted here with 1 worker x 2 threads,
so the kept connections outnumber its request threads many times over."""

import os
import signal
import socket
import subprocess
import struct
import threading
import time
import uuid

import pytest
import requests

from test_faults import (FCGI_BEGIN_REQUEST, FCGI_PARAMS, FCGI_RESPONDER, FCGI_STDIN,  # noqa: F401
                         fcgi_nv, fcgi_params, fcgi_read_response, fcgi_record, own_instance,
                         parse_cgi_response)

API = "/api/v1/access"
PASSWORD = "correct horse battery"
FCGI_KEEP_CONN = 1


def kept_connections(stack):
    """Established connections on the service's socket (server ends)."""
    sock = str(stack.root / "var" / "run" / "access.sock")
    out = subprocess.run(["ss", "-xH", "state", "established"], capture_output=True, text=True,
                         timeout=5).stdout
    return sum(1 for line in out.splitlines() if sock in line.split()[3:4])


@pytest.fixture
def few_threads(stack):
    """The service with 1 worker x 2 request threads; restored afterwards."""
    stack.app_restart({"ACCESS_WORKERS": 1, "ACCESS_THREADS": 2})
    stack.wait_workers(1)
    stack.wait_healthy()
    yield stack
    stack.app_restart()
    stack.wait_healthy()


def burst(url, n, headers=None):
    """n parallel GETs, each on its own client connection: nginx needs up to
    n upstream connections at once and keeps them afterwards."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            results[i] = requests.get(url, headers=headers, timeout=10).status_code
        except requests.RequestException as e:
            results[i] = repr(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_idle_kept_connections_hold_no_thread(few_threads, base_url):
    stack = few_threads
    for _ in range(3):
        results = burst(base_url + "/health/live", 40)
        assert results == [200] * 40, results
    kept = kept_connections(stack)
    print(f"{kept} kept connections to a service with 2 request threads")
    assert kept > 2, f"nginx kept only {kept} connections: the test proves nothing"
    time.sleep(1.0)  # let them sit idle
    # New requests are served at once although every thread "has" a kept
    # connection (in a thread-per-connection model they would wait for
    # nginx's 35 s read timeout).
    for i in range(20):
        t0 = time.monotonic()
        r = requests.get(base_url + "/health/live", timeout=5)
        took = time.monotonic() - t0
        assert r.status_code == 200
        assert took < 1.0, f"request {i} took {took:.2f} s with idle kept connections"
    assert kept_connections(stack) > 2


def test_mixed_load_with_keepalive_has_no_errors(stack, base_url):
    """GET /me, logins, refreshes and signups for a bounded time over kept
    connections: no 502/504, no socket error."""
    email = f"ka-{uuid.uuid4().hex}@example.org"
    r = requests.post(base_url + API + "/signup", json={"email": email, "password": PASSWORD},
                      timeout=10)
    assert r.status_code == 201, r.text
    tokens = requests.post(base_url + API + "/login", json={"email": email, "password": PASSWORD},
                           timeout=10).json()
    access = tokens["access_token"]
    # The login writer uses a user of its own: past max_sessions_per_user
    # (10) logins revoke the oldest sessions, the readers' token included
    # (with libargon2 hashing a login takes ~330 ms, so 6 s hold ~18).
    login_email = f"ka-{uuid.uuid4().hex}@example.org"
    r = requests.post(base_url + API + "/signup", json={"email": login_email, "password": PASSWORD},
                      timeout=10)
    assert r.status_code == 201, r.text
    stop = time.monotonic() + 6.0
    codes, errors = {}, []
    lock = threading.Lock()

    def note(code):
        with lock:
            codes[code] = codes.get(code, 0) + 1

    def reader():
        with requests.Session() as s:
            while time.monotonic() < stop:
                try:
                    note(s.get(base_url + API + "/me", headers={"Authorization": "Bearer " + access},
                               timeout=10).status_code)
                except requests.RequestException as e:
                    errors.append(repr(e))

    def writer(kind):
        with requests.Session() as s:
            while time.monotonic() < stop:
                try:
                    if kind == "login":
                        r = s.post(base_url + API + "/login",
                                   json={"email": login_email, "password": PASSWORD}, timeout=10)
                    else:
                        r = s.post(base_url + API + "/signup",
                                   json={"email": f"ka-{uuid.uuid4().hex}@example.org",
                                         "password": PASSWORD}, timeout=10)
                    note(r.status_code)
                except requests.RequestException as e:
                    errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(6)]
    threads += [threading.Thread(target=writer, args=(k,)) for k in ("login", "signup", "signup")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    print(f"mixed load over kept connections: {codes}, {len(errors)} socket errors")
    assert not errors, errors[:3]
    assert codes.get(502, 0) == 0 and codes.get(504, 0) == 0, codes
    assert codes.get(200, 0) > 100, codes
    assert set(codes) <= {200, 201, 503}, codes  # 503: hash queue full, by design


def test_worker_killed_with_kept_connections(stack, base_url, wait_for):
    sup, workers = stack.app_pids()
    assert len(workers) >= 2, workers
    assert burst(base_url + "/health/live", 30) == [200] * 30
    assert kept_connections(stack) > 0
    os.kill(workers[0], signal.SIGKILL)
    stack.wait_workers(len(workers), timeout=10, exclude=[workers[0]])
    time.sleep(0.3)
    codes = {}
    for _ in range(300):
        c = requests.get(base_url + "/health/live", timeout=5).status_code
        codes[c] = codes.get(c, 0) + 1
    for _ in range(5):
        for c in burst(base_url + "/health/live", 20):
            codes[c] = codes.get(c, 0) + 1
    print(f"after kill -9 of a worker holding kept connections: {codes}")
    assert codes == {200: 400}, codes


# ---------------------------------------------------------------- drain, over raw FastCGI


def fcgi_begin_keep(params):
    out = fcgi_record(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", FCGI_RESPONDER, FCGI_KEEP_CONN))
    body = b"".join(fcgi_nv(k, v) for k, v in params.items())
    return out + fcgi_record(FCGI_PARAMS, body) + fcgi_record(FCGI_PARAMS, b"")


def kept_request(sock, path):
    sock.sendall(fcgi_begin_keep(fcgi_params(path)) + fcgi_record(FCGI_STDIN, b""))
    stdout, _, _, proto = fcgi_read_response(sock)
    assert proto == 0
    return parse_cgi_response(stdout)


def ready_instance(sock_path, wait_for):
    """Wait until the instance on sock_path answers; return a function that
    opens a connection to it."""

    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(sock_path)
        return s

    def up():
        try:
            with connect() as s:
                return kept_request(s, "/health/ready")[0] == 200
        except OSError:
            return False

    wait_for(up, timeout=15, interval=0.1, message="the separate instance to be ready")
    return connect


def test_drain_closes_kept_connections_cleanly(own_instance, wait_for):
    proc, sock_path, _ = own_instance  # 1 worker x 2 threads (test_faults.py)

    connect = ready_instance(sock_path, wait_for)
    # More kept connections than threads, each used twice: all answered.
    conns = [connect() for _ in range(6)]
    try:
        for _ in range(2):
            for s in conns:
                assert kept_request(s, "/health/live")[0] == 200
        proc.send_signal(signal.SIGTERM)
        # Each idle kept connection ends with an orderly close (FIN: recv
        # returns b""), never a reset, and the process exits 0.
        for s in conns:
            assert s.recv(1) == b""
        assert proc.wait(15) == 0
    finally:
        for s in conns:
            s.close()


# ---------------------------------------------------------------- hash waits hold no serving thread


def test_hash_queue_is_the_only_bound_on_waiting_logins(stack, base_url):
    """hash_queue_max (64) concurrent logins against 2 workers x 16 request
    threads: each is answered 200 or, once it waited hash_queue_timeout_ms,
    503 `overloaded` with Retry-After; none is refused for want of threads
    (a fast 503). Meanwhile /me is answered as fast as when idle."""
    email = f"storm-{uuid.uuid4().hex}@example.org"
    r = requests.post(base_url + API + "/signup", json={"email": email, "password": PASSWORD},
                      timeout=10)
    assert r.status_code == 201, r.text
    # /me is read by another account: the storm's logins trim the storm
    # account's sessions (max_sessions_per_user), which revokes its first ones
    reader = f"reader-{uuid.uuid4().hex}@example.org"
    r = requests.post(base_url + API + "/signup", json={"email": reader, "password": PASSWORD},
                      timeout=10)
    assert r.status_code == 201, r.text
    token = requests.post(base_url + API + "/login", json={"email": reader, "password": PASSWORD},
                          timeout=10).json()["access_token"]
    bearer = {"Authorization": "Bearer " + token}

    def me_latencies(n):
        out = []
        with requests.Session() as s:
            for _ in range(n):
                t0 = time.monotonic()
                assert s.get(base_url + API + "/me", headers=bearer, timeout=5).status_code == 200
                out.append(time.monotonic() - t0)
        return sorted(out)

    idle = me_latencies(100)
    n = 64
    results = [None] * n
    barrier = threading.Barrier(n + 1)

    def login(i):
        barrier.wait()
        t0 = time.monotonic()
        try:
            r = requests.post(base_url + API + "/login",
                              json={"email": email, "password": PASSWORD}, timeout=30)
            body = r.json() if r.status_code != 200 else {}
            results[i] = (r.status_code, time.monotonic() - t0, r.headers.get("Retry-After"),
                          body.get("code"))
        except requests.RequestException as e:
            results[i] = (repr(e), time.monotonic() - t0, None, None)

    threads = [threading.Thread(target=login, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(0.3)
    during = me_latencies(100)
    for t in threads:
        t.join(60)
    ok = [r for r in results if r[0] == 200]
    shed = [r for r in results if r[0] == 503]
    print(f"{n} concurrent logins: {len(ok)} x 200, {len(shed)} x 503 (fastest 503 after "
          f"{min((r[1] for r in shed), default=0):.2f} s); /me p99 idle "
          f"{idle[98] * 1000:.1f} ms, during {during[98] * 1000:.1f} ms")
    assert len(ok) + len(shed) == n, results
    assert len(ok) >= 2, results  # as many as 2 Argon2 threads finish in 2 s on a busy box
    for status, took, retry_after, code in shed:
        assert code == "overloaded" and retry_after is not None, (status, code, retry_after)
        # refused only after waiting for a hash slot, never at once
        assert took >= 1.5, f"a login was refused after {took:.2f} s: {results}"
    # /me waiting behind hashes would take a hash time (0.3-1 s here) each:
    # the median shows it whatever a loaded box does to one slow sample
    assert during[49] < 0.2, f"/me median during the storm: {during[49]:.3f} s"
    assert during[98] < 1.5, f"/me p99 during the storm: {during[98]:.3f} s"


def test_request_input_is_read_to_its_end_on_a_kept_connection(own_instance, wait_for):
    """The empty FCGI_STDIN record that ends a body can arrive after the
    body was read (here: sent 0.2 s later). The service reads the input to
    its end before finishing, else the next request on the kept connection
    starts with a stray record, libfcgi closes the connection, and nginx
    answers that (POST) request 502."""
    proc, sock_path, _ = own_instance

    connect = ready_instance(sock_path, wait_for)
    body = b'{"email":"x@example.org","password":"short"}'
    with connect() as s:
        for _ in range(3):
            params = fcgi_params("/api/v1/access/signup", method="POST",
                                 content_length=len(body), content_type="application/json")
            s.sendall(fcgi_begin_keep(params) + fcgi_record(FCGI_STDIN, body))
            time.sleep(0.2)
            s.sendall(fcgi_record(FCGI_STDIN, b""))
            stdout, _, _, proto = fcgi_read_response(s)
            assert proto == 0
            assert parse_cgi_response(stdout)[0] == 422
            # the next request on the same connection is answered
            assert kept_request(s, "/health/live")[0] == 200
