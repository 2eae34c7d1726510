#!/bin/sh
# tools/check-annotate.sh BUILD - race detectors and ksync's annotations
# (docs/annotate.md).  tests/annotate/guarded.c (plain data guarded by a
# ks_mutex, a ks_cond hand-off and a ks_rwlock) is built against
# BUILD/libksync.a, the library as it is installed: uninstrumented.
#
#   ThreadSanitizer  -fsanitize=thread: no report with the annotations;
#                    with -DKS_NO_ANNOTATIONS, reports (the detector cannot
#                    see the library's acquisitions: false races), in at
#                    least one of three runs
#   Helgrind, DRD    -DKSYNC_HELGRIND / -DKSYNC_DRD, under valgrind with
#                    tools/ksync.supp: 0 errors with the annotations, errors
#                    without
# Each run must also exit 0 (the program checks its own counts).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 BUILD" >&2; exit 2; }
BUILD=$1
top=$(cd "$(dirname "$0")/.." && pwd)
CC=${CC:-cc}
work=$(mktemp -d "${TMPDIR:-/tmp}/check-annotate.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
    echo "check-annotate: FAIL: $*" >&2
    exit 1
}
[ -f "$BUILD/libksync.a" ] || fail "no $BUILD/libksync.a (make)"
build() { # OUT FLAGS...
    out=$1
    shift
    $CC -D_GNU_SOURCE -I"$top/include" -std=c11 -Wall -Wextra -Werror -O1 -g "$@" -o "$out" \
        "$top/tests/annotate/guarded.c" "$BUILD/libksync.a" -lpthread || fail "cannot build $out"
}

build "$work/tsan" -fsanitize=thread
build "$work/tsan-none" -fsanitize=thread -DKS_NO_ANNOTATIONS
rc=0
"$work/tsan" >"$work/out" 2>&1 || rc=$?
n=$(grep -c 'WARNING: ThreadSanitizer' "$work/out" || true)
[ $rc -eq 0 ] && [ "$n" -eq 0 ] || { sed 's/^/    /' "$work/out" >&2; fail "TSan, annotated: status $rc, $n report(s)"; }
seen=0
for i in 1 2 3; do
    "$work/tsan-none" >"$work/out" 2>&1 || true
    n=$(grep -c 'WARNING: ThreadSanitizer: data race' "$work/out" || true)
    [ "$n" -gt 0 ] && { seen=$n; break; }
done
[ "$seen" -gt 0 ] || fail "TSan without annotations reported nothing in 3 runs: the check shows nothing"
echo "check-annotate: ThreadSanitizer: 0 reports with the annotations, $seen false race(s) without"

command -v valgrind >/dev/null 2>&1 || fail "valgrind not found: run sh tools/deps.sh base (as root)"
for tool in helgrind drd; do
    flag=-DKSYNC_$(echo $tool | tr a-z A-Z)
    build "$work/$tool" "$flag"
    build "$work/$tool-none" "$flag" -DKS_NO_ANNOTATIONS
    errs() { # PROG: valgrind's error count
        timeout -k 5 600 valgrind --tool=$tool --suppressions="$top/tools/ksync.supp" --error-exitcode=0 "$1" \
            >"$work/vg.out" 2>&1 || fail "$tool: $1 exited non-zero: $(tail -n 5 "$work/vg.out")"
        sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$work/vg.out" | tail -n 1
    }
    a=$(errs "$work/$tool")
    b=$(errs "$work/$tool-none")
    [ "$a" = 0 ] || fail "$tool, annotated: $a error(s)"
    [ "${b:-0}" -gt 0 ] || fail "$tool without annotations: no error: the check shows nothing"
    echo "check-annotate: $tool: 0 errors with the annotations, $b without"
done
