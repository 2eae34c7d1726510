/* tests/model/futex.pml - the Linux futex(2) operations ksync uses, for the
 * Promela models in this directory (docs/model.md).
 *
 * A model defines, before including this file:
 *   NW     number of futex words (they are fw[0..NW-1]; the model names them
 *          with #defines)
 *   NPROC  an upper bound on _pid of any process that may wait (init is 0)
 * and may define FUTEX_ABANDON (a
 * condition under which a sleeper may jump to its process's end_abandoned
 * label: a model's way to cut paths it does not explore),
 * and every process that calls these inlines declares FUTEX_LOCALS.
 *
 * Each word has a FIFO wait queue (the kernel queues waiters of one priority
 * in FIFO order on the hash bucket; only their relative order on one word
 * matters here).  qw[p] is the word process p is queued on, or NONE.
 *
 * FUTEX_WAIT compares and enqueues in one atomic step (the hash-bucket lock
 * makes it so in the kernel); the sleeper then blocks until a waker dequeues
 * it.  A waiter that is never dequeued stays blocked at a non-end label, so
 * spin reports an invalid end state: that is how a lost wake-up shows.
 *
 * Nondeterminism (each an extra branch spin explores):
 *   - a timed wait (tmo != 0) may time out at any moment while it is still
 *     queued, or before it enters the kernel (ks_futex_wait_exact returns
 *     ETIMEDOUT for a past deadline without comparing the word).  A wake
 *     that dequeued the waiter first wins: Linux returns 0 then.
 *   - with -DSPURIOUS=n, a wait may return 0 while still queued (EINTR,
 *     folded into 0 by ks_futex_wait; or a stale wake from an earlier object
 *     at the same address), at most n times in a run.  ksync's callers must
 *     loop on their own state.  The bound matters: with unbounded spurious
 *     wake-ups no sleeper is ever blocked, so a lost wake-up would become a
 *     cycle instead of an invalid end state and pan -DSAFETY would not see it.
 */
#define NONE     255
#define EAGAIN   11
#define ETIMEDOUT 110
#define ALL      100 /* INT32_MAX */
#define FUTEX_LOCALS byte qi, qp, qm

byte fw[NW];               /* the futex words */
byte q[NW * NPROC];        /* q[w*NPROC + i]: i-th waiter queued on word w */
byte qn[NW];               /* queue length of word w */
byte qw[NPROC] = NONE;     /* word that process p is queued on, or NONE */
#ifdef SPURIOUS
byte nspur;                /* spurious wake-ups so far */
#endif
#ifdef FUTEX_MASKS
byte qmask[NPROC];         /* FUTEX_WAIT_BITSET mask of a queued process */
#endif

/* remove process p from the queue of word w (it must be there) */
inline q_remove(w, p)
{
    qi = 0;
    do
    :: q[w * NPROC + qi] == p -> break
    :: else -> qi++
    od;
    do
    :: qi + 1 < qn[w] -> q[w * NPROC + qi] = q[w * NPROC + qi + 1]; qi++
    :: else -> break
    od;
    qn[w]--;
    q[w * NPROC + qn[w]] = 0;
#ifdef FUTEX_MASKS
    qmask[p] = 0;
#endif
    qw[p] = NONE
}

/* dequeue the head of word w's queue and make it runnable */
inline q_wake_head(w)
{
    qp = q[w * NPROC];
    q_remove(w, qp);
    printf("P%d: wakes P%d from w%d\n", _pid, qp, w)
}

/* FUTEX_WAIT(&fw[w], val), timed if tmo; res = 0, EAGAIN or ETIMEDOUT.
 * Needs local bytes qi, qp in the calling process. */
inline futex_wait(w, val, tmo, res)
{
    atomic {
        if
        :: fw[w] != val -> res = EAGAIN;
            printf("P%d: FUTEX_WAIT(w%d, %d): EAGAIN (word is %d)\n", _pid, w, val, fw[w])
        :: fw[w] == val ->
            q[w * NPROC + qn[w]] = _pid; qn[w]++; qw[_pid] = w; res = 0;
            printf("P%d: FUTEX_WAIT(w%d, %d): sleeps\n", _pid, w, val)
        :: tmo -> res = ETIMEDOUT;  /* deadline already past: no syscall */
            printf("P%d: FUTEX_WAIT(w%d, %d): deadline already past\n", _pid, w, val)
        fi
    }
    if
    :: res == 0 ->
        if
        :: qw[_pid] == NONE ->     /* dequeued by a waker */
            printf("P%d: returns from FUTEX_WAIT(w%d): 0\n", _pid, w)
#ifdef FUTEX_ABANDON
        :: FUTEX_ABANDON -> goto end_abandoned   /* the model cuts this path */
#endif
        :: tmo ->                  /* the timer fires */
            atomic {
                if
                :: qw[_pid] != NONE -> q_remove(qw[_pid], _pid); qi = 0; res = ETIMEDOUT;
                    printf("P%d: FUTEX_WAIT(w%d): times out\n", _pid, w)
                :: else             /* a wake got there first: 0 */
                fi
            }
#ifdef SPURIOUS
        :: atomic { qw[_pid] != NONE && nspur < SPURIOUS -> nspur++;  /* EINTR -> 0 */
                    q_remove(qw[_pid], _pid); qi = 0;
                    printf("P%d: FUTEX_WAIT(w%d): spurious 0\n", _pid, w) }
#endif
        fi
    :: else
    fi
}

/* FUTEX_WAKE(&fw[w], n); res = number woken */
inline futex_wake(w, n, res)
{
    atomic {
        res = 0;
        do
        :: res < n && qn[w] > 0 -> q_wake_head(w); res++
        :: else -> break
        od;
        qi = 0; qp = 0
    }
}

/* FUTEX_CMP_REQUEUE(&fw[w], nwake, nmove, &fw[w2], val): if fw[w] != val
 * res = -1 (EAGAIN); else wake up to nwake from the head of w's queue, move
 * up to nmove of the rest to the tail of w2's queue, res = woken + moved. */
inline futex_cmp_requeue(w, val, nwake, nmove, w2, res)
{
    atomic {
        if
        :: fw[w] != val -> res = -1;
            printf("P%d: FUTEX_CMP_REQUEUE(w%d, %d): EAGAIN (word is %d)\n", _pid, w, val, fw[w])
        :: else ->
            res = 0;
            do
            :: res < nwake && qn[w] > 0 -> q_wake_head(w); res++
            :: else -> break
            od;
            qm = 0;
            do
            :: qm < nmove && qn[w] > 0 ->
                qp = q[w * NPROC];
                q_remove(w, qp);
                q[w2 * NPROC + qn[w2]] = qp; qn[w2]++; qw[qp] = w2;
                printf("P%d: requeues P%d from w%d to w%d\n", _pid, qp, w, w2);
                res++; qm++
            :: else -> break
            od;
            qm = 0
        fi;
        qi = 0; qp = 0
    }
}

#ifdef FUTEX_MASKS
/* FUTEX_WAIT_BITSET(&fw[w], val, mask): as futex_wait, queued with mask */
inline futex_wait_mask(w, val, tmo, mask, res)
{
    atomic {
        if
        :: fw[w] != val -> res = EAGAIN;
            printf("P%d: FUTEX_WAIT(w%d, %d, mask %d): EAGAIN (word is %d)\n", _pid, w, val, mask, fw[w])
        :: fw[w] == val ->
            q[w * NPROC + qn[w]] = _pid; qn[w]++; qw[_pid] = w; qmask[_pid] = mask; res = 0;
            printf("P%d: FUTEX_WAIT(w%d, %d, mask %d): sleeps\n", _pid, w, val, mask)
        :: tmo -> res = ETIMEDOUT;
            printf("P%d: FUTEX_WAIT(w%d, %d): deadline already past\n", _pid, w, val)
        fi
    }
    if
    :: res == 0 ->
        if
        :: qw[_pid] == NONE ->
            printf("P%d: returns from FUTEX_WAIT(w%d): 0\n", _pid, w)
        :: tmo ->
            atomic {
                if
                :: qw[_pid] != NONE -> q_remove(qw[_pid], _pid); qi = 0; res = ETIMEDOUT;
                    printf("P%d: FUTEX_WAIT(w%d): times out\n", _pid, w)
                :: else
                fi
            }
#ifdef SPURIOUS
        :: atomic { qw[_pid] != NONE && nspur < SPURIOUS -> nspur++;
                    q_remove(qw[_pid], _pid); qi = 0;
                    printf("P%d: FUTEX_WAIT(w%d): spurious 0\n", _pid, w) }
#endif
        fi
    :: else
    fi
}

/* FUTEX_WAKE_BITSET(&fw[w], n, mask): wake up to n queued processes whose
 * mask shares a bit with mask, oldest first */
inline futex_wake_mask(w, n, mask, res)
{
    atomic {
        res = 0; qm = 0;
        do
        :: res < n && qm < qn[w] ->
            qp = q[w * NPROC + qm];
            if
            :: qmask[qp] & mask ->
                q_remove(w, qp); res++;
                printf("P%d: wakes P%d from w%d (mask %d)\n", _pid, qp, w, mask)
            :: else -> qm++
            fi
        :: else -> break
        od;
        qi = 0; qp = 0; qm = 0
    }
}
#endif
