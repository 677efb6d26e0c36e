#!/bin/sh
# Peers for the SMTP interop tests (tests/tests/smtp_interop.rs) and the
# WAN benchmark (bench/wan): Postfix (whose smtp-sink is the test peer and
# whose smtp client is the benchmark's baseline) and Python's aiosmtpd.
# Run as root before `cargo test`. Postfix is installed unconfigured and
# not started: the tests and the benchmark run what they need themselves.
set -eu
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix python3-aiosmtpd
