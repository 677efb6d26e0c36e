#!/bin/sh
# The independent DKIM verifier for tests/tests/dkim.rs: dkimpy (Debian's
# python3-dkim), which checks skein's signatures against the public key
# the test hands it in place of a DNS lookup. Debian's package, for
# /usr/bin/python3.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends python3-dkim
apt-get install -y -q --no-install-recommends python3-nacl
