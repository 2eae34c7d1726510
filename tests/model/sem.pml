/* tests/model/sem.pml - ks_sem (src/sem.c, include/ksync/sem.h): value V,
 * WAKING and the waiter count N in one 64-bit word; post wakes on 0 -> 1,
 * a waiter that takes a unit chains a wake if units and waiters remain.
 * See docs/model.md.
 *
 * The 64-bit state is fw[SEMW] (the futex word: V | WAKING, the low half)
 * plus nw (N, the high half); every CAS of the C code updates both in one
 * atomic step.  NWAITER threads each take one unit (untimed, or timed with
 * a deadline that may expire at any moment); NPOST threads each post once.
 * Checked: no lost wake-up (every untimed waiter returns while the posts
 * cover it: an invalid end state otherwise); at the end no unit is lost or
 * duplicated (V = posts - units taken), N = 0 and WAKING is clear.
 *
 * BUG variants:
 *   BUG_NO_CHAIN      a waiter that takes a unit never wakes another, even
 *                     with V > 1 and N > 1: the post of the second unit saw
 *                     WAKING and did not wake either -> a sleeper stays
 *                     asleep with a unit available
 *   BUG_STALE_N       post reads N in a load before its CAS (the waker checks
 *                     the waiter count before the releasing add): a waiter
 *                     that registers in between sleeps through the post
 *   BUG_WATCH_UNTIMED a watcher (a waiter woken to find no unit, which keeps
 *                     WAKING set so that posts do not wake another) sleeps
 *                     without a timeout: the posts made while it watches
 *                     wake nobody and it never looks again
 *
 * The watch: a waiter whose sleep ended (not by a timeout) and that finds no
 * unit sets WAKING instead of clearing it and sleeps on the word == WAKING
 * with a timeout, up to WATCHN times (the doubling timeouts of src/sem.c;
 * the model lets each end at any moment), then clears WAKING as before.
 * A timed waiter's timeout and a watch's may each end such a sleep.
 */
#ifndef WATCHN
#define WATCHN 2
#endif
#ifndef NWAITER
#define NWAITER 2
#endif
#ifndef NPOST
#define NPOST 2
#endif
#define NW 1
#define SEMW 0
#define NPROC (NWAITER + NPOST + 1)
#define WAKING 64
#define VAL(x) ((x) & 63)

#include "futex.pml"

byte nw;          /* N: registered waiters */
byte taken;       /* units taken by waiters (ghost) */
byte posted;      /* posts done (ghost) */

/* take_registered's CAS (the caller saw V > 0 in the same atomic step):
 * take a unit, unregister, clear WAKING, and re-arm it for a chained wake
 * if units and other waiters remain */
inline take_registered()
{
    chain = (VAL(fw[SEMW]) > 1 && nw > 1);
#ifdef BUG_NO_CHAIN
    chain = 0;
#endif
    fw[SEMW] = (fw[SEMW] - 1) & ~WAKING; nw--;
    if
    :: chain -> fw[SEMW] = fw[SEMW] | WAKING
    :: else
    fi;
    taken++;
    printf("P%d: takes a unit (registered), chain %d\n", _pid, chain)
}

proctype Waiter()
{
    FUTEX_LOCALS;
    byte tmo, r, chain, wn, done, watch;
    if
    :: tmo = 0
    :: tmo = 1
    fi;
    /* trywait, the spin and the registering loop: take a unit if there is
     * one, else register (a timed waiter whose deadline has passed leaves) */
    atomic {
        if
        :: VAL(fw[SEMW]) > 0 -> fw[SEMW]--; taken++; done = 1;
            printf("P%d: takes a unit\n", _pid)
        :: VAL(fw[SEMW]) == 0 && tmo -> done = 1     /* expired */
        :: VAL(fw[SEMW]) == 0 -> nw++
        fi
    };
    do
    :: done -> break
    :: else ->
        atomic {
            if
            :: VAL(fw[SEMW]) > 0 -> take_registered(); done = 1
            :: else ->
                if
                :: watch -> fw[SEMW] = fw[SEMW] | WAKING    /* a watcher keeps WAKING set */
                :: else -> fw[SEMW] = fw[SEMW] & ~WAKING   /* clear WAKING (if set) */
                fi
            fi
        };
        if
        :: done
        :: else ->
#ifdef BUG_WATCH_UNTIMED
            futex_wait(SEMW, (watch -> WAKING : 0), tmo, r);
#else
            futex_wait(SEMW, (watch -> WAKING : 0), (tmo || watch), r);
#endif
            if
            :: r == ETIMEDOUT && watch ->
                watch--;                      /* a watch ends: look again */
                printf("P%d: watch ends, %d left\n", _pid, watch)
            :: r == ETIMEDOUT && tmo ->
                atomic {
                    if
                    :: VAL(fw[SEMW]) > 0 -> take_registered()
                    :: else -> nw--; fw[SEMW] = fw[SEMW] & ~WAKING; chain = 0;
                        printf("P%d: times out\n", _pid)
                    fi
                };
                done = 1
            :: r != ETIMEDOUT ->
                /* woken (or EAGAIN): no unit there means a running thread
                 * took it first; start watching */
                if
                :: VAL(fw[SEMW]) == 0 && watch == 0 -> watch = WATCHN;
                    printf("P%d: watches\n", _pid)
                :: else
                fi
            fi
        fi;
        if
        :: chain -> futex_wake(SEMW, 1, wn); chain = 0
        :: else
        fi
    od
}

proctype Poster()
{
    FUTEX_LOCALS;
    byte wake, n, wn;
#ifdef BUG_STALE_N
    n = nw;                       /* N read before the CAS */
#endif
    atomic {
#ifndef BUG_STALE_N
        n = nw;
#endif
#ifndef BUG_NO_CHAIN
        /* the claim of src/sem.c: units with registered waiters always
         * have a wake in flight (so no post need wake while V > 0) */
        assert(!(nw > 0 && VAL(fw[SEMW]) > 0 && !(fw[SEMW] & WAKING)));
#endif
        wake = (n > 0 && !(fw[SEMW] & WAKING) && VAL(fw[SEMW]) == 0);
        fw[SEMW]++;
        if
        :: wake -> fw[SEMW] = fw[SEMW] | WAKING
        :: else
        fi;
        posted++;
        printf("P%d: posts, wake %d\n", _pid, wake)
    };
    if
    :: wake -> futex_wake(SEMW, 1, wn)
    :: else
    fi
}

init
{
    byte i;
    atomic {
        i = 0;
        do
        :: i < NWAITER -> run Waiter(); i++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NPOST -> run Poster(); i++
        :: else -> break
        od
    };
    _nr_pr == 1;
    assert(VAL(fw[SEMW]) == posted - taken);   /* no unit lost or made up */
    assert(nw == 0);
    assert(!(fw[SEMW] & WAKING))
}
