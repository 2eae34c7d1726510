/* tests/model/kmutex.pml - ks_mutex (src/mutex.c, include/ksync/mutex.h) as
 * Promela inlines over futex.pml, shared by mutex.pml and cond.pml.
 *
 * The word is fw[m]; bits ML (locked), MC (contended: maybe sleepers), MS
 * (starving: only threads that already slept may take it; the thread that
 * set MS clears it when it leaves).  Every process that calls these declares
 * FUTEX_LOCALS and MUTEX_LOCALS.  The including model may define
 *   NO_STARVE          never set MS (a model that does not exercise it)
 *   BUG_STARVE_RESIDUE the timed-out owner of MS clears only MS, leaving MC
 *                      on a free mutex (the protocol before the fix)
 *   BUG_NO_SLEPT_C     a thread that acquires after having slept does not
 *                      set MC (Drepper's rule, (I2), forgotten: the other
 *                      sleepers are no longer announced)
 *
 * mx_in[m] counts the threads between a successful lock and the unlock: the
 * mutual-exclusion assertion.
 */
#define ML 1
#define MC 2
#define MS 4
#define MUTEX_LOCALS byte ml_slept, ml_set_s, ml_since, ml_done, ml_want, ml_s, ml_ns, ml_w

byte mx_in[NW];

/* ks_mutex_lock (slept0 = 0) / ks_mutex_lock_requeued (slept0 = 1);
 * timed (tmo = 1: ks_mutex_timedlock with a finite deadline) or not.
 * r = 0 (acquired) or ETIMEDOUT.
 *
 * Each "load s, decide, CAS s -> ns, on failure start over" of lock_slow is
 * one atomic step here: between the load and the CAS the C code touches
 * only locals, and a failed CAS has no effect, so the successful CAS is the
 * only point other threads can observe.  The inline fast path and the
 * bounded spin are left out: they only CAS 0 -> L, which is exactly what
 * the first round of the loop below does on a 0 word (ns = 0|L), so they
 * add no behaviour, only steps. */
inline mutex_lock(m, slept0, tmo, r)
{
    ml_slept = slept0; ml_set_s = 0; ml_since = 0; ml_done = 0; r = 0;
    do
    :: ml_done -> break
    :: else ->
        atomic {
            ml_s = fw[m];
            if
            :: !(ml_s & ML) && (!(ml_s & MS) || ml_slept) ->
#ifdef BUG_NO_SLEPT_C
                ml_ns = ml_s | ML;                           /* (I2) forgotten */
#else
                ml_ns = ml_s | ML | (ml_slept -> MC : 0);   /* (I2) */
#endif
                if
                :: ml_set_s -> ml_ns = ml_ns & ~MS
                :: else
                fi;
                fw[m] = ml_ns; ml_done = 1
            :: else ->
                ml_ns = ml_s | MC;                           /* (I1) */
                ml_want = 0;
                if
                :: !ml_since && tmo ->                       /* deadline already past */
                    r = ETIMEDOUT; ml_done = 1
                :: true ->
#ifndef NO_STARVE
                    /* "waited more than KS_MUTEX_STARVE_NS": any time after a sleep */
                    if
                    :: ml_since && !ml_set_s && !(ml_s & MS) -> ml_want = 1; ml_ns = ml_ns | MS;
                        printf("P%d: sets S on w%d\n", _pid, m)
                    :: true
                    fi;
#endif
                    fw[m] = ml_ns;
                    ml_set_s = ml_set_s | ml_want; ml_since = 1
                fi
            fi
        };
        if
        :: !ml_done ->
            futex_wait(m, ml_ns, tmo, r);
            ml_slept = 1;
            if
            :: r == ETIMEDOUT ->
                if
                :: ml_set_s ->
                    /* the CAS loop, as one read-modify-write */
                    atomic {
                        ml_s = fw[m];
#ifdef BUG_STARVE_RESIDUE
                        fw[m] = ml_s & ~MS
#else
                        fw[m] = ((ml_s & ML) -> (ml_s & ~MS) : 0)
#endif
                        ;printf("P%d: timed out, clears S on w%d (%d -> %d)\n", _pid, m, ml_s, fw[m])
                    };
                    if
                    :: !(ml_s & ML) && (ml_s & MC) -> futex_wake(m, 1, ml_w)
                    :: else
                    fi
                :: else
                fi;
                ml_done = 1
            :: else -> r = 0
            fi
        :: else
        fi
    od;
    if
    :: r == 0 -> mx_in[m]++; assert(mx_in[m] == 1);  /* mutual exclusion */
        printf("P%d: locked w%d\n", _pid, m)
    :: else -> printf("P%d: lock of w%d timed out\n", _pid, m)
    fi;
    ml_slept = 0; ml_set_s = 0; ml_since = 0; ml_done = 0; ml_want = 0;
    ml_s = 0; ml_ns = 0; ml_w = 0
}

/* ks_mutex_unlock: fast path CAS L -> 0, else release keeping only MS and
 * wake one if the old value had MC or MS. */
inline mutex_unlock(m)
{
    mx_in[m]--;
    atomic { ml_s = fw[m]; assert(ml_s & ML); fw[m] = ml_s & MS;
             printf("P%d: unlocks w%d (%d -> %d)\n", _pid, m, ml_s, fw[m]) };
    if
    :: ml_s & (MC | MS) -> futex_wake(m, 1, ml_w)
    :: else
    fi;
    ml_s = 0; ml_w = 0
}
