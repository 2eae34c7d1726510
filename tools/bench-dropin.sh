#!/bin/sh
# tools/bench-dropin.sh [--plain-only] BUILD - the drop-in layer's figures
# (docs/dropin-checks.md): BUILD/stress/dropin-bench (stress/dropin_bench.c,
# a plain pthread program) run as it is (glibc) and under BUILD/ksync-run.
#
#   Ir/pair    instructions per pthread_mutex_lock+unlock pair on one
#              thread, counted by valgrind's callgrind in the loop function
#              alone (--toggle-collect=loop_mutex), at two iteration counts:
#              (count(N2) - count(N1)) / (N2 - N1), so the warm-up, lazy
#              binding and start-up cancel out; the same for the empty loop
#              (loop_empty), which is subtracted in the "net" column
#   ns/pair    the same loop timed, 10^7 pairs, median of REPS runs
#   counter    T threads loop { lock; counter++; unlock } for SECONDS s,
#              ops/s, T = 2 and 16, median of REPS runs each side, the runs
#              taken alternately, then the ratio ksync / glibc
#   handoff    two threads passing a token through a mutex and two condvars
#   rwlock     16 threads, read lock, write lock on every 100th operation
#   limiter    16 threads through a 3-permit sem_t, 300 ns of work each
#              time: sem_wait, then sem_timedwait (a deadline 1 h after the run)
#
# The targets (reported, never failed on): fewer instructions than glibc
# uncontended; the counter at least 1.2x glibc at 2 threads and 1.5x at 16.
# The script fails when a run exits non-zero (dropin-bench checks its own
# counts) or does not finish in time, or when the layer is missing.
# Environment: KSYNC_DROPIN_REPS (default 5), KSYNC_DROPIN_SECONDS (default 1).
set -eu

plain_only=0
if [ "${1:-}" = --plain-only ]; then
    plain_only=1
    shift
fi
[ $# -eq 1 ] || { echo "usage: $0 [--plain-only] BUILD" >&2; exit 2; }
BUILD=$1
RUN=$BUILD/ksync-run
BENCH=$BUILD/stress/dropin-bench
REPS=${KSYNC_DROPIN_REPS:-5}
SECS=${KSYNC_DROPIN_SECONDS:-1}
N1=100000
N2=300000
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-dropin.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

fail() {
    echo "bench-dropin: FAIL: $*" >&2
    exit 1
}
[ -x "$BENCH" ] || fail "$BENCH not built (make $BENCH)"
command -v valgrind >/dev/null 2>&1 || fail "valgrind not found: run sh tools/deps.sh dropin (as root)"

assert_layer() {
    [ -x "$RUN" ] || fail "the drop-in pthread layer is missing: no $RUN (make dropin builds it)"
    maps=$("$RUN" -- cat /proc/self/maps 2>&1) ||
        fail "the drop-in pthread layer is missing: $RUN says: $maps"
    case $maps in
    *libksync-pthread*) ;;
    *) fail "the drop-in pthread layer is missing: $RUN started cat without libksync-pthread mapped" ;;
    esac
}

modes="plain ksync"
[ $plain_only = 0 ] || modes=plain
[ $plain_only = 1 ] || assert_layer

# bench MODE OUT ARGS...: one run of dropin-bench (under valgrind when the
# first argument is "valgrind"), stdout to OUT.
bench() {
    mode=$1 out=$2
    shift 2
    if [ "${1:-}" = valgrind ]; then
        shift
        set -- valgrind "$@" "$BENCH"
    else
        set -- "$BENCH"
    fi
    if [ "$mode" = ksync ]; then
        assert_layer
        set -- "$RUN" -- "$@"
    fi
    rc=0
    # shellcheck disable=SC2086 # $args: the bench's options, split on purpose
    timeout -k 5 300 nice -n 10 "$@" $args >"$out" 2>"$out.err" </dev/null || rc=$?
    case $rc in
    0) ;;
    124 | 137) fail "$mode: '$* $args' did not finish within 300s (hang?)" ;;
    *) fail "$mode: '$* $args' exited with status $rc: $(tail -n 5 "$out.err")" ;;
    esac
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }'; }
verdict() { # RATIO OP TARGET
    awk -v r="$1" -v t="$3" -v op="$2" 'BEGIN {
        if (r == "-") { print ""; exit }
        ok = (op == ">=") ? (r >= t) : (r < t)
        printf "%s (target %s %s)", ok ? "meets" : "MISSES", op, t }'
}

cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
echo "dropin-bench: ${cpu:-unknown cpu}, $(nproc) online, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- uncontended: callgrind instructions per pair ---------------------------
# cg MODE LOOP: instructions per iteration of LOOP (loop_mutex or loop_empty)
cg() {
    case $2 in loop_mutex) flag=--uncontended ;; *) flag=--empty ;; esac
    for n in $N1 $N2; do
        args="$flag $n"
        bench "$1" "$work/cg.out" valgrind --tool=callgrind --collect-atstart=no \
            --toggle-collect="$2" --callgrind-out-file="$work/cg.$1.$2.$n"
        awk '/^totals:/ { print $2 }' "$work/cg.$1.$2.$n" >"$work/cg.$1.$2.$n.total"
        [ -s "$work/cg.$1.$2.$n.total" ] || fail "$1: no totals: line in callgrind's output for $2"
    done
    awk -v a="$(cat "$work/cg.$1.$2.$N1.total")" -v b="$(cat "$work/cg.$1.$2.$N2.total")" \
        -v n="$((N2 - N1))" 'BEGIN { printf "%.2f", (b - a) / n }'
}
# the timed loop, 10^7 pairs
ns() {
    : >"$work/ns.$1"
    i=0
    while [ $i -lt "$REPS" ]; do
        args="--uncontended 10000000"
        bench "$1" "$work/ns.out"
        field ns_per_pair "$work/ns.out" >>"$work/ns.$1"
        i=$((i + 1))
    done
    median <"$work/ns.$1"
}

echo
echo "uncontended pthread_mutex_lock+unlock, one thread (callgrind: loop only, ($N2 - $N1 pairs) difference)"
printf '%-8s %10s %10s %10s %12s\n' "" "Ir/pair" "empty" "net" "ns/pair"
for m in $modes; do
    ir=$(cg "$m" loop_mutex)
    e=$(cg "$m" loop_empty)
    net=$(awk -v a="$ir" -v b="$e" 'BEGIN { printf "%.2f", a - b }')
    t=$(ns "$m")
    eval "ir_$m=\$net ns_$m=\$t"
    printf '%-8s %10s %10s %10s %12s\n' "$m" "$ir" "$e" "$net" "$t"
done
if [ $plain_only = 0 ]; then
    # shellcheck disable=SC2154 # set by the eval above
    r=$(ratio "$ir_ksync" "$ir_plain")
    # shellcheck disable=SC2154
    printf 'ksync/glibc  Ir %s  %s;  ns %s\n' "$r" "$(verdict "$r" "<" 1)" "$(ratio "$ns_ksync" "$ns_plain")"
fi

# ---- contended counter, handoff, rwlock -----------------------------------------
# timed KIND LABEL ARGS: median ops/s of REPS runs per mode, alternately
timed() {
    kind=$1 label=$2
    shift 2
    for m in $modes; do : >"$work/t.$m"; done
    i=0
    while [ $i -lt "$REPS" ]; do
        for m in $modes; do
            args="$*"
            bench "$m" "$work/t.out"
            field ops_per_s "$work/t.out" >>"$work/t.$m"
        done
        i=$((i + 1))
    done
    p=$(median <"$work/t.plain")
    if [ $plain_only = 1 ]; then
        printf '%-26s %14.0f %14s %8s\n' "$label" "$p" - -
        return
    fi
    k=$(median <"$work/t.ksync")
    r=$(ratio "$k" "$p")
    case $kind in
    counter2) v=$(verdict "$r" ">=" 1.2) ;;
    counter16) v=$(verdict "$r" ">=" 1.5) ;;
    *) v= ;;
    esac
    printf '%-26s %14.0f %14.0f %8s  %s\n' "$label" "$p" "$k" "$r" "$v"
}

echo
echo "ops/s, median of $REPS runs of ${SECS}s each (handoff: round trips/s); ratio above 1: ksync faster"
printf '%-26s %14s %14s %8s\n' "" glibc ksync ksync/glibc
timed counter2 "counter, 2 threads" --threads 2 --seconds "$SECS"
timed counter16 "counter, 16 threads" --threads 16 --seconds "$SECS"
timed handoff "cond handoff, 2 threads" --handoff --seconds "$SECS"
timed rwlock "rwlock 1% writes, 16 thr" --rwlock --threads 16 --seconds "$SECS"
timed limiter "sem_wait limiter, 16 thr" --limiter --threads 16 --seconds "$SECS"
timed limiter "sem_timedwait limiter, 16" --limiter --timed --threads 16 --seconds "$SECS"
