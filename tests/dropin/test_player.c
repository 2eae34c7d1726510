/* tests/dropin/test_player.c - which implementation ran, and fork() in a
 * multi-threaded process.
 *
 * The same binary runs twice (Makefile target check-dropin): on plain glibc,
 * and with build/libksync-pthread.so.0 preloaded and KSYNC_DROPIN_EXPECT=1
 * in the environment.  The first test asserts, with dladdr(), that the
 * pthread and semaphore functions this process calls come from the layer in
 * the second run and from glibc's libc in the first, both as the dynamic
 * linker resolves the name (dlsym(RTLD_DEFAULT)) and as this program's own
 * calls reach them (the address of the function taken in this file).
 *
 * The fork test forks children while other threads hammer mutexes, condition
 * variables, rwlocks and semaphores; each child must be able to use objects
 * of its own (and create threads) and exit 0. */
#include "helpers.h"

#include <dlfcn.h>

struct fn {
    const char *name;
    void *addr; /* the address this program's calls go to */
};

#define FN(f) {#f, (void *)(uintptr_t)&f}

static const struct fn fns[] = {
    FN(pthread_mutex_lock),
    FN(pthread_mutex_unlock),
    FN(pthread_cond_wait),
    FN(pthread_cond_signal),
    FN(sem_wait),
    FN(sem_post),
    FN(pthread_rwlock_rdlock),
    FN(pthread_barrier_wait),
    FN(pthread_spin_lock),
    FN(pthread_once),
};

static int expect_layer(void)
{
    const char *e = getenv("KSYNC_DROPIN_EXPECT");
    return e && strcmp(e, "1") == 0;
}

static const char *file_of(void *addr, const char *what)
{
    Dl_info info;
    memset(&info, 0, sizeof info);
    cr_assert_neq(dladdr(addr, &info), 0, "%s: dladdr(%p) found no object", what, addr);
    cr_assert_not_null(info.dli_fname, "%s", what);
    return info.dli_fname;
}

static void expect_from(void *addr, const char *what, const char *how)
{
    const char *file = file_of(addr, what);
    if (expect_layer()) {
        cr_assert_not_null(strstr(file, "libksync-pthread"), "%s (%s) resolves into %s, not the layer", what,
                           how, file);
    } else {
        cr_assert_null(strstr(file, "libksync-pthread"), "%s (%s) resolves into the layer %s", what, how, file);
        cr_assert_not_null(strstr(file, "libc.so"), "%s (%s) resolves into %s, not glibc's libc", what, how,
                           file);
    }
}

Test(player, functions_resolve_into_the_expected_library, .timeout = 30)
{
    for (unsigned i = 0; i < DT_ARRAY_LEN(fns); i++) {
        void *sym = dlsym(RTLD_DEFAULT, fns[i].name);
        cr_assert_not_null(sym, "dlsym(%s): %s", fns[i].name, dlerror());
        expect_from(sym, fns[i].name, "dlsym(RTLD_DEFAULT)");
        expect_from(fns[i].addr, fns[i].name, "the program's own call");
        cr_assert_eq(sym, fns[i].addr, "%s: the program calls %p, the dynamic linker resolves %p", fns[i].name,
                     fns[i].addr, sym);
    }
#if defined(__x86_64__)
    /* x86-64 glibc has two versions of the pthread_cond_* functions: the
     * current GLIBC_2.3.2 and the old GLIBC_2.2.5 one; both must come from
     * the same place as the default. */
    static const char *const versions[] = {"GLIBC_2.3.2", "GLIBC_2.2.5"};
    static const char *const conds[] = {"pthread_cond_wait", "pthread_cond_signal", "pthread_cond_broadcast",
                                        "pthread_cond_timedwait", "pthread_cond_init", "pthread_cond_destroy"};
    for (unsigned v = 0; v < 2; v++)
        for (unsigned i = 0; i < DT_ARRAY_LEN(conds); i++) {
            void *sym = dlvsym(RTLD_DEFAULT, conds[i], versions[v]);
            cr_assert_not_null(sym, "dlvsym(%s, %s): %s", conds[i], versions[v], dlerror());
            expect_from(sym, conds[i], versions[v]);
        }
#endif
}

/* ---- fork while other threads hammer the primitives ---------------------------------------- */

#define HAMMERS 8
#define FORKS 40

struct hammer {
    pthread_mutex_t m;
    pthread_cond_t c;
    pthread_rwlock_t rw;
    sem_t sem;
    long counter;  /* under m */
    long queue;    /* under m */
    long produced; /* atomic */
    long consumed; /* atomic */
    int stop;
    int errors;
};

static void hammer_err(struct hammer *h) { __atomic_add_fetch(&h->errors, 1, __ATOMIC_RELAXED); }

static void *hammer_mutex(void *p)
{
    struct hammer *h = p;
    while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
        if (pthread_mutex_lock(&h->m) != 0)
            hammer_err(h);
        h->counter++;
        if (pthread_mutex_unlock(&h->m) != 0)
            hammer_err(h);
        if (pthread_rwlock_rdlock(&h->rw) != 0 || pthread_rwlock_unlock(&h->rw) != 0)
            hammer_err(h);
    }
    return NULL;
}

static void *hammer_producer(void *p)
{
    struct hammer *h = p;
    while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&h->m);
        h->queue++;
        __atomic_add_fetch(&h->produced, 1, __ATOMIC_RELAXED);
        if (pthread_cond_signal(&h->c) != 0)
            hammer_err(h);
        pthread_mutex_unlock(&h->m);
        if (sem_post(&h->sem) != 0)
            hammer_err(h);
        if (pthread_rwlock_wrlock(&h->rw) != 0 || pthread_rwlock_unlock(&h->rw) != 0)
            hammer_err(h);
        sched_yield();
    }
    /* wake any consumer for the last time */
    pthread_mutex_lock(&h->m);
    pthread_cond_broadcast(&h->c);
    pthread_mutex_unlock(&h->m);
    return NULL;
}

static void *hammer_consumer(void *p)
{
    struct hammer *h = p;
    for (;;) {
        pthread_mutex_lock(&h->m);
        while (h->queue == 0 && !__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
            struct timespec dl = dt_deadline(CLOCK_REALTIME, 5 * DT_MS);
            int e = pthread_cond_timedwait(&h->c, &h->m, &dl);
            if (e != 0 && e != ETIMEDOUT)
                hammer_err(h);
        }
        if (h->queue > 0) {
            h->queue--;
            __atomic_add_fetch(&h->consumed, 1, __ATOMIC_RELAXED);
        }
        int stop = __atomic_load_n(&h->stop, __ATOMIC_ACQUIRE) && h->queue == 0;
        pthread_mutex_unlock(&h->m);
        struct timespec dl = dt_deadline(CLOCK_MONOTONIC, DT_MS);
        if (sem_clockwait(&h->sem, CLOCK_MONOTONIC, &dl) != 0 && errno != ETIMEDOUT)
            hammer_err(h);
        if (stop)
            return NULL;
    }
}

static pthread_mutex_t child_static = PTHREAD_MUTEX_INITIALIZER;

static void *child_thread(void *p)
{
    pthread_mutex_t *m = p;
    int e = pthread_mutex_trylock(m);
    if (e == 0)
        pthread_mutex_unlock(m);
    return (void *)(intptr_t)e;
}

static int fork_child(void *p)
{
    (void)p;
    pthread_mutex_t m;
    pthread_cond_t c;
    pthread_rwlock_t rw;
    sem_t s;
    DT_CHECK(pthread_mutex_init(&m, NULL) == 0, 2);
    DT_CHECK(pthread_cond_init(&c, NULL) == 0, 3);
    DT_CHECK(pthread_rwlock_init(&rw, NULL) == 0, 4);
    DT_CHECK(sem_init(&s, 0, 0) == 0, 5);
    DT_CHECK(pthread_mutex_lock(&m) == 0, 6);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, DT_MS);
    DT_CHECK(pthread_cond_timedwait(&c, &m, &dl) == ETIMEDOUT, 7);
    DT_CHECK(pthread_cond_signal(&c) == 0 && pthread_cond_broadcast(&c) == 0, 8);
    /* a new thread of the child sees the mutex held */
    pthread_t t;
    void *r = NULL;
    DT_CHECK(pthread_create(&t, NULL, child_thread, &m) == 0, 9);
    DT_CHECK(pthread_join(t, &r) == 0 && (intptr_t)r == EBUSY, 10);
    DT_CHECK(pthread_mutex_unlock(&m) == 0, 11);
    DT_CHECK(pthread_create(&t, NULL, child_thread, &m) == 0, 12);
    DT_CHECK(pthread_join(t, &r) == 0 && (intptr_t)r == 0, 13);
    DT_CHECK(pthread_mutex_lock(&child_static) == 0 && pthread_mutex_unlock(&child_static) == 0, 14);
    DT_CHECK(pthread_rwlock_wrlock(&rw) == 0 && pthread_rwlock_unlock(&rw) == 0, 15);
    DT_CHECK(pthread_rwlock_rdlock(&rw) == 0 && pthread_rwlock_unlock(&rw) == 0, 16);
    DT_CHECK(sem_post(&s) == 0 && sem_wait(&s) == 0, 17);
    DT_CHECK(sem_trywait(&s) == -1 && errno == EAGAIN, 18);
    DT_CHECK(pthread_cond_destroy(&c) == 0, 19);
    DT_CHECK(pthread_mutex_destroy(&m) == 0, 20);
    DT_CHECK(pthread_rwlock_destroy(&rw) == 0, 21);
    DT_CHECK(sem_destroy(&s) == 0, 22);
    return 0;
}

Test(player, fork_while_other_threads_hammer_the_primitives, .timeout = 60)
{
    struct hammer *h = calloc(1, sizeof *h);
    cr_assert_not_null(h);
    cr_assert_eq(pthread_mutex_init(&h->m, NULL), 0);
    cr_assert_eq(pthread_cond_init(&h->c, NULL), 0);
    cr_assert_eq(pthread_rwlock_init(&h->rw, NULL), 0);
    cr_assert_eq(sem_init(&h->sem, 0, 0), 0);
    pthread_t t[HAMMERS];
    for (int i = 0; i < HAMMERS; i++)
        dt_spawn(&t[i], i < 4 ? hammer_mutex : i < 6 ? hammer_producer : hammer_consumer, h);
    dt_sleep_ns(10 * DT_MS);
    for (int i = 0; i < FORKS; i++) {
        pid_t pid = dt_fork(fork_child, NULL);
        int st = dt_reap(pid);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            __atomic_store_n(&h->stop, 1, __ATOMIC_RELEASE);
            for (int k = 0; k < HAMMERS; k++)
                dt_join(t[k]);
            cr_assert_fail("fork %d: child %s %d", i, WIFEXITED(st) ? "failed check" : "killed by signal",
                           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        }
    }
    __atomic_store_n(&h->stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < HAMMERS; i++)
        dt_join(t[i]);
    cr_assert_eq(h->errors, 0);
    cr_assert_gt(h->counter, 0);
    cr_assert_eq(h->produced, h->consumed + h->queue);
    /* the parent's objects still work */
    cr_assert_eq(pthread_mutex_trylock(&h->m), 0);
    cr_assert_eq(pthread_mutex_unlock(&h->m), 0);
    cr_assert_eq(pthread_rwlock_trywrlock(&h->rw), 0);
    cr_assert_eq(pthread_rwlock_unlock(&h->rw), 0);
    cr_assert_eq(pthread_cond_destroy(&h->c), 0);
    cr_assert_eq(pthread_mutex_destroy(&h->m), 0);
    cr_assert_eq(pthread_rwlock_destroy(&h->rw), 0);
    cr_assert_eq(sem_destroy(&h->sem), 0);
    free(h);
}

/* ---- robust mutexes: the layer's own (ks_robust), glibc's recursive ones ------------------ */

/* Preloaded, a robust mutex of any type is a ks_robust_t (docs/dropin.md):
 * its kind field carries the layer's own bit (0x10000, not a glibc value)
 * and its owner field stays 0 (for a recursive one it is ks_robust's
 * depth, 0 when held once); on glibc the kind is
 * PTHREAD_MUTEX_ROBUST_NORMAL_NP (16, plus glibc's pshared bit) and the
 * owner field the holder's tid. */
Test(player, robust_mutexes_are_served_by_the_expected_library, .timeout = 30)
{
    pthread_mutexattr_t a;
    pthread_mutex_t m, r;
    cr_assert_eq(pthread_mutexattr_init(&a), 0);
    cr_assert_eq(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST), 0);
    cr_assert_eq(pthread_mutex_init(&m, &a), 0);
    cr_assert_eq(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE), 0);
    cr_assert_eq(pthread_mutex_init(&r, &a), 0);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    cr_assert_eq(pthread_mutex_lock(&r), 0);
    if (expect_layer()) {
        cr_assert(m.__data.__kind & 0x10000, "kind %#x: not the layer's", m.__data.__kind);
        cr_assert_eq(m.__data.__owner, 0, "owner field %d: glibc's code ran", m.__data.__owner);
    } else {
        /* PTHREAD_MUTEX_ROBUST_NORMAL_NP, with glibc's pshared bit (128),
         * which glibc sets on every robust mutex */
        cr_assert_eq(m.__data.__kind & 0x7f, 16, "kind %#x", m.__data.__kind);
        cr_assert_eq(m.__data.__owner, (int)syscall(SYS_gettid));
    }
    if (expect_layer()) {
        cr_assert(r.__data.__kind & 0x10000, "kind %#x: not the layer's", r.__data.__kind);
        cr_assert_eq(r.__data.__owner, 0, "owner field %d: glibc's code ran", r.__data.__owner);
    } else {
        cr_assert_eq(r.__data.__owner, (int)syscall(SYS_gettid));
    }
    cr_assert_eq(pthread_mutex_unlock(&r), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_destroy(&r), 0);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    cr_assert_eq(pthread_mutexattr_destroy(&a), 0);
}

/* ---- where the mutex word is ---------------------------------------------------- */

/* The layer's mutex word is at offset 20 (glibc's __spins), and its
 * pthread_mutex_lock and trylock swap that word before they read the kind
 * (src/dropin/pmutex.c, swap_first).  In a mutex that glibc keeps (priority
 * inheritance) or that the layer keeps as a ks_robust_t, the word is at 0,
 * and the swap must leave no trace there or at 20: while a thread holds
 * one, the word at 0 is its tid (glibc's and the kernel's protocol), and
 * once every call has returned the word at 20 is 0 again, also after
 * threads took it by lock and trylock against each other.  glibc itself
 * never writes __spins in these kinds, so the same holds on glibc. */
#define SW_THREADS 8
#define SW_ITERS 20000
struct sw {
    pthread_mutex_t *m;
    long counter; /* guarded by m */
    int errors;
};

static void *sw_worker(void *p)
{
    struct sw *s = p;
    for (int i = 0; i < SW_ITERS; i++) {
        int r = (i & 1) ? pthread_mutex_trylock(s->m) : pthread_mutex_lock(s->m);
        if (r == EBUSY && (i & 1))
            continue;
        if (r != 0) {
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        s->counter++;
        if (pthread_mutex_unlock(s->m) != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static uint32_t word_at(const pthread_mutex_t *m, size_t off)
{
    uint32_t w;
    memcpy(&w, (const char *)m + off, sizeof w);
    return w;
}

static void kept_elsewhere(pthread_mutex_t *m, const char *what)
{
    const uint32_t tid = (uint32_t)syscall(SYS_gettid);
    cr_assert_eq(pthread_mutex_lock(m), 0, "%s", what);
    cr_assert_eq(word_at(m, 0) & 0x3fffffffu, tid, "%s: word at 0 is %#x, not the holder's tid", what,
                 word_at(m, 0));
    cr_assert_eq(word_at(m, 20), 0, "%s: word at 20 is %#x while held", what, word_at(m, 20));
    cr_assert_eq(pthread_mutex_unlock(m), 0, "%s", what);
    cr_assert_eq(pthread_mutex_trylock(m), 0, "%s", what);
    cr_assert_eq(word_at(m, 0) & 0x3fffffffu, tid, "%s: trylock: word at 0 is %#x", what, word_at(m, 0));
    cr_assert_eq(word_at(m, 20), 0, "%s: trylock: word at 20 is %#x", what, word_at(m, 20));
    cr_assert_eq(pthread_mutex_unlock(m), 0, "%s", what);

    struct sw s = {.m = m};
    pthread_t t[SW_THREADS];
    for (int i = 0; i < SW_THREADS; i++)
        dt_spawn(&t[i], sw_worker, &s);
    for (int i = 0; i < SW_THREADS; i++)
        dt_join(t[i]);
    cr_assert_eq(s.errors, 0, "%s: %d failed calls", what, s.errors);
    cr_assert_geq(s.counter, (long)SW_THREADS * SW_ITERS / 2, "%s: %ld increments", what, s.counter);
    cr_assert_eq(word_at(m, 0), 0, "%s: word at 0 is %#x after the threads", what, word_at(m, 0));
    cr_assert_eq(word_at(m, 20), 0, "%s: word at 20 is %#x after the threads", what, word_at(m, 20));
    cr_assert_eq(pthread_mutex_destroy(m), 0, "%s", what);
}

Test(player, the_first_swap_leaves_the_mutexes_glibc_or_ks_robust_keep_alone, .timeout = 60)
{
    pthread_mutexattr_t a;
    pthread_mutex_t m;
    cr_assert_eq(pthread_mutexattr_init(&a), 0);
    cr_assert_eq(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT), 0);
    cr_assert_eq(pthread_mutex_init(&m, &a), 0);
    kept_elsewhere(&m, "priority inheritance");
    cr_assert_eq(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_NONE), 0);
    cr_assert_eq(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST), 0);
    cr_assert_eq(pthread_mutex_init(&m, &a), 0);
    if (expect_layer())
        cr_assert(m.__data.__kind & 0x10000, "kind %#x: not the layer's ks_robust", m.__data.__kind);
    kept_elsewhere(&m, "robust");
    cr_assert_eq(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE), 0);
    cr_assert_eq(pthread_mutex_init(&m, &a), 0);
    kept_elsewhere(&m, "robust recursive");
    cr_assert_eq(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_NORMAL), 0);
    cr_assert_eq(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT), 0);
    cr_assert_eq(pthread_mutex_init(&m, &a), 0);
    kept_elsewhere(&m, "priority inheritance, robust");
    /* destroyed (kind -1, glibc's value): glibc answers, the word stays 0 */
    cr_assert_eq(pthread_mutex_lock(&m), EINVAL);
    cr_assert_eq(pthread_mutex_trylock(&m), EINVAL);
    cr_assert_eq(word_at(&m, 20), 0, "destroyed: word at 20 is %#x", word_at(&m, 20));
    cr_assert_eq(pthread_mutexattr_destroy(&a), 0);

    /* The layer's own: its word at 20, glibc's __lock and __count at 0 left
     * zero; an errorcheck mutex's owner at glibc's __owner (offset 8). */
    pthread_mutex_t d = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_t e = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    cr_assert_eq(pthread_mutex_lock(&d), 0);
    cr_assert_eq(pthread_mutex_lock(&e), 0);
    cr_assert_eq(e.__data.__owner, (int)syscall(SYS_gettid));
    if (expect_layer()) {
        /* the LOCKED bit: under KSYNC_LOCKSTAT=all or KSYNC_LOCKDEP the
         * library also marks the word (KS_MUTEX_TRACED, 8) */
        cr_assert_eq(word_at(&d, 20) & 1, 1, "default: word at 20 is %#x while held", word_at(&d, 20));
        cr_assert_eq(word_at(&d, 0) | word_at(&d, 4), 0, "default: glibc's __lock or __count written");
        cr_assert_eq(word_at(&e, 20) & 1, 1, "errorcheck: word at 20 is %#x while held", word_at(&e, 20));
    }
    cr_assert_eq(pthread_mutex_lock(&e), EDEADLK);
    cr_assert_eq(pthread_mutex_unlock(&e), 0);
    cr_assert_eq(pthread_mutex_unlock(&d), 0);
    if (expect_layer())
        cr_assert_eq((word_at(&d, 20) | word_at(&e, 20)) & 1, 0, "word at 20 left locked after unlock");
}
