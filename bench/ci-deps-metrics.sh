#!/bin/sh
# The independent parser for the metrics test (tests/tests/metrics.rs):
# the Prometheus project's Python client, whose OpenMetrics parser reads
# what skein's /metrics answers. Debian's package, for /usr/bin/python3.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends python3-prometheus-client
