/* src/robust.c - ks_robust, a robust mutex on the kernel's robust-futex
 * list.  Full write-up: docs/robust.md.
 *
 * The futex word (m->word), in the kernel's robust-futex format:
 *
 *   word                 meaning                        who moves it
 *   0                    free                           a locker: CAS -> TID
 *   TID (|W)             held by thread TID, consistent owner: unlock -> 0 (+wake 1 if W)
 *   TID|OD (|W)          held after EOWNERDEAD,         owner: consistent -> TID(|W);
 *                        not yet made consistent        unlock -> NOTREC (+wake all)
 *   OD (|W)              free, its owner died           the kernel (death of TID);
 *                                                       a locker: CAS -> TID|OD(|W), EOWNERDEAD
 *   NOTREC               not recoverable, forever       nobody (init makes it 0 again)
 *
 * A recursive mutex (KS_ROBUST_RECURSIVE) adds `depth`, the owner's levels
 * above the first: a relock by the owner counts up instead of EDEADLK, an
 * unlock with depth > 0 counts down and touches nothing else.  Only the
 * owner reads or writes it; a locker that takes the word from a dead owner
 * sets it to 0 (the dead owner's plain stores precede the kernel's update
 * of the word, which the locker's acquiring CAS reads).
 *
 * W = FUTEX_WAITERS (threads may sleep on the word: unlock must wake),
 * OD = FUTEX_OWNER_DIED, TID = the owner's kernel thread id, NOTREC =
 * FUTEX_TID_MASK (a TID no thread has: PID_MAX_LIMIT is 2^22).  The kernel,
 * when a thread dies, replaces a word whose TID part is that thread's by
 * (word & W) | OD and, if W was set, wakes one waiter with a shared wake;
 * for the operation named in list_op_pending it also wakes one waiter if
 * the word's TID part is 0 (the dying thread had released the word and
 * perhaps not yet woken anybody).
 *
 * Invariants:
 *  (R1) a thread sleeps only on a value with W and a non-zero TID part, so
 *       the release or death that changes that value wakes someone;
 *  (R2) a thread that acquires after having slept sets W (Drepper's rule:
 *       it cannot know whether others still sleep); a thread that takes an
 *       owner-dead word keeps the W the kernel left;
 *  (R3) the list: a node is on its owner's list exactly while the word's
 *       TID part is the owner's TID, except inside lock and unlock, where
 *       list_op_pending names the node from before the acquiring CAS until
 *       after the node is linked, and from before the node is unlinked
 *       until after the releasing store and its wake.  So a death at any
 *       instruction leaves the kernel a path to the word: the list or the
 *       pending slot.  Only the owning thread touches its list.
 *
 * The list is glibc's (the kernel keeps one head per thread, and glibc has
 * registered it): the node sits where glibc's LP64 pthread_mutex_t has its
 * __list (prev at 24, next at 32, word at 0: futex_offset -32), and is
 * linked and unlinked exactly as glibc's ENQUEUE_MUTEX / DEQUEUE_MUTEX do
 * (nptl/descr.h), so glibc's own robust mutexes and ours share the list.
 */
#include "internal.h"

#include <ksync/robust.h>

#include <linux/futex.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#define W KS_ROBUST_WAITERS
#define OD KS_ROBUST_OWNER_DIED
#define TID KS_ROBUST_TID_MASK
#define NOTREC KS_ROBUST_NOTRECOVERABLE

_Static_assert(KS_ROBUST_WAITERS == FUTEX_WAITERS, "FUTEX_WAITERS");
_Static_assert(KS_ROBUST_OWNER_DIED == FUTEX_OWNER_DIED, "FUTEX_OWNER_DIED");
_Static_assert(KS_ROBUST_TID_MASK == FUTEX_TID_MASK, "FUTEX_TID_MASK");
_Static_assert(offsetof(ks_robust_t, word) == 0, "futex word at 0");
_Static_assert(offsetof(ks_robust_t, next_) == offsetof(ks_robust_t, prev_) + sizeof(void *),
               "glibc's __pthread_list_t: __prev then __next");

/* What the kernel adds to a node's address to find the word (glibc's
 * robust_head.futex_offset on LP64: __lock minus __list.__next). */
#define FUTEX_OFFSET ((long)offsetof(ks_robust_t, word) - (long)offsetof(ks_robust_t, next_))

/* A sleeper re-reads the word at least this often.  The kernel's wake for a
 * thread killed between its releasing store and its FUTEX_WAKE is given
 * only if the word is still free when the kernel looks; if a newcomer took
 * it meanwhile (without W), the sleepers would otherwise sleep until the
 * next contention.  See docs/robust.md, "What survives which death". */
#define RECHECK_NS 1000000000LL

/* The list's pointer slots are accessed as glibc does, through whatever
 * type: one may-alias pointer type for all of them. */
typedef void *slot_t __attribute__((may_alias));

static inline slot_t *slot(uintptr_t p) { return (slot_t *)(p & ~(uintptr_t)1); }
/* glibc's __pthread_list_t from the address of its __next (bit 0 of a
 * list pointer marks a PI mutex and is not part of the address); for the
 * list head that is glibc's struct pthread.robust_prev. */
static inline slot_t *prev_of(uintptr_t next_slot) { return slot(next_slot) - 1; }

/* The calling thread: its kernel TID and robust-list head, for the fork
 * generation they were read in (a fork child of any kind has a new TID; a
 * fork() or _Fork() child has glibc's head re-registered at the same
 * address, a raw clone child none).  head NULL: no usable list (ENOTSUP). */
struct self {
    uint64_t gen;
    struct robust_list_head *head;
    uint32_t tid;
};
static KS_TLS struct self me;

static __attribute__((noinline)) void self_setup(uint64_t g)
{
    struct robust_list_head *h = NULL;
    size_t len = 0;
    if (syscall(SYS_get_robust_list, 0, &h, &len) != 0 || len != sizeof *h || !h ||
        h->futex_offset != FUTEX_OFFSET)
        h = NULL;
    me.head = h;
    me.tid = (uint32_t)syscall(SYS_gettid);
    ks_compiler_barrier(); /* a handler on this thread that sees gen sees the rest */
    me.gen = g;
}

/* Fresh: read in this process image, and a list to use.  me.gen is only
 * ever set to a drawn generation (never 0 or KS_GEN_BUSY), so comparing it
 * with the word is ks_process_gen()'s check; a thread never set up (gen 0,
 * head NULL) in a child nobody has drawn for yet (word 0) fails on head. */
static inline __attribute__((always_inline)) int self_fresh(void)
{
    /* acquire: as in ks_process_gen (pairs with src/thread.c's releases) */
    uint64_t g = __atomic_load_n(__atomic_load_n(&ks_gen_word, __ATOMIC_ACQUIRE), __ATOMIC_ACQUIRE);
    return KS_LIKELY(g == me.gen && me.head);
}

static void self_get(void)
{
    uint64_t g = ks_process_gen();
    if (me.gen != g || !me.head)
        self_setup(g);
}

static inline void set_pending(struct robust_list_head *h, void *node)
{
    *(slot_t *)&h->list_op_pending = node;
}

/* glibc's ENQUEUE_MUTEX: at the head of the list.  The node is complete
 * before the head points at it (the barrier), so a death between any two
 * stores leaves the kernel a well-formed list. */
static inline void list_add(struct robust_list_head *h, ks_robust_t *m)
{
    slot_t *hs = (slot_t *)&h->list.next;
    void *first = *hs; /* keeps its bit 0 (a PI entry) */
    *prev_of((uintptr_t)first) = &m->next_;
    m->next_ = first;
    m->prev_ = hs;
    ks_compiler_barrier();
    *hs = &m->next_;
}

/* glibc's DEQUEUE_MUTEX (the kernel follows next pointers only; the
 * node's own pointers are left as they are: nothing reaches them). */
static inline void list_del(ks_robust_t *m)
{
    void *next = m->next_, *prev = m->prev_;
    *prev_of((uintptr_t)next) = prev;
    *slot((uintptr_t)prev) = next;
}

/* A futex word must be 4-aligned (FUTEX_WAIT answers EINVAL otherwise, and
 * a waiter would spin), and the kernel's list walk stops at a misaligned
 * entry, losing every robust mutex locked before it. */
static inline int misaligned(const ks_robust_t *m)
{
    return ((uintptr_t)m & (_Alignof(ks_robust_t) - 1)) != 0;
}

int ks_robust_init(ks_robust_t *m, unsigned flags)
{
    if (!m || (flags & ~(KS_FLAGS_VALID | KS_ROBUST_RECURSIVE)) || misaligned(m))
        return EINVAL;
    self_get();
    if (!me.head)
        return ENOTSUP;
    /* relaxed: only the caller's own ownership is looked at, which it wrote
     * itself.  Re-initialising a mutex the caller holds would zero a node
     * that is still on its robust list and cut the kernel's walk there. */
    uint32_t s = __atomic_load_n(&m->word, __ATOMIC_RELAXED);
    if (s != NOTREC && (s & TID) == me.tid)
        return EBUSY;
    *m = (ks_robust_t)KS_ROBUST_INIT;
    m->flags = flags;
    return 0;
}

int ks_robust_destroy(ks_robust_t *m)
{
    if (!m)
        return EINVAL;
    /* relaxed: destroy is only legal when nobody uses the mutex; this is a
     * courtesy check. */
    uint32_t s = __atomic_load_n(&m->word, __ATOMIC_RELAXED);
    if ((s & TID) && s != NOTREC)
        return EBUSY;
    return 0;
}

/* Acquired (word now has our TID): put the node on the list, then end the
 * pending operation. */
static inline void acquired(struct robust_list_head *h, ks_robust_t *m)
{
    ks_compiler_barrier(); /* not on the list before we own it */
    list_add(h, m);
    ks_compiler_barrier(); /* on the list before the pending slot lets go */
    set_pending(h, NULL);
}

static __attribute__((noinline)) int lock_slow(ks_robust_t *m, struct robust_list_head *h, uint32_t tid,
                                               uint32_t s, int64_t deadline, int try)
{
    int rc, slept = 0;
    for (;;) {
        if (s == NOTREC) {
            rc = ENOTRECOVERABLE;
            break;
        }
        uint32_t owner = s & TID;
        if (!owner) {
            /* free, or its owner died (OD stays: held inconsistent) (R2) */
            uint32_t ns = tid | (s & (W | OD)) | (slept ? W : 0);
            /* acquire: pairs with the release in unlock; for OD, with the
             * kernel's atomic update of the word in handle_futex_death,
             * which the dead owner's writes precede: the repairer sees
             * them, half-done as they are. */
            if (__atomic_compare_exchange_n(&m->word, &s, ns, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
                acquired(h, m);
                if (!(s & OD))
                    return 0;
                m->depth = 0; /* the dead owner's levels died with it */
                return EOWNERDEAD;
            }
            continue;
        }
        if (owner == tid) {
            rc = EDEADLK;
            if (m->flags & KS_ROBUST_RECURSIVE) {
                rc = m->depth == KS_ROBUST_MAX_DEPTH ? EAGAIN : 0;
                if (!rc)
                    m->depth++;
            }
            break;
        }
        if (try) {
            rc = EBUSY;
            break;
        }
        if (ks_deadline_passed(deadline)) {
            /* A waiter that slept may have taken the wake meant for the
             * other sleepers: a newcomer can have taken the word with a
             * plain 0 -> TID after it, so the word lacks W and the holder's
             * unlock would wake nobody.  Put W back before leaving (glibc
             * sets FUTEX_WAITERS before it can time out); at worst the
             * unlock wakes a thread that is no longer there. */
            if (slept && !(s & W) &&
                !__atomic_compare_exchange_n(&m->word, &s, s | W, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue; /* relaxed: as the W CAS below; s changed, look again */
            rc = ETIMEDOUT;
            break;
        }
        if (!(s & W)) {
            /* relaxed: announcing a sleeper publishes nothing; the kernel
             * re-reads the word before it lets us sleep. */
            if (!__atomic_compare_exchange_n(&m->word, &s, s | W, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            s |= W; /* (R1) */
        }
        int64_t until = ks_now() + RECHECK_NS;
        KS_RACE_POINT();
        /* Always the shared op: the kernel's death wake is a shared one. */
        ks_futex_wait(&m->word, s, deadline < until ? deadline : until, KS_SHARED);
        slept = 1;
        /* relaxed: seeds the CASes above; the ENOTRECOVERABLE, EDEADLK and
         * EBUSY answers it also decides hand the caller no data. */
        s = __atomic_load_n(&m->word, __ATOMIC_RELAXED);
    }
    ks_compiler_barrier();
    set_pending(h, NULL);
    return rc;
}

static inline __attribute__((always_inline)) int acquire_body(ks_robust_t *m, int64_t deadline, int try)
{
    struct robust_list_head *h = me.head;
    uint32_t tid = me.tid;
    /* (R3) pending before the CAS: a death right after it is still seen */
    set_pending(h, &m->next_);
    ks_compiler_barrier();
    uint32_t s = 0;
    /* acquire: pairs with the release in unlock. */
    if (KS_LIKELY(__atomic_compare_exchange_n(&m->word, &s, tid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))) {
        acquired(h, m);
        return 0;
    }
    return lock_slow(m, h, tid, s, deadline, try);
}

/* The first call of a thread, or of a fork child, or one without a list. */
static __attribute__((noinline)) int acquire_refresh(ks_robust_t *m, int64_t deadline, int try)
{
    self_get();
    if (!me.head)
        return ENOTSUP;
    return acquire_body(m, deadline, try);
}

static inline __attribute__((always_inline)) int acquire(ks_robust_t *m, int64_t deadline, int try)
{
    if (KS_UNLIKELY(!m || deadline < 0 || misaligned(m)))
        return EINVAL;
    if (KS_UNLIKELY(!self_fresh()))
        return acquire_refresh(m, deadline, try);
    return acquire_body(m, deadline, try);
}

int ks_robust_lock(ks_robust_t *m) { return acquire(m, KS_FOREVER, 0); }
int ks_robust_trylock(ks_robust_t *m) { return acquire(m, KS_FOREVER, 1); }
int ks_robust_timedlock(ks_robust_t *m, int64_t deadline) { return acquire(m, deadline, 0); }

/* How the word is let go: the public unlock wakes one sleeper; the robust
 * rwlock (src/robust_rwlock.c) wakes every one (readers sleep on the word
 * too), or gives the word back as its dead owner left it (OD), so that the
 * next locker still gets EOWNERDEAD. */
enum { WAKE_ONE, WAKE_ALL, ABANDON };

static __attribute__((noinline)) int unlock_slow(ks_robust_t *m, struct robust_list_head *h, uint32_t s, int how)
{
    /* Inconsistent (EOWNERDEAD, no consistent): not recoverable, and every
     * sleeper must hear it.  Only W can have changed since s was read: the
     * others only add it, and the kernel acts only at our death. */
    uint32_t ns = how == ABANDON ? OD : (s & OD) ? NOTREC : 0;
    /* release: pairs with the acquiring CAS of the next locker (a NOTREC
     * reader takes nothing). */
    uint32_t old = __atomic_exchange_n(&m->word, ns, __ATOMIC_RELEASE);
    /* From here the mutex may be locked, unlocked and freed by another
     * thread: nothing but the wake on its address (docs/pitfalls.md item
     * 12).  A death here is covered by the pending slot: the kernel wakes
     * one sleeper if the word is still free. */
    if (old & W) {
        KS_RACE_POINT();
        ks_futex_wake(&m->word, ns == NOTREC || how != WAKE_ONE ? KS_WAKE_ALL : 1, KS_SHARED);
    }
    ks_compiler_barrier();
    set_pending(h, NULL);
    return 0;
}

static inline __attribute__((always_inline)) int unlock_body(ks_robust_t *m, int how)
{
    struct robust_list_head *h = me.head;
    uint32_t tid = me.tid;
    /* relaxed: only our own TID matters, and only we put it there */
    uint32_t s = __atomic_load_n(&m->word, __ATOMIC_RELAXED);
    if (KS_UNLIKELY((s & TID) != tid || !h))
        return EPERM;
    if (KS_UNLIKELY(m->depth) && how != ABANDON) { /* a recursive level: ours alone */
        m->depth--;
        return 0;
    }
    /* (R3) pending before the unlink: a death until the release and its
     * wake are done is still seen */
    set_pending(h, &m->next_);
    ks_compiler_barrier();
    list_del(m);
    ks_compiler_barrier(); /* off the list before the word is released */
    uint32_t expect = tid;
    /* release: pairs with the acquiring CAS of the next locker. */
    if (KS_LIKELY(how != ABANDON && s == tid &&
                  __atomic_compare_exchange_n(&m->word, &expect, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))) {
        ks_compiler_barrier();
        set_pending(h, NULL);
        return 0;
    }
    return unlock_slow(m, h, expect == tid ? s : expect, how);
}

static __attribute__((noinline)) int unlock_refresh(ks_robust_t *m, int how)
{
    self_get();
    return unlock_body(m, how);
}

int ks_robust_unlock(ks_robust_t *m)
{
    if (KS_UNLIKELY(!m))
        return EINVAL;
    if (KS_UNLIKELY(!self_fresh()))
        return unlock_refresh(m, WAKE_ONE);
    return unlock_body(m, WAKE_ONE);
}

int ks_robust_release_(ks_robust_t *m, int abandon)
{
    if (KS_UNLIKELY(!self_fresh()))
        return unlock_refresh(m, abandon ? ABANDON : WAKE_ALL);
    return abandon ? unlock_body(m, ABANDON) : unlock_body(m, WAKE_ALL);
}

int ks_robust_consistent(ks_robust_t *m)
{
    if (!m)
        return EINVAL;
    self_get();
    /* relaxed: the caller owns the mutex; only W can change under us, and
     * the CAS loop keeps it. */
    uint32_t s = __atomic_load_n(&m->word, __ATOMIC_RELAXED);
    do {
        if ((s & TID) != me.tid || !(s & OD))
            return EINVAL;
        /* relaxed: pairs with nothing: clearing OD publishes no data (the
         * repaired data reach the next owner through this owner's
         * releasing unlock). */
    } while (!__atomic_compare_exchange_n(&m->word, &s, s & ~OD, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return 0;
}
