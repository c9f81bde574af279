#!/usr/bin/env bash
# DNS query time by transport: UDP, TCP, DNS over TLS and DNS over HTTPS against one local
# unbound, `vantage dns` side by side with dig(1) asking the same server the same question.
# Every query opens a new connection (both tools do, one process per query), so the DoT and DoH
# figures include the TCP and TLS handshakes. Vantage's figure is its `lookup` time (connect +
# TLS + request, measured inside the probe, microseconds); dig's is its "Query time" (whole
# milliseconds).
#
# Everything runs inside a network namespace this script creates; nothing leaves it.
#   scripts/bench-dns-transports.sh            50 queries per transport and tool
#   N=200 scripts/bench-dns-transports.sh
#   PROFILE=dev scripts/bench-dns-transports.sh  (debug build: slower crypto)
# Needs root, unbound, openssl, dig (dnsutils).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-50}
PROFILE=${PROFILE:-ci}
SERVER=192.0.2.53

[ "$(id -u)" -eq 0 ] || { echo "bench-dns-transports.sh: run as root (network namespace)" >&2; exit 1; }
for c in unbound openssl dig; do
  command -v "$c" >/dev/null || { echo "bench-dns-transports.sh: $c is missing (scripts/setup.sh)" >&2; exit 1; }
done

ns="vbench-doh-$$"
dir=$(mktemp -d /tmp/vantage-bench-doh.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo "==> building vantage (profile $PROFILE)"
cargo build --quiet --profile "$PROFILE" -p vantage
case $PROFILE in dev) bin=$PWD/target/debug/vantage ;; *) bin=$PWD/target/$PROFILE/vantage ;; esac

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$SERVER/32" dev lo
# nsenter execs the command itself, so $! of a backgrounded nsenter is the server's own PID.
inns() { nsenter --net="/run/netns/$ns" "$@"; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=dns.bench.test \
  -addext subjectAltName=DNS:dns.bench.test -addext basicConstraints=CA:FALSE 2>/dev/null

cat > "$dir/unbound.conf" <<EOF
server:
    interface: $SERVER@53
    interface: $SERVER@853
    interface: $SERVER@443
    tls-port: 853
    https-port: 443
    tls-service-key: "$dir/key.pem"
    tls-service-pem: "$dir/cert.pem"
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$dir"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    access-control: 0.0.0.0/0 allow
    module-config: "iterator"
    local-zone: "test." nodefault
    local-zone: "bench.test." static
    local-data: "www.bench.test. 300 IN A 192.0.2.10"
EOF
nsenter --net="/run/netns/$ns" unbound -d -c "$dir/unbound.conf" >/dev/null 2>"$dir/unbound.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "start of service" "$dir/unbound.log" && break; sleep 0.1; done
grep -q "start of service" "$dir/unbound.log" || { cat "$dir/unbound.log" >&2; exit 1; }

# median and 90th percentile of the numbers on stdin, in ms.
stats() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "- -"; exit } printf "%.3f %.3f\n", v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)] }'; }

vantage_times() { # TRANSPORT ARGS...
  local t=$1; shift
  for _ in $(seq "$N"); do
    inns "$bin" dns "$SERVER" www.bench.test A -T "$t" -W 2s "$@" |
      sed -n 's/.*; lookup \([0-9.]*\) ms$/\1/p'
  done
}
dig_times() { # DIG-OPTIONS...
  for _ in $(seq "$N"); do
    inns dig "@$SERVER" www.bench.test A +tries=1 +time=2 "$@" | sed -n 's/^;; Query time: \([0-9]*\) msec$/\1/p'
  done
}

echo "==> $N queries per transport and tool, one connection each, www.bench.test A"
printf "%-10s %18s %18s %14s %14s\n" transport "vantage median ms" "vantage p90 ms" "dig median ms" "dig p90 ms"
row() { # NAME VANTAGE-TIMES-FILE DIG-TIMES-FILE
  local v d
  v=$(stats < "$2"); d=$(stats < "$3")
  [ "$(wc -l < "$2")" -eq "$N" ] || echo "  ($1: only $(wc -l < "$2") of $N vantage queries answered)"
  printf "%-10s %18s %18s %14s %14s\n" "$1" ${v% *} ${v#* } ${d% *} ${d#* }
}
vantage_times udp > "$dir/v-udp"; dig_times > "$dir/d-udp"; row udp "$dir/v-udp" "$dir/d-udp"
vantage_times tcp > "$dir/v-tcp"; dig_times +tcp > "$dir/d-tcp"; row tcp "$dir/v-tcp" "$dir/d-tcp"
vantage_times tls --insecure --server-name dns.bench.test > "$dir/v-tls"
dig_times +tls > "$dir/d-tls"; row "tls (DoT)" "$dir/v-tls" "$dir/d-tls"
vantage_times https --insecure --server-name dns.bench.test > "$dir/v-https"
dig_times +https > "$dir/d-https"; row "https (DoH)" "$dir/v-https" "$dir/d-https"
vantage_times https --insecure --server-name dns.bench.test --doh-get > "$dir/v-get"
dig_times +https-get > "$dir/d-get"; row "https GET" "$dir/v-get" "$dir/d-get"
echo "==> vantage $("$bin" --version | awk '{print $2}'), $(dig -v 2>&1), unbound $(unbound -V | awk 'NR == 1 {print $2}'); $(nproc) cores; $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
