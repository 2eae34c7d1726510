/* tests/dropin/test_pmutex.c - pthread_mutex_* as glibc 2.36 behaves:
 * layout, zero-filled and static initializers, the errorcheck / recursive /
 * normal / adaptive types, trylock, timedlock and clocklock (deadlines, bad
 * tv_nsec, bad clock ids), mutual exclusion with 16 threads on 2 CPUs,
 * process-shared mutexes across fork(), PI and robust mutexes (which the
 * layer hands to glibc), destroy of a locked mutex, and mutexes in a forked
 * child.  References: POSIX pthread_mutex_lock, pthread_mutex_timedlock,
 * pthread_mutex_destroy, pthread_mutex_consistent; the glibc manual's
 * "POSIX Threads" chapter. */
#include "helpers.h"

#include <stdalign.h>

/* ---- layout: the layer lives inside glibc's objects ---------------------- */

#if defined(__x86_64__)
_Static_assert(sizeof(pthread_mutex_t) == 40, "glibc x86-64 pthread_mutex_t is 40 bytes");
#elif defined(__aarch64__)
_Static_assert(sizeof(pthread_mutex_t) == 48, "glibc aarch64 pthread_mutex_t is 48 bytes");
#endif
#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(alignof(pthread_mutex_t) == 8, "pthread_mutex_t is 8-aligned");
#endif
#if defined(__x86_64__)
_Static_assert(sizeof(pthread_mutexattr_t) == 4, "glibc x86-64 pthread_mutexattr_t is 4 bytes");
#elif defined(__aarch64__)
_Static_assert(sizeof(pthread_mutexattr_t) == 8, "glibc aarch64 pthread_mutexattr_t is 8 bytes");
#endif

/* ---- helpers ---------------------------------------------------------------- */

static void *trylock_fn(void *m) { return (void *)(intptr_t)pthread_mutex_trylock(m); }
static void *unlock_fn(void *m) { return (void *)(intptr_t)pthread_mutex_unlock(m); }

static void init_type(pthread_mutex_t *m, int type, int pshared)
{
    pthread_mutexattr_t a;
    cr_assert_eq(pthread_mutexattr_init(&a), 0);
    cr_assert_eq(pthread_mutexattr_settype(&a, type), 0);
    if (pshared)
        cr_assert_eq(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_mutex_init(m, &a), 0);
    cr_assert_eq(pthread_mutexattr_destroy(&a), 0);
}

/* A holder thread: locks the mutex, publishes, waits for `release`, unlocks. */
struct holder {
    pthread_mutex_t *m;
    int locked;
    int release;
    int unlock_ret;
};

static void *holder_fn(void *p)
{
    struct holder *h = p;
    pthread_mutex_lock(h->m);
    __atomic_store_n(&h->locked, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE))
        dt_sleep_ns(200000);
    h->unlock_ret = pthread_mutex_unlock(h->m);
    return NULL;
}

static void start_holder(pthread_t *t, struct holder *h, pthread_mutex_t *m)
{
    memset(h, 0, sizeof *h);
    h->m = m;
    dt_spawn(t, holder_fn, h);
    cr_assert(dt_wait_int(&h->locked, 1, 10 * DT_S), "holder never locked");
}

static void stop_holder(pthread_t t, struct holder *h)
{
    __atomic_store_n(&h->release, 1, __ATOMIC_RELEASE);
    dt_join(t);
    cr_assert_eq(h->unlock_ret, 0);
}

/* ---- basic behaviour of each kind ---------------------------------------------- */

/* What every mutex does: lock, trylock from elsewhere EBUSY, unlock, trylock. */
static void basic_cycle(pthread_mutex_t *m, const char *what)
{
    cr_assert_eq(pthread_mutex_lock(m), 0, "%s", what);
    cr_assert_eq(dt_trylock_elsewhere(m), EBUSY, "%s", what);
    cr_assert_eq(pthread_mutex_unlock(m), 0, "%s", what);
    cr_assert_eq(dt_trylock_elsewhere(m), 0, "%s", what);
    cr_assert_eq(pthread_mutex_trylock(m), 0, "%s", what);
    cr_assert_eq(dt_trylock_elsewhere(m), EBUSY, "%s", what);
    cr_assert_eq(pthread_mutex_unlock(m), 0, "%s", what);
}

static void expect_errorcheck(pthread_mutex_t *m, const char *what)
{
    basic_cycle(m, what);
    cr_assert_eq(pthread_mutex_unlock(m), EPERM, "%s: unlock of an unlocked errorcheck mutex", what);
    cr_assert_eq(pthread_mutex_lock(m), 0, "%s", what);
    cr_assert_eq(pthread_mutex_lock(m), EDEADLK, "%s: relock", what);
    cr_assert_eq(pthread_mutex_trylock(m), EBUSY, "%s: trylock by the owner", what);
    cr_assert_eq(dt_in_thread(unlock_fn, m), EPERM, "%s: unlock by a non-owner", what);
    cr_assert_eq(dt_trylock_elsewhere(m), EBUSY, "%s: still held after the refused unlock", what);
    cr_assert_eq(pthread_mutex_unlock(m), 0, "%s", what);
    cr_assert_eq(pthread_mutex_unlock(m), EPERM, "%s", what);
}

static void expect_recursive(pthread_mutex_t *m, const char *what)
{
    basic_cycle(m, what);
    cr_assert_eq(pthread_mutex_unlock(m), EPERM, "%s: unlock of an unlocked recursive mutex", what);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(pthread_mutex_lock(m), 0, "%s: depth %d", what, i + 1);
    cr_assert_eq(pthread_mutex_trylock(m), 0, "%s: trylock by the owner counts too", what);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 0);
    cr_assert_eq(pthread_mutex_timedlock(m, &dl), 0, "%s: timedlock by the owner", what);
    /* depth 7 */
    cr_assert_eq(dt_in_thread(unlock_fn, m), EPERM, "%s: unlock by a non-owner", what);
    for (int i = 7; i > 1; i--) {
        cr_assert_eq(pthread_mutex_unlock(m), 0, "%s: depth %d", what, i);
        cr_assert_eq(dt_trylock_elsewhere(m), EBUSY, "%s: released too early, at depth %d", what, i - 1);
    }
    cr_assert_eq(pthread_mutex_unlock(m), 0, "%s", what);
    cr_assert_eq(dt_trylock_elsewhere(m), 0, "%s: still held after the last unlock", what);
    cr_assert_eq(pthread_mutex_unlock(m), EPERM, "%s", what);
}

static void expect_normal(pthread_mutex_t *m, const char *what)
{
    basic_cycle(m, what);
    cr_assert_eq(pthread_mutex_lock(m), 0, "%s", what);
    cr_assert_eq(pthread_mutex_trylock(m), EBUSY, "%s: trylock by the owner", what);
    /* A relock would deadlock (POSIX); a timed one times out instead. */
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 20 * DT_MS);
    cr_assert_eq(pthread_mutex_timedlock(m, &dl), ETIMEDOUT, "%s: timed relock", what);
    dt_assert_not_early(CLOCK_REALTIME, dl, what);
    cr_assert_eq(pthread_mutex_unlock(m), 0, "%s", what);
}

static pthread_mutex_t s_default = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t s_recursive = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static pthread_mutex_t s_errorcheck = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
static pthread_mutex_t s_adaptive = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
static pthread_mutex_t s_zero; /* all zeros, never initialised */

Test(pmutex, static_initializers_behave_as_their_type_without_init, .timeout = 30)
{
    expect_normal(&s_default, "PTHREAD_MUTEX_INITIALIZER");
    expect_recursive(&s_recursive, "PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP");
    expect_errorcheck(&s_errorcheck, "PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP");
    expect_normal(&s_adaptive, "PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP");
    expect_normal(&s_zero, "zero-filled static");
    /* They can be destroyed without ever being initialised, and then
     * initialised again. */
    pthread_mutex_t *all[] = {&s_default, &s_recursive, &s_errorcheck, &s_adaptive, &s_zero};
    for (unsigned i = 0; i < DT_ARRAY_LEN(all); i++) {
        cr_assert_eq(pthread_mutex_destroy(all[i]), 0);
        cr_assert_eq(pthread_mutex_init(all[i], NULL), 0);
        basic_cycle(all[i], "re-initialised");
        cr_assert_eq(pthread_mutex_destroy(all[i]), 0);
    }
}

Test(pmutex, zero_filled_heap_memory_is_a_default_mutex, .timeout = 30)
{
    pthread_mutex_t *m = calloc(1, sizeof *m);
    cr_assert_not_null(m);
    expect_normal(m, "calloc'd");
    cr_assert_eq(pthread_mutex_destroy(m), 0);
    free(m);
}

Test(pmutex, initialised_types, .timeout = 30)
{
    pthread_mutex_t m;
    init_type(&m, PTHREAD_MUTEX_ERRORCHECK, 0);
    expect_errorcheck(&m, "PTHREAD_MUTEX_ERRORCHECK");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    init_type(&m, PTHREAD_MUTEX_RECURSIVE, 0);
    expect_recursive(&m, "PTHREAD_MUTEX_RECURSIVE");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    init_type(&m, PTHREAD_MUTEX_NORMAL, 0);
    expect_normal(&m, "PTHREAD_MUTEX_NORMAL");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    init_type(&m, PTHREAD_MUTEX_DEFAULT, 0);
    expect_normal(&m, "PTHREAD_MUTEX_DEFAULT");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    init_type(&m, PTHREAD_MUTEX_ADAPTIVE_NP, 0);
    expect_normal(&m, "PTHREAD_MUTEX_ADAPTIVE_NP");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    /* The attribute round-trips, and an unknown type is refused. */
    pthread_mutexattr_t a;
    int type = -1;
    cr_assert_eq(pthread_mutexattr_init(&a), 0);
    cr_assert_eq(pthread_mutexattr_gettype(&a, &type), 0);
    cr_assert_eq(type, PTHREAD_MUTEX_DEFAULT);
    cr_assert_eq(pthread_mutexattr_settype(&a, 12345), EINVAL);
    cr_assert_eq(pthread_mutexattr_destroy(&a), 0);
    /* Process-shared variants behave the same within a process. */
    init_type(&m, PTHREAD_MUTEX_ERRORCHECK, 1);
    expect_errorcheck(&m, "pshared errorcheck");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    init_type(&m, PTHREAD_MUTEX_RECURSIVE, 1);
    expect_recursive(&m, "pshared recursive");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
    init_type(&m, PTHREAD_MUTEX_NORMAL, 1);
    expect_normal(&m, "pshared normal");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
}

Test(pmutex, recursive_mutex_held_elsewhere_is_ebusy_for_trylock, .timeout = 30)
{
    pthread_mutex_t m = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
    pthread_t t;
    struct holder h;
    start_holder(&t, &h, &m);
    cr_assert_eq(pthread_mutex_trylock(&m), EBUSY);
    cr_assert_eq(pthread_mutex_unlock(&m), EPERM);
    struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 30 * DT_MS);
    cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &dl), ETIMEDOUT);
    dt_assert_not_early(CLOCK_MONOTONIC, dl, "recursive clocklock");
    stop_holder(t, &h);
    cr_assert_eq(pthread_mutex_trylock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
}

/* ---- timed locking ------------------------------------------------------------- */

static void expect_timeout_held_elsewhere(int type)
{
    pthread_mutex_t m;
    init_type(&m, type, 0);
    pthread_t t;
    struct holder h;
    start_holder(&t, &h, &m);

    struct timespec dl = dt_deadline(CLOCK_REALTIME, 50 * DT_MS);
    cr_assert_eq(pthread_mutex_timedlock(&m, &dl), ETIMEDOUT, "type %d", type);
    dt_assert_not_early(CLOCK_REALTIME, dl, "timedlock");

    clockid_t clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    for (unsigned i = 0; i < 2; i++) {
        dl = dt_deadline(clocks[i], 50 * DT_MS);
        cr_assert_eq(pthread_mutex_clocklock(&m, clocks[i], &dl), ETIMEDOUT, "type %d clock %d", type,
                     (int)clocks[i]);
        dt_assert_not_early(clocks[i], dl, "clocklock");
    }
    /* A deadline already past: ETIMEDOUT at once. */
    dl = dt_deadline(CLOCK_MONOTONIC, -DT_S);
    cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &dl), ETIMEDOUT);
    dl.tv_sec = 0;
    dl.tv_nsec = 0;
    cr_assert_eq(pthread_mutex_timedlock(&m, &dl), ETIMEDOUT);

    /* tv_nsec out of range when the call would block: EINVAL. */
    dl = dt_bad_nsec(CLOCK_REALTIME);
    cr_assert_eq(pthread_mutex_timedlock(&m, &dl), EINVAL, "type %d", type);
    dl = dt_bad_nsec(CLOCK_MONOTONIC);
    cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &dl), EINVAL, "type %d", type);
    dl.tv_nsec = -1;
    cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &dl), EINVAL, "type %d", type);

    /* Released during the wait: the timed lock succeeds. */
    __atomic_store_n(&h.release, 1, __ATOMIC_RELEASE);
    dl = dt_deadline(CLOCK_MONOTONIC, 10 * DT_S);
    cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &dl), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    dt_join(t);
    cr_assert_eq(h.unlock_ret, 0);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
}

Test(pmutex, timedlock_and_clocklock_time_out_not_early, .timeout = 30)
{
    expect_timeout_held_elsewhere(PTHREAD_MUTEX_NORMAL);
    expect_timeout_held_elsewhere(PTHREAD_MUTEX_ERRORCHECK);
    expect_timeout_held_elsewhere(PTHREAD_MUTEX_RECURSIVE);
    expect_timeout_held_elsewhere(PTHREAD_MUTEX_ADAPTIVE_NP);
}

/* glibc checks tv_nsec only on the path that waits: a free mutex is taken
 * (POSIX: "The validity of the abstime parameter need not be checked if the
 * mutex can be locked immediately").  The clock id, however, is checked first
 * by pthread_mutex_clocklock: EINVAL even for a free mutex. */
Test(pmutex, bad_deadline_on_a_free_mutex_locks_it, .timeout = 30)
{
    int types[] = {PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_RECURSIVE,
                   PTHREAD_MUTEX_ADAPTIVE_NP};
    for (unsigned i = 0; i < DT_ARRAY_LEN(types); i++) {
        pthread_mutex_t m;
        init_type(&m, types[i], 0);
        struct timespec dl = dt_bad_nsec(CLOCK_REALTIME);
        cr_assert_eq(pthread_mutex_timedlock(&m, &dl), 0, "type %d", types[i]);
        cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY);
        cr_assert_eq(pthread_mutex_unlock(&m), 0);
        dl = dt_bad_nsec(CLOCK_MONOTONIC);
        cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &dl), 0, "type %d", types[i]);
        cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY);
        cr_assert_eq(pthread_mutex_unlock(&m), 0);

        dl = dt_deadline(CLOCK_MONOTONIC, DT_S);
        cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_PROCESS_CPUTIME_ID, &dl), EINVAL, "type %d",
                     types[i]);
        cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC_RAW, &dl), EINVAL);
        cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_THREAD_CPUTIME_ID, &dl), EINVAL);
        cr_assert_eq(pthread_mutex_clocklock(&m, (clockid_t)12345, &dl), EINVAL);
        cr_assert_eq(dt_trylock_elsewhere(&m), 0, "a refused clocklock left the mutex locked");
        cr_assert_eq(pthread_mutex_destroy(&m), 0);
    }
}

/* The owner of an errorcheck mutex gets EDEADLK from a timed relock, with a
 * bad tv_nsec too; the owner of a recursive one takes another level. */
Test(pmutex, timed_relock_by_the_owner, .timeout = 30)
{
    pthread_mutex_t m;
    init_type(&m, PTHREAD_MUTEX_ERRORCHECK, 0);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, DT_S);
    cr_assert_eq(pthread_mutex_timedlock(&m, &dl), EDEADLK);
    dl = dt_bad_nsec(CLOCK_REALTIME);
    cr_assert_eq(pthread_mutex_timedlock(&m, &dl), EDEADLK);
    dl = dt_deadline(CLOCK_MONOTONIC, DT_S);
    cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &dl), EDEADLK);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);

    init_type(&m, PTHREAD_MUTEX_RECURSIVE, 0);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    dl = dt_bad_nsec(CLOCK_REALTIME);
    cr_assert_eq(pthread_mutex_timedlock(&m, &dl), 0);
    dl = dt_deadline(CLOCK_MONOTONIC, DT_S);
    cr_assert_eq(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &dl), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(dt_trylock_elsewhere(&m), 0);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
}

/* ---- mutual exclusion ------------------------------------------------------------- */

#define MX_THREADS 16
#define MX_ITERS 20000

struct mx {
    pthread_mutex_t *m;
    long counter; /* plain: only the mutex protects it */
    int inside;
    int overlap;
    int errors;
    int gate;
    int recursive;
};

static void *mx_worker(void *p)
{
    struct mx *s = p;
    dt_gate_pass(&s->gate, MX_THREADS);
    for (int i = 0; i < MX_ITERS; i++) {
        int e = (i & 7) == 7 ? pthread_mutex_trylock(s->m) : pthread_mutex_lock(s->m);
        if (e == EBUSY) {
            e = pthread_mutex_lock(s->m);
        }
        if (e != 0) {
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (s->recursive && (i & 3) == 0 && pthread_mutex_lock(s->m) != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
        if (__atomic_add_fetch(&s->inside, 1, __ATOMIC_RELAXED) != 1)
            __atomic_store_n(&s->overlap, 1, __ATOMIC_RELAXED);
        long v = s->counter;
        if ((i & 255) == 0)
            sched_yield(); /* widen the window now and then */
        s->counter = v + 1;
        __atomic_sub_fetch(&s->inside, 1, __ATOMIC_RELAXED);
        if (s->recursive && (i & 3) == 0 && pthread_mutex_unlock(s->m) != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
        if (pthread_mutex_unlock(s->m) != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void mutual_exclusion(int type, int pshared)
{
    pthread_mutex_t m;
    struct mx s;
    memset(&s, 0, sizeof s);
    init_type(&m, type, pshared);
    s.m = &m;
    s.recursive = type == PTHREAD_MUTEX_RECURSIVE;
    pthread_t t[MX_THREADS];
    for (int i = 0; i < MX_THREADS; i++)
        dt_spawn(&t[i], mx_worker, &s);
    for (int i = 0; i < MX_THREADS; i++)
        dt_join(t[i]);
    cr_assert_eq(s.errors, 0, "type %d: %d failed calls", type, s.errors);
    cr_assert_eq(s.overlap, 0, "type %d: two threads inside at once", type);
    cr_assert_eq(s.counter, (long)MX_THREADS * MX_ITERS, "type %d: lost updates", type);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
}

Test(pmutex, mutual_exclusion_16_threads_normal_and_adaptive, .timeout = 60)
{
    mutual_exclusion(PTHREAD_MUTEX_NORMAL, 0);
    mutual_exclusion(PTHREAD_MUTEX_ADAPTIVE_NP, 0);
}

Test(pmutex, mutual_exclusion_16_threads_errorcheck_recursive_pshared, .timeout = 60)
{
    mutual_exclusion(PTHREAD_MUTEX_ERRORCHECK, 0);
    mutual_exclusion(PTHREAD_MUTEX_RECURSIVE, 0);
    mutual_exclusion(PTHREAD_MUTEX_NORMAL, 1);
}

/* ---- process-shared ---------------------------------------------------------------- */

#define PS_ITERS 20000

struct pshared {
    pthread_mutex_t m;
    long counter;
    int inside;
    int overlap;
};

static int pshared_child(void *p)
{
    struct pshared *s = p;
    for (int i = 0; i < PS_ITERS; i++) {
        DT_CHECK(pthread_mutex_lock(&s->m) == 0, 2);
        if (__atomic_add_fetch(&s->inside, 1, __ATOMIC_RELAXED) != 1)
            s->overlap = 1;
        s->counter++;
        __atomic_sub_fetch(&s->inside, 1, __ATOMIC_RELAXED);
        DT_CHECK(pthread_mutex_unlock(&s->m) == 0, 3);
    }
    return 0;
}

static void pshared_across_fork(int type)
{
    struct pshared *s = dt_shared_alloc(sizeof *s);
    init_type(&s->m, type, 1);
    pid_t pid[2];
    for (int i = 0; i < 2; i++)
        pid[i] = dt_fork(pshared_child, s);
    cr_assert_eq(pshared_child(s), 0);
    for (int i = 0; i < 2; i++)
        dt_wait_child_named(pid[i], "pshared mutex child");
    cr_assert_eq(s->overlap, 0);
    cr_assert_eq(s->counter, 3L * PS_ITERS);
    cr_assert_eq(pthread_mutex_destroy(&s->m), 0);
    dt_shared_free(s, sizeof *s);
}

Test(pmutex, process_shared_mutex_across_fork, .timeout = 60)
{
    pshared_across_fork(PTHREAD_MUTEX_NORMAL);
    pshared_across_fork(PTHREAD_MUTEX_ERRORCHECK);
    pshared_across_fork(PTHREAD_MUTEX_RECURSIVE);
}

/* A child blocks on a pshared mutex the parent holds; the parent's unlock
 * wakes it; while the child holds it the parent's trylock is EBUSY. */
struct handoff {
    pthread_mutex_t m;
    int child_locked;
    int child_release;
};

static int handoff_child(void *p)
{
    struct handoff *s = p;
    DT_CHECK(pthread_mutex_trylock(&s->m) == EBUSY, 2);
    DT_CHECK(pthread_mutex_lock(&s->m) == 0, 3);
    __atomic_store_n(&s->child_locked, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&s->child_release, __ATOMIC_ACQUIRE))
        dt_sleep_ns(200000);
    DT_CHECK(pthread_mutex_unlock(&s->m) == 0, 4);
    return 0;
}

Test(pmutex, process_shared_mutex_blocks_and_wakes_across_processes, .timeout = 30)
{
    struct handoff *s = dt_shared_alloc(sizeof *s);
    init_type(&s->m, PTHREAD_MUTEX_ERRORCHECK, 1);
    cr_assert_eq(pthread_mutex_lock(&s->m), 0);
    pid_t pid = dt_fork(handoff_child, s);
    dt_sleep_ns(50 * DT_MS);
    cr_assert_eq(__atomic_load_n(&s->child_locked, __ATOMIC_ACQUIRE), 0);
    cr_assert_eq(pthread_mutex_unlock(&s->m), 0);
    cr_assert(dt_wait_int(&s->child_locked, 1, 10 * DT_S), "child never got the mutex");
    cr_assert_eq(pthread_mutex_trylock(&s->m), EBUSY);
    cr_assert_eq(pthread_mutex_unlock(&s->m), EPERM, "the child owns it");
    __atomic_store_n(&s->child_release, 1, __ATOMIC_RELEASE);
    dt_wait_child(pid);
    cr_assert_eq(pthread_mutex_trylock(&s->m), 0);
    cr_assert_eq(pthread_mutex_unlock(&s->m), 0);
    cr_assert_eq(pthread_mutex_destroy(&s->m), 0);
    dt_shared_free(s, sizeof *s);
}

/* ---- PI and robust mutexes (glibc's own code under the layer) ------------------------- */

Test(pmutex, priority_inheritance_mutex_works, .timeout = 30)
{
    pthread_mutexattr_t a;
    pthread_mutex_t m;
    int proto = -1;
    cr_assert_eq(pthread_mutexattr_init(&a), 0);
    cr_assert_eq(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT), 0);
    cr_assert_eq(pthread_mutexattr_getprotocol(&a, &proto), 0);
    cr_assert_eq(proto, PTHREAD_PRIO_INHERIT);
    cr_assert_eq(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK), 0);
    cr_assert_eq(pthread_mutex_init(&m, &a), 0);
    cr_assert_eq(pthread_mutexattr_destroy(&a), 0);

    cr_assert_eq(pthread_mutex_lock(&m), 0);
    cr_assert_eq(pthread_mutex_lock(&m), EDEADLK);
    /* glibc: the owner's trylock of an errorcheck PI mutex is EDEADLK (of a
     * plain errorcheck mutex, EBUSY) */
    cr_assert_eq(pthread_mutex_trylock(&m), EDEADLK);
    cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY);
    cr_assert_eq(dt_in_thread(unlock_fn, &m), EPERM);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), EPERM);
    cr_assert_eq(pthread_mutex_trylock(&m), 0);
    cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);

    /* Contended: a holder thread, and a timed lock that times out, then succeeds. */
    pthread_t t;
    struct holder h;
    start_holder(&t, &h, &m);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 30 * DT_MS);
    cr_assert_eq(pthread_mutex_timedlock(&m, &dl), ETIMEDOUT);
    dt_assert_not_early(CLOCK_REALTIME, dl, "PI timedlock");
    __atomic_store_n(&h.release, 1, __ATOMIC_RELEASE);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    dt_join(t);
    cr_assert_eq(h.unlock_ret, 0);

    /* And mutual exclusion under contention. */
    struct mx s;
    memset(&s, 0, sizeof s);
    s.m = &m;
    pthread_t w[MX_THREADS];
    for (int i = 0; i < MX_THREADS; i++)
        dt_spawn(&w[i], mx_worker, &s);
    for (int i = 0; i < MX_THREADS; i++)
        dt_join(w[i]);
    cr_assert_eq(s.errors, 0);
    cr_assert_eq(s.overlap, 0);
    cr_assert_eq(s.counter, (long)MX_THREADS * MX_ITERS);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
}

static void init_robust(pthread_mutex_t *m, int pshared)
{
    pthread_mutexattr_t a;
    int r = -1;
    cr_assert_eq(pthread_mutexattr_init(&a), 0);
    cr_assert_eq(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST), 0);
    cr_assert_eq(pthread_mutexattr_getrobust(&a, &r), 0);
    cr_assert_eq(r, PTHREAD_MUTEX_ROBUST);
    if (pshared)
        cr_assert_eq(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_mutex_init(m, &a), 0);
    cr_assert_eq(pthread_mutexattr_destroy(&a), 0);
}

static void *lock_and_die(void *m)
{
    pthread_mutex_lock(m);
    return NULL; /* exits holding it */
}

Test(pmutex, robust_mutex_owner_thread_died, .timeout = 30)
{
    pthread_mutex_t m;
    init_robust(&m, 0);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_consistent(&m), EINVAL, "consistent on a consistent mutex");

    /* Owner dies; the next lock gets EOWNERDEAD and holds it; consistent
     * repairs it. */
    pthread_t t;
    dt_spawn(&t, lock_and_die, &m);
    dt_join(t);
    cr_assert_eq(pthread_mutex_lock(&m), EOWNERDEAD);
    cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY, "EOWNERDEAD returns with the mutex held");
    cr_assert_eq(pthread_mutex_consistent(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);

    /* trylock sees EOWNERDEAD too; unlocking without consistent makes the
     * mutex unrecoverable. */
    dt_spawn(&t, lock_and_die, &m);
    dt_join(t);
    cr_assert_eq(pthread_mutex_trylock(&m), EOWNERDEAD);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_lock(&m), ENOTRECOVERABLE);
    cr_assert_eq(pthread_mutex_trylock(&m), ENOTRECOVERABLE);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);

    /* Timed lock of a dead owner's mutex. */
    init_robust(&m, 0);
    dt_spawn(&t, lock_and_die, &m);
    dt_join(t);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, DT_S);
    cr_assert_eq(pthread_mutex_timedlock(&m, &dl), EOWNERDEAD);
    cr_assert_eq(pthread_mutex_consistent(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
}

static void *lock_twice_and_die(void *m)
{
    pthread_mutex_lock(m);
    pthread_mutex_lock(m);
    return NULL; /* exits holding two levels */
}

/* A robust recursive mutex answers as glibc's: levels count, the last
 * unlock releases it, one unlock too many is EPERM; its owner dying two
 * levels deep leaves EOWNERDEAD and one level to the next owner; an inner
 * unlock of an inconsistent one is ENOTRECOVERABLE and the last makes it
 * not recoverable. */
Test(pmutex, robust_recursive_mutex, .timeout = 30)
{
    for (int pshared = 0; pshared < 2; pshared++) {
        pthread_mutexattr_t a;
        pthread_mutex_t m;
        cr_assert_eq(pthread_mutexattr_init(&a), 0);
        cr_assert_eq(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST), 0);
        cr_assert_eq(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE), 0);
        if (pshared)
            cr_assert_eq(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED), 0);
        cr_assert_eq(pthread_mutex_init(&m, &a), 0);
        cr_assert_eq(pthread_mutexattr_destroy(&a), 0);
        cr_assert_eq(pthread_mutex_lock(&m), 0);
        cr_assert_eq(pthread_mutex_lock(&m), 0);
        cr_assert_eq(pthread_mutex_trylock(&m), 0);
        cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY);
        cr_assert_eq(pthread_mutex_unlock(&m), 0);
        cr_assert_eq(pthread_mutex_unlock(&m), 0);
        cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY, "one level left");
        cr_assert_eq(pthread_mutex_unlock(&m), 0);
        cr_assert_eq(pthread_mutex_unlock(&m), EPERM);
        cr_assert_eq(dt_trylock_elsewhere(&m), 0);

        pthread_t t;
        dt_spawn(&t, lock_twice_and_die, &m);
        dt_join(t);
        cr_assert_eq(pthread_mutex_lock(&m), EOWNERDEAD);
        cr_assert_eq(pthread_mutex_consistent(&m), 0);
        cr_assert_eq(pthread_mutex_unlock(&m), 0, "held once after EOWNERDEAD");
        cr_assert_eq(dt_trylock_elsewhere(&m), 0);

        dt_spawn(&t, lock_twice_and_die, &m);
        dt_join(t);
        cr_assert_eq(pthread_mutex_trylock(&m), EOWNERDEAD);
        cr_assert_eq(pthread_mutex_lock(&m), 0);
        cr_assert_eq(pthread_mutex_unlock(&m), ENOTRECOVERABLE, "an inner unlock of an inconsistent mutex");
        cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY);
        cr_assert_eq(pthread_mutex_unlock(&m), 0);
        cr_assert_eq(pthread_mutex_lock(&m), ENOTRECOVERABLE);
        cr_assert_eq(pthread_mutex_destroy(&m), 0);
    }
}

static int lock_and_exit(void *m)
{
    return pthread_mutex_lock(m) == 0 ? 0 : 2;
}

struct robust_wait {
    pthread_mutex_t m;
    int child_locked;
};

static int lock_signal_and_exit(void *p)
{
    struct robust_wait *s = p;
    DT_CHECK(pthread_mutex_lock(&s->m) == 0, 2);
    __atomic_store_n(&s->child_locked, 1, __ATOMIC_RELEASE);
    dt_sleep_ns(100 * DT_MS);
    return 0; /* exits holding it, while the parent waits for it */
}

Test(pmutex, robust_pshared_mutex_owner_process_died, .timeout = 30)
{
    struct robust_wait *s = dt_shared_alloc(sizeof *s);
    init_robust(&s->m, 1);
    dt_wait_child(dt_fork(lock_and_exit, &s->m));
    cr_assert_eq(pthread_mutex_lock(&s->m), EOWNERDEAD);
    cr_assert_eq(pthread_mutex_consistent(&s->m), 0);
    cr_assert_eq(pthread_mutex_unlock(&s->m), 0);

    /* The parent is blocked in lock when the owner process dies. */
    pid_t pid = dt_fork(lock_signal_and_exit, s);
    cr_assert(dt_wait_int(&s->child_locked, 1, 10 * DT_S));
    cr_assert_eq(pthread_mutex_lock(&s->m), EOWNERDEAD);
    cr_assert_eq(pthread_mutex_consistent(&s->m), 0);
    cr_assert_eq(pthread_mutex_unlock(&s->m), 0);
    dt_wait_child(pid);
    cr_assert_eq(pthread_mutex_trylock(&s->m), 0);
    cr_assert_eq(pthread_mutex_unlock(&s->m), 0);
    cr_assert_eq(pthread_mutex_destroy(&s->m), 0);
    dt_shared_free(s, sizeof *s);
}

Test(pmutex, consistent_on_a_non_robust_mutex_is_einval, .timeout = 30)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    cr_assert_eq(pthread_mutex_consistent(&m), EINVAL);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    cr_assert_eq(pthread_mutex_consistent(&m), EINVAL);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
}

/* ---- destroy ---------------------------------------------------------------------- */

/* glibc's pthread_mutex_destroy refuses a locked mutex with EBUSY and
 * leaves it usable (POSIX calls destroying a locked mutex undefined; glibc
 * checks __nusers). */
Test(pmutex, destroy_of_a_locked_mutex_is_ebusy, .timeout = 30)
{
    int types[] = {PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_RECURSIVE,
                   PTHREAD_MUTEX_ADAPTIVE_NP};
    for (unsigned i = 0; i < DT_ARRAY_LEN(types); i++) {
        pthread_mutex_t m;
        init_type(&m, types[i], 0);
        cr_assert_eq(pthread_mutex_lock(&m), 0);
        cr_assert_eq(pthread_mutex_destroy(&m), EBUSY, "type %d", types[i]);
        cr_assert_eq(dt_trylock_elsewhere(&m), EBUSY, "type %d: refused destroy unlocked it", types[i]);
        cr_assert_eq(pthread_mutex_unlock(&m), 0);
        cr_assert_eq(pthread_mutex_destroy(&m), 0);
    }
    /* Locked by another thread as well. */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_t t;
    struct holder h;
    start_holder(&t, &h, &m);
    cr_assert_eq(pthread_mutex_destroy(&m), EBUSY);
    stop_holder(t, &h);
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
}

/* ---- fork ---------------------------------------------------------------------------- */

struct forked {
    pthread_mutex_t mine;   /* locked by the forking thread */
    pthread_mutex_t theirs; /* locked by another thread of the parent */
    pthread_mutex_t free_;  /* unlocked */
};

static int forked_child(void *p)
{
    struct forked *s = p;
    /* The forking thread's lock is the child thread's: still held... */
    DT_CHECK(pthread_mutex_trylock(&s->mine) == EBUSY, 2);
    /* ...and it can release it and use it. */
    DT_CHECK(pthread_mutex_unlock(&s->mine) == 0, 3);
    DT_CHECK(pthread_mutex_lock(&s->mine) == 0, 4);
    DT_CHECK(pthread_mutex_unlock(&s->mine) == 0, 5);
    /* The other thread does not exist here: its mutex stays locked. */
    DT_CHECK(pthread_mutex_trylock(&s->theirs) == EBUSY, 6);
    struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 20 * DT_MS);
    DT_CHECK(pthread_mutex_clocklock(&s->theirs, CLOCK_MONOTONIC, &dl) == ETIMEDOUT, 7);
    DT_CHECK(dt_now(CLOCK_MONOTONIC) >= dt_ts_ns(&dl), 8);
    /* Unlocked ones work, also from a new thread of the child. */
    DT_CHECK(pthread_mutex_lock(&s->free_) == 0, 9);
    pthread_t t;
    DT_CHECK(pthread_create(&t, NULL, trylock_fn, &s->free_) == 0, 10);
    void *r;
    DT_CHECK(pthread_join(t, &r) == 0 && (intptr_t)r == EBUSY, 11);
    DT_CHECK(pthread_mutex_unlock(&s->free_) == 0, 12);
    DT_CHECK(pthread_create(&t, NULL, dt_trylock_release_fn, &s->free_) == 0, 13);
    DT_CHECK(pthread_join(t, &r) == 0 && (intptr_t)r == 0, 14);
    return 0;
}

Test(pmutex, mutexes_in_a_forked_child, .timeout = 30)
{
    struct forked s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
    pthread_t t;
    struct holder h;
    start_holder(&t, &h, &s.theirs);
    cr_assert_eq(pthread_mutex_lock(&s.mine), 0);
    dt_wait_child_named(dt_fork(forked_child, &s), "mutex after fork");
    /* The parent's state is untouched by the child. */
    cr_assert_eq(dt_trylock_elsewhere(&s.mine), EBUSY);
    cr_assert_eq(pthread_mutex_unlock(&s.mine), 0);
    stop_holder(t, &h);
    cr_assert_eq(dt_trylock_elsewhere(&s.theirs), 0);
}

/* Errorcheck and recursive mutexes held by another thread of the parent
 * stay held in the child (trylock EBUSY). */
static int forked_typed_child(void *p)
{
    pthread_mutex_t *m = p;
    DT_CHECK(pthread_mutex_trylock(&m[0]) == EBUSY, 2);
    DT_CHECK(pthread_mutex_trylock(&m[1]) == EBUSY, 3);
    struct timespec dl = dt_deadline(CLOCK_REALTIME, 20 * DT_MS);
    DT_CHECK(pthread_mutex_timedlock(&m[0], &dl) == ETIMEDOUT, 4);
    DT_CHECK(pthread_mutex_timedlock(&m[1], &dl) == ETIMEDOUT, 5);
    return 0;
}

struct two_holder {
    pthread_mutex_t *m;
    int locked;
    int release;
};

static void *two_holder_fn(void *p)
{
    struct two_holder *h = p;
    pthread_mutex_lock(&h->m[0]);
    pthread_mutex_lock(&h->m[1]);
    __atomic_store_n(&h->locked, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE))
        dt_sleep_ns(200000);
    pthread_mutex_unlock(&h->m[1]);
    pthread_mutex_unlock(&h->m[0]);
    return NULL;
}

Test(pmutex, typed_mutexes_held_by_another_thread_stay_held_in_the_child, .timeout = 30)
{
    pthread_mutex_t m[2] = {PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP, PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP};
    struct two_holder h = {m, 0, 0};
    pthread_t t;
    dt_spawn(&t, two_holder_fn, &h);
    cr_assert(dt_wait_int(&h.locked, 1, 10 * DT_S));
    dt_wait_child_named(dt_fork(forked_typed_child, m), "typed mutexes after fork");
    __atomic_store_n(&h.release, 1, __ATOMIC_RELEASE);
    dt_join(t);
    cr_assert_eq(pthread_mutex_trylock(&m[0]), 0);
    cr_assert_eq(pthread_mutex_unlock(&m[0]), 0);
}

/* ---- signals ---------------------------------------------------------------------------- */

struct blocked_lock {
    pthread_mutex_t *m;
    int kind;
    int tid;
    int ret;
    int returned;
};

static void *blocked_lock_fn(void *p)
{
    struct blocked_lock *b = p;
    struct timespec rt = dt_deadline(CLOCK_REALTIME, 20 * DT_S);
    struct timespec mono = dt_deadline(CLOCK_MONOTONIC, 20 * DT_S);
    dt_publish_tid(&b->tid);
    int r = b->kind == 0   ? pthread_mutex_lock(b->m)
            : b->kind == 1 ? pthread_mutex_timedlock(b->m, &rt)
                           : pthread_mutex_clocklock(b->m, CLOCK_MONOTONIC, &mono);
    b->ret = r;
    __atomic_store_n(&b->returned, 1, __ATOMIC_RELEASE);
    if (r == 0)
        pthread_mutex_unlock(b->m);
    return NULL;
}

/* POSIX pthread_mutex_lock: "These functions shall not return an error code
 * of [EINTR]"; a handler (without SA_RESTART) interrupting the wait must not
 * make the lock return. */
Test(pmutex, blocked_lock_is_not_interrupted_by_signals, .timeout = 30)
{
    int types[] = {PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_RECURSIVE,
                   PTHREAD_MUTEX_ADAPTIVE_NP};
    for (unsigned i = 0; i < DT_ARRAY_LEN(types); i++)
        for (int kind = 0; kind < 3; kind++) {
            pthread_mutex_t m;
            init_type(&m, types[i], 0);
            cr_assert_eq(pthread_mutex_lock(&m), 0);
            struct blocked_lock b = {&m, kind, 0, -1, 0};
            pthread_t t;
            dt_spawn(&t, blocked_lock_fn, &b);
            dt_wait_blocked(&b.tid, "blocked lock");
            cr_assert_geq(dt_pummel(t, 10, 2 * DT_MS), 1, "no handler ran");
            dt_sleep_ns(5 * DT_MS);
            cr_assert_eq(__atomic_load_n(&b.returned, __ATOMIC_ACQUIRE), 0,
                         "type %d kind %d: lock returned %d on a signal", types[i], kind, b.ret);
            cr_assert_eq(pthread_mutex_unlock(&m), 0);
            dt_join(t);
            dt_pummel_end();
            cr_assert_eq(b.ret, 0, "type %d kind %d", types[i], kind);
            cr_assert_eq(pthread_mutex_destroy(&m), 0);
        }
}

/* A thread that dies holding robust mutexes of both kinds the layer has
 * (its own, and a recursive one glibc keeps), locked and unlocked in an
 * interleaved order: one robust list (glibc's) holds them all, and every
 * one is EOWNERDEAD for the next locker. */
struct two_kinds {
    pthread_mutex_t a, b, c;
};

static void *lock_three_and_die(void *p)
{
    struct two_kinds *k = p;
    pthread_mutex_t extra;
    init_robust(&extra, 0);
    pthread_mutex_lock(&k->a);
    pthread_mutex_lock(&extra);
    pthread_mutex_lock(&k->b);
    pthread_mutex_lock(&k->c);
    pthread_mutex_unlock(&extra); /* unlinked from the middle of the list */
    pthread_mutex_destroy(&extra);
    return NULL; /* exits holding a, b and c */
}

Test(pmutex, robust_mutexes_of_both_kinds_die_together, .timeout = 30)
{
    struct two_kinds k;
    init_robust(&k.a, 0);
    pthread_mutexattr_t at;
    cr_assert_eq(pthread_mutexattr_init(&at), 0);
    cr_assert_eq(pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST), 0);
    cr_assert_eq(pthread_mutexattr_settype(&at, PTHREAD_MUTEX_RECURSIVE), 0);
    cr_assert_eq(pthread_mutex_init(&k.b, &at), 0);
    cr_assert_eq(pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ERRORCHECK), 0);
    cr_assert_eq(pthread_mutex_init(&k.c, &at), 0);
    cr_assert_eq(pthread_mutexattr_destroy(&at), 0);
    pthread_t t;
    dt_spawn(&t, lock_three_and_die, &k);
    dt_join(t);
    pthread_mutex_t *all[] = {&k.a, &k.b, &k.c};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(pthread_mutex_lock(all[i]), EOWNERDEAD, "mutex %d", i);
        cr_assert_eq(pthread_mutex_consistent(all[i]), 0);
    }
    /* errorcheck: relock and trylock by the owner are EDEADLK */
    cr_assert_eq(pthread_mutex_trylock(&k.c), EDEADLK);
    for (int i = 2; i >= 0; i--) {
        cr_assert_eq(pthread_mutex_unlock(all[i]), 0);
        cr_assert_eq(pthread_mutex_destroy(all[i]), 0);
    }
}

/* The owner's trylock of a normal robust mutex is EBUSY (glibc's answer),
 * of an errorcheck one EDEADLK; an unlock by a thread that does not hold
 * either is EPERM. */
static void *unlock_elsewhere(void *m)
{
    return (void *)(intptr_t)pthread_mutex_unlock(m);
}

Test(pmutex, robust_mutex_owner_and_stranger_answers, .timeout = 30)
{
    pthread_mutex_t m;
    init_robust(&m, 0);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    cr_assert_eq(pthread_mutex_trylock(&m), EBUSY);
    pthread_t t;
    dt_spawn(&t, unlock_elsewhere, &m);
    void *r;
    cr_assert_eq(pthread_join(t, &r), 0);
    cr_assert_eq((int)(intptr_t)r, EPERM);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), EPERM, "unlock of a free robust mutex");
    cr_assert_eq(pthread_mutex_destroy(&m), 0);
}

/* After pthread_mutex_destroy the kind is -1 (glibc writes it); a later lock
 * is EINVAL, for a recursive robust mutex as for a normal one (both the
 * layer's own since KS_ROBUST_RECURSIVE; glibc's without the layer).  The
 * layer once read -1 as its own robust kind and linked the destroyed object
 * onto the thread's robust list. */
Test(pmutex, lock_after_destroy_of_a_robust_mutex_is_einval, .timeout = 30)
{
    for (int rec = 0; rec < 2; rec++) {
        pthread_mutexattr_t a;
        pthread_mutex_t m;
        cr_assert_eq(pthread_mutexattr_init(&a), 0);
        cr_assert_eq(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST), 0);
        if (rec)
            cr_assert_eq(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE), 0);
        cr_assert_eq(pthread_mutex_init(&m, &a), 0);
        cr_assert_eq(pthread_mutex_destroy(&m), 0);
        cr_assert_eq(pthread_mutex_lock(&m), EINVAL, "%s", rec ? "recursive" : "normal");
        cr_assert_eq(pthread_mutex_init(&m, &a), 0, "initialised again");
        cr_assert_eq(pthread_mutex_lock(&m), 0);
        cr_assert_eq(pthread_mutex_unlock(&m), 0);
        cr_assert_eq(pthread_mutex_destroy(&m), 0);
        cr_assert_eq(pthread_mutexattr_destroy(&a), 0);
    }
}
