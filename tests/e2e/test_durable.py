"""Durability and housekeeping (SPEC §5, §13): refresh-token reuse recorded
once per session, the janitor's batched deletes, and no audit event lost to
a SIGTERM of the whole service under load."""

import os
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
