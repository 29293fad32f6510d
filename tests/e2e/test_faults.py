"""Faults (SPEC §5): PostgreSQL and Redis going away and coming back, a
worker killed with SIGKILL, and the SIGTERM drain of a separate instance
spoken to over raw FastCGI.

These tests break the shared stack on purpose. Each one restores what it
broke in a finally block, and the fault_stack fixture then checks that
/health is ok again before the next test runs."""

import os
import pathlib
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest
import requests

API = "/api/v1/access"
PROBLEM = "application/problem+json"
PASSWORD = "correct horse battery"


def get(url, timeout=5):
    return requests.get(url, timeout=timeout)


def process_age(pid):
    """Seconds since pid started (from /proc)."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    start_ticks = int(stat.rpartition(")")[2].split()[19])
    uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- PostgreSQL


def test_postgres_down_and_back(fault_stack, base_url, wait_for, unique_email, no_keepalive):
    stack = fault_stack
    sup, workers = stack.app_pids()
    assert sup and len(workers) >= 1
    email = unique_email("pgdown")
    stack.pg_stop()
    try:
        def ready_503():
            r = get(base_url + "/health/ready")
            return [r] if r.status_code == 503 else None  # (a 503 Response is falsy)

        [r] = wait_for(ready_503, timeout=10, message="/health/ready 503 with PostgreSQL down")
        assert r.headers["Content-Type"].split(";")[0] == PROBLEM
        body = r.json()
        assert body["status"] == 503 and body["code"] == "unavailable"
        assert r.headers.get("X-Request-ID")

        # every worker says so, not only one: ask several times
        for _ in range(6):
            r = get(base_url + "/health")
            assert r.status_code == 503, r.text
            h = r.json()
            assert h["status"] == "down"
            assert h["checks"]["database"]["status"] == "down"
            assert h["checks"]["redis"]["status"] == "up"
            assert isinstance(h["version"], str)
            assert get(base_url + "/health/ready").status_code == 503
            # the worker itself is alive
            assert get(base_url + "/health/live").status_code == 200

        # a route that needs the database: a 503 problem, not a hang or a 500
        r = requests.post(base_url + API + "/login",
                          json={"email": email, "password": PASSWORD}, timeout=10)
        assert r.status_code == 503, r.text
        assert r.headers["Content-Type"].split(";")[0] == PROBLEM
        assert r.json()["code"] in ("unavailable", "overloaded")
        assert r.headers.get("Retry-After")

        # no worker exited over it
        assert stack.app_pids() == (sup, workers)
    finally:
        stack.pg_start()

    def back():
        h, r = get(base_url + "/health"), get(base_url + "/health/ready")
        return h.status_code == 200 and h.json()["status"] == "ok" and r.status_code == 200

    wait_for(back, timeout=15, interval=0.2, message="/health and /health/ready 200 again")
    # several requests in a row: every worker has reconnected
    for _ in range(10):
        assert get(base_url + "/health/ready").status_code == 200
    assert stack.app_pids() == (sup, workers), "a worker was restarted"
    # and writes work again
    r = requests.post(base_url + API + "/signup",
                      json={"email": email, "password": PASSWORD}, timeout=15)
    for _ in range(10):
        if r.status_code != 503:
            break
        time.sleep(0.3)
        r = requests.post(base_url + API + "/signup",
                          json={"email": email, "password": PASSWORD}, timeout=15)
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------- PostgreSQL that hangs


def postgres_pids(stack):
    """The postmaster (var/pg/data/postmaster.pid) and its children."""
    pm = int((stack.var / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    out = subprocess.run(["pgrep", "-P", str(pm)], capture_output=True, text=True, timeout=10)
    return pm, [int(p) for p in out.stdout.split()]


def signal_postgres(stack, sig):
    """Send sig to the postmaster first (no new child escapes), then to every
    child it has at that moment."""
    pm, _ = postgres_pids(stack)
    os.kill(pm, sig)
    for pid in postgres_pids(stack)[1]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def timed(method, url, **kw):
    """(response, seconds it took)."""
    kw.setdefault("timeout", 15)
    t0 = time.monotonic()
    r = requests.request(method, url, **kw)
    return r, time.monotonic() - t0


def signup_login(base_url, email):
    r = requests.post(base_url + API + "/signup", json={"email": email, "password": PASSWORD},
                      timeout=15)
    assert r.status_code == 201, r.text
    r = requests.post(base_url + API + "/login", json={"email": email, "password": PASSWORD},
                      timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def assert_unavailable(r):
    assert r.status_code == 503, r.text
    assert r.headers["Content-Type"].split(";")[0] == PROBLEM
    assert r.json()["code"] == "unavailable", r.text


def test_postgres_frozen_requests_meet_deadlines(fault_stack, base_url, wait_for, unique_email, no_keepalive):
    """SPEC §5: PostgreSQL stopped with SIGSTOP (it accepts connections but
    never answers) is a fault like one that is down: health 503 within 2 s,
    live and L1-served reads keep answering, a request needing the database
    gets 503 unavailable by request_timeout_ms."""
    stack = fault_stack
    budget_s = 3.0
    stack.app_restart(env={"ACCESS_REQUEST_TIMEOUT_MS": int(budget_s * 1000)})
    frozen = False
    try:
        sup, workers = stack.app_pids()
        email = unique_email("frozen")
        token = signup_login(base_url, email)
        auth = {"Authorization": "Bearer " + token}
        for _ in range(10):  # hot in every worker's L1 (and in L2)
            assert requests.get(base_url + API + "/me", headers=auth, timeout=5).status_code == 200

        signal_postgres(stack, signal.SIGSTOP)
        frozen = True
        # several rounds: each worker, each of its idle connections, then
        # the reconnects after the back-off, all answer in time
        for _ in range(6):
            r, took = timed("GET", base_url + "/health/ready")
            assert_unavailable(r)
            assert took < 2.0, f"/health/ready took {took:.2f}s"
            r, took = timed("GET", base_url + "/health")
            assert r.status_code == 503, r.text
            assert r.json()["checks"]["database"]["status"] == "down"
            assert took < 2.0, f"/health took {took:.2f}s"
            r, took = timed("GET", base_url + "/health/live")
            assert r.status_code == 200 and took < 2.0
            r, took = timed("GET", base_url + API + "/me", headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["email"] == email
            assert took < 2.0, f"a hot /me took {took:.2f}s"

        for _ in range(3):
            r, took = timed("POST", base_url + API + "/login",
                            json={"email": email, "password": PASSWORD})
            assert_unavailable(r)
            assert r.headers.get("Retry-After")
            assert took < budget_s + 1.5, f"login took {took:.2f}s with a {budget_s}s budget"
        assert stack.app_pids() == (sup, workers), "a worker exited"
    finally:
        if frozen:
            signal_postgres(stack, signal.SIGCONT)
        try:
            # each worker's pool comes back after its own back-off: wait until
            # six requests in a row (spread over the workers) find it ready
            def back():
                h = get(base_url + "/health")
                if h.status_code != 200 or h.json()["status"] != "ok":
                    return False
                return all(get(base_url + "/health/ready").status_code == 200 for _ in range(6))

            wait_for(back, timeout=30, interval=0.2, message="every worker ready after SIGCONT")
            r = requests.post(base_url + API + "/login",
                              json={"email": email, "password": PASSWORD}, timeout=15)
            assert r.status_code == 200, r.text
        finally:
            stack.app_restart()


def database_url(stack):
    for line in stack.conf_path.read_text().splitlines():
        if line.strip().startswith("database_url"):
            return line.split("=", 1)[1].strip()
    raise AssertionError("database_url in var/access.conf")


def psql(stack, sql, appname="access-e2e"):
    out = subprocess.run(["psql", "-X", database_url(stack), "-tAc", sql], check=True,
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PGAPPNAME=appname))
    return out.stdout.strip()


def test_statement_timeout_is_503_not_500(fault_stack, base_url, wait_for, unique_email):
    """A statement canceled by statement_timeout (SQLSTATE 57014) is the
    server in trouble: 503 unavailable, never 500."""
    stack = fault_stack
    stack.app_restart(env={"ACCESS_DB_STATEMENT_TIMEOUT_MS": 300})
    holder = None
    try:
        email = unique_email("stmt-timeout")
        token = signup_login(base_url, email)
        # Another session holds a lock on users, so reading it waits.
        holder = subprocess.Popen(
            ["psql", "-X", database_url(stack), "-c",
             "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20);"],
            env=dict(os.environ, PGAPPNAME="access-e2e-lock"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: psql(stack, "SELECT count(*) FROM pg_locks WHERE relation = "
                                     "'users'::regclass AND mode = 'AccessExclusiveLock' "
                                     "AND granted") == "1",
                 timeout=10, message="the lock on users is held")
        since = stack.log_offset()
        r, took = timed("POST", base_url + API + "/login",
                        json={"email": email, "password": PASSWORD})
        assert_unavailable(r)
        assert took < 5.0
        r, took = timed("PATCH", base_url + API + "/me", json={"name": "x"},
                        headers={"Authorization": "Bearer " + token})
        assert_unavailable(r)
        stack.wait_log(lambda rec: "57014" in rec.get("msg", ""), since=since, timeout=5)
    finally:
        psql(stack, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'access-e2e-lock'")
        if holder is not None:
            holder.wait(timeout=30)
        stack.app_restart()


# ---------------------------------------------------------------- Redis


def test_redis_down_is_degraded(fault_stack, base_url, wait_for, unique_email):
    stack = fault_stack
    sup, workers = stack.app_pids()
    email = unique_email("redisdown")
    stack.redis_stop()
    try:
        def degraded():
            r = get(base_url + "/health")
            return r.status_code == 200 and r.json()["status"] == "degraded"

        wait_for(degraded, timeout=10, message="/health degraded with Redis down")
        for _ in range(6):
            r = get(base_url + "/health")
            assert r.status_code == 200
            h = r.json()
            assert h["status"] == "degraded"
            assert h["checks"]["redis"]["status"] == "down"
            assert h["checks"]["database"]["status"] == "up"
        assert get(base_url + "/health/ready").status_code == 200

        # the service goes on from L1 + PostgreSQL
        r = requests.post(base_url + API + "/signup",
                          json={"email": email, "password": PASSWORD}, timeout=15)
        assert r.status_code in (201, 503), r.text
        if r.status_code == 503:
            time.sleep(0.5)
            r = requests.post(base_url + API + "/signup",
                              json={"email": email, "password": PASSWORD}, timeout=15)
        assert r.status_code == 201, r.text
        r = requests.post(base_url + API + "/login",
                          json={"email": email, "password": PASSWORD}, timeout=15)
        assert r.status_code == 200, r.text
        tok = r.json()["access_token"]
        for _ in range(4):
            r = requests.get(base_url + API + "/me",
                             headers={"Authorization": "Bearer " + tok}, timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["email"] == email
        assert stack.app_pids() == (sup, workers)
    finally:
        stack.redis_start()

    def ok():
        r = get(base_url + "/health")
        return r.status_code == 200 and r.json()["status"] == "ok"

    # each worker's Redis client reconnects after its own back-off: wait
    # until six answers in a row (spread over the workers) say ok
    wait_for(lambda: all(ok() for _ in range(6)), timeout=15, interval=0.2,
             message="/health ok on every worker after Redis is back")
    for _ in range(6):
        h = get(base_url + "/health").json()
        assert h["status"] == "ok" and h["checks"]["redis"]["status"] == "up", h
    assert stack.app_pids() == (sup, workers)


# ---------------------------------------------------------------- kill -9


def test_worker_kill9_is_replaced(fault_stack, base_url):
    stack = fault_stack
    sup, workers = stack.app_pids()
    assert sup and len(workers) >= 2, (sup, workers)
    victim = workers[0]
    # the supervisor backs off for workers that die young: kill a stable one
    age = process_age(victim)
    if age < 2.5:
        time.sleep(2.5 - age)

    results = {"failures": 0, "retried": 0, "done": 0}
    started = threading.Event()
    lock = threading.Lock()

    def attempt(s):
        try:
            return s.get(base_url + "/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def client():
        with requests.Session() as s:
            for i in range(200):
                if i == 20:
                    started.set()
                ok = attempt(s)
                if not ok:
                    with lock:
                        results["retried"] += 1
                    ok = attempt(s)
                with lock:
                    results["done"] += 1
                    if not ok:
                        results["failures"] += 1
        started.set()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    assert started.wait(30)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    with lock:
        done_at_kill = results["done"]
    new = None
    while time.monotonic() - killed_at < 3.0:
        now = stack.worker_pids(sup)
        fresh = [p for p in now if p not in workers]
        if fresh and victim not in now:
            new = fresh
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - killed_at
    t.join(120)
    assert not t.is_alive(), "the client loop did not finish"

    assert new, f"no new worker within 3 s of killing {victim}"
    assert elapsed <= 1.0, f"the new worker appeared after {elapsed:.2f}s"
    assert stack.supervisor_pid() == sup
    assert set(workers[1:]) <= set(stack.worker_pids(sup)), "the other workers kept serving"
    assert results["done"] == 200
    assert done_at_kill < 200, "the client loop was over before the kill"
    assert results["failures"] == 0, results
    stack.wait_workers(len(workers), timeout=5)


def metric_value(base_url, name):
    text = get(base_url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_worker_kill9_while_hashing_gives_back_capacity(fault_stack, base_url, wait_for):
    """SPEC §5: whatever a dead worker held in shared memory (hash slots of
    the machine-wide cap, queue places) is given back. Every worker is
    killed twice while signups hash; afterwards nothing is left held and
    signups and logins are served, not refused with 503."""
    stack = fault_stack
    sup, _ = stack.app_pids()
    outcomes = []
    lock = threading.Lock()

    def signup():
        try:
            r = requests.post(
                base_url + API + "/signup",
                json={"email": f"k9-{uuid.uuid4().hex}@example.org", "password": PASSWORD},
                timeout=10,
            )
            code = r.status_code
        except requests.RequestException:
            code = "error"
        with lock:
            outcomes.append(code)

    for _ in range(2):
        workers = stack.worker_pids(sup)
        threads = [threading.Thread(target=signup, daemon=True) for _ in range(12)]
        for t in threads:
            t.start()
        # Wait until hashes run, then kill every worker at once.
        wait_for(lambda: metric_value(base_url, "hash_active") > 0, timeout=5,
                 message="no hash running")
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for t in threads:
            t.join(30)
        stack.wait_workers(len(workers), timeout=15, exclude=workers)

    assert len(outcomes) == 24
    wait_for(lambda: metric_value(base_url, "hash_active") == 0
             and metric_value(base_url, "hash_queue_depth") == 0, timeout=5,
             message="hash slots or queue places still held by dead workers")
    # The whole capacity is back: a burst of signups is served.
    email = f"k9-after-{uuid.uuid4().hex}@example.org"
    r = requests.post(base_url + API + "/signup", json={"email": email, "password": PASSWORD},
                      timeout=10)
    assert r.status_code == 201, r.text
    r = requests.post(base_url + API + "/login", json={"email": email, "password": PASSWORD},
                      timeout=10)
    assert r.status_code == 200, r.text
    outcomes.clear()
    threads = [threading.Thread(target=signup, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes == [201] * 4, outcomes


# ---------------------------------------------------------------- SIGTERM drain over raw FastCGI

FCGI_BEGIN_REQUEST = 1
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_RESPONDER = 1


def fcgi_record(rtype, content, request_id=1):
    pad = -len(content) % 8
    return struct.pack("!BBHHBB", 1, rtype, request_id, len(content), pad, 0) + content + \
        b"\0" * pad


def fcgi_nv(name, value):
    def length(n):
        return struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)

    name, value = name.encode(), value.encode()
    return length(len(name)) + length(len(value)) + name + value


def fcgi_begin(params):
    out = fcgi_record(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", FCGI_RESPONDER, 0))
    body = b"".join(fcgi_nv(k, v) for k, v in params.items())
    for i in range(0, len(body), 65535):
        out += fcgi_record(FCGI_PARAMS, body[i:i + 65535])
    return out + fcgi_record(FCGI_PARAMS, b"")


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def fcgi_read_response(sock):
    """Read records until END_REQUEST: (stdout bytes, stderr bytes,
    app status, protocol status)."""
    stdout, stderr = b"", b""
    while True:
        version, rtype, _rid, clen, plen, _ = struct.unpack("!BBHHBB", recv_exact(sock, 8))
        assert version == 1
        content = recv_exact(sock, clen)
        recv_exact(sock, plen)
        if rtype == FCGI_STDOUT:
            stdout += content
        elif rtype == FCGI_STDERR:
            stderr += content
        elif rtype == FCGI_END_REQUEST:
            app_status, proto_status = struct.unpack("!IB3x", content)
            return stdout, stderr, app_status, proto_status


def parse_cgi_response(stdout):
    head, _, body = stdout.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode().split("\r\n"):
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    status = int(headers.get("status", "200").split()[0])
    return status, headers, body


def fcgi_params(path, method="GET", content_length=0, content_type=""):
    return {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": method,
        "REQUEST_URI": path,
        "SCRIPT_NAME": path,
        "DOCUMENT_URI": path,
        "QUERY_STRING": "",
        "CONTENT_LENGTH": str(content_length) if content_length else "",
        "CONTENT_TYPE": content_type,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_X_REQUEST_ID": "drain-test",
    }


def fcgi_request(sock_path, path, timeout=5):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(fcgi_begin(fcgi_params(path)) + fcgi_record(FCGI_STDIN, b""))
        stdout, _, _, proto = fcgi_read_response(s)
        assert proto == 0
        return parse_cgi_response(stdout)


def listen_queue(sock_path):
    """Connections waiting in the accept queue of the unix listener at
    sock_path (0 when ss is missing: then only the pause above helps)."""
    try:
        out = subprocess.run(["ss", "-xlH", "src", sock_path], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4] == sock_path:
            return int(fields[2])
    return None


@pytest.fixture
def own_instance(stack, tmp_path):
    """A separate access.fcgi (1 worker × 2 threads) on its own unix socket,
    killed afterwards if the test did not stop it."""
    sock_path = f"/tmp/access-drain-{uuid.uuid4().hex[:12]}.sock"
    log = open(tmp_path / "access.log", "wb")
    env = dict(os.environ, ACCESS_WORKERS="1", ACCESS_THREADS="2")
    proc = subprocess.Popen(
        [str(stack.root / "build" / "access.fcgi"), "-c", str(stack.conf_path),
         "--listen", "unix:" + sock_path],
        cwd=str(stack.root), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    try:
        yield proc, sock_path, tmp_path / "access.log"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        try:
            os.unlink(sock_path)
        except OSError:
            pass


def test_sigterm_drains_in_flight_request(own_instance, wait_for):
    proc, sock_path, log_path = own_instance

    def up():
        status, _, _ = fcgi_request(sock_path, "/health/ready", timeout=2)
        return status == 200

    wait_for(up, timeout=15, interval=0.1, message="the separate instance to be ready")
    status, headers, body = fcgi_request(sock_path, "/health/live")
    assert status == 200 and headers.get("x-request-id") == "drain-test"

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sock_path)
        s.sendall(fcgi_begin(fcgi_params("/health/ready", content_length=10)))
        s.sendall(fcgi_record(FCGI_STDIN, b"01234"))
        # a worker thread has accepted the connection once the listening
        # socket's queue is empty again (ss: Recv-Q of a listener = pending)
        wait_for(lambda: listen_queue(sock_path) == 0, timeout=5, interval=0.02,
                 message="the worker to accept the connection")
        time.sleep(0.1)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGTERM)
        term_at = time.monotonic()
        time.sleep(0.5)
        assert proc.poll() is None, "the supervisor exited with a request in flight"
        s.sendall(fcgi_record(FCGI_STDIN, b"56789") + fcgi_record(FCGI_STDIN, b""))
        stdout, _stderr, _app_status, proto = fcgi_read_response(s)
    finally:
        s.close()
    assert proto == 0, "FCGI_REQUEST_COMPLETE"
    status, headers, body = parse_cgi_response(stdout)
    assert status == 503, stdout
    assert headers.get("content-type", "").split(";")[0] == PROBLEM
    assert int(headers["content-length"]) == len(body)
    assert b'"code":"unavailable"' in body

    rc = proc.wait(timeout=max(0.1, 6 - (time.monotonic() - term_at)))
    assert rc == 0, log_path.read_text(errors="replace")

    with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s2:
            s2.settimeout(2)
            s2.connect(sock_path)
