"""Several app hosts on one machine (SPEC §14): network namespaces joined to
the root namespace by veth pairs on one bridge, PgBouncer in transaction mode
in front of the local stack's PostgreSQL, a Redis of their own, one
access.fcgi supervisor per namespace (FastCGI over TCP) and one nginx on
127.0.0.1 with an upstream listing every host.

Everything this module makes carries the prefix `acsc` (namespaces acsc-hN,
links acsc-*, databases access_scale*) or lives in STATE, so `cleanup()`
removes what a crashed run left before a new one starts, and again at the
end. Run as root. `python3 tests/scale/cluster.py cleanup` does the same from
a shell (tools/scale_test.sh calls it on exit, whatever happened).

Addresses: bridge acsc-br 10.203.0.1/24 in the root namespace, host N at
10.203.0.1N/24 inside acsc-hN (its veth end), FastCGI on port 9000. Redis and
PgBouncer listen on 10.203.0.1 only; nginx on free 127.0.0.1 ports.
"""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "build" / "access.fcgi"
PREFIX = "acsc"
BRIDGE = PREFIX + "-br"
NET = "10.203.0"
GATEWAY = NET + ".1"
FCGI_PORT = 9000
REDIS_PORT = 6379          # on the bridge address only: nobody else's
PGB_PORT = 6432            # likewise
DB = "access_scale"
JANITOR_INTERVAL = 1  # s: every worker of every host runs rounds during the test
HOSTS = 3
WORKERS, THREADS, HASH_THREADS = 1, 8, 1   # per host
PGB_POOL, PGB_SESSION_POOL = 20, 4         # PgBouncer server connections
# State outside the checkout: PgBouncer and nginx's workers drop to `nobody`,
# which may not enter the checkout.
STATE = Path("/var/tmp") / ("access-scale-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:10])
STEP_TIMEOUT = 60          # seconds, any one command


def ns_name(i):
    return f"{PREFIX}-h{i}"


def host_addr(i):
    return f"{NET}.1{i}"


def run(*cmd, check=True, timeout=STEP_TIMEOUT, **kw):
    """A command under a deadline; raises with its output when check fails."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def pg_port():
    """The local stack's PostgreSQL port: env, else var/stack.env, else default."""
    if os.environ.get("PGPORT"):
        return int(os.environ["PGPORT"])
    try:
        for line in (ROOT / "var" / "stack.env").read_text().splitlines():
            if line.startswith("S_PGPORT="):
                return int(line.split("=", 1)[1])
    except OSError:
        pass
    return 55432


def psql(sql, db="postgres"):
    return run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", pg_port(),
               "-U", "postgres", "-d", db, "-tAc", sql).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_pidfile(path, marker):
    """SIGKILL the process in PATH if its command line still names MARKER,
    with its process group when it leads one (spawn() starts each service in
    a session of its own): a SIGKILLed nginx master leaves its workers
    running, still listening, otherwise."""
    try:
        pid = int(Path(path).read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return
    if marker in cmd:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_namespace_processes(ns):
    """SIGKILL every process whose network namespace is NS (supervisor and workers)."""
    r = run("ip", "netns", "pids", ns, check=False)
    pids = [int(p) for p in r.stdout.split() if p.isdigit()]
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def cleanup():
    """Remove every namespace, link, process, database and file of a run."""
    errors = []
    # (Redis rewrites its command line to "redis-server ADDR:PORT".)
    for name, marker in (("nginx", str(STATE)), ("pgbouncer", str(STATE)), ("redis", f"{GATEWAY}:{REDIS_PORT}")):
        _kill_pidfile(STATE / f"{name}.pid", marker)
    r = run("ip", "netns", "list", check=False)
    for line in r.stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith(PREFIX + "-"):
            kill_namespace_processes(ns)
            if run("ip", "netns", "del", ns, check=False).returncode != 0:
                errors.append("netns " + ns)
    r = run("ip", "-o", "link", "show", check=False)
    for line in r.stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(PREFIX + "-"):
                run("ip", "link", "del", name, check=False)
    try:
        # Other sessions' connections to it (a killed run's) go first.
        psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname LIKE '{DB}%'")
        for d in psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{DB}%'").split():
            psql(f'DROP DATABASE IF EXISTS "{d}"')
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        errors.append(f"database: {e}")
    run("rm", "-rf", STATE, check=False)
    return errors


class Cluster:
    """The hosts, their shared services and nginx. Build with start()."""

    def __init__(self):
        self.procs = {}
        self.ports = {}
        self.migrations = []
        self.migrate_seconds = 0.0
        self.pgport = pg_port()

    # ------------------------------------------------------------ network

    def make_network(self):
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", GATEWAY + "/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for i in range(1, HOSTS + 1):
            ns, outer, inner = ns_name(i), f"{PREFIX}-v{i}", f"{PREFIX}-p{i}"
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            run("ip", "link", "set", inner, "netns", ns)
            run("ip", "link", "set", outer, "master", BRIDGE, "up")
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            run("ip", "netns", "exec", ns, "ip", "addr", "add", host_addr(i) + "/24", "dev", inner)
            run("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")

    # ------------------------------------------------------------ shared services

    def spawn(self, name, cmd, ns=None, env=None):
        log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 (kept for the process' life)
        if ns:
            cmd = ["ip", "netns", "exec", ns] + cmd
        p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True, cwd=ROOT, env=env)
        log.close()
        self.procs[name] = p
        (STATE / f"{name}.pid").write_text(f"{p.pid}\n")
        return p

    def start_redis(self):
        conf = STATE / "redis.conf"
        conf.write_text(f"bind {GATEWAY}\nport {REDIS_PORT}\nprotected-mode no\ndaemonize no\n"
                        f"save \"\"\nappendonly no\ndir {STATE}\n")
        self.spawn("redis", ["redis-server", conf])
        self.wait(lambda: run("redis-cli", "-h", GATEWAY, "-p", REDIS_PORT, "ping",
                              check=False).stdout.strip() == "PONG", 10, "Redis", "redis")
        # Every host reaches the bridge address across its veth pair.
        for i in range(1, HOSTS + 1):
            run("ip", "netns", "exec", ns_name(i), "redis-cli", "-h", GATEWAY, "-p", REDIS_PORT, "ping")

    def start_pgbouncer(self):
        (STATE / "userlist.txt").write_text('"access" ""\n')
        server = f"host=127.0.0.1 port={self.pgport} dbname={DB}"
        # Two entries for one database: the service's pool in transaction
        # mode, and a session-mode one for `migrate`, whose advisory lock is a
        # session lock (docs/deploy.md).
        (STATE / "pgbouncer.ini").write_text(f"""[databases]
access = {server} pool_mode=transaction
access_session = {server} pool_mode=session pool_size={PGB_SESSION_POOL}

[pgbouncer]
listen_addr = {GATEWAY}
listen_port = {PGB_PORT}
unix_socket_dir =
auth_type = trust
auth_file = {STATE}/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = {PGB_POOL}
server_reset_query =
ignore_startup_parameters = extra_float_digits
pidfile =
logfile =
log_connections = 0
log_disconnections = 0
user = nobody
""")
        self.spawn("pgbouncer", ["pgbouncer", STATE / "pgbouncer.ini"])
        self.wait(lambda: run("pg_isready", "-q", "-h", GATEWAY, "-p", PGB_PORT, "-d", "access",
                              "-U", "access", check=False).returncode == 0, 10, "PgBouncer", "pgbouncer")

    def fresh_database(self):
        psql(f'CREATE DATABASE "{DB}" OWNER access ENCODING \'UTF8\' TEMPLATE template0')
        # Through transaction pooling the service's per-connection SETs land
        # on one server connection only: the role carries them instead
        # (docs/deploy.md).
        psql(f'ALTER ROLE access IN DATABASE "{DB}" SET statement_timeout = \'5s\'')
        psql(f'ALTER ROLE access IN DATABASE "{DB}" SET client_connection_check_interval = \'1s\'')

    # ------------------------------------------------------------ the hosts

    def write_configs(self):
        run(BIN, "keygen", STATE / "jwks.json")
        for i in range(1, HOSTS + 1):
            (STATE / f"host{i}.conf").write_text(f"""# host {i} of make scale-test (tests/scale/cluster.py)
database_url = postgresql://access@{GATEWAY}:{PGB_PORT}/access
db_prepared = off
redis_url = redis://{GATEWAY}:{REDIS_PORT}
jwt_keys = {STATE}/jwks.json
audit_spool = {STATE}/audit{i}.spool
workers = {WORKERS}
threads = {THREADS}
hash_threads = {HASH_THREADS}
argon2_time_cost = 1
argon2_memory_kib = 8192
log_level = warn
fastcgi_keep_conn = on
public_url = http://127.0.0.1:{self.ports['main']}
mail_transport = none
ratelimit_signup = 1000000/60
ratelimit_login = 1000000/60
ratelimit_anonymous = 1000000/60
ratelimit_authenticated = 1000000/60
ratelimit_token = 1000000/60
ratelimit_recover = {RECOVER_LIMIT}/3600
login_failures_max = {LOGIN_FAILURES_MAX}
login_failures_window = 900
janitor_interval = {JANITOR_INTERVAL}
""")

    def migrate_everywhere(self):
        """`access.fcgi migrate` in every namespace at once, through the
        session-mode PgBouncer entry. Returns [(host, rc, output)]."""
        env = dict(os.environ, ACCESS_DATABASE_URL=f"postgresql://access@{GATEWAY}:{PGB_PORT}/access_session")
        t0 = time.monotonic()
        procs = [(i, subprocess.Popen(["ip", "netns", "exec", ns_name(i), str(BIN), "migrate", "-c",
                                       str(STATE / f"host{i}.conf")], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
                 for i in range(1, HOSTS + 1)]
        out = []
        for i, p in procs:
            text, _ = p.communicate(timeout=STEP_TIMEOUT)
            out.append((i, p.returncode, text.strip()))
        self.migrate_seconds = round(time.monotonic() - t0, 2)
        self.migrations = out
        return out

    def start_host(self, i):
        self.spawn(f"host{i}", [BIN, "-c", STATE / f"host{i}.conf", "--listen", f"{host_addr(i)}:{FCGI_PORT}"],
                   ns=ns_name(i))

    def kill_host(self, i):
        """SIGKILL the supervisor and its workers (everything in the namespace)."""
        return kill_namespace_processes(ns_name(i))

    # ------------------------------------------------------------ nginx

    def start_nginx(self):
        params = [ln.strip() for ln in (ROOT / "conf" / "nginx" / "access.conf").read_text().splitlines()
                  if ln.strip().startswith("fastcgi_param")]
        keep = "keepalive 32; keepalive_requests 100000; keepalive_timeout 60s;"
        ups = [f"upstream access_backend {{\n" +
               "".join(f"    server {host_addr(i)}:{FCGI_PORT} max_fails=1 fail_timeout=10s;\n"
                       for i in range(1, HOSTS + 1)) + f"    {keep}\n}}"]
        for i in range(1, HOSTS + 1):
            ups.append(f"upstream h{i} {{ server {host_addr(i)}:{FCGI_PORT}; {keep} }}")
        ups.append(f"upstream n2 {{ server {host_addr(1)}:{FCGI_PORT}; server {host_addr(2)}:{FCGI_PORT}; {keep} }}")
        servers = []
        for name in [f"h{i}" for i in range(1, HOSTS + 1)] + ["n2"]:
            servers.append(f"""    server {{
        listen 127.0.0.1:{self.ports[name]};
        location / {{
            fastcgi_pass {name};
            fastcgi_keep_conn on;
            fastcgi_next_upstream error timeout;
            {chr(10).join('            ' + p for p in params).lstrip()}
        }}
    }}""")
        (STATE / "nginx").mkdir(exist_ok=True)
        (STATE / "nginx.conf").write_text(f"""# make scale-test's nginx (tests/scale/cluster.py)
user nobody nogroup;
worker_processes 1;
pid {STATE}/nginx.pid;
error_log {STATE}/nginx-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {STATE}/nginx/body;
    fastcgi_temp_path {STATE}/nginx/fastcgi;
    proxy_temp_path {STATE}/nginx/proxy;
    scgi_temp_path {STATE}/nginx/scgi;
    uwsgi_temp_path {STATE}/nginx/uwsgi;
{chr(10).join(ups)}
    # Every host behind one upstream, the production snippet as it is.
    server {{
        listen 127.0.0.1:{self.ports['main']};
        include {ROOT}/conf/nginx/access.conf;
        location / {{ fastcgi_pass access_backend; }}
    }}
    # One server per host (and one for hosts 1+2): "every host" is addressed,
    # not sampled.
{chr(10).join(servers)}
}}
""")
        run("nginx", "-t", "-q", "-p", STATE, "-c", STATE / "nginx.conf")
        self.spawn("nginx", ["nginx", "-p", STATE, "-c", STATE / "nginx.conf"])

    # ------------------------------------------------------------ helpers

    def wait(self, cond, timeout, what, proc=None):
        """Until cond(); fails past timeout or once PROC (the server being
        waited for) has exited: an answer must come from this run's server."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and self.procs[proc].poll() is not None:
                raise RuntimeError(f"{what} exited ({self.procs[proc].returncode}): {self.log_tail(proc)}")
            if cond():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} not ready within {timeout} s")

    def url(self, name):
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self):
        errs = cleanup()
        if errs:
            raise RuntimeError(f"leftovers of an earlier run could not be removed: {errs}")
        STATE.mkdir(mode=0o755, parents=True)
        os.chmod(STATE, 0o755)
        for name in ("main", "h1", "h2", "h3", "n2"):
            self.ports[name] = free_port()
        self.make_network()
        self.start_redis()
        self.fresh_database()
        self.start_pgbouncer()
        self.write_configs()
        self.migrate_everywhere()
        for i in range(1, HOSTS + 1):
            self.start_host(i)
        self.start_nginx()
        import urllib.request

        def ready(name):
            try:
                with urllib.request.urlopen(self.url(name) + "/health/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        for i in range(1, HOSTS + 1):
            self.wait(lambda: ready(f"h{i}"), 30, f"host {i}", f"host{i}")

    def stop(self):
        return cleanup()

    def log_tail(self, name, n=20):
        try:
            return "\n".join((STATE / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


RECOVER_LIMIT = 6
LOGIN_FAILURES_MAX = 5


if __name__ == "__main__":
    if sys.argv[1:] == ["cleanup"]:
        left = cleanup()
        if left:
            print("scale cleanup: could not remove:", left, file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    print("usage: cluster.py cleanup", file=sys.stderr)
    sys.exit(2)
