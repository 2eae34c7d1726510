/* tests/model/cond.pml - ks_cond (src/cond.c as of main 31c3d70): sequence
 * counter, waiter reference count with DESTROYING, sleepers count, the
 * sticky mutex hint (NULL -> m -> m|MIXED tag, the tag keeping the mutex),
 * requeue-on-broadcast onto an untagged mutex (the requeue waking one or
 * two, as requeue_wakes() picks by usable CPUs) with a re-read of the hint
 * after the requeue (wake all on the mutex if a waiter of another mutex
 * tagged it meanwhile), destroy waking the hinted mutex tagged or not, and
 * the real ks_mutex (kmutex.pml, without the starvation bit) underneath.
 * See docs/model.md.
 *
 * Scenarios (one per run):
 *   SCEN_DESTROY (default)  NWAIT waiters on m1 wait for `go`; T locks m1,
 *                 sets go, broadcasts, destroys the condvar, unlocks m1
 *                 (POSIX allows destroy once nobody is blocked on it: woken
 *                 waiters that have not returned yet are legal).
 *   SCEN_MIXED    waiters W1(m2), W2(m1), W3(m2) on one condvar; T sets go
 *                 under both mutexes, then broadcasts.  With ISSUE_ORDER the
 *                 waiters go to sleep in the order W1, W2, W3 and T starts
 *                 only once all three sleep (the issue's sequence: with
 *                 BUG_LATEST_MUTEX the hint is m2 and W2, W3 are requeued
 *                 onto m2).
 *   SCEN_SIGNAL   two consumers on m1 take one token each; one producer
 *                 adds a token and signals, the other adds a token and
 *                 broadcasts (a signal racing the broadcast's requeue).
 *   SCEN_LATE     W1a(m1) waits for go, W1b(m1) and W2(m2) for go2; once
 *                 W1a sleeps, T sets go under m1 and broadcasts, then sets
 *                 go2 under both mutexes and broadcasts again.  W2 and W1b
 *                 may enter while the first broadcast runs (W1b only after
 *                 W2 sleeps, or once go2 is set: a restriction that keeps
 *                 the search in budget).
 *   SCEN_DMIXED   W1a, W1b(m1) wait for go, W2(m2) for go2; once both m1
 *                 waiters sleep, T locks m1, sets go, broadcasts, sets go2
 *                 under m2, broadcasts, destroys, unlocks m1.
 * Checked: mutual exclusion (kmutex.pml); no lost wake-up (every process
 * ends: a thread left in a futex queue is an invalid end state); no access
 * to the condvar after destroy returned (every access asserts !destroyed).
 *
 * BUG variants (the protocol in main before the fixes, or a plausible slip):
 *   BUG_DESTROY_NO_MUTEX_WAKE  destroy only waits on `waiters` and never
 *                 wakes the mutex word: waiters requeued there cannot
 *                 leave while T holds the mutex -> hang (SCEN_DESTROY)
 *   BUG_LATEST_MUTEX  c->mutex is the latest waiter's mutex (no MIXED):
 *                 broadcast requeues W2 onto m2, W2 is woken from m2 and
 *                 relocks m1, W3 sleeps on a free m2 forever (SCEN_MIXED)
 *   BUG_NO_RECHECK  broadcast does not re-read the hint after a requeue: a
 *                 waiter of m2 that slept on the new seq in time is moved
 *                 onto m1, takes the wake of an m1 unlock and strands an
 *                 m1 waiter (SCEN_LATE)
 *   BUG_MIXED_FORGETS  MIXED replaces the mutex in the hint, so destroy no
 *                 longer wakes the mutex an earlier broadcast requeued onto
 *                 (SCEN_DMIXED).  With BUG_NO_RECHECK: the protocol as first
 *                 specified for the fix (before main 31c3d70).
 *   BUG_REQUEUE_ERR  a failed CMP_REQUEUE (seq moved) is not followed by
 *                 wake-all (SCEN_SIGNAL)
 *   BUG_LAST_ACCESS  waiters-- (the reference destroy waits for) is done
 *                 before sleepers--: destroy can return while a waiter still
 *                 writes the object (SCEN_DESTROY)
 */
#if !defined(SCEN_MIXED) && !defined(SCEN_SIGNAL) && !defined(SCEN_DESTROY) && \
    !defined(SCEN_LATE) && !defined(SCEN_DMIXED)
#define SCEN_DESTROY
#endif
#ifndef NWAIT
#define NWAIT 3
#endif
#define NO_STARVE             /* MS needs time; mutex.pml checks it */

#define NW 4
#define SEQ 0                 /* c->seq */
#define WAITERS 1             /* c->waiters */
#define M1 2                  /* m1->state */
#define M2 3                  /* m2->state */
#define NPROC 5
#define DESTROYING 64         /* bit 31 */
#define NOMUTEX 254           /* c->mutex == NULL */
#define TAG 128               /* c->mutex tagged MIXED: m | TAG (main since 31c3d70) */
#define MIXED 253             /* BUG_MIXED_FORGETS: MIXED replaces the mutex */
#define SINGLE(x) ((x) == M1 || (x) == M2)             /* a requeue target */
#define UNTAG(x) (((x) == NOMUTEX || (x) == MIXED) -> NOMUTEX : ((x) & ~TAG))

#include "futex.pml"
#include "kmutex.pml"

int  sleepers;                /* c->sleepers */
byte cmutex = NOMUTEX;        /* c->mutex: NOMUTEX, a word index, index|TAG (or MIXED) */
bool destroyed;               /* ks_cond_destroy has returned */
byte go, go2;                 /* the predicates of the other scenarios */
bool started;                 /* SCEN_LATE, SCEN_DMIXED: the early waiters sleep */
byte tokens;                  /* the predicate (SCEN_SIGNAL) */

#define CTOUCH assert(!destroyed)
#define COND_LOCALS byte cw_mm, cw_slept, cw_r, cw_n, cw_s, cw_w, cw_may

/* ks_cond_wait(c, m) (untimed) */
inline cond_wait(m)
{
    atomic { CTOUCH; fw[WAITERS]++ };
    /* note_mutex: a CAS loop on a sticky value, one atomic step; cw_may:
     * broadcast may requeue this waiter onto m */
#ifdef BUG_LATEST_MUTEX
    atomic { CTOUCH; cmutex = m; cw_may = 1 };
#elif defined(BUG_MIXED_FORGETS)
    atomic {
        CTOUCH; cw_may = 1;
        if
        :: cmutex == m
        :: cmutex == NOMUTEX -> cmutex = m
        :: else -> cmutex = MIXED
        fi
    };
#else
    atomic {
        CTOUCH;
        if
        :: cmutex == m -> cw_may = 1
        :: cmutex == NOMUTEX -> cmutex = m; cw_may = 1
        :: cmutex != m && cmutex != NOMUTEX && (cmutex & TAG) -> cw_may = 0
        :: cmutex != m && cmutex != NOMUTEX && !(cmutex & TAG) -> cmutex = cmutex | TAG; cw_may = 0
        fi
    };
#endif
    atomic { CTOUCH; cw_s = fw[SEQ];       /* while m is still held */
             printf("P%d: waits (seq %d, c->mutex %d)\n", _pid, cw_s, cmutex) };
    mutex_unlock(m);
    cw_slept = 0;
    if
    :: atomic { fw[SEQ] != cw_s -> CTOUCH }  /* the spin saw seq move */
    :: true ->
        atomic { CTOUCH; sleepers++ };
        cw_slept = 1;
        futex_wait(SEQ, cw_s, 0, cw_r);
#ifndef BUG_LAST_ACCESS
        atomic { CTOUCH; sleepers-- }
#endif
    fi;
    atomic { CTOUCH; cw_w = fw[WAITERS]; fw[WAITERS]-- };   /* last access */
#ifdef BUG_LAST_ACCESS
    if
    :: cw_slept -> atomic { CTOUCH; sleepers-- }
    :: else
    fi;
#endif
    if
    :: cw_w == (DESTROYING | 1) -> futex_wake(WAITERS, ALL, cw_n)  /* address only */
    :: else
    fi;
    mutex_lock(m, cw_slept && cw_may, 0, cw_n);   /* lock_requeued if it may have been requeued */
    cw_may = 0; cw_mm = 0; cw_slept = 0; cw_r = 0; cw_n = 0; cw_s = 0; cw_w = 0
}

#define SIG_LOCALS byte sg_w, sg_s, sg_m; short sg_r

inline cond_signal()
{
    atomic { CTOUCH; sg_w = fw[WAITERS] & ~DESTROYING };
    if
    :: sg_w != 0 ->
        atomic { CTOUCH; fw[SEQ]++; printf("P%d: signal, seq %d\n", _pid, fw[SEQ]) };
        atomic { CTOUCH; sg_w = sleepers };
        if
        :: sg_w != 0 -> futex_wake(SEQ, 1, sg_r)
        :: else
        fi
    :: else
    fi;
    sg_w = 0; sg_r = 0
}

inline cond_broadcast()
{
    atomic { CTOUCH; sg_w = fw[WAITERS] & ~DESTROYING };
    if
    :: sg_w != 0 ->
        atomic { CTOUCH; fw[SEQ]++; sg_s = fw[SEQ]; printf("P%d: broadcast, seq %d\n", _pid, sg_s) };
        atomic { CTOUCH; sg_w = sleepers };
        if
        :: sg_w != 0 ->
            atomic { CTOUCH; sg_m = cmutex };
            sg_r = -1;
            if
            /* requeue_wakes(): wake 2 with two usable CPUs, 1 with one;
             * the affinity mask can change between broadcasts: either */
            :: SINGLE(sg_m) ->
                futex_cmp_requeue(SEQ, sg_s, 1, ALL, sg_m, sg_r)
            :: SINGLE(sg_m) ->
                futex_cmp_requeue(SEQ, sg_s, 2, ALL, sg_m, sg_r)
            :: else
            fi;
            if
            :: sg_r >= 0
#ifndef BUG_NO_RECHECK
                /* a waiter of another mutex may have been moved: it tagged
                 * c->mutex before it slept; then wake all on the mutex */
                ; atomic { CTOUCH; sg_w = (cmutex != sg_m) };
                if
                :: sg_w -> futex_wake(sg_m, ALL, sg_r)
                :: else
                fi
#endif
#ifdef BUG_REQUEUE_ERR
            :: sg_r < 0 && SINGLE(sg_m)   /* gives up */
            :: sg_r < 0 && !SINGLE(sg_m) -> futex_wake(SEQ, ALL, sg_r)
#else
            :: sg_r < 0 -> futex_wake(SEQ, ALL, sg_r)    /* any error: wake all */
#endif
            fi
        :: else
        fi
    :: else
    fi;
    sg_w = 0; sg_s = 0; sg_r = 0; sg_m = 0
}

inline cond_destroy()
{
    atomic { CTOUCH; fw[WAITERS] = fw[WAITERS] | DESTROYING; sg_w = fw[WAITERS] };
    do
    :: (sg_w & ~DESTROYING) != 0 ->
#ifndef BUG_DESTROY_NO_MUTEX_WAKE
        atomic { CTOUCH; sg_m = UNTAG(cmutex) };   /* requeued_onto: tagged or not */
        if
        :: sg_m != NOMUTEX -> futex_wake(sg_m, ALL, sg_r)
        :: else
        fi;
#endif
        futex_wait(WAITERS, sg_w, 0, sg_r);
        atomic { CTOUCH; sg_w = fw[WAITERS] }
    :: else -> break
    od;
    atomic { CTOUCH; fw[WAITERS] = 0; destroyed = 1; printf("P%d: destroy returns\n", _pid) };
    sg_w = 0; sg_r = 0; sg_m = 0
}

proctype Waiter(byte m; byte which; bool late)
{
    FUTEX_LOCALS;
    MUTEX_LOCALS;
    COND_LOCALS;
    byte r;
#ifdef ISSUE_ORDER
    qn[SEQ] == _pid - 1;                  /* the previous waiters sleep on seq */
#endif
    if
    :: late -> started                    /* SCEN_LATE, SCEN_DMIXED */
    :: else
    fi;
#ifdef SCEN_LATE
    if
    :: m == M1 && which == 2 -> qn[SEQ] == 2 || go2   /* W1b: after W2 sleeps */
    :: else
    fi;
#endif
    mutex_lock(m, 0, 0, r);
#ifdef SCEN_SIGNAL
    do
    :: tokens > 0 -> break
    :: else -> cond_wait(m)
    od;
    tokens--;
#else
    do
    :: (which == 1 && go) || (which == 2 && go2) -> break
    :: else -> cond_wait(m)
    od;
#endif
    mutex_unlock(m)
}

proctype Signaller(bool bcast)
{
    FUTEX_LOCALS;
    MUTEX_LOCALS;
    SIG_LOCALS;
    byte r;
#if defined(SCEN_DESTROY)
    mutex_lock(M1, 0, 0, r);
    go = 1;
    cond_broadcast();
    cond_destroy();
    mutex_unlock(M1)
#elif defined(SCEN_MIXED)
#ifdef ISSUE_ORDER
    qn[SEQ] == 3;                          /* all three sleep on seq */
#endif
    mutex_lock(M1, 0, 0, r);
    mutex_lock(M2, 0, 0, r);
    go = 1;
    mutex_unlock(M2);
    mutex_unlock(M1);
    cond_broadcast()
#elif defined(SCEN_LATE)
    qn[SEQ] == 1; started = 1;             /* W1 sleeps on seq; then the others start */
    mutex_lock(M1, 0, 0, r);
    go = 1;
    mutex_unlock(M1);
    cond_broadcast();
    mutex_lock(M1, 0, 0, r);
    mutex_lock(M2, 0, 0, r);
    go2 = 1;
    mutex_unlock(M2);
    mutex_unlock(M1);
    cond_broadcast()
#elif defined(SCEN_DMIXED)
    qn[SEQ] == 2; started = 1;             /* both m1 waiters sleep on seq; then W2 starts */
    mutex_lock(M1, 0, 0, r);
    go = 1;
    cond_broadcast();
    mutex_lock(M2, 0, 0, r);
    go2 = 1;
    mutex_unlock(M2);
    cond_broadcast();
    cond_destroy();
    mutex_unlock(M1)
#else
    mutex_lock(M1, 0, 0, r);
    tokens++;
    mutex_unlock(M1);
    if
    :: bcast -> cond_broadcast()
    :: else -> cond_signal()
    fi
#endif
}

init
{
    byte i;
    atomic {
#if defined(SCEN_DESTROY)
        do
        :: i < NWAIT -> run Waiter(M1, 1, 0); i++
        :: else -> break
        od;
        run Signaller(1)
#elif defined(SCEN_MIXED)
        run Waiter(M2, 1, 0); run Waiter(M1, 1, 0); run Waiter(M2, 1, 0);
        run Signaller(1)
#elif defined(SCEN_LATE)
        run Waiter(M1, 1, 0); run Waiter(M1, 2, 1); run Waiter(M2, 2, 1);
        run Signaller(1)
#elif defined(SCEN_DMIXED)
        run Waiter(M1, 1, 0); run Waiter(M1, 1, 0); run Waiter(M2, 2, 1);
        run Signaller(1)
#else
        run Waiter(M1, 0, 0); run Waiter(M1, 0, 0);
        run Signaller(0); run Signaller(1)
#endif
    }
}
