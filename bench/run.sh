#!/usr/bin/env bash
# Load benchmark of webhook_guard: the same Caddy binary, run alternately as
#   A  reverse_proxy alone
#   B  webhook_guard + reverse_proxy
# in front of one upstream (bench/upstream), driven by wrk with pre-signed,
# unique events (bench/gen, bench/events.lua), for each provider and body
# size, ROUNDS rounds of A then B. Writes bench/results.md (medians, B/A) and
# keeps the raw data under bench/results/<time>/.
#
# Usage: bench/run.sh            (from anywhere; run it on an idle machine)
#
# Settings, from the environment (defaults in brackets):
#   ROUNDS [5]  DURATION [10s]  THREADS [2]  CONNECTIONS [32]
#   PROVIDERS ["ivy standard"]  SIZES ["1024 65536"]
#   EVENTS_<size> [EVENTS_1024=400000, EVENTS_65536=120000]: events generated
#       per provider and size; each round uses them all afresh (new Caddy,
#       empty replay store), so they must outnumber the requests of a round.
#   HTTP_PORT [28480]  ADMIN_PORT [28419]
#   PROFILE [0]: 1 takes a 5 s CPU profile of Caddy in the first B round of
#       each provider and size (bench/results/<time>/*.pprof).
#   OUT [bench/results.md]
#
# It installs nothing. It needs go, curl and wrk (Debian/Ubuntu:
# apt-get install wrk; macOS: brew install wrk).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
PROVIDERS=${PROVIDERS:-"ivy standard"}
SIZES=${SIZES:-"1024 65536"}
HTTP_PORT=${HTTP_PORT:-28480}
ADMIN_PORT=${ADMIN_PORT:-28419}
PROFILE=${PROFILE:-0}
OUT=${OUT:-bench/results.md}
COMMAND="$(for v in ROUNDS DURATION THREADS CONNECTIONS PROVIDERS SIZES; do printf '%s=%q ' "$v" "${!v}"; done)bench/run.sh"

die() { echo "bench: $*" >&2; exit 1; }

for tool in go curl awk; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
command -v wrk >/dev/null || die "wrk is required and not installed.
  Debian/Ubuntu: sudo apt-get install wrk
  macOS:         brew install wrk
  other:         https://github.com/wg/wrk (make; put wrk on PATH)"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$HTTP_PORT" "$ADMIN_PORT"; do
	port_busy "$p" && die "port $p is in use; set HTTP_PORT / ADMIN_PORT"
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=bench/results/$STAMP
mkdir -p "$WORK" bench/.bin
echo "bench: raw data in $WORK"

echo "bench: building"
go build -o bench/.bin/caddy ./cmd/caddy
go build -o bench/.bin/upstream ./bench/upstream
go build -o bench/.bin/gen ./bench/gen

# Fresh random secrets for this run, handed over by environment only.
BENCH_IVY_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
BENCH_STANDARD_SECRET=whsec_$(head -c 24 /dev/urandom | base64)
export BENCH_IVY_SECRET BENCH_STANDARD_SECRET
secret_env() { echo "BENCH_$(echo "$1" | tr '[:lower:]' '[:upper:]')_SECRET"; }

UP_PID=
CADDY_PID=
cleanup() {
	[ -n "$CADDY_PID" ] && kill "$CADDY_PID" 2>/dev/null && wait "$CADDY_PID" 2>/dev/null
	[ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null
	true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench/.bin/upstream -listen 127.0.0.1:0 >"$WORK/upstream.addr" 2>"$WORK/upstream.log" &
UP_PID=$!
for _ in $(seq 100); do [ -s "$WORK/upstream.addr" ] && break; sleep 0.05; done
UPSTREAM=$(head -1 "$WORK/upstream.addr")
[ -n "$UPSTREAM" ] || die "the upstream did not start: $(cat "$WORK/upstream.log")"
upstream_count() { curl -fsS "http://$UPSTREAM/__count"; }

# caddyfile MODE PROVIDER: the configuration of a round. Caddy logs only
# errors, with no access log, in both modes.
caddyfile() {
	local mode=$1 provider=$2
	cat <<-EOF
	{
		admin 127.0.0.1:$ADMIN_PORT
		http_port $HTTP_PORT
		auto_https off
		persist_config off
		default_bind 127.0.0.1
		log {
			output stderr
			level ERROR
		}
	}
	:$HTTP_PORT {
	EOF
	if [ "$mode" = B ]; then
		cat <<-EOF
			webhook_guard $provider {
				secret {env.$(secret_env "$provider")}
				allow_ips any
				tolerance 24h
			}
		EOF
	fi
	cat <<-EOF
		reverse_proxy $UPSTREAM
	}
	EOF
}

start_caddy() {
	local file=$1 log=$2
	bench/.bin/caddy run --config "$file" --adapter caddyfile >"$log" 2>&1 &
	CADDY_PID=$!
	for _ in $(seq 200); do
		if curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/config/" 2>/dev/null &&
			port_busy "$HTTP_PORT"; then
			return 0
		fi
		kill -0 "$CADDY_PID" 2>/dev/null || die "Caddy exited: $(tail -5 "$log")"
		sleep 0.05
	done
	die "Caddy did not become ready: $(tail -5 "$log")"
}

stop_caddy() {
	kill -INT "$CADDY_PID" 2>/dev/null || true
	wait "$CADDY_PID" 2>/dev/null || true
	CADDY_PID=
}

# metric NAME_AND_LABELS: a sample's value from Caddy's /metrics, 0 if absent.
metric() {
	curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" |
		awk -v m="$1" 'index($0, m " ") == 1 { v = $2 } END { print v + 0 }'
}

field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
echo "bench: load average before the run: $LOAD_BEFORE"
ROWS=$WORK/rounds.tsv
printf 'provider\tsize\tround\tmode\trps\tp50_us\tp99_us\trequests\terrors\tforwarded\n' >"$ROWS"
FAILED=0

for provider in $PROVIDERS; do
	for size in $SIZES; do
		events_var=EVENTS_$size
		default_events=400000
		[ "$size" -gt 8192 ] && default_events=120000
		events=${!events_var:-$default_events}
		ev=$WORK/events-$provider-$size.txt
		echo "bench: signing $events unique $provider events of $size bytes"
		bench/.bin/gen -provider "$provider" -size "$size" -count "$events" \
			-secret-env "$(secret_env "$provider")" -out "$ev"
		caddyfile A "$provider" >"$WORK/Caddyfile.A.$provider"
		caddyfile B "$provider" >"$WORK/Caddyfile.B.$provider"
		for round in $(seq "$ROUNDS"); do
			for mode in A B; do
				tag=$provider-$size-$round-$mode
				start_caddy "$WORK/Caddyfile.$mode.$provider" "$WORK/caddy-$tag.log"
				before=$(upstream_count)
				prof_pid=
				if [ "$PROFILE" = 1 ] && [ "$mode" = B ] && [ "$round" = 1 ]; then
					curl -fsS -o "$WORK/cpu-$tag.pprof" \
						"http://127.0.0.1:$ADMIN_PORT/debug/pprof/profile?seconds=5" &
					prof_pid=$!
				fi
				out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
					-s bench/events.lua "http://127.0.0.1:$HTTP_PORT/hook" -- "$ev" "$THREADS")
				echo "$out" >"$WORK/wrk-$tag.txt"
				[ -z "$prof_pid" ] || wait "$prof_pid" || echo "bench: profiling failed" >&2
				line=$(grep '^WGBENCH ' <<<"$out") || die "no WGBENCH line from wrk: $out"
				after=$(upstream_count)
				forwarded=$((after - before))
				requests=$(field requests "$line")
				errors=0
				for e in err_connect err_read err_write err_status err_timeout; do
					errors=$((errors + $(field "$e" "$line")))
				done
				wrapped=$(field wrapped "$line")
				problem=
				# wrk does not count requests still in flight when it stops, the
				# upstream may have answered them: up to one per connection.
				if [ "$forwarded" -lt $((requests - errors)) ] || [ "$forwarded" -gt $((requests + CONNECTIONS)) ]; then
					problem+=" upstream answered $forwarded of $requests requests ($errors errors);"
				fi
				[ "$errors" -eq 0 ] || problem+=" $errors errors or non-2xx answers;"
				[ "$wrapped" -eq 0 ] || problem+=" ran out of events (raise EVENTS_$size);"
				if [ "$mode" = B ]; then
					counted=$(metric "caddy_webhook_guard_events_total{outcome=\"forwarded\",provider=\"$provider\"}")
					if [ "$counted" -lt $((requests - errors)) ] || [ "$counted" -ne "$forwarded" ]; then
						problem+=" webhook_guard counted $counted forwarded, the upstream $forwarded;"
					fi
					others=$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" |
						awk '/^caddy_webhook_guard_events_total/ && !/outcome="forwarded"/ { n += $2 } END { print n + 0 }')
					[ "$others" = 0 ] || problem+=" $others events not forwarded (see the metrics);"
				fi
				stop_caddy
				rps=$(field rps "$line")
				printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$provider" "$size" "$round" "$mode" \
					"$rps" "$(field p50_us "$line")" "$(field p99_us "$line")" "$requests" "$errors" "$forwarded" >>"$ROWS"
				printf 'bench: %-8s %6s B  round %s  %s  %9s req/s  p50 %5s us  p99 %6s us  %s\n' \
					"$provider" "$size" "$round" "$mode" "$rps" "$(field p50_us "$line")" "$(field p99_us "$line")" \
					"${problem:-ok}"
				if [ -n "$problem" ]; then
					FAILED=1
					echo "bench: PROBLEM in $tag:$problem" | tee -a "$WORK/problems.txt" >&2
				fi
			done
		done
		rm -f "$ev"
	done
done
LOAD_AFTER=$(uptime | sed 's/.*load average: //')

# median PROVIDER SIZE MODE COLUMN
median() {
	awk -F'\t' -v p="$1" -v s="$2" -v m="$3" -v c="$4" \
		'$1 == p && $2 == s && $4 == m { print $c }' "$ROWS" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }

{
	echo "# webhook_guard load benchmark"
	echo
	echo "The same Caddy binary in front of one upstream (\`bench/upstream\`, 200 with keep-alives, loopback):"
	echo "**A** \`reverse_proxy\` alone, **B** \`webhook_guard\` + \`reverse_proxy\`. Every request is a new,"
	echo "validly signed event (pre-signed by \`bench/gen\`, sent by \`bench/events.lua\`), so B verifies,"
	echo "claims and forwards every one; after each round the upstream's count and B's"
	echo "\`caddy_webhook_guard_events_total{outcome=\"forwarded\"}\` were checked against wrk's count."
	echo "Caddy logs at ERROR, no access log, in both. A fresh Caddy process per round; rounds alternate A, B."
	echo
	echo "Medians over $ROUNDS rounds of $DURATION, wrk -t$THREADS -c$CONNECTIONS:"
	echo
	echo "| provider | body | A req/s | B req/s | **B/A** | A p50 | B p50 | A p99 | B p99 |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
	for provider in $PROVIDERS; do
		for size in $SIZES; do
			ar=$(median "$provider" "$size" A 5)
			br=$(median "$provider" "$size" B 5)
			ratio=$(awk -v a="$ar" -v b="$br" 'BEGIN { printf "%.3f", b / a }')
			body=$((size / 1024))KiB
			printf '| %s | %s | %.0f | %.0f | **%s** | %s ms | %s ms | %s ms | %s ms |\n' \
				"$provider" "$body" "$ar" "$br" "$ratio" \
				"$(ms "$(median "$provider" "$size" A 6)")" "$(ms "$(median "$provider" "$size" B 6)")" \
				"$(ms "$(median "$provider" "$size" A 7)")" "$(ms "$(median "$provider" "$size" B 7)")"
		done
	done
	echo
	if [ "$FAILED" = 1 ]; then
		echo "**Problems were found during the run** (non-2xx answers, events not forwarded or run out):"
		echo
		sed 's/^/- /' "$WORK/problems.txt"
	else
		echo "No errors, no non-2xx answers; in every B round the upstream received and the guard counted"
		echo "as forwarded every request wrk completed (plus at most the ones in flight when wrk stopped)."
	fi
	echo
	echo "## Machine and versions"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.brand_string), nproc $(nproc 2>/dev/null || sysctl -n hw.ncpu)"
	echo "- OS: $(uname -sr)"
	echo "- $(go version)"
	echo "- Caddy $(bench/.bin/caddy version | awk '{ print $1 }') (\`go build -o bench/.bin/caddy ./cmd/caddy\`)"
	echo "- $(wrk --version 2>&1 | head -1 | awk '{ print $1, $2 }')"
	echo "- load average (1, 5, 15 min) before the run: $LOAD_BEFORE; after: $LOAD_AFTER."
	echo "  wrk, Caddy and the upstream share the machine's cores, so A and B are both CPU-bound;"
	echo "  other work on the machine during the run lowers both."
	echo
	echo "Command: \`$COMMAND\`"
	echo
	echo "## Rounds"
	echo
	echo "| provider | body | round | mode | req/s | p50 ms | p99 ms | requests | errors | upstream received |"
	echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"
	tail -n +2 "$ROWS" | while IFS=$'\t' read -r p s r m rps p50 p99 n e f; do
		printf '| %s | %sKiB | %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$p" $((s / 1024)) "$r" "$m" "$rps" "$(ms "$p50")" "$(ms "$p99")" "$n" "$e" "$f"
	done
} >"$OUT"

echo "bench: wrote $OUT"
sed -n '/^| provider | body | A/,/^$/p' "$OUT"
exit "$FAILED"
