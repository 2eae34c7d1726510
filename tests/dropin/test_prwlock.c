/* tests/dropin/test_prwlock.c - pthread_rwlock_* as glibc 2.36 behaves:
 * layout, zero-filled and static initializers, shared readers, exclusive
 * writers, the kinds (PREFER_READER_NP, the default, lets a reader in while a
 * writer waits; PREFER_WRITER_NONRECURSIVE_NP does not; PREFER_WRITER_NP is
 * treated as PREFER_READER_NP, as pthread_rwlockattr_setkind_np(3) says),
 * EDEADLK for the write owner's relock, trylocks, timed and clock variants,
 * process-shared use across fork().  References: POSIX pthread_rwlock_rdlock,
 * pthread_rwlock_timedrdlock ("The validity of the abstime parameter need not
 * be checked if the lock can be immediately acquired"), glibc
 * nptl/pthread_rwlock_common.c. */
#include "helpers.h"

#include <stdalign.h>

#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(pthread_rwlock_t) == 56, "glibc pthread_rwlock_t is 56 bytes");
_Static_assert(alignof(pthread_rwlock_t) == 8, "pthread_rwlock_t is 8-aligned");
_Static_assert(sizeof(pthread_rwlockattr_t) == 8, "pthread_rwlockattr_t is 8 bytes");
#endif

static void *tryrd_fn(void *l)
{
    int e = pthread_rwlock_tryrdlock(l);
    if (e == 0)
        pthread_rwlock_unlock(l);
    return (void *)(intptr_t)e;
}

static void *trywr_fn(void *l)
{
    int e = pthread_rwlock_trywrlock(l);
    if (e == 0)
        pthread_rwlock_unlock(l);
    return (void *)(intptr_t)e;
}

static int tryrd_elsewhere(pthread_rwlock_t *l) { return dt_in_thread(tryrd_fn, l); }
static int trywr_elsewhere(pthread_rwlock_t *l) { return dt_in_thread(trywr_fn, l); }

static void init_kind(pthread_rwlock_t *l, int kind, int pshared)
{
    pthread_rwlockattr_t a;
    int got = -1;
    cr_assert_eq(pthread_rwlockattr_init(&a), 0);
    cr_assert_eq(pthread_rwlockattr_getkind_np(&a, &got), 0);
    cr_assert_eq(got, PTHREAD_RWLOCK_PREFER_READER_NP, "the default kind");
    cr_assert_eq(pthread_rwlockattr_setkind_np(&a, kind), 0);
    cr_assert_eq(pthread_rwlockattr_getkind_np(&a, &got), 0);
    cr_assert_eq(got, kind);
    if (pshared)
        cr_assert_eq(pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_rwlock_init(l, &a), 0);
    cr_assert_eq(pthread_rwlockattr_destroy(&a), 0);
}

/* ---- initializers ---------------------------------------------------------------- */

static void expect_usable(pthread_rwlock_t *l, const char *what)
{
    cr_assert_eq(pthread_rwlock_rdlock(l), 0, "%s", what);
    cr_assert_eq(pthread_rwlock_rdlock(l), 0, "%s: second read lock", what);
    cr_assert_eq(tryrd_elsewhere(l), 0, "%s", what);
    cr_assert_eq(trywr_elsewhere(l), EBUSY, "%s", what);
    cr_assert_eq(pthread_rwlock_unlock(l), 0, "%s", what);
    cr_assert_eq(trywr_elsewhere(l), EBUSY, "%s: one read lock left", what);
    cr_assert_eq(pthread_rwlock_unlock(l), 0, "%s", what);
    cr_assert_eq(pthread_rwlock_wrlock(l), 0, "%s", what);
    cr_assert_eq(tryrd_elsewhere(l), EBUSY, "%s", what);
    cr_assert_eq(trywr_elsewhere(l), EBUSY, "%s", what);
    cr_assert_eq(pthread_rwlock_unlock(l), 0, "%s", what);
    cr_assert_eq(trywr_elsewhere(l), 0, "%s", what);
    cr_assert_eq(pthread_rwlock_destroy(l), 0, "%s", what);
}

static pthread_rwlock_t s_init = PTHREAD_RWLOCK_INITIALIZER;
static pthread_rwlock_t s_wnr = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static pthread_rwlock_t s_zero;

Test(prwlock, static_and_zero_filled_rwlocks_work_without_init, .timeout = 30)
{
    pthread_rwlock_t init = PTHREAD_RWLOCK_INITIALIZER, zero;
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(memcmp(&init, &zero, sizeof zero), 0, "PTHREAD_RWLOCK_INITIALIZER is all zeros");
    expect_usable(&s_init, "PTHREAD_RWLOCK_INITIALIZER");
    expect_usable(&s_wnr, "PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP");
    expect_usable(&s_zero, "zero-filled static");
    pthread_rwlock_t *h = calloc(1, sizeof *h);
    cr_assert_not_null(h);
    expect_usable(h, "calloc'd");
    free(h);
    pthread_rwlock_t l;
    memset(&l, 0x5a, sizeof l);
    cr_assert_eq(pthread_rwlock_init(&l, NULL), 0);
    expect_usable(&l, "pthread_rwlock_init");
    init_kind(&l, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP, 0);
    expect_usable(&l, "PREFER_WRITER_NONRECURSIVE_NP");
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    cr_assert_eq(pthread_rwlockattr_setkind_np(&a, 42), EINVAL);
    pthread_rwlockattr_destroy(&a);
}

/* ---- readers share, writers exclude ------------------------------------------------------- */

#define READERS 8

struct share {
    pthread_rwlock_t l;
    int inside;
    int max_inside;
    int errors;
};

static void *sharing_reader(void *p)
{
    struct share *s = p;
    if (pthread_rwlock_rdlock(&s->l) != 0) {
        __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    int n = __atomic_add_fetch(&s->inside, 1, __ATOMIC_ACQ_REL);
    int m = __atomic_load_n(&s->max_inside, __ATOMIC_RELAXED);
    while (n > m && !__atomic_compare_exchange_n(&s->max_inside, &m, n, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    /* stay until everybody is in (bounded) */
    dt_wait_int(&s->inside, READERS, 10 * DT_S);
    int mx = __atomic_load_n(&s->inside, __ATOMIC_ACQUIRE);
    m = __atomic_load_n(&s->max_inside, __ATOMIC_RELAXED);
    while (mx > m && !__atomic_compare_exchange_n(&s->max_inside, &m, mx, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    dt_sleep_ns(DT_MS);
    if (pthread_rwlock_unlock(&s->l) != 0)
        __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    return NULL;
}

Test(prwlock, many_readers_hold_it_at_once, .timeout = 30)
{
    int kinds[] = {PTHREAD_RWLOCK_PREFER_READER_NP, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP};
    for (unsigned k = 0; k < 2; k++) {
        struct share s;
        memset(&s, 0, sizeof s);
        init_kind(&s.l, kinds[k], 0);
        pthread_t t[READERS];
        for (int i = 0; i < READERS; i++)
            dt_spawn(&t[i], sharing_reader, &s);
        for (int i = 0; i < READERS; i++)
            dt_join(t[i]);
        cr_assert_eq(s.errors, 0);
        cr_assert_eq(s.max_inside, READERS, "kind %d: only %d readers were in at once", kinds[k], s.max_inside);
        cr_assert_eq(trywr_elsewhere(&s.l), 0);
        cr_assert_eq(pthread_rwlock_destroy(&s.l), 0);
    }
}

#define RW_THREADS 16
#define RW_WRITERS 4
#define RW_ITERS 4000

struct excl {
    pthread_rwlock_t l;
    long a, b;    /* a writer keeps a == b; plain fields */
    int readers;  /* atomic */
    int writers;  /* atomic */
    int bad;      /* atomic */
    int errors;   /* atomic */
    int gate;
};

struct excl_arg {
    struct excl *s;
    int writer;
    int idx;
};

static void *excl_worker(void *p)
{
    struct excl_arg *a = p;
    struct excl *s = a->s;
    dt_gate_pass(&s->gate, RW_THREADS);
    for (int i = 0; i < RW_ITERS; i++) {
        struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 10 * DT_S);
        if (a->writer) {
            int e = (i % 3 == 0) ? pthread_rwlock_clockwrlock(&s->l, CLOCK_MONOTONIC, &dl)
                  : (i % 3 == 1) ? pthread_rwlock_wrlock(&s->l) : pthread_rwlock_trywrlock(&s->l);
            if (e == EBUSY)
                e = pthread_rwlock_wrlock(&s->l);
            if (e != 0) {
                __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
                continue;
            }
            if (__atomic_add_fetch(&s->writers, 1, __ATOMIC_RELAXED) != 1 ||
                __atomic_load_n(&s->readers, __ATOMIC_RELAXED) != 0)
                __atomic_store_n(&s->bad, 1, __ATOMIC_RELAXED);
            long v = s->a;
            s->a = v + 1;
            if ((i & 63) == 0)
                sched_yield();
            s->b = v + 1;
            __atomic_sub_fetch(&s->writers, 1, __ATOMIC_RELAXED);
        } else {
            int e = (i % 3 == 0) ? pthread_rwlock_clockrdlock(&s->l, CLOCK_MONOTONIC, &dl)
                  : (i % 3 == 1) ? pthread_rwlock_rdlock(&s->l) : pthread_rwlock_tryrdlock(&s->l);
            if (e == EBUSY)
                e = pthread_rwlock_rdlock(&s->l);
            if (e != 0) {
                __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
                continue;
            }
            __atomic_add_fetch(&s->readers, 1, __ATOMIC_RELAXED);
            if (__atomic_load_n(&s->writers, __ATOMIC_RELAXED) != 0 || s->a != s->b)
                __atomic_store_n(&s->bad, 1, __ATOMIC_RELAXED);
            __atomic_sub_fetch(&s->readers, 1, __ATOMIC_RELAXED);
        }
        if (pthread_rwlock_unlock(&s->l) != 0)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void exclusion(int kind)
{
    struct excl s;
    memset(&s, 0, sizeof s);
    init_kind(&s.l, kind, 0);
    struct excl_arg a[RW_THREADS];
    pthread_t t[RW_THREADS];
    for (int i = 0; i < RW_THREADS; i++) {
        a[i].s = &s;
        a[i].writer = i % (RW_THREADS / RW_WRITERS) == 0;
        a[i].idx = i;
        dt_spawn(&t[i], excl_worker, &a[i]);
    }
    for (int i = 0; i < RW_THREADS; i++)
        dt_join(t[i]);
    cr_assert_eq(s.errors, 0, "kind %d", kind);
    cr_assert_eq(s.bad, 0, "kind %d: a writer overlapped another thread", kind);
    cr_assert_eq(s.a, (long)RW_WRITERS * RW_ITERS, "kind %d: lost writes", kind);
    cr_assert_eq(s.b, s.a);
    cr_assert_eq(pthread_rwlock_destroy(&s.l), 0);
}

Test(prwlock, writers_are_exclusive_16_threads, .timeout = 60)
{
    exclusion(PTHREAD_RWLOCK_PREFER_READER_NP);
    exclusion(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
}

/* ---- the kinds: a new reader while a writer waits ---------------------------------------- */

struct waiting_writer {
    pthread_rwlock_t *l;
    int tid;
    int ret;
    int unlock_ret;
};

static void *writer_fn(void *p)
{
    struct waiting_writer *w = p;
    dt_publish_tid(&w->tid);
    w->ret = pthread_rwlock_wrlock(w->l);
    if (w->ret == 0)
        w->unlock_ret = pthread_rwlock_unlock(w->l);
    return NULL;
}

struct timed_reader {
    pthread_rwlock_t *l;
    clockid_t clk; /* -1: timedrdlock */
    int ret;
    int try_ret;
    int early;
};

static void *timed_reader_fn(void *p)
{
    struct timed_reader *r = p;
    clockid_t c = r->clk == (clockid_t)-1 ? CLOCK_REALTIME : r->clk;
    struct timespec dl = dt_deadline(c, 50 * DT_MS);
    r->try_ret = pthread_rwlock_tryrdlock(r->l);
    if (r->try_ret == 0) {
        pthread_rwlock_unlock(r->l);
    }
    r->ret = r->clk == (clockid_t)-1 ? pthread_rwlock_timedrdlock(r->l, &dl)
                                     : pthread_rwlock_clockrdlock(r->l, r->clk, &dl);
    if (r->ret == ETIMEDOUT)
        r->early = dt_now(c) < dt_ts_ns(&dl);
    if (r->ret == 0)
        pthread_rwlock_unlock(r->l);
    return NULL;
}

/* Hold a read lock, get a writer blocked, then ask for another read lock:
 * from this thread (recursively) and from another. */
static void reader_while_writer_waits(pthread_rwlock_t *l, int prefer_writer, const char *what)
{
    cr_assert_eq(pthread_rwlock_rdlock(l), 0);
    struct waiting_writer w = {l, 0, -1, -1};
    pthread_t wt;
    dt_spawn(&wt, writer_fn, &w);
    dt_wait_blocked(&w.tid, what);

    clockid_t clocks[] = {(clockid_t)-1, CLOCK_MONOTONIC, CLOCK_REALTIME};
    for (unsigned i = 0; i < 3; i++) {
        struct timed_reader r = {l, clocks[i], -1, -1, 0};
        pthread_t rt;
        dt_spawn(&rt, timed_reader_fn, &r);
        dt_join(rt);
        if (prefer_writer) {
            cr_assert_eq(r.try_ret, EBUSY, "%s: tryrdlock while a writer waits", what);
            cr_assert_eq(r.ret, ETIMEDOUT, "%s: a new reader got in while a writer waits (clock %d)", what,
                         (int)clocks[i]);
            cr_assert_eq(r.early, 0, "%s: timed out early", what);
        } else {
            cr_assert_eq(r.try_ret, 0, "%s: tryrdlock while a writer waits", what);
            cr_assert_eq(r.ret, 0, "%s: reader refused while a writer waits (clock %d)", what, (int)clocks[i]);
        }
    }
    if (!prefer_writer) {
        /* The holder re-takes its read lock: no deadlock. */
        struct timespec dl = dt_deadline(CLOCK_REALTIME, 5 * DT_S);
        cr_assert_eq(pthread_rwlock_timedrdlock(l, &dl), 0, "%s: recursive read lock", what);
        cr_assert_eq(pthread_rwlock_unlock(l), 0);
    }
    cr_assert_eq(w.ret, -1, "%s: the writer got in past a reader", what);
    cr_assert_eq(pthread_rwlock_unlock(l), 0);
    dt_join(wt);
    cr_assert_eq(w.ret, 0, "%s", what);
    cr_assert_eq(w.unlock_ret, 0, "%s", what);
    cr_assert_eq(tryrd_elsewhere(l), 0);
    cr_assert_eq(trywr_elsewhere(l), 0);
}

Test(prwlock, default_kind_prefers_readers, .timeout = 30)
{
    pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
    reader_while_writer_waits(&l, 0, "PTHREAD_RWLOCK_INITIALIZER");
    init_kind(&l, PTHREAD_RWLOCK_PREFER_READER_NP, 0);
    reader_while_writer_waits(&l, 0, "PREFER_READER_NP");
    cr_assert_eq(pthread_rwlock_destroy(&l), 0);
    /* glibc ignores PREFER_WRITER_NP: it behaves as PREFER_READER_NP. */
    init_kind(&l, PTHREAD_RWLOCK_PREFER_WRITER_NP, 0);
    reader_while_writer_waits(&l, 0, "PREFER_WRITER_NP");
    cr_assert_eq(pthread_rwlock_destroy(&l), 0);
    cr_assert_eq(pthread_rwlock_init(&l, NULL), 0);
    reader_while_writer_waits(&l, 0, "init(NULL)");
    cr_assert_eq(pthread_rwlock_destroy(&l), 0);
}

Test(prwlock, writer_nonrecursive_kind_blocks_new_readers_while_a_writer_waits, .timeout = 30)
{
    pthread_rwlock_t l = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
    reader_while_writer_waits(&l, 1, "WRITER_NONRECURSIVE_INITIALIZER_NP");
    reader_while_writer_waits(&l, 1, "WRITER_NONRECURSIVE_INITIALIZER_NP, again");
    init_kind(&l, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP, 0);
    reader_while_writer_waits(&l, 1, "setkind_np PREFER_WRITER_NONRECURSIVE_NP");
    cr_assert_eq(pthread_rwlock_destroy(&l), 0);
}

/* ---- errors ---------------------------------------------------------------------------------- */

/* glibc detects the write owner asking again: EDEADLK from rdlock, wrlock
 * and their timed forms; the trylocks say EBUSY. */
Test(prwlock, write_owner_relock_is_edeadlk, .timeout = 30)
{
    int kinds[] = {PTHREAD_RWLOCK_PREFER_READER_NP, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP};
    for (unsigned k = 0; k < 2; k++) {
        pthread_rwlock_t l;
        init_kind(&l, kinds[k], 0);
        cr_assert_eq(pthread_rwlock_wrlock(&l), 0);
        cr_assert_eq(pthread_rwlock_wrlock(&l), EDEADLK, "kind %d", kinds[k]);
        cr_assert_eq(pthread_rwlock_rdlock(&l), EDEADLK, "kind %d", kinds[k]);
        struct timespec rt = dt_deadline(CLOCK_REALTIME, DT_S);
        struct timespec mono = dt_deadline(CLOCK_MONOTONIC, DT_S);
        cr_assert_eq(pthread_rwlock_timedwrlock(&l, &rt), EDEADLK);
        cr_assert_eq(pthread_rwlock_timedrdlock(&l, &rt), EDEADLK);
        cr_assert_eq(pthread_rwlock_clockwrlock(&l, CLOCK_MONOTONIC, &mono), EDEADLK);
        cr_assert_eq(pthread_rwlock_clockrdlock(&l, CLOCK_MONOTONIC, &mono), EDEADLK);
        cr_assert_eq(pthread_rwlock_trywrlock(&l), EBUSY);
        cr_assert_eq(pthread_rwlock_tryrdlock(&l), EBUSY);
        cr_assert_eq(tryrd_elsewhere(&l), EBUSY);
        cr_assert_eq(pthread_rwlock_unlock(&l), 0);
        cr_assert_eq(trywr_elsewhere(&l), 0);
        cr_assert_eq(pthread_rwlock_destroy(&l), 0);
    }
}

Test(prwlock, trylocks_are_ebusy_when_they_would_block, .timeout = 30)
{
    pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
    cr_assert_eq(pthread_rwlock_rdlock(&l), 0);
    cr_assert_eq(pthread_rwlock_trywrlock(&l), EBUSY);
    cr_assert_eq(trywr_elsewhere(&l), EBUSY);
    cr_assert_eq(pthread_rwlock_tryrdlock(&l), 0);
    cr_assert_eq(tryrd_elsewhere(&l), 0);
    cr_assert_eq(pthread_rwlock_unlock(&l), 0);
    cr_assert_eq(pthread_rwlock_unlock(&l), 0);
    cr_assert_eq(pthread_rwlock_trywrlock(&l), 0);
    cr_assert_eq(tryrd_elsewhere(&l), EBUSY);
    cr_assert_eq(trywr_elsewhere(&l), EBUSY);
    cr_assert_eq(pthread_rwlock_unlock(&l), 0);
    cr_assert_eq(pthread_rwlock_tryrdlock(&l), 0);
    cr_assert_eq(pthread_rwlock_unlock(&l), 0);
}

/* ---- timed and clock variants ------------------------------------------------------------- */

struct rw_holder {
    pthread_rwlock_t *l;
    int write;
    int locked;
    int release;
};

static void *rw_holder_fn(void *p)
{
    struct rw_holder *h = p;
    if (h->write)
        pthread_rwlock_wrlock(h->l);
    else
        pthread_rwlock_rdlock(h->l);
    __atomic_store_n(&h->locked, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE))
        dt_sleep_ns(200000);
    pthread_rwlock_unlock(h->l);
    return NULL;
}

static int timed_op(pthread_rwlock_t *l, int write, clockid_t clk, const struct timespec *dl)
{
    if (clk == (clockid_t)-1)
        return write ? pthread_rwlock_timedwrlock(l, dl) : pthread_rwlock_timedrdlock(l, dl);
    return write ? pthread_rwlock_clockwrlock(l, clk, dl) : pthread_rwlock_clockrdlock(l, clk, dl);
}

Test(prwlock, timed_and_clock_variants_time_out_not_early, .timeout = 30)
{
    pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
    clockid_t clocks[] = {(clockid_t)-1, CLOCK_MONOTONIC, CLOCK_REALTIME};
    for (int held_write = 0; held_write < 2; held_write++) {
        struct rw_holder h = {&l, held_write, 0, 0};
        pthread_t t;
        dt_spawn(&t, rw_holder_fn, &h);
        cr_assert(dt_wait_int(&h.locked, 1, 10 * DT_S));
        for (unsigned i = 0; i < 3; i++) {
            clockid_t c = clocks[i] == (clockid_t)-1 ? CLOCK_REALTIME : clocks[i];
            struct timespec dl = dt_deadline(c, 30 * DT_MS);
            cr_assert_eq(timed_op(&l, 1, clocks[i], &dl), ETIMEDOUT, "write lock, held %s, clock %d",
                         held_write ? "for writing" : "for reading", (int)clocks[i]);
            dt_assert_not_early(c, dl, "timed write lock");
            dl = dt_deadline(c, 30 * DT_MS);
            if (held_write) {
                cr_assert_eq(timed_op(&l, 0, clocks[i], &dl), ETIMEDOUT, "read lock, clock %d", (int)clocks[i]);
                dt_assert_not_early(c, dl, "timed read lock");
            } else {
                cr_assert_eq(timed_op(&l, 0, clocks[i], &dl), 0, "shared read lock, clock %d", (int)clocks[i]);
                cr_assert_eq(pthread_rwlock_unlock(&l), 0);
            }
            /* past deadlines */
            dl.tv_sec = 0;
            dl.tv_nsec = 0;
            cr_assert_eq(timed_op(&l, 1, clocks[i], &dl), ETIMEDOUT);
        }
        /* released during a timed wait: acquired */
        __atomic_store_n(&h.release, 1, __ATOMIC_RELEASE);
        struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 10 * DT_S);
        cr_assert_eq(pthread_rwlock_clockwrlock(&l, CLOCK_MONOTONIC, &dl), 0);
        cr_assert_eq(pthread_rwlock_unlock(&l), 0);
        dt_join(t);
    }
}

/* glibc validates the clock and tv_nsec before trying the lock, so both are
 * EINVAL even on a free rwlock (POSIX allows either). */
Test(prwlock, bad_clock_or_nsec_is_einval_even_when_free, .timeout = 30)
{
    pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
    struct timespec bad = dt_bad_nsec(CLOCK_REALTIME);
    cr_assert_eq(pthread_rwlock_timedrdlock(&l, &bad), EINVAL);
    cr_assert_eq(pthread_rwlock_timedwrlock(&l, &bad), EINVAL);
    bad = dt_bad_nsec(CLOCK_MONOTONIC);
    cr_assert_eq(pthread_rwlock_clockrdlock(&l, CLOCK_MONOTONIC, &bad), EINVAL);
    cr_assert_eq(pthread_rwlock_clockwrlock(&l, CLOCK_MONOTONIC, &bad), EINVAL);
    bad.tv_nsec = -1;
    cr_assert_eq(pthread_rwlock_clockwrlock(&l, CLOCK_MONOTONIC, &bad), EINVAL);
    struct timespec dl = dt_deadline(CLOCK_MONOTONIC, DT_S);
    cr_assert_eq(pthread_rwlock_clockrdlock(&l, CLOCK_PROCESS_CPUTIME_ID, &dl), EINVAL);
    cr_assert_eq(pthread_rwlock_clockwrlock(&l, CLOCK_PROCESS_CPUTIME_ID, &dl), EINVAL);
    cr_assert_eq(pthread_rwlock_clockrdlock(&l, CLOCK_MONOTONIC_RAW, &dl), EINVAL);
    cr_assert_eq(pthread_rwlock_clockwrlock(&l, (clockid_t)12345, &dl), EINVAL);
    cr_assert_eq(trywr_elsewhere(&l), 0, "a refused call left it locked");
    /* While held for reading, a bad read deadline is still EINVAL. */
    cr_assert_eq(pthread_rwlock_rdlock(&l), 0);
    bad = dt_bad_nsec(CLOCK_REALTIME);
    cr_assert_eq(pthread_rwlock_timedrdlock(&l, &bad), EINVAL);
    cr_assert_eq(pthread_rwlock_timedwrlock(&l, &bad), EINVAL);
    cr_assert_eq(pthread_rwlock_unlock(&l), 0);
    cr_assert_eq(trywr_elsewhere(&l), 0);
}

/* ---- process-shared ------------------------------------------------------------------------- */

#define PRW_ITERS 3000

struct prw {
    pthread_rwlock_t l;
    long a, b;
    int bad;
    int parent_holds;
    int child_checked;
};

static int prw_worker(void *p)
{
    struct prw *s = p;
    for (int i = 0; i < PRW_ITERS; i++) {
        if (i & 1) {
            DT_CHECK(pthread_rwlock_wrlock(&s->l) == 0, 2);
            long v = s->a;
            s->a = v + 1;
            s->b = v + 1;
        } else {
            DT_CHECK(pthread_rwlock_rdlock(&s->l) == 0, 3);
            if (s->a != s->b)
                s->bad = 1;
        }
        DT_CHECK(pthread_rwlock_unlock(&s->l) == 0, 4);
    }
    return 0;
}

static int prw_blocked_child(void *p)
{
    struct prw *s = p;
    DT_CHECK(pthread_rwlock_tryrdlock(&s->l) == EBUSY, 2);
    DT_CHECK(pthread_rwlock_trywrlock(&s->l) == EBUSY, 3);
    struct timespec dl = dt_deadline(CLOCK_MONOTONIC, 20 * DT_MS);
    DT_CHECK(pthread_rwlock_clockrdlock(&s->l, CLOCK_MONOTONIC, &dl) == ETIMEDOUT, 4);
    DT_CHECK(dt_now(CLOCK_MONOTONIC) >= dt_ts_ns(&dl), 5);
    __atomic_store_n(&s->child_checked, 1, __ATOMIC_RELEASE);
    /* the parent releases: an untimed read lock then gets in */
    DT_CHECK(pthread_rwlock_rdlock(&s->l) == 0, 6);
    DT_CHECK(__atomic_load_n(&s->parent_holds, __ATOMIC_ACQUIRE) == 0, 7);
    DT_CHECK(pthread_rwlock_unlock(&s->l) == 0, 8);
    return 0;
}

Test(prwlock, process_shared_rwlock_across_fork, .timeout = 60)
{
    struct prw *s = dt_shared_alloc(sizeof *s);
    init_kind(&s->l, PTHREAD_RWLOCK_PREFER_READER_NP, 1);
    int ps = -1;
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(pthread_rwlockattr_getpshared(&a, &ps), 0);
    cr_assert_eq(ps, PTHREAD_PROCESS_SHARED);
    pthread_rwlockattr_destroy(&a);

    /* The parent holds it for writing: the child is kept out, then let in. */
    cr_assert_eq(pthread_rwlock_wrlock(&s->l), 0);
    s->parent_holds = 1;
    pid_t pid = dt_fork(prw_blocked_child, s);
    cr_assert(dt_wait_int(&s->child_checked, 1, 10 * DT_S));
    dt_sleep_ns(20 * DT_MS);
    __atomic_store_n(&s->parent_holds, 0, __ATOMIC_RELEASE);
    cr_assert_eq(pthread_rwlock_unlock(&s->l), 0);
    dt_wait_child_named(pid, "pshared rwlock blocked child");

    /* Two children and the parent, readers and writers. */
    pid_t kids[2];
    for (int i = 0; i < 2; i++)
        kids[i] = dt_fork(prw_worker, s);
    cr_assert_eq(prw_worker(s), 0);
    for (int i = 0; i < 2; i++)
        dt_wait_child_named(kids[i], "pshared rwlock worker");
    cr_assert_eq(s->bad, 0);
    cr_assert_eq(s->a, 3L * (PRW_ITERS / 2));
    cr_assert_eq(pthread_rwlock_destroy(&s->l), 0);
    dt_shared_free(s, sizeof *s);
}

/* ---- signals -------------------------------------------------------------------------------- */

struct blocked_rw {
    pthread_rwlock_t *l;
    int write;
    int kind;
    int tid;
    int ret;
    int returned;
};

static void *blocked_rw_fn(void *p)
{
    struct blocked_rw *b = p;
    struct timespec rt = dt_deadline(CLOCK_REALTIME, 20 * DT_S);
    struct timespec mono = dt_deadline(CLOCK_MONOTONIC, 20 * DT_S);
    dt_publish_tid(&b->tid);
    int r;
    if (b->kind == 0)
        r = b->write ? pthread_rwlock_wrlock(b->l) : pthread_rwlock_rdlock(b->l);
    else if (b->kind == 1)
        r = timed_op(b->l, b->write, (clockid_t)-1, &rt);
    else
        r = timed_op(b->l, b->write, CLOCK_MONOTONIC, &mono);
    b->ret = r;
    __atomic_store_n(&b->returned, 1, __ATOMIC_RELEASE);
    if (r == 0)
        pthread_rwlock_unlock(b->l);
    return NULL;
}

/* POSIX pthread_rwlock_rdlock / wrlock: "shall not return an error code of
 * [EINTR]". */
Test(prwlock, blocked_lock_is_not_interrupted_by_signals, .timeout = 30)
{
    for (int write = 0; write < 2; write++)
        for (int kind = 0; kind < 3; kind++) {
            pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
            /* a reader is kept out by our write lock, a writer by our read lock */
            cr_assert_eq(write ? pthread_rwlock_rdlock(&l) : pthread_rwlock_wrlock(&l), 0);
            struct blocked_rw b = {&l, write, kind, 0, -1, 0};
            pthread_t t;
            dt_spawn(&t, blocked_rw_fn, &b);
            dt_wait_blocked(&b.tid, "blocked rwlock");
            cr_assert_geq(dt_pummel(t, 10, 2 * DT_MS), 1, "no handler ran");
            dt_sleep_ns(5 * DT_MS);
            cr_assert_eq(__atomic_load_n(&b.returned, __ATOMIC_ACQUIRE), 0,
                         "write %d kind %d: returned %d on a signal", write, kind, b.ret);
            cr_assert_eq(pthread_rwlock_unlock(&l), 0);
            dt_join(t);
            dt_pummel_end();
            cr_assert_eq(b.ret, 0, "write %d kind %d", write, kind);
        }
}
