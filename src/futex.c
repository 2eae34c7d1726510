/* src/futex.c - the only place in ksync that calls futex(2).
 *
 * Waits use FUTEX_WAIT_BITSET (mask FUTEX_BITSET_MATCH_ANY unless the
 * caller parks different kinds of waiters on one word): it takes an
 * *absolute* timeout on CLOCK_MONOTONIC (no FUTEX_CLOCK_REALTIME), so a
 * caller's deadline survives any number of retries unchanged and a
 * wall-clock step changes nothing (docs/pitfalls.md items 32-33).
 *
 * What every caller can rely on (docs/pitfalls.md):
 *  - a 0 return proves nothing (stale wakes from an earlier object at the same
 *    address, EINTR): callers loop on their own state;
 *  - EINTR is folded into 0 here, once (ks_futex_wait_intr and
 *    ks_futex_wait_cancellable keep it apart for calls that report it,
 *    ks_futex_wait_exact for ks_queue's wake-up accounting: internal.h);
 *  - a KS_SHARED sleep ends within KS_PEER_RECHECK_NS as a spurious wake-up
 *    (except in ks_futex_wait_exact), so a wake lost with a killed peer
 *    process costs at most that delay (wait_sliced below);
 *  - ETIMEDOUT is confirmed by reading the clock (nsync re-reads the clock
 *    after ETIMEDOUT; item 34), and a deadline already in the past returns
 *    ETIMEDOUT without entering the kernel (an old NPTL hung there);
 *  - private vs shared op is the object's KS_SHARED flag (item 6);
 *  - no ENOSYS fall-back (item 4): a kernel without private futexes
 *    (before 2.6.22) has no FUTEX_WAIT_BITSET either (2.6.25), so retrying
 *    with the shared op could not help.  ksync needs Linux 2.6.25 for its
 *    futex operations, and below that glibc's own minimum (3.2 for
 *    Debian 12's glibc) applies anyway; the fork detection of src/thread.c
 *    uses MADV_WIPEONFORK when the kernel has it (4.14);
 *  - on 32-bit targets with a 64-bit time_t the timeout goes through
 *    futex_time64 with a 64-bit timespec (item 5).
 */
#include "internal.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static KS_TLS struct ks_futex_stats tls_stats;

static inline int op_flags(unsigned flags)
{
    return (flags & KS_SHARED) ? 0 : FUTEX_PRIVATE_FLAG;
}

#if defined(SYS_futex_time64) && __SIZEOF_LONG__ == 4
struct ks_kts { int64_t tv_sec; int64_t tv_nsec; };
#define KS_SYS_FUTEX_TIMED SYS_futex_time64
#else
#define ks_kts timespec
#define KS_SYS_FUTEX_TIMED SYS_futex
#endif

static long futex_call(long nr, const uint32_t *uaddr, int op, uint32_t val, const void *ts_or_val2,
                       const uint32_t *uaddr2, uint32_t val3)
{
    /* syscall() reads its arguments as longs: widen them explicitly. */
    return syscall(nr, uaddr, (long)op, (long)val, ts_or_val2, uaddr2, (long)val3);
}

int ks_futex_wait(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags)
{
    return ks_futex_wait_mask(word, expect, deadline, flags, FUTEX_BITSET_MATCH_ANY);
}

/* A KS_SHARED sleep lasts at most KS_PEER_RECHECK_NS (internal.h).  A peer
 * process killed after the store that publishes its change and before its
 * FUTEX_WAKE takes that wake with it, and the sleepers would wait for one
 * that never comes: a semaphore's unit posted, an event set, a barrier's
 * phase opened, a condition variable signalled (docs/shared.md).  The end
 * of a slice is a spurious wake-up, 0, which every caller re-checks: it
 * then sees the change and acts on it as if woken.  Private objects are not
 * sliced: a thread cannot be killed alone.  A caller passes
 * KS_FUTEX_NOSLICE when it slices for itself (ks_mutex, which must tell a
 * slice's end from a wake) or must not be sliced (the drop-in layer's
 * untimed sem_wait: a timed FUTEX_WAIT interrupted by a signal handler
 * returns EINTR even under SA_RESTART, and sem_wait would report it). */
static int wait_sliced(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags,
                       uint32_t mask)
{
    if ((flags & (KS_SHARED | KS_FUTEX_NOSLICE)) == KS_SHARED) {
        int64_t slice = ks_deadline_after(KS_PEER_RECHECK_NS);
        if (deadline > slice) {
            int e = ks_futex_wait_exact(word, expect, slice, flags, mask);
            return e == ETIMEDOUT ? 0 : e;
        }
    }
    return ks_futex_wait_exact(word, expect, deadline, flags, mask);
}

int ks_futex_wait_mask(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags,
                       uint32_t mask)
{
    int e = wait_sliced(word, expect, deadline, flags, mask);
    return e == EINTR ? 0 : e;
}

int ks_futex_wait_intr(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags)
{
    return wait_sliced(word, expect, deadline, flags, FUTEX_BITSET_MATCH_ANY);
}

int ks_futex_wait_exact(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags,
                        uint32_t mask)
{
    struct ks_kts ts, *tsp = NULL;

    if (deadline != KS_FOREVER) {
        if (deadline <= ks_now())
            return ETIMEDOUT;
        ts.tv_sec = deadline / KS_NSEC_PER_SEC;
        ts.tv_nsec = deadline % KS_NSEC_PER_SEC;
        tsp = &ts;
    }
    tls_stats.waits++;
    long r = futex_call(KS_SYS_FUTEX_TIMED, word, FUTEX_WAIT_BITSET | op_flags(flags), expect, tsp, NULL,
                        mask);
    if (r == 0)
        return 0;
    switch (errno) {
    case EAGAIN:
        return EAGAIN;
    case ETIMEDOUT:
        /* Trust but verify: the kernel's clock and ours are the same
         * CLOCK_MONOTONIC, so this is only belt and braces. */
        return (deadline != KS_FOREVER && ks_now() >= deadline) ? ETIMEDOUT : EINTR;
    case EINTR:
    default:
        /* spurious: the caller re-checks and keeps its deadline (an
         * interrupted wait on some old kernels said ENOSYS: urcu b2633d2) */
        return EINTR;
    }
}

/* Asynchronous cancellation is enabled for the syscall alone, as glibc's own
 * cancellable futex waits did before 2.40 (__pthread_enable_asynccancel):
 * the cancellation signal then unwinds from inside the wait, through the
 * caller's frames, to the cleanup handler the caller pushed.  Setting the
 * type acts at once on a cancellation already pending. */
int ks_futex_wait_cancellable(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags)
{
    int old;
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old);
    int e = wait_sliced(word, expect, deadline, flags, FUTEX_BITSET_MATCH_ANY);
    pthread_setcanceltype(old, &old);
    return e;
}

int ks_futex_wake(const uint32_t *word, int n, unsigned flags)
{
    return ks_futex_wake_mask(word, n, flags, FUTEX_BITSET_MATCH_ANY);
}

int ks_futex_wake_mask(const uint32_t *word, int n, unsigned flags, uint32_t mask)
{
    tls_stats.wakes++;
    long r = futex_call(SYS_futex, word, FUTEX_WAKE_BITSET | op_flags(flags), (uint32_t)n, NULL, NULL, mask);
    if (r >= 0) {
        tls_stats.woken += (uint64_t)r;
        return (int)r;
    }
    /* EFAULT: the memory was unmapped after the releasing store, which a
     * caller is allowed to do (docs/pitfalls.md item 14): nobody is left
     * to wake. */
    return 0;
}

int ks_futex_requeue(const uint32_t *word, uint32_t expect, int n_wake, int n_move,
                     const uint32_t *to, unsigned flags)
{
    tls_stats.wakes++;
    long r = futex_call(SYS_futex, word, FUTEX_CMP_REQUEUE | op_flags(flags), (uint32_t)n_wake,
                        (const void *)(uintptr_t)n_move, to, expect);
    if (r >= 0) {
        tls_stats.woken += (uint64_t)r;
        return (int)r;
    }
    return -errno; /* every failure: the caller falls back to a plain wake */
}

int ks_futex_stats(struct ks_futex_stats *out)
{
    if (!out)
        return EINVAL;
    *out = tls_stats;
    return 0;
}

/* futex_waitv(2) (Linux 5.16): one sleep on several words, for a waiter
 * that must also hear its peers' robust futexes (src/channel.c).  The
 * timeout is absolute on the clock named in the call. */
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* the same number on every architecture */
#endif

/* Set once futex_waitv has been refused for good in this process: ENOSYS
 * (a kernel before 5.16) or EPERM/EACCES (a seccomp filter, as Docker's
 * default profile before 20.10 answers unknown system calls).  relaxed: a
 * hint that only saves the refused call. */
static int waitv_refused;

int ks_futex_waitv(const uint32_t *const *words, const uint32_t *expect, const unsigned *flags, unsigned n,
                   int64_t deadline)
{
    if (__atomic_load_n(&waitv_refused, __ATOMIC_RELAXED))
        return ENOSYS;
    struct futex_waitv v[FUTEX_WAITV_MAX];
    struct ks_kts ts, *tsp = NULL;

    if (n == 0 || n > FUTEX_WAITV_MAX)
        return EINVAL;
    if (deadline != KS_FOREVER) {
        if (deadline <= ks_now())
            return ETIMEDOUT;
        ts.tv_sec = deadline / KS_NSEC_PER_SEC;
        ts.tv_nsec = deadline % KS_NSEC_PER_SEC;
        tsp = &ts;
    }
    for (unsigned i = 0; i < n; i++) {
        v[i].val = expect[i];
        v[i].uaddr = (uint64_t)(uintptr_t)words[i];
        /* the waker's op decides the key: FUTEX_PRIVATE_FLAG for a private object */
        v[i].flags = FUTEX_32 | ((flags && !(flags[i] & KS_SHARED)) ? FUTEX_PRIVATE_FLAG : 0);
        v[i].__reserved = 0;
    }
    tls_stats.waits++;
    long r = syscall(SYS_futex_waitv, v, (long)n, 0L, tsp, (long)CLOCK_MONOTONIC);
    if (r >= 0)
        return 0;
    switch (errno) {
    case EAGAIN:
        return EAGAIN;
    case ENOSYS:
    case EPERM:
    case EACCES:
        /* Refused: the callers fall back to sleeping in slices.  Mapping
         * these to "spurious" made them loop without ever sleeping. */
        __atomic_store_n(&waitv_refused, 1, __ATOMIC_RELAXED);
        return ENOSYS;
    case EINVAL:
    case ENOMEM:
    case EFAULT:
        return ENOSYS; /* this call cannot sleep: the fallback can */
    case ETIMEDOUT:
        return (deadline != KS_FOREVER && ks_now() >= deadline) ? ETIMEDOUT : 0;
    default:
        return 0; /* EINTR: the caller re-checks */
    }
}
