#!/usr/bin/env bash
# The layering rule of docs/architecture.md: no daemon or tool crate
# depends on another one (shared code belongs in crates/). Fails, naming
# the edge, if one does, directly or through a library.
set -euo pipefail
cd "$(dirname "$0")/.."
daemons=(skein-scheduler skein-router skein-smtp skein-local skein-smtpd skein-tools)
status=0
for d in "${daemons[@]}"; do
  # Normal and build dependencies; dev-dependencies may use test helpers.
  deps=$(cargo tree --locked --offline -p "$d" -e normal,build --prefix none --format '{p}' \
           | awk '{print $1}' | sort -u)
  for other in "${daemons[@]}"; do
    [ "$other" = "$d" ] && continue
    if grep -qx "$other" <<<"$deps"; then
      echo "layering: $d depends on $other (daemon crates may depend only on crates/)" >&2
      status=1
    fi
  done
done
[ $status = 0 ] && echo "layering: no daemon crate depends on another (${#daemons[@]} checked)"
exit $status
