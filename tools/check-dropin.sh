#!/bin/sh
# tools/check-dropin.sh [--plain-only] BUILD - real programs on the drop-in
# pthread layer (docs/dropin-checks.md).
#
# Runs widely used multi-threaded Debian programs once as they are (glibc)
# and once under "BUILD/ksync-run --" (libksync-pthread.so preloaded) and
# checks that both runs exit 0 within a time bound and print the same (and
# the right) results:
#   pigz -p 8, xz -T4, zstd -T4   compress a generated 4 MiB text: the
#                                 compressed bytes are identical, and
#                                 decompressing gives back the input
#   python3 tools/dropin/threads.py   Lock, RLock, Condition, Semaphore,
#                                 Barrier, Event, queue.Queue from 16 threads
#   sqlite3 tools/dropin/sort.sql  sorts in 4 worker threads
#   sysbench mutex, sysbench threads (16 threads; the event count)
#   stress-ng --mutex, --sem       1 s each (exit 0, 'successful run completed')
# then a table of wall times, preloaded / plain (median of KSYNC_DROPIN_RUNS
# runs, default 5, taken alternately), stress-ng's bogo ops/s the same way,
# and the micro-benchmark
# tools/bench-dropin.sh.  Any mismatch, non-zero exit or time-out fails the
# script.  Before every preloaded run it checks that libksync-pthread is
# mapped in a process that ksync-run starts, and it stops with an error when
# the layer is missing.  --plain-only runs the plain half alone (to check
# the programs and the script on a machine without the layer).
#
# Environment: KSYNC_DROPIN_RUNS (timing runs, default 5),
# KSYNC_DROPIN_TIMEOUT (seconds for one command, default 120),
# KSYNC_DROPIN_NO_BENCH=1 (skip tools/bench-dropin.sh).
# Needs the packages of `sh tools/deps.sh dropin`.
set -eu

plain_only=0
if [ "${1:-}" = --plain-only ]; then
    plain_only=1
    shift
fi
[ $# -eq 1 ] || { echo "usage: $0 [--plain-only] BUILD" >&2; exit 2; }
BUILD=$1
RUN=$BUILD/ksync-run
top=$(cd "$(dirname "$0")/.." && pwd)
# Debian's interpreter, not whatever python3 comes first in PATH (a version
# manager's shim would be a shell script and another CPython).
PY=/usr/bin/python3
RUNS=${KSYNC_DROPIN_RUNS:-5}
TMO=${KSYNC_DROPIN_TIMEOUT:-120}
work=$(mktemp -d "${TMPDIR:-/tmp}/check-dropin.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

fail() {
    echo "check-dropin: FAIL: $*" >&2
    exit 1
}

for p in pigz xz zstd sqlite3 sysbench stress-ng timeout "$PY"; do
    command -v "$p" >/dev/null 2>&1 || fail "$p not found: run sh tools/deps.sh dropin (as root)"
done

# The layer must be in every preloaded process: ksync-run must exist, find
# the library and get it mapped.
assert_layer() {
    [ -x "$RUN" ] || fail "the drop-in pthread layer is missing: no $RUN (make dropin builds it)"
    maps=$("$RUN" -- cat /proc/self/maps 2>&1) ||
        fail "the drop-in pthread layer is missing: $RUN says: $maps"
    layer=$(printf '%s\n' "$maps" | awk '/libksync-pthread/ { print $NF; exit }')
    [ -n "$layer" ] ||
        fail "the drop-in pthread layer is missing: $RUN started cat without libksync-pthread mapped"
}

# run_one MODE OUT CMD...: run CMD (MODE plain, or ksync: under ksync-run),
# stdout to OUT and stderr to OUT.err; fail on a non-zero exit or time-out.
run_one() {
    mode=$1 out=$2
    shift 2
    if [ "$mode" = ksync ]; then
        [ "$timing" = 1 ] || assert_layer
        set -- "$RUN" -- "$@"
    fi
    rc=0
    timeout -k 5 "$TMO" nice -n 10 "$@" >"$out" 2>"$out.err" </dev/null || rc=$?
    case $rc in
    0) ;;
    124 | 137) fail "$mode: '$*' did not finish within ${TMO}s (hang?)" ;;
    *) fail "$mode: '$*' exited with status $rc; its last lines: $(tail -n 5 "$out.err" "$out" 2>/dev/null)" ;;
    esac
}

timing=0 # 1: the caller checks the layer, outside the timed interval
in=$work/in
sql=$top/tools/dropin/sort.sql
thr=$top/tools/dropin/threads.py

# The programs, by name: run_prog NAME MODE OUT.
run_prog() {
    case $1 in
    pigz) run_one "$2" "$3" pigz -n -p 8 -c "$in" ;;
    xz) run_one "$2" "$3" xz -T4 -3 --block-size=512KiB -c "$in" ;;
    zstd) run_one "$2" "$3" zstd -T4 -B512KiB -6 -q -c "$in" ;;
    python3) run_one "$2" "$3" "$PY" "$thr" ;;
    sqlite3) run_one "$2" "$3" sqlite3 :memory: ".read $sql" ;;
    sysbench-mutex)
        run_one "$2" "$3" sysbench mutex --threads=16 --mutex-num=4 --mutex-locks=400000 \
            --mutex-loops=50 run ;;
    sysbench-threads)
        run_one "$2" "$3" sysbench threads --threads=16 --thread-yields=10 --thread-locks=4 \
            --events=8000 --time=0 run ;;
    # Both stressors run for a fixed time, not a number of operations:
    # 0.15.06's sem stressor ignores --sem-ops (its parent waits for the
    # time-out), and its mutex stressor exits with status 3 ('could not
    # create any pthreads') when its first thread finishes --mutex-ops
    # before the creating loop looks at the stop flag.
    stress-ng-mutex) run_one "$2" "$3" stress-ng --mutex 2 --timeout 1s --metrics-brief ;;
    stress-ng-sem) run_one "$2" "$3" stress-ng --sem 2 --timeout 1s --metrics-brief ;;
    *) fail "unknown program $1" ;;
    esac
}

modes="plain ksync"
if [ $plain_only = 1 ]; then
    modes=plain
    echo "check-dropin: --plain-only: the programs on glibc alone; the drop-in layer is NOT tested"
else
    assert_layer
    echo "check-dropin: $RUN preloads $layer"
fi

"$PY" "$top/tools/dropin/gen_input.py" 4194304 >"$in"
[ "$(wc -c <"$in")" -eq 4194304 ] || fail "tools/dropin/gen_input.py wrote a short input"

# ---- correctness ---------------------------------------------------------------
ok() { printf '  ok  %-18s %s\n' "$1" "$2"; }
same=identical
[ $plain_only = 0 ] || same="(plain only)"

# compressors: same bytes plain and preloaded; each decompresses to the input
for c in pigz xz zstd; do
    for m in $modes; do
        run_prog "$c" "$m" "$work/$c.$m"
        case $c in
        pigz) run_one "$m" "$work/$c.$m.d" pigz -d -c "$work/$c.$m" ;;
        xz) run_one "$m" "$work/$c.$m.d" xz -d -T4 -c "$work/$c.$m" ;;
        zstd) run_one "$m" "$work/$c.$m.d" zstd -d -q -c "$work/$c.$m" ;;
        esac
        cmp -s "$work/$c.$m.d" "$in" || fail "$m: $c: decompressing its output does not give back the input"
    done
    [ $plain_only = 1 ] || cmp -s "$work/$c.plain" "$work/$c.ksync" ||
        fail "$c: the compressed output differs between plain and preloaded"
    ok "$c" "$(wc -c <"$work/$c.plain") bytes, $same, decompresses to the input"
done

# programs whose whole output is deterministic
for c in python3 sqlite3; do
    for m in $modes; do
        run_prog "$c" "$m" "$work/$c.$m"
    done
    case $c in
    python3) grep -qx 'all threading checks passed' "$work/$c.plain" ||
        fail "plain: python3 threads.py: $(tail -n 3 "$work/$c.plain")" ;;
    sqlite3) grep -qx '200000|370289516|00003039-1|7fffba6d-3917' "$work/$c.plain" ||
        fail "plain: sqlite3 sort.sql printed a wrong result: $(head -n 3 "$work/$c.plain")" ;;
    esac
    if [ $plain_only = 0 ] && ! cmp -s "$work/$c.plain" "$work/$c.ksync"; then
        diff "$work/$c.plain" "$work/$c.ksync" >&2 || true
        fail "$c: the output differs between plain and preloaded"
    fi
    ok "$c" "$(wc -l <"$work/$c.plain") lines, $same"
done

# sysbench: timings differ, the event count must not
for c in sysbench-mutex sysbench-threads; do
    case $c in sysbench-mutex) want=16 ;; *) want=8000 ;; esac
    for m in $modes; do
        run_prog "$c" "$m" "$work/$c.$m"
        got=$(sed -n 's/^ *total number of events: *\([0-9]*\)$/\1/p' "$work/$c.$m")
        [ "$got" = "$want" ] || fail "$m: $c: 'total number of events' is '$got', not $want"
    done
    ok "$c" "exit 0, total number of events: $want"
done

# stress-ng: exit 0 and its own verdict (it logs to stderr)
# bogo STRESSOR FIELD FILE: a field of its metrics line (5 bogo ops,
# 9 bogo ops/s in real time)
bogo() {
    awk -v s="${1#stress-ng-}" -v f="$2" '$1 == "stress-ng:" && $2 == "metrc:" && $4 == s && $5 ~ /^[0-9]+$/ { print $f; exit }' "$3"
}
for c in stress-ng-mutex stress-ng-sem; do
    for m in $modes; do
        run_prog "$c" "$m" "$work/$c.$m"
        cat "$work/$c.$m" "$work/$c.$m.err" >"$work/$c.$m.all"
        grep -q 'successful run completed' "$work/$c.$m.all" ||
            fail "$m: $c: no 'successful run completed': $(tail -n 3 "$work/$c.$m.all")"
        ops=$(bogo "$c" 5 "$work/$c.$m.all")
        [ "${ops:-0}" -gt 0 ] || fail "$m: $c: no bogo ops"
    done
    ok "$c" "exit 0, successful run completed, $ops bogo ops"
done
echo "check-dropin: every program exits 0 with the same results$( [ $plain_only = 1 ] && echo ' (plain only)')"

# ---- timing ----------------------------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
echo
echo "wall time, median of $RUNS runs each (plain and preloaded taken alternately)"
echo "cpu: ${cpu:-unknown}, $(nproc) online; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-18s %10s %10s %10s\n' program "plain s" "ksync s" ksync/plain
timing=1
# stress-ng is timed apart: it runs for its --timeout, whatever the speed.
for c in pigz xz zstd python3 sqlite3 sysbench-mutex sysbench-threads; do
    : >"$work/t.plain"
    : >"$work/t.ksync"
    i=0
    while [ $i -lt "$RUNS" ]; do
        for m in $modes; do
            [ "$m" = plain ] || assert_layer
            t0=$(date +%s.%N)
            run_prog "$c" "$m" "$work/timed"
            t1=$(date +%s.%N)
            awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }' >>"$work/t.$m"
        done
        i=$((i + 1))
    done
    p=$(median <"$work/t.plain")
    if [ $plain_only = 1 ]; then
        printf '%-18s %10.3f %10s %10s\n' "$c" "$p" - -
    else
        k=$(median <"$work/t.ksync")
        printf '%-18s %10.3f %10.3f %10.3f\n' "$c" "$p" "$k" "$(awk -v a="$k" -v b="$p" 'BEGIN { print a / b }')"
    fi
done
echo "(ksync/plain below 1: faster on the drop-in layer; the preloaded runs include ksync-run, one sh exec)"
echo
echo "stress-ng bogo ops/s (real time) in 1 s runs, median of $RUNS runs each"
printf '%-18s %12s %12s %10s\n' stressor plain ksync ksync/plain
for c in stress-ng-mutex stress-ng-sem; do
    : >"$work/t.plain"
    : >"$work/t.ksync"
    i=0
    while [ $i -lt "$RUNS" ]; do
        for m in $modes; do
            [ "$m" = plain ] || assert_layer
            run_prog "$c" "$m" "$work/timed"
            cat "$work/timed" "$work/timed.err" >"$work/timed.all"
            grep -q 'successful run completed' "$work/timed.all" ||
                fail "$m: $c: no 'successful run completed': $(tail -n 3 "$work/timed.all")"
            bogo "$c" 9 "$work/timed.all" >>"$work/t.$m"
        done
        i=$((i + 1))
    done
    p=$(median <"$work/t.plain")
    if [ $plain_only = 1 ]; then
        printf '%-18s %12.0f %12s %10s\n' "$c" "$p" - -
    else
        k=$(median <"$work/t.ksync")
        printf '%-18s %12.0f %12.0f %10.3f\n' "$c" "$p" "$k" "$(awk -v a="$k" -v b="$p" 'BEGIN { print a / b }')"
    fi
done
echo "(ksync/plain above 1: more operations on the drop-in layer)"
timing=0

if [ "${KSYNC_DROPIN_NO_BENCH:-0}" != 1 ]; then
    echo
    if [ $plain_only = 1 ]; then
        sh "$top/tools/bench-dropin.sh" --plain-only "$BUILD"
    else
        sh "$top/tools/bench-dropin.sh" "$BUILD"
    fi
fi
