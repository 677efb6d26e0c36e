#!/usr/bin/env bash
# Soak: does skein's memory level off? Postfix's smtp-source injects N
# messages in STEP-sized batches into skein, which relays them to one
# smtp-sink; after each batch (and the queue emptied) the resident set of
# each long-lived daemon is printed, so that growth per 1000 messages can
# be read off and compared between the first and the second half.
#
#   sudo bench/soak/run.sh                 # N=200000, STEP=20000, 4 KB
#   N=40000 STEP=5000 bench/soak/run.sh    # a quick look
#
# Environment: N (200000), STEP (20000), SIZE (4096), SESSIONS (20),
# TIMEOUT (seconds allowed per batch, 900), SETTLE (seconds idle before
# each sample, 3: the smtpd and the router give a burst's memory back one
# second after they go idle), KEEP (keep the work directory),
# MALLOC (set to pass MALLOC_ARENA_MAX=$MALLOC to the daemons: glibc's
# per-thread arenas are a common cause of resident growth that is not a
# leak).
#
# Printed per batch, SETTLE seconds after the queue is empty: messages so
# far, then for skein-smtpd, skein-router
# and skein-scheduler VmRSS in kB (from /proc/<pid>/status), and RssAnon
# (the heap and stacks, without the mapped program), the figure a leak
# moves. At the end: the growth of each, in kB per 1000 messages, over the
# first half and over the second half of the run; a leak grows in both, a
# cache or an allocator's high-water mark levels off. No Postfix runs
# (a Postfix smtpd exits after 100 clients, so there is no like figure to
# set beside skein's); smtp-source and smtp-sink only drive the traffic.
#
# Needs smtp-source and smtp-sink (Debian's postfix package,
# bench/ci-deps.sh) and python3 (free ports); root only for smtp-sink -u.

set -euo pipefail

N=${N:-200000}
STEP=${STEP:-20000}
SIZE=${SIZE:-4096}
SESSIONS=${SESSIONS:-20}
TIMEOUT=${TIMEOUT:-900}
SETTLE=${SETTLE:-3}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)

FAILED=
die() { echo "soak: $*" >&2; FAILED=1; diagnose >&2; exit 1; }
# On a failure: what each daemon made of the mail so far, and any log line
# that is not routine, so that a lost count can be told from a refused
# submission (the work directory is kept too).
diagnose() {
    [ -d "${WORK:-}/skein" ] || return 0
    echo "soak: accepted by skein-smtpd: $(grep -c 'msg=accepted' "$WORK/skein/skein-smtpd.log" || true)"
    echo "soak: session ends: $(grep -o 'msg=disconnect .* end=[^ ]*' "$WORK/skein/skein-smtpd.log" | sed 's/.* end=//' | sort | uniq -c | tr '\n' ' ')"
    echo "soak: deliveries by status: $(grep -o 'status=[a-z]*' "$WORK/skein/skein-scheduler.log" | sort | uniq -c | tr '\n' ' ')"
    echo "soak: smtp-source said: $(tail -n 5 "$WORK/source.log" 2>/dev/null | tr '\n' ' ')"
    grep -hv 'level=info' "$WORK"/skein/*.log | grep -v 'keeping root privileges' | tail -n 20
}
for tool in smtp-source smtp-sink python3; do
    command -v "$tool" >/dev/null || die "$tool missing: install Debian's postfix (bench/ci-deps.sh) and python3"
done

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --workspace --bins
R=$ROOT/target/release

WORK=$(mktemp -d /tmp/skein-soak.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}${FAILED:-}" ]; then echo "soak: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_listening() { # port what
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "$2 is not listening on 127.0.0.1:$1"
}

SINK_PORT=$(free_port)
SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u nobody)
smtp-sink -c "${SINK_USER[@]}" "127.0.0.1:$SINK_PORT" 256 >"$WORK/sink.out" 2>"$WORK/sink.err" &
PIDS+=($!)
wait_listening "$SINK_PORT" smtp-sink
sink_count() {
    local last
    last=$(tail -c 80 "$WORK/sink.out" | tr '\r' '\n' | grep 'mesg=' | tail -n 1 || true)
    last=${last##*mesg=}
    last=${last//[^0-9]/}
    echo "${last:-0}"
}

PORT=$(free_port)
mkdir -p "$WORK/skein"
sed -e "s|@WORK@|$WORK/skein|g" -e "s|@PORT@|$PORT|g" -e "s|@SINK@|127.0.0.1:$SINK_PORT|g" \
    "$ROOT/bench/e2e/skein.toml.in" >"$WORK/skein/skein.toml"
DAEMONS=(skein-smtpd skein-router skein-scheduler)
declare -A PID
for daemon in "${DAEMONS[@]}"; do
    if [ -n "${MALLOC:-}" ]; then
        MALLOC_ARENA_MAX=$MALLOC "$R/$daemon" -c "$WORK/skein/skein.toml" 2>"$WORK/skein/$daemon.log" &
    else
        "$R/$daemon" -c "$WORK/skein/skein.toml" 2>"$WORK/skein/$daemon.log" &
    fi
    PIDS+=($!)
    PID[$daemon]=$!
done
wait_listening "$PORT" skein-smtpd

queue_left() {
    find "$WORK/skein/spool/incoming" "$WORK/skein/spool/queue" "$WORK/skein/spool/transport" \
        -type f 2>/dev/null | wc -l
}
field() { # pid field
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

echo "soak: $N messages of $SIZE bytes in batches of $STEP, smtp-source -s $SESSIONS; $(nproc) CPUs; ${MALLOC:+MALLOC_ARENA_MAX=$MALLOC; }$(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%8s' messages
for d in "${DAEMONS[@]}"; do printf ' %16s %9s' "${d#skein-}:VmRSS" RssAnon; done
printf '\n'
ROWS=$WORK/rows
: >"$ROWS"
row() { # messages
    local line="$1"
    printf '%8s' "$1"
    for d in "${DAEMONS[@]}"; do
        local rss anon
        rss=$(field "${PID[$d]}" VmRSS)
        anon=$(field "${PID[$d]}" RssAnon)
        [ -n "$rss" ] || die "$d is gone: $(tail -n 3 "$WORK/skein/$d.log")"
        printf ' %16s %9s' "$rss" "$anon"
        line="$line $rss $anon"
    done
    printf '\n'
    echo "$line" >>"$ROWS"
}
row 0
done_so_far=0
while [ "$done_so_far" -lt "$N" ]; do
    batch=$STEP
    [ $((done_so_far + batch)) -gt "$N" ] && batch=$((N - done_so_far))
    target=$(($(sink_count) + batch))
    deadline=$(($(date +%s) + TIMEOUT))
    smtp-source -s "$SESSIONS" -m "$batch" -l "$SIZE" -f sender@source.test -t rcpt@sink.test \
        "127.0.0.1:$PORT" >"$WORK/source.log" 2>&1 || die "smtp-source failed: $(tail -n 3 "$WORK/source.log")"
    while [ "$(sink_count)" -lt "$target" ] || [ "$(queue_left)" -ne 0 ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "batch not through after ${TIMEOUT}s: sink $(sink_count) of $target, $(queue_left) files queued"
        sleep 0.2
    done
    [ "$(sink_count)" -eq "$target" ] || die "the sink counted $(sink_count), expected $target"
    sleep "$SETTLE"
    done_so_far=$((done_so_far + batch))
    row "$done_so_far"
done

# Growth in kB per 1000 messages: from the first batch to the middle, and
# from the middle to the end (the first batch is left out: start-up
# allocations and the spool's free/ pool fill it).
awk -v names="${DAEMONS[*]}" '
    { n++; m[n] = $1; for (k = 2; k <= NF; k++) v[n, k] = $k }
    END {
        if (n < 4) { print "soak: too few batches for a trend"; exit }
        split(names, d, " ")
        a = 2; mid = int((n + 2) / 2); z = n
        printf "growth, kB per 1000 messages: %d..%d / %d..%d messages\n", m[a], m[mid], m[mid], m[z]
        for (i = 1; i <= length(d); i++) {
            rk = 2 * i; ak = 2 * i + 1
            printf "  %-16s VmRSS %6.1f / %6.1f   RssAnon %6.1f / %6.1f\n", d[i],
                (v[mid, rk] - v[a, rk]) * 1000 / (m[mid] - m[a]), (v[z, rk] - v[mid, rk]) * 1000 / (m[z] - m[mid]),
                (v[mid, ak] - v[a, ak]) * 1000 / (m[mid] - m[a]), (v[z, ak] - v[mid, ak]) * 1000 / (m[z] - m[mid])
        }
    }' "$ROWS"
