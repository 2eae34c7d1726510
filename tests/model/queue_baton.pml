/* tests/model/queue_baton.pml - the wake-up protocol of ks_queue (src/queue.c,
 * include/ksync/queue.h) on the getters' side: the event count (seq, the
 * futex word, and sleepers), the baton (waking) and the skipped-wake flag.
 * See docs/model.md.
 *
 * The ring is abstracted to an item count: a push or pop is one atomic step
 * that succeeds or finds the ring empty (the ring's EBUSY, a peer
 * mid-operation, is not modelled; putters never block: the capacity is not
 * reached).  NGET getters each get one item (untimed, or timed with a
 * deadline that may expire at any moment); NPUT putters each put one item
 * and then run ks_queue_wake_ on the getters' side.  Fences are no-ops:
 * Promela is sequentially consistent.  Checked: no lost wake-up (every
 * untimed getter returns with an item while items remain for it: an invalid
 * end state otherwise); at the end nobody is counted asleep and the baton
 * is back (sleepers = 0, waking = 0), and no item was lost or duplicated.
 *
 * Cut paths: two wakers can pass the baton back and forth for ever while a
 * sleeper counted in `sleepers` is not yet in FUTEX_WAIT (each futile round
 * bumps seq; the C code yields from the second futile round on, which no
 * scheduler is obliged to honour).  To keep the state space finite the
 * model stops exploring a path once seq has been bumped MAXBUMPS times: the
 * waker and every sleeper may then jump to a valid end state.  Paths with
 * more bumps than that are not checked.
 *
 * BUG variants:
 *   BUG_NO_SKIPPED     a waker that finds the baton out just returns: no
 *                      `skipped` flag, no second look at `waking`
 *   BUG_FUTILE_RETURN  a waker whose FUTEX_WAKE found nobody in the kernel
 *                      puts the baton back and returns without looking at
 *                      `skipped`
 */
#ifndef NGET
#define NGET 2
#endif
#ifndef NPUT
#define NPUT 2
#endif
#define NW 1
#define SEQ 0
#ifndef MAXBUMPS
#define MAXBUMPS 6
#endif
#define FUTEX_ABANDON (bumps >= MAXBUMPS)
#define NPROC (NGET + NPUT + 1)

#include "futex.pml"

byte items;       /* the ring's size */
byte sleepers, waking, skipped;
byte got, put;    /* ghost: items taken by getters, items put */
byte bumps;       /* ghost: seq increments so far (the path is cut at MAXBUMPS) */

/* ks_queue_wake_slow(q, &q->getters) (private queue: with the baton) */
inline wake_one()
{
    wk_done = 0;
    do
    :: wk_done -> break
    :: else ->
        atomic {
            if
            :: waking == 0 -> waking = 1; wk_took = 1
            :: else -> wk_took = 0
            fi
        };
        if
        :: !wk_took ->
#ifdef BUG_NO_SKIPPED
            wk_done = 1
#else
            skipped = 1;
            /* FENCE */
            if
            :: waking -> wk_done = 1   /* the holder sees `skipped` or re-checks */
            :: else                    /* the baton came back: take it */
            fi
#endif
        :: else ->
            /* wake(side, 1) */
            if
            :: bumps >= MAXBUMPS -> goto end_abandoned
            :: else
            fi;
            atomic { fw[SEQ]++; bumps++; printf("P%d: bumps seq to %d\n", _pid, fw[SEQ]) };
            futex_wake(SEQ, 1, wk_n);
            if
            :: wk_n > 0 -> sleepers = sleepers - wk_n; wk_done = 1
            :: else ->
                waking = 0;
                /* FENCE */
#ifdef BUG_FUTILE_RETURN
                wk_done = 1
#else
                atomic { wk_s = skipped; skipped = 0 };
                if
                :: !wk_s -> wk_done = 1
                :: else      /* someone skipped meanwhile: go again (the
                              * sched_yield from the second round on is a
                              * scheduling hint: not modelled) */
                fi
#endif
            fi
        fi
    od;
    wk_took = 0; wk_n = 0; wk_s = 0
}

#define WAKE_LOCALS byte wk_done, wk_took, wk_n, wk_s

proctype Getter()
{
    FUTEX_LOCALS;
    WAKE_LOCALS;
    byte tmo, e, baton, seen, r, done, skp;
    if
    :: tmo = 0
    :: tmo = 1
    fi;
    do
    :: done -> break
    :: else ->
        atomic {                                    /* ring_op: pop */
            if
            :: items > 0 -> items--; got++; e = 0
            :: else -> e = EAGAIN
            fi
        };
        if
        :: baton ->                                  /* baton_pass(e) */
            waking = 0;
            /* FENCE */
            atomic { skp = skipped; skipped = 0 };   /* used only with EBUSY */
            if
            :: sleepers > 0 && items > 0 -> wake_one()
            :: else
            fi;
            baton = 0; skp = 0
        :: else
        fi;
        if
        :: e == 0 -> done = 1
        :: e != 0 && tmo -> e = ETIMEDOUT; done = 1   /* deadline already past */
        :: e != 0 ->
            sleepers++;                               /* side_enter */
            /* FENCE */
            seen = fw[SEQ];
            atomic {
                if
                :: items > 0 -> items--; got++; e = 0
                :: else -> e = EAGAIN
                fi
            };
            if
            :: e == 0 -> sleepers--; done = 1          /* side_leave */
            :: else ->
                /* side_sleep: ks_futex_wait_exact returns 0 only for a
                 * FUTEX_WAKE, whose waker takes us off `sleepers` */
                if
                :: fw[SEQ] == seen -> futex_wait(SEQ, seen, tmo, r)
                :: else -> r = EAGAIN
                fi;
                if
                :: r == 0 -> baton = 1                 /* SLEPT_WOKEN */
                :: r == ETIMEDOUT ->
                    sleepers--;
                    atomic {                           /* a last look */
                        if
                        :: items > 0 -> items--; got++; e = 0
                        :: else -> e = ETIMEDOUT
                        fi
                    };
                    done = 1
                :: else -> sleepers--                   /* SLEPT_OTHER */
                fi
            fi;
            seen = 0; r = 0
        fi
    od;
    /* (e == 0: wake the putters' side; putters never sleep here) */
    if
    :: e == 0 -> printf("P%d: got an item\n", _pid)
    :: else -> assert(tmo); printf("P%d: timed out\n", _pid)
    fi;
    goto out;
end_abandoned:
    false;                         /* a cut path: stop here (a valid end state) */
out:
    skip
}

proctype Putter()
{
    FUTEX_LOCALS;
    WAKE_LOCALS;
    atomic { items++; put++; printf("P%d: puts\n", _pid) };
    /* ks_queue_wake_: FENCE, then look at sleepers */
    if
    :: sleepers > 0 -> wake_one()
    :: else
    fi;
    goto out;
end_abandoned:
    false;                         /* a cut path: stop here (a valid end state) */
out:
    skip
}

init
{
    byte i;
    atomic {
        do
        :: i < NGET -> run Getter(); i++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NPUT -> run Putter(); i++
        :: else -> break
        od
    };
end_wait:
    _nr_pr == 1;                   /* (not reached on a cut path) */
    assert(sleepers == 0 && waking == 0);
    assert(items == put - got)
}
