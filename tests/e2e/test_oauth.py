"""API clients and the OAuth 2.0 endpoints through nginx (SPEC §11): the
whole client life with assertions made by an independent JOSE
implementation (PyJWT over python3-cryptography's Ed25519), every refusal of
§11, introspection of every token kind, revocation, metadata, and another
user's client being invisible."""

import base64
import concurrent.futures
import json
import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

API = "/api/v1/access"
PASSWORD = "correct horse battery"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def thumbprint(x):
    """RFC 7638 thumbprint of an OKP key, computed here independently."""
    import hashlib

    canon = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(canon.encode()).digest())


def new_keypair():
    sk = Ed25519PrivateKey.generate()
    x = b64u(sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return sk, {"kty": "OKP", "crv": "Ed25519", "x": x}


def key_from_jwk(jwk):
    return Ed25519PrivateKey.from_private_bytes(b64u_dec(jwk["d"]))


def post_retry(http, url, payload, headers=None):
    for _ in range(10):
        r = http.post(url, json=payload, headers=headers, timeout=15)
        if r.status_code != 503:
            return r
        time.sleep(0.3)
    return r


def user_token(http, base_url, email):
    r = post_retry(http, base_url + API + "/signup", {"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = post_retry(http, base_url + API + "/login", {"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def metadata(http, base_url):
    r = http.get(base_url + "/.well-known/oauth-authorization-server")
    assert r.status_code == 200, r.text
    return r.json()


def assertion(client_id, key, kid, aud, **over):
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "jti": str(uuid.uuid4()),
              "iat": now, "exp": now + 60}
    claims.update(over.pop("claims", {}))
    headers = {"kid": kid} if kid else {}
    headers.update(over.pop("headers", {}))
    alg = over.pop("alg", "EdDSA")
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def token_request(http, base_url, client_assertion, **extra):
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion}
    form.update(extra)
    return http.post(base_url + "/oauth/token", data=form, timeout=15)


def oauth_post(http, base_url, path, client_assertion, **extra):
    form = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion}
    form.update(extra)
    return http.post(base_url + path, data=form, timeout=15)


@pytest.fixture(name="owner")
def owner_fixture(http, base_url, unique_email):
    return user_token(http, base_url, unique_email("client-owner"))


@pytest.fixture(name="client")
def client_fixture(http, base_url, owner):
    r = http.post(base_url + API + "/clients", json={"name": "robot"},
                  headers=bearer(owner["access_token"]))
    assert r.status_code == 201, r.text
    c = r.json()
    c["key"] = key_from_jwk(c["private_jwk"])
    c["kid"] = c["private_jwk"]["kid"]
    return c


def grant(http, base_url, c, aud, **extra):
    r = token_request(http, base_url, assertion(c["id"], c["key"], c["kid"], aud), **extra)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------- tests


def test_metadata_from_public_url(http, base_url):
    m = metadata(http, base_url)
    assert m["issuer"] == base_url
    assert m["token_endpoint"] == base_url + "/oauth/token"
    assert m["introspection_endpoint"] == base_url + "/oauth/introspect"
    assert m["revocation_endpoint"] == base_url + "/oauth/revoke"
    assert m["jwks_uri"] == base_url + "/.well-known/jwks.json"
    assert m["grant_types_supported"] == ["client_credentials"]
    assert m["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "EdDSA" in m["token_endpoint_auth_signing_alg_values_supported"]


def test_client_life(http, base_url, owner, client):
    c = client
    assert c["name"] == "robot" and c["scopes"] == ["api"]
    pj = c["private_jwk"]
    assert pj["kty"] == "OKP" and pj["crv"] == "Ed25519" and "d" in pj
    assert pj["kid"] == thumbprint(pj["x"]) == c["keys"][0]["kid"]
    # The list shows the client without any private part.
    r = http.get(base_url + API + "/clients", headers=bearer(owner["access_token"]))
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["id"] for i in items] == [c["id"]]
    assert "private_jwk" not in r.text and pj["d"] not in r.text
    # Every accepted audience works; the token verifies with the JWKS.
    m = metadata(http, base_url)
    jwks = http.get(base_url + "/.well-known/jwks.json").json()
    for aud in (m["issuer"], "access", m["token_endpoint"]):
        t = grant(http, base_url, c, aud)
        assert t["token_type"] == "Bearer" and t["expires_in"] == 3600 and t["scope"] == "api"
        hdr = jwt.get_unverified_header(t["access_token"])
        k = next(k for k in jwks["keys"] if k["kid"] == hdr["kid"])
        pub = jwt.PyJWK(k).key
        claims = jwt.decode(t["access_token"], pub, algorithms=["EdDSA"], audience="access",
                            issuer="access")
        assert claims["sub"] == claims["client_id"] == c["id"]
        assert claims["scope"] == "api" and "sid" not in claims
        assert {"jti", "iat", "exp"} <= claims.keys()
    # A user route refuses the client token.
    r = http.get(base_url + API + "/me", headers=bearer(t["access_token"]))
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    # Rotation: a registered public key (the private key never leaves here).
    sk2, pub2 = new_keypair()
    r = http.post(base_url + API + f"/clients/{c['id']}/keys", json={"public_jwk": pub2},
                  headers=bearer(owner["access_token"]))
    assert r.status_code == 201, r.text
    kid2 = r.json()["kid"]
    assert kid2 == thumbprint(pub2["x"]) and "private_jwk" not in r.json()
    t2 = token_request(http, base_url, assertion(c["id"], sk2, kid2, m["issuer"]))
    assert t2.status_code == 200, t2.text
    # Revoke the first key: its assertions are refused, and so are the
    # tokens the client held; the second key goes on.
    r = http.delete(base_url + API + f"/clients/{c['id']}/keys/{c['kid']}",
                    headers=bearer(owner["access_token"]))
    assert r.status_code == 204
    r = token_request(http, base_url, assertion(c["id"], c["key"], c["kid"], m["issuer"]))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    t3 = token_request(http, base_url, assertion(c["id"], sk2, kid2, m["issuer"]))
    assert t3.status_code == 200, t3.text
    intro = oauth_post(http, base_url, "/oauth/introspect", assertion(c["id"], sk2, kid2, m["issuer"]),
                       token=t["access_token"])
    assert intro.json() == {"active": False}
    intro = oauth_post(http, base_url, "/oauth/introspect", assertion(c["id"], sk2, kid2, m["issuer"]),
                       token=t3.json()["access_token"])
    assert intro.json()["active"] is True
    # Delete the client: its tokens die, assertions are refused.
    r = http.delete(base_url + API + f"/clients/{c['id']}", headers=bearer(owner["access_token"]))
    assert r.status_code == 204
    r = token_request(http, base_url, assertion(c["id"], sk2, kid2, m["issuer"]))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers.get("WWW-Authenticate")
    r = http.get(base_url + API + "/clients", headers=bearer(owner["access_token"]))
    assert r.json()["items"] == []


def test_another_users_client_is_404(http, base_url, client, unique_email):
    other = user_token(http, base_url, unique_email("other"))
    h = bearer(other["access_token"])
    assert http.delete(base_url + API + f"/clients/{client['id']}", headers=h).status_code == 404
    r = http.post(base_url + API + f"/clients/{client['id']}/keys", json={}, headers=h)
    assert r.status_code == 404
    r = http.delete(base_url + API + f"/clients/{client['id']}/keys/{client['kid']}", headers=h)
    assert r.status_code == 404
    assert http.get(base_url + API + "/clients", headers=h).json()["items"] == []


def test_create_refusals(http, base_url, owner):
    h = bearer(owner["access_token"])
    url = base_url + API + "/clients"
    r = http.post(url, json={"name": "x", "scopes": ["admin"]}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "scopes"
    r = http.post(url, json={"name": "x", "scopes": ["nope"]}, headers=h)
    assert r.status_code == 422
    sk, pub = new_keypair()
    priv = dict(pub, d=b64u(b"\x01" * 32))
    r = http.post(url, json={"name": "x", "public_jwk": priv}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "public_jwk"
    r = http.post(url, json={"name": "x", "public_jwk": {"kty": "EC", "crv": "P-256", "x": "a"}},
                  headers=h)
    assert r.status_code == 422
    r = http.post(url, json={"name": ""}, headers=h)
    assert r.status_code == 422
    r = http.post(url, json={"name": "with key", "public_jwk": pub}, headers=h)
    assert r.status_code == 201 and "private_jwk" not in r.json()
    assert r.json()["keys"][0]["kid"] == thumbprint(pub["x"])


def test_assertion_refusals(http, base_url, client, owner, unique_email):
    c = client
    m = metadata(http, base_url)
    iss = m["issuer"]
    now = int(time.time())

    def refused(a, error="invalid_client", **extra):
        r = token_request(http, base_url, a, **extra)
        assert r.status_code == (401 if error == "invalid_client" else 400), r.text
        assert r.json()["error"] == error, r.text
        assert r.headers["Cache-Control"] == "no-store"
        if error == "invalid_client":
            assert r.headers.get("WWW-Authenticate")
        return r

    # Replay of one jti, from many requests at once (reaching both workers).
    a = assertion(c["id"], c["key"], c["kid"], iss)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda _: requests.post(
            base_url + "/oauth/token",
            data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                  "client_assertion": a}, timeout=15).status_code, range(16)))
    assert sorted(codes) == [200] + [401] * 15, codes
    refused(a)
    refused(assertion(c["id"], c["key"], c["kid"], "https://elsewhere.example"))
    refused(assertion(c["id"], c["key"], c["kid"], iss, claims={"exp": now - 3600, "iat": now - 3700}))
    refused(assertion(c["id"], c["key"], c["kid"], iss, claims={"exp": now + 3600}))
    refused(assertion(c["id"], c["key"], c["kid"], iss, claims={"iss": str(uuid.uuid4())}))
    refused(assertion(c["id"], c["key"], c["kid"], iss, claims={"sub": str(uuid.uuid4())}))
    # Another client's key, with this client's id.
    r = http.post(base_url + API + "/clients", json={"name": "other"}, headers=bearer(owner["access_token"]))
    other = r.json()
    okey = key_from_jwk(other["private_jwk"])
    refused(assertion(c["id"], okey, other["private_jwk"]["kid"], iss))
    refused(assertion(c["id"], okey, c["kid"], iss))
    refused(assertion(c["id"], okey, None, iss))
    # alg none and HS256.
    unsigned = jwt.encode({"iss": c["id"], "sub": c["id"], "aud": iss, "jti": "n1", "exp": now + 60},
                          None, algorithm="none")
    refused(unsigned)
    hs = jwt.encode({"iss": c["id"], "sub": c["id"], "aud": iss, "jti": "h1", "exp": now + 60},
                    c["private_jwk"]["x"], algorithm="HS256", headers={"kid": c["kid"]})
    refused(hs)
    refused("not.a.jws")
    # client_id that is not the assertion's subject.
    refused(assertion(c["id"], c["key"], c["kid"], iss), client_id=other["id"])
    # Unknown client.
    refused(assertion(str(uuid.uuid4()), c["key"], c["kid"], iss))
    # No client authentication at all.
    r = http.post(base_url + "/oauth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # Wrong grant and scope.
    refused(assertion(c["id"], c["key"], c["kid"], iss), error="unsupported_grant_type",
            grant_type="password")
    refused(assertion(c["id"], c["key"], c["kid"], iss), error="invalid_scope", scope="admin")
    # The successful assertion right after all this still works.
    assert token_request(http, base_url, assertion(c["id"], c["key"], c["kid"], iss)).status_code == 200


def test_malformed_requests(http, base_url, client):
    c = client
    iss = metadata(http, base_url)["issuer"]
    a = assertion(c["id"], c["key"], c["kid"], iss)
    form = f"grant_type=client_credentials&client_assertion_type={ASSERTION_TYPE}&client_assertion={a}"
    cases = [
        (form + "&grant_type=client_credentials", FORM),  # duplicate parameter
        (form + "&&x=1", FORM),
        (form + "&x=%zz", FORM),
        (form + "&x=%00", FORM),
        (form + "&", FORM),
        ("x" * 20000, FORM),
    ]
    for body, headers in cases:
        r = http.post(base_url + "/oauth/token", data=body, headers=headers)
        assert r.status_code in (400, 413), (body[:40], r.text)
        if r.status_code == 400:
            assert r.json()["error"] == "invalid_request", r.text
            assert r.headers["Cache-Control"] == "no-store"
    # JSON bodies and other media types: invalid_request.
    r = http.post(base_url + "/oauth/token", json={"grant_type": "client_credentials",
                                                   "client_assertion_type": ASSERTION_TYPE,
                                                   "client_assertion": a})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = http.post(base_url + "/oauth/token", data=form, headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # None of these spent the assertion: it still works once.
    r = http.post(base_url + "/oauth/token", data=form, headers=FORM)
    assert r.status_code == 200, r.text


def test_introspection_of_every_token_kind(http, base_url, client, owner):
    c = client
    iss = metadata(http, base_url)["issuer"]

    def introspect(tok):
        r = oauth_post(http, base_url, "/oauth/introspect", assertion(c["id"], c["key"], c["kid"], iss),
                       token=tok)
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        return r.json()

    ct = grant(http, base_url, c, iss)["access_token"]
    got = introspect(ct)
    assert got["active"] is True and got["client_id"] == c["id"] and got["scope"] == "api"
    assert got["token_type"] == "Bearer"
    got = introspect(owner["access_token"])
    assert got["active"] is True and "sid" in got and got["token_type"] == "Bearer"
    got = introspect(owner["refresh_token"])
    assert got["active"] is True and got["token_type"] == "refresh_token"
    assert introspect("garbage") == {"active": False}
    assert introspect(b64u(b"\0" * 32)) == {"active": False}
    # Revocation: a client token by jti; a refresh token revokes its session
    # (and with it the user's access token).
    r = oauth_post(http, base_url, "/oauth/revoke", assertion(c["id"], c["key"], c["kid"], iss), token=ct)
    assert r.status_code == 200
    assert introspect(ct) == {"active": False}
    r = oauth_post(http, base_url, "/oauth/revoke", assertion(c["id"], c["key"], c["kid"], iss),
                   token=owner["refresh_token"])
    assert r.status_code == 200
    assert introspect(owner["refresh_token"]) == {"active": False}
    assert introspect(owner["access_token"]) == {"active": False}
    r = http.get(base_url + API + "/me", headers=bearer(owner["access_token"]))
    assert r.status_code == 401
    # Unknown tokens: 200 as well.
    r = oauth_post(http, base_url, "/oauth/revoke", assertion(c["id"], c["key"], c["kid"], iss), token="nope")
    assert r.status_code == 200


def test_revoke_user_access_token(http, base_url, client, unique_email):
    c = client
    iss = metadata(http, base_url)["issuer"]
    u = user_token(http, base_url, unique_email("revoked"))
    r = oauth_post(http, base_url, "/oauth/revoke", assertion(c["id"], c["key"], c["kid"], iss),
                   token=u["access_token"])
    assert r.status_code == 200
    r = http.get(base_url + API + "/me", headers=bearer(u["access_token"]))
    assert r.status_code == 401


def test_grant_metrics(http, base_url, client):
    def count(result):
        text = http.get(base_url + "/metrics").text
        for line in text.splitlines():
            if line.startswith("oauth_grants_total{") and f'result="{result}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before_ok, before_bad = count("success"), count("invalid_client")
    c = client
    iss = metadata(http, base_url)["issuer"]
    grant(http, base_url, c, iss)
    token_request(http, base_url, assertion(c["id"], c["key"], c["kid"], "wrong"))
    assert count("success") >= before_ok + 1
    assert count("invalid_client") >= before_bad + 1


def test_replay_refused_on_this_host_while_redis_is_away(http, base_url, client, fault_stack):
    """Without Redis, the host's jti table (shared by its workers) still
    accepts an assertion once: parallel requests reach both workers."""
    c = client
    iss = metadata(http, base_url)["issuer"]
    # Warm the client record so the grant needs neither Redis nor a new load.
    grant(http, base_url, c, iss)
    fault_stack.redis_stop()
    for _ in range(5):
        a = assertion(c["id"], c["key"], c["kid"], iss)
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            codes = list(ex.map(lambda _: requests.post(
                base_url + "/oauth/token",
                data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                      "client_assertion": a}, timeout=15).status_code, range(16)))
        assert sorted(codes) == [200] + [401] * 15, codes
    fault_stack.redis_start()


def test_lighttpd_routes_oauth(http, base_url, lighttpd_url, client):
    """lighttpd sends /oauth/* and the metadata to the service as nginx does."""
    r = http.get(lighttpd_url + "/.well-known/oauth-authorization-server")
    assert r.status_code == 200 and r.json()["issuer"] == base_url
    c = client
    r = http.post(lighttpd_url + "/oauth/token",
                  data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                        "client_assertion": assertion(c["id"], c["key"], c["kid"], base_url)})
    assert r.status_code == 200, r.text
    r = http.post(lighttpd_url + "/oauth/introspect", json={"token": "x"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
