#!/bin/sh
# tools/check-top.sh BUILD - ksync-top on a running, unmodified Debian
# program (docs/lockstat.md, "The live view"): sysbench's mutex test with 8
# threads under "ksync-run --stat".  While it runs, "ksync-top -b -n 3 PID"
# must show its page (the program's name, its mutex classes); after it
# exits, the page must be gone and the exit report printed.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 BUILD" >&2; exit 2; }
BUILD=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/check-top.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
    echo "check-top: FAIL: $*" >&2
    exit 1
}
command -v sysbench >/dev/null 2>&1 || fail "sysbench not found: run sh tools/deps.sh dropin (as root)"
[ -x "$BUILD/ksync-top" ] || fail "no $BUILD/ksync-top (make)"

# The page is first written when the layer loads, before sysbench has made
# its mutexes, then every KSYNC_LOCKSTAT_TOP ms: 100 ms here, so that the
# later looks below see sysbench's classes (with the default 1 s, two looks
# 0.5 s apart could both read the first page: a CI run failed so).
KSYNC_LOCKSTAT_TOP=100 "$BUILD/ksync-run" --stat -- sysbench mutex --threads=8 --mutex-locks=300000 run \
    >"$work/out" 2>"$work/err" &
pid=$!
i=0
while [ ! -e "/dev/shm/ksync-lockstat.$pid" ]; do
    i=$((i + 1))
    [ $i -le 100 ] || fail "no page for pid $pid after 5 s"
    kill -0 $pid 2>/dev/null || fail "sysbench ended before its page appeared: $(tail -n 3 "$work/err")"
    sleep 0.05
done
"$BUILD/ksync-top" -b -n 3 -d 0.3 $pid >"$work/top" || fail "ksync-top exited non-zero: $(cat "$work/top")"
wait $pid || fail "sysbench under ksync-run --stat exited non-zero"
grep -q "^ksync-top: pid $pid (sysbench)" "$work/top" || fail "no header for sysbench: $(head -n 3 "$work/top")"
grep -q ' mutex ' "$work/top" || fail "no mutex class in ksync-top's view: $(cat "$work/top")"
[ ! -e "/dev/shm/ksync-lockstat.$pid" ] || fail "the page outlived the process"
grep -q "^ksync lockstat, pid $pid" "$work/err" || fail "no exit report"
sed -n '1,6p' "$work/top"
echo "check-top: ksync-top read sysbench's live page three times; the page went with the process"
