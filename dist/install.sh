#!/bin/sh
# Installs skein on a system without dpkg: the same layout, account,
# groups and modes as the Debian package (dist/debian/postinst; the list
# of every path is dist/debian/installed). Run as root from the checkout
# after `cargo build --release --workspace`:
#
#   sh dist/install.sh [--from target/release] [--destdir DIR] [--unitdir DIR]
#
#   --from DIR     where the built binaries are (default: target/release)
#   --destdir DIR  install under DIR instead of / (a staging root; the
#                  account and groups are still made on this machine,
#                  since the owners are this machine's)
#   --unitdir DIR  where the systemd units go (default: /etc/systemd/system)
#
# It never overwrites /etc/skein/skein.toml, nor a sendmail or mailq that
# another MTA installed (it says so and leaves them). It enables nothing:
# afterwards `systemctl daemon-reload && systemctl enable --now skein.target`,
# or `skein -c /etc/skein/skein.toml start`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
from="$top/target/release"
destdir=""
unitdir=/etc/systemd/system
while [ $# -gt 0 ]; do
    case "$1" in
    --from) from=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    --unitdir) unitdir=$2; shift 2 ;;
    *) echo "usage: $0 [--from DIR] [--destdir DIR] [--unitdir DIR]" >&2; exit 64 ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run me as root (I make an account and set owners)" >&2
    exit 77
fi
commands="skein"
programs="skein-smtpd skein-router skein-scheduler skein-smtp skein-local skein-local-writer skein-postdrop"
for p in $commands $programs; do
    if [ ! -x "$from/$p" ]; then
        echo "install.sh: $from/$p is missing: build first (cargo build --release --workspace)" >&2
        exit 66
    fi
done
D=$destdir

echo "account skein, groups skein and skeindrop"
getent group skein >/dev/null || groupadd --system skein
getent passwd skein >/dev/null || useradd --system --gid skein \
    --home-dir /var/spool/skein --no-create-home \
    --shell /usr/sbin/nologin --comment "skein mail transfer agent" skein
getent group skeindrop >/dev/null || groupadd --system skeindrop

echo "programs: $D/usr/bin/skein, $D/usr/libexec/skein/"
install -d -m 0755 "$D/usr/bin" "$D/usr/sbin" "$D/usr/lib" "$D/usr/libexec/skein"
install -m 0755 -o root -g root "$from/skein" "$D/usr/bin/skein"
for p in $programs; do
    case "$p" in
    # The setgid door into maildrop/ for every local user.
    skein-postdrop) install -m 2755 -o root -g skeindrop "$from/$p" "$D/usr/libexec/skein/$p" ;;
    # Only the skein account runs the local agent (for local.home_mailbox
    # give it cap_setuid,cap_setgid=ep: docs/operations.md).
    skein-local) install -m 0750 -o root -g skein "$from/$p" "$D/usr/libexec/skein/$p" ;;
    *) install -m 0755 -o root -g root "$from/$p" "$D/usr/libexec/skein/$p" ;;
    esac
done

link() { # link TARGET NAME: NAME -> TARGET, unless NAME is another MTA's
    if [ -e "$2" ] || [ -L "$2" ]; then
        if [ "$(readlink "$2" || true)" != "$1" ]; then
            echo "  left $2 alone: it is not skein's (remove the other MTA, then run me again)"
            return 0
        fi
    fi
    ln -sfn "$1" "$2"
}
link ../bin/skein "$D/usr/sbin/sendmail"
link ../sbin/sendmail "$D/usr/lib/sendmail"
link skein "$D/usr/bin/mailq"

echo "configuration: $D/etc/skein/skein.toml"
install -d -m 0755 -o root -g root "$D/etc/skein"
if [ -e "$D/etc/skein/skein.toml" ]; then
    echo "  kept the existing one"
else
    install -m 0644 -o root -g root "$here/skein.toml" "$D/etc/skein/skein.toml"
fi

echo "systemd units: $D$unitdir"
install -d -m 0755 "$D$unitdir"
for u in skein.target skein-smtpd.service skein-router.service skein-scheduler.service; do
    install -m 0644 -o root -g root "$here/systemd/$u" "$D$unitdir/$u"
done

echo "documentation, manual pages, completions: $D/usr/share"
install -d -m 0755 "$D/usr/share/doc/skein/examples" "$D/usr/share/man/man1" "$D/usr/share/man/man8" \
    "$D/usr/share/bash-completion/completions" "$D/usr/share/zsh/vendor-completions" \
    "$D/usr/share/fish/vendor_completions.d"
install -m 0644 "$top/README.md" "$top"/docs/*.md "$D/usr/share/doc/skein/"
install -m 0644 "$here/systemd/skein-scheduler.service.d/home-mailbox.conf" "$D/usr/share/doc/skein/examples/"
generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
sh "$here/generate.sh" "$from/skein" "$generated"
for page in "$generated"/man/*.1 "$generated"/man/*.8; do
    section=${page##*.}
    gzip -9n <"$page" >"$D/usr/share/man/man$section/$(basename "$page").gz"
    chmod 0644 "$D/usr/share/man/man$section/$(basename "$page").gz"
done
install -m 0644 "$generated/completions/skein.bash" "$D/usr/share/bash-completion/completions/skein"
install -m 0644 "$generated/completions/_skein" "$D/usr/share/zsh/vendor-completions/_skein"
install -m 0644 "$generated/completions/skein.fish" "$D/usr/share/fish/vendor_completions.d/skein.fish"

echo "spool and Maildirs: $D/var/spool/skein, $D/var/lib/skein/mail"
install -d -m 0755 "$D/var" "$D/var/spool" "$D/var/lib"
install -d -o skein -g skein -m 0751 "$D/var/spool/skein"
install -d -o skein -g skeindrop -m 3770 "$D/var/spool/skein/maildrop"
install -d -o skein -g skein -m 0750 "$D/var/lib/skein"
install -d -o skein -g skein -m 0750 "$D/var/lib/skein/mail"
echo "skein installed${D:+ under $D}"
