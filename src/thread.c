/* src/thread.c - who is calling: the thread's ksync id, and which process
 * image (fork generation) the calling code runs in.  docs/rmutex.md.
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
 */
#include "internal.h"

#include <ksync/rmutex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BUSY UINT64_MAX

static uint64_t fallback_word = 1;        /* used until (or unless) the page exists */
uint64_t *ks_gen_word = &fallback_word;   /* acquire/release: see ks_process_gen */
static uint64_t gen_counter = 1;          /* the last generation issued; inherited */
static uint32_t proc_nonce;               /* drawn once per process image */
static uint32_t thread_seq;               /* relaxed: only needs distinct values */

static KS_TLS uint64_t tls_id;
static KS_TLS uint64_t tls_id_gen;

static void new_nonce(void)
{
    uint32_t n;
    if (getrandom(&n, sizeof n, GRND_NONBLOCK) != (ssize_t)sizeof n)
        n = (uint32_t)ks_ticks() ^ (uint32_t)getpid() * 2654435761u;
    __atomic_store_n(&proc_nonce, n, __ATOMIC_RELAXED); /* read under the generation's acquire */
}

uint64_t ks_process_gen_slow(void)
{
    uint64_t *w = __atomic_load_n(&ks_gen_word, __ATOMIC_ACQUIRE); /* pairs with the constructor */
    for (;;) {
        /* acquire: pairs with the release store below, so the nonce drawn
         * for this generation is visible to every thread that sees it. */
        uint64_t g = __atomic_load_n(w, __ATOMIC_ACQUIRE);
        if (g != 0 && g != BUSY)
            return g;
        if (g == 0 && __atomic_compare_exchange_n(w, &g, BUSY, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            new_nonce();
            /* relaxed: the counter only has to grow along one line of
             * descent, and this process has one thread doing this. */
            uint64_t ng = __atomic_add_fetch(&gen_counter, 1, __ATOMIC_RELAXED);
            if (ng == BUSY || ng == 0)
                ng = __atomic_add_fetch(&gen_counter, 2, __ATOMIC_RELAXED);
            __atomic_store_n(w, ng, __ATOMIC_RELEASE); /* pairs with the acquire above */
            return ng;
        }
        sched_yield(); /* another thread of this child draws it: microseconds */
    }
}

/* fork(): the child's handler runs before fork() returns there, so the
 * generation is fresh before any other code of the child runs. */
static void after_fork_child(void)
{
    __atomic_store_n(__atomic_load_n(&ks_gen_word, __ATOMIC_RELAXED), 0, __ATOMIC_RELAXED);
    (void)ks_process_gen_slow();
}

__attribute__((constructor)) static void thread_init(void)
{
    new_nonce();
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
uint64_t ks_thread_id(void)
{
    uint64_t g = ks_process_gen();
    if (KS_LIKELY(tls_id && tls_id_gen == g))
        return tls_id;
    uint32_t seq = __atomic_add_fetch(&thread_seq, 1, __ATOMIC_RELAXED);
    uint32_t lo = __atomic_load_n(&proc_nonce, __ATOMIC_RELAXED) + seq * 0x9e3779b9u;
    uint64_t id = ((uint64_t)(uint32_t)syscall(SYS_gettid) << 32) | lo;
    tls_id = id ? id : 1;
    tls_id_gen = g;
    return tls_id;
}
