#!/bin/sh
# Filters for the milter tests (tests/tests/milter_codec.rs,
# milter_opendkim.rs, milter_rspamd.rs; issue 15): OpenDKIM and rspamd.
# Each test starts its own filter on loopback ports with its own
# configuration; the packages' services are not used (stopped if the
# packages started them).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends opendkim rspamd
for service in opendkim rspamd; do
  if command -v service >/dev/null 2>&1; then
    service "$service" stop >/dev/null 2>&1 || true
  fi
done
