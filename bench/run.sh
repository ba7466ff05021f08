#!/usr/bin/env bash
# Load benchmark of webhook_guard: the same Caddy binary, run alternately as
#   A  reverse_proxy alone
#   B  webhook_guard + reverse_proxy, with the default store: the ledger
#      file (every delivered id fsynced before the answer)
#   M  webhook_guard + reverse_proxy with `store memory` (nothing on disk)
#   C  reverse_proxy with request_buffers, which buffers the body as the
#      guard must (a buffered body is cheaper to forward than a streamed
#      one, so B/C isolates the guard's own cost)
# in front of one upstream (bench/upstream), driven by wrk with pre-signed,
# unique events (bench/gen, bench/events.lua), for each provider and body
# size, ROUNDS rounds of A, B, C. Writes bench/results.md (medians, B/A, B/C)
# and keeps the raw data under bench/results/<time>/.
#
# Usage: bench/run.sh            (from anywhere; run it on an idle machine)
#
# Settings, from the environment (defaults in brackets):
#   MODES ["A B M C"]: the modes of each round, in order.
#   ROUNDS [5]  DURATION [10s]  WARMUP [3s]  THREADS [2]  CONNECTIONS [32]
#   PROVIDERS ["ivy standard"]  SIZES ["1024 65536"]
#   EVENTS_<size> [EVENTS_1024=400000, EVENTS_65536=120000]: events generated
#       per provider and size; each round uses them all afresh (new Caddy,
#       empty replay store), so they must outnumber the requests of a round.
#   HTTP_PORT [28480]  ADMIN_PORT [28419]
#   MAX_OTHER [10]  ATTEMPTS [3]: a round (A, B, C) during which other work
#       used more than MAX_OTHER % of the machine's CPU is run again, at most
#       ATTEMPTS times in all; the last attempt counts either way.
#   PROFILE [0]: 1 takes a 5 s CPU profile of Caddy in the first rounds of
#       each provider and size (bench/results/<time>/*.pprof).
#   CADDY [built from ./cmd/caddy into bench/.bin/caddy]: another Caddy
#       binary with webhook_guard to measure, e.g. an older build to compare.
#   OUT [bench/results.md]
#
# It installs nothing. It needs go, curl and wrk (Debian/Ubuntu:
# apt-get install wrk; macOS: brew install wrk).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

MODES=${MODES:-"A B M C"}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
PROVIDERS=${PROVIDERS:-"ivy standard"}
SIZES=${SIZES:-"1024 65536"}
HTTP_PORT=${HTTP_PORT:-28480}
ADMIN_PORT=${ADMIN_PORT:-28419}
PROFILE=${PROFILE:-0}
MAX_OTHER=${MAX_OTHER:-10}
ATTEMPTS=${ATTEMPTS:-3}
OUT=${OUT:-bench/results.md}
CADDY=${CADDY:-}
COMMAND="$(for v in MODES ROUNDS DURATION WARMUP THREADS CONNECTIONS PROVIDERS SIZES; do printf '%s=%q ' "$v" "${!v}"; done)${CADDY:+CADDY=$CADDY }bench/run.sh"

die() { echo "bench: $*" >&2; exit 1; }

for tool in go curl awk; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
command -v wrk >/dev/null || die "wrk is required and not installed.
  Debian/Ubuntu: sudo apt-get install wrk
  macOS:         brew install wrk
  other:         https://github.com/wg/wrk (make; put wrk on PATH)"

for p in "$HTTP_PORT" "$ADMIN_PORT"; do
	port_busy "$p" && die "port $p is in use; set HTTP_PORT / ADMIN_PORT"
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=bench/results/$STAMP
mkdir -p "$WORK" bench/.bin
echo "bench: raw data in $WORK"

echo "bench: building"
if [ -z "$CADDY" ]; then
	go build -o bench/.bin/caddy ./cmd/caddy
	CADDY=bench/.bin/caddy
fi
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
	local status=$?
	set +e
	[ -z "$CADDY_PID" ] || { kill "$CADDY_PID" && wait "$CADDY_PID"; } 2>/dev/null
	[ -z "$UP_PID" ] || { kill "$UP_PID" && wait "$UP_PID"; } 2>/dev/null
	exit "$status"
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
	global_options
	cat <<-EOF
	:$HTTP_PORT {
	EOF
	if [ "$mode" = B ] || [ "$mode" = M ]; then
		# As deployed: ivy checks its allow-list (loopback stands in for
		# Ivy's addresses), standard has none; a long tolerance lets the
		# pre-signed timestamps last the run.
		local allow= tolerance=
		[ "$provider" = ivy ] && allow="allow_ips 127.0.0.1"
		[ "$provider" = standard ] && tolerance="tolerance 24h"
		local store=
		[ "$mode" = M ] && store=$'store memory {\n\t\t\tmax_events 10000000\n\t\t}'
		cat <<-EOF
			webhook_guard $provider {
				secret {env.$(secret_env "$provider")}
				$allow
				$tolerance
				$store
			}
		EOF
	fi
	if [ "$mode" = C ]; then
		cat <<-EOF
			reverse_proxy $UPSTREAM {
				request_buffers 1MiB
			}
		}
		EOF
	else
		cat <<-EOF
			reverse_proxy $UPSTREAM
		}
		EOF
	fi
}

# start_caddy FILE LOG: a fresh Caddy with an empty data directory of its own
# (the ledger of mode B starts empty in every round).
start_caddy() {
	local file=$1 log=$2
	CADDY_DATA=${log%.log}.data
	rm -rf "$CADDY_DATA"
	XDG_DATA_HOME=$CADDY_DATA "$CADDY" run --config "$file" --adapter caddyfile >"$log" 2>&1 &
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
	rm -rf "$CADDY_DATA"
}


field() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# CPU accounting (lib.sh), to show how much other work disturbed a round.
HZ=$(getconf CLK_TCK)

LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
echo "bench: load average before the run: $LOAD_BEFORE"
if awk -v l="${LOAD_BEFORE%%,*}" -v n="$(nproc 2>/dev/null || echo 1)" 'BEGIN { exit !(l > n / 4) }'; then
	echo "bench: WARNING: the machine is not idle (load ${LOAD_BEFORE%%,*} on $(nproc) cores); results will be noisy" >&2
fi
ROWS=$WORK/rounds.tsv
printf 'provider\tsize\tround\tmode\trps\tp50_us\tp99_us\trequests\terrors\tforwarded\tother_cpu_pct\n' >"$ROWS"
FAILED=0
RERUNS=0

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
		caddyfile C "$provider" >"$WORK/Caddyfile.C.$provider"
		caddyfile M "$provider" >"$WORK/Caddyfile.M.$provider"
		# Round 0 warms up (A, B, C, WARMUP each) and is not counted: the first
		# round after the events were signed is otherwise measurably slower.
		# A round during which other work took more than MAX_OTHER % of the
		# CPU in any mode is run again (A, B, C), up to ATTEMPTS times.
		round=0
		attempt=1
		while [ "$round" -le "$ROUNDS" ]; do
			round_rows=
			disturbed=
			for mode in $MODES; do
				tag=$provider-$size-$round-$mode
				[ "$attempt" = 1 ] || tag+=.$attempt
				start_caddy "$WORK/Caddyfile.$mode.$provider" "$WORK/caddy-$tag.log"
				if [ "$round" = 0 ]; then
					wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s bench/events.lua \
						"http://127.0.0.1:$HTTP_PORT/hook" -- "$ev" "$THREADS" >"$WORK/wrk-$tag.txt"
					stop_caddy
					continue
				fi
				before=$(upstream_count)
				prof_pid=
				if [ "$PROFILE" = 1 ] && [ "$round" = 1 ]; then
					curl -fsS -o "$WORK/cpu-$tag.pprof" \
						"http://127.0.0.1:$ADMIN_PORT/debug/pprof/profile?seconds=5" &
					prof_pid=$!
				fi
				read -r busy0 total0 < <(machine_ticks)
				caddy0=$(process_ticks "$CADDY_PID")
				up0=$(process_ticks "$UP_PID")
				TIMEFORMAT='%U %S'
				{ time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
					-s bench/events.lua "http://127.0.0.1:$HTTP_PORT/hook" -- "$ev" "$THREADS" \
					>"$WORK/wrk-$tag.txt"; } 2>"$WORK/wrk-time-$tag.txt"
				read -r busy1 total1 < <(machine_ticks)
				caddy1=$(process_ticks "$CADDY_PID")
				up1=$(process_ticks "$UP_PID")
				out=$(cat "$WORK/wrk-$tag.txt")
				# The share of the machine's CPU that neither wrk, Caddy nor the
				# upstream used during the round (the kernel's network work that is
				# not charged to them included, so it is not quite 0 on an idle machine).
				other_cpu=$(tail -1 "$WORK/wrk-time-$tag.txt" | awk -v hz="$HZ" \
					-v busy=$((busy1 - busy0)) -v total=$((total1 - total0)) -v ours=$((caddy1 - caddy0 + up1 - up0)) \
					'{ o = busy - ours - ($1 + $2) * hz; if (o < 0) o = 0; printf "%.1f", 100 * o / total }')
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
				if [ "$mode" = B ] || [ "$mode" = M ]; then
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
				round_rows+=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$provider" "$size" "$round" "$mode" \
					"$rps" "$(field p50_us "$line")" "$(field p99_us "$line")" "$requests" "$errors" "$forwarded" "$other_cpu")$'\n'
				if awk -v o="$other_cpu" -v m="$MAX_OTHER" 'BEGIN { exit !(o > m) }'; then
					disturbed+=" $mode $other_cpu%"
				fi
				printf 'bench: %-8s %6s B  round %s  %s  %9s req/s  p50 %5s us  p99 %6s us  other CPU %4s%%  %s\n' \
					"$provider" "$size" "$round" "$mode" "$rps" "$(field p50_us "$line")" "$(field p99_us "$line")" \
					"$other_cpu" "${problem:-ok}"
				if [ -n "$problem" ]; then
					FAILED=1
					echo "bench: PROBLEM in $tag:$problem" | tee -a "$WORK/problems.txt" >&2
				fi
			done
			if [ "$round" -gt 0 ] && [ -n "$disturbed" ] && [ "$attempt" -lt "$ATTEMPTS" ]; then
				echo "bench: round $round disturbed by other work (other CPU:$disturbed); running it again" >&2
				RERUNS=$((RERUNS + 1))
				attempt=$((attempt + 1))
				continue
			fi
			printf '%s' "$round_rows" >>"$ROWS"
			round=$((round + 1))
			attempt=1
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
# paired PROVIDER SIZE X Y: X/Y of each round (modes run one after the
# other): "median (min-max)". Less sensitive than the ratio of medians to the
# machine's speed drifting between rounds.
paired() {
	awk -F'\t' -v p="$1" -v s="$2" -v x="$3" -v y="$4" '$1 == p && $2 == s { r[$3, $4] = $5; n[$3] = 1 }
		END { for (k in n) if (r[k, y] > 0) print r[k, x] / r[k, y] }' "$ROWS" | sort -g |
		awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%.3f (%.2f-%.2f)", m, v[1], v[NR] }'
}

{
	echo "# webhook_guard load benchmark"
	echo
	echo "The same Caddy binary in front of one upstream (\`bench/upstream\`, 200 with keep-alives, loopback):"
	echo "**A** \`reverse_proxy\` alone, **B** \`webhook_guard\` + \`reverse_proxy\` with the default store (the ledger"
	echo "file: every delivered id fsynced before the answer), **M** the same with \`store memory\`, **C** \`reverse_proxy\` with"
	echo "\`request_buffers 1MiB\`, which buffers the body before forwarding it as the guard must. B/A is what a"
	echo "deployment sees. C shows the price of buffering apart from the guard's work, and more: a body"
	echo "\`reverse_proxy\` buffered itself goes to the upstream with the headers in one write, while a streamed"
	echo "one (A) or one buffered by another handler (B: \`reverse_proxy\` wraps every body it did not buffer"
	echo "itself, so Go's transport no longer sees it in memory) goes in two; B/C is therefore a bound on the"
	echo "guard's own cost, not the cost itself. Every request is a new,"
	echo "validly signed event (pre-signed by \`bench/gen\`, sent by \`bench/events.lua\`), so B verifies,"
	echo "claims and forwards every one; after each round the upstream's count and B's"
	echo "\`caddy_webhook_guard_events_total{outcome=\"forwarded\"}\` were checked against wrk's count."
	echo "Caddy logs at ERROR, no access log, in all. A fresh Caddy process per round; rounds run A, B, C,"
	echo "after an uncounted warm-up round (A, B, C) of $WARMUP."
	echo
	echo "Medians over $ROUNDS rounds of $DURATION, wrk -t$THREADS -c$CONNECTIONS. **B/A** and B/C are ratios of the"
	echo "median throughputs; \"by round\" gives the median (and range) of the ratios within each round."
	echo
	echo "| provider | body | A req/s | B req/s | **B/A** | B/A by round | M req/s | M/A | C req/s | B/C | B/C by round | A p50 | B p50 | M p50 | A p99 | B p99 | M p99 |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for provider in $PROVIDERS; do
		for size in $SIZES; do
			ar=$(median "$provider" "$size" A 5)
			br=$(median "$provider" "$size" B 5)
			cr=$(median "$provider" "$size" C 5)
			mr=$(median "$provider" "$size" M 5)
			body=$((size / 1024))KiB
			ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (x > 0 && y > 0) printf "%.3f", x / y; else printf "-" }'; }
			printf '| %s | %s | %.0f | %.0f | **%s** | %s | %.0f | %s | %.0f | %s | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms |\n' \
				"$provider" "$body" "$ar" "$br" "$(ratio "$br" "$ar")" \
				"$(paired "$provider" "$size" B A)" "${mr:-0}" "$(ratio "${mr:-0}" "$ar")" \
				"${cr:-0}" "$(ratio "$br" "${cr:-0}")" "$(paired "$provider" "$size" B C)" \
				"$(ms "$(median "$provider" "$size" A 6)")" "$(ms "$(median "$provider" "$size" B 6)")" "$(ms "$(median "$provider" "$size" M 6)")" \
				"$(ms "$(median "$provider" "$size" A 7)")" "$(ms "$(median "$provider" "$size" B 7)")" "$(ms "$(median "$provider" "$size" M 7)")"
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
	echo "- Caddy $("$CADDY" version | awk '{ print $1 }') (\`$CADDY\`)"
	echo "- $(wrk --version 2>&1 | head -1 | awk '{ print $1, $2 }')"
	echo "- load average (1, 5, 15 min) just before the run: $LOAD_BEFORE; at its end: $LOAD_AFTER"
	echo "  (the run itself makes about 3: wrk, Caddy and the upstream share the machine's cores, so"
	echo "  every mode is CPU-bound; other work during the run would lower all, and the alternation"
	echo "  A, B, C, A, B, C... spreads it over all)."
	echo "- other work during the counted rounds (see \"other CPU\" below): median $(tail -n +2 "$ROWS" | cut -f11 | sort -g |
		awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')%, at most $(tail -n +2 "$ROWS" | cut -f11 | sort -g | tail -1)% of the machine's CPU;"
	echo "  $RERUNS round(s) were run again because other work took more than $MAX_OTHER% during them."
	echo
	echo "Command: \`$COMMAND\`"
	echo
	echo "## Rounds"
	echo
	echo "\"other CPU\" is the share of the machine's CPU used during the round by anything but wrk,"
	echo "Caddy and the upstream, from /proc tick counts (accurate to a few %, so 0 means \"nothing"
	echo "noticeable\"; kernel network work not charged to them would count as other)."
	echo
	echo "| provider | body | round | mode | req/s | p50 ms | p99 ms | requests | errors | upstream received | other CPU |"
	echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
	tail -n +2 "$ROWS" | while IFS=$'\t' read -r p s r m rps p50 p99 n e f o; do
		printf '| %s | %sKiB | %s | %s | %.0f | %s | %s | %s | %s | %s | %s%% |\n' "$p" $((s / 1024)) "$r" "$m" "$rps" "$(ms "$p50")" "$(ms "$p99")" "$n" "$e" "$f" "$o"
	done
} >"$OUT"

echo "bench: wrote $OUT"
sed -n '/^| provider | body | A/,/^$/p' "$OUT"
exit "$FAILED"
