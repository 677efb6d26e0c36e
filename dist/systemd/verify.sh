#!/bin/sh
# Checks the unit files with `systemd-analyze verify` (apt: systemd).
# The units name /usr/libexec/skein/skein-*; verify insists that those exist, so the
# check runs on a copy pointing at the freshly built binaries instead.
# Then it checks that `systemd-analyze security` rates every service at
# 2.0 or below (lower is safer; the scores are in docs/operations.md).
# Usage: dist/systemd/verify.sh [target/debug]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bins=$(cd "${1:-$here/../../target/debug}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here"/*.service "$here"/*.target "$work"/
sed -i "s#/usr/libexec/skein/#$bins/#" "$work"/*.service
cd "$work"
SYSTEMD_UNIT_PATH="$work:" systemd-analyze verify --man=no \
    skein.target skein-router.service skein-scheduler.service skein-smtpd.service
max=2.0
for unit in skein-router skein-scheduler skein-smtpd; do
  line=$(SYSTEMD_UNIT_PATH="$work:" systemd-analyze security --offline=true \
      --no-pager "$unit.service" | grep 'Overall exposure level')
  score=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
  echo "$unit.service: exposure $score (at most $max)"
  if [ -z "$score" ] || ! awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }'; then
    echo "$unit.service: exposure ${score:-unknown} is above $max" >&2
    exit 1
  fi
done
# The optional drop-in for local.home_mailbox: verified, and its score
# shown (it trades hardening for delivery as system users).
cp -r "$here/skein-scheduler.service.d" "$work/"
SYSTEMD_UNIT_PATH="$work:" systemd-analyze verify --man=no skein-scheduler.service
line=$(SYSTEMD_UNIT_PATH="$work:" systemd-analyze security --offline=true \
    --no-pager skein-scheduler.service | grep 'Overall exposure level')
echo "skein-scheduler.service with home-mailbox.conf: ${line##*: }"
echo "systemd units OK"
