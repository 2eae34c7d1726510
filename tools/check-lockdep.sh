#!/bin/sh
# tools/check-lockdep.sh BUILD - lock-order checking through the drop-in
# layer, on a program that was not written for ksync (docs/lockdep.md):
# BUILD/examples/bank_abba, the course's deadlock as a plain pthread program.
#
#   1. the tellers together under "ksync-run --lockdep=abort": the program
#      would hang; it must die of SIGABRT within 30 s, its report naming the
#      inversion and the cycle;
#   2. the tellers one after the other under "ksync-run --lockdep": no
#      deadlock in this run; it must exit 0 with "total 200" and the report;
#   3. the same with the accounts' mutexes left as PTHREAD_MUTEX_INITIALIZER
#      made them (never initialised, never contended): reported too;
#   4. the tellers together with the watchdog (KSYNC_LOCKDEP_WATCHDOG=300):
#      the deadlock happens, and the watchdog reports the wait-for cycle
#      (the run is stopped by timeout after 3 s);
#   5. the same without the checker: exit 0, no report.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 BUILD" >&2; exit 2; }
BUILD=$1
RUN=$BUILD/ksync-run
PROG=$BUILD/examples/bank_abba
work=$(mktemp -d "${TMPDIR:-/tmp}/check-lockdep.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
    echo "check-lockdep: FAIL: $*" >&2
    [ -f "$work/err" ] && sed 's/^/    /' "$work/err" >&2
    exit 1
}
[ -x "$RUN" ] && [ -x "$PROG" ] || fail "missing $RUN or $PROG (make dropin $PROG)"

rc=0
timeout -k 5 30 "$RUN" --lockdep=abort -- "$PROG" >"$work/out" 2>"$work/err" || rc=$?
[ $rc -eq 134 ] || fail "tellers together, --lockdep=abort: exit status $rc, expected 134 (SIGABRT; 124 is a hang)"
grep -q 'possible deadlock: lock order inversion' "$work/err" || fail "tellers together: no inversion report"
grep -q '^    cycle: ' "$work/err" || fail "tellers together: the report names no cycle"
echo "check-lockdep: tellers together: reported, then aborted before the deadlock"

rc=0
timeout -k 5 30 "$RUN" --lockdep -- "$PROG" 1 >"$work/out" 2>"$work/err" || rc=$?
[ $rc -eq 0 ] || fail "tellers in turn, --lockdep: exit status $rc"
grep -qx 'total 200' "$work/out" || fail "tellers in turn: wrong total: $(cat "$work/out")"
[ "$(grep -c 'possible deadlock: lock order inversion' "$work/err")" -eq 1 ] ||
    fail "tellers in turn: expected one inversion report"
echo "check-lockdep: tellers in turn: no deadlock in this run, the inversion reported once"

rc=0
timeout -k 5 30 "$RUN" --lockdep -- "$PROG" 1 static >"$work/out" 2>"$work/err" || rc=$?
[ $rc -eq 0 ] && grep -qx 'total 200' "$work/out" || fail "static mutexes, tellers in turn: status $rc"
[ "$(grep -c 'possible deadlock: lock order inversion' "$work/err")" -eq 1 ] ||
    fail "static mutexes (PTHREAD_MUTEX_INITIALIZER): expected one inversion report"
echo "check-lockdep: the same with static mutexes: reported once"

rc=0
KSYNC_LOCKDEP_WATCHDOG=300 timeout -k 2 3 "$RUN" --lockdep -- "$PROG" >"$work/out" 2>"$work/err" || rc=$?
[ $rc -eq 124 ] || fail "tellers together, --lockdep with the watchdog: status $rc, expected the deadlock (124)"
grep -q 'ksync lockdep watchdog: deadlock: threads wait for each other' "$work/err" ||
    fail "tellers together: the watchdog did not report the deadlock"
echo "check-lockdep: tellers together, really deadlocked: the watchdog reported the wait-for cycle"

rc=0
timeout -k 5 30 "$RUN" -- "$PROG" 1 >"$work/out" 2>"$work/err" || rc=$?
[ $rc -eq 0 ] && [ ! -s "$work/err" ] || fail "tellers in turn without the checker: status $rc or output on stderr"
echo "check-lockdep: tellers in turn, checker off: silent"
