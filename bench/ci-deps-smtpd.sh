#!/bin/sh
# Packages the skein-smtpd tests and checks need (Debian):
#   swaks (+ its TLS modules): tests/tests/smtpd_swaks.rs
#   systemd (systemd-analyze): dist/systemd/verify.sh
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends \
    swaks libnet-ssleay-perl libio-socket-ssl-perl \
    systemd
