#!/bin/sh
# Writes what is generated from skein's command-line definitions, for the
# package and dist/install.sh: the manual pages and the shell completions.
#   sh dist/generate.sh SKEIN OUTDIR
# SKEIN is the built `skein` (e.g. target/release/skein); OUTDIR gets
#   man/*.1 man/*.8                     (skein manpages)
#   completions/skein.bash _skein skein.fish   (skein completions SHELL)
set -eu
skein=$1
out=$2
rm -rf "$out/man" "$out/completions"
mkdir -p "$out/completions"
"$skein" manpages "$out/man"
"$skein" completions bash >"$out/completions/skein.bash"
"$skein" completions zsh >"$out/completions/_skein"
"$skein" completions fish >"$out/completions/skein.fish"
