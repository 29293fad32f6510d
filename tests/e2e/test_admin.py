"""Administration through nginx (SPEC §12): the `client` subcommands (the
only way to the admin scope), the admin routes with an admin client token,
disabled accounts (login 403 after the password check, tokens refused),
deletion, session revocation, the audit of every admin action, and the
refusals: a user token or a non-admin client -> 403 insufficient_scope."""

import json
import subprocess

import pytest

from conftest import ROOT, VAR
from test_oauth import (API, PASSWORD, assertion, bearer, key_from_jwk, metadata, post_retry,
                        token_request, user_token)

ACCESS = ROOT / "build" / "access.fcgi"
CONF = VAR / "access.conf"


def cli(*args):
    return subprocess.run([str(ACCESS), "client", *args, "-c", str(CONF)], capture_output=True,
                          text=True, timeout=30, check=False)


def client_token(http, base_url, c, scope=None):
    extra = {"scope": scope} if scope else {}
    kid = c["private_jwk"]["kid"]
    r = token_request(http, base_url, assertion(c["id"], key_from_jwk(c["private_jwk"]), kid,
                                                metadata(http, base_url)["issuer"]), **extra)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture(name="admin", scope="module")
def admin_fixture(stack):
    r = cli("create", "--name", "ops", "--scope", "admin")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["scopes"] == ["admin"] and c["private_jwk"]["d"]
    yield c
    cli("delete", c["id"])


@pytest.fixture(name="admin_token")
def admin_token_fixture(http, base_url, admin):
    return bearer(client_token(http, base_url, admin, "admin"))


def test_cli_list_shows_no_private_key(admin):
    r = cli("list")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    mine = [x for x in rows if x["id"] == admin["id"]]
    assert mine and mine[0]["owner"] is None and "private_jwk" not in mine[0]
    assert admin["private_jwk"]["d"] not in r.stdout
    assert cli("create", "--name", "x", "--scope", "nonsense").returncode != 0
    assert cli("delete", "not-a-uuid").returncode != 0


def test_refusals(http, base_url, unique_email, admin):
    url = base_url + API + "/admin/users"
    u = user_token(http, base_url, unique_email("plain"))
    r = http.get(url, headers=bearer(u["access_token"]))
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    # A user's own client (scope api) is no admin either.
    r = http.post(base_url + API + "/clients", json={"name": "api"}, headers=bearer(u["access_token"]))
    c = r.json()
    r = http.get(url, headers=bearer(client_token(http, base_url, c)))
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    # The admin client asking only for another scope gets no admin power.
    r = token_request(http, base_url, assertion(admin["id"], key_from_jwk(admin["private_jwk"]),
                                                admin["private_jwk"]["kid"], base_url), scope="api")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = http.get(url)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"]
    r = http.get(url, headers=bearer("garbage"))
    assert r.status_code == 401


def test_admin_view_is_the_user_plus_two_fields(http, base_url, unique_email, admin_token):
    """SPEC §12: the admin view "adds" disabled and sessions_active to the
    user of §4, so it carries email_verified and mfa_enabled too (it lacked
    both before)."""
    email = unique_email("view")
    u = user_token(http, base_url, email)
    me = http.get(base_url + API + "/me", headers=bearer(u["access_token"])).json()
    r = http.get(base_url + API + f"/admin/users/{me['id']}", headers=admin_token)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view == dict(me, disabled=False, sessions_active=1)
    listed = http.get(base_url + API + "/admin/users", params={"email": email}, headers=admin_token).json()
    assert listed["items"] == [view]
    r = http.patch(base_url + API + f"/admin/users/{me['id']}", json={"name": "renamed"}, headers=admin_token)
    assert r.status_code == 200 and r.json() == dict(view, name="renamed")


def test_lookup_disable_enable_delete(http, base_url, unique_email, admin, admin_token, wait_for):
    email = unique_email("managed")
    u = user_token(http, base_url, email)
    r = http.get(base_url + API + "/admin/users", params={"email": email.upper()}, headers=admin_token)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 1 and items[0]["email"] == email
    uid = items[0]["id"]
    assert items[0]["disabled"] is False and items[0]["sessions_active"] == 1
    r = http.get(base_url + API + f"/admin/users/{uid}", headers=admin_token)
    assert r.status_code == 200 and r.json()["id"] == uid
    page = http.get(base_url + API + "/admin/users", params={"limit": 2}, headers=admin_token).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    page2 = http.get(base_url + API + "/admin/users", params={"limit": 2, "cursor": page["next_cursor"]},
                     headers=admin_token).json()
    assert {i["id"] for i in page2["items"]}.isdisjoint({i["id"] for i in page["items"]})

    r = http.post(base_url + API + "/clients", json={"name": "theirs"}, headers=bearer(u["access_token"]))
    assert r.status_code == 201
    theirs = r.json()
    theirs_tok = client_token(http, base_url, theirs)

    def theirs_intro():
        a = assertion(admin["id"], key_from_jwk(admin["private_jwk"]), admin["private_jwk"]["kid"],
                      base_url)
        r = http.post(base_url + "/oauth/introspect",
                      data={"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                            "client_assertion": a, "token": theirs_tok})
        return r.json()["active"]

    assert theirs_intro() is True
    # Disable: sessions revoked, tokens refused, login 403 after the password.
    r = http.patch(base_url + API + f"/admin/users/{uid}", json={"disabled": True, "name": "Held"},
                   headers=admin_token)
    assert r.status_code == 200, r.text
    assert r.json()["disabled"] is True and r.json()["sessions_active"] == 0
    assert r.json()["name"] == "Held"
    wait_for(lambda: http.get(base_url + API + "/me", headers=bearer(u["access_token"])).status_code == 401,
             timeout=3, message="the disabled account's token is refused")
    r = post_retry(http, base_url + API + "/login", {"email": email, "password": PASSWORD})
    assert r.status_code == 403 and r.json()["code"] == "account_disabled"
    r = post_retry(http, base_url + API + "/login", {"email": email, "password": "wrong password!"})
    assert r.status_code == 401
    r = http.post(base_url + API + "/refresh", json={"refresh_token": u["refresh_token"]})
    assert r.status_code == 401
    # The account's API clients stop too: their tokens and their grants.
    wait_for(lambda: theirs_intro() is False, timeout=3, message="a disabled owner's client token")
    r = token_request(http, base_url, assertion(theirs["id"], key_from_jwk(theirs["private_jwk"]),
                                                theirs["private_jwk"]["kid"], base_url))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # Enable again: login works.
    r = http.patch(base_url + API + f"/admin/users/{uid}", json={"disabled": False}, headers=admin_token)
    assert r.status_code == 200 and r.json()["disabled"] is False
    u2 = post_retry(http, base_url + API + "/login", {"email": email, "password": PASSWORD})
    assert u2.status_code == 200
    wait_for(lambda: theirs_intro() is True, timeout=3, message="the client works again")
    assert client_token(http, base_url, theirs)
    # Revoke all sessions.
    r = http.delete(base_url + API + f"/admin/users/{uid}/sessions", headers=admin_token)
    assert r.status_code == 204
    wait_for(lambda: http.get(base_url + API + "/me",
                              headers=bearer(u2.json()["access_token"])).status_code == 401,
             timeout=3, message="revoked sessions' tokens are refused")
    # Every action is in the user's audit with the acting client.
    def audit_types():
        r = http.get(base_url + API + f"/admin/users/{uid}/audit", params={"limit": 100},
                     headers=admin_token)
        assert r.status_code == 200, r.text
        return r.json()["items"]

    items = wait_for(lambda: [e for e in audit_types()
                              if e["type"] in ("account_disabled", "account_enabled", "session_revoked")
                              and e["detail"].get("client_id") == admin["id"]]
                     if len([e for e in audit_types() if e["detail"].get("client_id") == admin["id"]]) >= 3
                     else None, timeout=5, message="admin actions audited")
    assert {e["type"] for e in items} == {"account_disabled", "account_enabled", "session_revoked"}
    # Delete: gone, its email free, its token refused.
    u3 = post_retry(http, base_url + API + "/login", {"email": email, "password": PASSWORD}).json()
    r = http.delete(base_url + API + f"/admin/users/{uid}", headers=admin_token)
    assert r.status_code == 204
    assert http.get(base_url + API + f"/admin/users/{uid}", headers=admin_token).status_code == 404
    assert http.delete(base_url + API + f"/admin/users/{uid}", headers=admin_token).status_code == 404
    wait_for(lambda: http.get(base_url + API + "/me", headers=bearer(u3["access_token"])).status_code == 401,
             timeout=3, message="the deleted account's token is refused")
    r = post_retry(http, base_url + API + "/login", {"email": email, "password": PASSWORD})
    assert r.status_code == 401
    deleted = [e for e in audit_types() if e["type"] == "account_deleted"]
    assert deleted and deleted[0]["detail"]["client_id"] == admin["id"]
    assert http.get(base_url + API + "/admin/users/nope", headers=admin_token).status_code == 404


def test_cli_delete_stops_the_admin_token(http, base_url, wait_for):
    r = cli("create", "--name", "short-lived", "--scope", "admin")
    c = json.loads(r.stdout)
    tok = bearer(client_token(http, base_url, c, "admin"))
    assert http.get(base_url + API + "/admin/users", headers=tok).status_code == 200
    assert cli("delete", c["id"]).returncode == 0
    wait_for(lambda: http.get(base_url + API + "/admin/users", headers=tok).status_code == 401,
             timeout=3, message="a deleted client's token is refused in every worker")
    # In every worker: several requests in parallel all refused.
    import concurrent.futures
    import requests

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        codes = set(ex.map(lambda _: requests.get(base_url + API + "/admin/users", headers=tok,
                                                  timeout=10).status_code, range(32)))
    assert codes == {401}


def test_admin_view_shows_the_second_factor(http, base_url, unique_email, admin_token):
    """mfa_enabled in the admin view is the account's, as in its own /me."""
    import pyotp

    email = unique_email("admin-mfa")
    assert http.post(base_url + API + "/signup", json={"email": email, "password": PASSWORD}).status_code == 201
    tok = post_retry(http, base_url + API + "/login", {"email": email, "password": PASSWORD}).json()
    auth = bearer(tok["access_token"])
    uid = http.get(base_url + API + "/me", headers=auth).json()["id"]

    def view():
        r = http.get(base_url + API + f"/admin/users/{uid}", headers=admin_token)
        assert r.status_code == 200, r.text
        listed = http.get(base_url + API + "/admin/users", params={"email": email},
                          headers=admin_token).json()["items"]
        assert [i["mfa_enabled"] for i in listed] == [r.json()["mfa_enabled"]]
        return r.json()["mfa_enabled"]

    assert view() is False
    e = http.post(base_url + API + "/mfa/totp", headers=auth).json()
    code = pyotp.parse_uri(e["otpauth_uri"]).now()
    r = http.post(base_url + API + "/mfa/totp/confirm", json={"code": code}, headers=auth)
    assert r.status_code == 200, r.text
    assert view() is True
    # A change through the admin route keeps it (the row's other columns).
    r = http.patch(base_url + API + f"/admin/users/{uid}", json={"name": "Second"}, headers=admin_token)
    assert r.status_code == 200 and r.json()["mfa_enabled"] is True, r.text
