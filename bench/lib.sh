# Functions shared by bench/run.sh and bench/spool.sh, which source this file
# (it runs nothing itself). They read ADMIN_PORT and HTTP_PORT.

# port_busy PORT: something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# metric NAME_AND_LABELS: a sample's value from Caddy's /metrics, 0 if absent.
metric() {
	curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" |
		awk -v m="$1" 'index($0, m " ") == 1 { v = $2 } END { print v + 0 }'
}

# CPU accounting, to show how much other work disturbed a round: the
# machine's busy and total clock ticks, and a live process's ticks.
machine_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
process_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# global_options: the global options of every benchmarked Caddy: admin and
# HTTP on loopback, no automatic HTTPS, no saved config, errors only in the
# log (no access log).
global_options() {
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
	EOF
}
