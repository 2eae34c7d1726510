/* tests/model/rwlock.pml - ks_rwlock (src/rwlock.c, include/ksync/rwlock.h):
 * the writer-preferring rwlock, R / RS / WW / NW in one 64-bit word, readers
 * and writers asleep on the same futex word with different bitset masks.
 * See docs/model.md.
 *
 * The 64-bit state is fw[RWW] (the low half: R in bits 0-3, WRITER = 15,
 * RS = 16, WW = 32) plus nw (NW, the high half), changed together in every
 * CAS.  NWR writers and NRD readers each lock once, each untimed or timed
 * (a deadline that may expire at any moment), and unlock if they got it.
 * With -DRD_DEP the second reader keeps its read lock until the first
 * reader has returned (legal: readers share the lock), and writers are all
 * timed (an untimed writer would deadlock with that dependency by design,
 * writer preference); a reader that slept because of WW must then be woken
 * when the last waiting writer gives up.
 * Checked: mutual exclusion (a writer alone, readers without a writer); no
 * lost wake-up (every thread ends); at the end R = 0, NW = 0 and WW clear
 * (RS may stay set after a reader's timeout: src/rwlock.c accepts that, it
 * costs one spurious wake later).
 *
 * BUG variants:
 *   BUG_GIVEUP_NO_READER_WAKE  the last registered writer that times out
 *                  clears WW but neither clears RS nor wakes the readers
 *                  that went to sleep because of WW
 *   BUG_WAKE_NO_MASK  unlock wakes "one writer" with a plain FUTEX_WAKE 1:
 *                  the oldest sleeper may be a reader, which finds WW set
 *                  and sleeps again, and the writer is never woken
 */
#define FUTEX_MASKS
#ifndef NWR
#define NWR 2
#endif
#ifndef NRD
#define NRD 2
#endif
#define NW 1
#define RWW 0
#define NPROC (NWR + NRD + 1)
#define WRITER 15
#define RMASK 15
#define RS 16
#define WW 32
#define MAX_READERS 14
#define MASK_READER 1
#define MASK_WRITER 2

#include "futex.pml"

byte nw;                      /* NW: registered writers */
byte rin, win;                /* ghost: readers and writers inside */
bool r1done;                  /* ghost: the first reader has returned */

#define R(v) ((v) & RMASK)
#define lockable(v) (R(v) < MAX_READERS && !((v) & WW))

inline rw_unlock()
{
    atomic {
        v = fw[RWW];
        assert(R(v) != 0);
        nv = (R(v) == WRITER -> v - WRITER : v - 1);
        wkw = 0; wkr = 0;
        if
        :: R(nv) == 0 && nw > 0 -> wkw = 1
        :: R(nv) == 0 && nw == 0 && (nv & RS) -> nv = nv & ~RS; wkr = 1
        :: else
        fi;
        fw[RWW] = nv;
        printf("P%d: unlocks (%d -> %d), wake writer %d readers %d\n", _pid, v, nv, wkw, wkr)
    };
    if
#ifdef BUG_WAKE_NO_MASK
    :: wkw -> futex_wake_mask(RWW, 1, MASK_WRITER | MASK_READER, wn)
#else
    :: wkw -> futex_wake_mask(RWW, 1, MASK_WRITER, wn)
#endif
    :: else
    fi;
    if
    :: wkr -> futex_wake_mask(RWW, ALL, MASK_READER, wn)
    :: else
    fi
}

proctype Reader(bool first)
{
    FUTEX_LOCALS;
    byte tmo, r, v, nv, wkw, wkr, wn, done, expired;
    if
    :: tmo = 0
    :: tmo = 1
    fi;
    do
    :: done -> break
    :: else ->
        atomic {
            v = fw[RWW];
            if
            :: lockable(v) -> fw[RWW] = v + 1; r = 0; done = 1
            :: !lockable(v) && tmo -> r = ETIMEDOUT; done = 1   /* deadline passed */
            :: !lockable(v) && !expired && !(v & RS) -> v = v | RS; fw[RWW] = v
            :: !lockable(v) && !expired && (v & RS)
            fi
        };
        if
        :: !done ->
            futex_wait_mask(RWW, v, tmo, MASK_READER, r);
            /* once the deadline has passed, the next round that finds the
             * lock taken returns ETIMEDOUT */
            expired = (r == ETIMEDOUT)
        :: else
        fi
    od;
    if
    :: r == 0 ->
        atomic { rin++; assert(win == 0) };
#ifdef RD_DEP
        /* the second reader holds its read lock until the first reader is
         * through: a reader must get in while writers have given up */
        if
        :: !first -> r1done
        :: else
        fi;
#endif
        rin--;
        rw_unlock()
    :: else
    fi;
    if
    :: first -> r1done = 1
    :: else
    fi
}

proctype Writer()
{
    FUTEX_LOCALS;
    byte tmo, r, v, nv, wkw, wkr, wn, done, registered, expired;
#ifdef RD_DEP
    tmo = 1;       /* an untimed writer would deadlock with the readers' dependency by design */
#else
    if
    :: tmo = 0
    :: tmo = 1
    fi;
#endif
    do
    :: done -> break
    :: else ->
        atomic {
            v = fw[RWW];
            if
            :: R(v) == 0 ->
                nv = v | WRITER;
                if
                :: registered -> nw--;
                    if
                    :: nw == 0 -> nv = nv & ~WW
                    :: else
                    fi
                :: else
                fi;
                fw[RWW] = nv; r = 0; done = 1
            :: R(v) != 0 && !registered && tmo -> r = ETIMEDOUT; done = 1  /* do not register */
            :: R(v) != 0 && !registered -> nw++; v = v | WW; fw[RWW] = v; registered = 1
            :: R(v) != 0 && registered
            fi
        };
        if
        :: !done ->
            if
            :: !expired -> futex_wait_mask(RWW, v, tmo, MASK_WRITER, r)
            :: else -> r = ETIMEDOUT   /* a past deadline: no syscall */
            fi;
            expired = (r == ETIMEDOUT);
            if
            :: r == ETIMEDOUT ->
                /* take it if it is free right now (the loop above), else unregister */
                wkr = 0;
                atomic {
                    v = fw[RWW];
                    if
                    :: R(v) == 0
                    :: else ->
                        nw--; nv = v;
                        if
                        :: nw == 0 ->
                            nv = nv & ~WW;
#ifndef BUG_GIVEUP_NO_READER_WAKE
                            if
                            :: R(nv) != WRITER && (nv & RS) -> nv = nv & ~RS; wkr = 1
                            :: else
                            fi
#endif
                        :: else
                        fi;
                        fw[RWW] = nv; done = 1;
                        printf("P%d: gives up (%d -> %d)\n", _pid, v, nv)
                    fi
                };
                if
                :: wkr -> futex_wake_mask(RWW, ALL, MASK_READER, wn)
                :: else
                fi
            :: else
            fi
        :: else
        fi
    od;
    if
    :: r == 0 ->
        atomic { win++; assert(win == 1 && rin == 0) };
        win--;
        rw_unlock()
    :: else
    fi
}

init
{
    byte i;
    atomic {
        do
        :: i < NWR -> run Writer(); i++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NRD -> run Reader(i == 0); i++
        :: else -> break
        od
    };
    _nr_pr == 1;
    assert(R(fw[RWW]) == 0 && nw == 0 && !(fw[RWW] & WW))
}
