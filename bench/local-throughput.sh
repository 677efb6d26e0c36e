#!/usr/bin/env bash
# Local delivery throughput: N messages (default 10000) to 50 local users,
# durable all the way (fsync on submission, journal fdatasync per outcome,
# fsync of every Maildir file). Prints submission rate and delivery rate.
#
#   bench/local-throughput.sh [N]
#
# It builds the release binaries, uses a fresh spool under a temporary
# directory, pre-submits the messages with `skein sendmail` (8 streams),
# then starts the router and the scheduler and times how long it takes
# until every message is in its Maildir and the queue is empty.
set -euo pipefail
N=${1:-10000}
USERS=50
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace --bins
BIN=$PWD/target/release
WORK=$(mktemp -d /tmp/skein-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat > "$WORK/skein.toml" <<CONF
hostname = "bench.example"
[spool]
dir = "$WORK/spool"
[local]
maildir_root = "$WORK/mail"
CONF
export SKEIN_CONFIG=$WORK/skein.toml
for u in $(seq 0 $((USERS - 1))); do mkdir -p "$WORK/mail/user$u"/{tmp,new,cur}; done

msg() { printf 'Subject: bench %s\nX-Seq: %s\n\n%s\n' "$1" "$1" "$(head -c 2048 /dev/zero | tr '\0' 'x')"; }
export -f msg
export BIN USERS
t0=$(date +%s.%N)
seq 0 $((N - 1)) | xargs -P 8 -n 50 bash -c 'for i in "$@"; do msg $i | "$BIN/skein" sendmail -i "user$((i % USERS))@localhost"; done' _
t1=$(date +%s.%N)
echo "submitted $N messages with skein sendmail (8 streams): $(awk "BEGIN{printf \"%.2f s, %.0f msg/s\", $t1-$t0, $N/($t1-$t0)}")"

"$BIN/skein-router" 2>"$WORK/router.log" &
"$BIN/skein-scheduler" 2>"$WORK/scheduler.log" &
t2=$(date +%s.%N)
while :; do
  delivered=$(find "$WORK/mail" -path '*/new/*' -type f | wc -l)
  left=$(find "$WORK/spool/incoming" "$WORK/spool/queue" "$WORK/spool/transport" -type f | wc -l)
  if [ "$delivered" -ge "$N" ] && [ "$left" -eq 0 ]; then break; fi
  sleep 0.2
done
t3=$(date +%s.%N)
echo "delivered $N messages into Maildirs (router + scheduler + skein-local, durable): $(awk "BEGIN{printf \"%.2f s, %.0f msg/s\", $t3-$t2, $N/($t3-$t2)}")"
