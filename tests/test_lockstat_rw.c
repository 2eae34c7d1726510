/* tests/test_lockstat_rw.c - lock statistics of the rwlock (its read and
 * write sides) and of the semaphore (docs/lockstat.md).  Criterion runs
 * each test in a process of its own, so the global mode never leaks from
 * one test into the next.  The mutex's are in tests/test_lockstat.c. */
#include "helpers.h"

#include <string.h>

unsigned ks_rwlock_table_readers_(const ks_rwlock_t *l); /* src/rwlock.c, for tests */

/* The record of `lock` of `kind` (an rwlock has one per side). */
static struct ks_lockstat stat_of(const void *lock, unsigned kind)
{
    struct ks_lockstat all[64];
    size_t n = ks_lockstat_read(all, 64);
    for (size_t i = 0; i < n && i < 64; i++)
        if (all[i].lock == lock && all[i].kind == kind)
            return all[i];
    cr_assert_fail("no record of kind %u for %p among %zu", kind, lock, n);
    struct ks_lockstat none = {0};
    return none;
}

static uint32_t bias(const ks_rwlock_t *l)
{
    return __atomic_load_n(&l->bias, __ATOMIC_RELAXED);
}

static void busy_ns(int64_t ns)
{
    int64_t end = ks_now() + ns;
    while (ks_now() < end)
        ;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Wait (at most 30 s) until `bit` shows in the rwlock's word: another
 * thread is in the slow path and about to sleep. */
static void until_state(const ks_rwlock_t *l, uint64_t bit)
{
    int64_t give_up = ks_now() + 30 * INT64_C(1000000000);
    while (!(__atomic_load_n(&l->state, __ATOMIC_RELAXED) & bit)) {
        cr_assert_lt(ks_now(), give_up, "the other thread never waited");
        sched_yield();
    }
}

static void histogram_holds_every_wait(const struct ks_lockstat *s)
{
    uint64_t h = 0;
    for (unsigned b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
        h += s->wait_hist[b];
    cr_assert_eq(h, s->contended, "the histogram holds every contended wait (%llu, %llu)", (unsigned long long)h,
                 (unsigned long long)s->contended);
    cr_assert_leq(s->wait_max_ns, s->wait_ns);
    cr_assert_leq(s->contended, s->acquisitions);
}

/* ---- the rwlock, KS_LOCKSTAT_ALL: exact counts on both sides ---- */

enum { READERS = 6, WRITERS = 2, RD_ROUNDS = 1500, WR_ROUNDS = 400, WORK_NS = 2000 };

struct rw_shared {
    ks_rwlock_t *l;
    uint64_t a, b;         /* a writer keeps them equal; a reader checks */
    unsigned bad;          /* readers that saw them differ (relaxed) */
};

static void *reader(void *p)
{
    struct rw_shared *sh = p;
    for (int i = 0; i < RD_ROUNDS; i++) {
        /* every form of read lock: lock, try (until it succeeds), timed */
        if (i % 3 == 1) {
            while (ks_rwlock_tryrdlock(sh->l) != 0)
                sched_yield();
        } else if (i % 3 == 2) {
            cr_assert_eq(ks_rwlock_timedrdlock(sh->l, ks_deadline_after(60 * INT64_C(1000000000))), 0);
        } else {
            cr_assert_eq(ks_rwlock_rdlock(sh->l), 0);
        }
        if (__atomic_load_n(&sh->a, __ATOMIC_RELAXED) != __atomic_load_n(&sh->b, __ATOMIC_RELAXED))
            __atomic_fetch_add(&sh->bad, 1, __ATOMIC_RELAXED);
        busy_ns(WORK_NS);
        cr_assert_eq(ks_rwlock_unlock(sh->l), 0);
    }
    return NULL;
}

static void *writer(void *p)
{
    struct rw_shared *sh = p;
    for (int i = 0; i < WR_ROUNDS; i++) {
        if (i % 3 == 1) {
            while (ks_rwlock_trywrlock(sh->l) != 0)
                sched_yield();
        } else if (i % 3 == 2) {
            cr_assert_eq(ks_rwlock_timedwrlock(sh->l, ks_deadline_after(60 * INT64_C(1000000000))), 0);
        } else {
            cr_assert_eq(ks_rwlock_wrlock(sh->l), 0);
        }
        __atomic_store_n(&sh->a, sh->a + 1, __ATOMIC_RELAXED);
        busy_ns(WORK_NS);
        __atomic_store_n(&sh->b, sh->b + 1, __ATOMIC_RELAXED);
        cr_assert_eq(ks_rwlock_unlock(sh->l), 0);
    }
    return NULL;
}

static void run_rw(ks_rwlock_t *l, struct rw_shared *sh)
{
    *sh = (struct rw_shared){.l = l};
    pthread_t r[READERS], w[WRITERS];
    for (int i = 0; i < READERS; i++)
        kt_spawn(&r[i], reader, sh);
    for (int i = 0; i < WRITERS; i++)
        kt_spawn(&w[i], writer, sh);
    for (int i = 0; i < READERS; i++)
        kt_join(r[i]);
    for (int i = 0; i < WRITERS; i++)
        kt_join(w[i]);
    cr_assert_eq(sh->bad, 0, "a reader saw a writer's half-done update");
    cr_assert_eq(sh->a, (uint64_t)WRITERS * WR_ROUNDS);
}

static void check_exact(const ks_rwlock_t *l)
{
    struct ks_lockstat rd = stat_of(l, KS_LOCK_RWLOCK_READ), wr = stat_of(l, KS_LOCK_RWLOCK_WRITE);
    cr_assert_eq(rd.acquisitions, (uint64_t)READERS * RD_ROUNDS, "read acquisitions %llu",
                 (unsigned long long)rd.acquisitions);
    cr_assert_eq(wr.acquisitions, (uint64_t)WRITERS * WR_ROUNDS, "write acquisitions %llu",
                 (unsigned long long)wr.acquisitions);
    cr_assert_eq(rd.holds, rd.acquisitions, "every read hold timed: %llu", (unsigned long long)rd.holds);
    cr_assert_eq(wr.holds, wr.acquisitions, "every write hold timed: %llu", (unsigned long long)wr.holds);
    cr_assert_geq(rd.hold_ns, rd.holds * WORK_NS, "read holds %llu ns >= the injected work",
                  (unsigned long long)rd.hold_ns);
    cr_assert_geq(wr.hold_ns, wr.holds * WORK_NS, "write holds %llu ns >= the injected work",
                  (unsigned long long)wr.hold_ns);
    cr_assert_geq(rd.hold_max_ns, (uint64_t)WORK_NS);
    cr_assert_geq(wr.hold_max_ns, (uint64_t)WORK_NS);
    histogram_holds_every_wait(&rd);
    histogram_holds_every_wait(&wr);
}

Test(lockstat_rw, all_mode_counts_both_sides_exactly, .timeout = 120)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    cr_assert(bias(&l) & KS_RWLOCK_TRACED, "marked at init");
    struct rw_shared sh;
    run_rw(&l, &sh);
    check_exact(&l);
    cr_assert(bias(&l) & KS_RWLOCK_TRACED, "still marked: the mode is ALL");
    cr_assert_eq(ks_rwlock_destroy(&l), 0);
}

Test(lockstat_rw, all_mode_reader_preferring_and_shared, .timeout = 120)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t l, s;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0);
    cr_assert_eq(ks_rwlock_init(&s, KS_SHARED), 0);
    struct rw_shared sh;
    run_rw(&l, &sh);
    check_exact(&l);
    run_rw(&s, &sh);
    check_exact(&s);
}

Test(lockstat_rw, readers_through_the_table_are_counted, .timeout = 60)
{
    /* A writer-preferring private lock whose reader bias is on (a read
     * acquisition in the library turns it on, as after contention; in ALL
     * a marked lock tries the inline path's CAS first, so counting alone
     * does not turn it on): table readers are counted and timed too. */
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    cr_assert_eq(ks_rwlock_rdlock_slow(&l, KS_FOREVER), 0); /* statistics off: turns the bias on */
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert(bias(&l) & KS_RWLOCK_BIAS, "the bias is on (bias word %#x)", bias(&l));
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_table_readers_(&l), 1u, "held through the table");
        busy_ns(WORK_NS);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    cr_assert(bias(&l) & KS_RWLOCK_TRACED, "the first reader marked it");
    cr_assert_eq(ks_rwlock_wrlock(&l), 0); /* revokes */
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ), wr = stat_of(&l, KS_LOCK_RWLOCK_WRITE);
    cr_assert_eq(rd.acquisitions, 10);
    cr_assert_eq(rd.holds, 10);
    cr_assert_geq(rd.hold_ns, 10 * (uint64_t)WORK_NS);
    cr_assert_eq(wr.acquisitions, 1);
    cr_assert_eq(wr.holds, 1);
    cr_assert_eq(rd.contended + wr.contended, 0, "one thread: nobody waited");
}

Test(lockstat_rw, counting_does_not_turn_the_bias_on)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    cr_assert_eq(bias(&l), KS_RWLOCK_TRACED, "only the mark (bias word %#x)", bias(&l));
    cr_assert_eq(stat_of(&l, KS_LOCK_RWLOCK_READ).acquisitions, 10);
}

/* ---- the rwlock, KS_LOCKSTAT_CONTENTION ---- */

Test(lockstat_rw, contention_mode_leaves_the_fast_paths_alone)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_wrlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_tryrdlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_trywrlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    cr_assert_eq(bias(&l) & KS_RWLOCK_TRACED, 0u, "no mark: the fast paths work");
    cr_assert_eq(l.state, 0u);
    cr_assert_eq(stat_of(&l, KS_LOCK_RWLOCK_READ).acquisitions, 0, "init made the records; nothing counted");
    cr_assert_eq(stat_of(&l, KS_LOCK_RWLOCK_WRITE).acquisitions, 0);
}

struct waiter {
    ks_rwlock_t *l;
    int write;
    int64_t hold_ns;
    ks_event_t done;
};

static void *lock_hold_unlock(void *p)
{
    struct waiter *w = p;
    cr_assert_eq(w->write ? ks_rwlock_wrlock(w->l) : ks_rwlock_rdlock(w->l), 0);
    busy_ns(w->hold_ns);
    cr_assert_eq(ks_rwlock_unlock(w->l), 0);
    ks_event_set(&w->done);
    return NULL;
}

Test(lockstat_rw, contention_mode_times_a_waiting_writer, .timeout = 60)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0); /* fast: not seen */
    struct waiter w = {&l, 1, 5 * 1000 * 1000, {0}};
    cr_assert_eq(ks_event_init(&w.done, 0), 0);
    pthread_t t;
    kt_spawn(&t, lock_hold_unlock, &w);
    until_state(&l, KS_RWLOCK_WRITER_WAITS); /* the writer is registered, about to sleep */
    sleep_ms(20);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    kt_join(t);
    struct ks_lockstat wr = stat_of(&l, KS_LOCK_RWLOCK_WRITE);
    cr_assert_eq(wr.acquisitions, 1);
    cr_assert_eq(wr.contended, 1);
    cr_assert_geq(wr.wait_ns, 19 * 1000 * 1000, "waited %llu ns behind a 20 ms read hold",
                  (unsigned long long)wr.wait_ns);
    histogram_holds_every_wait(&wr);
    cr_assert_eq(wr.holds, 1, "a writer that waited is timed");
    /* ticks to ns: within the calibration's error (src/spin.c) */
    cr_assert_geq(wr.hold_ns, 4900 * 1000, "held %llu ns for 5 ms of work", (unsigned long long)wr.hold_ns);
    cr_assert_eq(bias(&l) & KS_RWLOCK_TRACED, 0u, "its unlock took the mark off");
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ);
    cr_assert_eq(rd.acquisitions, 0, "the uncontended read lock went unseen");
    cr_assert_eq(ks_rwlock_destroy(&l), 0);
}

Test(lockstat_rw, contention_mode_sees_a_reader_wait_for_a_writer, .timeout = 60)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    struct waiter w = {&l, 0, 1000, {0}};
    cr_assert_eq(ks_event_init(&w.done, 0), 0);
    pthread_t t;
    kt_spawn(&t, lock_hold_unlock, &w);
    until_state(&l, KS_RWLOCK_READERS_SLEEP);
    sleep_ms(20);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    kt_join(t);
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ);
    cr_assert_eq(rd.acquisitions, 1);
    cr_assert_eq(rd.contended, 1);
    cr_assert_geq(rd.wait_ns, 19 * 1000 * 1000, "waited %llu ns behind a 20 ms write hold",
                  (unsigned long long)rd.wait_ns);
    histogram_holds_every_wait(&rd);
    cr_assert_eq(rd.holds, 0, "contention mode times no read hold (its release may take the fast path)");
    cr_assert_eq(l.state, 0u);
    cr_assert_eq(bias(&l) & KS_RWLOCK_TRACED, 0u);
}

/* ---- the mark across mode changes ---- */

Test(lockstat_rw, the_mark_goes_with_the_next_lone_holder)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_OFF), KS_LOCKSTAT_ALL);
    /* a reader with another reader inside leaves the mark (the other's
     * hold may be stamped); the last one, alone, takes it off */
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert(bias(&l) & KS_RWLOCK_TRACED);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(bias(&l) & KS_RWLOCK_TRACED, 0u, "the lone reader took the mark off");
    cr_assert_eq(l.state, 0u);
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ);
    cr_assert_eq(rd.acquisitions, 2, "the two made in ALL");
    cr_assert_eq(rd.holds, 2, "both released through the library");
    /* a writer does it too, and so does a trywrlock */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t m, n;
    cr_assert_eq(ks_rwlock_init(&m, 0), 0);
    cr_assert_eq(ks_rwlock_init(&n, 0), 0);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_OFF), KS_LOCKSTAT_ALL);
    cr_assert_eq(ks_rwlock_wrlock(&m), 0);
    cr_assert_eq(bias(&m) & KS_RWLOCK_TRACED, 0u, "the writer, alone inside, fixed the mark to the mode");
    cr_assert_eq(ks_rwlock_unlock(&m), 0);
    cr_assert_eq(ks_rwlock_trywrlock(&n), 0);
    cr_assert_eq(bias(&n) & KS_RWLOCK_TRACED, 0u);
    cr_assert_eq(ks_rwlock_tryrdlock(&n), EBUSY);
    cr_assert_eq(ks_rwlock_unlock(&n), 0);
    cr_assert_eq(n.state, 0u);
    /* after which the fast paths serve them again: nothing more counted */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(stat_of(&l, KS_LOCK_RWLOCK_READ).acquisitions, 2);
}

struct unlocker {
    ks_rwlock_t *l;
    int result;
};

static void *unlock_it(void *p)
{
    struct unlocker *u = p;
    u->result = ks_rwlock_unlock(u->l);
    return NULL;
}

Test(lockstat_rw, a_read_lock_released_by_another_thread, .timeout = 60)
{
    /* glibc lets a thread release a read lock another took (the drop-in
     * layer keeps that): the hold is timed by whoever releases it, and the
     * taker is left with no stamp that a later release of its own would read
     * as a hold (a stamp kept by the taker gave 200 ms here). */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0); /* no table: the word */
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    struct unlocker u = {&l, -1};
    pthread_t t;
    kt_spawn(&t, unlock_it, &u);
    kt_join(t);
    cr_assert_eq(u.result, 0);
    cr_assert_eq(l.state, 0u);
    sleep_ms(200);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    kt_spawn(&t, unlock_it, &u);
    kt_join(t);
    cr_assert_eq(u.result, 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ);
    cr_assert_eq(rd.acquisitions, 3);
    cr_assert_eq(rd.holds, 3, "every release took a stamp");
    cr_assert_lt(rd.hold_max_ns, 100 * 1000 * 1000, "a hold of %.1f ms: a stamp outlived its hold",
                 (double)rd.hold_max_ns / 1e6);
}

Test(lockstat_rw, a_static_rwlock_is_marked_at_its_first_library_call, .timeout = 60)
{
    static ks_rwlock_t l = KS_RWLOCK_INIT;
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_rwlock_wrlock(&l), 0); /* fast: not seen */
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_lockstat_read(NULL, 0), 0);
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    cr_assert_eq(ks_rwlock_timedwrlock(&l, 0), ETIMEDOUT); /* fails: marks nothing */
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(bias(&l) & KS_RWLOCK_TRACED, 0u);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0); /* fast */
    cr_assert_eq(ks_rwlock_tryrdlock(&l), 0); /* fast */
    cr_assert_eq(ks_rwlock_trywrlock(&l), EBUSY); /* fast: fails */
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    /* a writer that waits reaches the library, which marks it */
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    struct waiter w = {&l, 1, 1000, {0}};
    cr_assert_eq(ks_event_init(&w.done, 0), 0);
    pthread_t t;
    kt_spawn(&t, lock_hold_unlock, &w);
    until_state(&l, KS_RWLOCK_WRITER_WAITS);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    kt_join(t);
    cr_assert(bias(&l) & KS_RWLOCK_TRACED, "marked once a library path acquired it");
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
        cr_assert_eq(ks_rwlock_wrlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ), wr = stat_of(&l, KS_LOCK_RWLOCK_WRITE);
    cr_assert_eq(wr.acquisitions, 11, "the waiting writer and 10 more");
    cr_assert_eq(wr.holds, 11);
    cr_assert_eq(rd.acquisitions, 10, "marked: every read acquisition counted from then on");
    cr_assert_eq(rd.holds, 10);
}

Test(lockstat_rw, nested_read_holds_are_each_timed)
{
    /* One thread holds a reader-preferring lock twice: both holds timed
     * (its read stamps stack; each unlock takes the most recent). */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    busy_ns(1000000);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    busy_ns(1000000);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ);
    cr_assert_eq(rd.acquisitions, 2);
    cr_assert_eq(rd.holds, 2);
    cr_assert_geq(rd.hold_max_ns, 1960 * 1000, "the outer hold: %llu ns", (unsigned long long)rd.hold_max_ns);
    cr_assert_geq(rd.hold_ns, 2940 * 1000, "2 ms + 1 ms: %llu ns", (unsigned long long)rd.hold_ns);
}

Test(lockstat_rw, named_rwlock_reports_both_sides)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t a[2];
    /* one named before init, one after: both sides take the name */
    cr_assert_eq(ks_lock_name(&a[0], "routes"), 0);
    cr_assert_eq(ks_rwlock_init(&a[0], 0), 0);
    cr_assert_eq(ks_rwlock_init(&a[1], 0), 0);
    cr_assert_eq(ks_lock_name(&a[1], "routes"), 0);
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 3; k++) {
            cr_assert_eq(ks_rwlock_rdlock(&a[i]), 0);
            cr_assert_eq(ks_rwlock_unlock(&a[i]), 0);
        }
        cr_assert_eq(ks_rwlock_wrlock(&a[i]), 0);
        cr_assert_eq(ks_rwlock_unlock(&a[i]), 0);
    }
    cr_assert_str_eq(stat_of(&a[0], KS_LOCK_RWLOCK_READ).name, "routes");
    cr_assert_str_eq(stat_of(&a[1], KS_LOCK_RWLOCK_READ).name, "routes");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    cr_assert_eq(ks_lockstat_report(f), 0);
    fclose(f);
    unsigned locks = 0;
    unsigned long long acq = 0;
    char want_rd[64], want_wr[64];
    snprintf(want_rd, sizeof want_rd, "\n%-40.40s %-6s", "routes", "rw-rd");
    snprintf(want_wr, sizeof want_wr, "\n%-40.40s %-6s", "routes", "rw-wr");
    const char *rd = strstr(buf, want_rd), *wr = strstr(buf, want_wr);
    cr_assert(rd && wr, "a row per side: %s", buf);
    cr_assert_eq(sscanf(rd + 1, "routes rw-rd %u %llu", &locks, &acq), 2, "%s", rd);
    cr_assert_eq(locks, 2);
    cr_assert_eq(acq, 6);
    cr_assert_eq(sscanf(wr + 1, "routes rw-wr %u %llu", &locks, &acq), 2, "%s", wr);
    cr_assert_eq(locks, 2);
    cr_assert_eq(acq, 2);
    free(buf);
}

Test(lockstat_rw, careless_calls)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_rwlock_init(NULL, 0), EINVAL);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0x80000000u), EINVAL);
    cr_assert_eq(ks_lockstat_read(NULL, 0), 0, "a refused init makes no record");
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), EPERM, "an unlock of a free lock: refused, nothing counted");
    cr_assert_eq(ks_rwlock_rdlock_slow(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rwlock_wrlock_slow(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, -1), EINVAL);
    cr_assert_eq(ks_rwlock_timedwrlock(&l, -1), EINVAL);
    cr_assert_eq(ks_rwlock_tryrdlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_trywrlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_unlock(NULL), EINVAL);
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    cr_assert_eq(ks_rwlock_timedrdlock(&l, 0), ETIMEDOUT);
    cr_assert_eq(ks_rwlock_timedwrlock(&l, ks_deadline_after(1000000)), ETIMEDOUT);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), EPERM);
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ), wr = stat_of(&l, KS_LOCK_RWLOCK_WRITE);
    cr_assert_eq(rd.acquisitions, 0, "failed acquisitions are not acquisitions");
    cr_assert_eq(wr.acquisitions, 1);
    cr_assert_eq(wr.holds, 1);
    cr_assert_eq(ks_rwlock_destroy(&l), 0);
    cr_assert_str_eq(ks_lockstat_kind_name(KS_LOCK_RWLOCK_READ), "rw-rd");
    cr_assert_str_eq(ks_lockstat_kind_name(KS_LOCK_SPIN), "spin");
    cr_assert_str_eq(ks_lockstat_kind_name(0), "?");
    cr_assert_str_eq(ks_lockstat_kind_name(12345), "?");
}

/* ---- the semaphore ---- */

struct sem_waiter {
    ks_sem_t *s;
    int64_t deadline;
    int result;
};

static void *sem_wait_once(void *p)
{
    struct sem_waiter *w = p;
    w->result = ks_sem_timedwait(w->s, w->deadline);
    return NULL;
}

static void until_sem_waiter(const ks_sem_t *s)
{
    int64_t give_up = ks_now() + 30 * INT64_C(1000000000);
    while (!(__atomic_load_n(&s->state, __ATOMIC_RELAXED) >> 32)) {
        cr_assert_lt(ks_now(), give_up, "the other thread never waited");
        sched_yield();
    }
}

Test(lockstat_sem, contention_mode_counts_a_wait, .timeout = 60)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_sem_t s;
    cr_assert_eq(ks_sem_init(&s, 2, 0), 0);
    cr_assert_eq(ks_sem_wait(&s), 0); /* a unit there: inline, unseen */
    cr_assert_eq(ks_sem_trywait(&s), 0);
    struct sem_waiter w = {&s, KS_FOREVER, -1};
    pthread_t t;
    kt_spawn(&t, sem_wait_once, &w);
    until_sem_waiter(&s);
    sleep_ms(20);
    cr_assert_eq(ks_sem_post(&s), 0);
    kt_join(t);
    cr_assert_eq(w.result, 0);
    struct ks_lockstat st = stat_of(&s, KS_LOCK_SEM);
    cr_assert_eq(st.acquisitions, 1, "only the wait that reached the library");
    cr_assert_eq(st.contended, 1);
    cr_assert_geq(st.wait_ns, 19 * 1000 * 1000, "waited %llu ns for a post 20 ms later",
                  (unsigned long long)st.wait_ns);
    histogram_holds_every_wait(&st);
    cr_assert_eq(st.holds, 0, "a semaphore has no holder");
    /* a wait that times out is no acquisition */
    cr_assert_eq(ks_sem_timedwait(&s, ks_deadline_after(1000000)), ETIMEDOUT);
    cr_assert_eq(stat_of(&s, KS_LOCK_SEM).acquisitions, 1);
    cr_assert_eq(ks_sem_destroy(&s), 0);
}

Test(lockstat_sem, report_and_classes, .timeout = 60)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_sem_t s;
    cr_assert_eq(ks_sem_init_bounded(&s, 0, 4, 0), 0);
    cr_assert_eq(ks_lock_name(&s, "permits"), 0);
    struct sem_waiter w = {&s, KS_FOREVER, -1};
    pthread_t t;
    kt_spawn(&t, sem_wait_once, &w);
    until_sem_waiter(&s);
    cr_assert_eq(ks_sem_post(&s), 0);
    kt_join(t);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    cr_assert_eq(ks_lockstat_report(f), 0);
    fclose(f);
    const char *row = strstr(buf, "\npermits ");
    cr_assert_not_null(row, "%s", buf);
    char kind[8], ha[8], hm[8];
    unsigned locks = 0;
    unsigned long long acq = 0, cont = 0;
    /* wait and wait max are two words each ("812 ns") */
    cr_assert_eq(sscanf(row + 1, "permits %7s %u %llu %llu %*s %*s %*s %*s %7s %7s", kind, &locks, &acq, &cont, ha, hm),
                 6, "%s", row);
    cr_assert_str_eq(kind, "sem");
    cr_assert_eq(acq, 1);
    cr_assert_eq(cont, 1);
    cr_assert_str_eq(ha, "-", "no hold average for a semaphore: %s", row);
    cr_assert_str_eq(hm, "-", "%s", row);
    free(buf);
}

/* The address this call returns to (noipa, and a memory clobber: kept in
 * order with the calls around it). */
static __attribute__((noinline, noipa)) const void *here(void)
{
    __asm__ __volatile__("" ::: "memory");
    return __builtin_return_address(0);
}

Test(lockstat_sem, init_site_is_the_class)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_sem_t a, b;
    const char *before = here();
    int ea = ks_sem_init(&a, 0, 0);
    const char *mid = here();
    int eb = ks_sem_init_bounded(&b, 0, 3, 0);
    const char *after = here();
    cr_assert_eq(ea, 0);
    cr_assert_eq(eb, 0);
    struct ks_lockstat sa = stat_of(&a, KS_LOCK_SEM), sb = stat_of(&b, KS_LOCK_SEM);
    /* the sites are the two calls in this function, not in the library */
    const char *pa = sa.site, *pb = sb.site;
    cr_assert(before < pa && pa < mid && mid < pb && pb < after, "sites %p %p around %p %p %p", sa.site, sb.site,
              (const void *)before, (const void *)mid, (const void *)after);
    cr_assert_eq(ks_sem_init(NULL, 0, 0), EINVAL);
    cr_assert_eq(ks_sem_init_bounded(&a, 5, 3, 0), EINVAL);
    cr_assert_eq(ks_sem_trywait_slow(NULL), EINVAL);
    cr_assert_eq(ks_sem_trywait_slow(&b), EAGAIN);
    cr_assert_eq(ks_sem_post(&b), 0);
    cr_assert_eq(ks_sem_trywait_slow(&b), 0);
    cr_assert_eq(stat_of(&b, KS_LOCK_SEM).acquisitions, 1, "a library trywait counts");
}

/* ---- regressions from the review (docs/lockstat.md, "Review") ---- */

Test(lockstat_rw, contention_mode_keeps_the_bias_policy)
{
    /* A read lock whose inline CAS failed (here: a direct call of the
     * library half) goes on as without statistics: the library's read path
     * turns the reader bias on.  Retrying the inline CAS there first delayed
     * it under reader contention. */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    cr_assert_eq(ks_rwlock_rdlock_slow(&l, KS_FOREVER), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert(bias(&l) & KS_RWLOCK_BIAS, "bias word %#x", bias(&l));
}

enum { RACED = 3000 };
static ks_rwlock_t raced[RACED];
static unsigned arrived;

/* Both threads reach lock i before either touches it. */
static void rendezvous(unsigned i)
{
    __atomic_fetch_add(&arrived, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&arrived, __ATOMIC_SEQ_CST) < 2 * (i + 1))
        sched_yield();
}

static void *name_each(void *p)
{
    (void)p;
    for (unsigned i = 0; i < RACED; i++) {
        rendezvous(i);
        cr_assert_eq(ks_lock_name(&raced[i], "raced"), 0);
    }
    return NULL;
}

Test(lockstat_rw, a_name_given_while_the_read_side_appears_is_kept, .timeout = 120)
{
    /* ks_lock_name and the first library read of a lock, at once: the read
     * side's record is made with the lock's name, or named by ks_lock_name,
     * or (when each missed the other) reported with the lock's name. */
    for (unsigned i = 0; i < RACED; i++)
        cr_assert_eq(ks_rwlock_init(&raced[i], 0), 0); /* statistics off: no records yet */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    pthread_t t;
    kt_spawn(&t, name_each, NULL);
    for (unsigned i = 0; i < RACED; i++) {
        rendezvous(i);
        cr_assert_eq(ks_rwlock_rdlock_slow(&raced[i], KS_FOREVER), 0);
        cr_assert_eq(ks_rwlock_unlock(&raced[i]), 0);
    }
    kt_join(t);
    static struct ks_lockstat all[3 * RACED];
    size_t n = ks_lockstat_read(all, 3 * RACED);
    unsigned sides = 0, unnamed = 0;
    for (size_t i = 0; i < n && i < 3 * RACED; i++)
        if (all[i].kind == KS_LOCK_RWLOCK_READ) {
            sides++;
            unnamed += !all[i].name || strcmp(all[i].name, "raced") != 0;
        }
    cr_assert_eq(sides, RACED);
    cr_assert_eq(unnamed, 0, "%u read sides of %u without their lock's name", unnamed, sides);
}

Test(lockstat_rw, with_the_pool_full_the_early_releases_go_untimed, .timeout = 60)
{
    /* 70 read holds at once, more than the pool's 64 stamps: the 6 that
     * could not be stamped leave tokens, and the first 6 releases take
     * them, so the holds released last (the long ones) are timed. */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_RWLOCK_PREFER_READER), 0); /* one thread may hold it 70 times */
    for (int i = 0; i < 70; i++)
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    for (int i = 0; i < 10; i++) /* 6 tokens and 4 short holds */
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    sleep_ms(50);
    for (int i = 0; i < 60; i++)
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(l.state, 0u);
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ);
    cr_assert_eq(rd.acquisitions, 70);
    cr_assert_eq(rd.holds, 64, "as many timed as the pool holds");
    cr_assert_geq(rd.hold_ns, 60 * UINT64_C(49) * 1000 * 1000, "the 60 long holds are timed: %.1f ms in all",
                  (double)rd.hold_ns / 1e6);
    /* the pool is empty again: a new hold is timed short */
    ks_lockstat_reset();
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    rd = stat_of(&l, KS_LOCK_RWLOCK_READ);
    cr_assert_eq(rd.holds, 1);
    cr_assert_lt(rd.hold_max_ns, 10 * 1000 * 1000);
}

Test(lockstat_rw, a_mark_left_by_all_costs_contention_mode_no_count)
{
    /* A biased lock marked in ALL keeps its mark after the switch to
     * CONTENTION until a writer takes it (its readers are in the table, not
     * alone in the word); meanwhile its uncontended reads are not counted
     * (they were, and stamped, each one). */
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, 0), 0);
    cr_assert_eq(ks_rwlock_rdlock_slow(&l, KS_FOREVER), 0); /* the bias on */
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(bias(&l) & (KS_RWLOCK_TRACED | KS_RWLOCK_BIAS), KS_RWLOCK_TRACED | KS_RWLOCK_BIAS);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_ALL);
    ks_lockstat_reset();
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(ks_rwlock_rdlock(&l), 0);
        cr_assert_eq(ks_rwlock_unlock(&l), 0);
    }
    struct ks_lockstat rd = stat_of(&l, KS_LOCK_RWLOCK_READ);
    cr_assert_eq(rd.acquisitions, 0, "uncontended reads counted in contention mode: %llu",
                 (unsigned long long)rd.acquisitions);
    cr_assert_eq(rd.holds, 0);
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(bias(&l) & KS_RWLOCK_TRACED, 0u, "the writer took it off");
}

Test(lockstat_rw, a_shared_lock_keeps_its_mark_for_a_writer)
{
    /* A KS_SHARED lock's lone reader does not take the mark off (another
     * process in ALL may set it again at once, and each time a reader
     * would see a writer for a moment); its next writer does. */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_rwlock_t l;
    cr_assert_eq(ks_rwlock_init(&l, KS_SHARED), 0);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_OFF), KS_LOCKSTAT_ALL);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert(bias(&l) & KS_RWLOCK_TRACED);
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(bias(&l), 0u);
}
