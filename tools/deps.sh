#!/bin/sh
# Install what ksync's build, tests and references need, on Debian 12.
#   tools/deps.sh base           Criterion, Concurrency Kit, liburcu, pkg-config, valgrind,
#                                python3 (tests/test_python.c runs python/reader.py)
#   tools/deps.sh aarch64 DIR    cross gcc, qemu-user, arm64 libc and liburcu
#                                (multiarch), and Concurrency Kit for arm64
#                                unpacked into DIR (see below)
#   tools/deps.sh model          spin, the Promela model checker that
#                                `make model` runs (pan is built with cc)
#   tools/deps.sh dropin         the real multi-threaded programs that
#                                tools/check-dropin.sh runs plain and under
#                                the drop-in pthread layer (pigz, xz, zstd,
#                                python3, sqlite3, sysbench, stress-ng), and
#                                valgrind for its callgrind counts
#   tools/deps.sh plots          gnuplot (no X), which `make plots` runs on
#                                ksync-bench's CSV
#   tools/deps.sh docs           graphviz and mscgen, which `make docs` runs on
#                                docs/pictures/ (tools/pictures.sh)
# Idempotent: nothing runs apt when nothing is missing.  As non-root it
# prints the exact command to run and fails.
#
# Why CK for arm64 is unpacked rather than installed: libck-dev:amd64 and
# libck-dev:arm64 both ship /usr/include/ck_md.h with different contents, so
# dpkg cannot co-install them and installing one removes the other.
set -eu

native=$(dpkg --print-architecture)
set_name=${1:-base}
case "$set_name" in
base)    pkgs="libcriterion-dev:$native libck-dev:$native liburcu-dev:$native pkg-config valgrind python3"
         foreign= ;;
aarch64) pkgs="gcc-aarch64-linux-gnu qemu-user libc6:arm64 liburcu-dev:arm64"
         foreign=arm64 ;;
model)   pkgs="spin"
         foreign= ;;
dropin)  pkgs="pigz xz-utils zstd python3 sqlite3 sysbench stress-ng valgrind"
         foreign= ;;
plots)   pkgs="gnuplot-nox"
         foreign= ;;
docs)    pkgs="graphviz mscgen"
         foreign= ;;
*) echo "usage: $0 base | aarch64 DIR | model | dropin | plots | docs" >&2; exit 2 ;;
esac

missing=
for p in $pkgs; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    case "$st" in ii*) ;; *) missing="$missing $p" ;; esac
done

need_arch=
if [ -n "$foreign" ] && ! dpkg --print-foreign-architectures | grep -qx "$foreign"; then
    need_arch=$foreign
fi

if [ -n "$missing" ] || [ -n "$need_arch" ]; then
    cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y$missing"
    [ -n "$need_arch" ] && cmd="dpkg --add-architecture $need_arch && $cmd"
    if [ "$(id -u)" != 0 ]; then
        echo "ksync: missing packages:$missing" >&2
        echo "ksync: run as root:  $cmd" >&2
        exit 1
    fi
    echo "ksync: installing$missing" >&2
    [ -n "$need_arch" ] && dpkg --add-architecture "$need_arch"
    apt-get update -qq
    [ -n "$missing" ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

if [ "$set_name" = aarch64 ]; then
    dir=${2:?usage: $0 aarch64 DIR}
    if [ ! -f "$dir/usr/lib/aarch64-linux-gnu/libck.a" ]; then
        mkdir -p "$dir"
        tmp=$(mktemp -d)
        chmod 777 "$tmp" # apt's download sandbox user must be able to write there
        (cd "$tmp" && apt-get download -qq libck-dev:arm64 2>/dev/null ||
            { apt-get update -qq && apt-get download -qq libck-dev:arm64; })
        dpkg -x "$tmp"/libck-dev_*_arm64.deb "$dir"
        rm -rf "$tmp"
    fi
fi
