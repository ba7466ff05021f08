#!/usr/bin/env bash
# Benchmark of the spool (`webhook_guard ... { spool { to ... } }`), two parts:
#
#   ingest   verify + one ledger transaction (record + id accepted, group-
#            committed and fsynced) + `200 spooled`: wrk with pre-signed,
#            unique 1 KiB Ivy events (bench/gen, bench/events.lua), ROUNDS
#            rounds of DURATION, each on a fresh Caddy and an empty ledger. The
#            scope's deliveries are paused through the admin API before the
#            run (POST /webhook_guard/spool/pause?scope=ivy), so the worker
#            delivers nothing and does not compete with ingest. After each
#            round: no error, every event counted as spooled by the metrics,
#            and the ledger lists (admin API) as many pending events as wrk
#            counted (plus at most one per connection, in flight when wrk
#            stopped).
#   restart  PENDING events spooled (bench/spoolbench fill) while the backend
#            holds every attempt (spoolbench up -hold; the spool's timeout 1h:
#            its 4 attempts in flight hang, nothing else is attempted), Caddy
#            stopped, the hold backend killed, then a fresh backend started
#            and Caddy started again on the same data, pointing at it. It
#            reports the time from `caddy run` to the admin endpoint answering
#            and to the backend's first delivery (both from the start of
#            `caddy run`), and the drain rate: deliveries/s from the first to
#            the last. It checks every event was delivered (distinct
#            Webhook-Guard-Event-Id = PENDING) and the spool lists nothing.
#            RESTART_ROUNDS rounds.
#
# With STORE=redis or STORE=valkey the spool is in Redis (`store redis`):
# a fresh server each round, on its own folder, with appendonly yes and
# APPENDFSYNC (redis: redis-server, Debian 12's 7.0 without WAITAOF, so
# appendfsync always; valkey: valkey-server 8, which the guard waits on with
# WAITAOF, appendfsync everysec). Redis' CPU counts as the guard's. The
# restart part then drains with INSTANCES Caddy instances sharing the spool
# (the filling one is stopped, then all are started in front of the fresh
# backend): the first delivery is timed from the first instance's start.
#
# Usage: bench/spool.sh            (from anywhere; run it on an idle machine)
#
# Settings, from the environment (defaults in brackets):
#   STORE [file]: file (the ledger), redis or valkey
#   APPENDFSYNC [always for redis, everysec for valkey]
#   INSTANCES [1 for file, 2 for redis and valkey]: Caddy instances draining
#   REDIS_PORT [28579]  HTTP_PORT2 [28581]  ADMIN_PORT2 [28520]: Redis', and
#       the second instance's ports
#   PARTS ["ingest restart"]
#   ROUNDS [5]  DURATION [10s]  WARMUP [3s]  THREADS [2]  CONNECTIONS [32]
#   SIZE [1024]  EVENTS [100000]: events signed for the ingest rounds (each
#       round uses them afresh on an empty ledger; they must outnumber a round's requests)
#   PENDING [100000]  RESTART_ROUNDS [3]  FILL_CONNECTIONS [32]
#   CONCURRENCY []: the spool's concurrency for the restart (default: the module's, 4)
#   STOP [int]: how Caddy is stopped after the fill: int (SIGINT, graceful) or
#       kill (SIGKILL, a crash)
#   DRAIN_TIMEOUT [900]: seconds allowed for the drain
#   HTTP_PORT [28580]  ADMIN_PORT [28519]
#   PROFILE [0]: 1 takes 5 s CPU profiles of Caddy (ingest round 1, and the
#       drain of restart round 1) into the raw data folder
#   CADDY [built from ./cmd/caddy into bench/.bin/caddy]
#
# Raw data under bench/results/spool-<time>/; a summary on stdout and in
# summary.txt there. It needs go, curl, awk and wrk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

PARTS=${PARTS:-"ingest restart"}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
SIZE=${SIZE:-1024}
EVENTS=${EVENTS:-100000}
PENDING=${PENDING:-100000}
RESTART_ROUNDS=${RESTART_ROUNDS:-3}
FILL_CONNECTIONS=${FILL_CONNECTIONS:-32}
CONCURRENCY=${CONCURRENCY:-}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-900}
STOP=${STOP:-int}
HTTP_PORT=${HTTP_PORT:-28580}
ADMIN_PORT=${ADMIN_PORT:-28519}
PROFILE=${PROFILE:-0}
CADDY=${CADDY:-}
STORE=${STORE:-file}
APPENDFSYNC=${APPENDFSYNC:-}
case $STORE in
file) DEFAULT_INSTANCES=1 ;;
redis) REDIS_BIN=redis-server REDIS_CLI=redis-cli APPENDFSYNC=${APPENDFSYNC:-always} DEFAULT_INSTANCES=2 ;;
valkey) REDIS_BIN=valkey-server REDIS_CLI=valkey-cli APPENDFSYNC=${APPENDFSYNC:-everysec} DEFAULT_INSTANCES=2 ;;
*) echo "spool bench: STORE=$STORE: want file, redis or valkey" >&2; exit 1 ;;
esac
INSTANCES=${INSTANCES:-$DEFAULT_INSTANCES}
REDIS_PORT=${REDIS_PORT:-28579}
HTTP_PORT2=${HTTP_PORT2:-28581}
ADMIN_PORT2=${ADMIN_PORT2:-28520}
COMMAND="$(for v in STORE APPENDFSYNC INSTANCES PARTS ROUNDS DURATION THREADS CONNECTIONS SIZE PENDING RESTART_ROUNDS CONCURRENCY STOP; do printf '%s=%q ' "$v" "${!v}"; done)bench/spool.sh"

die() { echo "spool bench: $*" >&2; exit 1; }
for tool in go curl awk wrk ${REDIS_BIN:-} ${REDIS_CLI:-}; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
[ "$STORE" != file ] || [ "$INSTANCES" = 1 ] || die "INSTANCES=$INSTANCES: the file ledger is one instance's"
[ "$INSTANCES" -le 2 ] || die "INSTANCES=$INSTANCES: at most 2"
for p in "$HTTP_PORT" "$ADMIN_PORT" "$HTTP_PORT2" "$ADMIN_PORT2" ${REDIS_BIN:+"$REDIS_PORT"}; do
	port_busy "$p" && die "port $p is in use; set HTTP_PORT / ADMIN_PORT / HTTP_PORT2 / ADMIN_PORT2 / REDIS_PORT"
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=bench/results/spool-$STAMP
mkdir -p "$WORK" bench/.bin
SUMMARY=$WORK/summary.txt
say() { echo "$*" | tee -a "$SUMMARY"; }

echo "spool bench: building"
if [ -z "$CADDY" ]; then
	go build -o bench/.bin/caddy ./cmd/caddy
	CADDY=bench/.bin/caddy
fi
go build -o bench/.bin/gen ./bench/gen
go build -o bench/.bin/spoolbench ./bench/spoolbench

BENCH_IVY_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BENCH_IVY_SECRET

CADDY_PID=
CADDY2_PID=
REDIS_PID=
UP_PIDS=()
cleanup() {
	local status=$?
	set +e
	for p in "$CADDY_PID" "$CADDY2_PID" "$REDIS_PID"; do
		[ -z "$p" ] || { kill "$p" && wait "$p"; } 2>/dev/null
	done
	for p in "${UP_PIDS[@]}"; do { kill "$p" && wait "$p"; } 2>/dev/null; done
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_up NAME [-hold]: a spoolbench backend; sets UP (its address) and UP_PID.
start_up() {
	local name=$1
	shift
	bench/.bin/spoolbench up "$@" >"$WORK/$name.addr" 2>"$WORK/$name.log" &
	UP_PID=$!
	UP_PIDS+=("$UP_PID")
	for _ in $(seq 100); do [ -s "$WORK/$name.addr" ] && break; sleep 0.05; done
	UP=$(head -1 "$WORK/$name.addr")
	[ -n "$UP" ] || die "backend $name did not start: $(cat "$WORK/$name.log")"
}
stop_up() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
up_stats() { curl -fsS "http://$1/__stats"; }
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# start_redis DIR: a fresh Redis (STORE redis or valkey) on REDIS_PORT with
# its files in DIR; returns once it answers PING. Sets REDIS_PID.
start_redis() {
	local dir=$1
	rm -rf "$dir"
	mkdir -p "$dir"
	"$REDIS_BIN" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" --save "" \
		--appendonly yes --appendfsync "$APPENDFSYNC" --daemonize no >"$dir/server.log" 2>&1 &
	REDIS_PID=$!
	for _ in $(seq 200); do
		"$REDIS_CLI" -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
		kill -0 "$REDIS_PID" 2>/dev/null || die "$REDIS_BIN exited: $(tail -5 "$dir/server.log")"
		sleep 0.05
	done
	die "$REDIS_BIN did not answer PING"
}
stop_redis() {
	[ -n "$REDIS_PID" ] || return 0
	kill "$REDIS_PID" 2>/dev/null || true
	wait "$REDIS_PID" 2>/dev/null || true
	REDIS_PID=
}
# store_line: the store of the benchmarked route.
store_line() { [ "$STORE" = file ] || echo "store redis redis://127.0.0.1:$REDIS_PORT/0"; }

# caddyfile TO [TIMEOUT]: one ivy route with a spool to TO. Caddy logs only
# errors, no access log.
caddyfile() {
	local to=$1 timeout=${2:-}
	global_options
	cat <<-EOF
	:$HTTP_PORT {
		webhook_guard ivy {
			secret {env.BENCH_IVY_SECRET}
			allow_ips 127.0.0.1
			$(store_line)
			spool {
				to http://$to
				name bench
				${timeout:+timeout $timeout}
				${CONCURRENCY:+concurrency $CONCURRENCY}
			}
		}
	}
	EOF
}

# start_caddy FILE LOG DATA: Caddy on the data directory DATA; returns once
# the admin endpoint answers and the HTTP port accepts. Sets CADDY_START_NS
# (just before exec) and CADDY_ADMIN_NS (the admin endpoint's first answer).
start_caddy() {
	local file=$1 log=$2 data=$3
	CADDY_START_NS=$(date +%s%N)
	XDG_DATA_HOME=$data "$CADDY" run --config "$file" --adapter caddyfile >"$log" 2>&1 &
	CADDY_PID=$!
	CADDY_ADMIN_NS=
	for _ in $(seq 2000); do
		if [ -z "$CADDY_ADMIN_NS" ] && curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/config/" 2>/dev/null; then
			CADDY_ADMIN_NS=$(date +%s%N)
		fi
		if [ -n "$CADDY_ADMIN_NS" ] && port_busy "$HTTP_PORT"; then
			return 0
		fi
		kill -0 "$CADDY_PID" 2>/dev/null || die "Caddy exited: $(tail -5 "$log")"
		sleep 0.01
	done
	die "Caddy did not become ready: $(tail -5 "$log")"
}
stop_caddy() {
	kill -INT "$CADDY_PID" 2>/dev/null || true
	wait "$CADDY_PID" 2>/dev/null || true
	CADDY_PID=
}
# start_caddy2 FILE LOG DATA: the second instance (HTTP_PORT2, ADMIN_PORT2),
# started like the first; sets CADDY2_PID.
start_caddy2() {
	local file=$1 log=$2 data=$3
	XDG_DATA_HOME=$data "$CADDY" run --config "$file" --adapter caddyfile >"$log" 2>&1 &
	CADDY2_PID=$!
	for _ in $(seq 2000); do
		curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT2/config/" 2>/dev/null && port_busy "$HTTP_PORT2" && return 0
		kill -0 "$CADDY2_PID" 2>/dev/null || die "Caddy (second instance) exited: $(tail -5 "$log")"
		sleep 0.01
	done
	die "Caddy (second instance) did not become ready: $(tail -5 "$log")"
}
stop_caddy2() {
	[ -n "$CADDY2_PID" ] || return 0
	kill -INT "$CADDY2_PID" 2>/dev/null || true
	wait "$CADDY2_PID" 2>/dev/null || true
	CADDY2_PID=
}
admin() { curl -fsS "$@"; }
# CPU accounting (lib.sh), as in run.sh.
HZ=$(getconf CLK_TCK)
# listed STATE: how many events the admin API lists in STATE, every page.
listed() {
	local after= n=0 page
	while :; do
		page=$(admin "http://127.0.0.1:$ADMIN_PORT/webhook_guard/spool?state=$1&limit=1000${after:+&after=$after}")
		n=$((n + $({ grep -o '"event_id"' || true; } <<<"$page" | wc -l)))
		after=$(sed -n 's/.*"next":"\([a-z0-9.]*\)".*/\1/p' <<<"$page")
		[ -n "$after" ] || break
	done
	echo "$n"
}
# med/min/max of a column of numbers on stdin: "median (min-max)".
spread() {
	sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
		m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%.6g (%.6g-%.6g, n=%d)", m, v[1], v[NR], NR }'
}

say "spool bench $STAMP: raw data in $WORK"
say "machine: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc); $(uname -sr); $(go version | awk '{ print $3 }')"
say "load average before: $(uptime | sed 's/.*load average: //')"
say "command: $COMMAND"
[ "$STORE" = file ] || say "store: $("$REDIS_BIN" --version | awk '{ print $1, $2, $3 }'), appendonly yes, appendfsync $APPENDFSYNC"
FAILED=0

if [[ " $PARTS " == *" ingest "* ]]; then
	ev=$WORK/events.txt
	echo "spool bench: signing $EVENTS unique ivy events of $SIZE bytes"
	bench/.bin/gen -provider ivy -size "$SIZE" -count "$EVENTS" -secret-env BENCH_IVY_SECRET -out "$ev"
	start_up ingest-backend
	INGEST_UP=$UP INGEST_UP_PID=$UP_PID
	caddyfile "$INGEST_UP" >"$WORK/Caddyfile.ingest"
	ROWS=$WORK/ingest.tsv
	printf 'round\trps\tp50_us\tp99_us\trequests\terrors\tspooled_metric\tlisted\tload1\tother_cpu_pct\n' >"$ROWS"
	for round in $(seq 0 "$ROUNDS"); do
		data=$WORK/ingest-$round.data
		rm -rf "$data"
		[ "$STORE" = file ] || start_redis "$WORK/redis-ingest-$round"
		start_caddy "$WORK/Caddyfile.ingest" "$WORK/caddy-ingest-$round.log" "$data"
		admin -X POST "http://127.0.0.1:$ADMIN_PORT/webhook_guard/spool/pause?scope=ivy" >/dev/null
		if [ "$round" = 0 ]; then
			wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s bench/events.lua \
				"http://127.0.0.1:$HTTP_PORT/hook" -- "$ev" "$THREADS" >"$WORK/wrk-ingest-0.txt"
			stop_caddy
			stop_redis
			rm -rf "$data" "$WORK/redis-ingest-$round"
			continue
		fi
		prof_pid=
		if [ "$PROFILE" = 1 ] && [ "$round" = 1 ]; then
			curl -fsS -o "$WORK/cpu-ingest.pprof" "http://127.0.0.1:$ADMIN_PORT/debug/pprof/profile?seconds=5" &
			prof_pid=$!
		fi
		load1=$(awk '{ print $1 }' /proc/loadavg)
		read -r busy0 total0 < <(machine_ticks)
		caddy0=$(($(process_ticks "$CADDY_PID") + $(process_ticks "${REDIS_PID:-0}")))
		TIMEFORMAT='%U %S'
		{ time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/events.lua \
			"http://127.0.0.1:$HTTP_PORT/hook" -- "$ev" "$THREADS" >"$WORK/wrk-ingest-$round.txt"; } 2>"$WORK/wrk-time-$round.txt"
		read -r busy1 total1 < <(machine_ticks)
		caddy1=$(($(process_ticks "$CADDY_PID") + $(process_ticks "${REDIS_PID:-0}")))
		# The share of the machine's CPU used by anything but wrk and Caddy (the
		# paused backend does nothing) during the round. The kernel's work not
		# charged to them counts too: its journal threads committing the
		# ledger's fsyncs, so it is well above 0 on an idle machine.
		other_cpu=$(tail -1 "$WORK/wrk-time-$round.txt" | awk -v hz="$HZ" \
			-v busy=$((busy1 - busy0)) -v total=$((total1 - total0)) -v ours=$((caddy1 - caddy0)) \
			'{ o = busy - ours - ($1 + $2) * hz; if (o < 0) o = 0; printf "%.1f", 100 * o / total }')
		[ -z "$prof_pid" ] || wait "$prof_pid" || echo "spool bench: profiling failed" >&2
		line=$(grep '^WGBENCH ' "$WORK/wrk-ingest-$round.txt") || die "no WGBENCH line: $(cat "$WORK/wrk-ingest-$round.txt")"
		requests=$(field requests "$line")
		errors=0
		for e in err_connect err_read err_write err_status err_timeout; do
			errors=$((errors + $(field "$e" "$line")))
		done
		wrapped=$(field wrapped "$line")
		admin "http://127.0.0.1:$ADMIN_PORT/metrics" >"$WORK/metrics-ingest-$round.txt" # the journal's histograms, for "where the time goes"
		spooled=$(metric 'caddy_webhook_guard_events_total{outcome="spooled",provider="ivy"}')
		others=$(admin "http://127.0.0.1:$ADMIN_PORT/metrics" |
			awk '/^caddy_webhook_guard_events_total/ && !/outcome="spooled"/ { n += $2 } END { print n + 0 }')
		pending=$(listed pending)
		delivered=$(field count "$(up_stats "$INGEST_UP")")
		problem=
		[ "$errors" -eq 0 ] || problem+=" $errors errors or non-2xx answers;"
		[ "$wrapped" -eq 0 ] || problem+=" ran out of events (raise EVENTS);"
		[ "$others" = 0 ] || problem+=" $others events not spooled (see the metrics);"
		[ "$delivered" = 0 ] || problem+=" $delivered delivered while paused;"
		# Events stored while wrk stopped may not be counted yet (their answer
		# waits for the commit): at most one per connection.
		if [ "$pending" -lt "$spooled" ] || [ "$pending" -gt $((spooled + CONNECTIONS)) ] ||
			[ "$pending" -lt $((requests - errors)) ] || [ "$pending" -gt $((requests + CONNECTIONS)) ]; then
			problem+=" the ledger lists $pending pending, the metrics count $spooled spooled, wrk $requests requests;"
		fi
		stop_caddy
		stop_redis
		rm -rf "$data" "$WORK/redis-ingest-$round"
		rps=$(field rps "$line")
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$rps" "$(field p50_us "$line")" "$(field p99_us "$line")" \
			"$requests" "$errors" "$spooled" "$pending" "$load1" "$other_cpu" >>"$ROWS"
		say "ingest round $round: $rps req/s  p50 $(field p50_us "$line") us  p99 $(field p99_us "$line") us  requests $requests  errors $errors  spooled $spooled  listed pending $pending  load1 $load1  other CPU $other_cpu%  ${problem:-ok}"
		[ -z "$problem" ] || FAILED=1
	done
	stop_up "$INGEST_UP_PID"
	rm -f "$ev"
	col() { tail -n +2 "$ROWS" | cut -f"$1"; }
	say "INGEST (store $STORE, 1 KiB ivy events, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, median (min-max)):"
	say "  durable acknowledgements/s: $(col 2 | spread)"
	say "  p50 us: $(col 3 | spread)"
	say "  p99 us: $(col 4 | spread)"
	say "  errors: $(col 6 | spread)"
	say "  other work during the rounds, % of the machine's CPU: $(col 10 | spread)"
fi

if [[ " $PARTS " == *" restart "* ]]; then
	ROWS=$WORK/restart.tsv
	printf 'round\tfill_rps\tadmin_ms\tfirst_ms\tdrain_s\tdrain_rps\tdelivered\tdistinct\tredelivered\n' >"$ROWS"
	for round in $(seq 1 "$RESTART_ROUNDS"); do
		data=$WORK/restart-$round.data
		rm -rf "$data"
		[ "$STORE" = file ] || start_redis "$WORK/redis-restart-$round"
		start_up hold-$round -hold
		HOLD_PID=$UP_PID
		caddyfile "$UP" 1h >"$WORK/Caddyfile.fill"
		start_caddy "$WORK/Caddyfile.fill" "$WORK/caddy-fill-$round.log" "$data"
		echo "spool bench: restart round $round: spooling $PENDING events"
		fill_out=$(bench/.bin/spoolbench fill -url "http://127.0.0.1:$HTTP_PORT/hook" -n "$PENDING" \
			-c "$FILL_CONNECTIONS" -size "$SIZE" -secret-env BENCH_IVY_SECRET) || die "fill failed: $fill_out"
		pending=$(listed pending)
		[ "$pending" -eq "$PENDING" ] || die "after the fill the ledger lists $pending pending, want $PENDING"
		case $STOP in
		int) stop_caddy ;;
		kill)
			kill -KILL "$CADDY_PID"
			wait "$CADDY_PID" 2>/dev/null || true
			CADDY_PID=
			;;
		*) die "STOP=$STOP: want int or kill" ;;
		esac
		stop_up "$HOLD_PID"
		ls -l "$data/caddy/webhook_guard/" >"$WORK/ledger-$round.txt" 2>&1 || true

		start_up drain-$round
		DRAIN_UP=$UP DRAIN_PID=$UP_PID
		caddyfile "$DRAIN_UP" >"$WORK/Caddyfile.drain"
		start_caddy "$WORK/Caddyfile.drain" "$WORK/caddy-drain-$round.log" "$data"
		if [ "$INSTANCES" = 2 ]; then
			ADMIN_PORT=$ADMIN_PORT2 HTTP_PORT=$HTTP_PORT2 caddyfile "$DRAIN_UP" >"$WORK/Caddyfile.drain2"
			start_caddy2 "$WORK/Caddyfile.drain2" "$WORK/caddy-drain2-$round.log" "$data-2"
		fi
		prof_pid=
		if [ "$PROFILE" = 1 ] && [ "$round" = 1 ]; then
			curl -fsS -o "$WORK/cpu-drain.pprof" "http://127.0.0.1:$ADMIN_PORT/debug/pprof/profile?seconds=5" &
			prof_pid=$!
		fi
		deadline=$(($(date +%s) + DRAIN_TIMEOUT))
		while :; do
			stats=$(up_stats "$DRAIN_UP")
			# Progress, to see whether the rate holds as the spool empties.
			echo "$(date +%s%N) $(field count "$stats")" >>"$WORK/drain-$round.progress"
			[ "$(field distinct "$stats")" -lt "$PENDING" ] || break
			[ "$(date +%s)" -lt "$deadline" ] || die "restart round $round: not drained within ${DRAIN_TIMEOUT}s: $stats"
			sleep 0.5
		done
		[ -z "$prof_pid" ] || wait "$prof_pid" || echo "spool bench: profiling failed" >&2
		for _ in $(seq 100); do [ "$(listed "")" -eq 0 ] && break; sleep 0.1; done
		left=$(listed "")
		stats=$(up_stats "$DRAIN_UP")
		stop_caddy
		stop_caddy2
		stop_up "$DRAIN_PID"
		stop_redis
		rm -rf "$data" "$data-2" "$WORK/redis-restart-$round"
		count=$(field count "$stats") distinct=$(field distinct "$stats")
		first=$(field first_ns "$stats") last=$(field last_ns "$stats")
		admin_ms=$(awk -v a="$CADDY_ADMIN_NS" -v s="$CADDY_START_NS" 'BEGIN { printf "%.0f", (a - s) / 1e6 }')
		first_ms=$(awk -v a="$first" -v s="$CADDY_START_NS" 'BEGIN { printf "%.0f", (a - s) / 1e6 }')
		drain_s=$(awk -v l="$last" -v f="$first" 'BEGIN { printf "%.2f", (l - f) / 1e9 }')
		drain_rps=$(awk -v n="$count" -v l="$last" -v f="$first" 'BEGIN { printf "%.0f", (n - 1) / ((l - f) / 1e9) }')
		problem=
		[ "$left" -eq 0 ] || problem+=" the spool still lists $left;"
		[ "$distinct" -eq "$PENDING" ] || problem+=" $distinct distinct events delivered, want $PENDING;"
		[ -z "$problem" ] || FAILED=1
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$(field rps "$fill_out")" "$admin_ms" "$first_ms" \
			"$drain_s" "$drain_rps" "$count" "$distinct" $((count - distinct)) >>"$ROWS"
		say "restart round $round: fill $(field rps "$fill_out") ev/s; caddy run -> admin answers $admin_ms ms, -> first delivery $first_ms ms; drain $count deliveries ($distinct distinct) in $drain_s s = $drain_rps/s  ${problem:-ok}"
	done
	col() { tail -n +2 "$ROWS" | cut -f"$1"; }
	say "RESTART with $PENDING pending 1 KiB events (store $STORE, $INSTANCES instance(s) draining; $RESTART_ROUNDS rounds, median (min-max)), spool concurrency ${CONCURRENCY:-4 (default)} per instance, Caddy stopped with SIG$(echo "$STOP" | tr a-z A-Z) after the fill:"
	say "  caddy run -> admin endpoint answers, ms: $(col 3 | spread)"
	say "  caddy run -> first delivery, ms: $(col 4 | spread)"
	say "  drain rate, deliveries/s: $(col 6 | spread)"
	say "  drain time, s: $(col 5 | spread)"
	say "  redeliveries: $(col 9 | spread)"
	for f in "$WORK"/drain-*.progress; do
		# Deliveries/s over the first and the last 20 % of the events.
		awk -v n="$PENDING" -v f="$(basename "$f")" '{ t[NR] = $1; c[NR] = $2 }
			END { for (i = 1; i <= NR; i++) { if (!a && c[i] >= 0.02 * n) a = i; if (!b && c[i] >= 0.2 * n) b = i
				if (!x && c[i] >= 0.8 * n) x = i; if (!y && c[i] >= 0.98 * n) y = i }
			if (a && b && x && y && t[b] > t[a] && t[y] > t[x])
				printf "  %s: %.0f/s from 2 %% to 20 %% delivered, %.0f/s from 80 %% to 98 %%\n", f,
					(c[b] - c[a]) / ((t[b] - t[a]) / 1e9), (c[y] - c[x]) / ((t[y] - t[x]) / 1e9) }' "$f" | tee -a "$SUMMARY"
	done
fi
say "load average after: $(uptime | sed 's/.*load average: //')"
[ "$FAILED" = 0 ] || say "PROBLEMS were found: see above"
exit "$FAILED"
