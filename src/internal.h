/* src/internal.h - what ksync's sources share and users never see. */
#ifndef KS_INTERNAL_H
#define KS_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <ksync/arch.h>

#include <ksync/common.h>
#include <ksync/time.h>
#include <ksync/debug.h>

/* No ksync call is a cancellation point (docs/conventions.md), except the
 * drop-in layer's POSIX calls that are one and waits that ask for it
 * (KS_WAIT_CANCEL).  A call that makes a system call which is one (open,
 * close, pthread_join, write) brackets it with these: a cancel pending or
 * arriving meanwhile acts at the caller's next cancellation point. */
static inline int ks_nocancel_begin(void)
{
    int old = PTHREAD_CANCEL_ENABLE;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}
static inline void ks_nocancel_end(int old) { pthread_setcancelstate(old, NULL); }

#define KS_HIDDEN __attribute__((visibility("hidden")))

/* Thread-local state of the library: the initial-exec model makes an
 * access one %fs-relative load even in libksync.so (the default model for
 * a shared object calls __tls_get_addr on each access).  The cost is a few
 * bytes of static TLS, which glibc reserves room for even when the library
 * is dlopen()ed. */
#define KS_TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* Memory-order convention in src/: every acquire/release/seq_cst operation
 * names what it pairs with in a comment.  A relaxed load that only seeds a
 * compare-and-swap loop (or a spin that ends in one) carries no ordering of
 * its own: the CAS that acts on the value does, and is commented there. */

/* ---- futex core (src/futex.c is the only file that makes the syscall) ----
 *
 * ks_futex_wait: sleep while *word == expect, until woken or `deadline`
 *   (absolute CLOCK_MONOTONIC ns, KS_FOREVER for none).  Returns
 *     0          woken, or a spurious/EINTR return: re-check your state
 *     EAGAIN     *word != expect when the kernel looked: re-check your state
 *     ETIMEDOUT  the deadline has passed (confirmed against the clock; a
 *                deadline already past returns this without a syscall)
 *   It never returns EINTR: a signal handler running during the wait is a
 *   spurious wake-up, and the caller's loop keeps its absolute deadline.
 *   With KS_SHARED it sleeps at most KS_PEER_RECHECK_NS at a time and
 *   returns 0 at the end of such a slice: a peer process killed between
 *   its change and its wake cannot strand the sleepers (src/futex.c);
 *   KS_FUTEX_NOSLICE in flags turns that off for one call.
 * ks_futex_wake: wake up to n waiters; returns how many the kernel woke.
 * ks_futex_requeue: wake up to n_wake waiters on `word` and move up to
 *   n_move others to `to`, if *word == expect (FUTEX_CMP_REQUEUE); returns
 *   the number woken plus moved, or -errno on any failure (-EAGAIN if
 *   *word != expect; -EFAULT, -EINVAL...): the caller must then wake its
 *   waiters another way.
 * flags: KS_SHARED selects the process-shared futex op; the choice is a
 *   property of the object, fixed at init, so waiter and waker always agree
 *   (docs/pitfalls.md item 6).
 */
#define KS_WAKE_ALL INT32_MAX     /* the n of a wake (or requeue) that reaches every waiter */
/* In the flags of a wait: do not cut this KS_SHARED sleep into slices (the
 * caller cuts its own, or must not be cut: src/futex.c, wait_sliced).  No
 * object keeps this bit in its own flags. */
#define KS_FUTEX_NOSLICE 0x80000000u
#define KS_MATCH_ANY 0xffffffffu /* the bitset mask that matches every waiter */
KS_HIDDEN int ks_futex_wait(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags);
KS_HIDDEN int ks_futex_wake(const uint32_t *word, int n, unsigned flags);
/* The same with a FUTEX_WAIT_BITSET/FUTEX_WAKE_BITSET mask: a wake reaches
 * only waiters whose mask shares a bit with it (ks_rwlock parks readers and
 * writers on one word and wakes either kind). */
KS_HIDDEN int ks_futex_wait_mask(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags,
                                 uint32_t mask);
/* ks_futex_wait, except that EINTR (a signal handler ran during the wait) is
 * returned instead of 0: for calls that must report it (the drop-in
 * layer's sem_wait). */
KS_HIDDEN int ks_futex_wait_intr(const uint32_t *word, uint32_t expect, int64_t deadline, unsigned flags);
/* The same, except that a return the kernel did not report as a FUTEX_WAKE
 * (a signal, a refused ETIMEDOUT, an old kernel's ENOSYS) is EINTR instead
 * of 0: 0 then means a FUTEX_WAKE on this word chose this thread (ks_queue
 * lets its wakers count off the sleepers they wake). */
KS_HIDDEN int ks_futex_wait_exact(const uint32_t *word, uint32_t expect, int64_t deadline,
                                  unsigned flags, uint32_t mask);
/* ks_futex_wait_intr with asynchronous cancellation enabled around the
 * syscall: a pthread_cancel() of the thread unwinds out of the wait (the
 * caller must have pushed a cleanup handler that repairs its state).  For
 * the POSIX cancellation points of the drop-in layer (src/dropin/). */
KS_HIDDEN int ks_futex_wait_cancellable(const uint32_t *word, uint32_t expect, int64_t deadline,
                                        unsigned flags);
KS_HIDDEN int ks_futex_wake_mask(const uint32_t *word, int n, unsigned flags, uint32_t mask);
KS_HIDDEN int ks_futex_requeue(const uint32_t *word, uint32_t expect, int n_wake, int n_move,
                               const uint32_t *to, unsigned flags);


/* ks_futex_waitv: sleep until one of n words (n <= 128) no longer holds
 *   its expected value or is woken, or until `deadline`.  flags[i] is the
 *   object's KS_SHARED flag (as for ks_futex_wait); flags NULL: all shared.
 *   Returns 0 (woken, or spurious), EAGAIN (a word differed), ETIMEDOUT, or
 *   ENOSYS (the call cannot sleep: a kernel before 5.16, a seccomp filter
 *   that refuses it (EPERM), a word it cannot read: the caller falls back
 *   to ks_futex_wait on its main word in slices).  Never EINTR. */
KS_HIDDEN int ks_futex_waitv(const uint32_t *const *words, const uint32_t *expect, const unsigned *flags,
                             unsigned n, int64_t deadline);

/* Lock a ks_mutex as a thread that has slept on it: no spinning, and the
 * CONTENDED bit is always set, because threads requeued from a condition
 * variable may be asleep on the mutex word (docs/pitfalls.md item 19). */
struct ks_mutex;
KS_HIDDEN int ks_mutex_lock_requeued(struct ks_mutex *m);

/* ---- waits with POSIX semantics, for the drop-in layer ----
 * KS_WAIT_CANCEL: the wait is a cancellation point (a pthread_cancel()
 *   unwinds out of it after the primitive's own state is repaired: a
 *   condition wait re-takes the mutex, a semaphore waiter unregisters and
 *   passes on any wake it may have absorbed).
 * KS_WAIT_EINTR: a signal handler that interrupts the sleep ends the wait
 *   with EINTR (sem_wait's documented behaviour; ksync's own calls restart). */
/* KS_WAIT_UNTIMED: the call has no timeout (sem_wait, as against a
 *   sem_timedwait whose deadline is too far to count): with KS_WAIT_EINTR
 *   its sleep is one untimed futex wait, which the kernel restarts after an
 *   SA_RESTART handler, instead of one-second slices, which it would not
 *   (src/futex.c). */
#define KS_WAIT_CANCEL 1u
#define KS_WAIT_EINTR 2u
#define KS_WAIT_UNTIMED 4u
struct ks_sem;
KS_HIDDEN int ks_sem_wait_ext(struct ks_sem *s, int64_t deadline, unsigned opts);
/* The same with the caller's call site (the class of lock statistics: the
 * drop-in layer passes the program's), and init and trywait with one. */
KS_HIDDEN int ks_sem_wait_at(struct ks_sem *s, int64_t deadline, unsigned opts, const void *site);
KS_HIDDEN int ks_sem_init_at(struct ks_sem *s, unsigned value, unsigned max, unsigned flags, const void *site);
KS_HIDDEN int ks_sem_trywait_at(struct ks_sem *s, const void *site);
/* A condition wait on any mutex: `mutex` is passed to the two operations;
 * `word` is the ks_mutex that broadcast may requeue waiters onto (it must be
 * the lock that ops->unlock releases and ops->relock takes), or NULL if the
 * mutex is not a ks_mutex (then this condition variable never requeues).
 * unlock(mutex): 0, or an error (EPERM: the caller does not hold it) that
 * ends the wait at once, with nothing to undo but the waiter count.
 * relock(mutex, requeued): requeued says the waiter may have been moved onto
 * `word` (lock as ks_mutex_lock_requeued does); returns 0 or an error that
 * the wait returns (a robust mutex's EOWNERDEAD). */
struct ks_cond;
struct ks_cond_lockops {
    int (*unlock)(void *mutex);
    int (*relock)(void *mutex, int requeued);
};
KS_HIDDEN int ks_cond_wait_ext(struct ks_cond *c, void *mutex, struct ks_mutex *word,
                               const struct ks_cond_lockops *ops, int64_t deadline, unsigned opts);
/* rwlock slow paths with the preference given by the caller (prefer_reader:
 * readers enter while writers wait, as glibc's default rwlock kind) and
 * the caller's call site (the class of lock statistics: the drop-in layer
 * passes the program's).  revoke_at: ks_rwlock_revoke_ (after a fast
 * path's acquiring CAS). */
struct ks_rwlock;
KS_HIDDEN int ks_rwlock_init_at(struct ks_rwlock *l, unsigned flags, const void *site);
/* skipped: the caller made no inline CAS (the drop-in layer counting every
 * acquisition): the library makes it first */
KS_HIDDEN int ks_rwlock_rdlock_mode(struct ks_rwlock *l, int64_t deadline, int prefer_reader, const void *site,
                                    int skipped);
KS_HIDDEN int ks_rwlock_tryrdlock_mode(struct ks_rwlock *l, int prefer_reader, const void *site);
KS_HIDDEN int ks_rwlock_unlock_mode(struct ks_rwlock *l, int prefer_reader);
KS_HIDDEN int ks_rwlock_wrlock_at(struct ks_rwlock *l, int64_t deadline, const void *site);
KS_HIDDEN int ks_rwlock_trywrlock_at(struct ks_rwlock *l, const void *site);
KS_HIDDEN int ks_rwlock_revoke_at(struct ks_rwlock *l, int64_t deadline, const void *site);
/* Readers holding l through the visible-readers table (for tests). */
KS_HIDDEN unsigned ks_rwlock_table_readers_(const struct ks_rwlock *l);
/* Run-once on a bare 32-bit word (pthread_once_t is an int); the word is
 * ks_once_t's state.  A cancelled fn leaves the word NEW again, so a later
 * caller runs it (POSIX). */
KS_HIDDEN int ks_once_word(uint32_t *state, unsigned flags, void (*fn)(void));

/* ---- process image (src/thread.c) ----
 * ks_process_gen: the fork generation of the calling process image: equal
 *   for every call within one process, different in any fork child (fork(),
 *   _Fork(), syscall(SYS_fork), clone without CLONE_VM) from every value an
 *   ancestor returned.  Two loads when nothing changed; the first call in a
 *   new child draws the child's generation (and a new nonce for ids).
 *   Compare a cached per-thread or per-object value with it to detect that
 *   the value was made by another process image. */
#define KS_GEN_BUSY UINT64_MAX /* the word while a child's first caller draws */
KS_HIDDEN extern uint64_t *ks_gen_word;
/* 64 random bits from getrandom(2), or, if it fails, bits mixed from the
 * tick counter, the pid and a counter (good enough for hash seeds and
 * nonces, not for secrets). */
KS_HIDDEN uint64_t ks_random_u64(void);
KS_HIDDEN uint64_t ks_process_gen_slow(void);
static inline uint64_t ks_process_gen(void)
{
    /* acquire: pairs with the release stores in src/thread.c (the page
     * pointer at start-up, a child's new generation after its hooks). */
    uint64_t g = __atomic_load_n(__atomic_load_n(&ks_gen_word, __ATOMIC_ACQUIRE), __ATOMIC_ACQUIRE);
    if (KS_LIKELY(g != 0 && g != KS_GEN_BUSY))
        return g;
    return ks_process_gen_slow();
}

/* ---- thread exit (src/thread.c) ----
 * One pthread key, made at the first need, whose destructor runs the hooks
 * the exiting thread armed, in the order of this enum: the epoch's hook may
 * run retire functions, which may use a cache (its first get on the thread
 * then arms the cache's hook, which runs in the same call); the cache's
 * hook calls nothing.  A thread that never armed a hook gets no destructor
 * call.  ks_thread_at_exit arms hook `which` of the calling thread (fn is
 * the same every time for one `which`); 0, or EAGAIN/ENOMEM if no key can
 * be had (then fn will not run: the caller must not take what it would
 * give back).  ks_thread_at_exit_cancel disarms it (the key is cleared when
 * no hook is left).  A hook runs once per arming and at most once per
 * destructor call; one armed again after it ran (by a later hook, or by a
 * key destructor that runs after ours) runs in glibc's next round, if there
 * is one (PTHREAD_DESTRUCTOR_ITERATIONS).  In a fork child the forking
 * thread keeps its armed hooks, as it keeps its thread-local state. */
enum ks_exit_hook {
    KS_EXIT_EPOCH,      /* src/epoch.c: closes a section left open, leaves */
    KS_EXIT_CACHE_LINE, /* src/cache.c: gives the hit/miss line back */
    KS_EXIT_LOCKSTAT,   /* src/lockstat.c: adds the thread's pending counts */
    KS_EXIT_LOCKDEP,    /* src/lockdep.c: reports locks still held, frees the list */
    KS_EXIT_HOOKS
};
KS_HIDDEN int ks_thread_at_exit(enum ks_exit_hook which, void (*fn)(void));
KS_HIDDEN void ks_thread_at_exit_cancel(enum ks_exit_hook which);

/* A deadline (absolute CLOCK_MONOTONIC ns) that has passed; KS_FOREVER never
 * does, and costs no clock read. */
static inline int ks_deadline_passed(int64_t deadline)
{
    return deadline != KS_FOREVER && deadline <= ks_now();
}

/* ---- destroy drain (ks_cond, ks_barrier) ----
 * A count of the threads that may still touch an object after the call
 * that released them returned control to others (a woken condition waiter,
 * a released barrier waiter), so that "wake, destroy, free" is safe: each
 * such thread's last access is ks_drain_leave; destroy sets
 * KS_DRAIN_DESTROYING and sleeps until the count is 0.  `nudge` (or NULL)
 * runs before each sleep, for users that can only leave once woken
 * elsewhere (waiters requeued onto a mutex).  The count's word is the futex
 * word of that sleep, and only its address is used after the decrement. */
#define KS_DRAIN_DESTROYING 0x80000000u
static inline void ks_drain_leave(uint32_t *users, unsigned flags)
{
    /* release: pairs with ks_drain's acquire, so our accesses to the object
     * happen before the destroyer frees it. */
    uint32_t u = __atomic_fetch_sub(users, 1, __ATOMIC_RELEASE);
    if (u == (KS_DRAIN_DESTROYING | 1))
        ks_futex_wake(users, KS_WAKE_ALL, flags); /* address only */
}
static inline void ks_drain(uint32_t *users, unsigned flags, void (*nudge)(const void *), const void *arg)
{
    /* acquire: pairs with the release decrement of the last leaver. */
    uint32_t u = __atomic_or_fetch(users, KS_DRAIN_DESTROYING, __ATOMIC_ACQUIRE);
    while (u & ~KS_DRAIN_DESTROYING) {
        if (nudge)
            nudge(arg);
        ks_futex_wait(users, u, KS_FOREVER, flags);
        u = __atomic_load_n(users, __ATOMIC_ACQUIRE); /* acquire: as above */
    }
    __atomic_store_n(users, 0, __ATOMIC_RELAXED); /* reusable after re-init */
}

/* ---- the keeper (src/keeper.c, docs/ipc.md) ----
 * One thread per process that holds a robust futex for each attachment the
 * process has to a shared-memory segment (a ks_channel's peer slot), on a
 * robust list of its own, so that the kernel marks the slot (FUTEX_OWNER_DIED)
 * and wakes a waiter on it when the process dies.  A slot is 16 bytes at the
 * start of a 64-byte line: the futex word, a generation, then the list node.
 *   ks_keeper_claim: take the first free slot (word 0) of `n` at `slots`
 *     (a stride of KS_KEEPER_SLOT bytes): the word becomes the keeper's TID.
 *     Returns the index, or -errno (-EUSERS: none free; -EMFILE: the process
 *     holds 2047 slots already, all the kernel's walk at death reaches;
 *     -EAGAIN: the thread could not start; -ENOMEM).
 *   ks_keeper_release: give slot `slot` back: the caller has cleared what
 *     else it kept in it; the keeper bumps the generation, stores 0 in the
 *     word and wakes every waiter on it. */
#define KS_KEEPER_SLOT 64u
struct ks_keeper_slot {
    uint32_t word; /* robust futex: keeper TID | FUTEX_WAITERS | FUTEX_OWNER_DIED */
    uint32_t gen;  /* bumped each time the slot is given back or reaped */
    uint64_t node; /* the robust-list node: the kernel finds word at node - 8 */
};
KS_HIDDEN int ks_keeper_claim(void *slots, unsigned n);
KS_HIDDEN void ks_keeper_release(void *slot);

/* ---- ks_wait_any (src/wait_any.c, docs/wait_any.md) ----
 * The words one waiter sleeps on at once, with their expected values and
 * their objects' KS_SHARED flags.  A word that does not fit (more than
 * KS_WAITSET_MAX in all) sets `overflow`: the waiter then sleeps in slices
 * and looks again. */
#define KS_WAITSET_MAX 128
/* A KS_SHARED futex sleep (src/futex.c), a robust lock's sleep, a channel
 * wait and ks_wait_any over shared objects look again at least this often.
 * For the futex sleeps: a peer killed between its change and its wake took
 * the wake with it.  For channels: the kernel wakes one waiter at a
 * death, and that one can die before it passes the death on (a process
 * group killed at once), as can a reaper between its release of the slot
 * and its wakes, or a first peer killed inside open before its wake: a
 * safety net with a bound, not the way deaths are learned (docs/ipc.md,
 * "Peer death"). */
#define KS_PEER_RECHECK_NS 1000000000LL
struct ks_waitset {
    const uint32_t *word[KS_WAITSET_MAX];
    uint32_t val[KS_WAITSET_MAX];
    unsigned flags[KS_WAITSET_MAX];
    unsigned n;
    int overflow;
};
static inline void ks_waitset_add(struct ks_waitset *ws, const uint32_t *w, uint32_t v, unsigned fl)
{
    if (ws->n == KS_WAITSET_MAX) {
        ws->overflow = 1;
        return;
    }
    ws->word[ws->n] = w;
    ws->val[ws->n] = v;
    ws->flags[ws->n] = fl;
    ws->n++;
}
/* Each kind's arm: 1 if ready now, 0 if armed (its words added: a change
 * that makes it ready changes one of them or wakes it), or -errno
 * (-EINVAL, -EPERM, -EBADF).  The semaphore's arm takes a unit when one is
 * there (1), else registers the caller as a waiter, which it must end with
 * ks_sem_any_take (after a wake: 1 if it took a unit, which also ends the
 * registration) or ks_sem_any_disarm (which passes on a wake it may have
 * absorbed).  An event's *gen is the set() count it saw first (pulses: a
 * set and a clear during the wait make it ready), ~0u before the first arm. */
struct ks_event;
struct ks_sem;
struct ks_channel;
KS_HIDDEN int ks_event_any_arm(struct ks_event *e, uint32_t *gen, struct ks_waitset *ws);
KS_HIDDEN int ks_sem_any_arm(struct ks_sem *s, struct ks_waitset *ws);
KS_HIDDEN int ks_sem_any_take(struct ks_sem *s);
KS_HIDDEN void ks_sem_any_disarm(struct ks_sem *s);
KS_HIDDEN int ks_channel_any_arm(struct ks_channel *ch, int send, struct ks_waitset *ws);
/* After a sleep: reap the channel's dead peers (passing a death on). */
KS_HIDDEN void ks_channel_any_after(struct ks_channel *ch);
/* A queue side (put: the putters, else the getters) watched: 1 ready, 0
 * armed, which ks_queue_any_disarm must end (after the sleep, or at once
 * when another object is ready), -EINVAL, -EAGAIN (4095 watchers). */
struct ks_queue;
KS_HIDDEN int ks_queue_any_arm(struct ks_queue *q, int put, struct ks_waitset *ws);
KS_HIDDEN void ks_queue_any_disarm(struct ks_queue *q, int put);

/* ---- lock statistics (src/lockstat.c; docs/lockstat.md) ----
 * Called from slow paths only.  ks_ls_mode: the mode (KS_LOCKSTAT_*), one
 * relaxed load.  init: a lock initialised while statistics are on (a new
 * record, or a reset one, whose class is `site`).  An acquisition in two
 * calls: enter before the lock is taken (the record, created if need be,
 * as a cookie; NULL if none), acquired once it is held, with whether it
 * waited and for how long (ks_ticks() units) and `now`, ks_ticks() at the
 * acquisition if its release will be seen too (ks_ls_hold_end) so that the
 * hold is timed, else 0.  acquired only stores the stamp and notes the
 * acquisition; the counting happens at the thread's next call outside the
 * critical section. */
extern KS_HIDDEN int ks_ls_mode_;
static inline int ks_ls_mode(void)
{
    return __atomic_load_n(&ks_ls_mode_, __ATOMIC_RELAXED); /* a switch: ordered by nothing */
}
/* 1 once statistics have been on in this process: a slow unlock then
 * looks for a hold stamp whatever the mode (one left by an acquisition
 * made before the mode went off must not be read as a later hold). */
extern KS_HIDDEN int ks_ls_ever_;
static inline int ks_ls_ever(void)
{
    return __atomic_load_n(&ks_ls_ever_, __ATOMIC_RELAXED); /* a switch: ordered by nothing */
}
KS_HIDDEN void ks_ls_init(const void *lock, unsigned kind, const void *site);
KS_HIDDEN void *ks_ls_enter(const void *lock, unsigned kind, const void *site);
KS_HIDDEN void ks_ls_acquired(void *cookie, int contended, uint64_t wait_ticks, uint64_t now);
/* A release seen by a slow path, in two halves: hold_end while the lock is
 * still held (the hold's length in ticks, 0 and *cookie NULL if it was not
 * timed), hold_add after the releasing store (the counting, outside the
 * critical section; it touches the record, never the lock). */
KS_HIDDEN uint64_t ks_ls_hold_end(const void *lock, void **cookie);
KS_HIDDEN void ks_ls_hold_add(void *cookie, uint64_t ticks);
/* The registry key of an rwlock's read side (its write side's is the
 * lock's address): the address + 1, which no lock has (they are aligned);
 * the record takes the lock's name (ks_lock_name), and reads report the
 * lock's address. */
static inline const void *ks_ls_read_key(const void *lock)
{
    return (const char *)lock + 1;
}

/* splitmix64's finaliser (Steele, Lea, Flood, OOPSLA 2014), so that close
 * inputs give unrelated outputs: the cache's keyed hash, the lock
 * registry's and the lock-order checker's hashes of addresses and keys, the
 * random fall-back of src/thread.c. */
static inline uint64_t ks_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- lock-order checking (src/lockdep.c; docs/lockdep.md) ----
 * Called from slow paths only, when ks_ld_on() (one relaxed load).  lock:
 * before a thread waits for `lock` (not for a trylock): the recursion and
 * order checks.  locked: once it holds it.  unlock: before the releasing
 * store (`locked`: the word says it is held).  destroy: at a destroy that
 * found the lock held.  site: the caller's call site. */
extern KS_HIDDEN int ks_ld_on_;
static inline int ks_ld_on(void)
{
    return __atomic_load_n(&ks_ld_on_, __ATOMIC_RELAXED); /* a switch: ordered by nothing */
}
KS_HIDDEN void ks_ld_lock(const void *lock, unsigned kind, const void *site);
KS_HIDDEN void ks_ld_locked(const void *lock, unsigned kind, const void *site, int trylock);
/* a wait that ks_ld_lock announced ended without the lock (timeout, error) */
KS_HIDDEN void ks_ld_wait_end(void);
KS_HIDDEN void ks_ld_unlock(const void *lock, int locked, const void *site);
KS_HIDDEN void ks_ld_destroy(const void *lock, int locked, const void *site);
/* `lock` is being initialised: this thread no longer holds it (a fork
 * handler that re-initialises a lock its prepare handler took).  destroy:
 * `locked` gives a report; a destroy of a free lock ends its identity. */
KS_HIDDEN void ks_ld_forget(const void *lock);

/* Every acquisition must reach the library: lock statistics in
 * KS_LOCKSTAT_ALL (bit 0, set by ks_lockstat_set) or lock-order checking
 * (bit 1, ks_lockdep_set).  The drop-in layer asks before its inline fast
 * paths, which a statically initialised pthread mutex would otherwise pass
 * unseen (docs/lockdep.md): one load, one branch. */
#define KS_TRACE_LOCKSTAT 1
#define KS_TRACE_LOCKDEP 2
extern KS_HIDDEN int ks_trace_all_;
static inline int ks_trace_all(void)
{
    return KS_UNLIKELY(__atomic_load_n(&ks_trace_all_, __ATOMIC_RELAXED) != 0); /* a switch: ordered by nothing */
}

/* ks_mutex's slow paths with the caller's call site given (the drop-in
 * layer and ks_rmutex pass their caller's, so that classes and reports
 * name the program's code, not the library's). */
struct ks_mutex;
KS_HIDDEN int ks_mutex_init_at(struct ks_mutex *m, unsigned flags, const void *site);
KS_HIDDEN int ks_mutex_lock_at(struct ks_mutex *m, int64_t deadline, const void *site);
KS_HIDDEN int ks_mutex_trylock_at(struct ks_mutex *m, const void *site);
/* Their fast-path-first forms, for callers that include ksync/mutex.h. */
#define ks_mutex_timedlock_at(m, deadline, site)                                                            \
    __extension__({                                                                                         \
        uint32_t e_ = 0;                                                                                    \
        /* acquire: as ks_mutex_timedlock's fast path, taken only while */                                 \
        /* nothing is traced (an unmarked word must reach the checker too) */                              \
        KS_MUTEX_FAST_ && !ks_trace_all() &&                                                                \
                __atomic_compare_exchange_n(&(m)->state, &e_, KS_MUTEX_LOCKED, 0, __ATOMIC_ACQUIRE,        \
                                            __ATOMIC_RELAXED)                                               \
            ? 0                                                                                             \
            : ks_mutex_lock_at((m), (deadline), (site));                                                    \
    })
#define ks_mutex_trylock_site(m, site)                                                                      \
    __extension__({                                                                                         \
        uint32_t e_ = 0;                                                                                    \
        /* acquire: as ks_mutex_trylock's fast path (and as above) */                                      \
        const int fast_ = KS_MUTEX_FAST_ && !ks_trace_all();                                                \
        fast_ && __atomic_compare_exchange_n(&(m)->state, &e_, KS_MUTEX_LOCKED, 0, __ATOMIC_ACQUIRE,        \
                                             __ATOMIC_RELAXED)                                              \
            ? 0                                                                                             \
            : fast_ && !(e_ & KS_MUTEX_TRACED) ? EBUSY : ks_mutex_trylock_at((m), (site));                 \
    })

/* ---- ks_robust's release for the robust rwlock (src/robust.c) ----
 * As ks_robust_unlock (0, EPERM), but every sleeper is woken; abandon:
 * the word is left OWNER_DIED, as at its owner's death, so that the next
 * locker gets EOWNERDEAD again (an owner that took it with EOWNERDEAD and
 * then timed out before it could use it). */
struct ks_robust;
KS_HIDDEN int ks_robust_release_(struct ks_robust *m, int abandon);

/* ---- allocation (src/alloc.c) ----
 * ks_alloc_lines: `bytes` of memory aligned to KS_CACHELINE (so objects that
 * pad their fields to lines really get whole lines), NULL on failure or
 * overflow; free() releases it. */
KS_HIDDEN void *ks_alloc_lines(size_t bytes);

/* ---- rings (src/mpmc.c) ----
 * ks_mpmc_setup: initialise a ring in memory of ks_mpmc_bytes(capacity)
 *   bytes (capacity already validated); owned: destroy frees it. */
struct ks_mpmc;
KS_HIDDEN void ks_mpmc_setup(struct ks_mpmc *q, size_t capacity, int owned);
/* Set up a ks_queue in place (arguments validated); used by ks_pool. */
struct ks_queue;
KS_HIDDEN void ks_queue_setup(struct ks_queue *q, size_t capacity, unsigned flags, int owned);

/* ---- race widening (make stress builds the library with KS_DEBUG_YIELD) --
 * KS_RACE_POINT() marks a place inside a primitive where another thread's
 * interleaving matters (between publishing a waiter and sleeping, between a
 * releasing store and the wake, ...).  In the yield build it randomly yields
 * the CPU, spins or sleeps a few microseconds; otherwise it is nothing. */
#ifdef KS_DEBUG_YIELD
KS_HIDDEN void ks_race_point(void);
#define KS_RACE_POINT() ks_race_point()
#else
#define KS_RACE_POINT() ((void)0)
#endif

/* ---- spin-then-park (src/spin.c, docs/spin.md) ----
 * CPUs the process may run on (its main thread's affinity mask, re-read now
 * and then): spinning is pointless unless another thread can run meanwhile. */
KS_HIDDEN int ks_usable_cpus(void);

/* Where a thread waits: each site keeps its own learned budget per thread. */
enum {
    KS_SPIN_MUTEX,
    KS_SPIN_RWLOCK_READ,
    KS_SPIN_RWLOCK_WRITE,
    KS_SPIN_SEM,
    KS_SPIN_EVENT,
    KS_SPIN_COND,
    KS_SPIN_QUEUE,
    KS_SPIN_BARRIER,
    KS_SPIN_CHANNEL,
    KS_SPIN_SITES
};

/* The bounds of a budget, in ns of CLOCK_MONOTONIC time.
 *   FLOOR  the least a thread that spins at all spins: between what the
 *          old fixed spin of 100 `pause` rounds took on the two machines
 *          measured (about 1 us on the Intel Xeon guest, 3.2 us on the AMD
 *          EPYC guest: docs/spin.md)
 *   START  a thread's first budget at a site
 *   CAP    no wait spins longer (a slow vCPU wake-up is tens of us), and
 *          a wait longer than this had a partner that was really away */
#define KS_SPIN_FLOOR_NS 2000u
#define KS_SPIN_START_NS 4000u
#define KS_SPIN_CAP_NS 100000u
/* At the sites of KS_SPIN_LOCK_SITES, the KS_SPIN_MISSES-th wait in a row
 * that the spin did not cover (no win between) halves the budget, whatever
 * it lasted, and so does each after it but one in KS_SPIN_PROBE (a probe,
 * which lengthens it to 1.25 times the longest such wait within the cap;
 * src/spin.c) */
#define KS_SPIN_MISSES 4u
#define KS_SPIN_PROBE 16u
#define KS_SPIN_LOCK_SITES                                                                           \
    (1u << KS_SPIN_MUTEX | 1u << KS_SPIN_RWLOCK_READ | 1u << KS_SPIN_RWLOCK_WRITE | 1u << KS_SPIN_SEM)
/* The first part of a spin, which needs no spinner place (src/spin.c). */
#define KS_SPIN_FREE_NS 1000u

/* One wait's spin.  Use:
 *
 *   struct ks_spin sp;
 *   if (ks_spin_begin(&sp, KS_SPIN_EVENT)) {   // 0: do not spin at all
 *       do ks_cpu_relax(); while (!ready() && ks_spin_more(&sp));
 *       if (ready()) { ks_spin_won(&sp); return 0; }
 *       ks_spin_end(&sp);                      // stop counting as a spinner
 *   }
 *   ... sleep until ready ...
 *   ks_spin_waited(&sp);                       // only when the wait succeeded
 *
 * begin must be paired with won or end (they leave the spinner count) before
 * the thread sleeps; waited (which also ends) learns from a wait that the
 * spin did not cover, timed-out and failed waits learn nothing. */
struct ks_spin {
    uint64_t start, stop; /* ks_ticks() at begin, and where this part ends */
    uint64_t until;       /* where the budget ends, if a place lets it go on; else 0 */
    uint64_t lease;       /* the value of the spinner place it holds */
    unsigned site;        /* KS_SPIN_SITES: learn nothing (one usable CPU) */
    unsigned place;       /* its spinner place + 1, 0 when it holds none */
    unsigned clipped;     /* ks_spin_clip found the deadline passed: no deferral */
    unsigned cut;         /* ks_spin_clip ended it at a deadline ahead: waited learns nothing */
};
KS_HIDDEN int ks_spin_begin(struct ks_spin *sp, unsigned site);
KS_HIDDEN int ks_spin_extend(struct ks_spin *sp);
static inline int ks_spin_more(struct ks_spin *sp)
{
    if (KS_LIKELY(ks_ticks() < sp->stop))
        return 1;
    return sp->until ? ks_spin_extend(sp) : 0;
}
KS_HIDDEN void ks_spin_end(struct ks_spin *sp);
KS_HIDDEN void ks_spin_clip(struct ks_spin *sp, int64_t deadline);
KS_HIDDEN void ks_spin_won(struct ks_spin *sp);
KS_HIDDEN void ks_spin_waited(struct ks_spin *sp);
/* The calling thread's budget at a site, and (for tests) setting it. */
KS_HIDDEN uint32_t ks_spin_budget_ns(unsigned site);
KS_HIDDEN void ks_spin_set_budget_ns(unsigned site, uint32_t ns);
/* (for tests) the calling thread's count of uncovered waits in a row at a
 * site (0 .. KS_SPIN_MISSES + KS_SPIN_PROBE - 1, src/spin.c), and setting it */
KS_HIDDEN unsigned ks_spin_misses(unsigned site);
KS_HIDDEN void ks_spin_set_misses(unsigned site, unsigned n);
KS_HIDDEN uint64_t ks_spin_ns_to_ticks(uint64_t ns);
KS_HIDDEN uint64_t ks_spin_ticks_to_ns(uint64_t ticks);

/* Deferring to the holder (src/spin.c, docs/spin.md "Deferring to the
 * holder"): a spinner that sees its lock free waits a moment without
 * looking, and takes the lock only if it is still free then; if the
 * holder has taken it again meanwhile, the spinner has left it the lines
 * it works on.  The moment is learned per thread and site:
 *
 *   uint32_t d = ks_spin_defer_ns(KS_SPIN_MUTEX);   // 0: take it now
 *   if (d && ks_spin_defer(&sp, d)) { look again;
 *       ks_spin_deferred(KS_SPIN_MUTEX, retaken); ... }
 *
 *   FLOOR  the shortest deferral, about one cache-line transfer between
 *          two CPUs (the holder's relock must fetch back the line our look
 *          took); a deferral that decays below it becomes 0
 *   CAP    the longest
 *   PROBE  at 0, one free sighting in PROBE still defers, by FLOOR, to
 *          notice a holder that has started to take the lock again */
#define KS_DEFER_FLOOR_NS 100u
#define KS_DEFER_CAP_NS 1000u
#define KS_DEFER_PROBE 16u
KS_HIDDEN uint32_t ks_spin_defer_ns(unsigned site);
/* sp: a spin begun by ks_spin_begin (which returned 1) and not yet ended;
 * returns 0 when the spin is over (then end it as usual) */
KS_HIDDEN int ks_spin_defer(struct ks_spin *sp, uint32_t ns);
KS_HIDDEN void ks_spin_deferred(unsigned site, int retaken);
/* (for tests) the calling thread's learned deferral at a site, and setting it */
KS_HIDDEN uint32_t ks_spin_defer_get(unsigned site);
KS_HIDDEN void ks_spin_defer_set(unsigned site, uint32_t ns);

/* The cull (src/spin.c, docs/spin.md "The cull"), off unless KSYNC_CULL=1
 * or ks_spin_cull_set(1): a waiter that keeps finding its lock taken while
 * other such waiters share its CPU steps away for KS_CULL_NS instead of
 * joining the fight, so that the lock is worked from one CPU at a time,
 * the CPUs taking turns of KS_CULL_TENURE_NS.  Call
 * ks_spin_cull_wanted(lock) once per acquisition, when the lock is first found
 * unavailable, and only for a wait that may be delayed (not a timed one, not
 * one that a guarantee such as writer preference depends on); if it says 1,
 * ks_spin_cull(deadline) sleeps until KS_CULL_NS later or the deadline,
 * whichever comes first, and the acquisition then goes on as before.  Call
 * ks_spin_cull_acquired() when an acquisition that asked succeeds, and from
 * no other (how long it took is half of what tells a bound thread: SHARE).
 *   PAIR    two contended acquisitions of one thread this close together,
 *   SHARE   the first of which took at least 1/SHARE of the time between
 *           them: the thread is bound by the lock at the moment (a thread
 *           that works between acquisitions pairs within PAIR too, but
 *           spends most of the time outside the lock)
 *   SHARED  another such thread was on this CPU this recently: the CPU has
 *           other work to run while this one sleeps (and a lock's turn
 *           nobody renewed for this long is nobody's)
 *   TENURE  a CPU's turn on a lock: after it, the next thread culled
 *           elsewhere takes the turn for its own CPU instead */
#define KS_CULL_NS 1000000
#define KS_CULL_PAIR_NS 3000
#define KS_CULL_SHARE 4
#define KS_CULL_SHARED_NS 2000000
#define KS_CULL_TENURE_NS 4000000
KS_HIDDEN int ks_spin_cull_wanted(const void *lock);
KS_HIDDEN int ks_spin_cull_decide(int64_t now, int cpu, const void *lock); /* the rule, for tests: now, CPU given */
KS_HIDDEN void ks_spin_cull_acquired(void);
KS_HIDDEN void ks_spin_cull_acquired_at(int64_t now); /* for tests: the time given */
KS_HIDDEN int64_t ks_spin_cull_took(void); /* for tests: this thread's last measure */
KS_HIDDEN void ks_spin_cull(int64_t deadline);
KS_HIDDEN void ks_spin_cull_set(int on); /* tests and the bench; KSYNC_CULL sets it at start-up */
KS_HIDDEN uint64_t ks_spin_culls(void); /* culls so far in this process */

#endif
