/* tests/model/barrier.pml - ks_barrier (src/barrier.c): seq = phase << 1 |
 * SLEEPERS (the futex word), `arrived`, and `leaving` with DESTROYING for
 * destroy right after the last phase.  See docs/model.md.
 *
 * NB threads (the barrier's count) pass the barrier RND times; after the
 * last phase the thread that got KS_BARRIER_SERIAL destroys the barrier
 * (legal as soon as its own wait returned: docs/pitfalls.md item 25).  Checked:
 *   - no thread leaves phase k before all NB threads arrived in phase k
 *     (ghost counter inround[k]);
 *   - no lost wake-up: every thread ends (an invalid end state otherwise);
 *   - nothing touches the barrier after destroy returned (every access
 *     asserts !destroyed; the address-only wakes are exempt).
 *
 * BUG variants:
 *   BUG_PHASE_AFTER_ARRIVE   the waiter reads the phase after its arrival:
 *                            the phase may already have ended, and it waits
 *                            for the next one, which cannot end without it
 *   BUG_RESET_AFTER_RELEASE  the last arriver resets `arrived` after the
 *                            releasing store to seq: a released thread that
 *                            is fast enough arrives in phase k+1 first and
 *                            its arrival is wiped (a late arriver of round
 *                            k+1 mixed up with round k's accounting)
 *   BUG_NO_LEAVING           destroy does not wait for `leaving` (the
 *                            released threads' last access)
 */
#ifndef NB
#define NB 3
#endif
#ifndef RND
#define RND 2
#endif
#define NW 2
#define SEQ 0
#define LEAVING 1
#define NPROC (NB + 1)
#define SL 1
#define PHASE_ONE 2
#define DESTROYING 64

#include "futex.pml"

byte arrived;
bool destroyed;
byte inround[RND];            /* ghost: arrivals in each phase */

#define BTOUCH assert(!destroyed)

proctype Thread()
{
    FUTEX_LOCALS;
    byte k, phase, n, s, l, r, serial, wn;
    do
    :: k < RND ->
#ifndef BUG_PHASE_AFTER_ARRIVE
        atomic { BTOUCH; phase = fw[SEQ] & ~SL };
#endif
        atomic { BTOUCH; arrived++; n = arrived; inround[k]++ };
#ifdef BUG_PHASE_AFTER_ARRIVE
        atomic { BTOUCH; phase = fw[SEQ] & ~SL };
#endif
        if
        :: n == NB ->
#ifndef BUG_RESET_AFTER_RELEASE
            atomic { BTOUCH; arrived = 0 };
#endif
            atomic { BTOUCH; fw[LEAVING] = fw[LEAVING] + NB - 1 };
            atomic { BTOUCH; s = fw[SEQ]; fw[SEQ] = phase + PHASE_ONE;
                     printf("P%d: ends phase %d\n", _pid, k) };
#ifdef BUG_RESET_AFTER_RELEASE
            atomic { BTOUCH; arrived = 0 };
#endif
            if
            :: s & SL -> futex_wake(SEQ, ALL, wn)     /* address only */
            :: else
            fi;
            serial = 1
        :: else ->
            serial = 0;
            do
            :: atomic {
                   BTOUCH; s = fw[SEQ];
                   if
                   :: (s & ~SL) != phase -> r = 1
                   :: (s & ~SL) == phase && !(s & SL) -> s = s | SL; fw[SEQ] = s; r = 0
                   :: else -> r = 0
                   fi
               };
               if
               :: r -> break
               :: else -> futex_wait(SEQ, s, 0, r); r = 0
               fi
            od;
            /* leave(): the last access */
            atomic { BTOUCH; l = fw[LEAVING]; fw[LEAVING]-- };
            if
            :: l == (DESTROYING | 1) -> futex_wake(LEAVING, ALL, wn)   /* address only */
            :: else
            fi
        fi;
        assert(inround[k] == NB);    /* nobody left phase k early */
        k++; n = 0; s = 0; l = 0; r = 0
    :: else -> break
    od;
    if
    :: serial ->
        /* ks_barrier_destroy */
        atomic { BTOUCH; assert(arrived == 0); fw[LEAVING] = fw[LEAVING] | DESTROYING; l = fw[LEAVING] };
#ifndef BUG_NO_LEAVING
        do
        :: (l & ~DESTROYING) != 0 ->
            futex_wait(LEAVING, l, 0, r);
            atomic { BTOUCH; l = fw[LEAVING] }
        :: else -> break
        od;
#endif
        atomic { BTOUCH; fw[LEAVING] = 0; destroyed = 1; printf("P%d: destroy returns\n", _pid) }
    :: else
    fi
}

init
{
    byte i;
    atomic {
        do
        :: i < NB -> run Thread(); i++
        :: else -> break
        od
    }
}
