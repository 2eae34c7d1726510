/* tests/model/cond.pml - ks_cond (src/cond.c): sequence counter, waiter
 * reference count with DESTROYING, sleepers count, the sticky mutex hint
 * (NULL -> m -> MIXED) and requeue-on-broadcast onto the mutex word, with
 * the real ks_mutex (kmutex.pml, without the starvation bit) underneath.
 * See docs/model.md.
 *
 * Scenarios (one per run; run.sh checks all three):
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
 *   BUG_REQUEUE_ERR  a failed CMP_REQUEUE (seq moved) is not followed by
 *                 wake-all (SCEN_SIGNAL)
 *   BUG_LAST_ACCESS  waiters-- (the reference destroy waits for) is done
 *                 before sleepers--: destroy can return while a waiter still
 *                 writes the object (SCEN_DESTROY)
 */
#if !defined(SCEN_MIXED) && !defined(SCEN_SIGNAL) && !defined(SCEN_DESTROY)
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
#define MIXED 253             /* c->mutex: waiters used different mutexes */

#include "futex.pml"
#include "kmutex.pml"

int  sleepers;                /* c->sleepers */
byte cmutex = NOMUTEX;        /* c->mutex: a word index, NOMUTEX or MIXED */
bool destroyed;               /* ks_cond_destroy has returned */
byte go;                      /* the predicate (SCEN_DESTROY, SCEN_MIXED) */
byte tokens;                  /* the predicate (SCEN_SIGNAL) */

#define CTOUCH assert(!destroyed)
#define COND_LOCALS byte cw_mm, cw_slept, cw_r, cw_n, cw_s, cw_w

/* ks_cond_wait(c, m) (untimed) */
inline cond_wait(m)
{
    atomic { CTOUCH; fw[WAITERS]++ };
#ifdef BUG_LATEST_MUTEX
    atomic { CTOUCH; cmutex = m };
#else
    /* a CAS loop on a sticky value: one atomic step */
    atomic {
        CTOUCH;
        if
        :: cmutex == m
        :: cmutex == NOMUTEX -> cmutex = m
        :: else -> cmutex = MIXED
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
    mutex_lock(m, cw_slept, 0, cw_n);       /* lock_requeued if it slept */
    cw_mm = 0; cw_slept = 0; cw_r = 0; cw_n = 0; cw_s = 0; cw_w = 0
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
            :: sg_m != NOMUTEX && sg_m != MIXED ->
                futex_cmp_requeue(SEQ, sg_s, 1, ALL, sg_m, sg_r)
            :: else
            fi;
            if
            :: sg_r >= 0
#ifdef BUG_REQUEUE_ERR
            :: sg_r < 0 && sg_m != NOMUTEX && sg_m != MIXED   /* gives up */
            :: sg_r < 0 && (sg_m == NOMUTEX || sg_m == MIXED) -> futex_wake(SEQ, ALL, sg_r)
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
        atomic { CTOUCH; sg_m = cmutex };
        if
        :: sg_m != NOMUTEX && sg_m != MIXED -> futex_wake(sg_m, ALL, sg_r)
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

proctype Waiter(byte m)
{
    FUTEX_LOCALS;
    MUTEX_LOCALS;
    COND_LOCALS;
    byte r;
#ifdef ISSUE_ORDER
    qn[SEQ] == _pid - 1;                  /* the previous waiters sleep on seq */
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
    :: go -> break
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
        :: i < NWAIT -> run Waiter(M1); i++
        :: else -> break
        od;
        run Signaller(1)
#elif defined(SCEN_MIXED)
        run Waiter(M2); run Waiter(M1); run Waiter(M2);
        run Signaller(1)
#else
        run Waiter(M1); run Waiter(M1);
        run Signaller(0); run Signaller(1)
#endif
    }
}
