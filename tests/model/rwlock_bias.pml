/* tests/model/rwlock_bias.pml - ks_rwlock's reader bias (src/rwlock.c,
 * docs/rwlock.md): readers that enter through slots of the visible-readers
 * table, writers that revoke the bias and wait on the slots.  See
 * docs/model.md.
 *
 * The lock word itself (R / RS / WW / NW and its futex protocol) is checked
 * by rwlock.pml; here it is abstracted to `word` (0 free, WRITER, or the
 * number of readers counted in it) with blocking guards for its waits.
 * What is modelled exactly:
 *   bias        bit B (BIAS) and bit U (BIAS_USED) of l->bias
 *   fw[i]       slot i of the lock's window: 0, L (a reader of this lock
 *               holds it), or L | M (M = SLOT_WAITER: a writer sleeps on it)
 *   reader      if B: claim its slot (CAS 0 -> L), re-read B; still set:
 *               inside; else leave the slot (exchange 0, wake if M).  Else,
 *               or if the slot was busy: through the word, and then maybe
 *               (nondeterministically: the inhibition test) set B | U while
 *               it holds the word.  Unlock: exchange the slot to 0 and wake
 *               the writer if M was set, or leave the word.
 *   writer      maybe clears B first (a registering writer's hint); takes
 *               the word (R == 0 -> WRITER); reads U; if set, clears B, then
 *               for each slot: while it holds L: mark M (CAS), FUTEX_WAIT
 *               on it with L | M; timed (tmo): may give up, handing the
 *               word back; at the end stores bias = 0.
 * Promela's interleaving is sequentially consistent, as the seq_cst
 * operations of the real code are.  Each reader uses slot (its number mod
 * NSLOT), so two readers may share a slot (the second then goes through
 * the word).
 * Checked: exclusion (no reader inside with a writer, one writer at most);
 * no lost wake-up (a writer asleep on a slot is woken: every process ends);
 * at the end every slot is free, the word is free and no B without U.
 *
 * BUG variants:
 *   BUG_NO_RECHECK   the reader does not re-read B after claiming its slot
 *   BUG_SCAN_FIRST   the writer scans the slots before clearing B
 *   BUG_PLAIN_LEAVE  the reader frees its slot with a plain store and does
 *                    not wake a writer that marked it
 */
#ifndef NWR
#define NWR 1
#endif
#ifndef NRD
#define NRD 2
#endif
#ifndef NSLOT
#define NSLOT 2
#endif
#define NW NSLOT
#define NPROC (NWR + NRD + 1)
#define L 2          /* the lock's address in a slot */
#define M 1          /* SLOT_WAITER */
#define B 1          /* BIAS */
#define U 2          /* BIAS_USED */
#define WRITER 15

#include "futex.pml"

byte word;                 /* the lock word, abstracted */
byte bias;
byte rin, win;             /* ghost: readers and writers inside */

inline leave_slot(i)
{
    atomic {
        old = fw[i];
#ifdef BUG_PLAIN_LEAVE
        fw[i] = 0; old = 0
#else
        fw[i] = 0
#endif
    };
    if
    :: old & M -> futex_wake(i, ALL, wn)
    :: else
    fi
}

proctype Reader(byte me)
{
    FUTEX_LOCALS;
    byte s = me % NSLOT, old, wn;
    bool biased;
    if
    :: bias & B ->                        /* the relaxed look (rdlock's inline test) */
        if
        :: atomic { fw[s] == 0 -> fw[s] = L } ->    /* the claim (seq_cst CAS) */
#ifdef BUG_NO_RECHECK
            biased = 1
#else
            if
            :: bias & B -> biased = 1              /* the re-check (seq_cst load) */
            :: else -> leave_slot(s)
            fi
#endif
        :: else                                    /* slot busy: through the word */
        fi
    :: else
    fi;
    if
    :: !biased ->
        atomic { word != WRITER -> word++ };
        /* holding the word: maybe turn the bias on (not inhibited) */
        if
        :: bias = bias | B | U
        :: skip
        fi
    :: else
    fi;
    atomic { rin++; assert(win == 0) };
    rin--;
    if
    :: biased -> leave_slot(s)
    :: else -> atomic { assert(word != 0 && word != WRITER); word-- }
    fi
}

proctype Writer()
{
    FUTEX_LOCALS;
    byte i, x, r, tmo;
    bool gaveup;
    if
    :: tmo = 0
    :: tmo = 1
    fi;
    if
    :: bias = bias & ~B        /* registering behind readers: the hint */
    :: skip
    fi;
    atomic { word == 0 -> word = WRITER };
    if
    :: bias & U ->
#ifndef BUG_SCAN_FIRST
        bias = bias & ~B;
#endif
        i = 0;
        do
        :: i == NSLOT || gaveup -> break
        :: else ->
            x = fw[i];
            do
            :: (x & ~M) != L -> break
            :: else ->
                if
                :: atomic { !(x & M) && fw[i] == x -> fw[i] = x | M; x = x | M }
                :: atomic { !(x & M) && fw[i] != x -> x = fw[i] }
                :: x & M ->
                    futex_wait(i, (L | M), tmo, r);
                    x = fw[i];
                    if
                    :: r == ETIMEDOUT && (x & ~M) == L -> gaveup = 1; break
                    :: else
                    fi
                fi
            od;
            i++
        od;
#ifdef BUG_SCAN_FIRST
        bias = bias & ~B;
#endif
        if
        :: !gaveup -> bias = 0
        :: else
        fi
    :: else
    fi;
    if
    :: gaveup -> word = 0     /* hands the word back; U stays set */
    :: else ->
        atomic { win++; assert(win == 1 && rin == 0) };
        win--;
        word = 0
    fi
}

init
{
    byte i;
    atomic {
        if
        :: bias = B | U        /* a reader turned it on earlier */
        :: skip
        fi;
        do
        :: i < NWR -> run Writer(); i++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NRD -> run Reader(i); i++
        :: else -> break
        od
    };
    _nr_pr == 1;
    i = 0;
    do
    :: i < NSLOT -> assert(fw[i] == 0); i++
    :: else -> break
    od;
    assert(word == 0 && (!(bias & B) || (bias & U)))
}
