#!/usr/bin/python3
"""make bench: load the local stack through nginx and write BENCHMARKS.md.

Every case is bounded (request count or duration) and targets 127.0.0.1
only. The ceilings are measured in the same run: nginx answering by itself,
a trivial libfcgi responder behind the same nginx, and the Argon2id limit
(build/hashbench with hash_threads threads). Each figure is printed with its
ratio to the relevant ceiling.
"""
import json
import os
import platform
import re
import subprocess
import sys
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
            m = re.match(r"\s*(?:export\s+)?PORT=(\d+)", line)
            if m:
                PORT = m.group(1)
BASE = f"http://127.0.0.1:{PORT}"
API = BASE + "/api/v1/access"
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = 5000 if QUICK else 50000
DUR = "4s" if QUICK else "10s"


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


def ab(url, n=N, c=50, headers=(), post=None):
    cmd = ["ab", "-q", "-k", "-c", str(c), "-n", str(n), "-s", "30"]
    for h in headers:
        cmd += ["-H", h]
    if post:
        cmd += ["-p", post, "-T", "application/json"]
    out = sh(cmd + [url])

    def grab(pat, cast=float, default=0):
        m = re.search(pat, out)
        return cast(m.group(1)) if m else default
    res = {
        "rps": grab(r"Requests per second:\s+([\d.]+)"),
        "mean": grab(r"Time per request:\s+([\d.]+) \[ms\] \(mean\)"),
        "p50": grab(r"\n\s+50%\s+(\d+)"),
        "p99": grab(r"\n\s+99%\s+(\d+)"),
        # Length mismatches are not failures: bodies such as /health's vary.
        "failed": sum(grab(rf"{k}: (\d+)", int) for k in ("Connect", "Receive", "Exceptions")),
        "non2xx": grab(r"Non-2xx responses:\s+(\d+)", int),
        "tool": f"ab -k -c {c} -n {n}",
    }
    if res["rps"] == 0:
        print(out, file=sys.stderr)
    return res


def wrk_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    if not m:
        return 0.0
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def wrk(script, c, t, dur=DUR, env=None):
    env = dict(env or {}, BENCH_DIR=os.path.join(ROOT, "tools", "bench"))
    out = sh(["wrk", "-t", str(t), "-c", str(c), "-d", dur, "--latency", "--timeout", "10s",
              "-s", os.path.join(ROOT, "tools", "bench", script), BASE], env=env)
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
    sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = sum(statuses.values())
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    res = {
        "rps": float(rps.group(1)) if rps else 0.0,
        "ok_rps": 0.0,
        "mean": wrk_ms(lat.group(1)) if lat else 0.0,
        "p50": wrk_ms(p50.group(1)) if p50 else 0.0,
        "p99": wrk_ms(p99.group(1)) if p99 else 0.0,
        "failed": sum(int(x) for x in sockerr.groups()) if sockerr else 0,
        "non2xx": total - ok,
        "statuses": statuses,
        "tool": f"wrk -t{t} -c{c} -d{dur} ({script})",
    }
    secs = float(dur.rstrip("s"))
    res["ok_rps"] = ok / secs
    if res["rps"] == 0:
        print(out, file=sys.stderr)
    return res


def hashbench(threads):
    out = sh([os.path.join(ROOT, "build", "hashbench"), str(threads), "3" if QUICK else "8"])
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            res[parts[0]] = (float(parts[1]), float(parts[2]))
    return res


def worker_cpu_ns():
    """CPU time (user + system, ns) used so far by the service's workers."""
    try:
        sup = open(os.path.join(ROOT, "var", "run", "access.pid")).read().split()[0]
        kids = open(f"/proc/{sup}/task/{sup}/children").read().split()
    except OSError:
        return 0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in kids:
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


def app_restart(env):
    """Restart the service with extra environment (None: var/access.conf as
    is) and wait until /health answers."""
    out = sh([os.path.join(ROOT, "tools", "stack.sh"), "app-restart"], env=env or {})
    for _ in range(100):
        try:
            with urllib.request.urlopen(BASE + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError("service did not come back: " + out[-500:])


def conf_value(key, default):
    path = os.path.join(ROOT, "var", "access.conf")
    if os.path.exists(path):
        for line in open(path):
            m = re.match(rf"\s*{key}\s*=\s*(\S+)", line)
            if m:
                return m.group(1)
    return default


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


def main():
    if os.environ.get("BENCH_ONLY") == "lifecycle":
        # Only the life-cycle cases, printed (BENCHMARKS.md is left alone).
        lifecycle_cases(lambda name, r, c, note="": print(
            f"{name}: {r['rps']:.1f} req/s mean {r['mean']:.2f} p50 {r['p50']} p99 {r['p99']} "
            f"failed {r['failed']} non-2xx {r['non2xx']} ({r['tool']}) {note}", flush=True))
        return
    cpus = os.cpu_count() or 1
    hash_threads = int(conf_value("hash_threads", max(min(cpus, 4), 1)))
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rows = []

    def row(name, r, ceilings, note=""):
        rows.append((name, r, ceilings, note))
        print(f"{name}: {r['rps']:.0f} req/s p50 {r['p50']} p99 {r['p99']} "
              f"failed {r['failed']} non-2xx {r['non2xx']}", flush=True)

    print("ceilings...", flush=True)
    static = ab(BASE + "/_bench/static", n=N * 2)
    hello = ab(BASE + "/_bench/fcgi")
    hb = hashbench(hash_threads)
    argon_limit = hb.get("libsodium", (0, 0))[0]
    row("nginx `return 200` (ceiling)", static, [])
    row("trivial libfcgi responder (FastCGI ceiling)", hello, ["nginx"])
    row("GET /health (SELECT 1 + PING)", ab(BASE + "/health"), ["nginx", "fcgi"])
    row("GET /.well-known/jwks.json", ab(BASE + "/.well-known/jwks.json"), ["nginx", "fcgi"])

    email = f"bench-{uuid.uuid4().hex[:12]}@example.org"
    password = "correct horse battery"
    post("/signup", {"email": email, "password": password})
    token = post("/login", {"email": email, "password": password})["access_token"]
    auth = [f"Authorization: Bearer {token}"]
    ab(API + "/me", n=2000, headers=auth)  # warm every worker's L1
    me_hot = ab(API + "/me", headers=auth)
    row("GET /me hot (L1 hit)", me_hot, ["nginx", "fcgi"],
        f"target ≥ 0.8 of FastCGI with p99 < 5 ms")
    # The same with each layer switched off (one app restart per variant).
    try:
        app_restart({"ACCESS_L1_MAX_ENTRIES": "0"})
        ab(API + "/me", n=2000, headers=auth)
        row("GET /me, L1 off (L2 hit)", ab(API + "/me", headers=auth), ["nginx", "fcgi"])
        app_restart({"ACCESS_L1_MAX_ENTRIES": "0", "ACCESS_REDIS_URL": ""})
        row("GET /me, L1 and L2 off (PostgreSQL)", ab(API + "/me", headers=auth),
            ["nginx", "fcgi"])
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
        login_bare_email = f"bench-bare-{uuid.uuid4().hex[:12]}@example.org"
        post("/signup", {"email": login_bare_email, "password": password})
        login_bare = wrk("login.lua", c=hash_threads * 2, t=2,
                         env={"BENCH_EMAIL": login_bare_email, "BENCH_PASSWORD": password})
    finally:
        app_restart(None)
    over = (me_bare["rps"] - me_full["rps"]) / me_bare["rps"] * 100 if me_bare["rps"] else 0
    cpu_over = (cpu_full - cpu_bare) / cpu_bare * 100 if cpu_bare else 0
    runs_s = lambda rs: ", ".join(f"{r['rps']:.0f} ({r['cpu_us']:.1f} µs)" for r in rs)
    row("GET /me hot, rate limits and metrics off (BENCH_BARE), median of runs", me_bare,
        ["nginx", "fcgi"], f"runs (req/s, worker CPU per request): {runs_s(bare_runs)}")
    row("GET /me hot, rate limits and metrics on, median of runs", me_full, ["nginx", "fcgi"],
        f"runs: {runs_s(full_runs)}; overhead of both (target < 5 %): {over:.1f} % of req/s, "
        f"{cpu_over:.1f} % of worker CPU per request ({cpu_bare:.1f} → {cpu_full:.1f} µs)")

    run = uuid.uuid4().hex[:8]
    signup = wrk("signup.lua", c=hash_threads * 2, t=2, env={"BENCH_RUN": run})
    signup["rps_vs_argon"] = signup["ok_rps"]
    row(f"POST signup, distinct emails ({hash_threads * 2} connections)", signup, ["argon2"])
    # A user of its own: login storms revoke sessions past
    # max_sessions_per_user, which must not hit the /me token above.
    login_email = f"bench-login-{uuid.uuid4().hex[:12]}@example.org"
    post("/signup", {"email": login_email, "password": password})
    login = wrk("login.lua", c=hash_threads * 2, t=2,
                env={"BENCH_EMAIL": login_email, "BENCH_PASSWORD": password})
    row(f"POST login ({hash_threads * 2} connections)", login, ["argon2"])
    row(f"POST login, rate limits and metrics off ({hash_threads * 2} connections)", login_bare,
        ["argon2"], f"with both on: {login['ok_rps']:.1f} 2xx/s")
    tokens = [post("/login", {"email": login_email, "password": password})["refresh_token"]
              for _ in range(4)]
    refresh = wrk("refresh.lua", c=4, t=4, env={"BENCH_TOKENS": " ".join(tokens)})
    row("POST refresh (4 rotation chains)", refresh, ["nginx", "fcgi"])

    # Read isolation: /me latency alone, then while signups saturate the pool.
    me_small_idle = ab(API + "/me", n=3000 if QUICK else 10000, c=10,
                       headers=[f"Authorization: Bearer {token}"])
    storm = {}

    def storm_run():
        storm["r"] = wrk("signup.lua", c=hash_threads * 4, t=2, dur="6s" if QUICK else "12s",
                         env={"BENCH_RUN": run + "s"})
    th = threading.Thread(target=storm_run)
    th.start()
    time.sleep(1.5)
    me_storm = ab(API + "/me", n=3000 if QUICK else 10000, c=10,
                  headers=[f"Authorization: Bearer {token}"])
    th.join()
    row("GET /me idle, -c 10 (reference for the next row)", me_small_idle, ["nginx", "fcgi"])
    row(f"GET /me while signups saturate the hash pool ({hash_threads * 4} connections), -c 10", me_storm, ["nginx", "fcgi"],
        f"p99 {me_storm['p99']} ms vs idle {me_small_idle['p99']} ms "
        f"(target ≤ 2×); storm: {storm['r']['statuses']}")
    cap = hash_threads + int(conf_value("hash_queue_max", 64))
    shed = wrk("signup.lua", c=cap * 2, t=2, env={"BENCH_RUN": run + "x"})
    row(f"POST signup at 2× pool capacity ({cap * 2} connections)", shed, ["argon2"],
        f"statuses {shed['statuses']}; socket errors {shed['failed']}")
    lifecycle_cases(row)

    def ratio(r, c):
        if c == "nginx":
            return f"{r['rps'] / static['rps']:.3f} of nginx" if static["rps"] else ""
        if c == "fcgi":
            return f"{r['rps'] / hello['rps']:.3f} of FastCGI" if hello["rps"] else ""
        if c == "argon2":
            return (f"{r['ok_rps'] / argon_limit:.2f} of Argon2id limit" if argon_limit else "")
        return ""

    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Hardware: {cpu}, {cpus} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB, "
        f"{platform.system()} {platform.release()}. Load generator, nginx, PostgreSQL, Redis and "
        "the service share the same cores.",
        "",
        "Ceilings measured in this run:",
        f"- nginx `return 200` by itself: **{static['rps']:.0f} req/s** ({static['tool']})",
        f"- trivial libfcgi responder behind the same nginx: **{hello['rps']:.0f} req/s** ({hello['tool']})",
        f"- Argon2id (t=3, m=64 MiB, p=1) with {hash_threads} threads: libsodium "
        f"**{hb.get('libsodium', (0, 0))[0]:.1f} hashes/s** ({hb.get('libsodium', (0, 0))[1]:.0f} ms each), "
        f"libargon2 {hb.get('libargon2', (0, 0))[0]:.1f}/s ({hb.get('libargon2', (0, 0))[1]:.0f} ms), "
        f"libargon2 with pre-faulted memory {hb.get('libargon2_prefault', (0, 0))[0]:.1f}/s "
        f"({hb.get('libargon2_prefault', (0, 0))[1]:.0f} ms)",
        "",
        "| case | tool | req/s | mean ms | p50 ms | p99 ms | failed | non-2xx | ratio | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r, ceilings, note in rows:
        rat = "; ".join(x for x in (ratio(r, c) for c in ceilings) if x)
        rps = r["rps"]
        if "ok_rps" in r and ceilings == ["argon2"]:
            rps_s = f"{rps:.1f} ({r['ok_rps']:.1f} 2xx/s)"
        else:
            rps_s = f"{rps:.0f}"
        lines.append(f"| {name} | {r['tool']} | {rps_s} | {r['mean']:.2f} | {r['p50']:.2f} | "
                     f"{r['p99']:.2f} | {r['failed']} | {r['non2xx']} | {rat} | {note} |")
    lines += [
        "",
        "Notes: `ab` percentiles are whole milliseconds. `failed` counts socket-level errors "
        "(ab: failed requests; wrk: connect/read/write/timeout errors). Signup and login rows "
        "use wrk with Lua scripts (`tools/bench/`), since ab cannot vary bodies; their ratio is "
        "successful responses per second over the libsodium Argon2id limit of the same run.",
        "",
    ]
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))
    # The README carries the same table between its bench markers.
    readme = os.path.join(ROOT, "README.md")
    text = open(readme).read()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        body = "\n".join(lines[2:])  # without the title
        text = text[:text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]
        with open(readme, "w") as f:
            f.write(text)
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
