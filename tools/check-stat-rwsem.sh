#!/bin/sh
# tools/check-stat-rwsem.sh BUILD - lock statistics of pthread rwlocks and
# POSIX semaphores and pthread spinlocks through the drop-in layer
# (docs/lockstat.md): the plain pthread program tools/dropin/rwsem.c (a
# statically initialised rwlock, an initialised writer-preferring one, a
# bounded buffer's two semaphores and a spinlock; every form of lock, try
# and timed call) runs once on glibc and once under "ksync-run --stat=all".
# Its exit report must hold, for each lock side the program names, a row
# with exactly the acquisitions it made: read and write sides of both
# rwlocks and the spinlock with every hold timed, both semaphores with no
# hold (a semaphore has no holder).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 BUILD" >&2; exit 2; }
BUILD=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/check-stat-rwsem.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
    echo "check-stat-rwsem: FAIL: $*" >&2
    exit 1
}
[ -x "$BUILD/ksync-run" ] || fail "no $BUILD/ksync-run (make dropin)"
${CC:-cc} -O2 -Wall -Wextra -Werror -o "$work/rwsem" tools/dropin/rwsem.c -lpthread || fail "tools/dropin/rwsem.c does not build"
"$work/rwsem" >"$work/plain" 2>&1 || fail "on glibc: $(cat "$work/plain")"
KSYNC_LOCKSTAT_FILE="$work/report" KSYNC_LOCKSTAT_TOP=0 "$BUILD/ksync-run" --stat=all -- "$work/rwsem" >"$work/out" 2>&1 ||
    fail "under ksync-run --stat=all: $(cat "$work/out")"
[ -s "$work/report" ] || fail "no exit report in KSYNC_LOCKSTAT_FILE"
grep '^expect ' "$work/out" >"$work/expect" || fail "the program printed no expectations: $(cat "$work/out")"
# Report rows: class kind locks acquired contended wait(2 words) wait-max(2)
# hold-avg hold-max holds; a hold column is "-" when none was timed.  Each
# expectation takes a row of its kind with exactly its count (two semaphores
# may have the same count: each takes its own row).
awk '
    FNR == NR { want_kind[NR] = $2; want_n[NR] = $3; want_what[NR] = $4; nw = NR; next }
    $2 ~ /^(rw-rd|rw-wr|sem|spin)$/ && $3 == 1 { kind[++nr] = $2; acq[nr] = $4; holds[nr] = $NF; line[nr] = $0 }
    END {
        bad = 0
        for (w = 1; w <= nw; w++) {
            found = 0
            for (r = 1; r <= nr; r++) {
                if (used[r] || kind[r] != want_kind[w] || acq[r] != want_n[w])
                    continue
                if (kind[r] == "sem" ? holds[r] != 0 || line[r] !~ / - / : holds[r] != acq[r])
                    continue
                used[r] = 1
                found = 1
                printf "check-stat-rwsem: %-6s %-6s %6d acquisitions, %s\n", want_what[w], want_kind[w], want_n[w],
                       kind[r] == "sem" ? "no hold (none to time)" : "every hold timed"
                break
            }
            if (!found) {
                printf "check-stat-rwsem: FAIL: no %s row with %d acquisitions for %s\n", want_kind[w], want_n[w],
                       want_what[w] > "/dev/stderr"
                bad = 1
            }
        }
        exit bad
    }' "$work/expect" "$work/report" || { cat "$work/report" >&2; exit 1; }
sed -n '1,2p' "$work/report"
grep -E ' (rw-rd|rw-wr|sem|spin) ' "$work/report"
echo "check-stat-rwsem: every rwlock side, semaphore and spinlock counted exactly through the drop-in layer"
