#!/bin/sh
# shellcheck disable=SC2086 # $args is split into options on purpose
# tools/dropin-own.sh BUILD - the project's own pthread-using programs, once
# on glibc and once under BUILD/ksync-run (libksync-pthread.so preloaded):
#   - the stress runner (its pthread references, its threads and barriers):
#     the same scenarios with the same seed and sizes must give the same rows
#     (scenario, implementation, threads, verdict) both ways;
#   - the unit tests (Criterion's runner and the tests' threads, barriers
#     and pthread mutexes move onto the layer): all must pass preloaded.
#   - a preloaded library whose constructor locks, waits and runs a once
#     before the layer's own constructor (tools/dropin/early.c).
# Exit status 1 on any difference or failure.
set -eu
build=${1:?usage: $0 BUILD}
run="$build/ksync-run"
stress="$build/stress/ksync-stress"
tests="$build/tests/ksync-tests"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

rows() { awk '$4 ~ /^(PASS|FAIL|STALL)$/ || $6 ~ /^(PASS|FAIL|STALL)$/ {print $1, $2, $3, ($6 ~ /^(PASS|FAIL|STALL)$/ ? $6 : $4)}' "$1"; }

args="--scenario all --iters 2000 --seed 7" # split into the runner's options on purpose
echo "dropin-own: $stress $args, plain and preloaded"
timeout 600 "$stress" $args > "$tmp/plain.txt" 2>&1 || { cat "$tmp/plain.txt"; echo "dropin-own: the plain stress run failed" >&2; exit 1; }
timeout 600 "$run" -- "$stress" $args > "$tmp/pre.txt" 2>&1 || { cat "$tmp/pre.txt"; echo "dropin-own: the preloaded stress run failed" >&2; exit 1; }
rows "$tmp/plain.txt" > "$tmp/a"
rows "$tmp/pre.txt" > "$tmp/b"
n=$(wc -l < "$tmp/a")
if [ "$n" -eq 0 ] || ! diff "$tmp/a" "$tmp/b"; then
    echo "dropin-own: the stress rows differ between glibc and the layer (or none were found)" >&2
    exit 1
fi
echo "dropin-own: $n stress rows, identical (scenario, implementation, threads, verdict)"

cc -shared -fPIC -O2 -o "$tmp/early.so" tools/dropin/early.c -lpthread
lib=$(readlink -f "$build/libksync-pthread.so.0")
want="early: lock 0 relock EDEADLK timedwait ETIMEDOUT unlock 0 again EPERM once 1"
got=$(LD_PRELOAD="$lib $tmp/early.so" /bin/echo 2>&1 | head -1)
order=$(LD_DEBUG=files LD_PRELOAD="$lib $tmp/early.so" /bin/true 2>&1 | sed -n 's/.*calling init: //p' | grep -n "early.so\|libksync-pthread" | tr '\n' ' ')
case "$order" in
*early.so*libksync-pthread*) ;;
*) echo "dropin-own: the layer's constructor ran before early.so's ($order): the check would prove nothing" >&2; exit 1 ;;
esac
if [ "$got" != "$want" ]; then
    echo "dropin-own: a constructor that runs before the layer's: got '$got', want '$want'" >&2
    exit 1
fi
echo "dropin-own: before the layer's constructor: $got"

echo "dropin-own: $tests under $run"
timeout 900 "$run" -- "$tests" > "$tmp/tests.txt" 2>&1 || { grep -E "FAIL|Assert|Synthesis" "$tmp/tests.txt" | head -40; echo "dropin-own: the unit tests failed preloaded" >&2; exit 1; }
tail -1 "$tmp/tests.txt"
