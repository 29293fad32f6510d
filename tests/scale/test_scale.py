"""Several hosts (SPEC §14), on one machine: three app hosts in network
namespaces, each addressed directly (its own nginx server) and all together
(one upstream). What one host writes, every host sees; what one host counts,
every host counts; a host killed costs at most the requests it had in flight.

The tests run in file order on one cluster: the host kill comes last."""

import concurrent.futures
import re
import subprocess
import threading
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import cluster as cl

API = "/api/v1/access"
PASSWORD = "correct horse battery"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
HOSTS = [f"h{i}" for i in range(1, cl.HOSTS + 1)]
COHERENCE_BOUND = 2.0  # seconds: pub/sub delay with a loaded 2-core box's margin


# ---------------------------------------------------------------- helpers


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def post_retry(url, **kw):
    """POST, retried while the hash pool sheds load (503 + Retry-After)."""
    for _ in range(20):
        r = requests.post(url, timeout=10, **kw)
        if r.status_code != 503:
            return r
        time.sleep(0.2)
    return r


def new_user(cluster, tag):
    email = f"{tag}-{uuid.uuid4().hex[:12]}@scale.example"
    base = cluster.url("main")
    r = post_retry(base + API + "/signup", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = post_retry(base + API + "/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return email, r.json()["access_token"]


def me(cluster, host, tok):
    return requests.get(cluster.url(host) + API + "/me", headers=bearer(tok), timeout=10)


def wait_until(cond, bound, what):
    """Seconds until cond() holds; fails past `bound`."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > bound:
            raise AssertionError(f"{what}: not within {bound} s")
        time.sleep(0.02)


def l1_hits(cluster, host):
    return requests.get(cluster.url(host) + "/health", timeout=5).json()["checks"]["cache"]["l1"]["hits"]


def new_client(cluster, tok):
    r = requests.post(cluster.url("main") + API + "/clients", json={"name": "robot"}, headers=bearer(tok),
                      timeout=10)
    assert r.status_code == 201, r.text
    c = r.json()
    pj = c["private_jwk"]
    import base64
    d = base64.urlsafe_b64decode(pj["d"] + "=" * (-len(pj["d"]) % 4))
    c["key"], c["kid"] = Ed25519PrivateKey.from_private_bytes(d), pj["kid"]
    return c


def assertion(cluster, c):
    now = int(time.time())
    claims = {"iss": c["id"], "sub": c["id"], "aud": cluster.url("main"), "jti": str(uuid.uuid4()),
              "iat": now, "exp": now + 60}
    return jwt.encode(claims, c["key"], algorithm="EdDSA", headers={"kid": c["kid"]})


def token_request(cluster, host, a):
    return requests.post(cluster.url(host) + "/oauth/token", timeout=10,
                         data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                               "client_assertion": a})


def introspect(cluster, host, by, token):
    return requests.post(cluster.url(host) + "/oauth/introspect", timeout=10,
                         data={"client_assertion_type": ASSERTION_TYPE,
                               "client_assertion": assertion(cluster, by), "token": token})


# ---------------------------------------------------------------- tests


def test_migrations_started_on_every_host_apply_once(cluster, report):
    files = sorted(p.name[:3] for p in (cl.ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql"))
    applied = {}
    for host, rc, out in cluster.migrations:
        assert rc == 0, f"host {host}: {out}"
        m = re.search(r"migrate: (\d+) migrations? applied", out)
        assert m, out
        applied[host] = int(m.group(1))
    # One host applied them all, under the advisory lock; the others waited
    # and found nothing to do.
    assert sorted(applied.values()) == [0] * (cl.HOSTS - 1) + [len(files)], applied
    versions = cl.psql("SELECT version FROM schema_migrations ORDER BY 1", db=cl.DB).split()
    assert len(versions) == len(set(versions)) == len(files), versions
    report(f"{cl.HOSTS} concurrent `migrate` runs on a fresh database: applied per host {applied}, "
           f"schema_migrations holds {len(versions)} rows for {len(files)} files; all three done in "
           f"{cluster.migrate_seconds} s")


def test_patch_on_one_host_is_seen_on_every_host(cluster, report):
    _, tok = new_user(cluster, "patch")
    for h in HOSTS:  # every host loads the profile, then serves it from L1
        for _ in range(2):
            r = me(cluster, h, tok)
            assert r.status_code == 200, r.text
    hits = {h: l1_hits(cluster, h) for h in HOSTS}
    assert all(n > 0 for n in hits.values()), hits
    name = "renamed-" + uuid.uuid4().hex[:8]
    r = requests.patch(cluster.url("h1") + API + "/me", json={"name": name}, headers=bearer(tok), timeout=10)
    assert r.status_code == 200 and r.json()["name"] == name, r.text
    t0 = time.monotonic()
    seen = {}
    for h in HOSTS:
        wait_until(lambda: me(cluster, h, tok).json()["name"] == name, COHERENCE_BOUND, f"name on {h}")
        seen[h] = round((time.monotonic() - t0) * 1000)
    report(f"PATCH /me on h1 (each host had the old copy in L1, L1 hits {hits}); new name read on "
           f"every host, cumulative ms after the PATCH: {seen}")


def test_logout_is_effective_on_every_host(cluster, report):
    _, tok = new_user(cluster, "logout")
    for h in HOSTS:
        assert me(cluster, h, tok).status_code == 200
    r = requests.post(cluster.url("h2") + API + "/logout", headers=bearer(tok), timeout=10)
    assert r.status_code == 204, r.text
    t0 = time.monotonic()
    refused = {}
    for h in HOSTS:
        wait_until(lambda: me(cluster, h, tok).status_code == 401, COHERENCE_BOUND, f"logout on {h}")
        refused[h] = round((time.monotonic() - t0) * 1000)
    report(f"logout on h2; the token refused (401) on every host, cumulative ms: {refused}")


def test_client_deletion_is_effective_on_every_host(cluster, report):
    _, tok = new_user(cluster, "client-owner")
    c, judge = new_client(cluster, tok), new_client(cluster, tok)
    # Every host grants the client a token (and so caches the client).
    tokens = {}
    for h in HOSTS:
        r = token_request(cluster, h, assertion(cluster, c))
        assert r.status_code == 200, r.text
        tokens[h] = r.json()["access_token"]
    for h in HOSTS:
        r = introspect(cluster, h, judge, tokens["h1"])
        assert r.status_code == 200 and r.json()["active"] is True, r.text
    r = requests.delete(cluster.url("h1") + API + f"/clients/{c['id']}", headers=bearer(tok), timeout=10)
    assert r.status_code == 204, r.text
    t0 = time.monotonic()
    gone = {}
    for h in HOSTS:
        wait_until(lambda: token_request(cluster, h, assertion(cluster, c)).status_code == 401,
                   COHERENCE_BOUND, f"deleted client's assertion on {h}")
        for t in tokens.values():
            r = introspect(cluster, h, judge, t)
            assert r.status_code == 200 and r.json() == {"active": False}, (h, r.text)
        gone[h] = round((time.monotonic() - t0) * 1000)
    report(f"client deleted on h1: its assertions refused (401) and its {len(tokens)} tokens inactive "
           f"on every host, cumulative ms: {gone}")


def test_login_throttle_counts_once_across_hosts(cluster, report):
    email, _ = new_user(cluster, "throttle")
    codes = []
    for k in range(cl.LOGIN_FAILURES_MAX):  # failures spread over the hosts
        h = HOSTS[k % len(HOSTS)]
        r = post_retry(cluster.url(h) + API + "/login", json={"email": email, "password": "wrong password"})
        codes.append((h, r.status_code))
    assert all(code == 401 for _, code in codes), codes
    after = {}
    for h in HOSTS:  # even the right password, on any host
        r = post_retry(cluster.url(h) + API + "/login", json={"email": email, "password": PASSWORD})
        after[h] = r.status_code
        assert r.status_code == 429 and r.json()["code"] == "rate_limited", (h, r.text)
    report(f"login_failures_max={cl.LOGIN_FAILURES_MAX}: failures {codes}, then the right password "
           f"on each host: {after}")


def test_rate_limit_counts_once_across_hosts(cluster, report):
    seen = []
    for k in range(cl.RECOVER_LIMIT):  # one budget per client address, spent on all hosts
        h = HOSTS[k % len(HOSTS)]
        r = requests.post(cluster.url(h) + API + "/recover", json={"email": f"nobody{k}@scale.example"},
                          timeout=10)
        assert r.status_code == 202, (h, r.status_code, r.text)
        seen.append((h, r.headers.get("RateLimit")))
    over = {}
    for h in HOSTS:
        r = requests.post(cluster.url(h) + API + "/recover", json={"email": "nobody@scale.example"}, timeout=10)
        over[h] = r.status_code
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, (h, r.text)
    report(f"ratelimit_recover={cl.RECOVER_LIMIT}/3600: accepted {seen}; then on each host {over}")


def test_replayed_jti_is_refused_on_another_host(cluster, report):
    _, tok = new_user(cluster, "jti")
    c = new_client(cluster, tok)
    sequential = []
    for first in HOSTS:
        a = assertion(cluster, c)
        r = token_request(cluster, first, a)
        assert r.status_code == 200, r.text
        for other in HOSTS:
            if other != first:
                r = token_request(cluster, other, a)
                assert r.status_code == 401 and r.json()["error"] == "invalid_client", (other, r.text)
                sequential.append(f"{first}->{other}")
    # One assertion sent to every host at once, three times each: one grant.
    rounds = []
    for _ in range(5):
        a = assertion(cluster, c)
        with concurrent.futures.ThreadPoolExecutor(9) as ex:
            codes = list(ex.map(lambda h: token_request(cluster, h, a).status_code, HOSTS * 3))
        assert sorted(codes) == [200] + [401] * 8, codes
        rounds.append(codes.count(200))
    report(f"replays refused across hosts: {len(sequential)} ({', '.join(sequential)}); "
           f"5 rounds of one assertion x9 in parallel over 3 hosts: grants per round {rounds}")


def ab(url, tok, seconds=4, concurrency=16):
    out = subprocess.run(["ab", "-q", "-k", "-c", str(concurrency), "-t", str(seconds), "-n", "1000000",
                          "-H", "Authorization: Bearer " + tok, url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout

    def num(pattern):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else 0.0
    return {"complete": int(num(r"Complete requests:\s+(\d+)")), "failed": int(num(r"Failed requests:\s+(\d+)")),
            "non2xx": int(num(r"Non-2xx responses:\s+(\d+)")), "rps": num(r"Requests per second:\s+([\d.]+)"),
            "p50_ms": num(r"\n\s+50%\s+(\d+)"), "p99_ms": num(r"\n\s+99%\s+(\d+)")}


def test_me_throughput_with_1_2_3_hosts(cluster, report):
    _, tok = new_user(cluster, "bench")
    for h in HOSTS:
        for _ in range(3):
            assert me(cluster, h, tok).status_code == 200
    results = {}
    for n, server in ((1, "h1"), (2, "n2"), (3, "main")):
        res = ab(cluster.url(server) + API + "/me", tok)
        assert res["complete"] > 0 and res["failed"] == 0 and res["non2xx"] == 0, res
        results[n] = res
        report(f"GET /me hot, {n} host(s), ab -k -c 16 -t 4: {res['rps']:.0f} req/s, "
               f"p50 {res['p50_ms']:.0f} ms, p99 {res['p99_ms']:.0f} ms, {res['complete']} requests, 0 failed")
    report("all hosts, nginx, PostgreSQL, Redis and ab share this machine's cores: these numbers show the "
           "overhead of spreading over hosts (more processes, more pub/sub), not how the service scales")
    # What the hosts hold on the shared servers after the load: PgBouncer
    # bounds PostgreSQL's connections whatever the hosts' pools add up to.
    server_conns = int(cl.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{cl.DB}'"))
    assert 0 < server_conns <= cl.PGB_POOL + cl.PGB_SESSION_POOL, server_conns
    info = cl.run("redis-cli", "-h", cl.GATEWAY, "-p", cl.REDIS_PORT, "info", "memory").stdout
    used = re.search(r"used_memory_human:(\S+)", info).group(1)
    keys = cl.run("redis-cli", "-h", cl.GATEWAY, "-p", cl.REDIS_PORT, "dbsize").stdout.strip()
    pool = cl.HOSTS * cl.WORKERS * (cl.THREADS + cl.HASH_THREADS + 3)
    report(f"PostgreSQL server connections through PgBouncer: {server_conns} (pool {cl.PGB_POOL}; the hosts' "
           f"pools could open {pool}); Redis after the run: {keys} keys, {used} used")


def test_host_killed_nginx_serves_from_the_others(cluster, report):
    _, tok = new_user(cluster, "kill")
    base = cluster.url("main")
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"get_ok": 0, "get_fail": [], "patch_ok": 0, "patch_fail": []}

    def reader():
        s = requests.Session()
        while not stop.is_set():
            try:
                code = s.get(base + API + "/me", headers=bearer(tok), timeout=10).status_code
            except requests.RequestException as e:
                code = type(e).__name__
            with lock:
                if code == 200:
                    counts["get_ok"] += 1
                else:
                    counts["get_fail"].append(code)

    def writer():
        s = requests.Session()
        while not stop.is_set():
            try:
                code = s.patch(base + API + "/me", json={"name": uuid.uuid4().hex[:8]}, headers=bearer(tok),
                               timeout=10).status_code
            except requests.RequestException as e:
                code = type(e).__name__
            with lock:
                if code == 200:
                    counts["patch_ok"] += 1
                else:
                    counts["patch_fail"].append(code)

    writers = 2
    threads = [threading.Thread(target=reader) for _ in range(4)] + \
              [threading.Thread(target=writer) for _ in range(writers)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        with lock:
            before = dict(counts, get_fail=len(counts["get_fail"]), patch_fail=len(counts["patch_fail"]))
        killed = cluster.kill_host(3)
        time.sleep(4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert killed, "host 3 had no processes to kill"
    r = requests.get(cluster.url("h3") + "/health/live", timeout=10)
    assert r.status_code == 502, r.status_code  # it is really gone
    assert counts["get_ok"] > before["get_ok"] and counts["patch_ok"] > before["patch_ok"], counts
    # Idempotent requests are retried on another host by nginx; a PATCH is
    # not once sent, so at most the ones in flight at the kill: one per
    # writer, since the first failure takes the host out (max_fails=1,
    # fail_timeout=10s outlasts the 4 s after the kill).
    assert counts["get_fail"] == [], counts["get_fail"]
    assert len(counts["patch_fail"]) <= writers, counts["patch_fail"]
    report(f"SIGKILL of host 3 ({len(killed)} processes) under load through nginx (4 GET + {writers} PATCH "
           f"loops, 2 s before, 4 s after): GET ok {counts['get_ok']} failed {len(counts['get_fail'])}; "
           f"PATCH ok {counts['patch_ok']} failed {len(counts['patch_fail'])} {counts['patch_fail']} "
           f"(bound: {writers} in flight)")


JANITOR_KEY = 7021789497208138350  # lib/janitor.h JANITOR_LOCK_KEY


def janitor_locks():
    return int(cl.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
                       f"AND ((classid::bigint << 32) | objid::bigint) = {JANITOR_KEY}", db=cl.DB))


def test_janitor_works_through_transaction_pooling(cluster, report):
    """Every worker of every host runs janitor rounds each second through
    PgBouncer in transaction mode: expired rows go, and the janitor's lock
    is never left behind (a session lock taken and released by separate
    statements reached different server connections and stayed taken)."""
    n = 300
    cl.psql("INSERT INTO audit_events (id, type, created_at, detail) SELECT gen_random_uuid(), "
            "'logout', now() - interval '400 days', '{\"m\": \"janitor-scale\"}' "
            f"FROM generate_series(1, {n})", db=cl.DB)
    t0 = time.monotonic()
    left, samples = n, []
    while time.monotonic() - t0 < 20:
        left = int(cl.psql("SELECT count(*) FROM audit_events WHERE detail->>'m' = 'janitor-scale'",
                           db=cl.DB))
        samples.append(janitor_locks())
        if left == 0:
            break
        time.sleep(0.2)
    took = time.monotonic() - t0
    assert left == 0, f"{left} of {n} expired audit events still there after {took:.1f} s"
    for _ in range(15):  # several more rounds of every worker
        samples.append(janitor_locks())
        time.sleep(0.2)
    # A sample may catch a batch holding its transaction lock; a lock left
    # behind shows in every sample from then on.
    assert samples[-5:] == [0] * 5, samples
    report(f"{n} expired audit events deleted through PgBouncer (transaction mode) in {took:.1f} s "
           f"with janitor_interval={cl.JANITOR_INTERVAL} on {cl.HOSTS} hosts; janitor lock held in "
           f"{sum(1 for x in samples if x)} of {len(samples)} samples, none at the end")

