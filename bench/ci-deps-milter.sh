#!/bin/sh
# Filters for the milter tests (tests/tests/milter_codec.rs,
# milter_opendkim.rs; issue 15):
# OpenDKIM in milter mode. Each test starts its own opendkim on a loopback
# port with its own configuration; the package's service is not used.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends opendkim
if command -v service >/dev/null 2>&1; then
  service opendkim stop >/dev/null 2>&1 || true
fi
