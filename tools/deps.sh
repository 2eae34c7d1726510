#!/bin/sh
# Install what ksync's build, tests and references need, on Debian 12.
#   tools/deps.sh base      Criterion, Concurrency Kit, liburcu, pkg-config, valgrind
#   tools/deps.sh aarch64   cross gcc, qemu-user and the arm64 libraries the
#                           cross-built stress runner links (multiarch)
# Idempotent: a package that is already installed is not asked for again, and
# nothing runs apt when nothing is missing. As non-root it prints the exact
# command to run and fails.
set -eu

set_name=${1:-base}
case "$set_name" in
base)    pkgs="libcriterion-dev libck-dev liburcu-dev pkg-config valgrind"; arch_needed= ;;
aarch64) pkgs="gcc-aarch64-linux-gnu qemu-user libc6:arm64 libck-dev:arm64 liburcu-dev:arm64"; arch_needed=arm64 ;;
*) echo "usage: $0 base|aarch64" >&2; exit 2 ;;
esac

missing=
for p in $pkgs; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    case "$st" in ii*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y$missing"
if [ -n "$arch_needed" ]; then
    cmd="dpkg --add-architecture $arch_needed && $cmd"
fi
if [ "$(id -u)" != 0 ]; then
    echo "ksync: missing packages:$missing" >&2
    echo "ksync: run as root:  $cmd" >&2
    exit 1
fi
echo "ksync: installing$missing" >&2
if [ -n "$arch_needed" ] && ! dpkg --print-foreign-architectures | grep -qx "$arch_needed"; then
    dpkg --add-architecture "$arch_needed"
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
