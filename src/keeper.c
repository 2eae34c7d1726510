/* src/keeper.c - the keeper: one thread per process whose robust-futex
 * list holds a node for each peer slot the process has claimed in a shared
 * segment (a ks_channel's peer table).  When the process dies, however it
 * dies, the kernel walks that list (exit_robust_list, kernel/futex/core.c):
 * each slot's word holds the keeper's TID, so the kernel replaces it with
 * FUTEX_OWNER_DIED and wakes one waiter on it.  A peer asleep on the word
 * (in a futex_waitv beside its own event) learns the death at once, with no
 * polling.  Why a thread of its own, not the caller's list: a robust list is
 * per thread and the kernel walks it when the *thread* exits, while an
 * attachment lives as long as the process; and glibc owns every other
 * thread's list head (the kernel takes one per thread), so a private head on
 * a thread nobody else uses needs no cooperation with glibc at all.
 * docs/ipc.md has the protocol and what survives which death.
 *
 * The list node lives in the shared segment (the kernel requires the word at
 * a fixed offset from the node), but nothing here ever reads a node back:
 * the keeper keeps the order of its list in private memory and only writes
 * the nodes' next pointers.  A process that scribbles over the segment can
 * make the kernel's walk at *our* death stop early or mark a word in our own
 * (dying) address space; it cannot make this code read or write out of
 * bounds.
 */
#include "internal.h"

#include <ksync/cond.h>
#include <ksync/mutex.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(sizeof(struct ks_keeper_slot) == 16, "slot header is 16 bytes");
_Static_assert(offsetof(struct ks_keeper_slot, node) == 8, "futex_offset is -8");

enum { OP_NONE, OP_CLAIM, OP_RELEASE };

/* A request lives on its caller's stack: its result is its own (a result
 * kept in K was read after the next caller's request had overwritten it, and
 * two handles got one slot). */
struct keeper_req {
    unsigned op;
    void *slots;
    unsigned n;
    int result;
    int done;
};

static struct keeper {
    ks_mutex_t lock;
    ks_cond_t cv;
    uint64_t gen;   /* ks_process_gen() of the process this state is for */
    int started;    /* the thread runs (in this process image) */
    int starting;   /* a caller waits for the thread it created */
    int failed;     /* pthread_create's error, reported to one caller */
    uint32_t tid;   /* the keeper's kernel TID, the value of claimed words */
    /* the request being served (one at a time, under lock), NULL if none */
    struct keeper_req *cur;
    /* the list, in order: nodes[0] is the head's next */
    struct robust_list_head head;
    struct robust_list **nodes;
    size_t count, room;
} K;

static void keeper_reset(uint64_t gen)
{
    /* A fork child: the thread is gone, and the slots the parent's keeper
     * holds are the parent's (the child must open its channels again). */
    ks_mutex_init(&K.lock, KS_PRIVATE);
    ks_cond_init(&K.cv, KS_PRIVATE);
    K.started = 0;
    K.starting = 0;
    K.failed = 0;
    K.cur = NULL;
    free(K.nodes);
    K.nodes = NULL;
    K.count = K.room = 0;
    __atomic_store_n(&K.gen, gen, __ATOMIC_RELEASE); /* release: pairs with the acquire in keeper_state */
}

/* The lock is taken around fork() only when K belongs to this process
 * image: in a _Fork/clone child that has not used the keeper yet, K.lock
 * is a copy that a parent's thread may have held. */
static int fork_locked;

static void atfork_prepare(void)
{
    /* acquire: pairs with the release in keeper_reset */
    fork_locked = __atomic_load_n(&K.gen, __ATOMIC_ACQUIRE) == ks_process_gen();
    if (fork_locked)
        ks_mutex_lock(&K.lock);
}

static void atfork_parent(void)
{
    if (fork_locked)
        ks_mutex_unlock(&K.lock);
}

/* The generation whose reset a thread has claimed: one reset per process
 * image, even when several threads of a _Fork() or clone child (which run
 * no atfork handler) make their first call at once.  A value copied from
 * the parent is the parent's generation, so it never stops the child. */
static uint64_t reset_claim;

static void atfork_child(void)
{
    uint64_t g = ks_process_gen();
    __atomic_store_n(&reset_claim, g, __ATOMIC_RELAXED); /* one thread: nothing to order */
    keeper_reset(g);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void keeper_first(void)
{
    /* K is made valid before the handlers exist: a fork() in another thread
     * meanwhile either runs no handler or finds K.lock initialised */
    uint64_t g = ks_process_gen();
    __atomic_store_n(&reset_claim, g, __ATOMIC_RELAXED); /* inside pthread_once: one thread */
    keeper_reset(g);
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static struct robust_list *node_of(void *slot)
{
    return (struct robust_list *)(void *)&((struct ks_keeper_slot *)slot)->node;
}

/* The kernel walks at most ROBUST_LIST_LIMIT (2048) entries of a robust
 * list at a thread's death: a node past that would never be marked. */
#define KEEPER_MAX_NODES 2047

static int do_claim(void *slots, unsigned n)
{
    if (K.count >= KEEPER_MAX_NODES)
        return -EMFILE;
    if (K.count == K.room) {
        size_t room = K.room ? 2 * K.room : 16;
        struct robust_list **p = realloc(K.nodes, room * sizeof *p);
        if (!p)
            return -ENOMEM;
        K.nodes = p;
        K.room = room;
    }
    for (unsigned i = 0; i < n; i++) {
        void *slot = (char *)slots + (size_t)i * KS_KEEPER_SLOT;
        struct ks_keeper_slot *s = slot;
        uint32_t v = 0;
        struct robust_list *node = node_of(slot);
        /* The kernel handles list_op_pending at our death as if it were on
         * the list: a claim cut short by the death is marked too. */
        K.head.list_op_pending = node;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        /* acq_rel: acquire pairs with the release store of 0 by whoever gave
         * the slot back (ks_keeper_release, or a reaper in channel.c), so
         * its generation bump is visible before we own the slot; release
         * publishes ours to peers that read the word first. */
        if (__atomic_compare_exchange_n(&s->word, &v, K.tid, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            node->next = K.count ? K.nodes[0] : &K.head.list;
            __atomic_signal_fence(__ATOMIC_SEQ_CST);
            K.head.list.next = node;
            __atomic_signal_fence(__ATOMIC_SEQ_CST);
            K.head.list_op_pending = NULL;
            memmove(K.nodes + 1, K.nodes, K.count * sizeof *K.nodes);
            K.nodes[0] = node;
            K.count++;
            return (int)i;
        }
        K.head.list_op_pending = NULL;
    }
    return -EUSERS;
}

static void do_release(void *slot)
{
    struct ks_keeper_slot *s = slot;
    struct robust_list *node = node_of(s);
    size_t k = 0;
    while (k < K.count && K.nodes[k] != node)
        k++;
    if (k == K.count)
        return; /* not ours: nothing to do */
    K.head.list_op_pending = node;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    struct robust_list *succ = k + 1 < K.count ? K.nodes[k + 1] : &K.head.list;
    if (k == 0)
        K.head.list.next = succ;
    else
        K.nodes[k - 1]->next = succ;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    memmove(K.nodes + k, K.nodes + k + 1, (K.count - k - 1) * sizeof *K.nodes);
    K.count--;
    /* relaxed: the store of 0 below releases it */
    __atomic_store_n(&s->gen, __atomic_load_n(&s->gen, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    /* release: pairs with the acquire of the next claimer's CAS and of
     * peers that read the word before the generation (channel.c) */
    uint32_t old = __atomic_exchange_n(&s->word, 0, __ATOMIC_RELEASE);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    K.head.list_op_pending = NULL;
    if (old & FUTEX_WAITERS)
        ks_futex_wake(&s->word, KS_WAKE_ALL, KS_SHARED);
}

static void *keeper_main(void *arg)
{
    (void)arg;
    ks_mutex_lock(&K.lock);
    K.head.list.next = &K.head.list;
    K.head.futex_offset = -(long)offsetof(struct ks_keeper_slot, node);
    K.head.list_op_pending = NULL;
    long r = syscall(SYS_set_robust_list, &K.head, sizeof K.head);
    K.tid = (uint32_t)syscall(SYS_gettid);
    K.failed = r ? (errno ? errno : ENOSYS) : 0;
    K.started = r ? 0 : 1;
    ks_cond_broadcast(&K.cv);
    if (r) {
        ks_mutex_unlock(&K.lock);
        return NULL;
    }
    for (;;) {
        while (!K.cur)
            ks_cond_wait(&K.cv, &K.lock);
        struct keeper_req *q = K.cur;
        if (q->op == OP_CLAIM)
            q->result = do_claim(q->slots, q->n);
        else
            do_release(q->slots);
        q->done = 1;
        K.cur = NULL;
        ks_cond_broadcast(&K.cv);
    }
}

/* Called with K.lock held: start the thread if this process has none. */
static int keeper_start(void)
{
    /* Another caller may be starting it (its wait released the lock): wait
     * for that one rather than start a second keeper. */
    while (K.starting)
        ks_cond_wait(&K.cv, &K.lock);
    if (K.started)
        return 0;
    pthread_attr_t a;
    sigset_t all, old;
    pthread_t t;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the keeper takes no signal */
    int e = pthread_create(&t, &a, keeper_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
    if (e)
        return e;
    K.starting = 1;
    while (!K.started && !K.failed)
        ks_cond_wait(&K.cv, &K.lock);
    K.starting = 0;
    ks_cond_broadcast(&K.cv);
    if (K.failed) {
        e = K.failed;
        K.failed = 0;
        return e == ENOSYS ? ENOSYS : EAGAIN;
    }
    return 0;
}

static void keeper_lock(void)
{
    pthread_once(&once, keeper_first);
    uint64_t g = ks_process_gen();
    /* acquire: pairs with the release in keeper_reset */
    if (__atomic_load_n(&K.gen, __ATOMIC_ACQUIRE) != g) {
        /* The first call of this process image (or of a child made without
         * fork(): _Fork, clone): one thread resets, the others wait for it. */
        uint64_t c = __atomic_load_n(&reset_claim, __ATOMIC_RELAXED); /* seeds the CAS */
        if (c != g && __atomic_compare_exchange_n(&reset_claim, &c, g, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            keeper_reset(g);
        else
            while (__atomic_load_n(&K.gen, __ATOMIC_ACQUIRE) != g) /* acquire: as above */
                sched_yield();
    }
    ks_mutex_lock(&K.lock);
}

static int keeper_call(unsigned op, void *slots, unsigned n)
{
    keeper_lock();
    int e = keeper_start();
    if (e) {
        ks_mutex_unlock(&K.lock);
        return -e;
    }
    while (K.cur)
        ks_cond_wait(&K.cv, &K.lock);
    struct keeper_req r = {.op = op, .slots = slots, .n = n};
    K.cur = &r;
    ks_cond_broadcast(&K.cv);
    while (!r.done)
        ks_cond_wait(&K.cv, &K.lock);
    ks_mutex_unlock(&K.lock);
    return r.result;
}

int ks_keeper_claim(void *slots, unsigned n)
{
    return keeper_call(OP_CLAIM, slots, n);
}

void ks_keeper_release(void *slot)
{
    keeper_call(OP_RELEASE, slot, 1);
}
