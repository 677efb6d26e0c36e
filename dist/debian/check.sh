#!/bin/sh
# Builds and checks skein's Debian package (docs/operations.md,
# "Installing"). Run as root from the checkout (CI runs it from .ci/run):
#
#   sh dist/debian/check.sh            # build target/debian/skein_*.deb, check it
#   sh dist/debian/check.sh FILE.deb   # check FILE.deb
#   sh dist/debian/check.sh --update [FILE.deb]
#                                      # rewrite dist/debian/contents and
#                                      # installed from the package (after a
#                                      # deliberate change of the layout:
#                                      # review the diff before committing)
#
# 1. lintian reports no error and no warning;
# 2. every path in the package, with its owner and mode, is the list in
#    dist/debian/contents (dpkg-deb -c);
# 3. every unit's Documentation= file is in the package;
# 4. the package installs into a scratch root (dpkg --root with
#    --force-script-chrootless: the postinst runs with DPKG_ROOT set and
#    makes the account, the groups, the directories and the stat
#    overrides there, not on this machine), and every path there, with
#    its owner and mode as the scratch root's own account files name
#    them, is the list in dist/debian/installed;
# 5. a purge removes the stat overrides and keeps the spool and Maildirs.
#
# Needs cargo-deb 3.8.0 (cargo install cargo-deb --version 3.8.0 --locked),
# dpkg-dev and lintian (bench/ci-deps-packaging.sh).
set -eu
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

update=false
if [ "${1:-}" = --update ]; then
    update=true
    shift
fi
if [ $# -ge 1 ]; then
    deb=$1
else
    cd "$top"
    cargo build --release --workspace --locked
    sh dist/generate.sh target/release/skein target/generated
    deb=$(cargo deb -p skein-tools --no-build --strip | tail -1)
fi
echo "package: $deb"

# compare NAME WHAT: $work/NAME against dist/debian/NAME (or, with
# --update, written over it).
compare() {
    if $update; then
        cp "$work/$1" "$here/$1"
    elif ! diff -u "$here/$1" "$work/$1"; then
        echo "$2 differ from dist/debian/$1" >&2
        exit 1
    fi
}

echo "-- lintian (fails on an error or a warning; dist/debian/lintian-overrides says why each override is there)"
lintian --fail-on error,warning "$deb"

echo "-- contents (dpkg-deb -c) against dist/debian/contents"
# mode owner/group path [-> target]; sizes and dates vary between builds.
dpkg-deb -c "$deb" | awk '{ $3 = ""; $4 = ""; $5 = ""; print }' \
    | sed 's/   */ /g' | sort >"$work/contents"
compare contents "the package's paths, owners or modes"

echo "-- Documentation= of every unit is installed"
for doc in $(sed -n 's#^Documentation=file:##p' "$top"/dist/systemd/*.service "$top"/dist/systemd/*.target); do
    if ! grep -q " \.$doc\$" "$work/contents"; then
        echo "Documentation=file:$doc is not in the package" >&2
        exit 1
    fi
done

echo "-- install into a scratch root, postinst included"
root="$work/root"
mkdir -p "$root/etc" "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" \
    "$root/var/lib/dpkg/triggers" "$root/var/log"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'root:*:20000:0:99999:7:::' >"$root/etc/shadow"
echo 'root:*::' >"$root/etc/gshadow"
chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
# Only libc is missing from the empty database; nothing runs from it.
dpkg --root="$root" --force-script-chrootless --force-depends \
    --log="$work/dpkg.log" -i "$deb"
grep -q '^skein:' "$root/etc/passwd" || { echo "postinst made no account skein" >&2; exit 1; }
grep -q '^skeindrop:' "$root/etc/group" || { echo "postinst made no group skeindrop" >&2; exit 1; }
# Owners by name through the scratch root's account files.
(cd "$root" && find . \( -path ./var/lib/dpkg -o -path ./var/log \) -prune -o \
    \( -path ./etc/passwd -o -path ./etc/group -o -path ./etc/shadow -o -path ./etc/gshadow \
       -o -path './etc/*-' -o -path ./etc/.pwd.lock -o -path ./etc/subuid -o -path ./etc/subgid \) -prune -o \
    -printf '%M %U %G %p %l\n') \
    | awk -v passwd="$root/etc/passwd" -v group="$root/etc/group" '
        BEGIN {
            FS = ":"
            while ((getline line < passwd) > 0) { split(line, f, ":"); user[f[3]] = f[1] }
            while ((getline line < group) > 0) { split(line, f, ":"); grp[f[3]] = f[1] }
            FS = " "
        }
        $4 == "." { next }
        {
            link = ($5 != "") ? " -> " $5 : ""
            print $1, user[$2] "/" grp[$3], $4 link
        }' | sort >"$work/installed"
compare installed "the installed paths, owners or modes"
echo "-- purge: the stat overrides go, the spool and the account stay"
dpkg --root="$root" --force-script-chrootless --log="$work/dpkg.log" --purge skein
if [ -n "$(dpkg-statoverride --root "$root" --list)" ]; then
    echo "stat overrides left after the purge:" >&2
    dpkg-statoverride --root "$root" --list >&2
    exit 1
fi
for kept in var/spool/skein/maildrop var/lib/skein/mail; do
    [ -d "$root/$kept" ] || { echo "the purge removed /$kept" >&2; exit 1; }
done
[ ! -e "$root/usr/bin/skein" ] || { echo "the purge left /usr/bin/skein" >&2; exit 1; }
echo "Debian package OK: $deb"
