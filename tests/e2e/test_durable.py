"""Durability and housekeeping (SPEC §5, §13): refresh-token reuse recorded
once per session, the janitor's batched deletes, and no audit event lost to
a SIGTERM of the whole service under load."""

import os
import socket
import re
import signal
import subprocess
import threading
import time
import uuid

import requests

API = "/api/v1/access"
PASSWORD = "correct horse battery"


def psql(stack, sql):
    """Run SQL as the service's role over TCP; the rows as text, '|'-separated."""
    out = subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "access", "-d",
         "access", "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def signup_login(base_url, email):
    """A new user and one session: (user, tokens)."""
    r = requests.post(base_url + API + "/signup", json={"email": email, "password": PASSWORD},
                      timeout=15)
    assert r.status_code == 201, r.text
    user = r.json()
    r = requests.post(base_url + API + "/login", json={"email": email, "password": PASSWORD},
                      timeout=15)
    assert r.status_code == 200, r.text
    return user, r.json()


def metric_values(base_url, name):
    """{labels text: value} of one metric family from /metrics."""
    r = requests.get(base_url + "/metrics", timeout=5)
    assert r.status_code == 200
    out = {}
    for line in r.text.splitlines():
        m = re.match(r"^" + re.escape(name) + r"(\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


# ---------------------------------------------------------------- reuse once


def test_refresh_reuse_recorded_once_per_session(stack, base_url, unique_email, wait_for):
    user, tokens = signup_login(base_url, unique_email("reuse-once"))
    first = tokens["refresh_token"]
    r = requests.post(base_url + API + "/refresh", json={"refresh_token": first}, timeout=15)
    assert r.status_code == 200, r.text
    for _ in range(5):
        r = requests.post(base_url + API + "/refresh", json={"refresh_token": first}, timeout=15)
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_token"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    me = requests.get(base_url + API + "/me",
                      headers={"Authorization": "Bearer " + tokens["access_token"]}, timeout=15)
    assert me.status_code == 401, "the session is revoked"

    def counts():
        return psql(stack, "SELECT count(*) FILTER (WHERE type = 'refresh_reuse_detected'), "
                           "count(*) FILTER (WHERE type = 'refresh') FROM audit_events "
                           f"WHERE user_id = '{user['id']}'")

    wait_for(lambda: counts() == "1|1", timeout=10, message="the refresh and reuse events")
    # the writer flushes within a second: a wrong second event would be there by now
    time.sleep(1.5)
    assert counts() == "1|1", "refresh_reuse_detected|refresh events"
    assert psql(stack, "SELECT count(*) FROM sessions WHERE user_id = "
                       f"'{user['id']}' AND reuse_detected_at IS NOT NULL") == "1"


# ---------------------------------------------------------------- janitor (SPEC §13)


def janitor_counts(base_url):
    v = metric_values(base_url, "janitor_deleted_total")
    return {t: v.get('{table="%s"}' % t, 0.0)
            for t in ("sessions", "refresh_tokens", "audit_events")}


def test_janitor_deletes_old_rows_in_batches(fault_stack, base_url, unique_email, wait_for):
    stack = fault_stack
    env = {"ACCESS_JANITOR_INTERVAL": 1,
           "ACCESS_SESSION_RETENTION": 31536000,  # 1 year: nothing the other tests make
           "ACCESS_AUDIT_RETENTION_DAYS": 1000}
    stack.app_restart(env)
    try:
        user, tokens = signup_login(base_url, unique_email("janitor"))
        uid = user["id"]
        tag = uuid.uuid4().hex
        # leftovers of an earlier, interrupted run go first: count from a quiet start
        time.sleep(2.5)
        before = janitor_counts(base_url)
        live_sid = psql(stack, f"SELECT id FROM sessions WHERE user_id = '{uid}'")
        psql(stack, f"""
            INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent)
              SELECT gen_random_uuid(), '{uid}', now() - interval '3 years',
                     now() - interval '3 years', now() - interval '2 years', 'old-expired'
              FROM generate_series(1, 1500);
            INSERT INTO sessions (id, user_id, created_at, expires_at, revoked_at, user_agent)
              SELECT gen_random_uuid(), '{uid}', now() - interval '3 years',
                     now() + interval '10 days', now() - interval '2 years', 'old-revoked'
              FROM generate_series(1, 100);
            INSERT INTO sessions (id, user_id, expires_at, revoked_at, user_agent)
              VALUES (gen_random_uuid(), '{uid}', now() + interval '10 days',
                      now() - interval '1 hour', 'recently-revoked');
            INSERT INTO refresh_tokens (token_hash, session_id, issued_at)
              SELECT sha256(('{tag}-' || s.id)::bytea), s.id, now() - interval '3 years'
              FROM sessions s WHERE s.user_id = '{uid}'
              AND s.user_agent IN ('old-expired', 'old-revoked', 'recently-revoked');
            INSERT INTO refresh_tokens (token_hash, session_id, issued_at, used_at)
              SELECT sha256(('{tag}-u-' || s.id)::bytea), s.id, now() - interval '3 years',
                     now() - interval '3 years'
              FROM sessions s WHERE s.user_id = '{uid}' AND s.user_agent = 'old-revoked';
            INSERT INTO refresh_tokens (token_hash, session_id, issued_at, used_at)
              SELECT sha256(('{tag}-live-old-' || g)::bytea), '{live_sid}',
                     now() - interval '100 days', now() - interval '99 days'
              FROM generate_series(1, 3) g;
            INSERT INTO refresh_tokens (token_hash, session_id, issued_at, used_at) VALUES
              (sha256('{tag}-live-recent-used'::bytea), '{live_sid}', now() - interval '1 day',
               now() - interval '1 day');
            INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES
              (sha256('{tag}-live-old-unused'::bytea), '{live_sid}', now() - interval '100 days');
            INSERT INTO audit_events (id, user_id, type, created_at, detail)
              SELECT gen_random_uuid(), '{uid}', 'login_failed', now() - interval '5 years',
                     jsonb_build_object('j', '{tag}', 'old', true)
              FROM generate_series(1, 2500);
            INSERT INTO audit_events (id, user_id, type, created_at, detail)
              VALUES (gen_random_uuid(), '{uid}', 'login_failed', now() - interval '500 days',
                      jsonb_build_object('j', '{tag}', 'old', false));
        """)
        expected = {"sessions": 1600, "refresh_tokens": 1500 + 200 + 3, "audit_events": 2500}

        def left():
            return psql(stack, f"""
                SELECT (SELECT count(*) FROM sessions WHERE user_id = '{uid}'
                        AND user_agent IN ('old-expired', 'old-revoked')),
                       (SELECT count(*) FROM audit_events WHERE detail->>'j' = '{tag}'
                        AND detail->>'old' = 'true'),
                       (SELECT count(*) FROM refresh_tokens WHERE session_id = '{live_sid}'
                        AND used_at < now() - interval '30 days')""")

        wait_for(lambda: left() == "0|0|0", timeout=30, interval=0.5,
                 message="the old rows deleted")
        # what must stay: the live session and its live/recent tokens, the
        # recently revoked session, the audit event inside the retention
        assert psql(stack, f"SELECT count(*) FROM sessions WHERE user_id = '{uid}' AND "
                           "(revoked_at IS NULL OR user_agent = 'recently-revoked')") == "2"
        assert psql(stack, "SELECT count(*) FROM refresh_tokens rt JOIN sessions s ON "
                           f"s.id = rt.session_id WHERE s.user_id = '{uid}'") == "4"
        assert psql(stack, f"SELECT count(*) FROM audit_events WHERE detail->>'j' = '{tag}'") \
            == "1"
        r = requests.post(base_url + API + "/refresh",
                          json={"refresh_token": tokens["refresh_token"]}, timeout=15)
        assert r.status_code == 200, "the live session still refreshes"

        def counted():
            now = janitor_counts(base_url)
            got = {t: now[t] - before[t] for t in now}
            return got if got == expected else None

        wait_for(counted, timeout=5, message=f"janitor_deleted_total += {expected}")
    finally:
        stack.app_restart()


# ---------------------------------------------------------------- SIGTERM under load (SPEC §5)


def jwt_sid(token):
    import base64
    import json
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]


WAIT_KEY = 424242  # an advisory lock key the service never uses (pg_locks.objid)


class Client(threading.Thread):
    """Logs in, refreshes twice, logs out, again and again, as one user;
    counts what the service answered (2xx) and what it may or may not have
    done (no answer, or a 5xx from nginx while the service went away)."""

    def __init__(self, base_url, email, user_id, stop):
        super().__init__(daemon=True)
        self.base_url, self.email, self.user_id, self.stop = base_url, email, user_id, stop
        self.answered = {"login_succeeded": 0, "refresh": 0, "logout": 0}
        self.unsure = {"login_succeeded": 0, "refresh": 0, "logout": 0}

    def call(self, kind, path, ok, **kw):
        try:
            r = requests.post(self.base_url + API + path, timeout=20, **kw)
        except requests.RequestException:
            self.unsure[kind] += 1
            return None
        if r.status_code == ok:
            self.answered[kind] += 1
            return r
        if r.status_code >= 500:
            self.unsure[kind] += 1
        return None

    def run(self):
        while not self.stop.is_set():
            r = self.call("login_succeeded", "/login", 200,
                          json={"email": self.email, "password": PASSWORD})
            if r is None:
                continue
            tokens = r.json()
            for _ in range(2):
                r = self.call("refresh", "/refresh", 200,
                              json={"refresh_token": tokens["refresh_token"]})
                if r is None:
                    break
                tokens = r.json()
            self.call("logout", "/logout", 204,
                      headers={"Authorization": "Bearer " + tokens["access_token"]})


def test_sigterm_under_load_loses_no_audit_event(fault_stack, base_url, unique_email, wait_for):
    """Logins, refreshes and logouts run while PostgreSQL makes the audit
    writer wait (a SHARE lock on audit_events) and one request thread is
    stuck past the drain (a FastCGI body that never ends). SIGTERM to the
    supervisor: every event a client got an answer for is stored exactly
    once after the next start (replayed from the spool)."""
    import test_faults as tf

    stack = fault_stack
    users = []
    for i in range(3):
        email = unique_email(f"term{i}")
        user, _ = signup_login(base_url, email)
        users.append((email, user["id"]))
    stop = threading.Event()
    clients = [Client(base_url, e, uid, stop) for e, uid in users]
    # Inserts into audit_events wait for an advisory lock the test holds (a
    # statement trigger: a table lock would stall the statements every new
    # connection prepares, not only the writer's insert).
    psql(stack, f"""
        CREATE FUNCTION durable_test_wait() RETURNS trigger LANGUAGE plpgsql AS
          'BEGIN PERFORM pg_advisory_xact_lock_shared({WAIT_KEY}); RETURN NULL; END';
        CREATE TRIGGER durable_test_wait BEFORE INSERT ON audit_events
          FOR EACH STATEMENT EXECUTE FUNCTION durable_test_wait();""")
    env = dict(os.environ, PGAPPNAME="durable-audit-lock")
    locker = subprocess.Popen(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "access", "-d",
         "access", "-v", "ON_ERROR_STOP=1", "-c",
         f"SELECT pg_advisory_lock({WAIT_KEY}); SELECT pg_sleep(60);"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stuck = None
    since = stack.log_offset()
    sup = stack.supervisor_pid()
    assert sup
    try:
        wait_for(lambda: psql(stack, "SELECT count(*) FROM pg_locks WHERE locktype = "
                                     f"'advisory' AND objid = {WAIT_KEY} AND granted") == "1",
                 timeout=10, message="the test's advisory lock")
        for c in clients:
            c.start()
        # events pile up in the workers' queues while their inserts wait
        wait_for(lambda: sum(c.answered["refresh"] for c in clients) >= 30, timeout=30,
                 message="30 answered refreshes")
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.settimeout(10)
        sock_path = str(stack.var / "run" / "access.sock")
        stuck.connect(sock_path)
        stuck.sendall(tf.fcgi_begin(tf.fcgi_params(API + "/login", method="POST",
                                                   content_length=100,
                                                   content_type="application/json")))
        stuck.sendall(tf.fcgi_record(tf.FCGI_STDIN, b'{"email":'))
        time.sleep(0.3)  # a worker thread takes it and waits for the rest of the body
        os.kill(sup, signal.SIGTERM)
        term_at = time.monotonic()
        time.sleep(0.3)
        stop.set()
        for c in clients:
            c.join(30)
        stack.wait_gone(sup, timeout=15)
        took = time.monotonic() - term_at
    finally:
        stop.set()
        psql(stack, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'durable-audit-lock'")
        locker.wait(10)
        psql(stack, "DROP TRIGGER durable_test_wait ON audit_events; "
                    "DROP FUNCTION durable_test_wait()")
        if stuck is not None:
            stuck.close()
    logged = [r.get("msg", "") for r in stack.log_records(since)]
    assert not [m for m in logged if "killed after the drain deadline" in m], logged[-20:]
    assert any("still running after the drain" in m for m in logged), \
        "the stuck request kept a worker past the drain"
    assert took < 12, f"the service took {took:.1f} s to stop"
    stack.app_start()

    answered = sum(sum(c.answered.values()) for c in clients)
    assert answered >= 30

    def stored():
        ids = ",".join(f"'{uid}'" for _, uid in users)
        rows = psql(stack, "SELECT user_id, type, count(*), count(DISTINCT id) FROM audit_events "
                           f"WHERE user_id IN ({ids}) AND type IN ('login_succeeded', "
                           "'refresh', 'logout') GROUP BY 1, 2")
        got = {}
        for line in rows.splitlines():
            uid, kind, n, distinct = line.split("|")
            assert n == distinct
            got[(uid, kind)] = int(n)
        return got

    def complete():
        got = stored()
        for c in clients:
            for kind, n in c.answered.items():
                extra = 1 if kind == "login_succeeded" else 0  # the signup's own login
                if got.get((c.user_id, kind), 0) < n + extra:
                    return None
        return got

    got = wait_for(complete, timeout=20, interval=0.5,
                   message="every answered event in audit_events")
    for c in clients:
        for kind, n in c.answered.items():
            extra = 1 if kind == "login_succeeded" else 0
            have = got.get((c.user_id, kind), 0)
            assert n + extra <= have <= n + extra + c.unsure[kind], \
                (c.email, kind, n, c.unsure[kind], have)
