#!/bin/sh
# Checks the unit files with `systemd-analyze verify` (apt: systemd).
# The units name /usr/bin/skein-*; verify insists that those exist, so the
# check runs on a copy pointing at the freshly built binaries instead.
# Usage: dist/systemd/verify.sh [target/debug]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bins=$(cd "${1:-$here/../../target/debug}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here"/*.service "$here"/*.target "$work"/
sed -i "s#/usr/bin/#$bins/#" "$work"/*.service
cd "$work"
SYSTEMD_UNIT_PATH="$work:" systemd-analyze verify --man=no \
    skein.target skein-router.service skein-scheduler.service skein-smtpd.service
echo "systemd units OK"
