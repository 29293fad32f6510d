#!/usr/bin/env bash
# tools/stack.sh — the private local stack of `make run` / `make test`.
#
#   tools/stack.sh start | stop | status
#   tools/stack.sh pg-stop | pg-start | redis-stop | redis-start | smtp-stop | smtp-start
#   tools/stack.sh app-stop | app-start | app-restart | nginx-reload
#   tools/stack.sh lighttpd-start | lighttpd-stop
#   tools/stack.sh unit-db   (prints the URL of the unit tests' own database)
#
# Everything lives under ./var/ of the checkout (paths are absolute, computed
# from this script's location) and listens on loopback only:
#
#   PostgreSQL 15   127.0.0.1:$PGPORT (55432) + unix socket var/run/pg/, data var/pg/data
#   Redis 7         127.0.0.1:$REDIS_PORT (56379), no persistence, config var/redis/
#   access.fcgi     spawn-fcgi -n on var/run/access.sock, log var/log/access.log
#   fcgi_hello      spawn-fcgi -F 2 on var/run/hello.sock (benchmark ceiling), if built
#   nginx           127.0.0.1:$PORT (8080), conf/nginx/nginx.conf, prefix var/
#   lighttpd        127.0.0.1:$LIGHTTPD_PORT (8081), only on lighttpd-start (tests)
#   SMTP sink       127.0.0.1:<a free port>, tools/smtp_sink.py, messages in var/mail/
#                   (the service's smtp_url points at it)
#
# Ports come from the environment. `start` records the ones it used in
# var/stack.env and later commands reuse them unless the environment says
# otherwise; `stop` forgets them. Change ports only while the stack is down.
#
# Every command is idempotent: start twice is harmless, stop when nothing
# runs is harmless. Only processes recorded in pid files under var/run/ (and
# PostgreSQL's own postmaster.pid) are ever signalled, and only after their
# command line has been checked, so a recycled pid is left alone.
#
# The service gets this script's environment, so configuration overrides work
# per run, e.g.  ACCESS_L1_MAX_ENTRIES=0 tools/stack.sh app-restart
# (SPEC §3). For that reason this script never exports an ACCESS_* variable
# of its own.
#
# Run as root (PostgreSQL then runs as the user `postgres` and nginx workers as
# `nobody`) or as an ordinary user (everything runs as that user).
#
# Overridable for development: STACK_ACCESS_BIN (default build/access.fcgi),
# STACK_HELLO_BIN (default build/fcgi_hello). STACK_KEEPALIVE=off makes nginx
# open a FastCGI connection per request to the service (default: kept; the
# setting takes effect at start and nginx-reload). STACK_TIMING_LOG=FILE makes
# nginx log each request's $request_time there (benchmarks; same moments).
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# The service and its subcommands run from the checkout (migrate reads sql/).
cd "$ROOT"
VAR=$ROOT/var
RUN=$VAR/run
LOG=$VAR/log
STACK_ENV=$VAR/stack.env

ACCESS_BIN=${STACK_ACCESS_BIN:-$ROOT/build/access.fcgi}
HELLO_BIN=${STACK_HELLO_BIN:-$ROOT/build/fcgi_hello}
ACCESS_CONF=$VAR/access.conf
NGINX_CONF=$ROOT/conf/nginx/nginx.conf
LIGHTTPD_CONF=$ROOT/conf/lighttpd/lighttpd.conf

# Ports: environment, else what `start` recorded, else the defaults.
load_ports() {
	local e_port=${PORT:-} e_pg=${PGPORT:-} e_redis=${REDIS_PORT:-} e_lt=${LIGHTTPD_PORT:-}
	local S_PORT='' S_PGPORT='' S_REDIS_PORT='' S_LIGHTTPD_PORT=''
	if [[ -r $STACK_ENV ]]; then
		# shellcheck disable=SC1090
		source "$STACK_ENV"
	fi
	PORT=${e_port:-${S_PORT:-8080}}
	PGPORT=${e_pg:-${S_PGPORT:-55432}}
	REDIS_PORT=${e_redis:-${S_REDIS_PORT:-56379}}
	LIGHTTPD_PORT=${e_lt:-${S_LIGHTTPD_PORT:-8081}}
	local p
	for p in PORT PGPORT REDIS_PORT LIGHTTPD_PORT; do
		[[ ${!p} =~ ^[0-9]+$ ]] && ((${!p} > 0 && ${!p} < 65536)) ||
			die "$p=${!p} is not a port number"
	done
}

save_ports() {
	cat >"$STACK_ENV" <<EOF
# written by tools/stack.sh start; removed by tools/stack.sh stop
S_PORT=$PORT
S_PGPORT=$PGPORT
S_REDIS_PORT=$REDIS_PORT
S_LIGHTTPD_PORT=$LIGHTTPD_PORT
EOF
}

# ---------------------------------------------------------------- helpers

say() { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: %s\n' "$*" >&2; }
die() {
	printf 'stack: error: %s\n' "$*" >&2
	exit 1
}

IS_ROOT=0
((EUID == 0)) && IS_ROOT=1

# alive PID: the process exists and is not a zombie. (Orphaned daemons are
# reparented to pid 1, which in some containers never reaps them, so a dead
# daemon can linger as a zombie: kill -0 alone would call it alive.)
alive() {
	local stat
	{ read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# cmdline_has PID STRING: the process' command line contains STRING.
cmdline_has() {
	local cmd
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"$2"* ]]
}

# pids_from PIDFILE STRING: the live pids listed in PIDFILE (one a line) whose
# command line contains STRING. Prints nothing when none.
pids_from() {
	local f=$1 want=$2 pid
	[[ -r $f ]] || return 0
	# (|| [[ -n $pid ]]: spawn-fcgi -P ends the last line without a newline)
	while read -r pid _ || [[ -n $pid ]]; do
		[[ $pid =~ ^[0-9]+$ ]] || continue
		alive "$pid" && cmdline_has "$pid" "$want" && echo "$pid"
	done <"$f"
	return 0
}

# children_of PID: direct children (no /proc/PID/task/*/children here: scan).
children_of() {
	local parent=$1 d stat rest ppid
	for d in /proc/[0-9]*; do
		{ read -r stat <"$d/stat"; } 2>/dev/null || continue
		rest=${stat##*) }
		read -r _ ppid _ <<<"$rest"
		[[ $ppid == "$parent" ]] && echo "${d#/proc/}"
	done
	return 0
}

# terminate NAME TIMEOUT PID...: SIGTERM, wait up to TIMEOUT s, then SIGKILL.
terminate() {
	local name=$1 timeout=$2 pid left i
	shift 2
	(($#)) || return 0
	kill -TERM "$@" 2>/dev/null || true
	for ((i = 0; i < timeout * 10; i++)); do
		left=()
		for pid in "$@"; do alive "$pid" && left+=("$pid"); done
		((${#left[@]})) || return 0
		sleep 0.1
	done
	warn "$name did not stop within ${timeout}s: SIGKILL ${left[*]}"
	kill -KILL "${left[@]}" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		left=()
		for pid in "$@"; do alive "$pid" && left+=("$pid"); done
		((${#left[@]})) || return 0
		sleep 0.1
	done
	warn "$name: still there after SIGKILL: ${left[*]}"
}

# start_bg PIDFILE LOGFILE CMD...: run CMD in its own session, detached from
# the terminal, stdin /dev/null, stdout+stderr appended to LOGFILE; the pid of
# CMD (the wrapper execs it) goes to PIDFILE.
start_bg() {
	local pidfile=$1 logfile=$2 i
	shift 2
	rm -f "$pidfile"
	# shellcheck disable=SC2016
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
	for ((i = 0; i < 50; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.1
	done
	die "could not start $1 (see $logfile)"
}

# http_ok URL: 2xx within 2 s.
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" >/dev/null 2>&1; }

# wait_http URL TIMEOUT
wait_http() {
	local url=$1 timeout=$2 i
	for ((i = 0; i < timeout * 4; i++)); do
		http_ok "$url" && return 0
		sleep 0.25
	done
	return 1
}

# port_busy PORT: something listens on 127.0.0.1:PORT (bash's /dev/tcp).
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

dirs() {
	mkdir -p "$VAR" "$RUN" "$LOG" "$VAR/redis" "$VAR/nginx/tmp" "$VAR/lighttpd/tmp" "$VAR/lighttpd/htdocs"
	mkdir -p -m 0700 "$VAR/keys"
}

# ---------------------------------------------------------------- PostgreSQL

PGBIN=/usr/lib/postgresql/15/bin
if [[ ! -x $PGBIN/pg_ctl ]]; then
	# 15 is what Debian 12 ships; take a newer one if that is what is there.
	for d in /usr/lib/postgresql/*/bin; do [[ -x $d/pg_ctl ]] && PGBIN=$d; done
fi

# The cluster lives in var/pg/data with its socket in var/run/pg. When run as
# root, the server runs as `postgres`, which must be able to reach those
# directories; if the checkout sits below a directory `postgres` cannot enter
# (e.g. a 0700 home or mktemp directory), the cluster moves to /var/tmp.
pg_paths() {
	PGBASE=$VAR/pg
	PGDATA=$PGBASE/data
	PGSOCK=$RUN/pg
	PGLOG=$LOG/postgresql.log
	if ((IS_ROOT)) && ! runuser -u postgres -- test -x "$VAR"; then
		PGBASE=/var/tmp/access-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)
		PGDATA=$PGBASE/data
		PGSOCK=$PGBASE/run
		PGLOG=$PGBASE/postgresql.log
	fi
}

# as_pg CMD...: run as the cluster's owner, from / (it may not enter $PWD).
as_pg() {
	if ((IS_ROOT)); then
		(cd / && runuser -u postgres -- "$@")
	else
		"$@"
	fi
}

pg_own() {
	if ((IS_ROOT)); then chown postgres:postgres "$@"; fi
}

pg_running() {
	[[ -f $PGDATA/PG_VERSION ]] || return 1
	as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

pg_pid() {
	local pid=''
	[[ -r $PGDATA/postmaster.pid ]] && read -r pid <"$PGDATA/postmaster.pid"
	echo "$pid"
}

pg_init() {
	[[ -f $PGDATA/PG_VERSION ]] && return 0
	if ((IS_ROOT)) && ! id postgres >/dev/null 2>&1; then
		die "no user 'postgres' (is the postgresql package installed? run tools/deps.sh)"
	fi
	say "initdb $PGDATA"
	mkdir -p "$PGBASE" "$PGDATA" "$PGSOCK"
	pg_own "$PGBASE" "$PGDATA" "$PGSOCK"
	chmod 0700 "$PGDATA"
	touch "$PGLOG" && pg_own "$PGLOG"
	as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust \
		--encoding=UTF8 --locale=C.UTF-8 >>"$PGLOG" 2>&1 ||
		die "initdb failed; see $PGLOG"
	# Settings that do not depend on the port go into postgresql.conf once;
	# the port and paths into stack.conf, rewritten before every start.
	as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<'EOF'

# ---- added by tools/stack.sh (local stack only) ----
max_connections = 300                  # workers x threads x hosts, with room for tests
shared_preload_libraries = 'pg_stat_statements'
log_min_duration_statement = 250       # ms; slow statements into the server log
log_line_prefix = '%m [%p] %q%u@%d '
include_if_exists = 'stack.conf'       # port, listen address, socket dir
EOF
}

pg_write_stack_conf() {
	as_pg tee "$PGDATA/stack.conf" >/dev/null <<EOF
# written by tools/stack.sh before every start
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGSOCK'
EOF
}

psql_admin() { # psql_admin DB SQL
	PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PGPORT" -U postgres -d "$1" -tAc "$2"
}

pg_ensure_db() { # pg_ensure_db NAME: a database owned by access, made once
	if [[ -z $(psql_admin postgres "SELECT 1 FROM pg_database WHERE datname = '$1'") ]]; then
		say "create database $1"
		psql_admin postgres "CREATE DATABASE $1 OWNER access ENCODING 'UTF8' TEMPLATE template0"
	fi
}

pg_provision() {
	if [[ -z $(psql_admin postgres "SELECT 1 FROM pg_roles WHERE rolname = 'access'") ]]; then
		say "create role access"
		psql_admin postgres "CREATE ROLE access LOGIN"
	fi
	pg_ensure_db access
	# Needs a superuser, so it is done here rather than in sql/.
	psql_admin access "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
}

pg_start() {
	pg_paths
	pg_init
	if pg_running; then
		:
	else
		if port_busy "$PGPORT"; then
			die "127.0.0.1:$PGPORT is taken by another program (set PGPORT)"
		fi
		mkdir -p "$PGSOCK" && pg_own "$PGSOCK"
		touch "$PGLOG" && pg_own "$PGLOG"
		pg_write_stack_conf
		say "start PostgreSQL on 127.0.0.1:$PGPORT"
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 -s start </dev/null ||
			{
				tail -n 20 "$PGLOG" >&2 || true
				die "PostgreSQL did not start; see $PGLOG"
			}
	fi
	local i
	for ((i = 0; i < 120; i++)); do
		"$PGBIN/pg_isready" -q -h "$PGSOCK" -p "$PGPORT" && break
		sleep 0.25
	done
	"$PGBIN/pg_isready" -q -h "$PGSOCK" -p "$PGPORT" || die "PostgreSQL is not ready; see $PGLOG"
	pg_provision
}

pg_stop() {
	pg_paths
	if pg_running; then
		say "stop PostgreSQL"
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 -s stop </dev/null ||
			warn "pg_ctl stop failed"
	fi
}

# ---------------------------------------------------------------- Redis

REDIS_PID=$RUN/redis.pid

redis_pids() { pids_from "$REDIS_PID" redis-server; }

redis_start() {
	if [[ -n $(redis_pids) ]]; then return 0; fi
	port_busy "$REDIS_PORT" && die "127.0.0.1:$REDIS_PORT is taken by another program (set REDIS_PORT)"
	cat >"$VAR/redis/redis.conf" <<EOF
# written by tools/stack.sh: the local stack's Redis, a cache with no persistence
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
supervised no
pidfile $REDIS_PID
logfile $LOG/redis.log
loglevel notice
dir $VAR/redis
save ""
appendonly no
EOF
	say "start Redis on 127.0.0.1:$REDIS_PORT"
	rm -f "$REDIS_PID"
	redis-server "$VAR/redis/redis.conf" </dev/null >>"$LOG/redis.log" 2>&1 ||
		die "redis-server failed; see $LOG/redis.log"
	local i
	for ((i = 0; i < 100; i++)); do
		[[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && return 0
		sleep 0.1
	done
	die "Redis did not answer PING; see $LOG/redis.log"
}

redis_stop() {
	local pids
	pids=$(redis_pids)
	if [[ -n $pids ]]; then
		say "stop Redis"
		# shellcheck disable=SC2086
		terminate redis 10 $pids
	fi
	rm -f "$REDIS_PID"
}

# ---------------------------------------------------------------- SMTP sink

SMTP_PID=$RUN/smtp.pid
SMTP_PORT_FILE=$RUN/smtp.port

smtp_pids() { pids_from "$SMTP_PID" smtp_sink.py; }

# The sink picks a free loopback port itself and writes it to var/run/smtp.port.
smtp_start() {
	if [[ -n $(smtp_pids) && -s $SMTP_PORT_FILE ]]; then return 0; fi
	mkdir -p "$VAR/mail"
	rm -f "$SMTP_PORT_FILE"
	say "start the SMTP sink (messages in $VAR/mail/)"
	start_bg "$SMTP_PID" "$LOG/smtp.log" \
		/usr/bin/python3 "$ROOT/tools/smtp_sink.py" --dir "$VAR/mail" --port-file "$SMTP_PORT_FILE"
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -s $SMTP_PORT_FILE ]] && return 0
		sleep 0.1
	done
	die "the SMTP sink did not start; see $LOG/smtp.log"
}

smtp_stop() {
	local pids
	pids=$(smtp_pids)
	if [[ -n $pids ]]; then
		say "stop the SMTP sink"
		# shellcheck disable=SC2086
		terminate smtp-sink 5 $pids
	fi
	rm -f "$SMTP_PID" "$SMTP_PORT_FILE"
}

# ---------------------------------------------------------------- the service

APP_PID=$RUN/access.pid
APP_SOCK=$RUN/access.sock
HELLO_PID=$RUN/hello.pid
HELLO_SOCK=$RUN/hello.sock

write_access_conf() {
	pg_paths
	local smtp_port=''
	[[ -s $SMTP_PORT_FILE ]] && read -r smtp_port <"$SMTP_PORT_FILE"
	cat >"$ACCESS_CONF" <<EOF
# Generated by tools/stack.sh start for the local stack; rewritten on every
# start. For a one-off change use the environment instead, e.g.
#   ACCESS_LOG_LEVEL=debug tools/stack.sh app-restart
# The documented defaults are in conf/access.conf.
database_url = postgresql:///access?host=$PGSOCK&port=$PGPORT&user=access
redis_url = redis://127.0.0.1:$REDIS_PORT
jwt_keys = $VAR/keys/jwks.json
secrets_key = $VAR/keys/secrets.key
audit_spool = $VAR/audit.spool
workers = 2
threads = 16
log_level = info
# What conf/nginx/ does (nginx keeps its FastCGI connections); logged only.
fastcgi_keep_conn = on
# Tests and benchmarks all come from 127.0.0.1: the per-address defaults
# (5 signups a day, 100 logins an hour) would stop them almost at once. A test
# of the limiter lowers one for its run, e.g.
#   ACCESS_RATELIMIT_LOGIN=3/60 tools/stack.sh app-restart
ratelimit_signup = 1000000/60
ratelimit_login = 1000000/60
ratelimit_anonymous = 1000000/60
ratelimit_authenticated = 1000000/60
ratelimit_token = 1000000/60
public_url = http://127.0.0.1:$PORT
ratelimit_recover = 1000000/60
# Messages go to the local SMTP sink (tools/smtp_sink.py): each one is a file
# under var/mail/, where the verification and reset links are.
mail_transport = smtp
smtp_url = smtp://127.0.0.1:${smtp_port:-25}
EOF
}

# The unit tests' PostgreSQL groups get a database of their own, migrated
# like the service's: the running service's janitor deletes old rows in
# `access` (the tests write 20-year-old audit events on purpose) and would
# race them. Prints its URL.
unit_db() {
	pg_paths
	need_app_bin
	pg_ensure_db access_unit >&2 # stdout is the URL alone
	local url="postgresql:///access_unit?host=$PGSOCK&port=$PGPORT&user=access" out
	if ! out=$(ACCESS_DATABASE_URL=$url "$ACCESS_BIN" migrate -c "$ACCESS_CONF" 2>&1); then
		printf '%s\n' "$out" >&2
		die "migrate of access_unit failed"
	fi
	printf '%s\n' "$out" >>"$LOG/migrate.log"
	printf '%s\n' "$url"
}

need_app_bin() {
	[[ -x $ACCESS_BIN ]] || die "$ACCESS_BIN is not built (run: make all)"
}

app_prepare() {
	need_app_bin
	local out
	if ! out=$("$ACCESS_BIN" migrate -c "$ACCESS_CONF" 2>&1); then
		printf '%s\n' "$out" >&2
		die "migrate failed"
	fi
	printf '%s\n' "$out" >>"$LOG/migrate.log"
	if [[ ! -e $VAR/keys/jwks.json ]]; then
		say "keygen $VAR/keys/jwks.json"
		"$ACCESS_BIN" keygen "$VAR/keys/jwks.json" || die "keygen failed"
	fi
	if [[ ! -e $VAR/keys/secrets.key ]]; then
		say "keygen --secrets $VAR/keys/secrets.key"
		"$ACCESS_BIN" keygen --secrets "$VAR/keys/secrets.key" || die "keygen --secrets failed"
	fi
}

app_pids() { pids_from "$APP_PID" "-c $ACCESS_CONF"; }

app_start() {
	if [[ -n $(app_pids) ]]; then return 0; fi
	need_app_bin
	say "start access.fcgi on $APP_SOCK"
	start_bg "$APP_PID" "$LOG/access.log" \
		spawn-fcgi -s "$APP_SOCK" -M 0666 -b 1024 -n -- "$ACCESS_BIN" -c "$ACCESS_CONF"
}

app_stop() {
	local pids
	pids=$(app_pids)
	if [[ -n $pids ]]; then
		say "stop access.fcgi (pid $pids)"
		# The supervisor drains its workers on SIGTERM (SPEC §5: 5 s), flushes
		# the audit queue (2 s) and kills what is left at 9 s.
		# shellcheck disable=SC2086
		terminate access.fcgi 12 $pids
	fi
	rm -f "$APP_PID" "$APP_SOCK"
}

hello_pids() { pids_from "$HELLO_PID" "$(basename "$HELLO_BIN")"; }

hello_start() {
	[[ -x $HELLO_BIN ]] || return 0
	if [[ -n $(hello_pids) ]]; then return 0; fi
	say "start fcgi_hello x2 on $HELLO_SOCK"
	rm -f "$HELLO_PID"
	# A thread per kept connection in libfcgi's threaded model: more threads
	# than nginx keeps (2 workers x keepalive 32 + ab's concurrency), or the
	# keep-alive ceiling stalls (SPEC §8).
	HELLO_THREADS=${HELLO_THREADS:-256} spawn-fcgi -s "$HELLO_SOCK" -M 0666 -F 2 -P "$HELLO_PID" -- "$HELLO_BIN" \
		</dev/null >>"$LOG/hello.log" 2>&1 || die "spawn-fcgi fcgi_hello failed; see $LOG/hello.log"
}

hello_stop() {
	local pids
	pids=$(hello_pids)
	if [[ -n $pids ]]; then
		say "stop fcgi_hello"
		# shellcheck disable=SC2086
		terminate fcgi_hello 3 $pids
	fi
	rm -f "$HELLO_PID" "$HELLO_SOCK"
}

# ---------------------------------------------------------------- nginx

NGINX_PID=$RUN/nginx.pid
NGINX=(nginx -p "$VAR/" -e "$LOG/nginx-error.log" -c "$NGINX_CONF")

# conf/nginx/nginx.conf includes these three generated files (see its header).
nginx_write_includes() {
	local user='# master not run as root: the workers keep its user'
	if ((IS_ROOT)); then
		# Workers must reach the sockets in var/run; as `nobody` if they can.
		if runuser -u nobody -- test -x "$RUN"; then
			user='user nobody nogroup;'
		else
			user='user root root;  # nobody cannot enter the checkout'
		fi
	fi
	NGINX_CHANGED=0
	write_if_changed "$VAR/nginx/main.conf" <<EOF
# written by tools/stack.sh (main context)
$user
EOF
	# Kept FastCGI connections to the service unless STACK_KEEPALIVE=off
	# (benchmarks measure both); the trivial responder both ways.
	local keep='keepalive 32; keepalive_requests 100000; keepalive_timeout 60s;'
	[[ ${STACK_KEEPALIVE:-on} == off ]] && keep='# STACK_KEEPALIVE=off: a connection per request'
	# STACK_TIMING_LOG=FILE: nginx logs each request's times there (the
	# benchmarks' server-side view of a latency row); off otherwise.
	local timing='# STACK_TIMING_LOG unset: no request log'
	[[ -n ${STACK_TIMING_LOG:-} ]] && timing="access_log $STACK_TIMING_LOG bench_timing buffer=64k flush=1s;"
	write_if_changed "$VAR/nginx/upstream.conf" <<EOF
# written by tools/stack.sh (http context)
log_format bench_timing '\$msec \$request_time \$upstream_response_time \$status \$uri';
upstream access_backend {
    server unix:$APP_SOCK;
    $keep
}
upstream fcgi_hello {
    server unix:$HELLO_SOCK;
}
upstream fcgi_hello_ka {
    server unix:$HELLO_SOCK;
    keepalive 32; keepalive_requests 100000; keepalive_timeout 60s;
}
EOF
	write_if_changed "$VAR/nginx/listen.conf" <<EOF
# written by tools/stack.sh (server context)
listen 127.0.0.1:$PORT;
$timing
EOF
}

# write_if_changed FILE <CONTENT: replace FILE only if CONTENT differs, and
# then set NGINX_CHANGED=1.
write_if_changed() {
	local new
	new=$(cat)
	if [[ ! -f $1 || $(<"$1") != "$new" ]]; then
		printf '%s\n' "$new" >"$1"
		NGINX_CHANGED=1
	fi
}

nginx_pids() { pids_from "$NGINX_PID" "$NGINX_CONF"; }

nginx_test() {
	local out
	out=$("${NGINX[@]}" -t 2>&1) || {
		printf '%s\n' "$out" >&2
		die "nginx configuration test failed"
	}
}

nginx_start() {
	nginx_write_includes
	nginx_test
	if [[ -n $(nginx_pids) ]]; then
		# Running: reload only if start changed what it listens on or passes to.
		if ((NGINX_CHANGED)); then
			say "reload nginx"
			"${NGINX[@]}" -s reload </dev/null >>"$LOG/nginx-error.log" 2>&1
		fi
		return 0
	fi
	port_busy "$PORT" && die "127.0.0.1:$PORT is taken by another program (set PORT)"
	say "start nginx on 127.0.0.1:$PORT"
	"${NGINX[@]}" </dev/null >>"$LOG/nginx-error.log" 2>&1 ||
		{
			tail -n 20 "$LOG/nginx-error.log" >&2 || true
			die "nginx did not start"
		}
}

nginx_reload() {
	if [[ -z $(nginx_pids) ]]; then
		nginx_start
		return
	fi
	nginx_write_includes
	nginx_test
	say "reload nginx"
	local old now i
	old=$(nginx_workers)
	"${NGINX[@]}" -s reload </dev/null >>"$LOG/nginx-error.log" 2>&1
	# `nginx -s reload` returns at once. Wait until the new workers serve and
	# the old ones are gone (they close their idle kept client connections on
	# the way out): until then a request may still meet the old settings, or
	# a reused client connection may be reset under it.
	for ((i = 0; i < 100; i++)); do
		now=$(nginx_workers)
		if [[ -n $now ]] && [[ -z $(comm -12 <(printf '%s\n' "$old") <(printf '%s\n' "$now")) ]]; then
			return 0
		fi
		sleep 0.1
	done
	say "warning: nginx workers of before the reload still running after 10 s"
}

# The master's children (workers), one pid a line, sorted.
nginx_workers() {
	local m
	m=$(cat "$NGINX_PID" 2>/dev/null) || return 0
	pgrep -P "$m" | sort || true
}

nginx_stop() {
	local pids
	pids=$(nginx_pids)
	if [[ -n $pids ]]; then
		say "stop nginx"
		# shellcheck disable=SC2086
		terminate nginx 10 $pids
	fi
	rm -f "$NGINX_PID"
}

# ---------------------------------------------------------------- lighttpd

LIGHTTPD_PID=$RUN/lighttpd.pid
LIGHTTPD_APP_PID=$RUN/lighttpd-access.pid

lighttpd_env() {
	env STACK_ROOT="$ROOT" LIGHTTPD_PORT="$LIGHTTPD_PORT" "$@"
}

lighttpd_pids() { pids_from "$LIGHTTPD_PID" "$LIGHTTPD_CONF"; }

# lighttpd_children PID: the access.fcgi supervisor(s) lighttpd spawned.
lighttpd_children() {
	local c
	for c in $(children_of "$1"); do
		cmdline_has "$c" "-c $ACCESS_CONF" && echo "$c"
	done
	return 0
}

lighttpd_start() {
	need_app_bin
	[[ -r $ACCESS_CONF ]] || die "no $ACCESS_CONF: run tools/stack.sh start first"
	dirs
	if [[ -z $(lighttpd_pids) ]]; then
		port_busy "$LIGHTTPD_PORT" &&
			die "127.0.0.1:$LIGHTTPD_PORT is taken by another program (set LIGHTTPD_PORT)"
		local out
		out=$(lighttpd_env lighttpd -tt -f "$LIGHTTPD_CONF" 2>&1) || {
			printf '%s\n' "$out" >&2
			die "lighttpd configuration test failed"
		}
		say "start lighttpd on 127.0.0.1:$LIGHTTPD_PORT"
		start_bg "$LIGHTTPD_PID" "$LOG/lighttpd.log" \
			env STACK_ROOT="$ROOT" LIGHTTPD_PORT="$LIGHTTPD_PORT" lighttpd -D -f "$LIGHTTPD_CONF"
	fi
	# lighttpd spawns access.fcgi itself (bin-path); wait until it answers.
	if ! wait_http "http://127.0.0.1:$LIGHTTPD_PORT/health" 30; then
		tail -n 30 "$LOG/lighttpd.log" >&2 || true
		die "lighttpd: /health did not answer 200 within 30 s"
	fi
	# Remember the supervisor lighttpd spawned, so stop can make sure it went.
	local lpid
	lpid=$(lighttpd_pids)
	if [[ -n $lpid ]]; then
		lighttpd_children "$lpid" >"$LIGHTTPD_APP_PID"
	fi
	say "lighttpd is up: http://127.0.0.1:$LIGHTTPD_PORT/"
}

lighttpd_stop() {
	local pids apps
	pids=$(lighttpd_pids)
	apps=$(pids_from "$LIGHTTPD_APP_PID" "-c $ACCESS_CONF")
	if [[ -n $pids ]]; then
		# Any supervisor it spawned since start, too.
		apps="$apps $(lighttpd_children "$pids")"
		say "stop lighttpd"
		# lighttpd sends its backends SIGTERM when it exits.
		# shellcheck disable=SC2086
		terminate lighttpd 10 $pids
	fi
	local live=() p
	for p in $apps; do alive "$p" && live+=("$p"); done
	if ((${#live[@]})); then
		terminate "access.fcgi (lighttpd)" 10 "${live[@]}"
	fi
	rm -f "$LIGHTTPD_PID" "$LIGHTTPD_APP_PID" "$RUN"/lighttpd-access.sock*
}

# ---------------------------------------------------------------- commands

# wait_health: until /health answers 200 through nginx (30 s), giving up at
# once if the service exits.
wait_health() {
	local i why="did not answer 200 within 30 s"
	for ((i = 0; i < 120; i++)); do
		http_ok "http://127.0.0.1:$PORT/health" && return 0
		if [[ -z $(app_pids) ]]; then
			why="failed: access.fcgi is not running"
			break
		fi
		sleep 0.25
	done
	warn "http://127.0.0.1:$PORT/health $why; last lines of $LOG/access.log:"
	tail -n 30 "$LOG/access.log" >&2 || true
	exit 1
}

cmd_start() {
	dirs
	save_ports
	pg_start
	redis_start
	smtp_start
	write_access_conf
	nginx_start
	if [[ ! -x $ACCESS_BIN ]]; then
		die "$ACCESS_BIN is not built (run: make all); PostgreSQL, Redis and nginx are up"
	fi
	app_prepare
	app_start
	hello_start
	wait_health
	echo "access is up: http://127.0.0.1:$PORT/"
}

cmd_stop() {
	pg_paths
	nginx_stop
	lighttpd_stop
	app_stop
	hello_stop
	smtp_stop
	redis_stop
	pg_stop
	rm -f "$STACK_ENV"
	say "stopped"
}

show() { # show NAME PIDS DETAIL
	if [[ -n $2 ]]; then
		printf '%-12s running  pid %-16s %s\n' "$1" "$(echo $2)" "$3"
	else
		printf '%-12s stopped\n' "$1"
	fi
}

cmd_status() {
	pg_paths
	local rc=0 p
	p=''
	pg_running && p=$(pg_pid)
	show postgresql "$p" "127.0.0.1:$PGPORT $PGDATA"
	[[ -n $p ]] || rc=3
	p=$(redis_pids)
	show redis "$p" "127.0.0.1:$REDIS_PORT"
	[[ -n $p ]] || rc=3
	p=$(app_pids)
	local w=''
	[[ -n $p ]] && w="workers: $(children_of "$p" | tr '\n' ' ')"
	show access.fcgi "$p" "$APP_SOCK $w"
	[[ -n $p ]] || rc=3
	show fcgi_hello "$(hello_pids)" "$HELLO_SOCK"
	p=$(nginx_pids)
	show nginx "$p" "http://127.0.0.1:$PORT/"
	[[ -n $p ]] || rc=3
	show lighttpd "$(lighttpd_pids)" "http://127.0.0.1:$LIGHTTPD_PORT/ (tests only)"
	if http_ok "http://127.0.0.1:$PORT/health"; then
		echo "health       ok       http://127.0.0.1:$PORT/health"
	else
		echo "health       failing  http://127.0.0.1:$PORT/health"
		rc=3
	fi
	return $rc
}

usage() {
	sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

(($# == 1)) || usage
load_ports

case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
pg-start) dirs && pg_start ;;
pg-stop) pg_stop ;;
redis-start) dirs && redis_start ;;
redis-stop) redis_stop ;;
smtp-start) dirs && smtp_start ;;
smtp-stop) smtp_stop ;;
app-start)
	dirs
	app_start
	wait_health
	;;
app-stop) app_stop ;;
app-restart)
	app_stop
	app_prepare
	app_start
	wait_health
	say "access is up: http://127.0.0.1:$PORT/"
	;;
nginx-reload) dirs && nginx_reload ;;
unit-db) dirs && unit_db ;;
lighttpd-start) lighttpd_start ;;
lighttpd-stop) lighttpd_stop ;;
-h | --help | help) usage ;;
*) usage ;;
esac
