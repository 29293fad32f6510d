"""Fixtures for the end-to-end tests: a real nginx, PostgreSQL, Redis and
access.fcgi, run by tools/stack.sh.

Run with Debian's interpreter (the packages come from apt, not pip):

    /usr/bin/python3 -m pytest tests/e2e

`make test` starts the stack first; run by hand, the `stack` fixture starts it
if /health does not answer. Ports follow tools/stack.sh: the environment
(PORT, PGPORT, REDIS_PORT, LIGHTTPD_PORT), else what `tools/stack.sh start`
recorded in var/stack.env, else the defaults.

Fixtures
    stack        Stack (session): control of the local stack, see the class
    base_url     "http://127.0.0.1:$PORT" (session; the stack is up)
    lighttpd_url "http://127.0.0.1:$LIGHTTPD_PORT" (module): the service
                 behind lighttpd, started for the module and stopped after it
    http         a requests.Session with a default timeout (function)
    wait_for     the wait_for() helper below
    fault_stack  the Stack for a test that stops PostgreSQL, Redis or the
                 service: afterwards everything is started again and /health
                 must answer 200 (function)
    unique_email a factory of fresh, unused addresses (function)
    openapi      the openapi_check.Checker (session)

Every response a test receives from the service through `requests` is
validated against docs/openapi.yaml (openapi_check.py); a mismatch fails the
test that made the request, at its teardown. The session ends with the count
of validated responses.

The standard library, requests, and for the OpenAPI check PyYAML and
jsonschema (Debian packages).
"""

import json
import contextlib
import os
import pathlib
import subprocess
import time
import uuid

import pytest
import requests

import openapi_check

ROOT = pathlib.Path(__file__).resolve().parents[2]
VAR = ROOT / "var"
RUN = VAR / "run"
STACK_SH = ROOT / "tools" / "stack.sh"

DEFAULT_PORTS = {
    "PORT": 8080,
    "PGPORT": 55432,
    "REDIS_PORT": 56379,
    "LIGHTTPD_PORT": 8081,
}


def _ports():
    """Ports as tools/stack.sh sees them: env, else var/stack.env, else defaults."""
    recorded = {}
    try:
        for line in (VAR / "stack.env").read_text().splitlines():
            if line.startswith("S_") and "=" in line:
                key, _, value = line[2:].partition("=")
                recorded[key.strip()] = value.strip()
    except OSError:
        pass
    ports = {}
    for name, default in DEFAULT_PORTS.items():
        value = os.environ.get(name) or recorded.get(name) or default
        ports[name] = int(value)
    return ports


class WaitTimeout(AssertionError):
    pass


def wait_for(cond, timeout=10.0, interval=0.1, message=None):
    """Call cond() until it returns something truthy and return that.

    Exceptions raised by cond() (a refused connection, a KeyError while a
    response is not there yet) count as "not yet". After `timeout` seconds
    raise WaitTimeout naming `message` (or cond) and the last value or
    exception seen.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = cond()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - "not yet"
            last = exc
        if time.monotonic() >= deadline:
            what = message or getattr(cond, "__name__", repr(cond))
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def _alive(pid):
    """True if pid runs and is not a zombie (pid 1 here does not always reap
    orphans, so a killed daemon may linger as a zombie: os.kill(pid, 0) is
    not enough)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z"


def _cmdline(pid):
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _children(pid):
    """Live direct children of pid (no /proc/PID/task/*/children on every
    kernel, so scan /proc)."""
    kids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) >= 2 and fields[1] == str(pid) and fields[0] != "Z":
            kids.append(int(entry.name))
    return sorted(kids)


class StackError(RuntimeError):
    pass


class Stack:
    """The local stack of tools/stack.sh, for tests that need to reach
    behind the HTTP interface: stop and start PostgreSQL or Redis, restart
    the service with other settings, find and kill its processes, read its
    log."""

    def __init__(self):
        self.root = ROOT
        self.var = VAR
        ports = _ports()
        self.port = ports["PORT"]
        self.pg_port = ports["PGPORT"]
        self.redis_port = ports["REDIS_PORT"]
        self.lighttpd_port = ports["LIGHTTPD_PORT"]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.lighttpd_url = f"http://127.0.0.1:{self.lighttpd_port}"
        self.log_path = VAR / "log" / "access.log"
        # access.fcgi's stderr when lighttpd runs it (server.breakagelog)
        self.lighttpd_log_path = VAR / "log" / "access-lighttpd.log"
        self.conf_path = VAR / "access.conf"
        self.pid_path = RUN / "access.pid"

    # ---- tools/stack.sh

    def run(self, command, env=None, timeout=120):
        """Run `tools/stack.sh COMMAND`; raise StackError with its output if
        it fails. `env` adds variables (e.g. ACCESS_* configuration
        overrides for app-restart)."""
        full_env = dict(os.environ)
        full_env.update(
            PORT=str(self.port),
            PGPORT=str(self.pg_port),
            REDIS_PORT=str(self.redis_port),
            LIGHTTPD_PORT=str(self.lighttpd_port),
        )
        if env:
            full_env.update({k: str(v) for k, v in env.items()})
        proc = subprocess.run(
            ["bash", str(STACK_SH), command],
            cwd=str(ROOT),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            text=True,
        )
        if proc.returncode != 0:
            raise StackError(f"tools/stack.sh {command} exited {proc.returncode}:\n{proc.stdout}")
        return proc.stdout

    def start(self):
        return self.run("start")

    def pg_stop(self):
        """Stop PostgreSQL (pg_ctl stop -m fast); returns once it is down."""
        return self.run("pg-stop")

    def pg_start(self):
        """Start PostgreSQL; returns once it accepts connections."""
        return self.run("pg-start")

    def redis_stop(self):
        return self.run("redis-stop")

    def redis_start(self):
        """Start Redis (empty: it keeps no data); returns once it answers PING."""
        return self.run("redis-start")

    def redis_cli(self, *args):
        """One redis-cli command against the stack's Redis; its output."""
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), *args],
                              capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    def app_stop(self):
        return self.run("app-stop")

    def app_start(self, env=None):
        return self.run("app-start", env=env)

    def app_restart(self, env=None):
        """Restart the service only, e.g. app_restart({"ACCESS_L1_MAX_ENTRIES": 0});
        returns once /health answers 200. The settings last until the next
        restart: call app_restart() again to go back to var/access.conf."""
        return self.run("app-restart", env=env)

    def nginx_reload(self):
        return self.run("nginx-reload")

    def lighttpd_start(self, env=None):
        """Start lighttpd (which spawns its own access.fcgi); returns once
        /health answers 200 on lighttpd_url."""
        return self.run("lighttpd-start", env=env)

    def lighttpd_stop(self):
        return self.run("lighttpd-stop")

    def status(self):
        """Output of `tools/stack.sh status` (which exits 3 when something is
        down; that is not an error here)."""
        try:
            return self.run("status")
        except StackError as exc:
            return str(exc)

    # ---- processes

    def supervisor_pid(self):
        """The access.fcgi supervisor started by spawn-fcgi -n, or None."""
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if _alive(pid) and str(self.conf_path) in _cmdline(pid):
            return pid
        return None

    def worker_pids(self, supervisor=None):
        """Live worker processes: the supervisor's children."""
        sup = supervisor or self.supervisor_pid()
        return _children(sup) if sup else []

    def app_pids(self):
        """(supervisor pid or None, [worker pids])."""
        sup = self.supervisor_pid()
        return sup, self.worker_pids(sup)

    def wait_workers(self, count, timeout=10.0, exclude=()):
        """Wait until the supervisor has `count` live workers, none of them in
        `exclude` (e.g. the pid just killed); return their pids."""

        def ready():
            workers = self.worker_pids()
            if len(workers) == count and not set(workers) & set(exclude):
                return workers
            return None

        return wait_for(ready, timeout, message=f"{count} workers")

    @staticmethod
    def alive(pid):
        return _alive(pid)

    def wait_gone(self, pid, timeout=10.0):
        wait_for(lambda: not _alive(pid), timeout, message=f"pid {pid} to exit")

    # ---- log

    def log_offset(self, path=None):
        """Current size of the service's log; pass it to log_records()."""
        try:
            return (path or self.log_path).stat().st_size
        except OSError:
            return 0

    def log_records(self, since=0, path=None):
        """The JSON lines the service logged after byte offset `since`
        (other lines are skipped)."""
        try:
            with open(path or self.log_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except OSError:
            return []
        records = []
        for line in data.decode(errors="replace").splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def wait_log(self, predicate, since=0, timeout=5.0, path=None):
        """Wait for a logged JSON record for which predicate(record) is true;
        return it. The service writes its line after the response, so a
        test reading the log right after a request must wait."""

        def find():
            for rec in self.log_records(since, path):
                if predicate(rec):
                    return rec
            return None

        return wait_for(find, timeout, message="a matching log record")

    # ---- health

    def health(self, path="/health", timeout=2.0):
        """(status code, JSON body or None); (None, None) if unreachable."""
        try:
            r = requests.get(self.base_url + path, timeout=timeout)
        except requests.RequestException:
            return None, None
        try:
            body = r.json()
        except ValueError:
            body = None
        return r.status_code, body

    def healthy(self):
        return self.health()[0] == 200

    def wait_healthy(self, timeout=30.0):
        """Wait until /health says ok (PostgreSQL and Redis up, not degraded)."""

        def ok():
            code, body = self.health()
            return code == 200 and isinstance(body, dict) and body.get("status") == "ok"

        # One answer is one worker's view: another worker's pool may still be
        # backing off from the outage (at most 1 s, lib/db.c). Ok for 1.2 s
        # running means every worker can reach PostgreSQL again.
        since = [None]

        def steady():
            if not ok():
                since[0] = None
                return False
            since[0] = since[0] or time.monotonic()
            return time.monotonic() - since[0] >= 1.2

        wait_for(steady, timeout, interval=0.2, message="/health status ok for 1.2 s")

    def ensure_up(self):
        """Start whatever is down (PostgreSQL, Redis, the service, nginx) and
        wait for /health to say ok. Idempotent."""
        self.run("start")
        self.wait_healthy()


@contextlib.contextmanager
def keepalive_off(stack):
    """nginx opens a FastCGI connection per request while inside (then kept
    connections again). For tests that reach "every worker" with requests
    sent one after another: over kept connections nginx carries those on
    one connection to one worker."""
    os.environ["STACK_KEEPALIVE"] = "off"
    try:
        stack.run("nginx-reload")
        yield
    finally:
        del os.environ["STACK_KEEPALIVE"]
        stack.run("nginx-reload")


@pytest.fixture
def no_keepalive(stack):
    """keepalive_off() for one test."""
    with keepalive_off(stack):
        yield


def _service_origins():
    ports = _ports()
    return {
        f"{host}:{ports[name]}" for host in ("127.0.0.1", "localhost") for name in ("PORT", "LIGHTTPD_PORT")
    }


_ORIGINS = _service_origins()
OPENAPI = openapi_check.install(lambda: _ORIGINS)


@pytest.fixture(scope="session")
def openapi():
    return OPENAPI


@pytest.fixture(autouse=True)
def _openapi_conformance(request):
    """Fail the test whose requests got answers that docs/openapi.yaml does
    not describe (collected by the transport hook, see openapi_check.py)."""
    OPENAPI.current_test = request.node.nodeid
    yield
    found = OPENAPI.take_mismatches()
    OPENAPI.current_test = None
    if found:
        lines = "\n  ".join(msg for _, msg in found[:20])
        more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
        pytest.fail(f"{len(found)} response(s) do not match docs/openapi.yaml:\n  {lines}{more}", pytrace=False)


def pytest_terminal_summary(terminalreporter):
    left = OPENAPI.take_mismatches()
    terminalreporter.write_line(
        f"openapi: {OPENAPI.validated} responses validated against docs/openapi.yaml "
        f"({len(OPENAPI.seen)} distinct method/route/status)"
        + (f", {len(left)} mismatch(es) outside any test" if left else "")
    )
    for _, msg in left[:20]:
        terminalreporter.write_line(f"openapi mismatch: {msg}")


def pytest_sessionfinish(session, exitstatus):
    if OPENAPI.mismatches and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    if not s.healthy():
        s.start()
    return s


@pytest.fixture(scope="session")
def base_url(stack):
    return stack.base_url


@pytest.fixture(scope="module")
def lighttpd_url(stack):
    stack.lighttpd_start()
    yield stack.lighttpd_url
    stack.lighttpd_stop()


class _Session(requests.Session):
    def __init__(self, timeout):
        super().__init__()
        self._timeout = timeout

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, **kwargs)


@pytest.fixture
def http():
    with _Session(timeout=15) as s:
        yield s


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    return wait_for


@pytest.fixture
def fault_stack(stack):
    """For tests that break things on purpose: everything is started again
    afterwards, and the next test finds /health ok."""
    yield stack
    stack.ensure_up()


@pytest.fixture
def unique_email():
    def make(prefix="user"):
        return f"{prefix}-{uuid.uuid4().hex[:16]}@example.test"

    return make
