#!/bin/sh
# Filters for the milter tests (tests/tests/milter_codec.rs,
# milter_opendkim.rs, milter_rspamd.rs, milter_clamav.rs; issue 15):
# OpenDKIM, rspamd, and ClamAV (clamd and clamav-milter; the test writes
# its own signature file, since freshclam needs the network).
# Each test starts its own filter on loopback ports with its own
# configuration; the packages' services are not used (stopped if the
# packages started them).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends opendkim rspamd clamav-daemon clamav-milter
for service in opendkim rspamd clamav-milter clamav-daemon clamav-freshclam; do
  if command -v service >/dev/null 2>&1; then
    service "$service" stop >/dev/null 2>&1 || true
  fi
done
