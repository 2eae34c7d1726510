/* src/epoch.c - epoch-based reclamation, one process-wide domain.
 * Docs: docs/epoch.md (with the ordering proof).
 *
 * State:
 *   g.epoch            global epoch E (only grows; SC loads and stores)
 *   rec->state         per thread: (e << 1) | ACTIVE inside a section, 0 outside
 *   rec->bag[e % 3]    per thread: objects retired while the global epoch was e
 *
 * Rules (Fraser's EBR as in crossbeam-epoch and CK's ck_epoch):
 *   enter   e = E (SC); state = e|ACTIVE (relaxed); FENCE
 *   exit    state = 0 (release)
 *   advance FENCE; every record with ACTIVE must show E; then CAS E -> E+1
 *   retire  FENCE; r = E (SC); put the object in the bag sealed r
 *   free    a bag sealed r once E >= r + 2
 *
 * While a reader is in a section at epoch e, E cannot pass e + 1, so the
 * bags it could still see (sealed >= e - 1) are never freed under it; and
 * an object sealed r <= e - 2 was unlinked before the reader's fence, so the
 * reader cannot find it (docs/epoch.md, "Why it is correct").
 *
 * Records are allocated once and never freed: a thread that leaves (or
 * exits: its thread-exit hook, src/thread.c, runs ks_epoch_leave) clears its
 * state, gives its bags to the orphan list and marks the record free for
 * the next thread.
 */
#include "internal.h"

#include <ksync/epoch.h>
#include <ksync/mutex.h>
#include <ksync/once.h>

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ACTIVE 1ull

/* The full fence of the section entry, the advance and retire, and the
 * acquire fence after an advancer's scan, come from the arch layer; under
 * ThreadSanitizer it replaces them with what TSan models (ksync/arch.h):
 * the scan's loads are then acquire loads themselves (KS_FENCED_LOAD). */

struct bag {
    struct ks_epoch_node *head;
    size_t n;
    uint64_t epoch; /* the epoch it was sealed with */
};

struct rec {
    uint64_t state __attribute__((aligned(KS_CACHELINE))); /* read by advancers */
    uint32_t used;   /* 1 while a thread owns the record */
    struct rec *next; /* registry: constant once published */
    /* owner only */
    uint64_t gen;     /* the fork generation the owner last used it in */
    unsigned nest;
    size_t pending;
    size_t since_advance;
    struct bag bag[3];
    /* Objects retired through this record, by every thread that owned it.
     * One writer at a time (the owner; ownership passes through `used`),
     * relaxed: a statistic, summed by ks_epoch_stats.  It was a global
     * counter, and its fetch_add moved a shared line between CPUs at every
     * retire (docs/epoch.md, "Measured"). */
    uint64_t retired;
};

struct orphan {
    struct orphan *next;
    struct bag bag;
};

static struct {
    uint64_t epoch __attribute__((aligned(KS_CACHELINE)));
    struct rec *recs __attribute__((aligned(KS_CACHELINE))); /* registry head */
    uint64_t nrecs;
    uint64_t freed; /* relaxed: a statistic (retired: per record) */
    ks_mutex_t orphan_lock __attribute__((aligned(KS_CACHELINE)));
    struct orphan *orphans; /* under orphan_lock */
    uint32_t orphan_busy;   /* reclaimers freeing orphan bags they took */
    uint64_t gen;           /* fork generation the above is valid in (RESETTING while reset) */
} g = {.epoch = 2}; /* start at 2: bags sealed 0 are "empty", never "old" */

#define RESETTING UINT64_MAX

static KS_TLS struct rec *tls;
/* Set once this thread's exit hook has run: glibc may still run other
 * keys' destructors after ours (later in the same round, or in the
 * last round, after which no destructor runs again), and a record such a
 * destructor claims would stay in use for ever.  From then on a retire or
 * the end of a section hands the record back at once. */
static KS_TLS int exiting;
/* Set while this thread runs ks_epoch_leave: the functions the leave runs
 * (its flush, its barrier) may enter and exit a section, retire, or call
 * leave themselves; with `exiting` set the end of such a section would
 * leave again from inside the first leave, which would then go on writing
 * to a record it no longer owns (another thread may have claimed it).  A
 * leave inside a leave is a no-op: the outer one hands the record back. */
static KS_TLS int leaving;
static ks_once_t atfork_once = KS_ONCE_INIT;
static int atfork_ok;

static void epoch_thread_exit(void);

/* Fork.  In a child only the forking thread exists: the other records
 * belong to threads that are gone (one may be ACTIVE for good, which would
 * stop the epoch), the orphan lock may be held by one of them, and
 * orphan_busy may count their work.  fork() runs the atfork handler below in
 * the forking thread before anything else; _Fork(), syscall(SYS_fork) and
 * a raw clone run none, so every entry point that depends on this state
 * first compares the process's fork generation (src/thread.c) with the one
 * the state was set up in, and the first thread that finds a new one resets
 * it (adopt_generation).
 *
 * Which record is the forking thread's?  Only the forking thread can have a
 * record pointer in its thread-local storage in the child (other threads
 * are new), so a resetter with a record is the forking thread, and so is
 * fork()'s atfork handler: it keeps its own record (if any) and frees the
 * others, whose garbage stays unreclaimed (it
 * belonged to threads that are gone).  A resetter without one cannot tell
 * the forking thread's record from the dead ones: it makes them all
 * inactive and leaves them in use; the forking thread, at its next call
 * through my_record, finds its record's generation stale, waits for the
 * reset and takes the record back; the dead threads' records stay in use
 * (a few hundred bytes each, once per fork).  Forking inside a section is
 * not supported: the child's copy of the section is no longer protected if
 * another thread resets first (liburcu forbids it too). */
static void reset_for(uint64_t gen, int forker)
{
    struct rec *mine = tls;
    forker |= mine != NULL;
    /* acquire: pairs with the release CAS that published each record */
    for (struct rec *r = __atomic_load_n(&g.recs, __ATOMIC_ACQUIRE); r; r = r->next) {
        if (r == mine) {
            r->gen = gen;
            continue;
        }
        if (r->gen == gen)
            continue; /* claimed in this generation (none can be yet) */
        /* relaxed: published by the release store of g.gen below */
        __atomic_store_n(&r->state, 0, __ATOMIC_RELAXED);
        if (forker) {
            r->nest = 0;
            memset(r->bag, 0, sizeof r->bag);
            r->pending = 0;
            r->since_advance = 0;
            __atomic_store_n(&r->used, 0, __ATOMIC_RELAXED); /* relaxed: as state */
        }
    }
    ks_mutex_init(&g.orphan_lock, 0);
    __atomic_store_n(&g.orphan_busy, 0, __ATOMIC_RELAXED); /* relaxed: as state */
}

/* forker: the caller is known to be the forking thread (the atfork
 * handler), whether or not it has a record. */
static void adopt_generation_as(uint64_t gen, int forker)
{
    /* acquire: pairs with the release store at the end of a reset */
    uint64_t have = __atomic_load_n(&g.gen, __ATOMIC_ACQUIRE);
    while (have != gen) {
        if (have != RESETTING &&
            __atomic_compare_exchange_n(&g.gen, &have, RESETTING, 0, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
            reset_for(gen, forker);
            __atomic_store_n(&g.gen, gen, __ATOMIC_RELEASE); /* pairs with the acquires above */
            return;
        }
        sched_yield(); /* another thread of this child resets: microseconds */
        have = __atomic_load_n(&g.gen, __ATOMIC_ACQUIRE);
    }
}

static void adopt_generation(uint64_t gen)
{
    adopt_generation_as(gen, 0);
}

static void after_fork_child(void)
{
    adopt_generation_as(ks_process_gen(), 1);
}

static void register_atfork(void)
{
    atfork_ok = pthread_atfork(NULL, NULL, after_fork_child) == 0;
}

static uint64_t global_epoch(void)
{
    return __atomic_load_n(&g.epoch, __ATOMIC_SEQ_CST); /* SC: see docs/epoch.md */
}

/* The functions this thread still has to run: every list whose grace
 * period has ended is put in front of this one and run from here, one
 * object at a time.  A function may call ks_epoch_barrier (directly, by
 * destroying a cache the object owned, or by retiring at KS_EPOCH_MAX);
 * that barrier then runs, before it returns, the rest of what its callers
 * had taken out (their bags are already detached, and a barrier must not
 * return with them unrun).  Owner only. */
static KS_TLS struct ks_epoch_node *to_run;
/* orphan_busy counts held by reclaim_orphans frames of this thread */
static KS_TLS unsigned busy_held;

static void run_later(struct ks_epoch_node *list)
{
    if (!list)
        return;
    struct ks_epoch_node *t = list;
    while (t->next)
        t = t->next;
    t->next = to_run;
    to_run = list;
}

/* Run every function queued on this thread, those queued by a caller up
 * the stack included; returns how many ran.  With cancellation disabled
 * (docs/conventions.md): a function that reached a cancellation point
 * (close() of a descriptor its object owns) unwound the thread with
 * orphan_busy still counted, and every later barrier in the process waited
 * for it forever (a review's reproducer). */
static size_t run_queued(void)
{
    size_t k = 0;
    struct ks_epoch_node *n;
    const int c = ks_nocancel_begin();
    while ((n = to_run)) {
        to_run = n->next; /* unlinked first: n->fn may call us again */
        n->fn(n);
        k++;
    }
    ks_nocancel_end(c);
    return k;
}

static struct rec *claim_record(void)
{
    ks_once(&atfork_once, register_atfork);
    /* acquire: pairs with the release CAS that published each record */
    for (struct rec *r = __atomic_load_n(&g.recs, __ATOMIC_ACQUIRE); r; r = r->next) {
        uint32_t zero = 0;
        /* acquire: pairs with the release store in ks_epoch_leave, so the
         * previous owner's last writes to the record are visible. */
        if (!__atomic_load_n(&r->used, __ATOMIC_RELAXED) &&
            __atomic_compare_exchange_n(&r->used, &zero, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return r;
    }
    struct rec *r = aligned_alloc(KS_CACHELINE, sizeof *r);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    r->used = 1;
    struct rec *head = __atomic_load_n(&g.recs, __ATOMIC_RELAXED); /* relaxed: seeds the CAS */
    do
        r->next = head;
    /* release: the record's fields are initialised before advancers see it */
    while (!__atomic_compare_exchange_n(&g.recs, &head, r, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    __atomic_fetch_add(&g.nrecs, 1, __ATOMIC_RELAXED); /* relaxed: a statistic */
    return r;
}

/* The calling thread's record; NULL if none can be had.  A thread is only
 * given a record once its exit hook is armed (ks_thread_at_exit): a thread
 * that exits inside a section without one would stop the epoch for good. */
__attribute__((noinline)) static struct rec *my_record_slow(struct rec *r, uint64_t gen);

static inline struct rec *my_record(void)
{
    struct rec *r = tls;
    const uint64_t gen = ks_process_gen();
    if (KS_LIKELY(r && r->gen == gen))
        return r;
    return my_record_slow(r, gen);
}

static struct rec *my_record_slow(struct rec *r, uint64_t gen)
{
    adopt_generation(gen);
    if (r) {
        r->gen = gen; /* the forking thread, in a new child: its record is kept */
        return r;
    }
    if (!(r = claim_record()))
        return NULL;
    r->gen = gen;
    if (!atfork_ok || ks_thread_at_exit(KS_EXIT_EPOCH, epoch_thread_exit) != 0) {
        __atomic_store_n(&r->used, 0, __ATOMIC_RELEASE); /* release: as in ks_epoch_leave */
        return NULL;
    }
    tls = r;
    return r;
}

/* The calling thread's record if it has one, taken back first if this is
 * the forking thread in a child nobody has set up yet. */
static struct rec *my_record_if_any(void)
{
    return tls ? my_record() : NULL;
}

int ks_epoch_enter(void)
{
    struct rec *r = my_record();
    if (KS_UNLIKELY(!r))
        return ENOMEM;
    if (r->nest++)
        return 0;
    uint64_t e = global_epoch();
    /* relaxed: ordered before the section's loads by the fence, which pairs
     * with the fence in try_advance */
    __atomic_store_n(&r->state, (e << 1) | ACTIVE, __ATOMIC_RELAXED);
    ks_fence_full();
    return 0;
}

int ks_epoch_exit(void)
{
    struct rec *r = tls;
    if (KS_UNLIKELY(!r || !r->nest))
        return EPERM;
    if (--r->nest)
        return 0;
    /* release: the section's reads happen before an advancer that sees the
     * record inactive (it acquires after its scan) moves the epoch on. */
    __atomic_store_n(&r->state, 0, __ATOMIC_RELEASE);
    if (KS_UNLIKELY(exiting))
        ks_epoch_leave(); /* our exit hook will not run again */
    return 0;
}

/* Move the global epoch from e to e + 1 if every active record shows e.
 * Returns the global epoch after the attempt. */
static uint64_t try_advance(void)
{
    uint64_t e = global_epoch();
    ks_fence_full(); /* pairs with the fence in ks_epoch_enter */
    /* acquire: pairs with the release CAS that published each record */
    for (struct rec *r = __atomic_load_n(&g.recs, __ATOMIC_ACQUIRE); r; r = r->next) {
        uint64_t s = __atomic_load_n(&r->state, KS_FENCED_LOAD); /* relaxed: the fence below */
        if ((s & ACTIVE) && (s >> 1) != e)
            return e;
    }
    /* acquire: pairs with the release in ks_epoch_exit of every record we
     * saw inactive; what they read happens before the new epoch. */
    ks_fence_acquire();
    uint64_t want = e;
    /* SC: the epoch's stores and loads are all SC (docs/epoch.md) */
    if (__atomic_compare_exchange_n(&g.epoch, &want, e + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        return e + 1;
    return want;
}

/* Free this record's bags that are two epochs old. */
static void reclaim_own(struct rec *r, uint64_t now)
{
    size_t k = 0;
    for (int i = 0; i < 3; i++) {
        struct bag *b = &r->bag[i];
        if (b->head && b->epoch + 2 <= now) {
            size_t n = b->n;
            struct ks_epoch_node *list = b->head;
            b->head = NULL;
            b->n = 0;
            r->pending -= n;
            run_later(list);
            k += run_queued();
        }
    }
    if (k)
        __atomic_fetch_add(&g.freed, k, __ATOMIC_RELAXED); /* relaxed: a statistic */
}

/* The orphan list is only touched under orphan_lock, with atomic accesses
 * (relaxed: the lock orders them) so that the unlocked emptiness hint below
 * is not a data race. */
static void orphan_push(struct orphan *o)
{
    o->next = __atomic_load_n(&g.orphans, __ATOMIC_RELAXED);
    __atomic_store_n(&g.orphans, o, __ATOMIC_RELAXED);
}

/* Free the orphan bags that are two epochs old.  A reclaimer takes the
 * ready bags out under the lock and frees them after unlocking, counted in
 * `orphan_busy` (incremented under the lock); `wait` (ks_epoch_barrier)
 * always takes the lock, ignoring the emptiness hint, and then waits for
 * reclaimers still freeing bags they took, so that it returns only once
 * every orphan ready by `now` has been freed.
 *
 * Except for reclaimers on this thread: a barrier called by a function that
 * one of them runs (busy_held > 0) has already run what they took (to_run)
 * and must not wait for them, they wait for it (issue 17: such a barrier
 * hung for ever, and every later barrier with it).  Nor does it wait for
 * other threads' reclaimers then: their functions may be calling a barrier
 * too, each waiting for the other; what it does not wait for is what
 * other threads' functions are running at that moment. */
static void reclaim_orphans(uint64_t now, int wait)
{
    /* relaxed: a hint; the list itself is taken under the lock */
    if (!wait && !__atomic_load_n(&g.orphans, __ATOMIC_RELAXED))
        return;
    ks_mutex_lock(&g.orphan_lock);
    struct orphan *all = __atomic_exchange_n(&g.orphans, NULL, __ATOMIC_RELAXED), *ready = NULL;
    while (all) {
        struct orphan *o = all;
        all = o->next;
        if (o->bag.epoch + 2 <= now) {
            o->next = ready;
            ready = o;
        } else {
            orphan_push(o);
        }
    }
    if (ready) { /* relaxed: the lock orders it before a barrier's look */
        __atomic_fetch_add(&g.orphan_busy, 1, __ATOMIC_RELAXED);
        busy_held++;
    }
    ks_mutex_unlock(&g.orphan_lock);
    size_t k = 0;
    if (ready) {
        while (ready) {
            struct orphan *o = ready;
            ready = o->next;
            run_later(o->bag.head);
            free(o);
        }
        k = run_queued();
        busy_held--;
        /* release: pairs with the acquire load below, in a barrier */
        __atomic_fetch_sub(&g.orphan_busy, 1, __ATOMIC_RELEASE);
    }
    if (wait) /* what callers of ours on this thread took and have not run yet */
        k += run_queued();
    if (k)
        __atomic_fetch_add(&g.freed, k, __ATOMIC_RELAXED); /* relaxed: a statistic */
    if (wait && !busy_held)
        while (__atomic_load_n(&g.orphan_busy, __ATOMIC_ACQUIRE)) /* acquire: see above */
            sched_yield();
}

void ks_epoch_flush(void)
{
    adopt_generation(ks_process_gen());
    uint64_t now = try_advance();
    struct rec *r = tls;
    if (r)
        reclaim_own(r, now);
    reclaim_orphans(now, 0);
}

/* Sleep a little while waiting for readers: yield first, then back off up
 * to 1 ms (a reader preempted inside a section needs the CPU to leave it).
 * The naps are timed futex waits on a word nobody writes or wakes, not
 * nanosleep: nanosleep is a cancellation point, and no ksync call is one
 * (a pending cancel acted inside ks_epoch_barrier, and so inside a retire
 * that waits at KS_EPOCH_MAX; tests/test_epoch.c checks it). */
static uint32_t nap_word;

static void backoff(unsigned *round)
{
    if (*round < 8) {
        sched_yield();
    } else {
        int64_t ns = (int64_t)1000 << (*round < 18 ? *round - 8 : 10);
        ks_futex_wait(&nap_word, 0, ks_now() + (ns > 1000000 ? 1000000 : ns), 0); /* ends by its timeout */
    }
    (*round)++;
}

int ks_epoch_barrier(void)
{
    adopt_generation(ks_process_gen());
    struct rec *r = my_record_if_any();
    if (r && r->nest)
        return EDEADLK;
    uint64_t target = global_epoch() + 2;
    unsigned round = 0;
    uint64_t now;
    while ((now = try_advance()) < target)
        backoff(&round);
    if (r)
        reclaim_own(r, now);
    reclaim_orphans(now, 1);
    return 0;
}

int ks_epoch_retire(struct ks_epoch_node *node, void (*fn)(struct ks_epoch_node *))
{
    if (!node || !fn)
        return EINVAL;
    struct rec *r = my_record();
    if (KS_UNLIKELY(!r))
        return ENOMEM;
    node->fn = fn;
    /* pairs with the fence in ks_epoch_enter: the caller's unlink (before
     * this call) is ordered before the epoch we seal with */
    ks_fence_full();
    uint64_t e = global_epoch();
    struct bag *b = &r->bag[e % 3];
    if (b->head && b->epoch != e)
        reclaim_own(r, e); /* that bag is sealed <= e - 3: free it first */
    if (!b->head)
        b->epoch = e;
    node->next = b->head;
    b->head = node;
    b->n++;
    r->pending++;
    /* relaxed: a statistic with one writer (see struct rec) */
    __atomic_store_n(&r->retired, __atomic_load_n(&r->retired, __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
    if (++r->since_advance >= KS_EPOCH_BATCH) {
        r->since_advance = 0;
        uint64_t now = try_advance();
        reclaim_own(r, now);
        reclaim_orphans(now, 0);
    }
    if (r->pending >= KS_EPOCH_MAX && !r->nest)
        ks_epoch_barrier(); /* bound the garbage: wait for a grace period */
    if (KS_UNLIKELY(exiting) && !r->nest)
        ks_epoch_leave(); /* hand the bag to the orphans: see `exiting` */
    return 0;
}

int ks_epoch_leave(void)
{
    struct rec *r = my_record_if_any();
    if (!r)
        return 0;
    if (r->nest)
        return EBUSY;
    if (leaving)
        return 0; /* called back from our own leave: it finishes the job */
    leaving = 1;
    ks_epoch_flush();
    for (int i = 0; i < 3; i++) {
        struct bag *b = &r->bag[i];
        if (!b->head)
            continue;
        struct orphan *o = malloc(sizeof *o);
        if (!o) {
            /* No memory for the hand-over: wait for the grace period and
             * free them here instead (never leak, never free early).  The
             * functions the barrier runs may retire into this record: look
             * at every bag again, so that none is left behind a pending
             * count reset below (the next owner would underflow it). */
            ks_epoch_barrier();
            i = -1;
            continue;
        }
        o->bag = *b;
        ks_mutex_lock(&g.orphan_lock);
        orphan_push(o);
        ks_mutex_unlock(&g.orphan_lock);
        memset(b, 0, sizeof *b);
    }
    r->pending = 0;
    r->since_advance = 0;
    tls = NULL;
    ks_thread_at_exit_cancel(KS_EXIT_EPOCH);
    leaving = 0;
    /* release: pairs with the acquire CAS in claim_record */
    __atomic_store_n(&r->used, 0, __ATOMIC_RELEASE);
    return 0;
}

/* A thread that exits without leaving, perhaps inside a section: end the
 * section (it can no longer read anything) and leave.  Runs first of the
 * thread-exit hooks (src/internal.h): the functions the leave runs may use
 * a cache, whose hook comes after. */
static void epoch_thread_exit(void)
{
    struct rec *r = tls;
    exiting = 1;
    if (!r)
        return;
    if (r->nest) {
        r->nest = 0;
        __atomic_store_n(&r->state, 0, __ATOMIC_RELEASE); /* release: as in ks_epoch_exit */
    }
    ks_epoch_leave();
}

void ks_epoch_stats(struct ks_epoch_stats *out)
{
    if (!out)
        return;
    out->epoch = global_epoch();
    /* relaxed: statistics */
    uint64_t retired = 0;
    /* acquire: pairs with the release CAS that published each record */
    for (struct rec *r = __atomic_load_n(&g.recs, __ATOMIC_ACQUIRE); r; r = r->next)
        retired += __atomic_load_n(&r->retired, __ATOMIC_RELAXED); /* relaxed: a statistic */
    out->retired = retired;
    out->freed = __atomic_load_n(&g.freed, __ATOMIC_RELAXED);
    out->records = __atomic_load_n(&g.nrecs, __ATOMIC_RELAXED);
}
