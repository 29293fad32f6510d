#!/usr/bin/env bash
# tests/pkg/test_deb.sh — the Debian package, end to end (SPEC §14), as root:
#
#   make deb, lintian (any E: fails), dpkg -i, then check the `access` user,
#   /etc/access (conffile, key modes and owners), the unit (systemd-analyze
#   verify); run the INSTALLED binary as the unit would (user access, group
#   www-data, supplementary group access) on a temporary unix socket against
#   the local stack's PostgreSQL (a scratch database it migrates from
#   /usr/share/access/sql) and Redis, behind a temporary nginx that includes
#   the packaged conf/nginx files, and ask /health; stop it; dpkg -r (config,
#   keys and state kept), dpkg -i again (keys not replaced), dpkg -P (all gone).
#
# Run by `make pkgtest` (and `make test`) after tools/stack.sh start, with the
# stack's ports in the environment or var/stack.env. Whatever happens, the
# trap stops what it started, purges the package it installed and drops its
# database. It refuses to run when a package `access` is already installed
# (it would remove it) unless ACCESS_PKGTEST_REPLACE=1.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT"

say() { printf 'pkgtest: %s\n' "$*"; }
fail() {
	printf 'pkgtest: FAIL: %s\n' "$*" >&2
	exit 1
}

((EUID == 0)) || fail "needs root (dpkg -i, the access user)"
[[ -r var/access.conf ]] || fail "no var/access.conf: run tools/stack.sh start first"

# The stack's ports: environment first, else what tools/stack.sh start recorded.
S_PGPORT='' S_REDIS_PORT=''
# shellcheck disable=SC1091
[[ -r var/stack.env ]] && source var/stack.env
PGPORT=${PGPORT:-${S_PGPORT:-55432}}
REDIS_PORT=${REDIS_PORT:-${S_REDIS_PORT:-56379}}

if dpkg-query -W -f='${db:Status-Abbrev}' access 2>/dev/null | grep -q '^[a-z]i'; then
	[[ ${ACCESS_PKGTEST_REPLACE:-0} == 1 ]] ||
		fail "a package 'access' is installed already; ACCESS_PKGTEST_REPLACE=1 lets this test replace and purge it"
fi

PGBIN=/usr/lib/postgresql/15/bin
for d in /usr/lib/postgresql/*/bin; do [[ -x $PGBIN/psql ]] || PGBIN=$d; done
PSQL=(env PGOPTIONS=-cclient_min_messages=warning "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -tAc)
DB=access_pkgtest
BIN=/usr/sbin/access.fcgi
T=''
APP_PID=''
NGINX_PID_FILE=''
INSTALLED=0
DB_MADE=0

# ---------------------------------------------------------------- cleanup

# alive PID: exists and is not a zombie (a child that exited but was not
# waited for yet still answers kill -0).
alive() {
	local stat
	[[ -n $1 ]] || return 1
	{ read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# stop_pid NAME PID SECONDS: SIGTERM, bounded wait, then SIGKILL.
stop_pid() {
	local name=$1 pid=$2 secs=$3 i
	alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	say "$name (pid $pid) did not stop within ${secs}s: SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	set +e
	if [[ -n $NGINX_PID_FILE && -s $NGINX_PID_FILE ]]; then
		stop_pid nginx "$(cat "$NGINX_PID_FILE")" 10
	fi
	stop_pid access.fcgi "$APP_PID" 15
	if ((INSTALLED)); then
		say "cleanup: dpkg -P access"
		timeout 120 dpkg -P access >/dev/null 2>&1 || say "cleanup: dpkg -P access failed"
	fi
	if ((DB_MADE)); then
		timeout 30 "${PSQL[@]}" "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
	fi
	[[ -n $T ]] && rm -rf "$T"
	if ((rc == 0)); then say "PASS"; else say "FAIL (exit $rc)"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# as_service CMD...: as the unit runs it: user access, group www-data,
# supplementary group access, no capabilities.
as_service() { setpriv --reuid=access --regid=www-data --groups=access --inh-caps=-all -- "$@"; }

# mode_owner PATH: "MODE USER:GROUP" (octal mode without file type).
mode_owner() { stat -c '%a %U:%G' "$1"; }

expect_mode() { # expect_mode PATH "MODE USER:GROUP"
	local got
	got=$(mode_owner "$1") || fail "$1 is missing"
	[[ $got == "$2" ]] || fail "$1 is $got, expected $2"
}

# wait_for SECONDS DESCRIPTION CMD...: until CMD succeeds, at most SECONDS.
wait_for() {
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs * 4; i++)); do
		"$@" && return 0
		sleep 0.25
	done
	fail "$what: not within ${secs}s"
}

# ---------------------------------------------------------------- build, lintian

say "make deb"
timeout 600 make -s -j2 deb >/dev/null
mapfile -t debs < <(ls build/access_*.deb)
((${#debs[@]} == 1)) || fail "expected one build/access_*.deb, found ${#debs[@]}"
DEB=${debs[0]}
[[ $(basename "$DEB") =~ ^access_[0-9][A-Za-z0-9.+~-]*_$(dpkg --print-architecture)\.deb$ ]] ||
	fail "unexpected package name $DEB"
say "built $DEB"

say "lintian"
lint=$(timeout 180 lintian "$DEB" 2>&1 | grep -v '^running with root privileges' || true)
[[ -z $lint ]] || printf '%s\n' "$lint" | sed 's/^/  /'
if grep -q '^E:' <<<"$lint"; then
	fail "lintian reports errors"
fi

# ---------------------------------------------------------------- install

say "dpkg -i"
INSTALLED=1
if ! timeout 120 dpkg -i "$DEB" >/dev/null; then
	say "dpkg -i failed; apt-get install -f for missing dependencies"
	timeout 300 env DEBIAN_FRONTEND=noninteractive apt-get install -f -y -q >/dev/null
fi
[[ $(dpkg-query -W -f='${db:Status-Abbrev}' access) == "ii " ]] || fail "access is not installed"

getent group access >/dev/null || fail "no group access"
pw=$(getent passwd access) || fail "no user access"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
((uid < 1000)) || fail "user access has uid $uid, not a system uid"
[[ $(getent group "$gid" | cut -d: -f1) == access ]] || fail "user access's group is not access"
[[ $home == /var/lib/access && $shell == /usr/sbin/nologin ]] || fail "user access: home $home shell $shell"

expect_mode /etc/access "750 root:access"
expect_mode /etc/access/access.conf "640 root:access"
expect_mode /etc/access/jwks.json "600 access:access"
expect_mode /etc/access/secrets.key "600 access:access"
expect_mode /var/lib/access "700 access:access"
[[ $(stat -c %s /etc/access/secrets.key) == 32 ]] || fail "secrets.key is not 32 bytes"
dpkg-query -W -f='${Conffiles}\n' access | grep -q '^ /etc/access/access.conf ' ||
	fail "/etc/access/access.conf is not a conffile"
grep -q '^jwt_keys = /etc/access/jwks.json$' /etc/access/access.conf || fail "access.conf: jwt_keys"
grep -q '^audit_spool = /var/lib/access/audit.spool$' /etc/access/access.conf || fail "access.conf: audit_spool"
grep -q '^secrets_key = /etc/access/secrets.key$' /etc/access/access.conf || fail "access.conf: secrets_key"
# The shipped default is valid as it stands, and readable by the service's user.
as_service "$BIN" check-config -c /etc/access/access.conf >/dev/null || fail "check-config of the shipped access.conf"
for f in /usr/share/access/conf/nginx/access.conf /usr/share/access/conf/lighttpd/lighttpd.conf \
	/usr/share/access/conf/systemd/access.service /usr/share/access/sql/001_init.sql \
	/usr/share/doc/access/README.md /usr/share/doc/access/copyright \
	/usr/share/doc/access/changelog.Debian.gz /lib/systemd/system/access.service; do
	[[ -f $f ]] || fail "$f is missing"
done
"$BIN" version | grep -q '^access ' || fail "$BIN version"

say "systemd-analyze verify"
out=$(timeout 60 systemd-analyze verify /lib/systemd/system/access.service 2>&1) ||
	fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify is not clean: $out"
# Installed, not enabled: the database in access.conf must exist first.
[[ ! -e /etc/systemd/system/multi-user.target.wants/access.service ]] ||
	fail "the package enabled access.service"

# ---------------------------------------------------------------- run it

T=$(mktemp -d /tmp/access-pkgtest.XXXXXX)
chmod 0755 "$T"
# As systemd makes them: RuntimeDirectory access:www-data 0750, StateDirectory 0700.
install -d -m 0750 -o access -g www-data "$T/run"
install -d -m 0700 -o access -g access "$T/state"
mkdir -p "$T/nginx/tmp"

say "create database $DB and migrate it with the installed binary"
timeout 30 "${PSQL[@]}" "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
DB_MADE=1
timeout 30 "${PSQL[@]}" "CREATE DATABASE $DB OWNER access ENCODING 'UTF8' TEMPLATE template0" >/dev/null

# The stack's configuration, with the package's key, the scratch database
# over TCP, Redis database 1, a spool in the state directory, fewer processes.
sed -e '/^database_url *=/d' -e '/^jwt_keys *=/d' -e '/^audit_spool *=/d' \
	-e '/^redis_url *=/d' -e '/^workers *=/d' -e '/^threads *=/d' var/access.conf >"$T/access.conf"
cat >>"$T/access.conf" <<EOF
database_url = postgresql://access@127.0.0.1:$PGPORT/$DB
redis_url = redis://127.0.0.1:$REDIS_PORT/1
jwt_keys = /etc/access/jwks.json
audit_spool = $T/state/audit.spool
workers = 1
threads = 4
EOF
chmod 0644 "$T/access.conf"

nsql=$(find /usr/share/access/sql -name '[0-9][0-9][0-9]_*.sql' | wc -l)
# From /, as the unit's ExecStartPre does it: --dir, not the working directory.
out=$(cd / && as_service timeout 60 "$BIN" migrate -c "$T/access.conf" --dir /usr/share/access/sql) || fail "migrate: $out"
want="migrate: $nsql migration$( ((nsql == 1)) || echo s) applied"
[[ $out == "$want" ]] ||
	fail "migrate said '$out', expected $nsql applied"
say "$out"

say "start $BIN as access:www-data on $T/run/access.sock"
# setsid execs (a background job of a non-interactive shell leads no group),
# setpriv execs: $! is the supervisor itself.
(cd / && exec setsid setpriv --reuid=access --regid=www-data --groups=access --inh-caps=-all -- \
	"$BIN" serve -c "$T/access.conf" --listen "unix:$T/run/access.sock") \
	</dev/null >"$T/access.log" 2>&1 &
APP_PID=$!
wait_for 15 "socket $T/run/access.sock" test -S "$T/run/access.sock"
alive "$APP_PID" || fail "access.fcgi exited: $(tail -n 5 "$T/access.log")"
[[ $(readlink "/proc/$APP_PID/exe") == "$BIN" ]] || fail "pid $APP_PID is not $BIN"
expect_mode "$T/run/access.sock" "660 access:www-data"

port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The packaged upstream example, pointed at the temporary socket.
sed "s|unix:/run/access/access.sock|unix:$T/run/access.sock|" \
	/usr/share/access/conf/nginx/upstream.conf.example >"$T/nginx/upstream.conf"
grep -q "unix:$T/run/access.sock" "$T/nginx/upstream.conf" || fail "upstream.conf.example has no /run/access/access.sock"
cat >"$T/nginx/nginx.conf" <<EOF
# tests/pkg/test_deb.sh: the packaged nginx files behind a temporary server.
user www-data www-data;
worker_processes 1;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $T/nginx/tmp/client_body;
    fastcgi_temp_path $T/nginx/tmp/fastcgi;
    proxy_temp_path $T/nginx/tmp/proxy;
    scgi_temp_path $T/nginx/tmp/scgi;
    uwsgi_temp_path $T/nginx/tmp/uwsgi;
    include $T/nginx/upstream.conf;
    server {
        listen 127.0.0.1:$port;
        include /usr/share/access/conf/nginx/access.conf;
    }
}
EOF
NGINX_PID_FILE=$T/nginx/nginx.pid
timeout 30 nginx -p "$T/nginx/" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" ||
	fail "nginx did not start: $(tail -n 5 "$T/nginx/error.log")"
wait_for 10 "nginx pid file" test -s "$NGINX_PID_FILE"

say "GET http://127.0.0.1:$port/health"
health() { curl -sS -o "$T/health.json" -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null; }
health_ok() { [[ $(health) == 200 ]]; }
wait_for 20 "/health 200 through nginx ($(tail -n 3 "$T/access.log" 2>/dev/null))" health_ok
body=$(cat "$T/health.json")
grep -q '"status":"ok"' <<<"$body" || fail "/health: $body"
grep -q '"database":{"status":"up"' <<<"$body" || fail "/health database: $body"
grep -q '"redis":{"status":"up"' <<<"$body" || fail "/health redis: $body"
say "/health 200: ${body:0:120}..."
# The packaged JWKS route serves the package's key.
kid=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["keys"][0]["kid"])' /etc/access/jwks.json)
curl -fsS --max-time 2 "http://127.0.0.1:$port/.well-known/jwks.json" | grep -q "\"$kid\"" ||
	fail "jwks.json through nginx does not carry the installed key $kid"

say "stop (SIGTERM: drain)"
stop_pid nginx "$(cat "$NGINX_PID_FILE")" 10
NGINX_PID_FILE=''
kill -TERM "$APP_PID"
for ((i = 0; i < 150; i++)); do
	alive "$APP_PID" || break
	sleep 0.1
done
alive "$APP_PID" && fail "access.fcgi still running 15 s after SIGTERM"
set +e
wait "$APP_PID"
app_rc=$?
set -e
APP_PID=''
((app_rc == 0)) || fail "access.fcgi exited $app_rc after SIGTERM: $(tail -n 5 "$T/access.log")"

# ---------------------------------------------------------------- remove, purge

key_sum=$(sha256sum /etc/access/jwks.json /etc/access/secrets.key)

say "dpkg -r access"
timeout 120 dpkg -r access >/dev/null
[[ $(dpkg-query -W -f='${db:Status-Abbrev}' access) == "rc " ]] || fail "after dpkg -r: not in config-files state"
[[ ! -e $BIN ]] || fail "dpkg -r left $BIN"
for f in /etc/access/access.conf /etc/access/jwks.json /etc/access/secrets.key; do
	[[ -f $f ]] || fail "dpkg -r removed $f"
done
[[ -d /var/lib/access ]] || fail "dpkg -r removed /var/lib/access"

say "dpkg -i again: keys kept"
timeout 120 dpkg -i "$DEB" >/dev/null
[[ $(sha256sum /etc/access/jwks.json /etc/access/secrets.key) == "$key_sum" ]] ||
	fail "reinstalling replaced the keys"
expect_mode /etc/access/jwks.json "600 access:access"

say "dpkg -P access"
timeout 120 dpkg -P access >/dev/null
INSTALLED=0
if dpkg-query -W -f='${db:Status-Abbrev}' access 2>/dev/null | grep -q '^[a-z][ic]'; then
	fail "after dpkg -P: access still known to dpkg"
fi
for p in /etc/access /var/lib/access /lib/systemd/system/access.service /usr/share/access \
	/etc/systemd/system/access.service; do
	[[ ! -e $p && ! -L $p ]] || fail "dpkg -P left $p"
done
getent passwd access >/dev/null && say "user access kept after purge (Debian custom)"
