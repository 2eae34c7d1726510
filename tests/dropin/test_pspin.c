/* tests/dropin/test_pspin.c - pthread_spin_* as glibc 2.36 behaves: layout,
 * mutual exclusion with many threads on 2 CPUs, trylock EBUSY (also for the
 * holder itself: a spinlock has no owner), process-shared use across fork().
 * Reference: POSIX pthread_spin_lock, pthread_spin_trylock. */
#include "helpers.h"

#include <stdalign.h>

#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(pthread_spinlock_t) == 4, "glibc pthread_spinlock_t is 4 bytes");
_Static_assert(alignof(pthread_spinlock_t) == 4, "pthread_spinlock_t is 4-aligned");
#endif

static void *trylock_fn(void *l)
{
    int e = pthread_spin_trylock(l);
    if (e == 0)
        pthread_spin_unlock(l);
    return (void *)(intptr_t)e;
}

Test(pspin, trylock_is_ebusy_while_held, .timeout = 30)
{
    pthread_spinlock_t l;
    cr_assert_eq(pthread_spin_init(&l, PTHREAD_PROCESS_PRIVATE), 0);
    cr_assert_eq(pthread_spin_lock(&l), 0);
    cr_assert_eq(pthread_spin_trylock(&l), EBUSY);
    cr_assert_eq(dt_in_thread(trylock_fn, (void *)&l), EBUSY);
    cr_assert_eq(pthread_spin_unlock(&l), 0);
    cr_assert_eq(dt_in_thread(trylock_fn, (void *)&l), 0);
    cr_assert_eq(pthread_spin_trylock(&l), 0);
    cr_assert_eq(pthread_spin_trylock(&l), EBUSY);
    cr_assert_eq(dt_in_thread(trylock_fn, (void *)&l), EBUSY);
    cr_assert_eq(pthread_spin_unlock(&l), 0);
    cr_assert_eq(pthread_spin_destroy(&l), 0);
    /* pthread_spin_init makes any memory an unlocked spinlock.  (There is no
     * static initializer, and zero-filled memory is not one: glibc's x86-64
     * spinlock is unlocked at 1, its generic one at 0, so it is not tested.) */
    pthread_spinlock_t *z = malloc(sizeof *z);
    cr_assert_not_null(z);
    memset((void *)z, 0xa5, sizeof *z);
    cr_assert_eq(pthread_spin_init(z, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_spin_trylock(z), 0);
    cr_assert_eq(pthread_spin_trylock(z), EBUSY);
    cr_assert_eq(pthread_spin_unlock(z), 0);
    cr_assert_eq(pthread_spin_lock(z), 0);
    cr_assert_eq(pthread_spin_unlock(z), 0);
    cr_assert_eq(pthread_spin_destroy(z), 0);
    free((void *)z);
}

/* The holder keeps it while another thread spins in pthread_spin_lock; the
 * spinner gets in only after the unlock. */
struct spin_wait {
    pthread_spinlock_t l;
    int started;
    int got;
    int released;
    int early;
};

static void *spinner(void *p)
{
    struct spin_wait *s = p;
    __atomic_store_n(&s->started, 1, __ATOMIC_RELEASE);
    pthread_spin_lock(&s->l);
    if (!__atomic_load_n(&s->released, __ATOMIC_ACQUIRE))
        s->early = 1;
    __atomic_store_n(&s->got, 1, __ATOMIC_RELEASE);
    pthread_spin_unlock(&s->l);
    return NULL;
}

Test(pspin, lock_waits_for_the_holder, .timeout = 30)
{
    struct spin_wait s;
    memset(&s, 0, sizeof s);
    cr_assert_eq(pthread_spin_init(&s.l, PTHREAD_PROCESS_PRIVATE), 0);
    cr_assert_eq(pthread_spin_lock(&s.l), 0);
    pthread_t t;
    dt_spawn(&t, spinner, &s);
    cr_assert(dt_wait_int(&s.started, 1, 10 * DT_S));
    dt_sleep_ns(20 * DT_MS);
    cr_assert_eq(__atomic_load_n(&s.got, __ATOMIC_ACQUIRE), 0, "got a held spinlock");
    __atomic_store_n(&s.released, 1, __ATOMIC_RELEASE);
    cr_assert_eq(pthread_spin_unlock(&s.l), 0);
    dt_join(t);
    cr_assert_eq(s.got, 1);
    cr_assert_eq(s.early, 0);
    cr_assert_eq(pthread_spin_destroy(&s.l), 0);
}

#define SP_THREADS 16
#define SP_ITERS 5000

struct spin_mx {
    pthread_spinlock_t l;
    long counter; /* plain */
    int inside;
    int overlap;
    int errors;
    int gate;
};

static void *spin_worker(void *p)
{
    struct spin_mx *s = p;
    dt_gate_pass(&s->gate, SP_THREADS);
    for (int i = 0; i < SP_ITERS; i++) {
        int e = (i & 3) == 0 ? pthread_spin_trylock(&s->l) : pthread_spin_lock(&s->l);
        if (e == EBUSY)
            e = pthread_spin_lock(&s->l);
        if (e != 0) {
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (__atomic_add_fetch(&s->inside, 1, __ATOMIC_RELAXED) != 1)
            __atomic_store_n(&s->overlap, 1, __ATOMIC_RELAXED);
        long v = s->counter;
        s->counter = v + 1;
        __atomic_sub_fetch(&s->inside, 1, __ATOMIC_RELAXED);
        if (pthread_spin_unlock(&s->l) != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

Test(pspin, mutual_exclusion_16_threads, .timeout = 60)
{
    struct spin_mx s;
    memset(&s, 0, sizeof s);
    cr_assert_eq(pthread_spin_init(&s.l, PTHREAD_PROCESS_PRIVATE), 0);
    pthread_t t[SP_THREADS];
    for (int i = 0; i < SP_THREADS; i++)
        dt_spawn(&t[i], spin_worker, &s);
    for (int i = 0; i < SP_THREADS; i++)
        dt_join(t[i]);
    cr_assert_eq(s.errors, 0);
    cr_assert_eq(s.overlap, 0, "two threads inside at once");
    cr_assert_eq(s.counter, (long)SP_THREADS * SP_ITERS);
    cr_assert_eq(pthread_spin_destroy(&s.l), 0);
}

#define PSP_ITERS 20000

struct pspin {
    pthread_spinlock_t l;
    long counter;
    int overlap;
    int inside;
};

static int pspin_worker(void *p)
{
    struct pspin *s = p;
    for (int i = 0; i < PSP_ITERS; i++) {
        DT_CHECK(pthread_spin_lock(&s->l) == 0, 2);
        if (__atomic_add_fetch(&s->inside, 1, __ATOMIC_RELAXED) != 1)
            s->overlap = 1;
        s->counter++;
        __atomic_sub_fetch(&s->inside, 1, __ATOMIC_RELAXED);
        DT_CHECK(pthread_spin_unlock(&s->l) == 0, 3);
    }
    return 0;
}

static int pspin_held_child(void *p)
{
    struct pspin *s = p;
    DT_CHECK(pthread_spin_trylock(&s->l) == EBUSY, 2);
    return 0;
}

Test(pspin, process_shared_spinlock_across_fork, .timeout = 60)
{
    struct pspin *s = dt_shared_alloc(sizeof *s);
    cr_assert_eq(pthread_spin_init(&s->l, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_spin_lock(&s->l), 0);
    dt_wait_child_named(dt_fork(pspin_held_child, s), "held spinlock in the child");
    cr_assert_eq(pthread_spin_unlock(&s->l), 0);
    pid_t pid = dt_fork(pspin_worker, s);
    cr_assert_eq(pspin_worker(s), 0);
    dt_wait_child_named(pid, "pshared spinlock child");
    cr_assert_eq(s->overlap, 0);
    cr_assert_eq(s->counter, 2L * PSP_ITERS);
    cr_assert_eq(pthread_spin_destroy(&s->l), 0);
    dt_shared_free(s, sizeof *s);
}
