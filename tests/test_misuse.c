/* tests/test_misuse.c - every public function called the way a careless
 * user calls it: NULL objects and out-pointers, negative and past deadlines,
 * unknown flags, zero and huge sizes and lengths, over-release, double
 * destroy (where the object is not freed by it), use of closed objects.
 * Each call must return the error its header documents, must not crash,
 * must not write an out-pointer it refused, and the object must still work
 * afterwards.  Leaks are left to LeakSanitizer (`make asan`).
 *
 * Calls the headers leave undefined are not made: a second destroy of an
 * object that destroy frees (queue, pool, ring and cache from create), calls
 * on a freed object.
 *
 * One test per primitive, so that a failure names the primitive. */
#include "helpers.h"

#include <limits.h>

#define BAD_FLAGS_N 5
/* 2u is KS_RWLOCK_PREFER_READER, valid for ks_rwlock_init: 8u is unknown everywhere. */
static const unsigned bad_flags[BAD_FLAGS_N] = {8u, 0x80u, 0x80000000u, ~0u, KS_SHARED | 4u};
static const int64_t bad_deadlines[] = {-1, -2, INT64_MIN, -KS_NSEC_PER_SEC};
#define NBAD_DL (sizeof bad_deadlines / sizeof bad_deadlines[0])
#define SENT ((void *)(uintptr_t)0x5e5e5e5e)

/* ---- mutex, rmutex, cond, once, time, futex: the headers as written ---------------------- */

Test(misuse, mutex, .timeout = 30)
{
    cr_assert_eq(ks_mutex_init(NULL, 0), EINVAL);
    ks_mutex_t m = KS_MUTEX_INIT;
    for (int i = 0; i < BAD_FLAGS_N; i++)
        cr_assert_eq(ks_mutex_init(&m, bad_flags[i]), EINVAL, "flags %#x", bad_flags[i]);
    cr_assert_eq(ks_mutex_lock(NULL), EINVAL);
    cr_assert_eq(ks_mutex_trylock(NULL), EINVAL);
    cr_assert_eq(ks_mutex_timedlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_mutex_unlock(NULL), EINVAL);
    cr_assert_eq(ks_mutex_destroy(NULL), EINVAL);
    cr_assert_eq(ks_mutex_unlock(&m), EPERM, "unlock of an unlocked mutex");
    for (unsigned i = 0; i < NBAD_DL; i++)
        cr_assert_eq(ks_mutex_timedlock(&m, bad_deadlines[i]), EINVAL);
    cr_assert_eq(m.state, 0u, "a refused call changed the mutex");
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_trylock(&m), EBUSY);
    cr_assert_eq(ks_mutex_timedlock(&m, 0), ETIMEDOUT);
    cr_assert_eq(ks_mutex_timedlock(&m, ks_now()), ETIMEDOUT);
    cr_assert_eq(ks_mutex_destroy(&m), EBUSY);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), EPERM, "over-release");
    cr_assert_eq(ks_mutex_timedlock(&m, KS_FOREVER), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
    cr_assert_eq(ks_mutex_destroy(&m), 0, "second destroy");
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
}

struct rm_other {
    ks_rmutex_t *r;
    int unlock, trylock, timedlock;
};

static void *rm_other_main(void *p)
{
    struct rm_other *o = p;
    o->unlock = ks_rmutex_unlock(o->r);
    o->trylock = ks_rmutex_trylock(o->r);
    o->timedlock = ks_rmutex_timedlock(o->r, 0);
    return NULL;
}

Test(misuse, rmutex, .timeout = 30)
{
    cr_assert_eq(ks_rmutex_init(NULL, 0), EINVAL);
    ks_rmutex_t r = KS_RMUTEX_INIT;
    for (int i = 0; i < BAD_FLAGS_N; i++)
        cr_assert_eq(ks_rmutex_init(&r, bad_flags[i]), EINVAL, "flags %#x", bad_flags[i]);
    cr_assert_eq(ks_rmutex_lock(NULL), EINVAL);
    cr_assert_eq(ks_rmutex_trylock(NULL), EINVAL);
    cr_assert_eq(ks_rmutex_timedlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rmutex_unlock(NULL), EINVAL);
    cr_assert_eq(ks_rmutex_destroy(NULL), EINVAL);
    cr_assert_eq(ks_rmutex_unlock(&r), EPERM, "unlock of an unlocked rmutex");
    for (unsigned i = 0; i < NBAD_DL; i++)
        cr_assert_eq(ks_rmutex_timedlock(&r, bad_deadlines[i]), EINVAL);
    cr_assert_eq(ks_rmutex_lock(&r), 0);
    cr_assert_eq(ks_rmutex_timedlock(&r, 0), 0, "re-entry by the owner");
    cr_assert_eq(ks_rmutex_destroy(&r), EBUSY);
    struct rm_other o = {.r = &r};
    pthread_t t;
    kt_spawn(&t, rm_other_main, &o);
    kt_join(t);
    cr_assert_eq(o.unlock, EPERM, "unlock by a thread that does not hold it");
    cr_assert_eq(o.trylock, EBUSY);
    cr_assert_eq(o.timedlock, ETIMEDOUT);
    cr_assert_eq(ks_rmutex_unlock(&r), 0);
    cr_assert_eq(ks_rmutex_unlock(&r), 0);
    cr_assert_eq(ks_rmutex_unlock(&r), EPERM, "over-release");
    cr_assert_neq(ks_thread_id(), 0u);
    cr_assert_eq(ks_rmutex_destroy(&r), 0);
    cr_assert_eq(ks_rmutex_destroy(&r), 0, "a second destroy changes nothing");
    cr_assert_eq(ks_rmutex_init(&r, 0), 0);
    cr_assert_eq(ks_rmutex_trylock(&r), 0);
    cr_assert_eq(ks_rmutex_unlock(&r), 0);
}

Test(misuse, cond, .timeout = 30)
{
    cr_assert_eq(ks_cond_init(NULL, 0), EINVAL);
    ks_cond_t c = KS_COND_INIT;
    ks_mutex_t m = KS_MUTEX_INIT;
    for (int i = 0; i < BAD_FLAGS_N; i++)
        cr_assert_eq(ks_cond_init(&c, bad_flags[i]), EINVAL, "flags %#x", bad_flags[i]);
    cr_assert_eq(ks_cond_signal(NULL), EINVAL);
    cr_assert_eq(ks_cond_broadcast(NULL), EINVAL);
    cr_assert_eq(ks_cond_destroy(NULL), EINVAL);
    cr_assert_eq(ks_cond_wait(NULL, &m), EINVAL);
    cr_assert_eq(ks_cond_wait(&c, NULL), EINVAL);
    cr_assert_eq(ks_cond_timedwait(NULL, &m, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_cond_wait(&c, &m), EPERM, "wait with the mutex not locked");
    cr_assert_eq(ks_cond_timedwait(&c, &m, 0), EPERM);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    for (unsigned i = 0; i < NBAD_DL; i++)
        cr_assert_eq(ks_cond_timedwait(&c, &m, bad_deadlines[i]), EINVAL);
    cr_assert_eq(ks_cond_timedwait(&c, &m, 0), ETIMEDOUT);
    cr_assert_eq(ks_mutex_trylock(&m), EBUSY, "the mutex is held again after ETIMEDOUT");
    cr_assert_eq(ks_cond_timedwait(&c, &m, ks_deadline_after(KS_NSEC_PER_SEC / 100)), ETIMEDOUT);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_cond_signal(&c), 0, "signal with nobody waiting");
    cr_assert_eq(ks_cond_broadcast(&c), 0);
    cr_assert_eq(ks_cond_destroy(&c), 0);
    cr_assert_eq(ks_cond_destroy(&c), 0, "second destroy");
    cr_assert_eq(ks_cond_init(&c, 0), 0);
    cr_assert_eq(ks_cond_signal(&c), 0);
}

static int once_runs;
static void once_fn(void) { once_runs++; }

Test(misuse, once, .timeout = 30)
{
    ks_once_t o = KS_ONCE_INIT;
    cr_assert_eq(ks_once(NULL, once_fn), EINVAL);
    cr_assert_eq(ks_once(&o, NULL), EINVAL);
    cr_assert_eq(ks_once_slow(NULL, once_fn), EINVAL);
    cr_assert_eq(ks_once_slow(&o, NULL), EINVAL);
    cr_assert_eq(once_runs, 0);
    cr_assert_eq(ks_once(&o, once_fn), 0);
    cr_assert_eq(ks_once(&o, once_fn), 0);
    cr_assert_eq(ks_once(&o, NULL), EINVAL, "NULL function after completion");
    cr_assert_eq(once_runs, 1);
}

Test(misuse, time, .timeout = 30)
{
    cr_assert_eq(ks_deadline_after(-1), -1);
    cr_assert_eq(ks_deadline_after(INT64_MIN), -1);
    cr_assert_eq(ks_deadline_after(KS_FOREVER), KS_FOREVER, "saturates");
    cr_assert_eq(ks_deadline_after(KS_FOREVER - 1), KS_FOREVER);
    int64_t t0 = ks_now();
    cr_assert_geq(ks_deadline_after(0), t0);
    int64_t d = 12345;
    struct timespec ts = {1, 0};
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, NULL, &d), EINVAL);
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, NULL), EINVAL);
    const struct timespec bad[] = {{0, -1}, {0, 1000000000L}, {-1, 0}, {0, LONG_MAX}, {LLONG_MIN, 0}};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &bad[i], &d), EINVAL, "timespec %u", i);
    const int clocks[] = {CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID, CLOCK_BOOTTIME, -1, 1000};
    for (unsigned i = 0; i < sizeof clocks / sizeof clocks[0]; i++)
        cr_assert_eq(ks_deadline_from_timespec(clocks[i], &ts, &d), EINVAL, "clock %d", clocks[i]);
    cr_assert_eq(d, 12345, "a refused conversion wrote the deadline");
    struct timespec huge = {LLONG_MAX, 999999999L};
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &huge, &d), 0);
    cr_assert_eq(d, KS_FOREVER, "saturates");
    cr_assert_eq(ks_deadline_from_timespec(CLOCK_MONOTONIC, &ts, &d), 0);
    cr_assert_eq(d, KS_NSEC_PER_SEC);
}

Test(misuse, futex_stats, .timeout = 30)
{
    struct ks_futex_stats s;
    memset(&s, 0xa5, sizeof s);
    cr_assert_eq(ks_futex_stats(&s), 0);
    cr_assert_lt(s.waits, 1000000u); /* written, and sensible */
    cr_assert_eq(ks_futex_stats(NULL), EINVAL);
}

/* ---- sem, event, rwlock, barrier --------------------------------------------------------- */

Test(misuse, sem, .timeout = 30)
{
    ks_sem_t s = KS_SEM_INIT(0);
    cr_assert_eq(ks_sem_init(NULL, 0, 0), EINVAL);
    cr_assert_eq(ks_sem_init_bounded(NULL, 0, 1, 0), EINVAL);
    for (int i = 0; i < BAD_FLAGS_N; i++) {
        cr_assert_eq(ks_sem_init(&s, 0, bad_flags[i]), EINVAL);
        cr_assert_eq(ks_sem_init_bounded(&s, 0, 1, bad_flags[i]), EINVAL);
    }
    cr_assert_eq(ks_sem_init(&s, KS_SEM_VALUE_MAX + 1u, 0), EINVAL);
    cr_assert_eq(ks_sem_init(&s, UINT_MAX, 0), EINVAL);
    cr_assert_eq(ks_sem_init_bounded(&s, 2, 1, 0), EINVAL, "value > max");
    cr_assert_eq(ks_sem_init_bounded(&s, 0, 0, 0), EINVAL, "max 0");
    cr_assert_eq(ks_sem_init_bounded(&s, 0, KS_SEM_VALUE_MAX + 1u, 0), EINVAL);
    cr_assert_eq(ks_sem_wait(NULL), EINVAL);
    cr_assert_eq(ks_sem_trywait(NULL), EINVAL);
    cr_assert_eq(ks_sem_timedwait(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_sem_post(NULL), EINVAL);
    cr_assert_eq(ks_sem_value(NULL), -EINVAL);
    cr_assert_eq(ks_sem_destroy(NULL), EINVAL);
    cr_assert_eq(ks_sem_init_bounded(&s, 1, 1, 0), 0);
    for (unsigned i = 0; i < NBAD_DL; i++)
        cr_assert_eq(ks_sem_timedwait(&s, bad_deadlines[i]), EINVAL);
    cr_assert_eq(ks_sem_value(&s), 1, "a refused timedwait took a unit");
    cr_assert_eq(ks_sem_post(&s), EOVERFLOW, "over-release of a bounded semaphore");
    cr_assert_eq(ks_sem_value(&s), 1);
    cr_assert_eq(ks_sem_trywait(&s), 0);
    cr_assert_eq(ks_sem_trywait(&s), EAGAIN);
    cr_assert_eq(ks_sem_timedwait(&s, 0), ETIMEDOUT);
    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_sem_wait(&s), 0);
    cr_assert_eq(ks_sem_destroy(&s), 0);
    cr_assert_eq(ks_sem_destroy(&s), 0, "second destroy");
    /* A counting semaphore at KS_SEM_VALUE_MAX: a post overflows, nothing changes. */
    cr_assert_eq(ks_sem_init(&s, KS_SEM_VALUE_MAX, 0), 0);
    cr_assert_eq(ks_sem_post(&s), EOVERFLOW);
    cr_assert_eq(ks_sem_value(&s), (int)KS_SEM_VALUE_MAX);
    cr_assert_eq(ks_sem_trywait(&s), 0);
}

Test(misuse, event, .timeout = 30)
{
    ks_event_t e = KS_EVENT_INIT;
    cr_assert_eq(ks_event_init(NULL, 0), EINVAL);
    for (int i = 0; i < BAD_FLAGS_N; i++)
        cr_assert_eq(ks_event_init(&e, bad_flags[i]), EINVAL);
    cr_assert_eq(ks_event_set(NULL), EINVAL);
    cr_assert_eq(ks_event_clear(NULL), EINVAL);
    cr_assert_eq(ks_event_wait(NULL), EINVAL);
    cr_assert_eq(ks_event_timedwait(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_event_is_set(NULL), 0);
    cr_assert_eq(ks_event_destroy(NULL), EINVAL);
    for (unsigned i = 0; i < NBAD_DL; i++)
        cr_assert_eq(ks_event_timedwait(&e, bad_deadlines[i]), EINVAL);
    cr_assert_eq(ks_event_timedwait(&e, 0), ETIMEDOUT);
    cr_assert_eq(ks_event_clear(&e), 0, "clear of a clear event");
    cr_assert_eq(ks_event_set(&e), 0);
    cr_assert_eq(ks_event_set(&e), 0, "set twice");
    cr_assert_eq(ks_event_is_set(&e), 1);
    cr_assert_eq(ks_event_timedwait(&e, 0), 0);
    cr_assert_eq(ks_event_wait(&e), 0);
    cr_assert_eq(ks_event_destroy(&e), 0);
    cr_assert_eq(ks_event_destroy(&e), 0, "second destroy");
    cr_assert_eq(ks_event_init(&e, 0), 0);
    cr_assert_eq(ks_event_is_set(&e), 0);
}

Test(misuse, rwlock, .timeout = 30)
{
    ks_rwlock_t l = KS_RWLOCK_INIT;
    cr_assert_eq(ks_rwlock_init(NULL, 0), EINVAL);
    for (int i = 0; i < BAD_FLAGS_N; i++)
        cr_assert_eq(ks_rwlock_init(&l, bad_flags[i]), EINVAL);
    cr_assert_eq(ks_rwlock_rdlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_tryrdlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_timedrdlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rwlock_wrlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_trywrlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_timedwrlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rwlock_unlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_destroy(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_unlock(&l), EPERM, "unlock of an unlocked lock");
    for (unsigned i = 0; i < NBAD_DL; i++) {
        cr_assert_eq(ks_rwlock_timedrdlock(&l, bad_deadlines[i]), EINVAL);
        cr_assert_eq(ks_rwlock_timedwrlock(&l, bad_deadlines[i]), EINVAL);
    }
    cr_assert_eq(ks_rwlock_destroy(&l), 0, "nothing was taken by the refusals");
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY);
    cr_assert_eq(ks_rwlock_timedwrlock(&l, 0), ETIMEDOUT);
    cr_assert_eq(ks_rwlock_destroy(&l), EBUSY);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), EPERM, "over-release");
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    cr_assert_eq(ks_rwlock_tryrdlock(&l), EBUSY);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, 0), ETIMEDOUT);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_destroy(&l), 0);
    cr_assert_eq(ks_rwlock_destroy(&l), 0, "second destroy");
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, KS_FOREVER), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
}

Test(misuse, barrier, .timeout = 30)
{
    ks_barrier_t b;
    memset(&b, 0, sizeof b);
    cr_assert_eq(ks_barrier_wait(&b), EINVAL, "zero-initialised, never given a count");
    cr_assert_eq(b.arrived, 0u, "the refused wait arrived");
    cr_assert_eq(ks_barrier_destroy(&b), 0);
    cr_assert_eq(ks_barrier_init(NULL, 1, 0), EINVAL);
    cr_assert_eq(ks_barrier_init(&b, 0, 0), EINVAL);
    cr_assert_eq(ks_barrier_init(&b, KS_BARRIER_MAX + 1u, 0), EINVAL);
    cr_assert_eq(ks_barrier_init(&b, UINT_MAX, 0), EINVAL);
    for (int i = 0; i < BAD_FLAGS_N; i++)
        cr_assert_eq(ks_barrier_init(&b, 2, bad_flags[i]), EINVAL);
    cr_assert_eq(b.count, 0u, "a refused init wrote the barrier");
    cr_assert_eq(ks_barrier_wait(NULL), EINVAL);
    cr_assert_eq(ks_barrier_destroy(NULL), EINVAL);
    ks_barrier_t s = KS_BARRIER_INIT(1);
    cr_assert_eq(ks_barrier_wait(&s), KS_BARRIER_SERIAL);
    cr_assert_eq(ks_barrier_wait(&s), KS_BARRIER_SERIAL);
    cr_assert_eq(ks_barrier_destroy(&s), 0);
    cr_assert_eq(ks_barrier_destroy(&s), 0, "second destroy");
    cr_assert_eq(ks_barrier_init(&s, 1, 0), 0);
    cr_assert_eq(ks_barrier_wait(&s), KS_BARRIER_SERIAL);
    /* A partly filled phase: destroy is EBUSY and changes nothing. */
    cr_assert_eq(ks_barrier_init(&b, 2, 0), 0);
    __atomic_store_n(&b.arrived, 1, __ATOMIC_RELAXED); /* as if one thread waited */
    cr_assert_eq(ks_barrier_destroy(&b), EBUSY);
    cr_assert_eq(ks_barrier_wait(&b), KS_BARRIER_SERIAL, "the barrier still works after EBUSY");
}

/* ---- mpmc, queue, pool -------------------------------------------------------------------- */

Test(misuse, mpmc, .timeout = 30)
{
    ks_mpmc_t *sentinel = (ks_mpmc_t *)SENT, *q = sentinel;
    cr_assert_eq(ks_mpmc_bytes(0), 0u);
    cr_assert_eq(ks_mpmc_bytes(SIZE_MAX), 0u);
    cr_assert_eq(ks_mpmc_bytes((size_t)KS_MPMC_CAPACITY_MAX + 1), 0u);
    cr_assert_eq(ks_mpmc_create(NULL, 4), EINVAL);
    cr_assert_eq(ks_mpmc_create(&q, 0), EINVAL);
    cr_assert_eq(ks_mpmc_create(&q, SIZE_MAX), EINVAL);
    cr_assert_eq(ks_mpmc_create(&q, (size_t)KS_MPMC_CAPACITY_MAX + 1), EINVAL);
    cr_assert_eq(q, sentinel, "a refused create wrote the out pointer");
    cr_assert_eq(ks_mpmc_init(NULL, 4), EINVAL);
    size_t bytes = ks_mpmc_bytes(2);
    char *mem = aligned_alloc(KS_MPMC_ALIGN, (bytes + 2 * KS_MPMC_ALIGN) / KS_MPMC_ALIGN * KS_MPMC_ALIGN);
    cr_assert_not_null(mem);
    cr_assert_eq(ks_mpmc_init((ks_mpmc_t *)(void *)(mem + 8), 2), EINVAL, "misaligned");
    cr_assert_eq(ks_mpmc_init((ks_mpmc_t *)(void *)mem, 0), EINVAL);
    cr_assert_eq(ks_mpmc_destroy(NULL), EINVAL);
    cr_assert_eq(ks_mpmc_try_push(NULL, NULL), EINVAL);
    void *it = SENT;
    cr_assert_eq(ks_mpmc_try_pop(NULL, &it), EINVAL);
    cr_assert_eq(ks_mpmc_capacity(NULL), 0u);
    cr_assert_eq(ks_mpmc_size(NULL), 0u);
    cr_assert_eq(ks_mpmc_create(&q, 2), 0);
    cr_assert_eq(ks_mpmc_try_pop(q, NULL), EINVAL);
    cr_assert_eq(ks_mpmc_try_pop(q, &it), EAGAIN);
    cr_assert_eq(it, SENT, "an empty pop wrote the item");
    cr_assert_eq(ks_mpmc_try_push(q, (void *)1), 0);
    cr_assert_eq(ks_mpmc_try_push(q, NULL), 0, "NULL is an item");
    cr_assert_eq(ks_mpmc_try_push(q, (void *)3), EAGAIN);
    cr_assert_eq(ks_mpmc_try_pop(q, NULL), EINVAL, "a refused pop took nothing");
    cr_assert_eq(ks_mpmc_size(q), 2u);
    cr_assert_eq(ks_mpmc_try_pop(q, &it), 0);
    cr_assert_eq(it, (void *)1);
    cr_assert_eq(ks_mpmc_try_pop(q, &it), 0);
    cr_assert_eq(it, NULL);
    cr_assert_eq(ks_mpmc_destroy(q), 0);
    ks_mpmc_t *r = (ks_mpmc_t *)(void *)mem;
    cr_assert_eq(ks_mpmc_init(r, 2), 0);
    cr_assert_eq(ks_mpmc_try_push(r, (void *)7), 0);
    cr_assert_eq(ks_mpmc_destroy(r), 0);
    cr_assert_eq(ks_mpmc_destroy(r), 0, "second destroy of an init'ed ring");
    free(mem);
}

Test(misuse, queue, .timeout = 30)
{
    ks_queue_t *sentinel = (ks_queue_t *)SENT, *q = sentinel;
    cr_assert_eq(ks_queue_bytes(0), 0u);
    cr_assert_eq(ks_queue_bytes(SIZE_MAX), 0u);
    cr_assert_eq(ks_queue_create(NULL, 4, 0), EINVAL);
    cr_assert_eq(ks_queue_create(&q, 0, 0), EINVAL);
    cr_assert_eq(ks_queue_create(&q, SIZE_MAX, 0), EINVAL);
    cr_assert_eq(ks_queue_create(&q, (size_t)KS_MPMC_CAPACITY_MAX + 1, 0), EINVAL);
    for (int i = 0; i < BAD_FLAGS_N; i++)
        cr_assert_eq(ks_queue_create(&q, 4, bad_flags[i]), EINVAL);
    cr_assert_eq(q, sentinel, "a refused create wrote the out pointer");
    cr_assert_eq(ks_queue_init(NULL, 4, 0), EINVAL);
    void *it = SENT;
    cr_assert_eq(ks_queue_put(NULL, NULL), EINVAL);
    cr_assert_eq(ks_queue_tryput(NULL, NULL), EINVAL);
    cr_assert_eq(ks_queue_timedput(NULL, NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_queue_get(NULL, &it), EINVAL);
    cr_assert_eq(ks_queue_tryget(NULL, &it), EINVAL);
    cr_assert_eq(ks_queue_timedget(NULL, &it, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_queue_task_done(NULL), EINVAL);
    cr_assert_eq(ks_queue_join(NULL), EINVAL);
    cr_assert_eq(ks_queue_timedjoin(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_queue_close(NULL), EINVAL);
    cr_assert_eq(ks_queue_destroy(NULL), EINVAL);
    cr_assert_eq(ks_queue_capacity(NULL), 0u);
    cr_assert_eq(ks_queue_size(NULL), 0u);
    cr_assert_eq(ks_queue_is_closed(NULL), 0);
    cr_assert_eq(ks_queue_unfinished(NULL), 0u);
    cr_assert_eq(it, SENT);

    cr_assert_eq(ks_queue_create(&q, 1, 0), 0);
    cr_assert_eq(ks_queue_get(q, NULL), EINVAL);
    cr_assert_eq(ks_queue_tryget(q, NULL), EINVAL);
    cr_assert_eq(ks_queue_timedget(q, NULL, 0), EINVAL);
    for (unsigned i = 0; i < NBAD_DL; i++) {
        cr_assert_eq(ks_queue_timedput(q, (void *)1, bad_deadlines[i]), EINVAL);
        cr_assert_eq(ks_queue_timedget(q, &it, bad_deadlines[i]), EINVAL);
        cr_assert_eq(ks_queue_timedjoin(q, bad_deadlines[i]), EINVAL);
    }
    cr_assert_eq(ks_queue_size(q), 0u, "a refused put queued something");
    cr_assert_eq(ks_queue_task_done(q), EINVAL, "task_done before any put");
    cr_assert_eq(ks_queue_tryget(q, &it), EAGAIN);
    cr_assert_eq(ks_queue_timedget(q, &it, 0), ETIMEDOUT);
    cr_assert_eq(it, SENT);
    cr_assert_eq(ks_queue_put(q, (void *)1), 0);
    cr_assert_eq(ks_queue_tryput(q, (void *)2), EAGAIN);
    cr_assert_eq(ks_queue_timedput(q, (void *)2, 0), ETIMEDOUT);
    cr_assert_eq(ks_queue_timedjoin(q, 0), ETIMEDOUT);
    cr_assert_eq(ks_queue_unfinished(q), 1u);
    cr_assert_eq(ks_queue_destroy(q), 0, "a queue holding items may be destroyed");
    /* Closed: puts EPIPE, gets drain then EPIPE, close twice harmless. */
    cr_assert_eq(ks_queue_create(&q, 2, 0), 0);
    cr_assert_eq(ks_queue_put(q, (void *)1), 0);
    cr_assert_eq(ks_queue_close(q), 0);
    cr_assert_eq(ks_queue_close(q), 0);
    cr_assert_eq(ks_queue_is_closed(q), 1);
    cr_assert_eq(ks_queue_put(q, (void *)2), EPIPE);
    cr_assert_eq(ks_queue_tryput(q, (void *)2), EPIPE);
    cr_assert_eq(ks_queue_timedput(q, (void *)2, KS_FOREVER), EPIPE);
    cr_assert_eq(ks_queue_get(q, &it), 0);
    cr_assert_eq(it, (void *)1);
    it = SENT;
    cr_assert_eq(ks_queue_get(q, &it), EPIPE);
    cr_assert_eq(ks_queue_tryget(q, &it), EPIPE);
    cr_assert_eq(ks_queue_timedget(q, &it, KS_FOREVER), EPIPE);
    cr_assert_eq(it, SENT, "EPIPE wrote the item");
    cr_assert_eq(ks_queue_task_done(q), 0);
    cr_assert_eq(ks_queue_task_done(q), EINVAL, "over-release of task_done");
    cr_assert_eq(ks_queue_unfinished(q), 0u);
    cr_assert_eq(ks_queue_join(q), 0);
    cr_assert_eq(ks_queue_destroy(q), 0);
    /* init: misaligned memory, refusals write nothing; a second destroy of
     * an init'ed queue is harmless. */
    size_t bytes = ks_queue_bytes(2);
    size_t room = (bytes + 2 * KS_MPMC_ALIGN) / KS_MPMC_ALIGN * KS_MPMC_ALIGN;
    char *mem = aligned_alloc(KS_MPMC_ALIGN, room), *copy = malloc(room);
    cr_assert(mem && copy);
    memset(mem, 0x77, room);
    memcpy(copy, mem, room);
    cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)(mem + 64), 2, 0), EINVAL, "misaligned");
    cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)mem, 0, 0), EINVAL);
    cr_assert_eq(ks_queue_init((ks_queue_t *)(void *)mem, 2, 2u), EINVAL);
    cr_assert_eq(memcmp(mem, copy, room), 0, "a refused init wrote the memory");
    ks_queue_t *iq = (ks_queue_t *)(void *)mem;
    cr_assert_eq(ks_queue_init(iq, 2, 0), 0);
    cr_assert_eq(ks_queue_destroy(iq), 0);
    cr_assert_eq(ks_queue_destroy(iq), 0, "second destroy of an init'ed queue");
    free(mem);
    free(copy);
}

Test(misuse, pool, .timeout = 30)
{
    void *res[3] = {(void *)1, (void *)2, NULL};
    void *dup[2] = {(void *)5, (void *)5};
    ks_pool_t *sentinel = (ks_pool_t *)SENT, *p = sentinel;
    cr_assert_eq(ks_pool_bytes(0), 0u);
    cr_assert_eq(ks_pool_bytes(SIZE_MAX), 0u);
    cr_assert_eq(ks_pool_create(NULL, res, 3, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, NULL, 3, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, res, 0, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, res, SIZE_MAX, 0), EINVAL);
    cr_assert_eq(ks_pool_create(&p, dup, 2, 0), EINVAL);
    for (int i = 0; i < BAD_FLAGS_N; i++)
        cr_assert_eq(ks_pool_create(&p, res, 3, bad_flags[i]), EINVAL);
    cr_assert_eq(p, sentinel, "a refused create wrote the out pointer");
    cr_assert_eq(ks_pool_init(NULL, res, 3, 0), EINVAL);
    void *r = SENT;
    cr_assert_eq(ks_pool_borrow(NULL, 0, &r), EINVAL);
    cr_assert_eq(ks_pool_return(NULL, res[0]), EINVAL);
    cr_assert_eq(ks_pool_destroy(NULL), EINVAL);
    cr_assert_eq(ks_pool_available(NULL), 0u);
    cr_assert_eq(ks_pool_size(NULL), 0u);
    cr_assert_eq(ks_pool_create(&p, res, 3, 0), 0);
    cr_assert_eq(ks_pool_borrow(p, 0, NULL), EINVAL);
    for (unsigned i = 0; i < NBAD_DL; i++)
        cr_assert_eq(ks_pool_borrow(p, bad_deadlines[i], &r), EINVAL);
    cr_assert_eq(r, SENT);
    cr_assert_eq(ks_pool_available(p), 3u, "a refused borrow took a resource");
    cr_assert_eq(ks_pool_return(p, res[0]), EPERM, "return of a resource nobody borrowed");
    cr_assert_eq(ks_pool_return(p, (void *)99), EINVAL, "not one of the pool's");
    void *a, *b, *c;
    cr_assert_eq(ks_pool_borrow(p, 0, &a), 0);
    cr_assert_eq(ks_pool_borrow(p, KS_FOREVER, &b), 0);
    cr_assert_eq(ks_pool_borrow(p, ks_now(), &c), 0);
    r = SENT;
    cr_assert_eq(ks_pool_borrow(p, 0, &r), ETIMEDOUT);
    cr_assert_eq(r, SENT, "a timed-out borrow wrote *res");
    cr_assert_eq(ks_pool_destroy(p), EBUSY);
    cr_assert_eq(ks_pool_return(p, a), 0);
    cr_assert_eq(ks_pool_return(p, a), EPERM, "over-release");
    cr_assert_eq(ks_pool_return(p, b), 0);
    cr_assert_eq(ks_pool_return(p, c), 0);
    cr_assert_eq(ks_pool_available(p), 3u);
    cr_assert_eq(ks_pool_destroy(p), 0);
}

/* ---- epoch, cache --------------------------------------------------------------------------- */

static long misuse_freed;
static void misuse_free(struct ks_epoch_node *n)
{
    (void)n;
    misuse_freed++;
}

Test(misuse, epoch, .timeout = 30)
{
    static struct ks_epoch_node node;
    cr_assert_eq(ks_epoch_exit(), EPERM, "exit without enter");
    cr_assert_eq(ks_epoch_leave(), 0, "leave without enter");
    cr_assert_eq(ks_epoch_leave(), 0, "leave twice");
    cr_assert_eq(ks_epoch_retire(NULL, misuse_free), EINVAL);
    cr_assert_eq(ks_epoch_retire(&node, NULL), EINVAL);
    ks_epoch_stats(NULL);
    ks_epoch_flush();
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_barrier(), EDEADLK);
    cr_assert_eq(ks_epoch_leave(), EBUSY);
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_exit(), EPERM, "over-release");
    cr_assert_eq(ks_epoch_retire(&node, misuse_free), 0);
    cr_assert_eq(ks_epoch_barrier(), 0);
    cr_assert_eq(misuse_freed, 1);
    cr_assert_eq(ks_epoch_leave(), 0);
    cr_assert_eq(ks_epoch_leave(), 0);
    cr_assert_eq(ks_epoch_enter(), 0, "usable again after leave");
    cr_assert_eq(ks_epoch_exit(), 0);
}

Test(misuse, cache, .timeout = 30)
{
    struct ks_cache_options o = KS_CACHE_OPTIONS_INIT;
    ks_cache_t *sentinel = (ks_cache_t *)SENT, *c = sentinel;
    cr_assert_eq(ks_cache_create(NULL, &o), EINVAL);
    cr_assert_eq(ks_cache_create(&c, NULL), EINVAL);
    o.variant = -1;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL);
    o.variant = 3;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL);
    o.variant = KS_CACHE_STRIPED;
    o.flags = 8u;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL);
    o.flags = KS_CACHE_NOEVICT;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "NOEVICT without a capacity");
    o.flags = 0;
    o.variant = KS_CACHE_BOUNDED;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL, "BOUNDED without a capacity");
    o.variant = KS_CACHE_LOCKFREE;
    o.flags = KS_CACHE_RWLOCK;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL);
    o.flags = 0;
    o.max_key = (size_t)KS_CACHE_LEN_MAX + 1;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL);
    o.max_key = 0;
    o.max_value = SIZE_MAX;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL);
    o.max_value = 0;
    o.shards = 65537;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL);
    o.shards = UINT_MAX;
    cr_assert_eq(ks_cache_create(&c, &o), EINVAL);
    cr_assert_eq(c, sentinel, "a refused create wrote the out pointer");

    char buf[4];
    size_t n = 777;
    cr_assert_eq(ks_cache_put(NULL, "k", 1, "v", 1, 0), EINVAL);
    cr_assert_eq(ks_cache_get(NULL, "k", 1, buf, sizeof buf, &n), EINVAL);
    cr_assert_eq(ks_cache_delete(NULL, "k", 1), EINVAL);
    cr_assert_eq(ks_cache_sweep(NULL, 0), 0u);
    cr_assert_eq(ks_cache_destroy(NULL), EINVAL);
    struct ks_cache_stats st;
    memset(&st, 0x5a, sizeof st);
    ks_cache_stats(NULL, &st);
    for (size_t i = 0; i < sizeof st; i++)
        cr_assert_eq(((unsigned char *)&st)[i], 0x5a, "stats of a NULL cache wrote *out");

    const int variants[] = {KS_CACHE_STRIPED, KS_CACHE_LOCKFREE, KS_CACHE_BOUNDED};
    for (unsigned v = 0; v < 3; v++) {
        o = (struct ks_cache_options)KS_CACHE_OPTIONS_INIT;
        o.variant = variants[v];
        o.capacity = variants[v] == KS_CACHE_BOUNDED ? 100 : 0;
        o.max_value = 8;
        cr_assert_eq(ks_cache_create(&c, &o), 0);
        n = 777;
        ks_cache_stats(c, NULL);
        cr_assert_eq(ks_cache_put(c, NULL, 1, "v", 1, 0), EINVAL);
        cr_assert_eq(ks_cache_put(c, "k", 1, NULL, 1, 0), EINVAL);
        cr_assert_eq(ks_cache_put(c, "k", SIZE_MAX, "v", 1, 0), EMSGSIZE);
        cr_assert_eq(ks_cache_put(c, "k", 1, "v", SIZE_MAX, 0), EMSGSIZE);
        cr_assert_eq(ks_cache_put(c, "k", 1, "123456789", 9, 0), EMSGSIZE, "value over max_value");
        cr_assert_eq(ks_cache_get(c, NULL, 1, buf, sizeof buf, &n), EINVAL);
        cr_assert_eq(ks_cache_get(c, "k", 1, NULL, 1, &n), EINVAL);
        cr_assert_eq(ks_cache_delete(c, NULL, 1), EINVAL);
        cr_assert_eq(n, 777u, "a refused get wrote *vlen");
        cr_assert_eq(ks_cache_get(c, "k", SIZE_MAX, buf, sizeof buf, &n), ENOENT);
        cr_assert_eq(ks_cache_delete(c, "k", SIZE_MAX), ENOENT);
        cr_assert_eq(ks_cache_get(c, "k", 1, buf, sizeof buf, &n), ENOENT);
        cr_assert_eq(n, 777u, "a miss wrote *vlen");
        cr_assert_eq(ks_cache_delete(c, "k", 1), ENOENT);
        /* Empty key and empty value (NULL allowed with length 0). */
        cr_assert_eq(ks_cache_put(c, NULL, 0, NULL, 0, 0), 0);
        cr_assert_eq(ks_cache_get(c, NULL, 0, NULL, 0, &n), 0);
        cr_assert_eq(n, 0u);
        cr_assert_eq(ks_cache_put(c, "k", 1, "12345678", 8, 0), 0);
        cr_assert_eq(ks_cache_get(c, "k", 1, buf, sizeof buf, &n), ERANGE);
        cr_assert_eq(n, 8u);
        cr_assert_eq(ks_cache_get(c, "k", 1, buf, sizeof buf, NULL), ERANGE, "NULL vlen");
        char big[8];
        cr_assert_eq(ks_cache_get(c, "k", 1, big, sizeof big, NULL), 0, "NULL vlen on a hit");
        cr_assert_eq(memcmp(big, "12345678", 8), 0);
        cr_assert_eq(ks_cache_put(c, "t", 1, "x", 1, KS_CACHE_NO_TTL), 0);
        cr_assert_eq(ks_cache_put(c, "u", 1, "x", 1, UINT64_MAX - 1), 0, "huge ttl saturates");
        cr_assert_eq(ks_cache_get(c, "u", 1, buf, sizeof buf, &n), 0);
        cr_assert_eq(ks_cache_sweep(c, SIZE_MAX), 0u);
        cr_assert_eq(ks_cache_delete(c, "k", 1), 0);
        cr_assert_eq(ks_cache_delete(c, "k", 1), ENOENT, "delete twice");
        memset(&st, 0, sizeof st);
        ks_cache_stats(c, &st);
        cr_assert_eq(st.hits + st.misses, st.gets);
        cr_assert_eq(st.size, 3u);
        cr_assert_eq(ks_cache_destroy(c), 0);
    }
}

/* ---- huge but valid deadlines reach the kernel's sleep ------------------------------ */

/* A deadline far in the future but below KS_FOREVER (a caller's
 * now + UINT32_MAX seconds, INT64_MAX / 2, KS_FOREVER - 1) is valid: each
 * blocking call must sleep until the object is released (not answer EINVAL,
 * not time out at once, not spin) and then succeed.  The releasing thread
 * waits 20 ms first, so a wait that did not block shows as a short elapsed
 * time. */
enum { HD_MUTEX, HD_RMUTEX, HD_SEM, HD_EVENT, HD_COND, HD_RDLOCK, HD_WRLOCK, HD_QGET, HD_QPUT,
       HD_BORROW, HD_N };
static const char *const hd_names[HD_N] = {"mutex", "rmutex", "sem", "event", "cond", "rdlock",
                                           "wrlock", "queue get", "queue put", "pool borrow"};

struct hd {
    int kind;
    ks_mutex_t m;
    ks_rmutex_t r;
    ks_sem_t s;
    ks_event_t e;
    ks_cond_t c;
    ks_rwlock_t l;
    ks_queue_t *q;
    ks_pool_t *p;
    void *held;
    int go; /* under m, for the cond */
};

static void *hd_release(void *arg)
{
    struct hd *h = arg;
    kt_sleep_ns(20 * KT_MS);
    switch (h->kind) {
    case HD_MUTEX: cr_assert_eq(ks_mutex_unlock(&h->m), 0); break;
    case HD_RMUTEX: cr_assert_eq(ks_rmutex_unlock(&h->r), 0); break;
    case HD_SEM: cr_assert_eq(ks_sem_post(&h->s), 0); break;
    case HD_EVENT: cr_assert_eq(ks_event_set(&h->e), 0); break;
    case HD_COND:
        cr_assert_eq(ks_mutex_lock(&h->m), 0);
        h->go = 1;
        cr_assert_eq(ks_cond_signal(&h->c), 0);
        cr_assert_eq(ks_mutex_unlock(&h->m), 0);
        break;
    case HD_RDLOCK:
    case HD_WRLOCK: cr_assert_eq(ks_rwlock_unlock(&h->l), 0); break;
    case HD_QGET: cr_assert_eq(ks_queue_put(h->q, (void *)1), 0); break;
    case HD_QPUT: {
        void *v;
        cr_assert_eq(ks_queue_get(h->q, &v), 0);
        break;
    }
    case HD_BORROW: cr_assert_eq(ks_pool_return(h->p, h->held), 0); break;
    }
    return NULL;
}

/* Takes the object in this thread, so that the wait below must block. */
static void hd_take(struct hd *h)
{
    void *one[1] = {(void *)7};
    switch (h->kind) {
    case HD_MUTEX: cr_assert_eq(ks_mutex_lock(&h->m), 0); break;
    case HD_RMUTEX: {
        /* the rmutex must be held by another thread: hand it over below */
        break;
    }
    case HD_SEM: cr_assert_eq(ks_sem_init(&h->s, 0, 0), 0); break;
    case HD_EVENT: cr_assert_eq(ks_event_init(&h->e, 0), 0); break;
    case HD_COND: break;
    case HD_RDLOCK: cr_assert_eq(ks_rwlock_wrlock(&h->l), 0); break;
    case HD_WRLOCK: cr_assert_eq(ks_rwlock_rdlock(&h->l), 0); break;
    case HD_QGET: cr_assert_eq(ks_queue_create(&h->q, 1, 0), 0); break;
    case HD_QPUT:
        cr_assert_eq(ks_queue_create(&h->q, 1, 0), 0);
        cr_assert_eq(ks_queue_put(h->q, (void *)1), 0);
        break;
    case HD_BORROW:
        cr_assert_eq(ks_pool_create(&h->p, one, 1, 0), 0);
        cr_assert_eq(ks_pool_borrow(h->p, 0, &h->held), 0);
        break;
    }
}

static int hd_wait(struct hd *h, int64_t d)
{
    void *v;
    int e;
    switch (h->kind) {
    case HD_MUTEX: return ks_mutex_timedlock(&h->m, d) ?: ks_mutex_unlock(&h->m);
    case HD_RMUTEX: return ks_rmutex_timedlock(&h->r, d) ?: ks_rmutex_unlock(&h->r);
    case HD_SEM: return ks_sem_timedwait(&h->s, d);
    case HD_EVENT: return ks_event_timedwait(&h->e, d);
    case HD_COND:
        cr_assert_eq(ks_mutex_lock(&h->m), 0);
        e = 0;
        while (!h->go && e == 0)
            e = ks_cond_timedwait(&h->c, &h->m, d);
        cr_assert_eq(ks_mutex_unlock(&h->m), 0);
        return e;
    case HD_RDLOCK:
        return ks_rwlock_timedrdlock(&h->l, d) ?: ks_rwlock_unlock(&h->l);
    case HD_WRLOCK:
        return ks_rwlock_timedwrlock(&h->l, d) ?: ks_rwlock_unlock(&h->l);
    case HD_QGET: return ks_queue_timedget(h->q, &v, d);
    case HD_QPUT: return ks_queue_timedput(h->q, (void *)2, d);
    case HD_BORROW: return ks_pool_borrow(h->p, d, &v) ?: ks_pool_return(h->p, v);
    }
    return -1;
}

static void *hd_rmutex_holder(void *arg)
{
    struct hd *h = arg;
    cr_assert_eq(ks_rmutex_lock(&h->r), 0);
    return hd_release(h); /* unlocks in this thread, the owner */
}

Test(misuse, huge_finite_deadlines_block_until_released, .timeout = 120)
{
    const int64_t far[] = {ks_deadline_after((int64_t)UINT32_MAX * KS_NSEC_PER_SEC), INT64_MAX / 2,
                           KS_FOREVER - 1};
    for (int k = 0; k < HD_N; k++) {
        for (unsigned f = 0; f < sizeof far / sizeof far[0]; f++) {
            struct hd h = {.kind = k, .m = KS_MUTEX_INIT, .r = KS_RMUTEX_INIT,
                           .c = KS_COND_INIT, .l = KS_RWLOCK_INIT};
            hd_take(&h);
            pthread_t t;
            kt_spawn(&t, k == HD_RMUTEX ? hd_rmutex_holder : hd_release, &h);
            if (k == HD_RMUTEX) /* let the holder take it first */
                while (ks_rmutex_trylock(&h.r) == 0) {
                    cr_assert_eq(ks_rmutex_unlock(&h.r), 0);
                    sched_yield();
                }
            int64_t t0 = ks_now();
            int e = hd_wait(&h, far[f]);
            int64_t took = ks_now() - t0;
            kt_join(t);
            cr_assert_eq(e, 0, "%s with deadline %lld: %d", hd_names[k], (long long)far[f], e);
            cr_assert_geq(took, 10 * KT_MS, "%s with deadline %lld returned after %lld ns without "
                          "blocking", hd_names[k], (long long)far[f], (long long)took);
            if (h.q)
                cr_assert_eq(ks_queue_destroy(h.q), 0);
            if (h.p)
                cr_assert_eq(ks_pool_destroy(h.p), 0);
        }
    }
}

/* ---- lock statistics ---------------------------------------------------------------------- */

Test(misuse, lockstat, .timeout = 30)
{
    cr_assert_eq(ks_lockstat_set(3), -EINVAL);
    cr_assert_eq(ks_lockstat_set(-1), -EINVAL);
    cr_assert_eq(ks_lockstat_mode(), KS_LOCKSTAT_OFF);
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_lock_name(NULL, "x"), EINVAL);
    cr_assert_eq(ks_lock_name(&m, NULL), EINVAL);
    cr_assert_eq(ks_lockstat_report(NULL), EINVAL);
    cr_assert_eq(ks_lockstat_read(NULL, 0), 0, "no table yet");
    ks_lockstat_reset(); /* no table: nothing to do */
    cr_assert_eq(ks_mutex_trylock_slow(NULL), EINVAL);
    /* a name given while off is kept for when statistics start */
    cr_assert_eq(ks_lock_name(&m, "early"), 0);
    cr_assert_eq(ks_lockstat_read(NULL, 0), 1);
    struct ks_lockstat one;
    cr_assert_eq(ks_lockstat_read(&one, 1), 1);
    cr_assert_eq(one.lock, &m);
    cr_assert_str_eq(one.name, "early");
    /* renaming replaces */
    cr_assert_eq(ks_lock_name(&m, "late"), 0);
    cr_assert_eq(ks_lockstat_read(&one, 1), 1);
    cr_assert_str_eq(one.name, "late");
    cr_assert_eq(ks_lockstat_read(&one, 0), 1, "max 0: the count, nothing written");
    /* a report with nothing recorded still prints its header */
    FILE *f = fopen("/dev/null", "w");
    cr_assert_eq(ks_lockstat_report(f), 0);
    fclose(f);
    /* reset keeps the locks, zeroes the counts */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_lockstat_read(&one, 1), 1);
    cr_assert_eq(one.acquisitions, 1);
    ks_lockstat_reset();
    cr_assert_eq(ks_lockstat_read(&one, 1), 1);
    cr_assert_eq(one.acquisitions, 0);
    /* a held marked mutex cannot be destroyed; its mark does not make it busy */
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_destroy(&m), EBUSY);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), EPERM, "unlock of a free marked mutex");
    cr_assert_eq(ks_mutex_destroy(&m), 0);
}
