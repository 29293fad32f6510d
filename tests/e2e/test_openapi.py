"""docs/openapi.yaml (SPEC §14): the router and the document list the same
routes, the document holds together, and the validation adapter that
conftest.py puts under every response catches what it must."""

import subprocess

import pytest
import requests
from requests.structures import CaseInsensitiveDict

import openapi_check
from conftest import ROOT

API = "/api/v1/access"
BINARY = ROOT / "build" / "access.fcgi"

# Operations documented ahead of the router (none: every route is routed).
PENDING = set()


def router_routes():
    out = subprocess.run([str(BINARY), "routes"], check=True, capture_output=True, text=True, timeout=10).stdout
    routes = set()
    for line in out.splitlines():
        method, _, path = line.partition(" ")
        routes.add((method, path))
    return routes


@pytest.fixture(scope="module")
def doc():
    return openapi_check.load()


def test_router_and_document_list_the_same_routes(doc):
    routed = router_routes()
    documented = openapi_check.operations(doc)
    assert len(routed) >= 35, routed
    assert routed - documented == set(), "routed but not documented"
    assert documented - routed - PENDING == set(), "documented but not routed"
    # PENDING holds only what is still missing from the router.
    assert PENDING & routed == set(), "routed now: take it out of PENDING"


def test_document_is_openapi_3_1_and_every_ref_resolves(doc):
    assert doc["openapi"].startswith("3.1")
    refs = set(openapi_check.all_refs(doc))
    assert len(refs) > 20
    for ref in refs:
        openapi_check.resolve_ref(doc, ref)  # KeyError names a dangling one
    ids = []
    for path, item in doc["paths"].items():
        params = set(seg[1:-1] for seg in path.split("/") if seg.startswith("{"))
        for method, op in item.items():
            if method not in openapi_check.METHODS:
                continue
            ids.append(op["operationId"])
            assert op.get("responses"), f"{method} {path} has no responses"
            for code, resp in op["responses"].items():
                resp = openapi_check.deref(doc, resp)
                assert resp.get("description"), f"{method} {path} {code}"
                hdrs = {k.lower() for k in resp.get("headers", {})}
                assert "x-request-id" in hdrs and "cache-control" in hdrs, f"{method} {path} {code}"
            declared = {
                openapi_check.deref(doc, p)["name"]
                for p in op.get("parameters", [])
                if openapi_check.deref(doc, p)["in"] == "path"
            }
            assert declared == params, f"{method} {path}: path parameters {declared} vs {params}"
            if "security" in op and op["security"]:
                for req in op["security"]:
                    for name in req:
                        assert name in doc["components"]["securitySchemes"]
    assert len(ids) == len(set(ids)), "operationIds are unique"


def _hand_made(status, body, ctype="application/json", **headers):
    h = CaseInsensitiveDict({"X-Request-ID": "abc", "Cache-Control": "no-store"})
    if ctype:
        h["Content-Type"] = ctype
    h.update(headers)
    return status, h, body


def test_adapter_accepts_a_correct_answer(openapi):
    user = (
        b'{"id":"0190a5f0-0000-7000-8000-000000000000","email":"a@example.test","name":"",'
        b'"created_at":"2026-01-01T00:00:00Z","email_verified":false,"mfa_enabled":false}'
    )
    status, h, body = _hand_made(201, user)
    openapi.validate("POST", "http://x" + API + "/signup", status, h, body)


@pytest.mark.parametrize(
    "method,path,status,headers,body,why",
    [
        # the user without its required "mfa_enabled"
        (
            "POST",
            API + "/signup",
            201,
            {},
            b'{"id":"0190a5f0-0000-7000-8000-000000000000","email":"a@example.test","name":"",'
            b'"created_at":"2026-01-01T00:00:00Z","email_verified":false}',
            "mfa_enabled",
        ),
        # a status the operation does not document
        ("GET", "/health/live", 201, {}, b'{"status":"ok"}', "not documented"),
        # a problem document without its code
        (
            "GET",
            API + "/me",
            401,
            {"Content-Type": "application/problem+json", "WWW-Authenticate": 'Bearer error="invalid_token"'},
            b'{"type":"about:blank","title":"Unauthorized","status":401,"detail":"x"}',
            "code",
        ),
        # a 401 without its challenge
        (
            "GET",
            API + "/me",
            401,
            {"Content-Type": "application/problem+json"},
            b'{"type":"about:blank","title":"Unauthorized","status":401,"code":"invalid_token","detail":"x"}',
            "WWW-Authenticate",
        ),
        # the wrong Cache-Control for /me
        (
            "GET",
            API + "/me",
            304,
            {"Cache-Control": "no-store", "ETag": '"1"'},
            b"",
            "Cache-Control",
        ),
        # a body where none is documented
        ("POST", API + "/logout", 204, {}, b"{}", "without a body"),
        # an unknown path answered with 200
        ("GET", API + "/nope", 200, {}, b"{}", "no operation"),
    ],
)
def test_adapter_catches_a_wrong_answer(openapi, method, path, status, headers, body, why):
    _, h, _ = _hand_made(status, body)
    if status in (204, 304):
        del h["Content-Type"]
    h.update(headers)
    with pytest.raises(openapi_check.OpenAPIMismatch, match=why):
        openapi.validate(method, "http://x" + path, status, h, body)


def test_adapter_sees_module_function_and_session_requests(openapi, base_url):
    before = openapi.validated
    requests.get(base_url + "/health/live", timeout=10)
    with requests.Session() as s:
        s.get(base_url + "/health/live", timeout=10)
    assert openapi.validated >= before + 2


def test_unknown_path_and_wrong_method_are_checked(openapi, base_url, http):
    before = openapi.validated
    r = http.get(base_url + API + "/no-such-thing")
    assert r.status_code == 404
    r = http.put(base_url + API + "/me", json={})
    assert r.status_code == 405
    r = http.head(base_url + API + "/me")
    assert r.status_code == 401
    assert openapi.validated >= before + 3
