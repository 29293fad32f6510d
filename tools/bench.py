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


def ab(url, n=N, c=50, headers=()):
    cmd = ["ab", "-q", "-k", "-c", str(c), "-n", str(n), "-s", "30"]
    for h in headers:
        cmd += ["-H", h]
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


def oauth_cases(token, row, n):
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
    row("POST /oauth/token, client credentials, distinct pre-made assertions (16 connections)",
        grant, ["nginx", "fcgi"], f"{grant['ok_rps']:.0f} grants/s; statuses {grant['statuses']}; "
        "target ≥ 0.4 of FastCGI")
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
    row("POST /oauth/introspect of a client token, distinct pre-made assertions (16 connections)",
        intro, ["nginx", "fcgi"], f"{intro['ok_rps']:.0f} introspections/s; statuses "
        f"{intro['statuses']}")
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


def main():
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
    oauth_cases(token, row, 30000 if QUICK else 150000)

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
