#!/usr/bin/env bash
# End to end on loopback: Postfix's smtp-source injects N messages over S
# sessions into an MTA, which relays them to one smtp-sink; the same
# traffic goes through skein and through a private Postfix instance, in
# the same run, rounds interleaved (skein, Postfix, skein, Postfix, ...).
#
#   sudo bench/e2e/run.sh                    # N=5000, 4 KB, 20 sessions, 3 rounds
#   N=1000 ROUNDS=1 sudo bench/e2e/run.sh    # a quick look
#
# Environment: N (5000), SIZE (message length for smtp-source -l, 4096),
# SESSIONS (20), ROUNDS (3), TIMEOUT (seconds allowed per round, 900),
# KEEP (set: keep the temporary directory with the logs, e.g. Postfix's
# maillog, instead of removing it), MILTER (set to "rspamd": both MTAs pass
# every message through one rspamd, Debian's, started here in its proxy
# worker's milter mode on a loopback port: skein's smtpd.milters and
# Postfix's smtpd_milters name it, milter_default_action tempfail on both,
# so a failing filter stops the round rather than letting mail through
# unscanned. rspamd's own CPU is in neither MTA's figure; it is printed
# per round on a line of its own).
#
#   MILTER=rspamd sudo bench/e2e/run.sh
#
# What is measured, per round and per MTA:
#   wall      from the start of smtp-source until the sink's counter
#             (smtp-sink -c, "mesg=") has grown by N; polled every 50 ms,
#             so the figure is late by at most 50 ms. After that the round
#             also waits for the MTA's queue to be empty and checks that
#             the sink saw exactly N more messages (none lost, none twice).
#   msg/s     N / wall.
#   CPU       user + system time of the MTA's whole process tree, taken
#             from /proc/<pid>/stat as utime+stime+cutime+cstime summed
#             over the daemons we started and all their descendants, just
#             before and just after the round (after the queue is empty).
#             A process that exits is counted through its parent's cutime
#             and cstime (skein-scheduler reaps its agents, Postfix's
#             master reaps smtpd, cleanup, qmgr, smtp, ...), a live one
#             through its own fields, so nothing is counted twice or lost
#             as long as the tree's roots live. smtp-source and smtp-sink
#             are not counted. Printed per 1000 messages.
#   memory    two figures, from samples of the tree taken every second
#             during the round and once at its end:
#             HWM MB  the sum, over every process seen in the round, of its
#                     peak resident set (VmHWM in /proc/<pid>/status): the
#                     "sum of peak RSS". It counts shared pages (libc, the
#                     program text) once per process, so it overstates a
#                     many-process MTA, and it is an upper bound (the
#                     processes need not peak together). VmHWM is a peak
#                     over the process's life, which may have begun in an
#                     earlier round (both MTAs keep processes across rounds).
#             PSS MB  the largest, over the samples, of the tree's summed
#                     proportional set size (Pss in /proc/<pid>/smaps_rollup:
#                     shared pages divided among their users): what the
#                     MTA really occupied at its busiest sampled moment.
#             A process living less than a second may be missed by both.
#
# Durability stays on for both: skein-smtpd writes and fsyncs the message
# into incoming/ before its 250, the router fsyncs each batch's control
# files, transport/ and queue/ before the scheduler hears of them, and the
# scheduler syncs what docs/spool.md (T3) requires; Postfix's cleanup
# fsyncs the queue file before smtpd answers 250.
# skein's configuration is its defaults plus a route to the sink. Postfix
# runs with its defaults (compatibility_level 3.6) apart from what a private
# loopback instance needs; notably in_flow_delay (1s) and the smtp client's
# destination concurrency (20 connections) stay as shipped. skein's
# scheduler keeps one connection per destination (maxthr 1).
#
# Needs root (Postfix's master runs as root; smtp-sink switches to nobody),
# Debian's postfix package (bench/ci-deps.sh) and python3 (free ports).
# Touches neither /etc/postfix's instance nor anything outside a temporary
# directory, which is removed at exit.

set -euo pipefail

N=${N:-5000}
SIZE=${SIZE:-4096}
SESSIONS=${SESSIONS:-20}
ROUNDS=${ROUNDS:-3}
TIMEOUT=${TIMEOUT:-900}
MILTER=${MILTER:-}
case "$MILTER" in "" | rspamd) ;; *) echo "e2e: MILTER must be unset or rspamd" >&2; exit 1 ;; esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/e2e

die() { echo "e2e: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (Postfix's master and smtp-sink -u need it)"
for tool in smtp-source smtp-sink postfix postconf python3; do
    command -v "$tool" >/dev/null || die "$tool missing: install Debian's postfix (bench/ci-deps.sh) and python3"
done
[ -f /etc/postfix/master.cf ] || die "/etc/postfix/master.cf missing: install Debian's postfix"

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --workspace --bins
R=$ROOT/target/release
HZ=$(getconf CLK_TCK)

WORK=$(mktemp -d /tmp/skein-e2e.XXXXXX)
# Postfix's daemons run as the postfix user and must reach their queue.
chmod 755 "$WORK"
PIDS=()
SAMPLER=

cleanup() {
    # Every step must run, whatever failed before (a daemon already gone):
    # above all, the private Postfix instance must be stopped.
    set +e
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    if [ -f "$WORK/postfix/etc/main.cf" ]; then
        postfix -c "$WORK/postfix/etc" stop >/dev/null 2>&1 || true
    fi
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "e2e: logs, spool and queue kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

listening() { # port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_listening() { # port what
    for _ in $(seq 600); do
        listening "$1" && return 0
        sleep 0.1
    done
    die "$2 is not listening on 127.0.0.1:$1"
}

now() { date +%s.%N; }

# --- process trees ---------------------------------------------------------

# "pid ppid ticks" for every process, ticks = utime+stime+cutime+cstime.
# The command name may hold spaces and parentheses: split after the last ')'.
proc_table() {
    # A process may exit between the glob and the read: cat then fails,
    # which pipefail must not turn into the script's failure.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
        i = 0; for (k = length($0); k > 0; k--) if (substr($0, k, 1) == ")") { i = k; break }
        pid = substr($0, 1, index($0, " ") - 1)
        n = split(substr($0, i + 2), f, " ")
        # after the name: f[1]=state f[2]=ppid ... f[12]=utime f[13]=stime f[14]=cutime f[15]=cstime f[20]=starttime
        print pid, f[2], f[12] + f[13] + f[14] + f[15], f[20]
    }'
}

# The roots and all their descendants, one "pid ppid ticks starttime" a line.
tree() { # root-pid...
    proc_table | awk -v roots="$*" '
        BEGIN { n = split(roots, r, " "); for (k = 1; k <= n; k++) keep[r[k]] = 1 }
        { line[$1] = $0; parent[$1] = $2 }
        END {
            do {
                grew = 0
                for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 }
            } while (grew)
            for (p in keep) if (p in line) print line[p]
        }'
}

tree_ticks() { # root-pid...
    tree "$@" | awk '{ t += $3 } END { print t + 0 }'
}

# One memory sample of the tree, tagged with the MTA and the current round
# (the file $WORK/round): appends "tag round pid:starttime VmHWM-kB" per
# process to $WORK/hwm and "tag round sample-id Pss-sum-kB" to $WORK/pss.
sample_mem() { # tag root-pid...
    local tag=$1 round pid start hwm pss sum=0 id
    shift
    round=$(cat "$WORK/round" 2>/dev/null || echo 0)
    id=$(now)
    while read -r pid _ _ start; do
        hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
        [ -n "$hwm" ] && echo "$tag $round $pid:$start $hwm" >>"$WORK/hwm"
        sum=$((sum + ${pss:-0}))
    done < <(tree "$@")
    echo "$tag $round $id $sum" >>"$WORK/pss"
}

hwm_mb() { # tag round
    awk -v tag="$1" -v r="$2" '$1 == tag && $2 == r { if ($4 > m[$3]) m[$3] = $4 }
        END { for (k in m) s += m[k]; printf "%.1f", s / 1024 }' "$WORK/hwm"
}

pss_mb() { # tag round
    awk -v tag="$1" -v r="$2" '$1 == tag && $2 == r && $4 > m { m = $4 }
        END { printf "%.1f", m / 1024 }' "$WORK/pss"
}

# --- the sink --------------------------------------------------------------

SINK_PORT=$(free_port)
# -c: a running counter on stdout ("sess=.. quit=.. mesg=N", each ended by
# a carriage return), bumped when "." is answered. It announces PIPELINING
# but not CHUNKING, so both MTAs send with DATA.
smtp-sink -c -u nobody "127.0.0.1:$SINK_PORT" 256 >"$WORK/sink.out" 2>"$WORK/sink.err" &
PIDS+=($!)
wait_listening "$SINK_PORT" smtp-sink

sink_count() {
    local last
    last=$(tail -c 80 "$WORK/sink.out" | tr '\r' '\n' | grep 'mesg=' | tail -n 1 || true)
    last=${last##*mesg=}
    last=${last//[^0-9]/}
    echo "${last:-0}"
}

# --- the filter (MILTER=rspamd) --------------------------------------------

MILTER_PORT=
RSPAMD=
if [ "$MILTER" = rspamd ]; then
    command -v rspamd >/dev/null || die "rspamd missing: install Debian's rspamd (bench/ci-deps-milter.sh)"
    MILTER_PORT=$(free_port)
    RS=$WORK/rspamd
    mkdir -p "$RS/override.d"
    # The proxy worker in milter mode, scanning by itself; one process per
    # worker; no network (its DNS is a closed loopback port); the
    # X-Spamd-Result field added, as tests/tests/milter_rspamd.rs has it.
    printf 'bind_socket = "127.0.0.1:%s";\nmilter = yes;\ntimeout = 120s;\nupstream "local" { default = yes; self_scan = yes; }\ncount = 1;\n' \
        "$MILTER_PORT" >"$RS/override.d/worker-proxy.inc"
    printf 'bind_socket = "127.0.0.1:%s";\ncount = 1;\n' "$(free_port)" >"$RS/override.d/worker-normal.inc"
    printf 'bind_socket = "127.0.0.1:%s";\ncount = 1;\n' "$(free_port)" >"$RS/override.d/worker-controller.inc"
    printf 'type = "file";\nfilename = "%s/rspamd.log";\nlevel = "warning";\n' "$RS" >"$RS/override.d/logging.inc"
    # rspamd's DNS: an unbound on loopback that answers every question at
    # once from local data (NXDOMAIN), no network. A closed port instead
    # costs a 1 s timeout on the questions rspamd asks about some clients
    # (Postfix's "localhost") and not others, which would measure DNS.
    command -v unbound >/dev/null || die "unbound missing (bench/ci-deps-dane.sh)"
    DNS_PORT=$(free_port)
    printf 'server:\n  interface: 127.0.0.1\n  port: %s\n  do-daemonize: no\n  username: ""\n  chroot: ""\n  directory: "%s"\n  pidfile: "%s/unbound.pid"\n  use-syslog: no\n  logfile: "%s/unbound.log"\n  access-control: 127.0.0.0/8 allow\n  local-zone: "." static\n' \
        "$DNS_PORT" "$RS" "$RS" "$RS" >"$RS/unbound.conf"
    unbound -d -c "$RS/unbound.conf" >"$RS/unbound.out" 2>&1 &
    PIDS+=($!)
    printf 'dns { nameserver = ["127.0.0.1:%s"]; timeout = 1s; retransmits = 1; }\n' "$DNS_PORT" >"$RS/override.d/options.inc"
    printf 'use = ["x-spamd-result"];\nskip_local = false;\nskip_authenticated = false;\n' \
        >"$RS/override.d/milter_headers.conf"
    chown -R _rspamd "$RS"
    rspamd -f -u _rspamd -g _rspamd -c /etc/rspamd/rspamd.conf --var="LOCAL_CONFDIR=$RS" \
        --var="RUNDIR=$RS" --var="DBDIR=$RS" --var="LOGDIR=$RS" >"$RS/stdout" 2>&1 &
    RSPAMD=$!
    PIDS+=("$RSPAMD")
    wait_listening "$MILTER_PORT" "rspamd's milter"
fi

# --- skein -----------------------------------------------------------------

SKEIN_PORT=$(free_port)
mkdir -p "$WORK/skein"
sed -e "s|@WORK@|$WORK/skein|g" -e "s|@PORT@|$SKEIN_PORT|g" -e "s|@SINK@|127.0.0.1:$SINK_PORT|g" \
    "$HERE/skein.toml.in" >"$WORK/skein/skein.toml"
if [ -n "$MILTER_PORT" ]; then
    sed -i "s|^\[smtpd\]\$|[smtpd]\nmilters = [\"inet:127.0.0.1:$MILTER_PORT\"]\nmilter_default_action = \"tempfail\"|" \
        "$WORK/skein/skein.toml"
    grep -q '^milters = ' "$WORK/skein/skein.toml" || die "no milters line in skein.toml"
fi
# Started as root, the daemons become the account `user` names ("skein")
# when it exists, as `skein start` has them: the spool and the Maildir root
# are then that account's, as `skein start` would create them.
if id skein >/dev/null 2>&1; then
    mkdir -p "$WORK/skein/spool" "$WORK/skein/mail"
    chown skein: "$WORK/skein/spool" "$WORK/skein/mail"
    chmod 750 "$WORK/skein/spool" "$WORK/skein/mail"
fi
SKEIN_ROOTS=()
for daemon in skein-smtpd skein-router skein-scheduler; do
    "$R/$daemon" -c "$WORK/skein/skein.toml" 2>"$WORK/skein/$daemon.log" &
    PIDS+=($!)
    SKEIN_ROOTS+=($!)
done
wait_listening "$SKEIN_PORT" skein-smtpd

skein_queue_left() {
    find "$WORK/skein/spool/incoming" "$WORK/skein/spool/queue" "$WORK/skein/spool/transport" \
        -type f 2>/dev/null | wc -l
}

# --- Postfix ---------------------------------------------------------------

PF_PORT=$(free_port)
PF=$WORK/postfix
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
cp /etc/postfix/master.cf "$PF/etc/"
sed -e "s|@PF@|$PF|g" -e "s|@SINKPORT@|$SINK_PORT|g" "$HERE/postfix-main.cf.in" >"$PF/etc/main.cf"
if [ -n "$MILTER_PORT" ]; then
    printf 'smtpd_milters = inet:127.0.0.1:%s\nmilter_default_action = tempfail\n' "$MILTER_PORT" >>"$PF/etc/main.cf"
fi
# The stock smtp listener (port 25) off, ours on the free port; no chroot:
# the private queue directory holds no copy of /etc.
awk -v port="$PF_PORT" '
    /^smtp[ \t]+inet/ { print "#" $0; print "127.0.0.1:" port " inet n - n - - smtpd"; next }
    /^[a-z0-9]/ && NF >= 8 && $5 == "y" { $5 = "n" }
    { print }' /etc/postfix/master.cf >"$PF/etc/master.cf"
chown -R postfix "$PF/data"
postfix -c "$PF/etc" check >"$WORK/postfix-check.log" 2>&1 || true
postfix -c "$PF/etc" start >"$WORK/postfix-start.log" 2>&1 ||
    die "postfix did not start: $(cat "$WORK/postfix-start.log")"
wait_listening "$PF_PORT" "Postfix smtpd"
PF_MASTER=$(tr -cd '0-9' <"$PF/queue/pid/master.pid")
[ -n "$PF_MASTER" ] || die "no Postfix master pid"

postfix_queue_left() {
    find "$PF/queue/maildrop" "$PF/queue/incoming" "$PF/queue/active" \
        "$PF/queue/deferred" "$PF/queue/hold" -type f 2>/dev/null | wc -l
}

# --- memory sampler --------------------------------------------------------

: >"$WORK/hwm"
: >"$WORK/pss"
echo 0 >"$WORK/round"
(
    while :; do
        sample_mem skein "${SKEIN_ROOTS[@]}"
        sample_mem postfix "$PF_MASTER"
        sleep 1
    done
) &
SAMPLER=$!

# --- rounds ----------------------------------------------------------------

RESULTS=$WORK/results
: >"$RESULTS"

round() { # name round-number port queue-left-function root-pid...
    local name=$1 number=$2 port=$3 left_fn=$4
    shift 4
    local base target t0 t1 ti= ticks0 ticks1 count deadline wall rate cpu hwm pss inj rs0=0 rs1=0
    echo "$number" >"$WORK/round"
    base=$(sink_count)
    target=$((base + N))
    ticks0=$(tree_ticks "$@")
    [ -n "$RSPAMD" ] && rs0=$(tree_ticks "$RSPAMD")
    t0=$(now)
    deadline=$(($(date +%s) + TIMEOUT))
    smtp-source -s "$SESSIONS" -m "$N" -l "$SIZE" -f sender@source.test -t rcpt@sink.test \
        "127.0.0.1:$port" >"$WORK/source-$name.log" 2>&1 &
    local source=$!
    while :; do
        count=$(sink_count)
        [ "$count" -ge "$target" ] && break
        # When smtp-source is done, the MTA has answered 250 to every message.
        [ -z "$ti" ] && ! kill -0 "$source" 2>/dev/null && ti=$(now)
        if [ "$(date +%s)" -ge "$deadline" ]; then
            kill "$source" 2>/dev/null || true
            die "$name: only $((count - base)) of $N messages at the sink after ${TIMEOUT}s"
        fi
        sleep 0.05
    done
    t1=$(now)
    [ -n "$ti" ] || ti=$t1
    wait "$source" || die "$name: smtp-source failed: $(tail -n 5 "$WORK/source-$name.log")"
    for _ in $(seq 600); do
        [ "$($left_fn)" -eq 0 ] && break
        sleep 0.1
    done
    [ "$($left_fn)" -eq 0 ] || die "$name: the queue is not empty after the sink counted $N"
    ticks1=$(tree_ticks "$@")
    [ -n "$RSPAMD" ] && rs1=$(tree_ticks "$RSPAMD")
    sample_mem "$name" "$@"
    count=$(sink_count)
    [ "$count" -eq "$target" ] || die "$name: the sink counted $((count - base)) messages, expected $N"
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    inj=$(awk -v a="$t0" -v b="$ti" 'BEGIN { printf "%.2f", b - a }')
    rate=$(awk -v n="$N" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
    cpu=$(awk -v t="$((ticks1 - ticks0))" -v hz="$HZ" -v n="$N" 'BEGIN { printf "%.2f", t / hz * 1000 / n }')
    hwm=$(hwm_mb "$name" "$number")
    pss=$(pss_mb "$name" "$number")
    echo "$name $wall $rate $cpu $hwm $pss" >>"$RESULTS"
    printf '  %-8s %7s s %5s msg/s (injected in %6s s) %6s CPU s/1000 msgs %7s HWM MB %6s PSS MB\n' \
        "$name" "$wall" "$rate" "$inj" "$cpu" "$hwm" "$pss"
    if [ -n "$RSPAMD" ]; then
        printf '  %-8s rspamd for these messages: %s CPU s/1000 msgs\n' "" \
            "$(awk -v t="$((rs1 - rs0))" -v hz="$HZ" -v n="$N" 'BEGIN { printf "%.2f", t / hz * 1000 / n }')"
    fi
}

# rspamd compiles its regular expressions before it scans, and tempfails
# until then: one message at a time through skein until one reaches the
# sink (bounded: 120 tries), then the queue drained.
if [ -n "$RSPAMD" ]; then
    warmed=
    for _ in $(seq 120); do
        before=$(sink_count)
        smtp-source -m 1 -f sender@source.test -t rcpt@sink.test "127.0.0.1:$SKEIN_PORT" >/dev/null 2>&1 || true
        for _ in $(seq 20); do
            [ "$(sink_count)" -gt "$before" ] && warmed=1 && break
            sleep 0.1
        done
        [ -n "$warmed" ] && break
        sleep 0.5
    done
    [ -n "$warmed" ] || die "rspamd never passed a message: $(tail -n 5 "$WORK/rspamd/rspamd.log")"
    for _ in $(seq 600); do
        [ "$(skein_queue_left)" -eq 0 ] && break
        sleep 0.1
    done
fi

echo "e2e: $N messages of $SIZE bytes, smtp-source -s $SESSIONS, $ROUNDS round(s); $(nproc) CPUs; $(date -u '+%Y-%m-%d %H:%M UTC')${MILTER:+; every message through $MILTER (smtpd_milters)}"
echo "e2e: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    echo "round $r:"
    round skein "$r" "$SKEIN_PORT" skein_queue_left "${SKEIN_ROOTS[@]}"
    round postfix "$r" "$PF_PORT" postfix_queue_left "$PF_MASTER"
done

median() { # name column printf-format
    awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$RESULTS" | sort -g | awk -v f="$3" '
        { v[NR] = $1 } END { printf f, NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { # column
    awk -v a="$(median skein "$1" %.6f)" -v b="$(median postfix "$1" %.6f)" 'BEGIN { printf "%.2f", a / b }'
}

echo
echo "medians over $ROUNDS round(s) ($N messages each):"
row() { printf '  %-9s %9s %9s %16s %9s %9s\n' "$@"; }
row "" "wall s" "msg/s" "CPU s/1000 msgs" "HWM MB" "PSS MB"
for name in skein postfix; do
    row "$name" "$(median "$name" 2 %.2f)" "$(median "$name" 3 %.0f)" "$(median "$name" 4 %.2f)" \
        "$(median "$name" 5 %.1f)" "$(median "$name" 6 %.1f)"
done
row "skein/pf" "$(ratio 2)" "$(ratio 3)" "$(ratio 4)" "$(ratio 5)" "$(ratio 6)"
echo "e2e: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
