#!/bin/sh
# DNS for the DANE tests (tests/tests/dane.rs): ldns-signzone signs a test
# zone, nsd serves it on loopback, unbound validates it (the resolver
# whose AD bit skein trusts). Each test starts its own nsd and unbound on
# ephemeral loopback ports with its own configuration; the packages' own
# services are not used (and are stopped if the package started them).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends unbound nsd ldnsutils openssl
for service in unbound nsd; do
  if command -v service >/dev/null 2>&1; then
    service "$service" stop >/dev/null 2>&1 || true
  fi
done
