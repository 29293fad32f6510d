#!/usr/bin/env bash
# tools/scale_test.sh — `make scale-test`: several app hosts on this machine
# (SPEC §14), tests/scale/ under pytest.
#
# Needs root and `ip netns` (network namespaces, veth, a bridge) and
# PgBouncer (tools/deps.sh): without them it fails loudly, it never skips.
# PostgreSQL is the local stack's (tools/stack.sh pg-start, ports from the
# environment or var/stack.env as for every stack command); the test makes
# its own database, Redis, PgBouncer, namespaces, hosts and nginx, and removes
# them at the end whatever happened (the fixture, then this script's trap
# again, since a timeout kills pytest before its teardown).
#
#   SCALE_TIMEOUT (240)       whole run, seconds
#   SCALE_TEST_TIMEOUT (120)  one test, seconds
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
PY=/usr/bin/python3

fail() {
	printf 'scale-test: FAILED: %s\n' "$*" >&2
	exit 1
}

((EUID == 0)) || fail "needs root (network namespaces); run it as root"
command -v ip >/dev/null || fail "no 'ip' (iproute2)"
ip netns list >/dev/null 2>&1 || fail "'ip netns' does not work here"
command -v pgbouncer >/dev/null || fail "no pgbouncer (run tools/deps.sh)"
[[ -x build/access.fcgi ]] || fail "build/access.fcgi is not built (run: make all)"

cleanup() { timeout -k 5 60 "$PY" tests/scale/cluster.py cleanup || echo "scale-test: cleanup incomplete" >&2; }
trap cleanup EXIT

timeout -k 5 120 tools/stack.sh pg-start
rc=0
timeout -k 10 "${SCALE_TIMEOUT:-240}" "$PY" -m pytest -q -p timeout -p no:cacheprovider \
	--timeout="${SCALE_TEST_TIMEOUT:-120}" tests/scale || rc=$?
((rc != 124)) || echo "== TIMEOUT: the scale test ran past ${SCALE_TIMEOUT:-240} s" >&2
exit $rc
