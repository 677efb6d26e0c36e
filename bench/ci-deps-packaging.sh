#!/bin/sh
# What dist/debian/check.sh needs (Debian): lintian, and dpkg-dev for
# cargo-deb's dependency list (dpkg-shlibdeps). cargo-deb itself is a
# Rust tool: .ci/run installs it with cargo.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends lintian dpkg-dev
