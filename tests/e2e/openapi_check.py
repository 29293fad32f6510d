"""Validate the service's HTTP answers against docs/openapi.yaml (SPEC §14).

conftest.py installs `install()` once: it wraps requests.adapters.HTTPAdapter.send,
so every response any test receives through `requests` (sessions and the
module functions alike) from the service's origins is checked:

  - the operation is found by method + path template (query string stripped,
    `{param}` = one non-empty segment); HEAD is checked against GET (no body);
  - the status must be documented for it (or a `default`); a path no
    operation has must be the router's 404 (components/responses/NotFound),
    a known path with an undocumented method its 405 (MethodNotAllowed);
  - the body must validate (Draft 2020-12, `$ref`s resolved into the document)
    against the schema of that status and content type, and a documented
    content type must be present exactly when the response has content;
  - every header the response documents as required must be there, and every
    documented header present must match its schema.

Skipped (not the service): other origins (Prometheus, webhook sinks, mail),
and the nginx-only benchmark locations under /_bench/ (SPEC §7 ceilings:
nginx's `return 200` and the trivial libfcgi responder).

A mismatch never raises inside the transport (a test that catches
exceptions, e.g. wait_for() polling, would swallow it): it is recorded, and
the autouse fixture in conftest.py fails the test that made the request at
its teardown, naming each mismatch. `validate()` raises OpenAPIMismatch and is
what the hook calls; tests call it directly on hand-made responses.

Only the standard library, PyYAML and jsonschema (Debian python3-yaml,
python3-jsonschema).
"""

import json
import pathlib
import re
import threading
import urllib.parse

import jsonschema
import requests
import yaml
from requests.structures import CaseInsensitiveDict

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SKIP_PREFIXES = ("/_bench/",)


class OpenAPIMismatch(AssertionError):
    pass


def load(path=DOC_PATH):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def resolve_ref(doc, ref):
    """The object a local `#/a/b` reference points at (KeyError if none)."""
    if not ref.startswith("#/"):
        raise KeyError(f"not a local reference: {ref}")
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node


def deref(doc, node):
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        node = resolve_ref(doc, node["$ref"])
        seen += 1
        if seen > 20:
            raise KeyError("reference loop")
    return node


def all_refs(node):
    """Every $ref string anywhere in node."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from all_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from all_refs(v)


def operations(doc):
    """{(METHOD, template)} of the document."""
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS}


def _template_regex(template):
    parts = re.split(r"(\{[^}/]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def _media_type(content_type):
    return (content_type or "").split(";")[0].strip().lower()


class Checker:
    def __init__(self, doc=None):
        self.doc = doc if doc is not None else load()
        self.templates = [(_template_regex(p), p) for p in self.doc["paths"]]
        self._validators = {}
        self._lock = threading.Lock()
        self.validated = 0
        self.seen = set()  # (METHOD, template or None, status) checked
        self.mismatches = []  # (test id or None, message)
        self.current_test = None

    # ---- lookup

    def find(self, method, path):
        """(operation, template) or (None, template) for a known path with
        another method, or (None, None)."""
        for regex, template in self.templates:
            if regex.match(path):
                item = self.doc["paths"][template]
                m = method.lower()
                if m == "head" and "head" not in item:
                    m = "get"
                return item.get(m), template
        return None, None

    def _validator(self, schema):
        key = id(schema)
        v = self._validators.get(key)
        if v is None:
            # The schema inside the whole document, so "#/components/..." resolves.
            wrapper = dict(self.doc)
            wrapper["$ref"] = "#/__target"
            wrapper["__target"] = schema
            wrapper["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            v = jsonschema.Draft202012Validator(wrapper)
            self._validators[key] = (v, schema)
        else:
            v = v[0]
        return v

    # ---- validation

    def validate(self, method, url, status, headers, body):
        """Raise OpenAPIMismatch unless the answer matches the document.
        headers: a case-insensitive mapping; body: bytes (b"" for none).
        Returns a short description of what was checked."""
        path = urllib.parse.urlsplit(url).path
        op, template = self.find(method, path)
        where = f"{method} {path} -> {status}"
        with self._lock:
            self.seen.add((method.upper(), template, status))
        if op is None:
            name = "NotFound" if template is None else "MethodNotAllowed"
            want = 404 if template is None else 405
            if status != want:
                what = "no operation for this path" if template is None else "method not documented"
                raise OpenAPIMismatch(f"{where}: {what} (only a {want} would be)")
            response = deref(self.doc, self.doc["components"]["responses"][name])
        else:
            responses = op.get("responses", {})
            response = responses.get(str(status), responses.get(f"{str(status)[0]}XX", responses.get("default")))
            if response is None:
                raise OpenAPIMismatch(
                    f"{where} ({method} {template}): status {status} not documented "
                    f"(documented: {', '.join(sorted(responses))})"
                )
            response = deref(self.doc, response)
        self._check_headers(where, response, headers)
        self._check_body(where, method, response, headers, body)
        return where

    def _check_headers(self, where, response, headers):
        for name, h in (response.get("headers") or {}).items():
            h = deref(self.doc, h)
            value = headers.get(name)
            if value is None:
                if h.get("required"):
                    raise OpenAPIMismatch(f"{where}: required header {name} missing")
                continue
            schema = h.get("schema")
            if schema is not None:
                errors = sorted(self._validator(schema).iter_errors(value), key=str)
                if errors:
                    raise OpenAPIMismatch(f"{where}: header {name}: {value!r}: {errors[0].message}")

    def _check_body(self, where, method, response, headers, body):
        content = response.get("content") or {}
        ctype = _media_type(headers.get("Content-Type"))
        if method.upper() == "HEAD":
            if content and ctype and ctype not in content:
                raise OpenAPIMismatch(f"{where}: Content-Type {ctype!r} not documented ({', '.join(content)})")
            return
        if not content:
            if body:
                raise OpenAPIMismatch(f"{where}: documented without a body, got {len(body)} bytes ({ctype or 'no type'})")
            return
        if ctype not in content:
            raise OpenAPIMismatch(f"{where}: Content-Type {ctype or 'none'!r} not documented ({', '.join(content)})")
        schema = (content[ctype] or {}).get("schema")
        if schema is None:
            return
        if ctype.endswith("json"):
            try:
                value = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise OpenAPIMismatch(f"{where}: body is not JSON ({exc}): {body[:200]!r}") from None
        else:
            value = body.decode("utf-8", errors="replace")
        errors = sorted(self._validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            at = "/".join(str(p) for p in e.absolute_path) or "(root)"
            raise OpenAPIMismatch(f"{where}: body at {at}: {e.message}; body: {body[:300]!r}")

    # ---- the transport hook

    def check_response(self, response):
        """Validate a requests.Response; record (not raise) a mismatch."""
        req = response.request
        try:
            body = b"" if req.method.upper() == "HEAD" else response.content
        except Exception:  # noqa: BLE001 - a broken read is the test's business
            return
        self.check_raw(req.method, req.url, response.status_code, response.headers, body)

    def check_raw(self, method, url, status, headers, body):
        """The same for an answer read another way (http.client helpers of
        the tests): headers any mapping or list of pairs, body bytes."""
        if not isinstance(headers, CaseInsensitiveDict):
            headers = CaseInsensitiveDict(headers.items() if hasattr(headers, "items") else headers)
        try:
            self.validate(method, url, status, headers, body if method.upper() != "HEAD" else b"")
        except OpenAPIMismatch as exc:
            with self._lock:
                self.mismatches.append((self.current_test, str(exc)))
        with self._lock:
            self.validated += 1

    def take_mismatches(self):
        with self._lock:
            out, self.mismatches = self.mismatches, []
        return out


_installed = None


def install(origins):
    """Wrap HTTPAdapter.send once; check responses from `origins` (a
    callable returning the set of "host:port" strings of the service)."""
    global _installed
    if _installed is not None:
        return _installed
    checker = Checker()
    original = requests.adapters.HTTPAdapter.send

    def send(self, request, **kwargs):
        response = original(self, request, **kwargs)
        parts = urllib.parse.urlsplit(request.url)
        if parts.netloc in origins() and not parts.path.startswith(SKIP_PREFIXES):
            if kwargs.get("stream"):
                # Reading a streamed body here would take it from the test.
                pass
            else:
                checker.check_response(response)
        return response

    requests.adapters.HTTPAdapter.send = send
    _installed = checker
    return checker
