#!/bin/sh
# tests/model/run.sh - run every Promela model of ksync's futex protocols
# with spin and check the expected outcome (docs/model.md):
#   pass  the protocol as in src/: exhaustive search, no error
#   fail  a BUG_ variant (the protocol broken the way a real bug broke it):
#         pan must report an assertion violation or an invalid end state
# Usage: tests/model/run.sh [OUT_DIR [NAME_FILTER]]   (from the repository
# root; OUT_DIR defaults to build/model).  One line per check, then
# "model: N passed, M failed"; exits 1 if any check had an unexpected result.
#
# Each pan is compiled with -DSAFETY (assertions + invalid end states) and
# -DMEMLIM=2048 (MB: a search that would need more stops, and counts as a
# failed check rather than an incomplete pass), and runs under nice -n 10
# with a 300 s limit.  A BUG_ variant passes only with an assertion
# violation or an invalid end state (not, say, an array index error).
# Counterexamples: OUT_DIR/<check>/trail.txt (the models' printf lines and
# the final state) and trail-full.txt (spin -t -p -g).
# The flags are split on spaces on purpose (unquoted $defs, $panflags).
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/model}
filter=${2:-}
mkdir -p "$out"
out=$(cd "$out" && pwd)
CC=${CC:-cc}
DEPTH=${DEPTH:-100000}

# name               model       expect  pan cc flags  spin -D flags
checks='
mutex                mutex.pml   pass    -             -DSPURIOUS=1
mutex-starve-residue mutex.pml   fail    -             -DSPURIOUS=1 -DBUG_STARVE_RESIDUE
mutex-no-slept-c     mutex.pml   fail    -             -DSPURIOUS=1 -DBUG_NO_SLEPT_C
mutex-2t3r           mutex.pml   pass    -             -DSPURIOUS=1 -DNT=2 -DRND=3
mutex-2t3r-residue   mutex.pml   fail    -             -DSPURIOUS=1 -DNT=2 -DRND=3 -DBUG_STARVE_RESIDUE
mutex-4t             mutex.pml   pass    -DCOLLAPSE    -DNT=4
mutex-4t-residue     mutex.pml   fail    -DCOLLAPSE    -DNT=4 -DBUG_STARVE_RESIDUE
cond-destroy         cond.pml    pass    -             -DSCEN_DESTROY -DNWAIT=2 -DSPURIOUS=1
cond-mixed           cond.pml    pass    -DCOLLAPSE    -DSCEN_MIXED -DSPURIOUS=1
cond-signal          cond.pml    pass    -DCOLLAPSE    -DSCEN_SIGNAL -DSPURIOUS=1
cond-destroy-nowake  cond.pml    fail    -             -DSCEN_DESTROY -DNWAIT=2 -DSPURIOUS=1 -DBUG_DESTROY_NO_MUTEX_WAKE
cond-last-access     cond.pml    fail    -             -DSCEN_DESTROY -DNWAIT=2 -DSPURIOUS=1 -DBUG_LAST_ACCESS
cond-latest-mutex    cond.pml    fail    -DCOLLAPSE    -DSCEN_MIXED -DSPURIOUS=1 -DBUG_LATEST_MUTEX
cond-requeue-err     cond.pml    fail    -DCOLLAPSE    -DSCEN_SIGNAL -DSPURIOUS=1 -DBUG_REQUEUE_ERR
cond-issue-order     cond.pml    pass    -             -DSCEN_MIXED -DISSUE_ORDER
cond-issue-latest    cond.pml    fail    -             -DSCEN_MIXED -DISSUE_ORDER -DBUG_LATEST_MUTEX
cond-late            cond.pml    pass    -DCOLLAPSE    -DSCEN_LATE
cond-late-no-recheck cond.pml    fail    -DCOLLAPSE    -DSCEN_LATE -DBUG_NO_RECHECK
cond-dmixed          cond.pml    pass    -DCOLLAPSE    -DSCEN_DMIXED
cond-dmixed-forgets  cond.pml    fail    -DCOLLAPSE    -DSCEN_DMIXED -DBUG_MIXED_FORGETS
cond-brief-late      cond.pml    fail    -DCOLLAPSE    -DSCEN_LATE -DBUG_NO_RECHECK -DBUG_MIXED_FORGETS
cond-brief-dmixed    cond.pml    fail    -DCOLLAPSE    -DSCEN_DMIXED -DBUG_NO_RECHECK -DBUG_MIXED_FORGETS
sem                  sem.pml     pass    -             -DNWAITER=2 -DNPOST=2
sem-no-chain         sem.pml     fail    -             -DNWAITER=2 -DNPOST=2 -DBUG_NO_CHAIN
sem-stale-n          sem.pml     fail    -             -DNWAITER=2 -DNPOST=2 -DBUG_STALE_N
sem-watch-untimed    sem.pml     fail    -             -DNWAITER=2 -DNPOST=2 -DBUG_WATCH_UNTIMED
sem-3x3              sem.pml     pass    -DCOLLAPSE    -DNWAITER=3 -DNPOST=3
event                event.pml   pass    -             -DNWAITER=3
event-no-gen         event.pml   fail    -             -DNWAITER=3 -DBUG_NO_GEN
event-clear-sleepers event.pml   fail    -             -DNWAITER=3 -DBUG_CLEAR_SLEEPERS
rwlock-2w1r          rwlock.pml  pass    -             -DNWR=2 -DNRD=1
rwlock-1w2r          rwlock.pml  pass    -             -DNWR=1 -DNRD=2
rwlock-dep           rwlock.pml  pass    -DCOLLAPSE    -DNWR=2 -DNRD=2 -DRD_DEP
rwlock-wake-no-mask  rwlock.pml  fail    -             -DNWR=2 -DNRD=1 -DBUG_WAKE_NO_MASK
rwlock-giveup-nowake rwlock.pml  fail    -DCOLLAPSE    -DNWR=2 -DNRD=2 -DRD_DEP -DBUG_GIVEUP_NO_READER_WAKE
rwbias-1w2r          rwlock_bias.pml pass  -             -DNWR=1 -DNRD=2 -DNSLOT=2
rwbias-2w2r          rwlock_bias.pml pass  -             -DNWR=2 -DNRD=2 -DNSLOT=2
rwbias-1w3r          rwlock_bias.pml pass  -             -DNWR=1 -DNRD=3 -DNSLOT=2
rwbias-2w3r-3slots   rwlock_bias.pml pass  -DCOLLAPSE    -DNWR=2 -DNRD=3 -DNSLOT=3
rwbias-no-recheck    rwlock_bias.pml fail  -             -DNWR=1 -DNRD=2 -DBUG_NO_RECHECK
rwbias-scan-first    rwlock_bias.pml fail  -             -DNWR=1 -DNRD=2 -DBUG_SCAN_FIRST
rwbias-plain-leave   rwlock_bias.pml fail  -             -DNWR=1 -DNRD=2 -DBUG_PLAIN_LEAVE
barrier              barrier.pml pass    -             -DNB=3 -DRND=2
barrier-phase-late   barrier.pml fail    -             -DNB=3 -DRND=2 -DBUG_PHASE_AFTER_ARRIVE
barrier-reset-late   barrier.pml fail    -             -DNB=3 -DRND=2 -DBUG_RESET_AFTER_RELEASE
barrier-no-leaving   barrier.pml fail    -             -DNB=3 -DRND=2 -DBUG_NO_LEAVING
queue-baton          queue_baton.pml pass -DCOLLAPSE  -DNGET=2 -DNPUT=2 -DMAXBUMPS=6
queue-no-skipped     queue_baton.pml fail -DCOLLAPSE  -DNGET=2 -DNPUT=2 -DMAXBUMPS=6 -DBUG_NO_SKIPPED
queue-futile-return  queue_baton.pml fail -DCOLLAPSE  -DNGET=2 -DNPUT=2 -DMAXBUMPS=6 -DBUG_FUTILE_RETURN
'

rm -f "$out/.results"
echo "$checks" | while read -r name model expect panflags defs; do
    [ "$panflags" = - ] && panflags=
    [ -n "$name" ] || continue
    case "$name" in *"$filter"*) ;; *) continue ;; esac
    d="$out/$name"
    rm -rf "$d" && mkdir -p "$d"
    cp "$here"/*.pml "$d"/
    verdict='' detail=''
    if ! (cd "$d" && spin $defs -a "$model" >spin.out 2>&1); then
        verdict=FAIL detail="spin -a failed (see $d/spin.out)"
    elif ! (cd "$d" && $CC -O2 -w -DSAFETY -DMEMLIM=2048 $panflags -o pan pan.c >cc.out 2>&1); then
        verdict=FAIL detail="cc pan.c failed (see $d/cc.out)"
    else
        t0=$(date +%s.%N)
        (cd "$d" && timeout 300 nice -n 10 ./pan -m"$DEPTH" -n >pan.out 2>&1)
        t1=$(date +%s.%N)
        secs=$(echo "$t0 $t1" | awk '{printf "%.1f", $2 - $1}')
        errs=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$d/pan.out" | head -1)
        states=$(awk '/states, stored/ {print $1; exit}' "$d/pan.out")
        depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$d/pan.out" | head -1)
        what=$(grep -m1 '^pan:1:' "$d/pan.out" | sed 's/^pan:1: //')
        mem=$(awk '/total actual memory usage/ {printf "%.0f", $1; exit}' "$d/pan.out")
        stats="${states:-?} states, depth ${depth:-?}, ${secs} s, ${mem:-?} MB"
        if grep -qE 'max search depth too small|reached -DMEMLIM bound|out of memory' "$d/pan.out" || [ -z "$errs" ]; then
            verdict=FAIL detail="search incomplete ($stats; see $d/pan.out)"
        elif [ "$expect" = pass ] && [ "$errs" = 0 ]; then
            verdict=ok detail="no error, exhaustive ($stats)"
        elif [ "$expect" = fail ] && [ "$errs" != 0 ] &&
             echo "$what" | grep -qE '^(assertion violated|invalid end state)'; then
            verdict=ok detail="fails as it must: $what ($stats)"
            (cd "$d" && spin -t -k "$model.trail" $defs "$model" >trail.txt 2>&1; spin -t -k "$model.trail" $defs -p -g "$model" >trail-full.txt 2>&1)
        elif [ "$expect" = pass ]; then
            verdict=FAIL detail="unexpected error: $what ($stats; trail in $d)"
            (cd "$d" && spin -t -k "$model.trail" $defs "$model" >trail.txt 2>&1; spin -t -k "$model.trail" $defs -p -g "$model" >trail-full.txt 2>&1)
        elif [ "$errs" != 0 ]; then
            verdict=FAIL detail="an error of the wrong kind: $what ($stats; see $d/pan.out)"
        else
            verdict=FAIL detail="no error found but the variant is broken ($stats)"
        fi
    fi
    printf '%-4s %-22s %s\n' "$verdict" "$name" "$detail"
    [ "$verdict" = ok ] && echo pass >>"$out/.results" || echo fail >>"$out/.results"
done
passed=$(grep -c pass "$out/.results" 2>/dev/null)
failed=$(grep -c fail "$out/.results" 2>/dev/null)
echo "model: ${passed:-0} passed, ${failed:-0} failed"
[ "${failed:-0}" = 0 ] && [ "${passed:-0}" != 0 ]
