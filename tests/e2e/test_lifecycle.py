"""The account's life cycle (SPEC §9) end to end, through nginx, with the
real SMTP sink of the local stack (tools/smtp_sink.py, messages under
var/mail/) and a real HTTP receiver started here: verification and recovery
from the message's link, single use under concurrency, expiry, identical
answers for unknown emails, deletion and re-signup, the outbox's atomicity
(PostgreSQL stopped, a change that rolled back), webhook signatures checked
with Python's hmac, retries with back-off."""

import base64
import concurrent.futures
import email
import email.policy
import hashlib
import hmac
import http.server
import json
import re
import subprocess
import threading
import time

import pytest
import requests

from conftest import VAR, wait_for

API = "/api/v1/access"
MAIL = VAR / "mail"
SECRET_BYTES = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()


# ---------------------------------------------------------------- helpers


def psql(stack, sql):
    out = subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "access", "-d",
         "access", "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        check=True, capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def messages_to(addr):
    """Messages in the sink for addr, oldest first, as email.message objects."""
    found = []
    if not MAIL.exists():
        return found
    needle = addr.encode()
    for p in sorted(MAIL.glob("*.eml")):
        raw = p.read_bytes()
        # parsing is slow (the sink holds every message of the run, and of
        # benches before it): only the messages that name addr at all
        if needle not in raw:
            continue
        m = email.message_from_bytes(raw, policy=email.policy.default)
        if m["To"] == addr:
            found.append(m)
    return found


def wait_message(addr, count=1, timeout=10):
    def enough():
        found = messages_to(addr)
        return found if len(found) >= count else None
    return wait_for(enough, timeout, message=f"{count} message(s) to {addr}")


def has_link(msg, kind):
    body = msg.get_body(preferencelist=("plain",)).get_content()
    return re.search(r"/" + kind + r"\?token=", body) is not None


def wait_link(addr, kind, count=1, timeout=10):
    """The first `count` (or more) messages to addr that carry a /kind link,
    in arrival order. The outbox delivers a verification and a reset
    message of one account independently: which arrives first is open."""
    def enough():
        found = [m for m in messages_to(addr) if has_link(m, kind)]
        return found if len(found) >= count else None
    return wait_for(enough, timeout, message=f"{count} {kind} message(s) to {addr}")


def link_token(msg, kind):
    body = msg.get_body(preferencelist=("plain",)).get_content()
    m = re.search(r"/" + kind + r"\?token=([A-Za-z0-9_-]{43})\b", body)
    assert m, body
    return m.group(1)


def post(http, base_url, path, body=None, token=None, method="POST"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.request(method, base_url + API + path, json=body, headers=headers)


def signup(http, base_url, addr, password="password123"):
    r = post(http, base_url, "/signup", {"email": addr, "password": password})
    assert r.status_code == 201, r.text
    return r.json()


def login(http, base_url, addr, password="password123"):
    return post(http, base_url, "/login", {"email": addr, "password": password})


class Receiver:
    """A real HTTP server on a free loopback port recording POSTs; the first
    `fail` requests get 503."""

    def __init__(self, fail=0):
        self.requests = []
        self.fail = fail
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.requests.append((time.monotonic(), dict(self.headers), body))
                    failing = outer.fail > 0
                    if failing:
                        outer.fail -= 1
                self.send_response(503 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path_type=None):
        with self.lock:
            out = [(t, h, json.loads(b)) for t, h, b in self.requests]
        return [x for x in out if path_type is None or x[2].get("type") == path_type]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def check_signature(headers, raw):
    """Standard Webhooks, checked independently with Python's hmac."""
    msg_id = headers["webhook-id"]
    ts = headers["webhook-timestamp"]
    assert abs(int(ts) - time.time()) < 300
    want = base64.b64encode(
        hmac.new(SECRET_BYTES, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest()).decode()
    sigs = [s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")]
    assert any(hmac.compare_digest(s, want) for s in sigs), (headers, want)


# ---------------------------------------------------------------- smtp flows


def test_signup_verification_flow_from_the_message(http, base_url, unique_email):
    addr = unique_email("verify")
    user = signup(http, base_url, addr)
    assert user["email_verified"] is False and user["mfa_enabled"] is False
    msg = wait_message(addr)[0]
    assert msg["Subject"] == "Confirm your email address"
    assert msg["Message-ID"] and msg["Date"] and msg["From"] == "access@localhost"
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    tok = link_token(msg, "verify")
    # The token itself is never stored, only its hash.
    stack_tok = tok
    assert len(stack_tok) == 43
    t = login(http, base_url, addr).json()["access_token"]
    me = post(http, base_url, "/me", token=t, method="GET")
    assert me.json()["email_verified"] is False
    r = post(http, base_url, "/verify", {"token": tok})
    assert r.status_code == 200, r.text
    assert r.json()["email_verified"] is True and r.json()["id"] == user["id"]
    # Every cached copy shows it at once.
    me = post(http, base_url, "/me", token=t, method="GET")
    assert me.json()["email_verified"] is True
    # Single use.
    r = post(http, base_url, "/verify", {"token": tok})
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
    # verify/request once verified queues nothing.
    r = post(http, base_url, "/verify/request", token=t)
    assert r.status_code == 202 and r.content == b""
    time.sleep(1.0)
    assert len(messages_to(addr)) == 1
    audit = post(http, base_url, "/audit", token=t, method="GET").json()["items"]
    assert "email_verified" in [e["type"] for e in audit]


def test_tokens_are_stored_hashed(http, base_url, stack, unique_email):
    addr = unique_email("hashed")
    user = signup(http, base_url, addr)
    tok = link_token(wait_message(addr)[0], "verify")
    digest = hashlib.blake2b(tok.encode(), digest_size=32).hexdigest()
    rows = psql(stack, f"SELECT encode(token_hash, 'hex') FROM account_tokens "
                       f"WHERE user_id = '{user['id']}'")
    assert rows == digest
    assert tok not in psql(stack, "SELECT string_agg(encode(token_hash, 'escape'), ',') "
                                  "FROM account_tokens")


def test_verify_request_sends_a_new_link(http, base_url, unique_email):
    addr = unique_email("again")
    signup(http, base_url, addr)
    wait_message(addr)
    t = login(http, base_url, addr).json()["access_token"]
    r = post(http, base_url, "/verify/request", token=t)
    assert r.status_code == 202 and r.content == b""
    assert "Content-Type" not in r.headers
    second = wait_link(addr, "verify", 2)[1]
    assert post(http, base_url, "/verify", {"token": link_token(second, "verify")}).status_code == 200


def test_recovery_flow_revokes_every_session(http, base_url, unique_email):
    addr = unique_email("recover")
    signup(http, base_url, addr, "oldpassword1")
    s1 = login(http, base_url, addr, "oldpassword1").json()
    s2 = login(http, base_url, addr, "oldpassword1").json()
    assert post(http, base_url, "/me", token=s1["access_token"], method="GET").status_code == 200
    r = post(http, base_url, "/recover", {"email": addr.upper()})
    assert r.status_code == 202 and r.content == b""
    msgs = wait_message(addr, 2)
    reset = [m for m in msgs if m["Subject"] == "Reset your password"]
    assert len(reset) == 1
    tok = link_token(reset[0], "reset")
    r = post(http, base_url, "/recover/confirm", {"token": tok, "new_password": "newpassword1"})
    assert r.status_code == 204, r.text
    # Every session is gone, on every worker (several tries reach both).
    for s in (s1, s2):
        for _ in range(6):
            me = post(http, base_url, "/me", token=s["access_token"], method="GET")
            assert me.status_code == 401, me.text
        rr = post(http, base_url, "/refresh", {"refresh_token": s["refresh_token"]})
        assert rr.status_code == 401
    assert login(http, base_url, addr, "oldpassword1").status_code == 401
    t = login(http, base_url, addr, "newpassword1")
    assert t.status_code == 200
    # The link proved the address.
    me = post(http, base_url, "/me", token=t.json()["access_token"], method="GET").json()
    assert me["email_verified"] is True
    # Used once only.
    r = post(http, base_url, "/recover/confirm", {"token": tok, "new_password": "another-pass1"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
    types = [e["type"] for e in post(http, base_url, "/audit", token=t.json()["access_token"],
                                     method="GET").json()["items"]]
    assert "password_reset" in types and "password_reset_requested" in types


def test_newer_reset_makes_older_unusable(http, base_url, unique_email):
    addr = unique_email("newer")
    signup(http, base_url, addr)
    assert post(http, base_url, "/recover", {"email": addr}).status_code == 202
    first = link_token(wait_link(addr, "reset")[0], "reset")
    assert post(http, base_url, "/recover", {"email": addr}).status_code == 202
    second = link_token(wait_link(addr, "reset", 2)[1], "reset")
    r = post(http, base_url, "/recover/confirm", {"token": first, "new_password": "password456"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
    r = post(http, base_url, "/recover/confirm", {"token": second, "new_password": "password456"})
    assert r.status_code == 204


def test_at_most_three_reset_messages_an_hour(http, base_url, unique_email):
    addr = unique_email("three")
    signup(http, base_url, addr)
    wait_message(addr)
    for _ in range(5):
        assert post(http, base_url, "/recover", {"email": addr}).status_code == 202
    wait_message(addr, 4)
    time.sleep(1.5)
    resets = [m for m in messages_to(addr) if m["Subject"] == "Reset your password"]
    assert len(resets) == 3


def test_concurrent_recovers_send_at_most_three(http, base_url, stack, unique_email):
    """Parallel recover requests for one account cannot slip past the limit of
    3 reset messages an hour (8 accounts, 10 requests each at once): exactly
    3 reset messages go out, and only one of their links still works."""
    for i in range(8):
        addr = unique_email(f"burst{i}")
        uid = signup(http, base_url, addr)["id"]
        barrier = threading.Barrier(10)

        def recover(_):
            barrier.wait()
            return requests.post(base_url + API + "/recover", json={"email": addr},
                                 timeout=15).status_code

        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            codes = list(ex.map(recover, range(10)))
        assert codes == [202] * 10, codes
        assert psql(stack, f"SELECT count(*) FROM outbox WHERE user_id = '{uid}' "
                           "AND type = 'message.reset'") == "3", f"round {i}"
        wait_message(addr, 4)
        time.sleep(0.2)
        resets = [m for m in messages_to(addr) if m["Subject"] == "Reset your password"]
        assert len(resets) == 3, f"round {i}"
        used = [post(http, base_url, "/recover/confirm",
                     {"token": link_token(m, "reset"), "new_password": f"burst-pass-{i}"}).status_code
                for m in resets]
        assert sorted(used) == [204, 400, 400], (i, used)


def test_concurrent_double_use_one_wins(http, base_url, unique_email):
    """Of parallel uses of one reset token exactly one succeeds (20 rounds)."""
    for i in range(20):
        addr = unique_email(f"race{i}")
        signup(http, base_url, addr)
        assert post(http, base_url, "/recover", {"email": addr}).status_code == 202
        tok = link_token(wait_link(addr, "reset")[0], "reset")
        vtok = link_token(wait_link(addr, "verify")[0], "verify")

        def use(k):
            if k % 2:
                return post(http, base_url, "/verify", {"token": vtok}).status_code
            return post(http, base_url, "/recover/confirm",
                        {"token": tok, "new_password": f"parallel-pass-{k}"}).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            codes = list(ex.map(use, range(8)))
        resets, verifies = codes[0::2], codes[1::2]
        assert sorted(resets) == [204, 400, 400, 400], codes
        assert sorted(verifies) == [200, 400, 400, 400], codes


def test_unknown_email_gets_the_identical_answer(http, base_url, stack, unique_email):
    known = unique_email("known")
    signup(http, base_url, known)
    answers = []
    for addr in (known, unique_email("nobody"), known, unique_email("nobody")):
        r = post(http, base_url, "/recover", {"email": addr})
        answers.append((r.status_code, r.content, sorted(h.lower() for h in r.headers)))
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][0] == 202 and answers[0][1] == b""
    # No hash on either path: the request log has no hash_ms for recover.
    since = stack.log_offset()
    post(http, base_url, "/recover", {"email": unique_email("nobody")})
    post(http, base_url, "/recover", {"email": known})
    recs = wait_for(lambda: len([x for x in stack.log_records(since)
                                 if x.get("route") == API + "/recover"]) >= 2
                    and [x for x in stack.log_records(since) if x.get("route") == API + "/recover"])
    for rec in recs:
        assert rec.get("status") == 202 and "hash_ms" not in rec, rec


def test_token_input_rules(http, base_url):
    for body in ({"token": "x"}, {"token": "A" * 44}, {"token": "A" * 43}):
        r = post(http, base_url, "/verify", body)
        assert r.status_code == 400 and r.json()["code"] == "invalid_grant", r.text
    r = post(http, base_url, "/verify", {})
    assert r.status_code == 422
    r = post(http, base_url, "/recover/confirm", {"token": "A" * 43, "new_password": "short"})
    assert r.status_code == 422 and r.json()["field"] == "new_password"
    r = post(http, base_url, "/recover", {"email": "not-an-address"})
    assert r.status_code == 422


def test_deletion_and_resignup(http, base_url, stack, unique_email):
    addr = unique_email("delete")
    user = signup(http, base_url, addr)
    assert login(http, base_url, addr, "wrong-password").status_code == 401  # names the email
    s1 = login(http, base_url, addr).json()
    s2 = login(http, base_url, addr).json()
    r = post(http, base_url, "/me", {"password": "wrong-password"}, token=s1["access_token"],
             method="DELETE")
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
    # (audit events are written in batches: the one naming the email first)
    wait_for(lambda: psql(stack, "SELECT count(*) FROM audit_events WHERE user_id = "
                                 f"'{user['id']}' AND type = 'login_failed'") == "1", 10)
    r = post(http, base_url, "/me", {"password": "password123"}, token=s1["access_token"],
             method="DELETE")
    assert r.status_code == 204, r.text
    for s in (s1, s2):
        for _ in range(6):
            assert post(http, base_url, "/me", token=s["access_token"],
                        method="GET").status_code == 401
        assert post(http, base_url, "/refresh",
                    {"refresh_token": s["refresh_token"]}).status_code == 401
    assert login(http, base_url, addr).status_code == 401
    # Nothing of the account is left but its audit events (no email there).
    uid = user["id"]
    assert psql(stack, f"SELECT count(*) FROM users WHERE id = '{uid}'") == "0"
    assert psql(stack, f"SELECT count(*) FROM sessions WHERE user_id = '{uid}'") == "0"
    assert psql(stack, f"SELECT count(*) FROM account_tokens WHERE user_id = '{uid}'") == "0"
    assert psql(stack, f"SELECT count(*) FROM outbox WHERE user_id = '{uid}' "
                       "AND kind = 'message'") == "0"
    wait_for(lambda: psql(stack, f"SELECT count(*) FROM audit_events WHERE user_id = '{uid}' "
                                 "AND type = 'account_deleted'") == "1", 10)
    assert psql(stack, f"SELECT count(*) FROM audit_events WHERE user_id = '{uid}' "
                       "AND type = 'login_failed'") == "1"
    assert psql(stack, f"SELECT count(*) FROM audit_events WHERE user_id = '{uid}' "
                       f"AND detail::text LIKE '%{addr}%'") == "0"
    # The email is free again.
    again = signup(http, base_url, addr)
    assert again["id"] != uid


def test_rolled_back_change_sends_nothing(http, base_url, stack, unique_email):
    """A signup that fails (email taken) rolls back its outbox rows too."""
    addr = unique_email("rollback")
    signup(http, base_url, addr)
    wait_message(addr)
    before = psql(stack, "SELECT count(*) FROM outbox")
    r = post(http, base_url, "/signup", {"email": addr.upper(), "password": "password123"})
    assert r.status_code == 409
    time.sleep(1.5)
    assert psql(stack, "SELECT count(*) FROM outbox") == before
    assert len(messages_to(addr)) == 1 and not messages_to(addr.upper())


def test_postgres_stopped_nothing_committed_nothing_sent(http, base_url, fault_stack,
                                                         unique_email):
    addr = unique_email("pgdown")
    fault_stack.pg_stop()
    try:
        r = post(http, base_url, "/signup", {"email": addr, "password": "password123"})
        assert r.status_code == 503
        r = post(http, base_url, "/recover", {"email": addr})
        assert r.status_code == 503
    finally:
        fault_stack.pg_start()
    time.sleep(2.0)
    assert messages_to(addr) == []
    assert psql(fault_stack, f"SELECT count(*) FROM users WHERE email = '{addr}'") == "0"
    # And the outbox goes on once PostgreSQL is back.
    fault_stack.wait_healthy()
    signup(http, base_url, addr)
    wait_message(addr, timeout=15)


# ---------------------------------------------------------------- expiry


@pytest.fixture
def short_ttls(stack):
    stack.app_restart({"ACCESS_VERIFY_TOKEN_TTL": 60, "ACCESS_RESET_TOKEN_TTL": 60})
    yield stack
    stack.app_restart()


def test_expired_tokens_are_refused(http, base_url, short_ttls, unique_email):
    addr = unique_email("expire")
    user = signup(http, base_url, addr)
    assert post(http, base_url, "/recover", {"email": addr}).status_code == 202
    verify, reset = wait_link(addr, "verify")[0], wait_link(addr, "reset")[0]
    assert "expires in 1 minutes" in verify.get_body().get_content()
    vtok = link_token(verify, "verify")
    rtok = link_token(reset, "reset")
    # 60 s is the shortest TTL the config allows; age the rows instead of
    # waiting for it.
    psql(short_ttls, "UPDATE account_tokens SET expires_at = now() - interval '1 second' "
                     f"WHERE user_id = '{user['id']}'")
    r = post(http, base_url, "/verify", {"token": vtok})
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
    r = post(http, base_url, "/recover/confirm", {"token": rtok, "new_password": "password789"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_grant"


# ---------------------------------------------------------------- webhook transport


@pytest.fixture
def webhook(stack):
    rec = Receiver()
    stack.app_restart({"ACCESS_MAIL_TRANSPORT": "webhook", "ACCESS_WEBHOOK_URL": rec.url + "/mail",
                       "ACCESS_EVENTS_URL": rec.url + "/events",
                       "ACCESS_WEBHOOK_SECRET": SECRET})
    yield rec
    stack.app_restart()
    rec.close()


def test_webhook_messages_and_events_signed(http, base_url, webhook, unique_email):
    addr = unique_email("hook")
    user = signup(http, base_url, addr)
    wait_for(lambda: webhook.bodies("message.verify") and webhook.bodies("user.created"), 10)
    with webhook.lock:
        raw = list(webhook.requests)
    for _, headers, body in raw:
        check_signature(headers, body)
        assert b" " not in body.replace(b"Confirm your", b"")  # compact JSON
    _, h, m = [x for x in webhook.bodies("message.verify") if x[2]["to"] == addr][0]
    assert set(m) == {"type", "to", "link", "expires_at"}
    assert re.fullmatch(r".*/verify\?token=[A-Za-z0-9_-]{43}", m["link"])
    _, h, e = [x for x in webhook.bodies("user.created") if x[2]["data"]["user_id"] == user["id"]][0]
    assert e["id"] == h["webhook-id"] and e["occurred_at"].endswith("Z")
    tok = m["link"].rsplit("=", 1)[1]
    assert post(http, base_url, "/verify", {"token": tok}).status_code == 200
    wait_for(lambda: [x for x in webhook.bodies("user.email_verified")
                      if x[2]["data"]["user_id"] == user["id"]], 10)
    # A forged signature would not pass the independent check.
    with pytest.raises(AssertionError):
        check_signature(dict(h, **{"webhook-signature": "v1,AAAA"}), b"{}")


def test_webhook_deletion_event(http, base_url, webhook, unique_email):
    addr = unique_email("hookdel")
    user = signup(http, base_url, addr)
    t = login(http, base_url, addr).json()["access_token"]
    assert post(http, base_url, "/me", {"password": "password123"}, token=t,
                method="DELETE").status_code == 204
    ev = wait_for(lambda: [x for x in webhook.bodies("user.deleted")
                           if x[2]["data"]["user_id"] == user["id"]], 10)
    assert addr not in json.dumps(ev[0][2])


def test_webhook_password_and_session_events(http, base_url, webhook, unique_email):
    addr = unique_email("hookpw")
    user = signup(http, base_url, addr)
    s1 = login(http, base_url, addr).json()
    s2 = login(http, base_url, addr).json()
    r = post(http, base_url, "/password", {"current_password": "password123",
                                           "new_password": "password456"},
             token=s1["access_token"])
    assert r.status_code == 204
    r = post(http, base_url, "/logout", token=s1["access_token"])
    assert r.status_code == 204
    # A second logout of the same session writes no second event.
    post(http, base_url, "/logout", token=s1["access_token"])
    mine = lambda t: [x for x in webhook.bodies(t) if x[2]["data"]["user_id"] == user["id"]]
    wait_for(lambda: mine("user.password_changed") and mine("session.revoked"), 10)
    time.sleep(1.0)
    revoked = mine("session.revoked")
    assert len(revoked) == 1, revoked
    sid = revoked[0][2]["data"]["session_id"]
    assert sid != "" and sid != s2.get("session_id")
    assert len(mine("user.password_changed")) == 1
    for _, h, _ in mine("session.revoked") + mine("user.password_changed"):
        assert h["webhook-id"]


def test_failing_receiver_is_retried_with_backoff(http, base_url, stack, unique_email):
    rec = Receiver(fail=3)
    stack.app_restart({"ACCESS_MAIL_TRANSPORT": "webhook", "ACCESS_WEBHOOK_URL": rec.url + "/mail",
                       "ACCESS_WEBHOOK_SECRET": SECRET})
    try:
        addr = unique_email("retry")
        user = signup(http, base_url, addr)
        got = wait_for(lambda: len([x for x in rec.bodies() if x[2].get("to") == addr]) >= 4
                       and [x for x in rec.bodies() if x[2].get("to") == addr], 30)
        times = [t for t, _, _ in got]
        ids = {h["webhook-id"] for _, h, _ in got}
        assert len(ids) == 1  # the same message, retried
        gaps = [b - a for a, b in zip(times, times[1:])]
        # 1 s doubling with equal jitter: >= 0.5, 1, 2 s (the poll adds <= 1 s).
        assert gaps[0] >= 0.4 and gaps[1] >= 0.9 and gaps[2] >= 1.9, gaps
        state = lambda: psql(stack, "SELECT state, attempts FROM outbox WHERE user_id = "
                                    f"'{user['id']}' AND kind = 'message'")
        assert wait_for(lambda: state() == "delivered|4", 10)
        assert psql(stack, "SELECT payload ? 'link' FROM outbox WHERE user_id = "
                           f"'{user['id']}' AND kind = 'message'") == "f"
    finally:
        stack.app_restart()
        rec.close()


def test_dead_after_max_attempts(http, base_url, stack, unique_email):
    rec = Receiver(fail=1000)
    stack.app_restart({"ACCESS_MAIL_TRANSPORT": "webhook", "ACCESS_WEBHOOK_URL": rec.url + "/mail",
                       "ACCESS_WEBHOOK_SECRET": SECRET, "ACCESS_OUTBOX_MAX_ATTEMPTS": 2})
    try:
        addr = unique_email("dead")
        user = signup(http, base_url, addr)
        q = ("SELECT state, attempts FROM outbox WHERE user_id = "
             f"'{user['id']}' AND kind = 'message'")
        wait_for(lambda: psql(stack, q) == "dead|2", 15)
        metrics = http.get(base_url + "/metrics").text
        dead = [l for l in metrics.splitlines() if l.startswith("outbox_dead_total ")]
        assert dead and int(dead[0].split()[1]) >= 1
        assert 'outbox_delivered_total{transport="webhook",result="failure"}' in metrics
    finally:
        stack.app_restart()
        rec.close()


def test_held_when_transport_none(http, base_url, stack, unique_email):
    stack.app_restart({"ACCESS_MAIL_TRANSPORT": "none"})
    try:
        addr = unique_email("held")
        user = signup(http, base_url, addr)
        time.sleep(1.5)
        assert messages_to(addr) == []
        assert psql(stack, f"SELECT state FROM outbox WHERE user_id = '{user['id']}'") == "held"
        # The delivery threads count pending rows every 5 s.
        wait_for(lambda: re.search(r'^outbox_pending\{kind="message"\} [1-9]',
                                   http.get(base_url + "/metrics").text, re.M), 12)
    finally:
        stack.app_restart()


# ---------------------------------------------------------------- housekeeping (SPEC §13)


def test_janitor_deletes_old_outbox_rows_and_expired_tokens(http, base_url, stack, unique_email):
    addr = unique_email("janitor")
    user = signup(http, base_url, addr)
    wait_message(addr)
    uid = user["id"]
    q_outbox = f"SELECT count(*) FROM outbox WHERE user_id = '{uid}'"
    q_tokens = f"SELECT count(*) FROM account_tokens WHERE user_id = '{uid}'"
    wait_for(lambda: psql(stack, q_outbox + " AND state = 'delivered'") == "1", 10)
    assert psql(stack, q_tokens) == "1"
    psql(stack, f"UPDATE outbox SET done_at = now() - interval '8 days' WHERE user_id = '{uid}'")
    psql(stack, "UPDATE account_tokens SET expires_at = now() - interval '1 minute' "
                f"WHERE user_id = '{uid}'")
    stack.app_restart({"ACCESS_JANITOR_INTERVAL": 1})
    try:
        wait_for(lambda: psql(stack, q_outbox) == "0" and psql(stack, q_tokens) == "0", 15)
        metrics = http.get(base_url + "/metrics").text
        for table in ("outbox", "account_tokens"):
            m = re.search(r'^janitor_deleted_total\{table="%s"\} (\d+)' % table, metrics, re.M)
            assert m and int(m.group(1)) >= 1, table
    finally:
        stack.app_restart()
