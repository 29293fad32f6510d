#!/usr/bin/python3
"""make bench: load the local stack through nginx and write BENCHMARKS.md.

Every case is bounded (request count or duration) and targets 127.0.0.1
only. The ceilings are measured in the same run: nginx answering by itself,
a trivial libfcgi responder behind the same nginx with FastCGI keep-alive
off and on (the two FastCGI ceilings), and the Argon2id limit
(build/hashbench with hash_threads threads). Every FastCGI case runs with
nginx keeping its connections to the service (the default) and without
(STACK_KEEPALIVE=off, switched with tools/stack.sh nginx-reload and checked
by counting the connections that stay open), each printed with its ratio to
the matching ceiling. Then: signups with hash_queue_max clients, a mixed run
of every class at once, the workers' resident memory, and a perf profile of
a hot /me (when perf can record here).
"""
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.environ.get("PORT")
if not PORT:
    env_file = os.path.join(ROOT, "var", "stack.env")
    PORT = "8080"
    if os.path.exists(env_file):
        for line in open(env_file):
            m = re.match(r"\s*(?:export\s+)?(?:S_)?PORT=(\d+)", line)
            if m:
                PORT = m.group(1)
BASE = f"http://127.0.0.1:{PORT}"
API = BASE + "/api/v1/access"
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = 5000 if QUICK else 50000
N_SMALL = 3000 if QUICK else 10000
DUR = "4s" if QUICK else "10s"
MIX_DUR = "4s" if QUICK else "8s"
STACK = os.path.join(ROOT, "tools", "stack.sh")
APP_SOCK = os.path.join(ROOT, "var", "run", "access.sock")
PASSWORD = "correct horse battery"


def sh(cmd, env=None, timeout=300):
    e = dict(os.environ)
    if env:
        e.update(env)
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
    return r.stdout + r.stderr


def post(path, body, token=None):
    req = urllib.request.Request(API + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for _ in range(20):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code != 503:
                raise
            time.sleep(0.5)
    raise RuntimeError("still 503 after retries: " + path)


def new_user(tag):
    email = f"bench-{tag}-{uuid.uuid4().hex[:12]}@example.org"
    post("/signup", {"email": email, "password": PASSWORD})
    return email


def login(email):
    return post("/login", {"email": email, "password": PASSWORD})


def settle(limit_s=15):
    """Wait until no hash runs or waits anywhere (hash_active and
    hash_queue_depth 0 in /metrics): a storm's queued jobs live on for
    hash_queue_timeout_ms after its clients have gone, and the next row
    would otherwise share the cores with them (an "idle" reference measured
    beside leftover hashes, a storm row starting on a full queue)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(BASE + "/metrics", timeout=5) as r:
                body = r.read().decode()
        except OSError:
            body = ""
        busy = [float(m.group(1)) for m in
                re.finditer(r"^hash_(?:active|queue_depth) (\S+)$", body, re.M)]
        if len(busy) != 2 or not any(busy):
            return  # quiet, or nothing to tell (metrics off: BENCH_BARE)
        time.sleep(0.2)
    print("bench: hashes still queued or running after %d s" % limit_s, file=sys.stderr)


def ab(url, n=N, c=50, headers=(), tlimit=None, post=None, quiet=True):
    """ab -k; with tlimit (s) it stops after that time (n is then a cap).
    quiet: first wait until no hash runs (settle()); False for a run that
    is meant to overlap other load."""
    if quiet:
        settle()
    # -e: percentiles with microseconds (the text report rounds to whole ms).
    fd, csv = tempfile.mkstemp(prefix="bench-ab-", suffix=".csv")
    os.close(fd)
    cmd = ["ab", "-q", "-k", "-c", str(c), "-n", str(n), "-s", "30", "-e", csv]
    if tlimit:
        cmd[cmd.index("-n"):cmd.index("-n") + 2] = []
        cmd += ["-t", str(tlimit), "-n", str(n)]  # -n after -t, or -t caps it at 50000
    for h in headers:
        cmd += ["-H", h]
    if post:
        cmd += ["-p", post, "-T", "application/json"]
    try:
        out = sh(cmd + [url])
        pct = {}
        for line in open(csv):
            m = re.match(r"(\d+),([\d.]+)", line)
            if m:
                pct[int(m.group(1))] = float(m.group(2))
    finally:
        os.unlink(csv)

    def grab(pat, cast=float, default=0):
        m = re.search(pat, out)
        return cast(m.group(1)) if m else default
    res = {
        "rps": grab(r"Requests per second:\s+([\d.]+)"),
        "mean": grab(r"Time per request:\s+([\d.]+) \[ms\] \(mean\)"),
        "p50": pct.get(50, grab(r"\n\s+50%\s+(\d+)")),
        "p99": pct.get(99, grab(r"\n\s+99%\s+(\d+)")),
        # Length mismatches are not failures: bodies such as /health's vary.
        "failed": sum(grab(rf"{k}: (\d+)", int) for k in ("Connect", "Receive", "Exceptions")),
        "non2xx": grab(r"Non-2xx responses:\s+(\d+)", int),
        "tool": f"ab -k -c {c} " + (f"-t {tlimit}" if tlimit else f"-n {n}"),
    }
    if res["rps"] == 0:
        print(out, file=sys.stderr)
    return res


def ab_best(url, runs=3, **kw):
    """The best of runs ab runs, like the ceilings these rows are compared
    with (one run against a best-of-three ceiling was a ratio of noise)."""
    best = None
    for _ in range(1 if QUICK else runs):
        r = ab(url, **kw)
        if best is None or r["rps"] > best["rps"]:
            best = r
    return best


def wrk_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    if not m:
        return 0.0
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def wrk(script, c, t, dur=DUR, env=None, path="", quiet=True):
    """wrk for DUR against BASE (+ path); script None: plain GETs. quiet:
    as for ab()."""
    if quiet:
        settle()
    env = dict(env or {}, BENCH_DIR=os.path.join(ROOT, "tools", "bench"))
    cmd = ["wrk", "-t", str(t), "-c", str(c), "-d", dur, "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", os.path.join(ROOT, "tools", "bench", script)]
    out = sh(cmd + [BASE + path], env=env)
    statuses = {}
    m = re.search(r"STATUSES (\S*)", out)
    if m and m.group(1):
        for kv in m.group(1).split(","):
            k, v = kv.split("=")
            statuses[int(k)] = int(v)
    lat = re.search(r"Latency\s+(\S+)", out)
    p50 = re.search(r"\n\s+50%\s+(\S+)", out)
    p99 = re.search(r"\n\s+99%\s+(\S+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    nreq = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if statuses:
        total = sum(statuses.values())
        ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    else:
        total = int(nreq.group(1)) if nreq else 0
        ok = total - (int(bad.group(1)) if bad else 0)
    res = {
        "rps": float(rps.group(1)) if rps else 0.0,
        "ok_rps": 0.0,
        "mean": wrk_ms(lat.group(1)) if lat else 0.0,
        "p50": wrk_ms(p50.group(1)) if p50 else 0.0,
        "p99": wrk_ms(p99.group(1)) if p99 else 0.0,
        "failed": sum(int(x) for x in sockerr.groups()) if sockerr else 0,
        "non2xx": total - ok,
        "statuses": statuses,
        "tool": f"wrk -t{t} -c{c} -d{dur} ({script or 'GET ' + path})",
    }
    secs = float(dur.rstrip("s"))
    res["ok_rps"] = ok / secs
    if res["rps"] == 0:
        print(out, file=sys.stderr)
    return res


def oauth_bodies(path, client, key, kid, n, extra=""):
    """n form bodies for the OAuth endpoints, each with a fresh client
    assertion signed here beforehand (Ed25519 via python3-cryptography)."""
    import base64

    def b64u(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    header = b64u(json.dumps({"alg": "EdDSA", "kid": kid}, separators=(",", ":")).encode())
    exp = int(time.time()) + 290
    with open(path, "w") as f:
        for i in range(n):
            claims = b64u(json.dumps({"iss": client, "sub": client, "aud": BASE,
                                      "jti": f"b{i}-{uuid.uuid4().hex}", "exp": exp},
                                     separators=(",", ":")).encode())
            signing = f"{header}.{claims}"
            sig = b64u(key.sign(signing.encode()))
            f.write("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type"
                    f"%3Ajwt-bearer&client_assertion={signing}.{sig}{extra}\n")


def oauth_cases(token, row, n, mode):
    """Client-credentials grants and introspections per second with distinct
    pre-made assertions (SPEC §7, §11)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    import base64

    c = post("/clients", {"name": "bench"}, token)
    d = c["private_jwk"]["d"]
    key = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))
    kid = c["private_jwk"]["kid"]
    bodies = os.path.join(ROOT, "var", "bench-oauth.txt")
    threads = 2
    oauth_bodies(bodies, c["id"], key, kid, n, "&grant_type=client_credentials")
    grant = wrk("oauth.lua", c=16, t=threads, env={"BENCH_BODIES": bodies,
                                                   "BENCH_PATH": "/oauth/token",
                                                   "BENCH_THREADS": str(threads)})
    row("grant", "POST /oauth/token, client credentials, distinct pre-made assertions "
        "(16 connections)", mode, grant, "ab50",
        f"{grant['ok_rps']:.0f} grants/s; statuses {grant['statuses']}; target ≥ 0.4 of FastCGI "
        "(its ceiling at ab -c 50)")
    # Introspect a client token (each request authenticates with its own assertion).
    oauth_bodies(bodies + ".1", c["id"], key, kid, 1, "&grant_type=client_credentials")
    with open(bodies + ".1") as f:
        req = urllib.request.Request(BASE + "/oauth/token", data=f.readline().strip().encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    tok = json.load(urllib.request.urlopen(req, timeout=10))["access_token"]
    oauth_bodies(bodies, c["id"], key, kid, n, f"&token={tok}")
    intro = wrk("oauth.lua", c=16, t=threads, env={"BENCH_BODIES": bodies,
                                                   "BENCH_PATH": "/oauth/introspect",
                                                   "BENCH_THREADS": str(threads)})
    row("introspect", "POST /oauth/introspect of a client token, distinct pre-made assertions "
        "(16 connections)", mode, intro, "ab50",
        f"{intro['ok_rps']:.0f} introspections/s; statuses {intro['statuses']}")
    for p in (bodies, bodies + ".1"):
        os.unlink(p)


def hashbench(threads):
    out = sh([os.path.join(ROOT, "build", "hashbench"), str(threads), "3" if QUICK else "8"])
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            res[parts[0]] = (float(parts[1]), float(parts[2]))
    return res


def children(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def worker_pids():
    """The service's worker processes (children of the supervisor)."""
    try:
        sup = open(os.path.join(ROOT, "var", "run", "access.pid")).read().split()[0]
    except OSError:
        return []
    return children(sup)


def proc_status(pid, key):
    """A kB figure (VmRSS, VmHWM) of /proc/<pid>/status, or None."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def worker_cpu_ns():
    """CPU time (user + system, ns) used so far by the service's workers."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in worker_pids():
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return total * 1_000_000_000 // tick


def ab_cpu(url, headers=()):
    """ab plus the workers' CPU time per request (steadier than req/s on a
    box where the load generator and nginx share the cores)."""
    before = worker_cpu_ns()
    r = ab(url, headers=headers)
    r["cpu_us"] = (worker_cpu_ns() - before) / N / 1000
    return r


def hasher_in_use():
    """The Argon2id implementation the running workers use: the last
    "password hashing: <name>" line of the service's log (lib/accounts.c)."""
    path = os.path.join(ROOT, "var", "log", "access.log")
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - (8 << 20)))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    found = re.findall(r'"password hashing: (lib[a-z0-9]+) ', tail)
    return found[-1] if found else None


def app_restart(env):
    """Restart the service with extra environment (None: var/access.conf as
    is) and wait until /health answers."""
    out = sh([STACK, "app-restart"], env=env or {})
    for _ in range(100):
        try:
            with urllib.request.urlopen(BASE + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError("service did not come back: " + out[-500:])


def kept_connections():
    """Established connections on the service's socket (its side of each)."""
    out = sh(["ss", "-xH", "state", "established"])
    n = 0
    for line in out.splitlines():
        parts = line.split()
        if APP_SOCK in parts[:4]:
            n += 1
    return n


KEPT = {}


TIMING_LOG = os.path.join(ROOT, "var", "log", "bench-timing.log")


def nginx_p99(t0, t1, suffix="/me"):
    """p99 and count of nginx's $request_time (ms) for requests to paths
    ending in suffix that ended within [t0, t1] (wall clock), from
    TIMING_LOG (set_keepalive(..., timing=True))."""
    times = []
    try:
        with open(TIMING_LOG) as f:
            for line in f:
                p = line.split()
                if len(p) >= 5 and p[4].endswith(suffix) and t0 <= float(p[0]) <= t1:
                    times.append(float(p[1]) * 1000)
    except (OSError, ValueError):
        return 0.0, 0
    times.sort()
    return (times[min(len(times) - 1, int(len(times) * 0.99))], len(times)) if times else (0.0, 0)


def timing_on(mode):
    """nginx starts logging request times to a fresh TIMING_LOG."""
    if os.path.exists(TIMING_LOG):
        os.unlink(TIMING_LOG)
    set_keepalive(mode, timing=True)


def timed(fn, *args, **kw):
    """fn(...)'s result with the wall-clock window it ran in (t0, t1)."""
    t0 = time.time()
    r = fn(*args, **kw)
    r["t0"], r["t1"] = t0, time.time()
    return r


def timing_off(mode, *results):
    """nginx stops logging (the reload has its old workers flush the log);
    each timed() result gets nginx's p99 of its /me requests."""
    set_keepalive(mode)
    for r in results:
        r["nginx_p99"], r["nginx_n"] = nginx_p99(r["t0"], r["t1"])


def set_keepalive(mode, timing=False):
    """nginx -> service keep-alive "on" or "off": tools/stack.sh rewrites
    var/nginx/upstream.conf and reloads; wait for the old nginx workers to go,
    then check that it took: after a burst of requests, kept connections stay
    open on the service's socket, and none without keep-alive."""
    try:
        master = open(os.path.join(ROOT, "var", "run", "nginx.pid")).read().split()[0]
        old = children(master)
    except OSError:
        old = []
    env = {"STACK_KEEPALIVE": mode}
    if timing:
        env["STACK_TIMING_LOG"] = TIMING_LOG
    out = sh([STACK, "nginx-reload"], env=env)
    deadline = time.monotonic() + 15
    while any(os.path.exists(f"/proc/{p}") for p in old) and time.monotonic() < deadline:
        time.sleep(0.1)
    ab(BASE + "/health/live", n=400, c=8)
    deadline = time.monotonic() + 3
    while True:
        k = kept_connections()
        if (k > 0) == (mode == "on") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if (k > 0) != (mode == "on"):
        raise RuntimeError(f"keep-alive {mode} did not take: {k} connections open on "
                           f"{APP_SOCK} after a burst; {out[-300:]}")
    KEPT[mode] = k
    print(f"keep-alive {mode}: {k} connections open after a burst", flush=True)


def conf_value(key, default):
    path = os.path.join(ROOT, "var", "access.conf")
    if os.path.exists(path):
        for line in open(path):
            m = re.match(rf"\s*{key}\s*=\s*(\S+)", line)
            if m:
                return m.group(1)
    return default


def perf_profile(token, seconds=4):
    """perf record -g on the workers under ab -k load of a hot /me; returns
    ((system calls by total time, user-space symbols by self time), full
    report path) or (None, why)."""
    if not shutil.which("perf"):
        return None, "perf is not installed (Debian: linux-perf)"
    pids = ",".join(str(p) for p in worker_pids())
    data = os.path.join(ROOT, "var", "log", "perf-me-hot.data")
    report = os.path.join(ROOT, "var", "log", "perf-me-hot.txt")
    load = threading.Thread(target=lambda: ab(API + "/me", n=10_000_000, c=50,
                                              headers=[f"Authorization: Bearer {token}"],
                                              tlimit=seconds + 3))
    load.start()
    time.sleep(1)
    out = sh(["perf", "record", "-g", "-o", data, "-p", pids, "--", "sleep", str(seconds)],
             timeout=60)
    load.join()
    if not os.path.exists(data) or "Captured and wrote" not in out:
        return None, "perf could not record here: " + out.strip()[-200:]
    # Children view: kernel time is credited to the system call that led to
    # it (self time in a paravirtualised guest lands on irq-enable helpers).
    rep = sh(["perf", "report", "-i", data, "--stdio", "--children", "--sort", "sym",
              "--percent-limit", "0.3", "-g", "none"], timeout=120)
    with open(report, "w") as f:
        f.write(rep)
    calls, user = [], []
    for line in rep.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+([\d.]+)%\s+\[(.)\]\s+(.+)", line)
        if not m:
            continue
        total, own, where, sym = float(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
        if where == "k" and sym.startswith(("__x64_sys_", "ksys_")):
            calls.append((total, sym.strip()))
        elif where == "." and not sym.startswith("0x"):
            user.append((own, total, sym.strip()))
    calls.sort(reverse=True)
    user.sort(reverse=True)
    return (calls[:8], user[:12]), report


def stack_env(key, default):
    path = os.path.join(ROOT, "var", "stack.env")
    if os.environ.get(key):
        return os.environ[key]
    if os.path.exists(path):
        for line in open(path):
            m = re.match(rf"\s*S_{key}=(\S+)", line)
            if m:
                return m.group(1)
    return default


def psql(sql):
    return sh(["psql", "-X", "-h", "127.0.0.1", "-p", stack_env("PGPORT", "55432"), "-U",
               "access", "-d", "access", "-tAc", sql]).strip()


def ab_post(url, body, n=N, c=50):
    path = os.path.join(ROOT, "var", f"bench-body-{uuid.uuid4().hex[:8]}.json")
    with open(path, "w") as f:
        f.write(json.dumps(body))
    try:
        out = ab(url, n=n, c=c, headers=(), post=path)
    finally:
        os.unlink(path)
    return out


class Receiver:
    """A webhook receiver on a free loopback port (Python's threading HTTP
    server): answers 204 to every POST and counts them."""

    def __init__(self):
        import http.server
        outer = self
        self.count = 0
        self.lock = threading.Lock()

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.count += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def lifecycle_cases(row):
    """SPEC §9 figures: recover for known and unknown emails side by side
    (they should be indistinguishable), and outbox delivery to a local
    webhook receiver beside the receiver's own ceiling."""
    n = 2000 if QUICK else 20000
    known = f"bench-recover-{uuid.uuid4().hex[:12]}@example.org"
    post("/signup", {"email": known, "password": "correct horse battery"})
    pairs = []
    for _ in range(1 if QUICK else 3):  # alternate, so drift hits both alike
        unk = ab_post(API + "/recover", {"email": f"nobody-{uuid.uuid4().hex[:12]}@example.org"},
                      n=n, c=20)
        kn = ab_post(API + "/recover", {"email": known}, n=n, c=20)
        pairs.append((unk, kn))
    unk = sorted((p[0] for p in pairs), key=lambda r: r["rps"])[len(pairs) // 2]
    kn = sorted((p[1] for p in pairs), key=lambda r: r["rps"])[len(pairs) // 2]
    row("POST recover, unknown email, median of runs", unk, ["nginx", "fcgi"],
        "runs: " + ", ".join(f"{p[0]['rps']:.0f}" for p in pairs))
    row("POST recover, known email (3 messages/h, the rest dropped), median of runs", kn,
        ["nginx", "fcgi"], "runs: " + ", ".join(f"{p[1]['rps']:.0f}" for p in pairs) +
        f"; known/unknown req/s {kn['rps'] / unk['rps']:.3f}, p99 {kn['p99']} vs {unk['p99']} ms"
        if unk["rps"] else "")

    rec = Receiver()
    try:
        ceiling = ab_post(rec.url, {"type": "message.verify"}, n=n // 4, c=4)
        row("webhook receiver alone (its ceiling)", ceiling, [], "Python ThreadingHTTPServer")
        secret = "whsec_" + __import__("base64").b64encode(os.urandom(32)).decode()
        app_restart({"ACCESS_MAIL_TRANSPORT": "webhook", "ACCESS_WEBHOOK_URL": rec.url,
                     "ACCESS_WEBHOOK_SECRET": secret})
        m = 1000 if QUICK else 5000
        tag = "bench-" + uuid.uuid4().hex[:8]
        before = rec.count
        t0 = time.monotonic()
        psql("INSERT INTO outbox (id, kind, type, payload, state) SELECT gen_random_uuid(), "
             "'message', 'message.verify', jsonb_build_object('type', 'message.verify', 'to', "
             f"'{tag}@example.org', 'link', 'http://127.0.0.1/verify?token=x', 'expires_at', "
             f"'2030-01-01T00:00:00Z'), 'pending' FROM generate_series(1, {m})")
        deadline = time.monotonic() + 300
        while rec.count - before < m and time.monotonic() < deadline:
            time.sleep(0.05)
        secs = time.monotonic() - t0
        left = psql(f"SELECT count(*) FROM outbox WHERE payload->>'to' = '{tag}@example.org' "
                    "AND state <> 'delivered'")
        psql(f"DELETE FROM outbox WHERE payload->>'to' = '{tag}@example.org'")
        got = rec.count - before
        res = {"rps": got / secs, "mean": 0.0, "p50": 0.0, "p99": 0.0, "failed": 0,
               "non2xx": 0, "tool": f"{m} pending rows, 2 delivery threads"}
        row("outbox delivery to the webhook receiver (messages/s)", res, [],
            f"{got} delivered in {secs:.1f} s ({left or '?'} not yet marked delivered at the "
            f"end); {res['rps'] / ceiling['rps']:.2f} of the receiver's ceiling "
            f"({ceiling['rps']:.0f} req/s)" if ceiling["rps"] else "")
    finally:
        rec.close()
        app_restart(None)


def mfa_cases(row, threads):
    """SPEC §10 figures. A full login with a second factor (password, then
    login/mfa with a TOTP code) should cost one Argon2id hash like a plain
    login. Every account can use each 30 s step once (replay guard), so
    the run spreads over many accounts, each logging in with the codes of
    now and now+1 (its confirmation used now-1). login/mfa alone: mfa_tokens
    written straight into PostgreSQL (their BLAKE2b hash, as the service
    stores them), redeemed with recovery codes, so no hash is in the loop."""
    import base64
    import concurrent.futures
    import hashlib
    import pyotp
    accounts = 12 if QUICK else 40
    users = []
    for i in range(accounts):
        email = new_user(f"mfa{i}")
        tok = login(email)["access_token"]
        secret = post("/mfa/totp", {}, tok)["secret"]
        totp = pyotp.TOTP(secret)
        codes = post("/mfa/totp/confirm", {"code": totp.at(time.time() - 30)},
                     tok)["recovery_codes"]
        users.append((email, totp, codes))
    left = 30 - time.time() % 30
    if left < 20:  # both steps of the run within the window
        time.sleep(left + 0.5)

    def full(u, k):
        t0 = time.monotonic()
        r = post("/login", {"email": u[0], "password": PASSWORD})
        r = post("/login/mfa", {"mfa_token": r["mfa_token"],
                                "code": u[1].at(time.time() + 30 * k)})
        assert "access_token" in r, r
        return (time.monotonic() - t0) * 1000

    def measure(fn, jobs, c):
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(c) as ex:
            lat = sorted(ex.map(lambda j: fn(*j), jobs))
        secs = time.monotonic() - t0
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        return {"rps": len(lat) / secs, "ok_rps": len(lat) / secs, "mean": sum(lat) / len(lat), "p50": pick(0.5),
                "p99": pick(0.99), "failed": 0, "non2xx": 0,
                "tool": f"python, {len(lat)} requests, {c} threads"}

    c = threads * 2
    row("mfa_full", f"POST login + login/mfa (password + TOTP, {c} connections)",
        measure(full, [(u, k) for k in (0, 1) for u in users], c), "argon2",
        "one Argon2id hash per full login, like a plain login")

    def alone(token, code):
        t0 = time.monotonic()
        r = post("/login/mfa", {"mfa_token": token, "code": code})
        assert "access_token" in r, r
        return (time.monotonic() - t0) * 1000

    jobs, values = [], []
    for email, _, codes in users:
        for code in codes:
            token = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
            h = hashlib.blake2b(token.encode(), digest_size=32).hexdigest()
            values.append(f"(decode('{h}', 'hex'), (SELECT id FROM users WHERE email = "
                          f"'{email}'), now() + interval '5 minutes')")
            jobs.append((token, code))
    psql("INSERT INTO mfa_tokens (token_hash, user_id, expires_at) VALUES " + ", ".join(values))
    row("mfa_alone", "POST login/mfa alone (recovery codes, 8 connections)",
        measure(alone, jobs, 8), None, "no hash: keyed BLAKE2b, DELETE ... RETURNING, a session")


def main():
    if os.environ.get("BENCH_ONLY") == "mfa":
        # Only the second factor's cases, printed (BENCHMARKS.md is left alone).
        ht = int(conf_value("hash_threads", max(min(os.cpu_count() or 1, 4), 1)))
        limit = hashbench(ht).get("libsodium", (0, 0))[0]
        mfa_cases(lambda key, name, r, ceil, note="": print(
            f"{name}: {r['rps']:.1f} req/s mean {r['mean']:.1f} ms p50 {r['p50']:.1f} p99 "
            f"{r['p99']:.1f} ({r['tool']})" + (f"; {r['rps'] / limit:.2f} of the Argon2id limit "
                                              f"({limit:.1f} hashes/s, {ht} threads)"
                                              if ceil == "argon2" and limit else "") +
            f"; {note}", flush=True), ht)
        return
    if os.environ.get("BENCH_ONLY") == "lifecycle":
        # Only the life-cycle cases, printed (BENCHMARKS.md is left alone).
        lifecycle_cases(lambda name, r, c, note="": print(
            f"{name}: {r['rps']:.1f} req/s mean {r['mean']:.2f} p50 {r['p50']} p99 {r['p99']} "
            f"failed {r['failed']} non-2xx {r['non2xx']} ({r['tool']}) {note}", flush=True))
        return
    cpus = os.cpu_count() or 1
    hash_threads = int(conf_value("hash_threads", max(min(cpus, 4), 1)))
    qmax = int(conf_value("hash_queue_max", 64))
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    t_start = time.monotonic()
    rows = []   # (case, keep-alive, result, ceiling key, note)
    res = {}    # (case key, keep-alive) -> result

    def row(key, name, mode, r, ceil, note=""):
        rows.append((name, mode, r, ceil, note))
        res[(key, mode)] = r
        print(f"{name} [keep-alive {mode}]: {r['rps']:.0f} req/s p50 {r['p50']:.2f} "
              f"p99 {r['p99']:.2f} failed {r['failed']} non-2xx {r['non2xx']}", flush=True)

    # ---- ceilings, both ways, with the settings of the rows they bound
    print("ceilings...", flush=True)
    static = ab(BASE + "/_bench/static", n=N * 2)
    hello = {}
    # The responder's figures swing from run to run on the shared box (the
    # keep-alive one by up to 2x): each ab ceiling is the best of three
    # alternating runs, and so are the rows the targets compare with them.
    for _ in range(3):
        for mode, path in (("off", "/_bench/fcgi"), ("on", "/_bench/fcgi_ka")):
            for key, kw in (("ab50", {}), ("ab10", {"n": N_SMALL, "c": 10})):
                r = ab(BASE + path, **kw)
                if r["rps"] > hello.get((mode, key), {"rps": -1})["rps"]:
                    hello[(mode, key)] = r
    for mode, path in (("off", "/_bench/fcgi"), ("on", "/_bench/fcgi_ka")):
        hello[(mode, "wrk4")] = wrk(None, c=4, t=4, path=path)
    hb = hashbench(hash_threads)
    argon_limit = hb.get("libsodium", (0, 0))[0]
    # password_hasher = auto may pick libargon2 on huge pages (lib/password.h):
    # the targets keep SPEC §7's libsodium limit; the report adds the limit
    # of the implementation the workers really run.
    hasher = hasher_in_use() or "libsodium"
    own_limit = hb.get("libargon2_thp" if hasher == "libargon2" else "libsodium", (0, 0))[0]

    me_email = new_user("me")
    token = login(me_email)["access_token"]
    auth = [f"Authorization: Bearer {token}"]

    # ---- rows that need the service restarted with other settings
    try:
        for mode in ("on", "off"):
            set_keepalive(mode)
            app_restart({"ACCESS_L1_MAX_ENTRIES": "0"})
            ab(API + "/me", n=2000, headers=auth)
            row("me_cold", "GET /me cold (L1 off, L2 hit)", mode, ab(API + "/me", headers=auth),
                "ab50")
        set_keepalive("on")
        app_restart({"ACCESS_L1_MAX_ENTRIES": "0", "ACCESS_REDIS_URL": ""})
        row("me_pg", "GET /me, L1 and L2 off (PostgreSQL)", "on", ab(API + "/me", headers=auth),
            "ab50")
        # Rate limiting and metrics off (BENCH_BARE=1, benchmarks only) and
        # on, alternately, three times each: run-to-run noise (±5 %) is as
        # large as what is measured, so each side is the median of three.
        bare_runs, full_runs = [], []
        for _ in range(1 if QUICK else 3):
            for env, runs in (({"BENCH_BARE": "1"}, bare_runs), (None, full_runs)):
                app_restart(env)
                ab(API + "/me", n=2000, headers=auth)
                runs.append(ab_cpu(API + "/me", headers=auth))
        me_bare = sorted(bare_runs, key=lambda r: r["rps"])[len(bare_runs) // 2]
        me_full = sorted(full_runs, key=lambda r: r["rps"])[len(full_runs) // 2]
        cpu_bare = sorted(r["cpu_us"] for r in bare_runs)[len(bare_runs) // 2]
        cpu_full = sorted(r["cpu_us"] for r in full_runs)[len(full_runs) // 2]
        app_restart({"BENCH_BARE": "1"})
        login_bare = wrk("login.lua", c=hash_threads * 2, t=2,
                         env={"BENCH_EMAIL": new_user("login-bare"), "BENCH_PASSWORD": PASSWORD})
    finally:
        set_keepalive("on")
        app_restart(None)
    over = (me_bare["rps"] - me_full["rps"]) / me_bare["rps"] * 100 if me_bare["rps"] else 0
    cpu_over = (cpu_full - cpu_bare) / cpu_bare * 100 if cpu_bare else 0
    runs_s = lambda rs: ", ".join(f"{r['rps']:.0f} ({r['cpu_us']:.1f} µs)" for r in rs)
    row("me_bare", "GET /me hot, rate limits and metrics off (BENCH_BARE), median of runs",
        "on", me_bare, "ab50", f"runs (req/s, worker CPU per request): {runs_s(bare_runs)}")
    row("me_full", "GET /me hot, rate limits and metrics on, median of runs", "on", me_full,
        "ab50", f"runs: {runs_s(full_runs)}; overhead of both (target < 5 %): {over:.1f} % of "
        f"req/s, {cpu_over:.1f} % of worker CPU per request ({cpu_bare:.1f} → {cpu_full:.1f} µs)")

    # From here on the service is not restarted: its workers' memory is
    # measured now (idle, just started) and at the end.
    time.sleep(1)
    workers = worker_pids()
    rss_idle = {p: proc_status(p, "VmRSS") for p in workers}

    # ---- every FastCGI case, keep-alive on and off
    run = uuid.uuid4().hex[:8]
    storm = {}
    for mode in ("on", "off"):
        set_keepalive(mode)
        row("health", "GET /health (SELECT 1 + PING), best of three", mode,
            ab_best(BASE + "/health"), "ab50")
        row("jwks", "GET /.well-known/jwks.json", mode, ab(BASE + "/.well-known/jwks.json"),
            "ab50")
        ab(API + "/me", n=2000, headers=auth)  # warm every worker's L1
        row("me_hot", "GET /me hot (L1 hit), best of three", mode,
            ab_best(API + "/me", headers=auth), "ab50")
        signup = wrk("signup.lua", c=hash_threads * 2, t=2, env={"BENCH_RUN": run + mode})
        row("signup", f"POST signup, distinct emails ({hash_threads * 2} connections)", mode,
            signup, "argon2")
        # A user of its own: login storms revoke sessions past
        # max_sessions_per_user, which must not hit the /me token above.
        lg = wrk("login.lua", c=hash_threads * 2, t=2,
                 env={"BENCH_EMAIL": new_user("login-" + mode), "BENCH_PASSWORD": PASSWORD})
        row("login", f"POST login ({hash_threads * 2} connections)", mode, lg, "argon2")
        ref_email = new_user("refresh-" + mode)
        tokens = [login(ref_email)["refresh_token"] for _ in range(4)]
        row("refresh", "POST refresh (4 rotation chains)", mode,
            wrk("refresh.lua", c=4, t=4, env={"BENCH_TOKENS": " ".join(tokens)}), "wrk4")
        oauth_cases(token, row, 30000 if QUICK else 150000, mode)

        # Read isolation: /me latency alone, then while signups saturate the
        # pool; nginx logs request times meanwhile (the server-side view).
        timing_on(mode)
        idle = timed(ab, API + "/me", n=N_SMALL, c=10, headers=auth)

        def storm_run():
            storm[mode] = wrk("signup.lua", c=hash_threads * 4, t=2,
                              dur="6s" if QUICK else "12s", env={"BENCH_RUN": run + mode + "s"})
        th = threading.Thread(target=storm_run)
        th.start()
        time.sleep(1.5)
        during = timed(ab, API + "/me", n=N_SMALL, c=10, headers=auth, quiet=False)
        th.join()
        timing_off(mode, idle, during)
        row("iso_idle", "GET /me idle, -c 10 (reference for the next row)", mode, idle, "ab10")
        row("iso_storm", f"GET /me while signups saturate the hash pool ({hash_threads * 4} "
            "connections), -c 10", mode, during, "ab10",
            f"p99 {during['p99']:.2f} ms vs idle {idle['p99']:.2f} ms (target ≤ 2×); nginx saw "
            f"p99 {during['nginx_p99']:.0f} ms vs {idle['nginx_p99']:.0f} ms; "
            f"storm: {storm[mode]['statuses']}")
        cap = hash_threads + qmax
        shed = wrk("signup.lua", c=cap * 2, t=2, env={"BENCH_RUN": run + mode + "x"})
        row("shed", f"POST signup at 2× pool capacity ({cap * 2} connections)", mode, shed,
            "argon2", f"statuses {shed['statuses']}; socket errors {shed['failed']}")

    # ---- keep-alive on (the default) from here; nginx logs request times
    # for the storm rows below (their server-side view), then stops.
    timing_on("on")
    menv = {"BENCH_TOKEN": token}

    # Signups with hash_queue_max clients: alone (the hashes/s target: on 2
    # cores any other load takes CPU from the hash threads, so the ratio to
    # the Argon2id limit, measured alone, is only fair alone), then with /me
    # beside them (the latency target).
    sq_alone = wrk("signup.lua", c=qmax, t=2, dur="8s" if QUICK else "12s",
                   env={"BENCH_RUN": run + "qa"})
    me_idle_w = timed(wrk, "me.lua", c=10, t=1, dur=MIX_DUR, env=menv)

    def storm64():
        storm["q"] = wrk("signup.lua", c=qmax, t=2, dur="8s" if QUICK else "14s",
                         env={"BENCH_RUN": run + "q"})
    th = threading.Thread(target=storm64)
    th.start()
    time.sleep(3)  # every client is waiting for a hash by now
    me_storm_w = timed(wrk, "me.lua", c=10, t=1, dur=MIX_DUR, env=menv, quiet=False)
    th.join()
    sq = storm["q"]
    timing_off("on", me_idle_w, me_storm_w)

    # The mixed run: one closed-loop generator per class, started together
    # for MIX_DUR; the fixed ratio is the generators' connections. Each class
    # alone with the same settings first (its idle p99).
    mix_login_email = new_user("mix-login")

    def mix_gens(tag):
        ref_email = new_user("mix-refresh-" + tag)
        toks = [login(ref_email)["refresh_token"] for _ in range(2)]
        return [
            ("GET /me (hot)", "me.lua", 8, 1, menv),
            ("POST login", "login.lua", 2, 1, {"BENCH_EMAIL": mix_login_email,
                                               "BENCH_PASSWORD": PASSWORD}),
            ("POST refresh", "refresh.lua", 2, 2, {"BENCH_TOKENS": " ".join(toks)}),
            ("POST signup", "signup.lua", 2, 1, {"BENCH_RUN": run + "m" + tag}),
        ]
    mix_idle = {}
    for name, script, c, t, env in mix_gens("i"):
        mix_idle[name] = wrk(script, c=c, t=t, dur=MIX_DUR, env=env)
    mix = {}
    gens = mix_gens("m")

    def gen(name, script, c, t, env):
        mix[name] = wrk(script, c=c, t=t, dur=MIX_DUR, env=env, quiet=False)
    settle()
    ths = [threading.Thread(target=gen, args=g) for g in gens]
    for t_ in ths:
        t_.start()
    for t_ in ths:
        t_.join()

    # A profile of a hot /me with keep-alive.
    prof, prof_where = perf_profile(token, seconds=2 if QUICK else 4)

    time.sleep(1)
    now = worker_pids()
    rss_after = {p: proc_status(p, "VmRSS") for p in workers}
    hwm_after = {p: proc_status(p, "VmHWM") for p in workers}
    # ---- SPEC §9: recover (known vs unknown email) and outbox delivery
    set_keepalive("on")
    lifecycle_cases(lambda name, r, ceils, note="": row(
        "life:" + name, name, "on", r, "ab50" if ceils else None, note))
    # ---- SPEC §10: a login with a second factor, and login/mfa alone
    mfa_cases(lambda key, name, r, ceil, note="": row("mfa:" + key, name, "on", r, ceil, note),
              hash_threads)

    elapsed = time.monotonic() - t_start

    # ---- the report
    def ceiling(mode, key):
        return hello[(mode, key)]

    def ratio(r, mode, c):
        if c is None:
            return ""
        if c == "argon2":
            s = f"{r['ok_rps'] / argon_limit:.2f} of Argon2id limit" if argon_limit else ""
            if hasher != "libsodium" and own_limit:
                s += f"; {r['ok_rps'] / own_limit:.2f} of {hasher}'s"
            return s
        own = ceiling(mode, c)["rps"]
        s = f"{r['rps'] / own:.3f} of {'KA' if mode == 'on' else 'no-KA'} ceiling" if own else ""
        if mode == "on" and ceiling("off", c)["rps"]:
            s += f"; {r['rps'] / ceiling('off', c)['rps']:.2f}× no-KA ceiling"
        return s

    def fmt_rps(r, c):
        if c == "argon2" or "statuses" in r and r["statuses"]:
            return f"{r['rps']:.1f} ({r['ok_rps']:.1f} 2xx/s)"
        return f"{r['rps']:.0f}"

    def yes(ok):
        return "**met**" if ok else "**not met**"

    me_ka, me_off = res[("me_hot", "on")], res[("me_hot", "off")]
    hka, hoff = ceiling("on", "ab50"), ceiling("off", "ab50")
    targets = []

    def target(what, measured, ok):
        targets.append((what, measured, ok))
    q = me_ka["rps"] / hka["rps"] if hka["rps"] else 0
    target("/me hot, keep-alive: ≥ 0.85 of the KA ceiling", f"{q:.3f} "
           f"({me_ka['rps']:.0f} / {hka['rps']:.0f} req/s)", q >= 0.85)
    q = me_ka["rps"] / hoff["rps"] if hoff["rps"] else 0
    target("/me hot, keep-alive: ≥ 1.3× the no-KA ceiling", f"{q:.2f}× "
           f"({me_ka['rps']:.0f} / {hoff['rps']:.0f} req/s)", q >= 1.3)
    q = me_ka["p99"] / hka["p99"] if hka["p99"] else 0
    target("/me hot, keep-alive: p99 within 1.5× the trivial responder's (KA, -c 50)",
           f"{me_ka['p99']:.2f} ms vs {hka['p99']:.2f} ms = {q:.2f}×", 0 < q <= 1.5)
    for mode in ("on", "off"):
        h = res[("health", mode)]
        c = ceiling(mode, "ab50")["rps"]
        q = h["rps"] / c if c else 0
        target(f"/health, keep-alive {mode}: ≥ 0.5 of its ceiling ({'KA' if mode == 'on' else 'no-KA'})",
               f"{q:.3f} ({h['rps']:.0f} / {c:.0f} req/s)", q >= 0.5)
    q = sq_alone["ok_rps"] / argon_limit if argon_limit else 0
    target(f"signups with {qmax} clients: ≥ 0.9 of the Argon2id limit",
           f"{q:.2f} ({sq_alone['ok_rps']:.1f} 2xx/s / {argon_limit:.1f} hashes/s)"
           + (f"; workers hash with {hasher}: {sq_alone['ok_rps'] / own_limit:.2f} of its "
              f"{own_limit:.1f} hashes/s" if hasher != "libsodium" and own_limit else ""),
           q >= 0.9)
    q = me_storm_w["p99"] / me_idle_w["p99"] if me_idle_w["p99"] else 0
    # nginx times in whole ms: its values are given, not a ratio of them.
    target(f"/me p99 during that storm within 2× idle",
           f"{me_storm_w['p99']:.2f} ms vs {me_idle_w['p99']:.2f} ms = {q:.2f}× (wrk); nginx saw "
           f"{me_storm_w['nginx_p99']:.0f} ms vs {me_idle_w['nginx_p99']:.0f} ms (whole ms)",
           0 < q <= 2)
    for mode in ("on", "off"):
        i, d = res[("iso_idle", mode)], res[("iso_storm", mode)]
        q = d["p99"] / i["p99"] if i["p99"] else 0
        target(f"read isolation ({hash_threads * 4} signup connections), keep-alive {mode}: "
               "/me p99 within 2× idle", f"{d['p99']:.2f} ms vs {i['p99']:.2f} ms = {q:.2f}× (ab); "
               f"nginx saw {d['nginx_p99']:.0f} ms vs {i['nginx_p99']:.0f} ms (whole ms)",
               0 < q <= 2)

    def hello_line(mode, key):
        r = ceiling(mode, key)
        return (f"{r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms "
                f"({r['tool']})")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"in {elapsed / 60:.1f} min.",
        f"Hardware: {cpu}, {cpus} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB, "
        f"{platform.system()} {platform.release()}. Load generator, nginx, PostgreSQL, Redis and "
        "the service share the same cores (and, on the shared box, other people's work: "
        "figures are noisy).",
        "",
        "Ceilings measured in this run:",
        f"- nginx `return 200` by itself: **{static['rps']:.0f} req/s** ({static['tool']})",
        "- trivial libfcgi responder behind the same nginx, FastCGI keep-alive **off** "
        "(`/_bench/fcgi`, a connection per request):",
        f"  - **{hello_line('off', 'ab50')}** (ab rows: best of three runs)",
        f"  - {hello_line('off', 'ab10')}",
        f"  - {hello_line('off', 'wrk4')}",
        "- the same responder, keep-alive **on** (`/_bench/fcgi_ka`, nginx `keepalive 32`, "
        "`fastcgi_keep_conn on`):",
        f"  - **{hello_line('on', 'ab50')}**",
        f"  - {hello_line('on', 'ab10')}",
        f"  - {hello_line('on', 'wrk4')}",
        f"- Argon2id (t=3, m=64 MiB, p=1) with {hash_threads} threads: libsodium "
        f"**{hb.get('libsodium', (0, 0))[0]:.1f} hashes/s** ({hb.get('libsodium', (0, 0))[1]:.0f} ms each), "
        f"libargon2 {hb.get('libargon2', (0, 0))[0]:.1f}/s ({hb.get('libargon2', (0, 0))[1]:.0f} ms), "
        f"libargon2 with pre-faulted memory {hb.get('libargon2_prefault', (0, 0))[0]:.1f}/s "
        f"({hb.get('libargon2_prefault', (0, 0))[1]:.0f} ms), libargon2 with fresh memory on "
        f"transparent huge pages {hb.get('libargon2_thp', (0, 0))[0]:.1f}/s "
        f"({hb.get('libargon2_thp', (0, 0))[1]:.0f} ms)",
        f"- The workers hash with **{hasher}** (`password_hasher`, `auto` by default: the faster "
        "of the two, timed once at start).",
        "",
        "Keep-alive to the service is switched with `STACK_KEEPALIVE=on|off tools/stack.sh "
        "nginx-reload` and checked after each switch: after 400 requests, "
        f"{KEPT.get('on', '?')} connections stayed open on the service's socket with it on, "
        f"{KEPT.get('off', '?')} with it off. Each row's ratio is to the responder with the same "
        "keep-alive and the same load settings (ab -c 50, ab -c 10 or wrk -c 4); keep-alive "
        "rows also give the multiple of the no-keep-alive ceiling. Signup and login rows: "
        "successful responses per second over the Argon2id limit.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    for what, measured, ok in targets:
        lines.append(f"| {what} | {measured} | {yes(ok)} |")
    lines += [
        "",
        "## FastCGI cases, keep-alive on and off",
        "",
        "| case | keep-alive | tool | req/s | mean ms | p50 ms | p99 ms | failed | non-2xx | ratio | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    order = {}
    for name, mode, r, c, note in rows:
        order.setdefault(name, len(order))
    for name, mode, r, c, note in sorted(rows, key=lambda x: (order[x[0]], x[1] != "on")):
        lines.append(f"| {name} | {mode} | {r['tool']} | {fmt_rps(r, c)} | {r['mean']:.2f} | "
                     f"{r['p50']:.2f} | {r['p99']:.2f} | {r['failed']} | {r['non2xx']} | "
                     f"{ratio(r, mode, c)} | {note} |")
    lines += [
        "",
        "The login row with rate limits and metrics off (BENCH_BARE, keep-alive on): "
        f"{login_bare['ok_rps']:.1f} 2xx/s, p99 {login_bare['p99']:.1f} ms "
        f"({login_bare['ok_rps'] / argon_limit:.2f} of the Argon2id limit; with both on, "
        f"{res[('login', 'on')]['ok_rps']:.1f} 2xx/s).",
        "",
        f"## Signups with hash_queue_max ({qmax}) clients, keep-alive on",
        "",
        "| what | tool | req/s | p50 ms | p99 ms | statuses / socket errors |",
        "|---|---|---:|---:|---:|---|",
        f"| POST signup, {qmax} connections, alone | {sq_alone['tool']} | "
        f"{fmt_rps(sq_alone, 'argon2')} | {sq_alone['p50']:.1f} | {sq_alone['p99']:.1f} | "
        f"{sq_alone['statuses']} / {sq_alone['failed']} |",
        f"| POST signup, {qmax} connections, with the /me probe below | {sq['tool']} | {fmt_rps(sq, 'argon2')} | "
        f"{sq['p50']:.1f} | {sq['p99']:.1f} | {sq['statuses']} / {sq['failed']} |",
        f"| GET /me idle (before) | {me_idle_w['tool']} | {me_idle_w['rps']:.0f} | "
        f"{me_idle_w['p50']:.2f} | {me_idle_w['p99']:.2f} | {me_idle_w['statuses']} / {me_idle_w['failed']} |",
        f"| GET /me during the storm (from its 3rd second) | {me_storm_w['tool']} | "
        f"{me_storm_w['rps']:.0f} | {me_storm_w['p50']:.2f} | {me_storm_w['p99']:.2f} | "
        f"{me_storm_w['statuses']} / {me_storm_w['failed']} |",
        "",
        f"The same /me requests as nginx timed them (`$request_time`, ms resolution, "
        f"`STACK_TIMING_LOG`): idle p99 {me_idle_w['nginx_p99']:.0f} ms ({me_idle_w['nginx_n']} "
        f"requests), during the storm p99 {me_storm_w['nginx_p99']:.0f} ms "
        f"({me_storm_w['nginx_n']} requests). nginx times in whole milliseconds, so an idle "
        "p99 of 1 or 2 ms cannot carry a ratio; the gap to wrk's figures is time outside nginx "
        "and the service (wrk itself waiting for a CPU).",
        "",
        f"Successful signups alone: {sq_alone['ok_rps']:.1f}/s = "
        f"{sq_alone['ok_rps'] / argon_limit if argon_limit else 0:.2f} of the Argon2id limit "
        f"({argon_limit:.1f}/s); with the /me probe taking its share of the 2 cores, "
        f"{sq['ok_rps']:.1f}/s. 503s are the queue shedding past "
        f"hash_queue_timeout_ms ({conf_value('hash_queue_timeout_ms', 2000)} ms).",
        "",
        "## Mixed run, keep-alive on",
        "",
        f"One wrk per class, started together for {MIX_DUR} (fixed ratio by connections: /me 8, "
        "login 2, refresh 2 chains, signup 2); idle is the same generator alone just before.",
        "",
        "| class | tool | mixed req/s (2xx/s) | mixed p50 ms | mixed p99 ms | idle req/s | idle p99 ms | p99 mixed / idle | statuses |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, script, c, t, env in gens:
        m, i = mix[name], mix_idle[name]
        q = m["p99"] / i["p99"] if i["p99"] else 0
        lines.append(f"| {name} | {m['tool']} | {m['rps']:.1f} ({m['ok_rps']:.1f}) | "
                     f"{m['p50']:.2f} | {m['p99']:.2f} | {i['rps']:.1f} | {i['p99']:.2f} | "
                     f"{q:.2f}× | {m['statuses']} |")
    lines += [
        "",
        "## Worker memory",
        "",
        "VmRSS of each worker just after start (idle) and after every case above (the "
        "storms have ended, so Argon2 buffers, freed after each hash, are not in it); "
        "VmHWM is the peak, which does include them.",
        "",
        "| worker pid | VmRSS idle | VmRSS after the bench | VmHWM |",
        "|---|---:|---:|---:|",
    ]
    kb = lambda v: f"{v / 1024:.1f} MiB" if v is not None else "gone"
    for p in workers:
        lines.append(f"| {p} | {kb(rss_idle[p])} | {kb(rss_after[p])} | {kb(hwm_after[p])} |")
    if sorted(now) != sorted(workers):
        lines.append(f"\nWorkers changed during the bench: {workers} → {now}.")
    lines += ["", "## Profile of a hot /me, keep-alive on", ""]
    if prof:
        calls, user = prof
        lines += [
            "`perf record -g -p <workers>` for a few seconds under `ab -k -c 50`, shares of "
            f"the workers' samples (full report: `{os.path.relpath(prof_where, ROOT)}`; "
            "reading in docs/performance.md).",
            "",
            "| system call (with the kernel work under it) | share |",
            "|---|---:|",
        ]
        lines += [f"| `{sym}` | {pct:.1f} % |" for pct, sym in calls]
        lines += ["", "| user-space symbol | self | with callees |", "|---|---:|---:|"]
        lines += [f"| `{sym}` | {own:.1f} % | {tot:.1f} % |" for own, tot, sym in user]
    else:
        lines.append(prof_where)
    lines += [
        "",
        "Notes: percentiles from `ab -e` and `wrk --latency`. `failed` counts socket-level "
        "errors (ab: failed connect/receive/exceptions, not length mismatches; wrk: "
        "connect/read/write/timeout errors). Signup and login rows use wrk with Lua scripts "
        "(`tools/bench/`), since ab cannot vary bodies.",
        "",
    ]
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))
    # The README carries the same report between its bench markers.
    readme = os.path.join(ROOT, "README.md")
    text = open(readme).read()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        # Without the title; its sections one level below the README's.
        body = "\n".join("#" + x if x.startswith("## ") else x for x in lines[2:])
        text = text[:text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]
        with open(readme, "w") as f:
            f.write(text)
    print(f"wrote BENCHMARKS.md ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
