"""The cache end to end (SPEC §1, §5): GET /me from each worker's L1 over
the Redis L2, and the invalidations that keep them coherent. Through nginx,
with the real PostgreSQL and Redis and at least two workers.

Every request that must reach "every worker" goes over a fresh connection
(Connection: close); nginx opens a new FastCGI connection per request, and
whichever worker thread accepts it answers, so the requests usually
spread. Usually: on a busy box one worker can win every accept of a batch,
so a batch that must reach every worker is repeated until the counters
show it did (until_each_worker_rose).

/health does not say which worker answered, but its cache counters do: they
only move when a worker serves a cached route, never on /health itself. So
while no other request runs, the distinct (l1 hits, l1 misses, l2 hits,
l2 misses) seen over a few /health calls are the workers' own counters, one
set per worker (worker_caches()); comparing two such snapshots tells, per
worker, what a batch of requests did to its cache.

The last tests add a second instance (the access.fcgi lighttpd spawns, with
its own supervisor and shared memory) standing for another host on the same
PostgreSQL and Redis: only the pub/sub channel keeps its L1 coherent.
"""

import concurrent.futures
import itertools
import os
import re
import signal
import subprocess
import threading
import time
import uuid

import jwt
import pytest
from conftest import keepalive_off
import requests

API = "/api/v1/access"
PASSWORD = "correct horse battery"
PROBLEM = "application/problem+json"
JWKS = "/.well-known/jwks.json"

BURST = 50  # parallel checks right after a revocation
WINDOW_S = 0.100  # they must begin within this long of the write's response
READS = 100  # fresh-connection reads after a PATCH
WARM = 50  # fresh-connection reads that fill every worker's L1


# ---------------------------------------------------------------- HTTP helpers


def fresh(method, url, headers=None, **kw):
    """One request on its own connection (a new requests session, closed)."""
    h = {"Connection": "close"}
    h.update(headers or {})
    kw.setdefault("timeout", 15)
    return requests.request(method, url, headers=h, **kw)


def bearer(token):
    return {"Authorization": "Bearer " + token}


def post_retry(url, payload, headers=None, attempts=10, pause=0.3):
    """POST JSON, retrying while the hash pool sheds load (503 overloaded)."""
    for i in range(attempts):
        r = fresh("POST", url, headers=headers, json=payload)
        if r.status_code != 503 or i == attempts - 1:
            return r
        time.sleep(pause)
    return r


def new_user(base_url, unique_email, prefix):
    email = unique_email(prefix)
    r = post_retry(base_url + API + "/signup", {"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return email, r.json()


def login(base_url, email, password=PASSWORD):
    r = post_retry(base_url + API + "/login", {"email": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def me(base_url, token, headers=None):
    h = bearer(token)
    h.update(headers or {})
    return fresh("GET", base_url + API + "/me", headers=h)


def patch_name(base_url, token, name):
    r = fresh("PATCH", base_url + API + "/me", headers=bearer(token), json={"name": name})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name
    etag = r.headers.get("ETag")
    assert etag
    return r.json(), etag


def sid_of(token):
    return jwt.decode(token, options={"verify_signature": False})["sid"]


def assert_invalid_token(r, what=""):
    assert r.status_code == 401, (what, r.status_code, r.text)
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == PROBLEM, what
    assert r.json()["code"] == "invalid_token", (what, r.text)
    assert r.headers.get("WWW-Authenticate") == 'Bearer error="invalid_token"', what


def assert_reads(base_url, token, user, etag, n=READS):
    """n fresh-connection reads of /me all show exactly user with etag."""
    bad = []
    for i in range(n):
        r = me(base_url, token)
        if r.status_code != 200 or r.json() != user or r.headers.get("ETag") != etag:
            bad.append((i, r.status_code, r.headers.get("ETag"), r.text))
    assert not bad, f"{len(bad)} of {n} reads were stale or failed, e.g. {bad[:3]}"


# ---------------------------------------------------------------- per-worker counters


def _ident(c):
    return (c["l1"]["hits"], c["l1"]["misses"], c["l2"]["hits"], c["l2"]["misses"])


def health_bodies(base_url, n):
    out = []
    for _ in range(n):
        r = fresh("GET", base_url + "/health", timeout=5)
        out.append((r.status_code, r.json()))
    return out


def in_parallel(fn, n, par=4):
    """fn(i) for i in range(n), on par threads at once; the results in order.
    Parallel fresh connections spread over the workers better than serial
    ones: a worker's thread that is waiting for a CPU loses the accept."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=par) as pool:
        return list(pool.map(fn, range(n)))


def worker_caches(base_url, workers, tries=320):
    """The /health "cache" object of each worker while nothing else runs:
    exactly `workers` entries. /health is asked in parallel batches until
    every worker has answered (or `tries` answers). Two workers with
    identical counters look like one; the list is padded with copies of
    what was seen (so it can only undercount a change, never invent one)."""
    seen, asked = {}, 0
    while asked < tries:
        for c in in_parallel(lambda _: fresh("GET", base_url + "/health", timeout=5)
                             .json()["checks"]["cache"], 8):
            seen.setdefault(_ident(c), c)
        asked += 8
        if len(seen) >= workers and asked >= 2 * workers + 4:
            break
    assert len(seen) <= workers, f"counters moved while idle: {sorted(seen)}"
    caches = list(seen.values())
    while len(caches) < workers:
        caches.append(caches[len(caches) % len(seen)])
    return caches


def pairings(before, after):
    """Every plausible pairing of the workers of two snapshots (counters
    never go down), each a list of (before, after) per worker. Empty when
    the snapshots cannot come from the same workers."""
    out = []
    for perm in itertools.permutations(range(len(before))):
        pairs = [(before[j], after[i]) for i, j in enumerate(perm)]
        if all(all(x <= y for x, y in zip(_ident(b), _ident(a))) for b, a in pairs):
            out.append(pairs)
    return out


def each_worker_rose(before, after, layer, field):
    """cache.<layer>.<field> grew on every worker. A worker that served
    nothing shows the very same counters in both snapshots; beyond that,
    some pairing of the snapshots must show the rise on every worker (the
    true pairing is not known, and demanding it of every plausible one
    would fail on a coincidence of counters)."""
    if any(_ident(a) == _ident(b) for a in after for b in before):
        return False
    return any(all(a[layer][field] > b[layer][field] for b, a in pairs)
               for pairs in pairings(before, after))


def assert_each_worker_rose(before, after, layer, field):
    assert pairings(before, after), f"no pairing of the workers' counters: {before} -> {after}"
    idle = [a for a in after if any(_ident(a) == _ident(b) for b in before)]
    assert not idle, f"a worker served none of the requests: {idle[0]}"
    assert each_worker_rose(before, after, layer, field), \
        f"some worker's {layer}.{field} did not rise: {before} -> {after}"


def until_each_worker_rose(base_url, workers, batch, fields, rounds=6):
    """Run batch() between two snapshots of the workers' counters until
    every (layer, field) in fields rose on every worker, at most `rounds`
    times: which worker accepts a connection is up to the scheduler, and on
    a busy box one worker can win every accept of a batch. Fails on the
    last round's snapshots. Returns them."""
    for k in range(rounds):
        before = worker_caches(base_url, workers)
        batch()
        after = worker_caches(base_url, workers)
        if all(each_worker_rose(before, after, layer, field) for layer, field in fields):
            if k:
                print(f"every worker answered in round {k + 1}")
            return before, after
    for layer, field in fields:
        assert_each_worker_rose(before, after, layer, field)
    return before, after


def warm(base_url, stack, tokens, n=WARM):
    """n fresh-connection reads of /me (over the tokens in turn), repeated
    until the counters prove that every worker's L1 answered some."""
    workers = len(stack.worker_pids())

    def read(i):
        r = me(base_url, tokens[i % len(tokens)])
        assert r.status_code == 200, r.text

    _, after = until_each_worker_rose(base_url, workers, lambda: in_parallel(read, n),
                                      [("l1", "hits")])
    return after


# ---------------------------------------------------------------- revocation burst


def revoked_everywhere(base_url, write, tokens, n=BURST):
    """Start n threads, each ready to GET /me on a fresh connection with one
    of the tokens (in turn); run write() (the revoking request), and as
    soon as its response is in, release them all at once. Every check must
    be 401 invalid_token and the first must begin within WINDOW_S of the
    response. Returns (write's response, delay to the first check, time
    until the last answer)."""
    go = threading.Event()
    lock = threading.Lock()
    starts, results = [], []

    def check(i):
        go.wait(30)
        t = time.monotonic()
        try:
            r = me(base_url, tokens[i % len(tokens)])
            res = (i, r.status_code, r.headers.get("Content-Type"),
                   r.headers.get("WWW-Authenticate"), r.text)
        except requests.RequestException as exc:
            res = (i, None, None, None, repr(exc))
        with lock:
            starts.append(t)
            results.append((time.monotonic(), res))

    threads = [threading.Thread(target=check, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        r = write()
        responded = time.monotonic()
    finally:
        go.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a check did not finish"
    assert len(results) == n
    first = min(starts) - responded
    last = max(at for at, _ in results) - responded
    bad = [res for _, res in results
           if res[1] != 401 or (res[2] or "").split(";")[0] != PROBLEM
           or res[3] != 'Bearer error="invalid_token"' or '"invalid_token"' not in res[4]]
    assert not bad, f"{len(bad)} of {n} checks after the revocation were not 401 " \
                    f"invalid_token: {bad[:3]}"
    assert first < WINDOW_S, f"the checks began {first * 1000:.1f} ms after the response"
    return r, first, last


def still_revoked(base_url, tokens, n=40):
    """Later on (stale loads would have landed by now), still refused."""
    for i in range(n):
        assert_invalid_token(me(base_url, tokens[i % len(tokens)]), f"late check {i}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def connection_per_request(stack):
    """These tests reach "every worker" with serial reads and read each
    worker's counters: with kept FastCGI connections nginx carries serial
    requests on one connection to one worker, so this module runs with a
    connection per request (STACK_KEEPALIVE=off; test_keepalive.py covers
    kept connections)."""
    with keepalive_off(stack):
        yield


@pytest.fixture(scope="module")
def workers(stack):
    """At least two workers for this module (restored afterwards if it had
    to change them)."""
    count = len(stack.worker_pids())
    changed = count < 2
    if changed:
        stack.app_restart({"ACCESS_WORKERS": 2})
        count = len(stack.wait_workers(2))
    wait_all_up(stack.base_url)
    yield count
    if changed:
        stack.app_restart()


@pytest.fixture(autouse=True)
def settled(stack):
    """Each test starts with every worker subscribed (a reconnection left
    over from an earlier test would flush L1 in the middle of this one)."""
    wait_all_up(stack.base_url)


def wait_all_up(base_url, timeout=15.0):
    """Until every worker's invalidation subscription is up and /health ok
    (20 fresh /health answers in a row)."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = health_bodies(base_url, 20)
        if all(code == 200 and b["status"] == "ok" and b["checks"]["cache"]["invalidation"] == "up"
               for code, b in bodies):
            return
        assert time.monotonic() < deadline, \
            f"not every worker's invalidation channel is up: {bodies[-1]}"
        time.sleep(0.1)


# ---------------------------------------------------------------- 1. PATCH /me


def test_patch_me_is_seen_by_every_worker(base_url, stack, workers, unique_email):
    email, user = new_user(base_url, unique_email, "c-patch")
    tok = login(base_url, email)["access_token"]
    r = me(base_url, tok)
    assert r.status_code == 200 and r.json() == user
    old_etag = r.headers["ETag"]
    warm(base_url, stack, [tok])

    name = "patched " + uuid.uuid4().hex[:8]
    new, etag = patch_name(base_url, tok, name)
    assert etag != old_etag
    assert new == dict(user, name=name)
    assert_reads(base_url, tok, new, etag)

    # conditional reads agree on every worker too
    for _ in range(20):
        r = me(base_url, tok, headers={"If-None-Match": etag})
        assert r.status_code == 304, (r.status_code, r.text)
        assert r.headers.get("ETag") == etag
        r = me(base_url, tok, headers={"If-None-Match": old_etag})
        assert r.status_code == 200 and r.json() == new and r.headers["ETag"] == etag


def test_patches_in_a_row_each_seen_at_once(base_url, stack, workers, unique_email):
    """Several writes in quick succession: after each PATCH returns, no
    worker serves an older name (neither a stale L1 entry nor a slow
    loader's result)."""
    email, user = new_user(base_url, unique_email, "c-rows")
    tok = login(base_url, email)["access_token"]
    warm(base_url, stack, [tok])
    for k in range(5):
        new, etag = patch_name(base_url, tok, f"round {k}")
        assert_reads(base_url, tok, new, etag, n=30)


def test_reads_during_writes_never_go_back(base_url, stack, workers, unique_email):
    """Readers on several threads while PATCHes follow one another: a read
    sent after a PATCH's response never shows an older name, whichever
    worker answers and whatever loads were in flight."""
    email, _ = new_user(base_url, unique_email, "c-race")
    tok = login(base_url, email)["access_token"]
    warm(base_url, stack, [tok])
    done = threading.Event()
    lock = threading.Lock()
    reads, answered = [], []

    def reader():
        while not done.is_set():
            sent = time.monotonic()
            r = me(base_url, tok)
            name = r.json().get("name") if r.status_code == 200 else None
            with lock:
                reads.append((sent, r.status_code, name))

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for k in range(30):
            patch_name(base_url, tok, f"v{k}")
            answered.append(time.monotonic())
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert len(reads) > 60, "the readers hardly ran"
    stale = []
    for sent, status, name in reads:
        assert status == 200, (status, name)
        seen = int(name[1:]) if name.startswith("v") else -1
        due = sum(1 for at in answered if at < sent) - 1  # the newest PATCH answered
        if seen < due:
            stale.append((name, f"v{due}", f"{(sent - answered[due]) * 1000:.2f} ms"))
    assert not stale, f"{len(stale)} of {len(reads)} reads were stale: {stale[:5]}"


# ---------------------------------------------------------------- 2. revocations


def test_logout_refused_by_every_worker_at_once(base_url, stack, workers, unique_email):
    email, _ = new_user(base_url, unique_email, "c-logout")
    t = login(base_url, email)
    other = login(base_url, email)
    tok = t["access_token"]
    warm(base_url, stack, [tok, other["access_token"]])

    def logout():
        return fresh("POST", base_url + API + "/logout", headers=bearer(tok))

    r, first, last = revoked_everywhere(base_url, logout, [tok])
    assert r.status_code == 204, r.text
    print(f"logout: first check after {first * 1000:.1f} ms, all {BURST} answered "
          f"401 within {last * 1000:.1f} ms")
    still_revoked(base_url, [tok])
    # only that session: the other one still works everywhere
    for _ in range(20):
        assert me(base_url, other["access_token"]).status_code == 200
    r = fresh("POST", base_url + API + "/refresh", json={"refresh_token": t["refresh_token"]})
    assert_invalid_token(r)


def test_deleted_session_refused_by_every_worker_at_once(base_url, stack, workers,
                                                          unique_email):
    email, _ = new_user(base_url, unique_email, "c-delete")
    a = login(base_url, email)["access_token"]
    b = login(base_url, email)["access_token"]
    warm(base_url, stack, [a, b])

    def delete():
        return fresh("DELETE", base_url + API + "/sessions/" + sid_of(b), headers=bearer(a))

    r, first, last = revoked_everywhere(base_url, delete, [b])
    assert r.status_code == 204, r.text
    print(f"DELETE /sessions: first check after {first * 1000:.1f} ms, last answer "
          f"{last * 1000:.1f} ms")
    still_revoked(base_url, [b])
    for _ in range(20):
        assert me(base_url, a).status_code == 200


def test_password_change_refuses_other_sessions_everywhere(base_url, stack, workers,
                                                            unique_email):
    email, user = new_user(base_url, unique_email, "c-passwd")
    a = login(base_url, email)["access_token"]
    others = [login(base_url, email)["access_token"] for _ in range(2)]
    warm(base_url, stack, [a] + others)
    etag_before = me(base_url, a).headers["ETag"]

    def change():
        return post_retry(base_url + API + "/password",
                          {"current_password": PASSWORD, "new_password": "a new password 2"},
                          headers=bearer(a))

    r, first, last = revoked_everywhere(base_url, change, others)
    assert r.status_code == 204, r.text
    print(f"password change: first check after {first * 1000:.1f} ms, last answer "
          f"{last * 1000:.1f} ms")
    still_revoked(base_url, others)
    # the session that changed it lives on, and every worker sees the
    # profile's new version (the ETag names it)
    r = me(base_url, a)
    assert r.status_code == 200 and r.json() == user
    etag = r.headers["ETag"]
    assert etag != etag_before
    assert_reads(base_url, a, user, etag, n=40)


def test_refresh_reuse_revokes_session_everywhere(base_url, stack, workers, unique_email):
    email, _ = new_user(base_url, unique_email, "c-reuse")
    t1 = login(base_url, email)
    r = fresh("POST", base_url + API + "/refresh", json={"refresh_token": t1["refresh_token"]})
    assert r.status_code == 200, r.text
    t2 = r.json()
    assert sid_of(t2["access_token"]) == sid_of(t1["access_token"])
    bystander = login(base_url, email)["access_token"]
    warm(base_url, stack, [t1["access_token"], t2["access_token"]])

    def reuse():
        return fresh("POST", base_url + API + "/refresh",
                     json={"refresh_token": t1["refresh_token"]})

    r, first, last = revoked_everywhere(base_url, reuse,
                                        [t1["access_token"], t2["access_token"]])
    assert_invalid_token(r, "the reused refresh token")
    print(f"refresh reuse: first check after {first * 1000:.1f} ms, last answer "
          f"{last * 1000:.1f} ms")
    still_revoked(base_url, [t1["access_token"], t2["access_token"]])
    r = fresh("POST", base_url + API + "/refresh", json={"refresh_token": t2["refresh_token"]})
    assert_invalid_token(r, "the rotated refresh token of the revoked session")
    for _ in range(20):
        assert me(base_url, bystander).status_code == 200


# ---------------------------------------------------------------- 3. Redis down and back


def test_redis_down_and_back(fault_stack, base_url, workers, unique_email, wait_for):
    stack = fault_stack
    email, user = new_user(base_url, unique_email, "c-redis")
    tok = login(base_url, email)["access_token"]
    spare = login(base_url, email)["access_token"]  # logged out during the outage
    warm(base_url, stack, [tok, spare])
    pids = stack.app_pids()

    stack.redis_stop()
    try:
        def degraded():
            bodies = health_bodies(base_url, 10)
            return all(code == 200 and b["status"] == "degraded"
                       and b["checks"]["redis"]["status"] == "down"
                       and b["checks"]["cache"]["invalidation"] == "down" for code, b in bodies)

        wait_for(degraded, timeout=10, interval=0.1,
                 message="every worker degraded with invalidation down")

        # /me goes on from L1, then PostgreSQL, for longer than the 1 s an
        # L1 entry may live without invalidations
        def reads():
            started, n, bad = time.monotonic(), 0, []
            while n < 300 or time.monotonic() - started < 1.5:
                r = me(base_url, tok)
                n += 1
                if r.status_code != 200 or r.json() != user:
                    bad.append((n, r.status_code, r.text))
                assert n < 5000
            spent = time.monotonic() - started
            assert not bad, f"{len(bad)} of {n} reads failed with Redis down: {bad[:3]}"
            print(f"Redis down: {n} reads of /me in {spent:.2f} s, all 200")

        # short-lived L1: every worker had to load again, and still hit
        _, after = until_each_worker_rose(base_url, workers, reads,
                                          [("l1", "misses"), ("l1", "hits")])
        for c in after:
            assert c["invalidation"] == "down"

        # a write during the outage is seen by every worker at once
        new, etag = patch_name(base_url, tok, "written while Redis is down")
        assert_reads(base_url, tok, new, etag)

        # and so is a logout
        def logout():
            return fresh("POST", base_url + API + "/logout", headers=bearer(spare))

        r, first, _ = revoked_everywhere(base_url, logout, [spare])
        assert r.status_code == 204, r.text
        still_revoked(base_url, [spare])
        assert stack.app_pids() == pids, "a worker was restarted"
    finally:
        stack.redis_start()

    wait_all_up(base_url)
    # writes queued during the outage have been sent
    wait_for(lambda: all(b["checks"]["cache"]["l2"]["pending_writes"] == 0
                         for _, b in health_bodies(base_url, 10)),
             timeout=10, message="no pending L2 writes")
    # the outage's write is still what every worker serves (L1 was flushed)
    assert_reads(base_url, tok, new, etag, n=40)
    still_revoked(base_url, [spare], n=20)

    new2, etag2 = patch_name(base_url, tok, "written after Redis is back")
    assert etag2 != etag
    assert_reads(base_url, tok, new2, etag2)

    def logout():
        return fresh("POST", base_url + API + "/logout", headers=bearer(tok))

    warm(base_url, stack, [tok])
    r, first, last = revoked_everywhere(base_url, logout, [tok])
    assert r.status_code == 204, r.text
    print(f"logout after Redis is back: first check after {first * 1000:.1f} ms, last "
          f"answer {last * 1000:.1f} ms")
    still_revoked(base_url, [tok])
    assert stack.app_pids() == pids, "a worker was restarted"


# ---------------------------------------------------------------- 4. JWKS


def _kids(body):
    return {k["kid"] for k in body["keys"]}


def test_patch_whose_l2_write_failed_is_never_read_stale(base_url, stack, workers,
                                                         unique_email):
    """A PATCH whose L2 write fails (here: Redis refuses writes for a moment
    with CLIENT PAUSE WRITE, so the write times out and is queued, and the
    old value stays in L2) while reads from Redis still work, as they do for
    the other workers while the writer's pool backs off after a Redis
    restart. Until the queued write is delivered no worker of this machine
    may serve the old value from L2. Several rounds."""
    email, user = new_user(base_url, unique_email, "c-paused")
    tok = login(base_url, email)["access_token"]
    stale, reads, rounds = [], 0, 5
    for round_ in range(rounds):
        warm(base_url, stack, [tok])  # every worker's L1, and L2, hold the current name
        assert stack.redis_cli("CLIENT", "PAUSE", "700", "WRITE") == "OK"
        new, etag = patch_name(base_url, tok, f"written while Redis refuses writes {round_}")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            r = me(base_url, tok)
            reads += 1
            if r.status_code != 200 or r.json() != new or r.headers.get("ETag") != etag:
                stale.append((round_, r.status_code, r.headers.get("ETag")))
        wait_all_up(base_url)
    print(f"{reads} reads after {rounds} PATCHes whose L2 write failed; {len(stale)} stale")
    assert not stale, f"{len(stale)} of {reads} reads were stale, e.g. {stale[:3]}"


def test_jwks_cached_and_reloaded_on_sighup(base_url, stack, workers):
    first = fresh("GET", base_url + JWKS)
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "public, max-age=300"
    # served from each worker's L1 (so the new key below can only show up
    # because the reload flushed it, not because an entry expired)
    def reads():
        for _ in range(40):
            r = fresh("GET", base_url + JWKS)
            assert r.status_code == 200
            assert r.content == first.content, "workers serve different JWK sets"

    until_each_worker_rose(base_url, workers, reads, [("l1", "hits")])
    before = _kids(first.json())

    keyfile = stack.var / "keys" / "jwks.json"
    out = subprocess.run(
        [str(stack.root / "build" / "access.fcgi"), "keygen", "--rotate", str(keyfile)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    new_kids = [k for k in re.findall(r"[A-Za-z0-9_-]{43}", out) if k not in before]
    assert len(new_kids) == 1, out
    new_kid = new_kids[0]

    sup, pids = stack.app_pids()
    assert sup and len(pids) >= 2
    os.kill(sup, signal.SIGHUP)
    hup = time.monotonic()

    # until 1 s has passed, anything; then every answer has the new key
    last_old = None
    while time.monotonic() - hup < 1.0:
        r = fresh("GET", base_url + JWKS)
        assert r.status_code == 200
        if new_kid not in _kids(r.json()):
            last_old = time.monotonic() - hup
    bodies = set()
    for i in range(40):
        r = fresh("GET", base_url + JWKS)
        assert r.status_code == 200
        assert new_kid in _kids(r.json()), \
            f"answer {i}, {time.monotonic() - hup:.2f} s after SIGHUP, lacks the new key"
        bodies.add(r.content)
    assert len(bodies) == 1, "workers serve different JWK sets after the reload"
    print("JWKS: old set last seen " +
          ("never" if last_old is None else f"{last_old * 1000:.0f} ms") + " after SIGHUP")
    # the reload restarted nothing
    assert stack.app_pids() == (sup, pids)


# ---------------------------------------------------------------- 5. the cache is used


def test_l1_answers_most_reads(fault_stack, base_url, workers, unique_email, wait_for):
    """Counters from zero (a restart), then N reads of /me with one token:
    every worker's L1 answers most lookups."""
    stack = fault_stack
    stack.app_restart({"ACCESS_WORKERS": workers})
    stack.wait_workers(workers)
    wait_all_up(base_url)
    email, user = new_user(base_url, unique_email, "c-ratio")
    tok = login(base_url, email)["access_token"]
    zero = worker_caches(base_url, workers)
    for c in zero:
        assert c["l1"]["hits"] == 0 and c["l1"]["misses"] == 0, c

    # batches of 400 serial reads (one cold load per worker) until every
    # worker has answered some (see until_each_worker_rose; here the
    # counters must count from zero)
    n = 0
    for _ in range(6):
        for _ in range(400):
            r = me(base_url, tok)
            assert r.status_code == 200 and r.json() == user
        n += 400
        after = worker_caches(base_url, workers)
        if each_worker_rose(zero, after, "l1", "hits"):
            break
    assert_each_worker_rose(zero, after, "l1", "hits")
    for _, b in health_bodies(base_url, 20):
        c = b["checks"]["cache"]
        assert c["l1"]["hit_ratio"] > 0.5, c
        assert c["hit_ratio"] > 0.5, c
    hits = sum(c["l1"]["hits"] for c in after)
    misses = sum(c["l1"]["misses"] for c in after)
    # (padding of identical workers can only make these sums smaller)
    assert hits >= n - 2 * workers, after
    # Misses do not grow with N: a worker misses while it first loads the
    # token, the session and the profile (up to 5 lookups counted: some keys
    # are looked up twice, a get and then the fetch), never again after.
    assert misses <= 5 * workers, after
    print(f"{n} reads over {workers} workers: L1 hits {hits}, misses {misses}")


# ---------------------------------------------------------------- 6. another host

# The access.fcgi that lighttpd spawns is a second instance with its own
# supervisor and so its own shared invalidation table: to it, a write made
# through nginx comes from "another host", and only the pub/sub channel can
# tell its L1 (SPEC §5: "Logout and revocation take effect in every worker
# within the pub/sub delay"). PUBSUB_S is generous for a delay of about 1 ms.

PUBSUB_S = 1.0


def settle_on(base, token, good, what, timeout=PUBSUB_S, streak=20):
    """Read /me on base until `streak` fresh reads in a row satisfy good(r),
    within timeout seconds of now; returns how long it took."""
    start = time.monotonic()
    last = None
    while True:
        r = me(base, token)
        ok = good(r)
        last = (r.status_code, r.text)
        if ok:
            rest = [me(base, token) for _ in range(streak - 1)]
            bad = [(x.status_code, x.text) for x in rest if not good(x)]
            if not bad:
                return time.monotonic() - start
            last = bad[0]
        assert time.monotonic() - start < timeout, \
            f"{what}: still not seen by the other instance after {timeout} s; last {last}"
        time.sleep(0.02)


def test_other_instance_sees_patch(base_url, lighttpd_url, unique_email):
    email, user = new_user(base_url, unique_email, "c-host-patch")
    tok = login(base_url, email)["access_token"]
    for base in (base_url, lighttpd_url):  # warm both instances' L1
        for _ in range(20):
            r = me(base, tok)
            assert r.status_code == 200 and r.json() == user
    new, etag = patch_name(base_url, tok, "seen on every host")
    took = settle_on(lighttpd_url, tok,
                     lambda r: r.status_code == 200 and r.json() == new
                     and r.headers.get("ETag") == etag,
                     "a PATCH made through nginx")
    print(f"other instance saw the PATCH after {took * 1000:.0f} ms")


def test_other_instance_refuses_logged_out_token(base_url, lighttpd_url, unique_email):
    email, _ = new_user(base_url, unique_email, "c-host-logout")
    tok = login(base_url, email)["access_token"]
    for base in (base_url, lighttpd_url):
        for _ in range(20):
            assert me(base, tok).status_code == 200
    r = fresh("POST", base_url + API + "/logout", headers=bearer(tok))
    assert r.status_code == 204, r.text
    took = settle_on(lighttpd_url, tok,
                     lambda r: r.status_code == 401 and '"invalid_token"' in r.text,
                     "a logout made through nginx")
    print(f"other instance refused the token after {took * 1000:.0f} ms")
