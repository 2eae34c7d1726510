/* tests/test_rwlock.c - ks_rwlock: API contract, shared read ownership,
 * writer exclusion with exact counters (also oversubscribed), try and timed
 * variants, writer preference under a continuous stream of readers, a
 * timed-out writer that must not leave readers blocked, the reader limit,
 * and process-shared use across fork(). */
#include "helpers.h"

static uint64_t state_of(ks_rwlock_t *l) { return __atomic_load_n(&l->state, __ATOMIC_RELAXED); }
static uint64_t held_of(ks_rwlock_t *l) { return state_of(l) & KS_RWLOCK_WRITER; }
static uint32_t writers_waiting(ks_rwlock_t *l) { return (uint32_t)(state_of(l) >> 32); }
/* src/rwlock.c (hidden, linked statically): readers inside through the
 * visible-readers table, which the state word does not count. */
unsigned ks_rwlock_table_readers_(const ks_rwlock_t *l);
static uint64_t readers_of(ks_rwlock_t *l)
{
    uint64_t r = held_of(l);
    return (r == KS_RWLOCK_WRITER ? 0 : r) + ks_rwlock_table_readers_(l);
}
static uint32_t bias_of(ks_rwlock_t *l) { return __atomic_load_n(&l->bias, __ATOMIC_RELAXED); }

struct rw_try {
    ks_rwlock_t *l;
    int write;
};

static void *try_from_thread(void *p)
{
    struct rw_try *t = p;
    return (void *)(intptr_t)(t->write ? ks_rwlock_trywrlock(t->l) : ks_rwlock_tryrdlock(t->l));
}

/* tryrdlock / trywrlock from another thread (which keeps what it got). */
static int try_elsewhere(ks_rwlock_t *l, int write)
{
    struct rw_try a = {l, write};
    pthread_t t;
    kt_spawn(&t, try_from_thread, &a);
    return (int)(intptr_t)kt_join(t);
}

static void *try_release_from_thread(void *p)
{
    ks_rwlock_t *l = p;
    int r = ks_rwlock_tryrdlock(l);
    if (r == 0)
        r = ks_rwlock_unlock(l);
    return (void *)(intptr_t)r;
}

/* tryrdlock and unlock in another thread (a read lock taken through the
 * visible-readers table belongs to the thread that took it). */
static int try_and_release_elsewhere(ks_rwlock_t *l)
{
    pthread_t t;
    kt_spawn(&t, try_release_from_thread, l);
    return (int)(intptr_t)kt_join(t);
}

/* ---- API contract ------------------------------------------------------------ */

static ks_rwlock_t static_zero; /* all zeros, never initialised */

Test(rwlock, init_destroy_and_static_initializers, .timeout = 30)
{
    ks_rwlock_t a = KS_RWLOCK_INIT, b;
    ks_rwlock_t *heap = calloc(1, sizeof *heap);
    cr_assert_not_null(heap);
    memset(&b, 0xa5, sizeof b);
    cr_assert_eq(ks_rwlock_init(&b, 0), 0);
    cr_assert_eq(b.state, 0u);
    cr_assert_eq(b.flags, 0u);
    ks_rwlock_t *ls[] = {&a, &static_zero, heap, &b};
    for (unsigned i = 0; i < sizeof ls / sizeof ls[0]; i++) {
        ks_rwlock_t *l = ls[i];
        cr_assert_eq(ks_rwlock_rdlock(l), 0, "lock %u", i);
        cr_assert_eq(ks_rwlock_tryrdlock(l), 0);
        cr_assert_eq(ks_rwlock_timedrdlock(l, 0), 0);
        cr_assert_eq(held_of(l), 3u);
        cr_assert_eq(ks_rwlock_destroy(l), EBUSY);
        for (int k = 0; k < 3; k++)
            cr_assert_eq(ks_rwlock_unlock(l), 0);
        cr_assert_eq(ks_rwlock_wrlock(l), 0);
        cr_assert_eq(held_of(l), KS_RWLOCK_WRITER);
        cr_assert_eq(ks_rwlock_destroy(l), EBUSY);
        cr_assert_eq(ks_rwlock_unlock(l), 0);
        cr_assert_eq(ks_rwlock_trywrlock(l), 0);
        cr_assert_eq(ks_rwlock_unlock(l), 0);
        cr_assert_eq(ks_rwlock_timedwrlock(l, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
        cr_assert_eq(ks_rwlock_unlock(l), 0);
        cr_assert_eq(state_of(l), 0u);
        cr_assert_eq(ks_rwlock_destroy(l), 0);
    }
    memset(&b, 0xa5, sizeof b);
    cr_assert_eq(ks_rwlock_init(&b, KS_SHARED), 0);
    cr_assert_eq(b.state, 0u);
    cr_assert_eq(b.flags, KS_SHARED);
    free(heap);
}

Test(rwlock, null_is_einval_everywhere, .timeout = 30)
{
    cr_assert_eq(ks_rwlock_init(NULL, 0), EINVAL);
    cr_assert_eq(ks_rwlock_init(NULL, KS_SHARED), EINVAL);
    cr_assert_eq(ks_rwlock_destroy(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_rdlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_tryrdlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_timedrdlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rwlock_timedrdlock(NULL, 0), EINVAL);
    cr_assert_eq(ks_rwlock_wrlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_trywrlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_timedwrlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rwlock_timedwrlock(NULL, 0), EINVAL);
    cr_assert_eq(ks_rwlock_unlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_rdlock_slow(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rwlock_wrlock_slow(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rwlock_unlock_slow(NULL), EINVAL);
}

Test(rwlock, init_unknown_flags_is_einval_and_changes_nothing, .timeout = 30)
{
    const unsigned bad[] = {4u, 8u, 0x80u, 0x80000000u, ~0u, KS_SHARED | 8u};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_rwlock_t l, copy;
        memset(&l, 0x5a, sizeof l);
        memcpy(&copy, &l, sizeof l);
        cr_assert_eq(ks_rwlock_init(&l, bad[i]), EINVAL, "flags 0x%x accepted", bad[i]);
        cr_assert_eq(memcmp(&l, &copy, sizeof l), 0, "flags 0x%x: object changed", bad[i]);
    }
    /* A held lock is not reset by a refused init. */
    ks_rwlock_t l = KS_RWLOCK_INIT, copy;
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    memcpy(&copy, &l, sizeof l);
    cr_assert_eq(ks_rwlock_init(&l, 8u), EINVAL);
    cr_assert_eq(memcmp(&l, &copy, sizeof l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
}

Test(rwlock, timed_negative_deadline_is_einval_and_changes_nothing, .timeout = 30)
{
    const int64_t bad[] = {-1, -KS_NSEC_PER_SEC, INT64_MIN, ks_deadline_after(-1)};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (int held = 0; held < 3; held++) { /* free, read-held, write-held */
            ks_rwlock_t l = KS_RWLOCK_INIT, copy;
            if (held == 1)
                cr_assert_eq(ks_rwlock_rdlock(&l), 0);
            if (held == 2)
                cr_assert_eq(ks_rwlock_wrlock(&l), 0);
            memcpy(&copy, &l, sizeof l);
            struct ks_futex_stats a = kt_futex_stats();
            cr_assert_eq(ks_rwlock_timedrdlock(&l, bad[i]), EINVAL, "held %d, deadline %lld", held,
                         (long long)bad[i]);
            cr_assert_eq(memcmp(&l, &copy, sizeof l), 0, "timedrdlock changed the lock (held %d)", held);
            cr_assert_eq(ks_rwlock_timedwrlock(&l, bad[i]), EINVAL, "held %d, deadline %lld", held,
                         (long long)bad[i]);
            cr_assert_eq(memcmp(&l, &copy, sizeof l), 0, "timedwrlock changed the lock (held %d)", held);
            struct ks_futex_stats b = kt_futex_stats();
            cr_assert_eq(b.waits, a.waits);
        }
}

Test(rwlock, unlock_of_unlocked_is_eperm, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_rwlock_t l, copy;
        cr_assert_eq(ks_rwlock_init(&l, f ? KS_SHARED : 0), 0);
        memcpy(&copy, &l, sizeof l);
        cr_assert_eq(ks_rwlock_unlock(&l), EPERM);
        cr_assert_eq(memcmp(&l, &copy, sizeof l), 0);
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), EPERM);
        cr_assert_eq(ks_rwlock_wrlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), EPERM);
        cr_assert_eq(memcmp(&l, &copy, sizeof l), 0);
        /* Still a working lock. */
        cr_assert_eq(ks_rwlock_trywrlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
}

Test(rwlock, try_variants_report_ebusy, .timeout = 30)
{
    ks_rwlock_t l = KS_RWLOCK_INIT;
    /* Write-held: no reader, no other writer. */
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    uint64_t s = state_of(&l);
    cr_assert_eq(ks_rwlock_tryrdlock(&l), EBUSY);
    cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY);
    cr_assert_eq(try_elsewhere(&l, 0), EBUSY);
    cr_assert_eq(try_elsewhere(&l, 1), EBUSY);
    cr_assert_eq(state_of(&l), s, "a failed try changed the state");
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    /* Read-held: more readers yes, a writer no. */
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY);
    cr_assert_eq(try_elsewhere(&l, 1), EBUSY);
    cr_assert_eq(state_of(&l), 1u, "a failed trywrlock changed the state");
    cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
    cr_assert_eq(try_elsewhere(&l, 0), 0);
    cr_assert_eq(held_of(&l), 3u);
    cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(state_of(&l), 0u);
    /* Uncontended try/unlock pairs make no futex calls. */
    struct ks_futex_stats a = kt_futex_stats();
    for (int i = 0; i < 10000; i++) {
        cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
        cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_trywrlock(&l), 0);
        cr_assert_eq(ks_rwlock_tryrdlock(&l), EBUSY);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_wrlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    struct ks_futex_stats b = kt_futex_stats();
    cr_assert_eq(b.waits, a.waits);
    cr_assert_eq(b.wakes, a.wakes);
}

/* ---- timeouts ------------------------------------------------------------------- */

Test(rwlock, timed_variants_time_out_not_early, .timeout = 60)
{
    for (int f = 0; f < 2; f++) {
        ks_rwlock_t l;
        cr_assert_eq(ks_rwlock_init(&l, f ? KS_SHARED : 0), 0);

        /* Write-held: timedrdlock and timedwrlock time out. */
        cr_assert_eq(ks_rwlock_wrlock(&l), 0);
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_rwlock_timedrdlock(&l, 0), ETIMEDOUT);
        cr_assert_eq(ks_rwlock_timedwrlock(&l, 0), ETIMEDOUT);
        cr_assert_eq(ks_rwlock_timedrdlock(&l, ks_now()), ETIMEDOUT);
        cr_assert_eq(ks_rwlock_timedwrlock(&l, ks_now()), ETIMEDOUT);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits, "a past deadline slept");
        const int64_t rel[] = {1 * KT_MS, 50 * KT_MS, 150 * KT_MS};
        for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++)
            for (int w = 0; w < 2; w++) {
                int64_t deadline = ks_deadline_after(rel[k]);
                int r = w ? ks_rwlock_timedwrlock(&l, deadline) : ks_rwlock_timedrdlock(&l, deadline);
                int64_t now = ks_now();
                cr_assert_eq(r, ETIMEDOUT, "%s returned %d", w ? "timedwrlock" : "timedrdlock", r);
                cr_assert_geq(now, deadline, "timed out %lld ns early", (long long)(deadline - now));
                cr_assert_lt(now, deadline + KT_LATE_NS, "%lld ms late", (long long)((now - deadline) / KT_MS));
                cr_assert_eq(held_of(&l), KS_RWLOCK_WRITER);
                cr_assert_eq(writers_waiting(&l), 0u, "a timed-out writer stayed registered");
                cr_assert_eq(state_of(&l) & KS_RWLOCK_WRITER_WAITS, 0u);
            }
        cr_assert_eq(ks_rwlock_unlock(&l), 0);

        /* Read-held: timedwrlock times out, readers still get in afterwards. */
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        for (unsigned k = 0; k < sizeof rel / sizeof rel[0]; k++) {
            int64_t deadline = ks_deadline_after(rel[k]);
            int r = ks_rwlock_timedwrlock(&l, deadline);
            int64_t now = ks_now();
            cr_assert_eq(r, ETIMEDOUT);
            cr_assert_geq(now, deadline, "timed out %lld ns early", (long long)(deadline - now));
            cr_assert_lt(now, deadline + KT_LATE_NS);
            cr_assert_eq(state_of(&l), 1u, "state 0x%llx after a writer timed out",
                         (unsigned long long)state_of(&l));
            cr_assert_eq(ks_rwlock_timedrdlock(&l, 0), 0);
            cr_assert_eq(ks_rwlock_unlock(&l), 0);
        }
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(held_of(&l), 0u);
    }
}

/* A thread that blocks in one lock call and reports how it went. */
struct rblocker {
    ks_rwlock_t *l;
    int write;
    int64_t deadline; /* KS_FOREVER: rdlock / wrlock */
    int unlock_after;
    pid_t tid;
    int ret;
    int64_t t1;
    int done; /* atomic */
};

static void *rblocker_main(void *p)
{
    struct rblocker *b = p;
    __atomic_store_n(&b->tid, kt_gettid(), __ATOMIC_RELEASE);
    if (b->write)
        b->ret = b->deadline == KS_FOREVER ? ks_rwlock_wrlock(b->l) : ks_rwlock_timedwrlock(b->l, b->deadline);
    else
        b->ret = b->deadline == KS_FOREVER ? ks_rwlock_rdlock(b->l) : ks_rwlock_timedrdlock(b->l, b->deadline);
    b->t1 = ks_now();
    if (b->ret == 0 && b->unlock_after)
        ks_rwlock_unlock(b->l);
    __atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static pid_t rblocker_tid(struct rblocker *b)
{
    pid_t t;
    while (!(t = __atomic_load_n(&b->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    return t;
}

static int wait_done(struct rblocker *b, int64_t timeout_ns)
{
    int64_t end = ks_now() + timeout_ns;
    while (!__atomic_load_n(&b->done, __ATOMIC_ACQUIRE))
        if (ks_now() > end)
            return 0;
        else
            kt_sleep_ns(100000);
    return 1;
}

Test(rwlock, waiters_block_and_are_woken, .timeout = 60)
{
    for (int f = 0; f < 2; f++) {
        ks_rwlock_t l;
        cr_assert_eq(ks_rwlock_init(&l, f ? KS_SHARED : 0), 0);
        /* Readers wait for a writer. */
        cr_assert_eq(ks_rwlock_wrlock(&l), 0);
        struct rblocker r[3];
        pthread_t t[3];
        for (int i = 0; i < 3; i++) {
            r[i] = (struct rblocker){.l = &l, .deadline = i ? KS_FOREVER : ks_deadline_after(30 * KS_NSEC_PER_SEC),
                                     .unlock_after = 1, .ret = -1};
            kt_spawn(&t[i], rblocker_main, &r[i]);
        }
        for (int i = 0; i < 3; i++)
            cr_assert(kt_wait_in_futex(rblocker_tid(&r[i]), 20 * KS_NSEC_PER_SEC));
        for (int i = 0; i < 3; i++)
            cr_assert_eq(__atomic_load_n(&r[i].done, __ATOMIC_ACQUIRE), 0, "a reader got in under a writer");
        cr_assert(state_of(&l) & KS_RWLOCK_READERS_SLEEP);
        int64_t t_unlock = ks_now();
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        for (int i = 0; i < 3; i++) {
            kt_join(t[i]);
            cr_assert_eq(r[i].ret, 0);
            cr_assert_geq(r[i].t1, t_unlock);
        }
        cr_assert_eq(state_of(&l), 0u, "state 0x%llx", (unsigned long long)state_of(&l));

        /* A writer waits for the readers. */
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        struct rblocker w = {.l = &l, .write = 1, .deadline = KS_FOREVER, .unlock_after = 1, .ret = -1};
        kt_spawn(&t[0], rblocker_main, &w);
        cr_assert(kt_wait_in_futex(rblocker_tid(&w), 20 * KS_NSEC_PER_SEC));
        /* Registered behind readers counted in the word, or (private lock,
         * reader bias on: the readers woken above turned it on) holding the
         * word and waiting for readers in the table. */
        cr_assert(writers_waiting(&l) == 1u || (!f && held_of(&l) == KS_RWLOCK_WRITER),
                  "state 0x%llx", (unsigned long long)state_of(&l));
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        kt_sleep_ns(10 * KT_MS);
        cr_assert_eq(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE), 0, "the writer got in beside a reader");
        t_unlock = ks_now();
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        kt_join(t[0]);
        cr_assert_eq(w.ret, 0);
        cr_assert_geq(w.t1, t_unlock);
        cr_assert_eq(state_of(&l), 0u, "state 0x%llx", (unsigned long long)state_of(&l));
    }
}

/* ---- a timed-out writer does not leave readers blocked ------------------------------- */

Test(rwlock, timed_out_writer_releases_blocked_readers, .timeout = 60)
{
    for (int f = 0; f < 2; f++) {
        ks_rwlock_t l;
        cr_assert_eq(ks_rwlock_init(&l, f ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_rwlock_rdlock(&l), 0); /* R0 holds it throughout */

        struct rblocker w = {.l = &l, .write = 1, .deadline = ks_deadline_after(300 * KT_MS * KT_SLOW), .ret = -1};
        pthread_t tw, tr;
        kt_spawn(&tw, rblocker_main, &w);
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        while (writers_waiting(&l) == 0 && ks_now() < end)
            sched_yield();
        cr_assert_eq(writers_waiting(&l), 1u);
        cr_assert(state_of(&l) & KS_RWLOCK_WRITER_WAITS);
        /* Writer preference: a new reader must wait now. */
        cr_assert_eq(ks_rwlock_tryrdlock(&l), EBUSY);
        struct rblocker r1 = {.l = &l, .deadline = KS_FOREVER, .unlock_after = 1, .ret = -1};
        kt_spawn(&tr, rblocker_main, &r1);
        cr_assert(kt_wait_in_futex(rblocker_tid(&r1), 20 * KS_NSEC_PER_SEC));
        cr_assert_eq(__atomic_load_n(&r1.done, __ATOMIC_ACQUIRE), 0, "a reader passed a waiting writer");

        kt_join(tw);
        cr_assert_eq(w.ret, ETIMEDOUT, "timedwrlock returned %d", w.ret);
        cr_assert_geq(w.t1, w.deadline);
        /* The blocked reader gets in as soon as the writer gave up. */
        cr_assert(wait_done(&r1, 5 * KS_NSEC_PER_SEC), "a reader stayed blocked after the writer timed out "
                  "(state 0x%llx)", (unsigned long long)state_of(&l));
        kt_join(tr);
        cr_assert_eq(r1.ret, 0);
        /* No trace of the writer, and new readers get in at once. */
        cr_assert_eq(writers_waiting(&l), 0u, "state 0x%llx", (unsigned long long)state_of(&l));
        cr_assert_eq(state_of(&l) & KS_RWLOCK_WRITER_WAITS, 0u, "WRITER_WAITS left set");
        cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
        cr_assert_eq(try_and_release_elsewhere(&l), 0);
        struct ks_futex_stats a = kt_futex_stats();
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        struct ks_futex_stats b = kt_futex_stats();
        cr_assert_eq(b.waits, a.waits);
        /* Three holds; through the table a thread's recursive holds share a slot. */
        if (f)
            cr_assert_eq(readers_of(&l), 3u);
        else
            cr_assert(readers_of(&l) >= 1u && readers_of(&l) <= 3u);
        cr_assert_eq(try_elsewhere(&l, 1), EBUSY);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(readers_of(&l), 0u);
        cr_assert_eq(ks_rwlock_trywrlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
}

/* Two writers time out one after the other; readers behind them get in after
 * the second gives up, not before. */
Test(rwlock, two_timed_out_writers_release_readers_after_the_last, .timeout = 60)
{
    ks_rwlock_t l = KS_RWLOCK_INIT;
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    struct rblocker w1 = {.l = &l, .write = 1, .deadline = ks_deadline_after(200 * KT_MS * KT_SLOW), .ret = -1};
    struct rblocker w2 = {.l = &l, .write = 1, .deadline = ks_deadline_after(500 * KT_MS * KT_SLOW), .ret = -1};
    pthread_t t1, t2, tr;
    kt_spawn(&t1, rblocker_main, &w1);
    kt_spawn(&t2, rblocker_main, &w2);
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while (writers_waiting(&l) != 2 && ks_now() < end)
        sched_yield();
    cr_assert_eq(writers_waiting(&l), 2u);
    struct rblocker r1 = {.l = &l, .deadline = KS_FOREVER, .unlock_after = 1, .ret = -1};
    kt_spawn(&tr, rblocker_main, &r1);
    cr_assert(kt_wait_in_futex(rblocker_tid(&r1), 20 * KS_NSEC_PER_SEC));
    kt_join(t1);
    cr_assert_eq(w1.ret, ETIMEDOUT);
    cr_assert_eq(writers_waiting(&l), 1u);
    cr_assert_eq(__atomic_load_n(&r1.done, __ATOMIC_ACQUIRE), 0, "a reader passed the remaining waiting writer");
    kt_join(t2);
    cr_assert_eq(w2.ret, ETIMEDOUT);
    cr_assert(wait_done(&r1, 5 * KS_NSEC_PER_SEC), "the reader stayed blocked after both writers timed out");
    kt_join(tr);
    cr_assert_eq(r1.ret, 0);
    cr_assert_geq(r1.t1, w2.deadline);
    cr_assert_eq(writers_waiting(&l), 0u);
    cr_assert_eq(state_of(&l) & KS_RWLOCK_WRITER_WAITS, 0u);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(held_of(&l), 0u);
}

/* ---- shared ownership: many readers hold it at once ---------------------------------- */

#define MR_READERS 8

struct manyr {
    ks_rwlock_t l;
    ks_barrier_t inside; /* all readers meet here while holding the lock */
    int concurrent, max_concurrent; /* atomic */
    int errors;                     /* atomic */
    int idx;
};

static void *manyr_main(void *p)
{
    struct manyr *m = p;
    int me = __atomic_fetch_add(&m->idx, 1, __ATOMIC_RELAXED);
    int r;
    switch (me % 3) {
    case 0:
        r = ks_rwlock_tryrdlock(&m->l); /* only readers around: must succeed */
        break;
    case 1:
        r = ks_rwlock_timedrdlock(&m->l, ks_deadline_after(2 * KS_NSEC_PER_SEC * KT_SLOW));
        break;
    default:
        r = ks_rwlock_rdlock(&m->l);
    }
    if (r == 0) {
        int n = __atomic_add_fetch(&m->concurrent, 1, __ATOMIC_RELAXED);
        int mx = __atomic_load_n(&m->max_concurrent, __ATOMIC_RELAXED);
        while (n > mx && !__atomic_compare_exchange_n(&m->max_concurrent, &mx, n, 1, __ATOMIC_RELAXED,
                                                      __ATOMIC_RELAXED))
            ;
    } else {
        __atomic_add_fetch(&m->errors, 1, __ATOMIC_RELAXED);
    }
    /* Every reader reaches this barrier while holding its read lock: it only
     * opens if they all hold the lock at the same time. */
    ks_barrier_wait(&m->inside);
    if (r == 0) {
        __atomic_sub_fetch(&m->concurrent, 1, __ATOMIC_RELAXED);
        if (ks_rwlock_unlock(&m->l) != 0)
            __atomic_add_fetch(&m->errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

Test(rwlock, many_readers_hold_it_at_once, .timeout = 60)
{
    for (int round = 0; round < 20; round++) {
        struct manyr *m = calloc(1, sizeof *m);
        cr_assert_not_null(m);
        cr_assert_eq(ks_rwlock_init(&m->l, (round % 2) ? KS_SHARED : 0), 0);
        cr_assert_eq(ks_barrier_init(&m->inside, MR_READERS, 0), 0);
        pthread_t t[MR_READERS];
        for (int i = 0; i < MR_READERS; i++)
            kt_spawn(&t[i], manyr_main, m);
        for (int i = 0; i < MR_READERS; i++)
            kt_join(t[i]);
        cr_assert_eq(m->errors, 0, "round %d: %d read locks failed", round, m->errors);
        cr_assert_eq(m->max_concurrent, MR_READERS, "round %d: at most %d readers held it at once", round,
                     m->max_concurrent);
        cr_assert_eq(state_of(&m->l), 0u);
        free(m);
    }
}

/* ---- exclusion with exact counters -------------------------------------------------- */

struct excl {
    ks_rwlock_t l;
    int readers, writers;   /* atomic: threads inside as reader / writer */
    int bad_read, bad_write; /* atomic: invariant violations seen */
    long a, b;              /* plain: both incremented by every writer */
    long writes;            /* plain, under the write lock */
    long reads;             /* atomic */
    int errors;             /* atomic */
    uint64_t futex_waits;   /* atomic: summed over the threads */
    int iters, write_permille;
    int idx;
    kt_gate_t gate;
};

static int excl_lock(struct excl *x, int write, int i)
{
    int r;
    switch (i % 3) {
    case 0:
        return write ? ks_rwlock_wrlock(&x->l) : ks_rwlock_rdlock(&x->l);
    case 1:
        return write ? ks_rwlock_timedwrlock(&x->l, ks_deadline_after(60 * KS_NSEC_PER_SEC))
                     : ks_rwlock_timedrdlock(&x->l, ks_deadline_after(60 * KS_NSEC_PER_SEC));
    default:
        while ((r = write ? ks_rwlock_trywrlock(&x->l) : ks_rwlock_tryrdlock(&x->l)) == EBUSY)
            sched_yield();
        return r;
    }
}

static void *excl_main(void *p)
{
    struct excl *x = p;
    int me = __atomic_fetch_add(&x->idx, 1, __ATOMIC_RELAXED);
    uint32_t rnd = 0x9e3779b9u * (uint32_t)(me + 1);
    kt_gate_pass(&x->gate);
    for (int i = 0; i < x->iters; i++) {
        rnd = rnd * 1103515245u + 12345u;
        int write = (int)((rnd >> 8) % 1000) < x->write_permille;
        if (excl_lock(x, write, i + me) != 0) {
            __atomic_add_fetch(&x->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (write) {
            if (__atomic_fetch_add(&x->writers, 1, __ATOMIC_RELAXED) != 0 ||
                __atomic_load_n(&x->readers, __ATOMIC_RELAXED) != 0)
                __atomic_add_fetch(&x->bad_write, 1, __ATOMIC_RELAXED);
            x->a++;
            if (i % 64 == 0)
                kt_sleep_ns(20000); /* hold it long enough for waiters to sleep */
            else if (i % 16 == 0)
                sched_yield();
            x->b++;
            x->writes++;
            __atomic_sub_fetch(&x->writers, 1, __ATOMIC_RELAXED);
        } else {
            __atomic_add_fetch(&x->readers, 1, __ATOMIC_RELAXED);
            if (__atomic_load_n(&x->writers, __ATOMIC_RELAXED) != 0)
                __atomic_add_fetch(&x->bad_read, 1, __ATOMIC_RELAXED);
            long a = x->a;
            if (i % 64 == 0)
                kt_sleep_ns(20000);
            else if (i % 16 == 0)
                sched_yield();
            if (x->b != a)
                __atomic_add_fetch(&x->bad_read, 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&x->reads, 1, __ATOMIC_RELAXED);
            __atomic_sub_fetch(&x->readers, 1, __ATOMIC_RELAXED);
        }
        if (ks_rwlock_unlock(&x->l) != 0)
            __atomic_add_fetch(&x->errors, 1, __ATOMIC_RELAXED);
    }
    struct ks_futex_stats st = kt_futex_stats();
    __atomic_add_fetch(&x->futex_waits, st.waits, __ATOMIC_RELAXED);
    return NULL;
}

static void run_excl(int nthreads, int write_permille, int total)
{
    struct excl *x = calloc(1, sizeof *x);
    cr_assert_not_null(x);
    cr_assert_eq(ks_rwlock_init(&x->l, 0), 0);
    x->iters = total / nthreads;
    x->write_permille = write_permille;
    kt_gate_init(&x->gate, (unsigned)nthreads);
    pthread_t t[KT_MAX_THREADS];
    for (int i = 0; i < nthreads; i++)
        kt_spawn(&t[i], excl_main, x);
    for (int i = 0; i < nthreads; i++)
        kt_join(t[i]);
    long ops = (long)x->iters * nthreads;
    cr_assert_eq(x->errors, 0, "%d lock/unlock calls failed", x->errors);
    cr_assert_eq(x->bad_write, 0, "a writer shared the lock %d times", x->bad_write);
    cr_assert_eq(x->bad_read, 0, "a reader saw a writer or a torn pair %d times", x->bad_read);
    cr_assert_eq(x->a, x->writes);
    cr_assert_eq(x->b, x->writes);
    cr_assert_eq(x->writes + x->reads, ops, "%ld writes + %ld reads != %ld operations", x->writes, x->reads,
                 ops);
    cr_assert_gt(x->writes, 0);
    cr_assert_gt(x->reads, 0);
    cr_assert_eq(state_of(&x->l), 0u, "state 0x%llx left", (unsigned long long)state_of(&x->l));
    /* The slow paths were really exercised (threads slept on the futex). */
    cr_assert_gt(x->futex_waits, 0u, "no thread ever slept: the test did not contend");
    cr_log_info("%d threads: %ld writes, %ld reads, %llu futex waits", nthreads, x->writes, x->reads,
                (unsigned long long)x->futex_waits);
    cr_assert_eq(ks_rwlock_destroy(&x->l), 0);
    kt_gate_destroy(&x->gate);
    free(x);
}

Test(rwlock, exclusion_4_threads_half_writers, .timeout = 120) { run_excl(4, 500, 80000 / KT_SLOW); }
Test(rwlock, exclusion_32_threads_10_percent_writers, .timeout = 120) { run_excl(32, 100, 96000 / KT_SLOW); }

/* ---- writer preference: a stream of readers does not starve a writer --------------- */

#define WP_READERS 6

struct wpref {
    ks_rwlock_t l;
    int stop;   /* atomic */
    int inside; /* atomic: readers holding it */
    long reads; /* atomic */
    int errors; /* atomic */
};

static void *wpref_reader(void *p)
{
    struct wpref *w = p;
    for (int i = 0; !__atomic_load_n(&w->stop, __ATOMIC_RELAXED); i++) {
        int r = (i % 2) ? ks_rwlock_rdlock(&w->l) : ks_rwlock_timedrdlock(&w->l, ks_deadline_after(60 * KS_NSEC_PER_SEC));
        if (r != 0) {
            __atomic_add_fetch(&w->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        __atomic_add_fetch(&w->inside, 1, __ATOMIC_RELAXED);
        kt_sleep_ns(100000); /* hold it a while: the readers overlap */
        __atomic_sub_fetch(&w->inside, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&w->reads, 1, __ATOMIC_RELAXED);
        ks_rwlock_unlock(&w->l);
    }
    return NULL;
}

Test(rwlock, writer_is_not_starved_by_a_stream_of_readers, .timeout = 120)
{
    struct wpref *w = calloc(1, sizeof *w);
    cr_assert_not_null(w);
    pthread_t t[WP_READERS];
    for (int i = 0; i < WP_READERS; i++)
        kt_spawn(&t[i], wpref_reader, w);
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while (__atomic_load_n(&w->reads, __ATOMIC_RELAXED) < 200 && ks_now() < end)
        kt_sleep_ns(KT_MS);
    cr_assert_geq(__atomic_load_n(&w->reads, __ATOMIC_RELAXED), 200, "the readers are not running");
    const int64_t bound = 2 * KS_NSEC_PER_SEC * KT_SLOW;
    int64_t worst = 0;
    for (int k = 0; k < 5; k++) {
        int64_t t0 = ks_now();
        int r = ks_rwlock_timedwrlock(&w->l, t0 + bound);
        int64_t waited = ks_now() - t0;
        cr_assert_eq(r, 0, "attempt %d: the writer did not get the lock within %lld ms (%d)", k,
                     (long long)(bound / KT_MS), r);
        if (waited > worst)
            worst = waited;
        /* While the writer holds it, no reader is inside. */
        for (int s = 0; s < 10; s++) {
            cr_assert_eq(__atomic_load_n(&w->inside, __ATOMIC_RELAXED), 0, "a reader inside with the writer");
            kt_sleep_ns(200000);
        }
        cr_assert_eq(ks_rwlock_unlock(&w->l), 0);
        long before = __atomic_load_n(&w->reads, __ATOMIC_RELAXED);
        end = ks_now() + 10 * KS_NSEC_PER_SEC;
        while (__atomic_load_n(&w->reads, __ATOMIC_RELAXED) < before + 50 && ks_now() < end)
            kt_sleep_ns(KT_MS);
        cr_assert_geq(__atomic_load_n(&w->reads, __ATOMIC_RELAXED), before + 50,
                      "the readers did not resume after the writer");
    }
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < WP_READERS; i++)
        kt_join(t[i]);
    cr_assert_eq(w->errors, 0);
    cr_assert_lt(worst, bound, "the writer waited %lld ms", (long long)(worst / KT_MS));
    cr_log_info("worst writer wait under a reader stream: %lld us", (long long)(worst / 1000));
    cr_assert_eq(state_of(&w->l), 0u, "state 0x%llx", (unsigned long long)state_of(&w->l));
    free(w);
}

/* ---- reader preference (KS_RWLOCK_PREFER_READER, glibc's default kind) ----------- */

Test(rwlock, prefer_reader_lets_a_reader_in_while_a_writer_waits, .timeout = 60)
{
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    struct rblocker w = {.l = &l, .write = 1, .deadline = KS_FOREVER, .unlock_after = 1};
    pthread_t tw;
    kt_spawn(&tw, rblocker_main, &w);
    cr_assert(kt_wait_in_futex(rblocker_tid(&w), 10 * KS_NSEC_PER_SEC));
    cr_assert_eq(writers_waiting(&l), 1u);
    /* A reader that already holds it takes it again (a recursive read lock
     * that writer preference would deadlock), by try, plain and timed lock. */
    cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, ks_deadline_after(KT_MS)), 0);
    /* So does another thread. */
    cr_assert_eq(try_elsewhere(&l, 0), 0);
    cr_assert_eq(held_of(&l), 5u);
    cr_assert_eq(try_elsewhere(&l, 1), EBUSY);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert(wait_done(&w, 10 * KS_NSEC_PER_SEC), "the writer never got the lock");
    kt_join(tw);
    cr_assert_eq(w.ret, 0);
    cr_assert_eq(state_of(&l), 0u, "state 0x%llx", (unsigned long long)state_of(&l));
}

Test(rwlock, prefer_reader_readers_behind_a_writer_are_not_stranded_when_writers_wait, .timeout = 60)
{
    /* A writer holds it, a reader sleeps, a second writer waits: the unlock
     * must wake the reader too (it slept for the writer that left, not for
     * the waiting one; under writer preference the waiting writer's unlock
     * wakes it). */
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0);
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    struct rblocker r = {.l = &l, .write = 0, .deadline = KS_FOREVER, .unlock_after = 0};
    struct rblocker w = {.l = &l, .write = 1, .deadline = KS_FOREVER, .unlock_after = 1};
    pthread_t tr, tw;
    kt_spawn(&tr, rblocker_main, &r);
    cr_assert(kt_wait_in_futex(rblocker_tid(&r), 10 * KS_NSEC_PER_SEC));
    kt_spawn(&tw, rblocker_main, &w);
    cr_assert(kt_wait_in_futex(rblocker_tid(&w), 10 * KS_NSEC_PER_SEC));
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert(wait_done(&r, 10 * KS_NSEC_PER_SEC), "the reader slept on behind a waiting writer");
    cr_assert_eq(r.ret, 0);
    kt_join(tr);
    cr_assert_eq(ks_rwlock_unlock(&l), 0); /* the reader's hold: now the writer goes */
    cr_assert(wait_done(&w, 10 * KS_NSEC_PER_SEC));
    kt_join(tw);
    cr_assert_eq(w.ret, 0);
    cr_assert_eq(state_of(&l) & ~(uint64_t)KS_RWLOCK_READERS_SLEEP, 0u);
}

Test(rwlock, prefer_reader_new_readers_wait_for_a_writer_once_readers_drained, .timeout = 30)
{
    /* White-box: a registered writer, nobody inside (the moment after the
     * last reader left and before the woken writer runs).  A new reader
     * does not barge in: a stream of them would starve writers for good.
     * With a reader inside, another one enters (a recursive read lock). */
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0);
    l.state = KS_RWLOCK_ONE_WRITER | KS_RWLOCK_WRITER_WAITS;
    cr_assert_eq(ks_rwlock_tryrdlock(&l), EBUSY);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, ks_deadline_after(KT_MS)), ETIMEDOUT);
    l.state = KS_RWLOCK_ONE_WRITER | KS_RWLOCK_WRITER_WAITS | 1u;
    cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, ks_deadline_after(KT_MS)), 0);
    cr_assert_eq(held_of(&l), 3u);
}

/* ---- the reader limit ---------------------------------------------------------------- */

Test(rwlock, max_readers_is_eagain, .timeout = 30)
{
    ks_rwlock_t l = KS_RWLOCK_INIT;
    /* White-box: pretend MAX-1 readers hold it. */
    l.state = KS_RWLOCK_MAX_READERS - 1;
    cr_assert_eq(ks_rwlock_tryrdlock(&l), 0, "the last reader slot was refused");
    cr_assert_eq(state_of(&l), KS_RWLOCK_MAX_READERS);
    struct ks_futex_stats a = kt_futex_stats();
    cr_assert_eq(ks_rwlock_tryrdlock(&l), EAGAIN);
    cr_assert_eq(ks_rwlock_rdlock(&l), EAGAIN);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, ks_deadline_after(KS_NSEC_PER_SEC)), EAGAIN);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, 0), EAGAIN);
    struct ks_futex_stats b = kt_futex_stats();
    cr_assert_eq(b.waits, a.waits, "a refused reader slept");
    cr_assert_eq(state_of(&l), KS_RWLOCK_MAX_READERS, "a refused reader changed the state");
    /* Not mistaken for a writer. */
    cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY);
    cr_assert_eq(state_of(&l), KS_RWLOCK_MAX_READERS);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(state_of(&l), KS_RWLOCK_MAX_READERS - 1);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    /* Restore. */
    l.state = 0;
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_destroy(&l), 0);
}

/* ---- process-shared across fork() ---------------------------------------------------- */

#define SH_ITERS 20000

struct shm_rw {
    ks_rwlock_t l;
    int held;          /* atomic: the child holds a read lock */
    int64_t t_unlock;  /* written by the child before it unlocks */
    long a, b, writes; /* under the write lock */
    long reads;        /* atomic */
    int readers, writers;
};

static int child_blocks_on_write_held(void *p)
{
    struct shm_rw *s = p;
    alarm(60); /* never outlive a hung test */
    if (ks_rwlock_tryrdlock(&s->l) != EBUSY)
        return 1;
    if (ks_rwlock_trywrlock(&s->l) != EBUSY)
        return 2;
    if (ks_rwlock_timedrdlock(&s->l, ks_deadline_after(30 * KS_NSEC_PER_SEC)) != 0)
        return 3;
    if (s->a != 5)
        return 4;
    return ks_rwlock_unlock(&s->l) == 0 ? 0 : 5;
}

static int child_holds_read(void *p)
{
    struct shm_rw *s = p;
    alarm(60);
    if (ks_rwlock_rdlock(&s->l) != 0)
        return 1;
    __atomic_store_n(&s->held, 1, __ATOMIC_RELEASE);
    /* Hold it until the parent's writer is registered (and asleep). */
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while ((__atomic_load_n(&s->l.state, __ATOMIC_RELAXED) >> 32) == 0)
        if (ks_now() > end)
            return 2;
        else
            kt_sleep_ns(100000);
    kt_sleep_ns(20 * KT_MS);
    s->t_unlock = ks_now();
    return ks_rwlock_unlock(&s->l) == 0 ? 0 : 3;
}

static int shm_mixed(struct shm_rw *s, int seed)
{
    uint32_t rnd = 0x9e3779b9u * (uint32_t)seed;
    for (int i = 0; i < SH_ITERS / KT_SLOW; i++) {
        rnd = rnd * 1103515245u + 12345u;
        int write = (rnd >> 8) % 5 == 0;
        if ((write ? ks_rwlock_wrlock(&s->l) : ks_rwlock_rdlock(&s->l)) != 0)
            return 10;
        if (write) {
            if (__atomic_fetch_add(&s->writers, 1, __ATOMIC_RELAXED) != 0 ||
                __atomic_load_n(&s->readers, __ATOMIC_RELAXED) != 0)
                return 11;
            s->a++;
            if (i % 64 == 0)
                sched_yield();
            s->b++;
            s->writes++;
            __atomic_sub_fetch(&s->writers, 1, __ATOMIC_RELAXED);
        } else {
            __atomic_add_fetch(&s->readers, 1, __ATOMIC_RELAXED);
            if (__atomic_load_n(&s->writers, __ATOMIC_RELAXED) != 0)
                return 12;
            long a = s->a;
            if (i % 64 == 0)
                sched_yield();
            if (s->b != a)
                return 13;
            __atomic_add_fetch(&s->reads, 1, __ATOMIC_RELAXED);
            __atomic_sub_fetch(&s->readers, 1, __ATOMIC_RELAXED);
        }
        if (ks_rwlock_unlock(&s->l) != 0)
            return 14;
    }
    return 0;
}

static int child_mixed(void *p)
{
    alarm(60);
    return shm_mixed(p, 2);
}

Test(rwlock, process_shared_across_fork, .timeout = 120)
{
    struct shm_rw *s = kt_shared_alloc(sizeof *s);
    cr_assert_eq(ks_rwlock_init(&s->l, KS_SHARED), 0);

    /* The child blocks as a reader behind the parent's write lock. */
    cr_assert_eq(ks_rwlock_wrlock(&s->l), 0);
    pid_t pid = kt_fork(child_blocks_on_write_held, s);
    cr_assert(kt_wait_child_in_futex(pid, 20 * KS_NSEC_PER_SEC), "the child never slept");
    cr_assert(state_of(&s->l) & KS_RWLOCK_READERS_SLEEP);
    s->a = 5;
    cr_assert_eq(ks_rwlock_unlock(&s->l), 0);
    kt_wait_child(pid);
    cr_assert_eq(held_of(&s->l), 0u);

    /* The parent blocks as a writer behind the child's read lock. */
    pid = kt_fork(child_holds_read, s);
    int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
    while (!__atomic_load_n(&s->held, __ATOMIC_ACQUIRE) && ks_now() < end)
        kt_sleep_ns(100000);
    cr_assert_eq(ks_rwlock_trywrlock(&s->l), EBUSY);
    cr_assert_eq(ks_rwlock_timedwrlock(&s->l, ks_deadline_after(30 * KS_NSEC_PER_SEC)), 0,
                 "the child's unlock never woke the writer");
    int64_t got = ks_now();
    kt_wait_child(pid);
    cr_assert_geq(got, s->t_unlock);
    cr_assert_eq(ks_rwlock_unlock(&s->l), 0);
    cr_assert_eq(state_of(&s->l), 0u);

    /* Both processes mix reads and writes. */
    s->a = s->b = s->writes = 0;
    pid = kt_fork(child_mixed, s);
    int mine = shm_mixed(s, 1);
    kt_wait_child(pid);
    cr_assert_eq(mine, 0, "parent failed check %d", mine);
    cr_assert_eq(s->a, s->writes);
    cr_assert_eq(s->b, s->writes);
    cr_assert_eq(s->writes + s->reads, 2L * (SH_ITERS / KT_SLOW));
    cr_assert_eq(state_of(&s->l), 0u, "state 0x%llx", (unsigned long long)state_of(&s->l));
    kt_shared_free(s, sizeof *s);
}

/* ---- unlock and a giving-up writer touch nothing after their releasing CAS -------------- */

static ks_rwlock_t *watched_rwlock;
static int watched_registered;

static int rwlock_free_of_holders(void) { return held_of(watched_rwlock) == 0; }

Test(rwlock, unlock_touches_nothing_after_release, .timeout = 30)
{
    _Alignas(16) static ks_rwlock_t l;
    watched_rwlock = &l;
    struct kt_watch w = {.n = 0};
    _Static_assert(sizeof(ks_rwlock_t) == 16, "two 8-byte watches cover the lock");
    if (kt_watch_add(&w, &l, 8) != 0 || kt_watch_add(&w, (char *)&l + 8, 8) != 0)
        cr_skip_test("no hardware watchpoints here (perf_event_open: %s)", strerror(errno));

    /* Calibration: release, then read the flags. */
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    __atomic_store_n(&l.state, KS_RWLOCK_WRITER, __ATOMIC_RELAXED);
    kt_watch_begin(&w, rwlock_free_of_holders);
    __atomic_store_n(&l.state, 0, __ATOMIC_RELEASE);
    (void)*(volatile uint32_t *)&l.flags;
    kt_watch_end(&w);
    cr_assert_eq(w.hits, 2, "the watchpoint saw %d accesses, not 2", w.hits);
    cr_assert_eq(w.after, 2, "the watchpoint missed an access after release");

    const uint64_t W = KS_RWLOCK_WRITER, RS = KS_RWLOCK_READERS_SLEEP,
                   WW = KS_RWLOCK_WRITER_WAITS | KS_RWLOCK_ONE_WRITER;
    /* Held states (the sleepers and waiting writers are simulated: the
     * wakes find nobody) and the state each unlock must leave. */
    const struct {
        uint64_t before, after;
    } cases[] = {
        {W, 0},           {W | RS, 0},      {W | WW, WW},         {W | RS | WW, RS | WW},
        {1, 0},           {1 | RS, 0},      {1 | WW, WW},         {1 | RS | WW, RS | WW},
        {3 | WW, 2 | WW}, /* not the last reader: releases nothing */
    };
    for (int f = 0; f < 2; f++)
        for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            cr_assert_eq(ks_rwlock_init(&l, f ? KS_SHARED : 0), 0);
            __atomic_store_n(&l.state, cases[i].before, __ATOMIC_RELAXED);
            kt_watch_begin(&w, rwlock_free_of_holders);
            int r = ks_rwlock_unlock(&l);
            kt_watch_end(&w);
            cr_assert_eq(r, 0);
            cr_assert_geq(w.hits, 1, "the watchpoint saw nothing");
            cr_assert_leq(w.after, 1,
                          "unlock (state 0x%llx, flags %d) accessed the lock %d more times after "
                          "the releasing CAS",
                          (unsigned long long)cases[i].before, f, w.after - 1);
            if ((cases[i].after & KS_RWLOCK_WRITER) != 0)
                cr_assert_eq(w.after, 0);
            cr_assert_eq(state_of(&l), cases[i].after, "case %u: state 0x%llx after unlock", i,
                         (unsigned long long)state_of(&l));
        }
    kt_watch_close(&w);
}

/* "Released" for a waiting writer: it registered, and has unregistered again. */
static int rwlock_writer_gone(void)
{
    if (writers_waiting(watched_rwlock))
        watched_registered = 1;
    return watched_registered && writers_waiting(watched_rwlock) == 0;
}

Test(rwlock, timed_out_writer_touches_nothing_after_giving_up, .timeout = 30)
{
    _Alignas(16) static ks_rwlock_t l;
    watched_rwlock = &l;
    struct kt_watch w = {.n = 0};
    if (kt_watch_add(&w, &l, 8) != 0 || kt_watch_add(&w, (char *)&l + 8, 8) != 0)
        cr_skip_test("no hardware watchpoints here (perf_event_open: %s)", strerror(errno));
    for (int f = 0; f < 2; f++)
        for (int rs = 0; rs < 2; rs++) {
            int r = -1;
            /* A deadline that passes before the writer registers (a preempted
             * thread) makes it give up without registering: try again then. */
            for (int attempt = 0; attempt < 20; attempt++) {
                cr_assert_eq(ks_rwlock_init(&l, f ? KS_SHARED : 0), 0);
                /* A (simulated) reader holds it, maybe with readers asleep behind. */
                __atomic_store_n(&l.state, 1 | (rs ? KS_RWLOCK_READERS_SLEEP : 0), __ATOMIC_RELAXED);
                watched_registered = 0;
                kt_watch_begin(&w, rwlock_writer_gone);
                r = ks_rwlock_timedwrlock(&l, ks_deadline_after(20 * KT_MS));
                kt_watch_end(&w);
                if (watched_registered)
                    break;
            }
            cr_assert_eq(r, ETIMEDOUT);
            cr_assert(watched_registered, "the writer never registered in 20 attempts");
            cr_assert_eq(w.after, 1,
                         "the writer accessed the lock %d times after unregistering (RS %d, flags %d)",
                         w.after - 1, rs, f);
            cr_assert_eq(state_of(&l), 1u, "state 0x%llx after the writer gave up",
                         (unsigned long long)state_of(&l));
        }
    kt_watch_close(&w);
}

/* ---- reader bias: the visible-readers table (src/rwlock.c, docs/rwlock.md) ------------- */

/* Turn the bias on the way a contended reader does: a read lock that goes
 * through the slow path while no writer waits. */
static void bias_on(ks_rwlock_t *l)
{
    cr_assert_eq(ks_rwlock_rdlock_slow(l, KS_FOREVER), 0);
    cr_assert_eq(ks_rwlock_unlock(l), 0);
}

/* A fresh writer-preferring lock, read-held by the caller through the table. */
static void read_held_in_table(ks_rwlock_t *l)
{
    cr_assert_eq(ks_rwlock_init(l, 0), 0);
    bias_on(l);
    cr_assert_eq(ks_rwlock_rdlock(l), 0);
    cr_assert_eq(ks_rwlock_table_readers_(l), 1u);
}

Test(rwlock, bias_reader_enters_through_the_table, .timeout = 30)
{
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    bias_on(&l);
    cr_assert_eq(bias_of(&l) & (KS_RWLOCK_BIAS | KS_RWLOCK_BIAS_USED), KS_RWLOCK_BIAS | KS_RWLOCK_BIAS_USED);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(state_of(&l), 0u, "a biased reader touched the word: 0x%llx", (unsigned long long)state_of(&l));
    cr_assert_eq(ks_rwlock_table_readers_(&l), 1u);
    /* Recursive holds (plain, try, timed) deepen the same slot. */
    cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, ks_deadline_after(KT_MS)), 0);
    cr_assert_eq(ks_rwlock_table_readers_(&l), 1u);
    cr_assert_eq(ks_rwlock_destroy(&l), EBUSY, "destroy missed a reader in the table");
    cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY);
    cr_assert_eq(try_elsewhere(&l, 1), EBUSY);
    cr_assert_eq(held_of(&l), 0u, "a failed trywrlock kept the word");
    /* The failed trywrlocks saw the reader in the table and left the
     * word and the bias alone; the readers are still inside. */
    cr_assert_eq(bias_of(&l) & (KS_RWLOCK_BIAS | KS_RWLOCK_BIAS_USED), KS_RWLOCK_BIAS | KS_RWLOCK_BIAS_USED);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_table_readers_(&l), 0u);
    cr_assert_eq(ks_rwlock_unlock(&l), EPERM);
    /* A writer now scans, finds nobody and clears BIAS_USED. */
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    cr_assert_eq(bias_of(&l) & (KS_RWLOCK_BIAS | KS_RWLOCK_BIAS_USED), 0u);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(state_of(&l), 0u);
    cr_assert_eq(ks_rwlock_destroy(&l), 0);
}

/* A thread has room for 4 holds through the table (NHELD in src/rwlock.c):
 * read locks on more biased locks at once go through their words, and
 * each unlock, in any order, finds where its hold is.  The library's
 * shortcut for a biased read (rdlock_biased) and for its unlock must fall
 * through to the general path for the locks whose hold is in the word. */
Test(rwlock, bias_more_read_holds_than_table_room, .timeout = 30)
{
    enum { N = 6 };
    ks_rwlock_t l[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(ks_rwlock_init(&l[i], 0), 0);
        bias_on(&l[i]);
    }
    unsigned in_table = 0, in_word = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(ks_rwlock_rdlock(&l[i]), 0);
        cr_assert_eq(ks_rwlock_timedrdlock(&l[i], ks_deadline_after(KT_MS)), 0, "recursive hold of lock %d", i);
        unsigned t = ks_rwlock_table_readers_(&l[i]);
        uint64_t w = state_of(&l[i]);
        cr_assert((t == 1 && w == 0) || (t == 0 && w == 2), "lock %d: %u in the table, word 0x%llx", i, t,
                  (unsigned long long)w);
        in_table += t;
        in_word += w == 2;
    }
    /* Four if the six locks hash to different windows of the table; locks
     * that share a window share this thread's slot, and fewer fit (more
     * likely with more CPUs: the windows are wider and fewer, 4 of 256
     * slots above 64 CPUs). */
    cr_assert(in_table >= 1 && in_table <= 4, "the table took %u holds", in_table);
    cr_assert_eq(in_table + in_word, (unsigned)N);
    /* Release one level of each, odd locks first, then the rest in reverse. */
    for (int i = 1; i < N; i += 2)
        cr_assert_eq(ks_rwlock_unlock(&l[i]), 0);
    for (int i = 0; i < N; i += 2)
        cr_assert_eq(ks_rwlock_unlock(&l[i]), 0);
    for (int i = N - 1; i >= 0; i--) {
        cr_assert_eq(ks_rwlock_unlock(&l[i]), 0, "lock %d", i);
        cr_assert_eq(ks_rwlock_table_readers_(&l[i]), 0u);
        cr_assert_eq(state_of(&l[i]), 0u, "lock %d: word 0x%llx", i, (unsigned long long)state_of(&l[i]));
        cr_assert_eq(ks_rwlock_unlock(&l[i]), EPERM, "lock %d released once too often", i);
    }
    /* Every lock is free: another thread can read it, and a writer finds
     * nobody inside (a hold left in the table would make it wait). */
    for (int i = 0; i < N; i++) {
        cr_assert_eq(try_and_release_elsewhere(&l[i]), 0, "lock %d", i);
        cr_assert_eq(ks_rwlock_timedwrlock(&l[i], ks_deadline_after(KT_MS)), 0, "lock %d", i);
        cr_assert_eq(ks_rwlock_unlock(&l[i]), 0);
        cr_assert_eq(ks_rwlock_destroy(&l[i]), 0);
    }
}

Test(rwlock, bias_is_never_used_by_a_shared_lock, .timeout = 30)
{
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_SHARED), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ks_rwlock_rdlock_slow(&l, KS_FOREVER), 0);
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(held_of(&l), 2u);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    cr_assert_eq(bias_of(&l), 0u, "a KS_SHARED lock used the per-process table");
    cr_assert_eq(ks_rwlock_table_readers_(&l), 0u);
}

/* A reader holds it through the table; a writer revokes and must wait for
 * it: nobody may see the writer inside while the reader is, and readers
 * that come after the writer wait for it (writer preference). */
Test(rwlock, bias_writer_waits_for_a_reader_in_the_table, .timeout = 60)
{
    ks_rwlock_t l;
    read_held_in_table(&l);
    struct rblocker w = {.l = &l, .write = 1, .deadline = KS_FOREVER, .unlock_after = 1, .ret = -1};
    pthread_t tw, tr;
    kt_spawn(&tw, rblocker_main, &w);
    cr_assert(kt_wait_in_futex(rblocker_tid(&w), 20 * KS_NSEC_PER_SEC), "the writer did not sleep");
    cr_assert_eq(held_of(&l), KS_RWLOCK_WRITER, "the writer waits holding the word");
    cr_assert_eq(bias_of(&l) & KS_RWLOCK_BIAS, 0u, "the writer did not revoke the bias");
    cr_assert_eq(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE), 0, "the writer got in beside a reader");
    /* A new reader (another thread) waits for the writer. */
    struct rblocker r = {.l = &l, .deadline = KS_FOREVER, .unlock_after = 1, .ret = -1};
    kt_spawn(&tr, rblocker_main, &r);
    cr_assert(kt_wait_in_futex(rblocker_tid(&r), 20 * KS_NSEC_PER_SEC));
    /* The holder takes it again: a recursive read lock survives the
     * revocation (the slot is already held). */
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    kt_sleep_ns(10 * KT_MS);
    cr_assert_eq(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE), 0, "the writer got in beside a reader");
    int64_t t_unlock = ks_now();
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    kt_join(tw);
    cr_assert_eq(w.ret, 0);
    cr_assert_geq(w.t1, t_unlock);
    kt_join(tr);
    cr_assert_eq(r.ret, 0);
    cr_assert_geq(r.t1, w.t1, "the reader got in before the writer");
    cr_assert_eq(readers_of(&l), 0u);
    cr_assert_eq(state_of(&l) & ~(uint64_t)KS_RWLOCK_READERS_SLEEP, 0u, "state 0x%llx",
                 (unsigned long long)state_of(&l));
}

/* A timed writer that times out waiting for a reader in the table gives the
 * word back and leaves nothing behind: blocked readers get in, the reader
 * still holds it, and a later writer gets it once the reader leaves. */
Test(rwlock, bias_timed_out_writer_gives_the_word_back, .timeout = 60)
{
    ks_rwlock_t l;
    read_held_in_table(&l);
    struct rblocker w = {.l = &l, .write = 1, .deadline = ks_deadline_after(200 * KT_MS), .ret = -1};
    pthread_t tw, tr;
    kt_spawn(&tw, rblocker_main, &w);
    cr_assert(kt_wait_in_futex(rblocker_tid(&w), 20 * KS_NSEC_PER_SEC));
    struct rblocker r = {.l = &l, .deadline = KS_FOREVER, .unlock_after = 1, .ret = -1};
    kt_spawn(&tr, rblocker_main, &r);
    kt_join(tw);
    cr_assert_eq(w.ret, ETIMEDOUT);
    cr_assert_geq(w.t1, w.deadline);
    cr_assert(wait_done(&r, 5 * KS_NSEC_PER_SEC), "a reader stayed blocked after the writer gave up (0x%llx)",
              (unsigned long long)state_of(&l));
    kt_join(tr);
    cr_assert_eq(r.ret, 0);
    cr_assert_eq(ks_rwlock_table_readers_(&l), 1u, "the main thread's hold is gone");
    cr_assert_eq(ks_rwlock_timedwrlock(&l, ks_deadline_after(KT_MS)), ETIMEDOUT);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_trywrlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(state_of(&l) & ~(uint64_t)KS_RWLOCK_READERS_SLEEP, 0u);
    cr_assert_eq(ks_rwlock_destroy(&l), 0);
}

/* Destroy-while-free with the bias: a heap lock freed by the writer right
 * after the last table reader left and the writer unlocked (ASan catches a
 * late access). */
struct bias_free {
    ks_rwlock_t *l;
    int go; /* atomic */
};

static void *bias_free_reader(void *p)
{
    struct bias_free *b = p;
    ks_rwlock_t *l = b->l;
    cr_assert_eq(ks_rwlock_rdlock(l), 0);
    __atomic_store_n(&b->go, 1, __ATOMIC_RELEASE);
    kt_sleep_ns(2 * KT_MS);
    cr_assert_eq(ks_rwlock_unlock(l), 0); /* the last access to *l by this thread */
    return NULL;
}

Test(rwlock, bias_lock_destroyed_right_after_the_last_unlock, .timeout = 60)
{
    for (int round = 0; round < 200; round++) {
        struct bias_free b = {.l = malloc(sizeof(ks_rwlock_t))};
        cr_assert_not_null(b.l);
        cr_assert_eq(ks_rwlock_init(b.l, 0), 0);
        bias_on(b.l);
        pthread_t t;
        kt_spawn(&t, bias_free_reader, &b);
        while (!__atomic_load_n(&b.go, __ATOMIC_ACQUIRE))
            sched_yield();
        cr_assert_eq(ks_rwlock_wrlock(b.l), 0);
        cr_assert_eq(ks_rwlock_unlock(b.l), 0);
        cr_assert_eq(ks_rwlock_destroy(b.l), 0);
        free(b.l);
        kt_join(t);
    }
}

/* Exclusion with the bias in play: 99% reads, so readers contend and turn
 * it on, and writers revoke it again and again. */
Test(rwlock, exclusion_16_threads_1_percent_writers, .timeout = 120) { run_excl(16, 10, 96000 / KT_SLOW); }

/* ---- the review's findings on the bias (each failed before its fix) ---- */

static void *timedrd_1s(void *p)
{
    ks_rwlock_t *l = p;
    int r = ks_rwlock_timedrdlock(l, ks_deadline_after(KS_NSEC_PER_SEC));
    if (r == 0)
        ks_rwlock_unlock(l);
    return (void *)(intptr_t)r;
}

/* Reader preference lets a new reader in while a reader is inside, even
 * with a writer waiting.  A reader inside the table is invisible to the
 * word, so a reader-preferring lock never uses the table. */
Test(rwlock, bias_a_prefer_reader_lock_never_uses_the_table, .timeout = 30)
{
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0);
    bias_on(&l);
    cr_assert_eq(bias_of(&l), 0u, "a reader-preferring lock turned the bias on");
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_table_readers_(&l), 0u);
    struct rblocker w = {.l = &l, .write = 1, .deadline = KS_FOREVER, .unlock_after = 1, .ret = -1};
    pthread_t tw, tr;
    kt_spawn(&tw, rblocker_main, &w);
    cr_assert(kt_wait_in_futex(rblocker_tid(&w), 20 * KS_NSEC_PER_SEC), "the writer did not sleep");
    kt_spawn(&tr, timedrd_1s, &l);
    int r = (int)(intptr_t)kt_join(tr);
    cr_assert_eq(r, 0, "a second reader could not enter while a reader was inside (%s)", strerror(r));
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    kt_join(tw);
    cr_assert_eq(w.ret, 0);
}

/* A trywrlock that fails because of a reader in the table must not make a
 * concurrent tryrdlock fail: only readers hold the lock. */
static int stop_trywr;
static void *trywr_loop(void *p)
{
    ks_rwlock_t *l = p;
    while (!__atomic_load_n(&stop_trywr, __ATOMIC_RELAXED))
        if (ks_rwlock_trywrlock(l) == 0)
            ks_rwlock_unlock(l);
    return NULL;
}

static void *tryrd_loop(void *p)
{
    ks_rwlock_t *l = p;
    intptr_t busy = 0;
    for (int64_t end = ks_now() + 300 * KT_MS; ks_now() < end;) {
        if (ks_rwlock_tryrdlock(l) == 0)
            ks_rwlock_unlock(l);
        else
            busy++;
    }
    return (void *)busy;
}

Test(rwlock, bias_a_failed_trywrlock_does_not_disturb_tryrdlock, .timeout = 30)
{
    ks_rwlock_t l;
    read_held_in_table(&l); /* throughout */
    __atomic_store_n(&stop_trywr, 0, __ATOMIC_RELAXED);
    pthread_t t, r;
    kt_spawn(&t, trywr_loop, &l);
    kt_spawn(&r, tryrd_loop, &l);
    intptr_t busy = (intptr_t)kt_join(r);
    __atomic_store_n(&stop_trywr, 1, __ATOMIC_RELAXED);
    kt_join(t);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    /* The trywrlock looks at the table first; a reader entering between the
     * look and its CAS still makes it take the word and give it back, so a
     * handful of failures remain possible, not millions. */
    cr_assert_lt(busy, 100, "tryrdlock failed %ld times with only readers inside", (long)busy);
}

/* fork(): the child holds only the forking thread; slots of the parent's
 * other threads must not make a writer in the child wait for ever (here on
 * a lock the child re-initialises at the same address). */
static int holding_fork, release_fork;
static void *hold_in_table(void *p)
{
    ks_rwlock_t *l = p;
    ks_rwlock_rdlock(l);
    __atomic_store_n(&holding_fork, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&release_fork, __ATOMIC_ACQUIRE))
        kt_sleep_ns(KT_MS);
    ks_rwlock_unlock(l);
    return NULL;
}

Test(rwlock, bias_a_fork_child_does_not_wait_for_the_parents_table_readers, .timeout = 30)
{
    static ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    bias_on(&l);
    pthread_t t;
    kt_spawn(&t, hold_in_table, &l);
    while (!__atomic_load_n(&holding_fork, __ATOMIC_ACQUIRE))
        kt_sleep_ns(KT_MS);
    cr_assert_eq(ks_rwlock_table_readers_(&l), 1u);
    pid_t pid = fork();
    if (pid == 0) {
        ks_rwlock_init(&l, 0);
        bias_on(&l);
        int ok = ks_rwlock_timedwrlock(&l, ks_deadline_after(KS_NSEC_PER_SEC)) == 0;
        _exit(ok ? 0 : 1);
    }
    cr_assert_gt(pid, 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    __atomic_store_n(&release_fork, 1, __ATOMIC_RELEASE);
    kt_join(t);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's writer waited for a thread that is not there");
}

/* ---- ks_rwlock_wrlock2: two at once in one global order (the bank transfer) ----------------- */

static int l2_lock(void *l) { return ks_rwlock_wrlock(l); }
static int l2_unlock(void *l) { return ks_rwlock_unlock(l); }
static int l2_trylock(void *l) { return ks_rwlock_trywrlock(l); }
static int l2_lock2(void *a, void *b) { return ks_rwlock_wrlock2(a, b); }
static int l2_timedlock2(void *a, void *b, int64_t d) { return ks_rwlock_timedwrlock2(a, b, d); }
static int l2_unlock2(void *a, void *b) { return ks_rwlock_unlock2(a, b); }
static const struct kt_lock2_ops l2_ops = {l2_lock, l2_unlock, l2_trylock, l2_lock2, l2_timedlock2, l2_unlock2};

Test(rwlock, lock2_in_opposite_orders_does_not_deadlock, .timeout = 120)
{
    static ks_rwlock_t locks[KT_ACCOUNTS] = {KS_RWLOCK_INIT, KS_RWLOCK_INIT, KS_RWLOCK_INIT, KS_RWLOCK_INIT};
    void *p[KT_ACCOUNTS] = {&locks[0], &locks[1], &locks[2], &locks[3]};
    kt_bank_run(&l2_ops, p, 16);
}

Test(rwlock, timedlock2_gives_back_the_first_when_the_second_times_out, .timeout = 30)
{
    static ks_rwlock_t x = KS_RWLOCK_INIT, y = KS_RWLOCK_INIT;
    kt_lock2_contract(&l2_ops, &x, &y);
}
