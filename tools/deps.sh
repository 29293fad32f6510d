#!/usr/bin/env bash
# tools/deps.sh — install every Debian package the project needs.
#
# Quick when everything is there: one dpkg-query call, no network. Otherwise
# it runs `apt-get update` once and installs only what is missing,
# non-interactively. Needs root (or sudo).
#
# Package maintainer scripts would start the system's own PostgreSQL, Redis,
# nginx, lighttpd and Prometheus on their default ports (5432, 6379, 80, 9090).
# The local stack (tools/stack.sh) never uses those, but to keep the machine
# quiet and avoid two daemons fighting over port 80, a policy-rc.d that denies
# service starts is put in place for the duration of the install (only when
# the machine has none of its own).
set -euo pipefail

PACKAGES=(
	# build
	build-essential pkg-config
	# libraries (SPEC §1)
	libfcgi-dev libpq-dev libhiredis-dev libsodium-dev libargon2-dev
	libjson-c-dev libcurl4-openssl-dev liboath-dev
	# unit tests, sanitizers, lint
	libcmocka-dev clang libclang-rt-14-dev cppcheck clang-tidy clang-format
	# servers of the local stack
	postgresql postgresql-contrib redis-server nginx-light lighttpd
	libfcgi-bin spawn-fcgi
	# several hosts (make scale-test): PostgreSQL behind PgBouncer in transaction mode
	pgbouncer
	# load tools (ab is in apache2-utils)
	apache2-utils wrk
	# end-to-end tests (run with Debian's /usr/bin/python3)
	python3-pytest python3-pytest-timeout python3-requests python3-jwt python3-jwcrypto python3-cryptography
	python3-aiosmtpd python3-pyotp
	# OpenAPI validation of every e2e response (SPEC §14)
	python3-jsonschema python3-yaml
	# misc
	prometheus curl procps
	# Debian package checks (make deb, tests/pkg/test_deb.sh)
	lintian
)

missing=()
# One call for all packages. Lines look like "ii  name"; a package dpkg has
# never heard of is reported on stderr and simply does not appear.
declare -A installed=()
while read -r status name; do
	[[ $status == ii ]] && installed[$name]=1
done < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null || true)
for p in "${PACKAGES[@]}"; do
	[[ -n ${installed[$p]:-} ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
	echo "deps: all ${#PACKAGES[@]} packages present"
	exit 0
fi

echo "deps: installing ${missing[*]}"

SUDO=()
if ((EUID != 0)); then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	else
		echo "deps: need root (or sudo) to install: ${missing[*]}" >&2
		exit 1
	fi
fi

POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $POLICY ]]; then
	printf '#!/bin/sh\n# temporary, from tools/deps.sh: do not start services while installing\nexit 101\n' |
		"${SUDO[@]}" tee "$POLICY" >/dev/null
	"${SUDO[@]}" chmod 0755 "$POLICY"
	own_policy=1
fi
cleanup() {
	if ((own_policy)); then
		"${SUDO[@]}" rm -f "$POLICY"
	fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}"

# Some packages start a daemon anyway (e.g. from a trigger, or where a
# policy-rc.d already existed and allowed it). The stack does not need the
# system's Prometheus; stop it if the install just started it.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
	if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
		"${SUDO[@]}" systemctl stop prometheus >/dev/null 2>&1 || true
	elif [[ -x /etc/init.d/prometheus ]]; then
		"${SUDO[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
	fi
fi

# Verify.
still=()
for p in "${missing[@]}"; do
	s=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	[[ $s == ii* ]] || still+=("$p")
done
if ((${#still[@]})); then
	echo "deps: still missing after install: ${still[*]}" >&2
	exit 1
fi
echo "deps: installed ${#missing[@]} package(s)"
