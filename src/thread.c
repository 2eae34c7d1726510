/* src/thread.c - who is calling: the thread's ksync id, which process
 * image (fork generation) the calling code runs in, and what the library
 * does when one of its threads exits (the hooks at the end of this file).
 * docs/rmutex.md, docs/epoch.md.
 *
 * Fork generation.  A word that is non-zero in a process the library has
 * already seen, and zero in a fork child it has not seen yet, lets a cached
 * per-thread value (the thread id, a once object's runner) be checked for
 * staleness with two loads and no system call.  The word lives on a private
 * anonymous page marked MADV_WIPEONFORK (Linux 4.14): the kernel hands every
 * child made by any kind of fork a zeroed copy of it - fork(), _Fork()
 * (POSIX 2024, glibc 2.34), syscall(SYS_fork), clone() without CLONE_VM -
 * and none of those but fork() runs pthread_atfork handlers.  The first
 * ksync call in such a child that asks (ks_process_gen) draws a new
 * generation, above every generation issued in this process's ancestry
 * (the counter is inherited), so a value cached by an ancestor never
 * matches.  A fork() child is set up at once by an atfork handler, as
 * before.  Without MADV_WIPEONFORK (older kernels) the word is an ordinary
 * static and only fork() children are detected.
 *
 *   word            meaning
 *   G > 0           this process image's generation
 *   0               a fork child nobody has looked at yet
 *   BUSY            a thread of that child is drawing its generation
 *
 * Signal handlers may call in (ks_thread_id from a handler that takes an
 * rmutex): the thread that holds BUSY, and the one making its id, block
 * signals meanwhile, or a handler on that thread would wait for itself (a
 * review hung a fork child that way) or read half an update.
 */
#include "internal.h"

#include <ksync/once.h>
#include <ksync/rmutex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BUSY KS_GEN_BUSY

static uint64_t fallback_word = 1;        /* used until (or unless) the page exists */
uint64_t *ks_gen_word = &fallback_word;   /* acquire/release: see ks_process_gen */
static uint64_t gen_counter = 1;          /* the last generation issued; inherited */
static uint32_t proc_nonce;               /* drawn (non-zero) once per process image; 0: not yet */
static uint32_t thread_seq;               /* relaxed: only needs distinct values */

static KS_TLS uint64_t tls_id;
static KS_TLS uint64_t tls_id_gen;

uint64_t ks_random_u64(void)
{
    static uint64_t calls; /* relaxed: only makes two fall-back draws differ */
    uint64_t r;
    /* With cancellation disabled: glibc's getrandom() is a cancellation
     * point, and no ksync call is one (docs/conventions.md; a review's
     * reproducer was cancelled here inside ks_cache_create, and, with
     * lockdep on, inside ks_mutex_lock after it had taken the mutex).  Still
     * getrandom(), not the raw system call: a program may interpose it
     * (tests/test_rmutex.c does). */
    const int c = ks_nocancel_begin();
    const ssize_t got = getrandom(&r, sizeof r, GRND_NONBLOCK);
    ks_nocancel_end(c);
    if (got == (ssize_t)sizeof r)
        return r;
    r = ks_ticks() ^ ((uint64_t)getpid() << 32) ^ __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    return ks_mix64(r); /* close inputs, unrelated outputs */
}

static uint32_t draw_nonce(void)
{
    uint32_t n = (uint32_t)ks_random_u64();
    return n ? n : 1;
}

/* The nonce, drawn at the first need: an id made before this file's
 * constructor ran (from another constructor of a static link) must not get
 * the nonce 0 that every process would share. */
static uint32_t nonce(void)
{
    /* relaxed: the value only has to be the same for every reader once set;
     * the CAS decides between racing first drawers. */
    uint32_t n = __atomic_load_n(&proc_nonce, __ATOMIC_RELAXED);
    if (KS_UNLIKELY(!n)) {
        uint32_t mine = draw_nonce();
        if (__atomic_compare_exchange_n(&proc_nonce, &n, mine, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            n = mine;
    }
    return n;
}

static void block_signals(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, old);
}

__attribute__((noinline)) uint64_t ks_process_gen_slow(void)
{
    uint64_t *w = __atomic_load_n(&ks_gen_word, __ATOMIC_ACQUIRE); /* pairs with the constructor */
    for (;;) {
        /* acquire: pairs with the release store below, so the nonce drawn
         * for this generation is visible to every thread that sees it. */
        uint64_t g = __atomic_load_n(w, __ATOMIC_ACQUIRE);
        if (g != 0 && g != BUSY)
            return g;
        sigset_t old;
        block_signals(&old);
        if (g == 0 && __atomic_compare_exchange_n(w, &g, BUSY, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            /* relaxed: published by the release store of the generation */
            __atomic_store_n(&proc_nonce, draw_nonce(), __ATOMIC_RELAXED);
            /* relaxed: the counter only has to grow along one line of
             * descent, and this process has one thread doing this. */
            uint64_t ng = __atomic_add_fetch(&gen_counter, 1, __ATOMIC_RELAXED);
            if (ng == BUSY || ng == 0)
                ng = __atomic_add_fetch(&gen_counter, 2, __ATOMIC_RELAXED);
            __atomic_store_n(w, ng, __ATOMIC_RELEASE); /* pairs with the acquire above */
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return ng;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        sched_yield(); /* another thread of this child draws it: microseconds */
    }
}

/* fork(): the child's handler runs before fork() returns there, so the
 * generation is fresh before any other code of the child runs.  The wiped
 * page is already 0, or already drawn by an atfork handler registered
 * before this one that asked (drawing again would give that handler's
 * thread a second id in the same child): only the fall-back word, which no
 * kernel wipes, is zeroed here. */
static void after_fork_child(void)
{
    /* relaxed: the child has one thread while atfork handlers run */
    if (__atomic_load_n(&ks_gen_word, __ATOMIC_RELAXED) == &fallback_word)
        __atomic_store_n(&fallback_word, 0, __ATOMIC_RELAXED);
    (void)ks_process_gen();
}

__attribute__((constructor)) static void thread_init(void)
{
    long sz = sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, sz > 0 ? (size_t)sz : 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
#ifdef MADV_WIPEONFORK
        if (madvise(p, sz > 0 ? (size_t)sz : 4096, MADV_WIPEONFORK) == 0) {
            *(uint64_t *)p = __atomic_load_n(&fallback_word, __ATOMIC_RELAXED);
            /* release: the page's content before the pointer to it */
            __atomic_store_n(&ks_gen_word, (uint64_t *)p, __ATOMIC_RELEASE);
        } else
#endif
            munmap(p, sz > 0 ? (size_t)sz : 4096);
    }
    pthread_atfork(NULL, NULL, after_fork_child);
}

/* The id: TID << 32 | (nonce + sequence * golden ratio).  Cached per thread
 * together with the generation it was made in; a fork child (of any kind)
 * makes a new one at its first call, because its generation differs. */
/* tls_id and tls_id_gen are read and written with relaxed atomics although
 * only their own thread touches them: a signal handler on that thread may
 * change them between two accesses, and the compiler may otherwise reuse a
 * value loaded before a call (it did: the slow path returned the id the
 * fast path had loaded before a handler replaced it).  Order: the id is
 * stored before its generation, and read after it. */
__attribute__((noinline)) static uint64_t thread_id_slow(uint64_t g)
{
    sigset_t old;
    block_signals(&old);
    uint64_t id = __atomic_load_n(&tls_id, __ATOMIC_RELAXED);
    if (__atomic_load_n(&tls_id_gen, __ATOMIC_RELAXED) != g || !id) { /* a handler may have made it */
        uint32_t seq = __atomic_add_fetch(&thread_seq, 1, __ATOMIC_RELAXED);
        uint32_t lo = nonce() + seq * 0x9e3779b9u;
        id = ((uint64_t)(uint32_t)syscall(SYS_gettid) << 32) | lo;
        id = id ? id : 1;
        __atomic_store_n(&tls_id, id, __ATOMIC_RELAXED);
        __atomic_signal_fence(__ATOMIC_SEQ_CST); /* the id before its generation */
        __atomic_store_n(&tls_id_gen, g, __ATOMIC_RELAXED);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return id;
}

uint64_t ks_thread_id(void)
{
    uint64_t g = ks_process_gen();
    /* The generation before the id: a handler that runs between the two
     * loads and makes the id cannot make us return the previous one with
     * the new generation. */
    uint64_t have = __atomic_load_n(&tls_id_gen, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    uint64_t id = __atomic_load_n(&tls_id, __ATOMIC_RELAXED);
    if (KS_LIKELY(have == g && id))
        return id;
    return thread_id_slow(g);
}

/* ---- thread exit: one key, the hooks the thread armed (src/internal.h) ----
 * One key for the library, so that the hooks run in the order of enum
 * ks_exit_hook whichever subsystem a thread used first (with a key per
 * subsystem they ran in the order the keys happened to be made).  The key
 * is made at the first arming, not at start-up: keys the application made
 * before it keep running before it. */
static pthread_key_t exit_key;
static ks_once_t exit_once = KS_ONCE_INIT;
static int exit_key_ok;
/* relaxed: every store for one hook writes the same function, and a thread
 * reads the slot only after its own store (it armed the hook) */
static void (*exit_fn[KS_EXIT_HOOKS])(void);
/* bit i: hook i runs at this thread's exit.  Relaxed atomics, although only
 * this thread touches it: a signal handler on it may arm a hook between the
 * load and the store of a plain |=. */
static KS_TLS unsigned exit_armed;

static void run_exit_hooks(void *unused)
{
    (void)unused;
    unsigned m, ran = 0;
    /* Lowest first, one at a time, disarmed before it runs: a hook that
     * arms a later one (the epoch's retire functions making a first cache
     * get) has it run in this same call.  A hook armed again after it ran
     * waits for glibc's next round (the key is set again), so that hooks
     * that keep arming each other end when glibc's rounds do. */
    while ((m = __atomic_load_n(&exit_armed, __ATOMIC_RELAXED) & ~ran)) {
        unsigned i = (unsigned)__builtin_ctz(m);
        ran |= 1u << i;
        __atomic_fetch_and(&exit_armed, ~(1u << i), __ATOMIC_RELAXED);
        __atomic_load_n(&exit_fn[i], __ATOMIC_RELAXED)();
    }
    /* a hook that armed another set the key again: clear it if nothing is
     * left to run */
    if (!__atomic_load_n(&exit_armed, __ATOMIC_RELAXED))
        pthread_setspecific(exit_key, NULL);
}

static void make_exit_key(void)
{
    exit_key_ok = pthread_key_create(&exit_key, run_exit_hooks) == 0;
}

int ks_thread_at_exit(enum ks_exit_hook which, void (*fn)(void))
{
    ks_once(&exit_once, make_exit_key);
    if (!exit_key_ok)
        return EAGAIN;
    __atomic_store_n(&exit_fn[which], fn, __ATOMIC_RELAXED); /* relaxed: see exit_fn */
    /* set again at every arming: glibc clears it before each destructor
     * call, and a hook may be armed by a destructor that runs after ours */
    if (pthread_setspecific(exit_key, &exit_armed) != 0)
        return ENOMEM;
    __atomic_fetch_or(&exit_armed, 1u << which, __ATOMIC_RELAXED); /* relaxed: see exit_armed */
    return 0;
}

void ks_thread_at_exit_cancel(enum ks_exit_hook which)
{
    unsigned was = __atomic_fetch_and(&exit_armed, ~(1u << which), __ATOMIC_RELAXED);
    /* only a thread that armed a hook has gone through exit_once */
    if (was == 1u << which)
        pthread_setspecific(exit_key, NULL);
}
