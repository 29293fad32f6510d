"""The service behind lighttpd (SPEC §1): lighttpd spawns access.fcgi itself
(bin-path) and talks FastCGI to it without keep-alive. One smoke test."""

import time
import uuid

import requests

API = "/api/v1/access"


def test_lighttpd_smoke(stack):
    try:
        stack.lighttpd_start()
        url = stack.lighttpd_url
        assert url.endswith(f":{stack.lighttpd_port}")

        r = requests.get(url + "/health", timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].split(";")[0] == "application/json"
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers.get("X-Request-ID")
        body = r.json()
        assert body["status"] == "ok"
        assert body["checks"]["database"]["status"] == "up"

        email = f"lighttpd-{uuid.uuid4().hex[:16]}@example.test"
        for _ in range(10):
            r = requests.post(url + API + "/signup",
                              json={"email": email, "password": "correct horse battery"},
                              headers={"X-Request-ID": "via-lighttpd"}, timeout=15)
            if r.status_code != 503:
                break
            time.sleep(0.3)
        assert r.status_code == 201, r.text
        assert r.json()["email"] == email
        assert r.headers["X-Request-ID"] == "via-lighttpd"
        assert int(r.headers["Content-Length"]) == len(r.content)

        # the same database as nginx's instance: the address is now taken there
        r = requests.post(stack.base_url + API + "/signup",
                          json={"email": email, "password": "correct horse battery"},
                          timeout=15)
        assert r.status_code == 409, r.text

        r = requests.get(url + "/api/v1/access/nope", timeout=10)
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"
    finally:
        stack.lighttpd_stop()
