#!/bin/sh
# What tests/tests/privileges.rs needs besides the base system (Debian):
#   libcap2-bin (setcap): skein-local's file capabilities for delivery to
#     system users' home Maildirs
#   passwd (useradd, groupadd) and util-linux (setpriv, unshare) are
#     essential packages, listed so that a minimal image gets them too
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends libcap2-bin passwd util-linux
