#!/usr/bin/env bash
# The WAN benchmark: skein-smtp and Postfix side by side, each delivering
# through bench/linksim (a 130 ms round trip by default) to the same
# counting sink (wan-sink), in one run.
#
#   bench/wan.sh                 # all scenarios
#   COUNT_C=50 bench/wan.sh      # fewer messages for the 64 kbit/s case
#
# Scenarios:
#   a   one message to 1000 recipients of one destination
#   b   1000 messages of 4 KB to one destination, sink with CHUNKING
#   b'  the same, sink without CHUNKING (PIPELINING only)
#   c   COUNT_C (default 100) messages of 4 KB at 64 kbit/s, with CHUNKING
#
# For each it prints wall time (from the first job handed to the client to
# the sink's last delivery), connections, transactions, round trips in
# total and per message, and messages per second. skein is driven by
# wan-driver, which plays the scheduler (so only the SMTP client is
# timed); Postfix (installed from Debian's archive, bench/ci-deps.sh) runs
# as a private instance in a temporary directory with its default
# settings, relayhost = the simulator, its messages queued first and
# released at once (defer_transports, then flush).
#
# Needs root for Postfix; without Postfix the skein rows are still
# printed. Ports: SINK_PORT (26001), SIM_PORT (26002).

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DELAY=${DELAY:-65ms}            # one way: 130 ms round trip
RTT=${RTT:-0.130}
WINDOW=${WINDOW:-64k}           # the simulator's in-flight limit per direction
COUNT_C=${COUNT_C:-100}
SINK_PORT=${SINK_PORT:-26001}
SIM_PORT=${SIM_PORT:-26002}

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" \
    -p skein-smtp -p skein-linksim -p skein-wan-bench
R=$ROOT/target/release
WORK=$(mktemp -d /tmp/skein-wan.XXXXXX)
# Postfix's own processes run as the postfix user and must reach its queue.
chmod 755 "$WORK"
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$WORK/postfix/etc/main.cf" ]; then
        postfix -c "$WORK/postfix/etc" stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

start_link() { # sink-flags expected-recipients simulator-flags...
    local sink_flags=$1 expect=$2
    shift 2
    # shellcheck disable=SC2086
    "$R/wan-sink" --listen "127.0.0.1:$SINK_PORT" $sink_flags --expect "$expect" >"$WORK/sink.out" &
    SINK_PID=$!
    "$R/linksim" --listen "127.0.0.1:$SIM_PORT" --connect "127.0.0.1:$SINK_PORT" \
        --delay "$DELAY" "$@" 2>"$WORK/linksim.log" &
    SIM_PID=$!
    PIDS+=("$SINK_PID" "$SIM_PID")
    # linksim says so on stderr once it listens.
    for _ in $(seq 200); do
        [ -s "$WORK/linksim.log" ] && break
        sleep 0.05
    done
}

wait_sink() { # the sink prints its line once every recipient is in
    for _ in $(seq 36000); do
        [ -s "$WORK/sink.out" ] && return 0
        sleep 0.05
    done
    echo "the sink never got every recipient" >&2
    return 1
}

stop_link() {
    kill "$SINK_PID" "$SIM_PID" 2>/dev/null || true
    wait "$SINK_PID" "$SIM_PID" 2>/dev/null || true
}

field() { # name line
    sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"
}

row() { # scenario client messages seconds sink-line
    local scenario=$1 client=$2 messages=$3 seconds=$4 sink=$5
    local conns txns
    conns=$(field connections "$sink")
    txns=$(field transactions "$sink")
    awk -v s="$scenario" -v c="$client" -v m="$messages" -v t="$seconds" \
        -v n="$conns" -v x="$txns" -v rtt="$RTT" 'BEGIN {
        printf "%-4s %-8s %9.2f s %6d %6d %9.1f %9.2f %10.1f\n",
            s, c, t, n, x, t / rtt, t / rtt / m, m / t }'
}

skein_run() { # scenario scenario-name count config-extra
    local scenario=$1 kind=$2 count=$3 extra=$4
    cat >"$WORK/skein.toml" <<EOF
hostname = "skein-bench.test"
[spool]
dir = "$WORK/spool"
[smtp]
$extra
EOF
    local out
    out=$("$R/wan-driver" --agent "$R/skein-smtp" --config "$WORK/skein.toml" \
        --nexthop "127.0.0.1:$SIM_PORT" --scenario "$kind" --count "$count" \
        --size 4096 --dir "$WORK")
    wait_sink
    stop_link
    local sink messages
    sink=$(cat "$WORK/sink.out")
    messages=$count
    [ "$kind" = rcpts ] && messages=1
    # The driver's clock: from the first job, connection set-up included.
    row "$scenario" skein "$messages" "$(field seconds "$out")" "$sink"
}

have_postfix() {
    [ "$(id -u)" = 0 ] && command -v postfix >/dev/null && [ -f /etc/postfix/master.cf ]
}

postfix_setup() {
    local pf=$WORK/postfix
    mkdir -p "$pf/etc" "$pf/queue" "$pf/data"
    cp /etc/postfix/master.cf "$pf/etc/"
    cat >"$pf/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [127.0.0.1]:$SIM_PORT
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
defer_transports = smtp
EOF
    # No inbound SMTP listener: this instance only sends.
    sed -i 's/^smtp \+inet/#&/' "$pf/etc/master.cf"
    chown -R postfix "$pf/data"
    postfix -c "$pf/etc" check >/dev/null 2>&1 || true
    postfix -c "$pf/etc" start >/dev/null 2>&1
}

postfix_run() { # scenario kind count
    local scenario=$1 kind=$2 count=$3 pf=$WORK/postfix/etc
    local body="$WORK/pf-message"
    {
        printf 'From: bench@wan.test\nSubject: wan benchmark\n\n'
        # 64 lines of 63 bytes: about 4 KB, like wan-driver's message.
        for _ in $(seq 64); do
            printf 'The quick brown fox jumps over the lazy dog, again and again.\n'
        done
    } >"$body.4k"
    if [ "$kind" = rcpts ]; then
        # shellcheck disable=SC2046
        /usr/sbin/sendmail -C "$pf" -f bench@wan.test $(seq -f 'rcpt%g@wan.test' 0 $((count - 1))) <"$body.4k"
    else
        for _ in $(seq "$count"); do
            /usr/sbin/sendmail -C "$pf" -f bench@wan.test rcpt@wan.test <"$body.4k"
        done
    fi
    # Everything queued (and deferred by defer_transports) before the clock starts.
    for _ in $(seq 600); do
        local queued
        queued=$(postqueue -c "$pf" -j 2>/dev/null | wc -l)
        [ "$queued" -ge "$([ "$kind" = rcpts ] && echo 1 || echo "$count")" ] && break
        sleep 0.1
    done
    postconf -c "$pf" -e 'defer_transports =' >/dev/null
    postfix -c "$pf" reload >/dev/null 2>&1
    # The reload is asynchronous: a flush before the queue manager has
    # re-read its configuration would only defer everything again.
    sleep 3
    local start end
    start=$(date +%s.%N)
    postqueue -c "$pf" -f
    wait_sink
    end=$(date +%s.%N)
    # Let Postfix hear its last replies and empty its queue before the
    # sink goes, so that nothing is left over for the next scenario.
    for _ in $(seq 600); do
        [ -z "$(postqueue -c "$pf" -j 2>/dev/null)" ] && break
        sleep 0.1
    done
    stop_link
    postconf -c "$pf" -e 'defer_transports = smtp' >/dev/null
    postfix -c "$pf" reload >/dev/null 2>&1
    local sink messages
    sink=$(cat "$WORK/sink.out")
    messages=$count
    [ "$kind" = rcpts ] && messages=1
    row "$scenario" postfix "$messages" "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "$sink"
}

printf '%s round trip (one-way %s), simulator window %s per direction\n' "$RTT s" "$DELAY" "$WINDOW"
printf '%-4s %-8s %11s %6s %6s %9s %9s %10s\n' "" client "wall" conns txns RTTs RTT/msg "msgs/s"

POSTFIX=0
if have_postfix; then
    if postfix_setup; then
        POSTFIX=1
    else
        echo "(Postfix would not start: skein rows only)"
    fi
else
    echo "(Postfix not available or not root: skein rows only)"
fi

# (a) one message, 1000 recipients. skein sends them in one transaction
# (max_recipients_per_transaction = 1000); Postfix keeps its default (50).
start_link --chunking 1000 --window "$WINDOW"
skein_run a rcpts 1000 "max_recipients_per_transaction = 1000"
if [ $POSTFIX = 1 ]; then start_link --chunking 1000 --window "$WINDOW"; postfix_run a rcpts 1000; fi

# (b) 1000 messages of 4 KB, CHUNKING sink.
start_link --chunking 1000 --window "$WINDOW"
skein_run b messages 1000 ""
if [ $POSTFIX = 1 ]; then start_link --chunking 1000 --window "$WINDOW"; postfix_run b messages 1000; fi

# (b') the same without CHUNKING.
start_link "" 1000 --window "$WINDOW"
skein_run "b'" messages 1000 ""
if [ $POSTFIX = 1 ]; then start_link "" 1000 --window "$WINDOW"; postfix_run "b'" messages 1000; fi

# (c) at 64 kbit/s.
start_link --chunking "$COUNT_C" --window "$WINDOW" --bandwidth 64kbit
skein_run c messages "$COUNT_C" ""
if [ $POSTFIX = 1 ]; then
    start_link --chunking "$COUNT_C" --window "$WINDOW" --bandwidth 64kbit
    postfix_run c messages "$COUNT_C"
fi
awk -v n="$COUNT_C" 'BEGIN { printf "(c) payload: %d messages x 4099 bytes = %.0f kbit; at 64 kbit/s that is %.1f s\n", n, n * 4099 * 8 / 1000, n * 4099 * 8 / 64000 }'
