/* tests/model/event.pml - ks_event (src/event.c): a manual-reset event with
 * SET, SLEEPERS and a generation count in one futex word.  See
 * docs/model.md.
 *
 * NWAITER waiters each wait once (untimed, or timed with a deadline that may
 * expire at any moment); one setter waits until every waiter has made its
 * first look at the word, then set()s and clear()s (a pulse); one more
 * thread clear()s at any moment (a clear racing the set).  Checked: no lost
 * wake-up: every waiter whose first look preceded the set returns (an
 * invalid end state otherwise), and an untimed waiter returns 0.
 *
 * BUG variants:
 *   BUG_NO_GEN          the waiter returns only on SET, not when GEN moved:
 *                       a set quickly followed by a clear is lost for a
 *                       waiter that looks only after the clear (the lost
 *                       pulse, docs/pitfalls.md item 30)
 *   BUG_CLEAR_SLEEPERS  clear() also clears SLEEPERS: a waiter that has
 *                       announced itself and slept is forgotten, and the set
 *                       that follows does not wake it
 */
#ifndef NWAITER
#define NWAITER 2
#endif
#define NW 1
#define EW 0
#define NPROC (NWAITER + 3)
#define SET 1
#define SLEEPERS 2
#define GEN 4
#define GEN_MASK 252

#include "futex.pml"

byte looked;      /* waiters that have made their first look (ghost) */

#ifdef BUG_NO_GEN
#define released(v) ((v & SET) != 0)
#else
#define released(v) ((v & SET) || (v & GEN_MASK) != gen)
#endif

proctype Waiter()
{
    FUTEX_LOCALS;
    byte tmo, r, v, gen, done;
    if
    :: tmo = 0
    :: tmo = 1
    fi;
    atomic { v = fw[EW]; gen = v & GEN_MASK; looked++ };
    if
    :: v & SET -> done = 1
    :: else
    fi;
    /* (a deadline already past: one look and ETIMEDOUT; the spin only
     * re-reads the word, which the loop below does as well) */
    do
    :: done -> break
    :: else ->
        atomic {
            v = fw[EW];
            if
            :: released(v) -> done = 1
            :: !released(v) && !(v & SLEEPERS) -> v = v | SLEEPERS; fw[EW] = v
            :: else
            fi
        };
        if
        :: !done ->
            futex_wait(EW, v, tmo, r);
            if
            :: r == ETIMEDOUT ->
                atomic {
                    v = fw[EW];
                    if
                    :: released(v)
                    :: else -> assert(tmo); printf("P%d: times out\n", _pid)
                    fi
                };
                done = 1
            :: else
            fi
        :: else
        fi
    od
}

proctype Setter()
{
    FUTEX_LOCALS;
    byte v, wn;
    looked == NWAITER;                 /* every waiter has looked */
    atomic {
        v = fw[EW];
        if
        :: !(v & SET) -> fw[EW] = ((v & GEN_MASK) + GEN) | SET   /* SLEEPERS cleared */
        :: else
        fi;
        printf("P%d: set (%d -> %d)\n", _pid, v, fw[EW])
    };
    if
    :: v & SLEEPERS -> futex_wake(EW, ALL, wn)
    :: else
    fi;
    atomic { fw[EW] = fw[EW] & ~SET; printf("P%d: clear\n", _pid) }
}

proctype Clearer()
{
#ifdef BUG_CLEAR_SLEEPERS
    atomic { fw[EW] = fw[EW] & ~(SET | SLEEPERS); printf("P%d: clear\n", _pid) }
#else
    atomic { fw[EW] = fw[EW] & ~SET; printf("P%d: clear\n", _pid) }
#endif
}

init
{
    byte i;
    atomic {
        do
        :: i < NWAITER -> run Waiter(); i++
        :: else -> break
        od;
        run Setter();
        run Clearer()
    }
}
