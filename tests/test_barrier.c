/* tests/test_barrier.c - ks_barrier: API contract, count 1, phases with 2, 8
 * and 32 threads (no thread overtakes into the next phase, exactly one
 * KS_BARRIER_SERIAL per phase, writes before the barrier visible after it),
 * destroy/free by the last thread to return (docs/pitfalls.md item 25), and
 * process-shared use across fork(). */
#include "helpers.h"

/* ---- API contract ------------------------------------------------------------ */

static void expect_init_einval(unsigned count, unsigned flags)
{
    ks_barrier_t b, copy;
    memset(&b, 0x5a, sizeof b);
    memcpy(&copy, &b, sizeof b);
    cr_assert_eq(ks_barrier_init(&b, count, flags), EINVAL, "init(count %u, flags 0x%x) accepted", count,
                 flags);
    cr_assert_eq(memcmp(&b, &copy, sizeof b), 0, "init(count %u, flags 0x%x) changed the object", count,
                 flags);
}

Test(barrier, init_rejects_bad_arguments_and_changes_nothing, .timeout = 30)
{
    expect_init_einval(0, 0);
    expect_init_einval(0, KS_SHARED);
    expect_init_einval(KS_BARRIER_MAX + 1u, 0);
    expect_init_einval(~0u, 0);
    expect_init_einval(2, 2u);
    expect_init_einval(2, 0x80000000u);
    expect_init_einval(2, KS_SHARED | 4u);
    cr_assert_eq(ks_barrier_init(NULL, 1, 0), EINVAL);
    cr_assert_eq(ks_barrier_init(NULL, 0, 0), EINVAL);
    /* A live barrier is not reset by a refused init. */
    ks_barrier_t b, copy;
    cr_assert_eq(ks_barrier_init(&b, 3, 0), 0);
    memcpy(&copy, &b, sizeof b);
    cr_assert_eq(ks_barrier_init(&b, 0, 0), EINVAL);
    cr_assert_eq(memcmp(&b, &copy, sizeof b), 0);
    cr_assert_eq(b.count, 3u);
    /* Valid edges. */
    cr_assert_eq(ks_barrier_init(&b, KS_BARRIER_MAX, KS_SHARED), 0);
    cr_assert_eq(b.count, KS_BARRIER_MAX);
    cr_assert_eq(b.flags, KS_SHARED);
    cr_assert_eq(ks_barrier_destroy(&b), 0);
}

Test(barrier, null_and_uninitialised_are_einval, .timeout = 30)
{
    cr_assert_eq(ks_barrier_wait(NULL), EINVAL);
    cr_assert_eq(ks_barrier_destroy(NULL), EINVAL);
    /* All zeros means count 0: not a usable barrier, and wait must not hang. */
    ks_barrier_t z;
    memset(&z, 0, sizeof z);
    cr_assert_eq(ks_barrier_wait(&z), EINVAL);
}

Test(barrier, count_one_every_wait_is_serial_without_syscalls, .timeout = 30)
{
    for (int f = 0; f < 2; f++) {
        ks_barrier_t b;
        cr_assert_eq(ks_barrier_init(&b, 1, f ? KS_SHARED : 0), 0);
        struct ks_futex_stats a = kt_futex_stats();
        for (int i = 0; i < 10000; i++)
            cr_assert_eq(ks_barrier_wait(&b), KS_BARRIER_SERIAL, "wait %d", i);
        struct ks_futex_stats s = kt_futex_stats();
        cr_assert_eq(s.waits, a.waits);
        cr_assert_eq(s.wakes, a.wakes);
        cr_assert_eq(b.arrived, 0u);
        cr_assert_eq(ks_barrier_destroy(&b), 0);
    }
}

struct bwaiter {
    ks_barrier_t *b;
    pid_t tid;
    int ret;
    int done; /* atomic */
};

static void *bwaiter_main(void *p)
{
    struct bwaiter *w = p;
    __atomic_store_n(&w->tid, kt_gettid(), __ATOMIC_RELEASE);
    w->ret = ks_barrier_wait(w->b);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(barrier, partial_phase_blocks_and_destroy_is_ebusy, .timeout = 30)
{
    ks_barrier_t b;
    cr_assert_eq(ks_barrier_init(&b, 3, 0), 0);
    struct bwaiter w[2] = {{&b, 0, -2, 0}, {&b, 0, -2, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        kt_spawn(&t[i], bwaiter_main, &w[i]);
    for (int i = 0; i < 2; i++) {
        while (!__atomic_load_n(&w[i].tid, __ATOMIC_ACQUIRE))
            sched_yield();
        cr_assert(kt_wait_in_futex(w[i].tid, 20 * KS_NSEC_PER_SEC), "waiter %d never slept", i);
    }
    kt_sleep_ns(20 * KT_MS);
    cr_assert_eq(__atomic_load_n(&w[0].done, __ATOMIC_ACQUIRE) + __atomic_load_n(&w[1].done, __ATOMIC_ACQUIRE),
                 0, "a waiter passed a barrier with 2 of 3 arrivals");
    cr_assert_eq(ks_barrier_destroy(&b), EBUSY);
    /* The third arrival opens it. */
    int r = ks_barrier_wait(&b);
    for (int i = 0; i < 2; i++)
        kt_join(t[i]);
    int serial = (r == KS_BARRIER_SERIAL) + (w[0].ret == KS_BARRIER_SERIAL) + (w[1].ret == KS_BARRIER_SERIAL);
    cr_assert_eq(serial, 1, "%d serial returns (%d, %d, %d)", serial, r, w[0].ret, w[1].ret);
    cr_assert(r == 0 || r == KS_BARRIER_SERIAL);
    for (int i = 0; i < 2; i++)
        cr_assert(w[i].ret == 0 || w[i].ret == KS_BARRIER_SERIAL, "waiter %d returned %d", i, w[i].ret);
    cr_assert_eq(ks_barrier_destroy(&b), 0);
}

/* ---- phases ------------------------------------------------------------------------ */

#define PH_MAX_THREADS 32

struct phases {
    ks_barrier_t b;
    int nthreads, nphases;
    int *arrivals;  /* atomic, per phase: threads that arrived */
    int *serials;   /* atomic, per phase: KS_BARRIER_SERIAL returns */
    int slot[2][PH_MAX_THREADS]; /* plain: written before a phase, read after it */
    int early;      /* atomic: a thread left phase k before all had arrived */
    int stale;      /* atomic: a write made before the barrier was not visible after it */
    int bad_ret;    /* atomic */
    int idx;
};

static void *phase_main(void *p)
{
    struct phases *ph = p;
    int me = __atomic_fetch_add(&ph->idx, 1, __ATOMIC_RELAXED);
    for (int k = 0; k < ph->nphases; k++) {
        if (me == k % ph->nthreads && k % 16 == 0)
            kt_sleep_ns(200000); /* someone arrives late now and then: the others sleep */
        ph->slot[k % 2][me] = k + 1;
        __atomic_add_fetch(&ph->arrivals[k], 1, __ATOMIC_RELAXED);
        int r = ks_barrier_wait(&ph->b);
        if (r == KS_BARRIER_SERIAL)
            __atomic_add_fetch(&ph->serials[k], 1, __ATOMIC_RELAXED);
        else if (r != 0)
            __atomic_add_fetch(&ph->bad_ret, 1, __ATOMIC_RELAXED);
        if (__atomic_load_n(&ph->arrivals[k], __ATOMIC_RELAXED) != ph->nthreads)
            __atomic_add_fetch(&ph->early, 1, __ATOMIC_RELAXED);
        /* Nobody can be in phase k+2 yet (it needs our arrival at k+1), so
         * slot[k % 2] still holds exactly what was written for phase k. */
        for (int j = 0; j < ph->nthreads; j++)
            if (ph->slot[k % 2][j] != k + 1)
                __atomic_add_fetch(&ph->stale, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void run_phases(int nthreads, int nphases, unsigned flags)
{
    struct phases *ph = calloc(1, sizeof *ph);
    cr_assert_not_null(ph);
    cr_assert_leq(nthreads, PH_MAX_THREADS);
    ph->nthreads = nthreads;
    ph->nphases = nphases;
    ph->arrivals = calloc((size_t)nphases, sizeof(int));
    ph->serials = calloc((size_t)nphases, sizeof(int));
    cr_assert(ph->arrivals && ph->serials);
    cr_assert_eq(ks_barrier_init(&ph->b, (unsigned)nthreads, flags), 0);
    pthread_t t[PH_MAX_THREADS];
    for (int i = 0; i < nthreads; i++)
        kt_spawn(&t[i], phase_main, ph);
    for (int i = 0; i < nthreads; i++)
        kt_join(t[i]);
    cr_assert_eq(ph->bad_ret, 0, "%d waits returned neither 0 nor KS_BARRIER_SERIAL", ph->bad_ret);
    cr_assert_eq(ph->early, 0, "%d times a thread left a phase before all %d had arrived", ph->early,
                 nthreads);
    cr_assert_eq(ph->stale, 0, "%d stale reads of writes made before the barrier", ph->stale);
    for (int k = 0; k < nphases; k++) {
        cr_assert_eq(ph->arrivals[k], nthreads, "phase %d: %d arrivals", k, ph->arrivals[k]);
        cr_assert_eq(ph->serials[k], 1, "phase %d: %d serial returns", k, ph->serials[k]);
    }
    cr_assert_eq(ph->b.arrived, 0u);
    cr_assert_eq(ks_barrier_destroy(&ph->b), 0);
    free(ph->arrivals);
    free(ph->serials);
    free(ph);
}

Test(barrier, phases_2_threads, .timeout = 120) { run_phases(2, 20000 / KT_SLOW, 0); }
Test(barrier, phases_8_threads, .timeout = 120) { run_phases(8, 3000 / KT_SLOW, 0); }
Test(barrier, phases_32_threads_oversubscribed, .timeout = 120) { run_phases(32, 1000 / KT_SLOW, 0); }
Test(barrier, phases_8_threads_shared_flag, .timeout = 120) { run_phases(8, 1000 / KT_SLOW, KS_SHARED); }

/* ---- destroy/free right after the last phase's waits return (item 25) -------------- */

#define BF_ROUNDS 1000
#define BF_PHASES 3
#define BF_MAX 8

struct bfree {
    int nthreads;
    ks_barrier_t *b; /* this round's barrier, published with `round` */
    int round;       /* atomic */
    int returned;    /* atomic, per round: the thread that makes it nthreads frees */
    int done;        /* atomic: the last round whose barrier was freed */
    int errors;      /* atomic */
    int serials;     /* atomic, cumulative */
};

static void *bfree_main(void *p)
{
    struct bfree *f = p;
    for (int r = 1; r <= BF_ROUNDS; r++) {
        while (__atomic_load_n(&f->round, __ATOMIC_ACQUIRE) != r)
            sched_yield();
        ks_barrier_t *b = f->b;
        for (int k = 0; k < BF_PHASES; k++) {
            int ret = ks_barrier_wait(b);
            if (ret == KS_BARRIER_SERIAL)
                __atomic_add_fetch(&f->serials, 1, __ATOMIC_RELAXED);
            else if (ret != 0)
                __atomic_add_fetch(&f->errors, 1, __ATOMIC_RELAXED);
        }
        /* Our last wait returned: we never touch b again.  The last thread
         * to get here destroys and frees it, while the others may still be
         * on their way out of ks_barrier_wait(). */
        if (__atomic_add_fetch(&f->returned, 1, __ATOMIC_ACQ_REL) == f->nthreads) {
            __atomic_store_n(&f->returned, 0, __ATOMIC_RELAXED);
            if (ks_barrier_destroy(b) != 0)
                __atomic_add_fetch(&f->errors, 1, __ATOMIC_RELAXED);
            memset(b, 0xdd, sizeof *b);
            free(b);
            __atomic_store_n(&f->done, r, __ATOMIC_RELEASE);
        }
    }
    return NULL;
}

static void run_bfree(int nthreads)
{
    struct bfree *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    f->nthreads = nthreads;
    pthread_t t[BF_MAX];
    for (int i = 0; i < nthreads; i++)
        kt_spawn(&t[i], bfree_main, f);
    const int rounds = BF_ROUNDS;
    for (int r = 1; r <= rounds; r++) {
        ks_barrier_t *b = malloc(sizeof *b);
        cr_assert_not_null(b);
        cr_assert_eq(ks_barrier_init(b, (unsigned)nthreads, (r % 4 == 0) ? KS_SHARED : 0), 0);
        f->b = b;
        __atomic_store_n(&f->round, r, __ATOMIC_RELEASE);
        int64_t end = ks_now() + 20 * KS_NSEC_PER_SEC;
        while (__atomic_load_n(&f->done, __ATOMIC_ACQUIRE) != r && ks_now() < end)
            sched_yield();
        cr_assert_eq(__atomic_load_n(&f->done, __ATOMIC_ACQUIRE), r, "round %d: threads stuck", r);
    }
    for (int i = 0; i < nthreads; i++)
        kt_join(t[i]);
    cr_assert_eq(f->errors, 0);
    cr_assert_eq(f->serials, rounds * BF_PHASES, "%d serial returns for %d phases", f->serials,
                 rounds * BF_PHASES);
    free(f);
}

Test(barrier, free_by_last_returner_2_threads, .timeout = 120) { run_bfree(2); }
Test(barrier, free_by_last_returner_8_threads, .timeout = 120) { run_bfree(8); }

/* The same with the barrier on the stack of one of the threads: it returns
 * (and its frame is reused) as soon as everybody is out of the wait. */
struct sframe {
    ks_barrier_t *volatile b; /* published by the owner */
    int ready;                /* atomic: round whose barrier is published */
    int returned;             /* atomic, per round */
    int errors;               /* atomic */
    int nthreads;
};

static void owner_round(struct sframe *s, int r)
{
    ks_barrier_t b; /* lives in this frame only */
    if (ks_barrier_init(&b, (unsigned)s->nthreads, 0) != 0)
        __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    s->b = &b;
    __atomic_store_n(&s->ready, r, __ATOMIC_RELEASE);
    for (int k = 0; k < BF_PHASES; k++) {
        int ret = ks_barrier_wait(&b);
        if (ret != 0 && ret != KS_BARRIER_SERIAL)
            __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    }
    __atomic_add_fetch(&s->returned, 1, __ATOMIC_ACQ_REL);
    while (__atomic_load_n(&s->returned, __ATOMIC_ACQUIRE) != s->nthreads)
        sched_yield();
    __atomic_store_n(&s->returned, 0, __ATOMIC_RELAXED);
    if (ks_barrier_destroy(&b) != 0)
        __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
    memset(&b, 0xdd, sizeof b); /* as a new frame would */
}

static void *sframe_other(void *p)
{
    struct sframe *s = p;
    for (int r = 1; r <= BF_ROUNDS; r++) {
        while (__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE) != r)
            sched_yield();
        ks_barrier_t *b = s->b;
        for (int k = 0; k < BF_PHASES; k++) {
            int ret = ks_barrier_wait(b);
            if (ret != 0 && ret != KS_BARRIER_SERIAL)
                __atomic_add_fetch(&s->errors, 1, __ATOMIC_RELAXED);
        }
        /* Our last wait returned: from here the owner may reuse its frame.
         * (It resets `returned` before publishing the next round.) */
        __atomic_add_fetch(&s->returned, 1, __ATOMIC_ACQ_REL);
    }
    return NULL;
}

Test(barrier, stack_barrier_reused_right_after_return, .timeout = 120)
{
    struct sframe *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    s->nthreads = 4;
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        kt_spawn(&t[i], sframe_other, s);
    for (int r = 1; r <= BF_ROUNDS; r++)
        owner_round(s, r);
    for (int i = 0; i < 3; i++)
        kt_join(t[i]);
    cr_assert_eq(s->errors, 0);
    free(s);
}

/* ---- process-shared across fork() ------------------------------------------------------ */

#define SH_PHASES 2000
#define SH_MAXPROC 3

struct shm_barrier {
    ks_barrier_t b;
    int nproc;
    int arrivals[SH_PHASES]; /* atomic */
    int serials[SH_PHASES];  /* atomic */
};

static int shm_phases(struct shm_barrier *s)
{
    for (int k = 0; k < SH_PHASES / KT_SLOW; k++) {
        __atomic_add_fetch(&s->arrivals[k], 1, __ATOMIC_RELAXED);
        int r = ks_barrier_wait(&s->b);
        if (r == KS_BARRIER_SERIAL)
            __atomic_add_fetch(&s->serials[k], 1, __ATOMIC_RELAXED);
        else if (r != 0)
            return 1;
        if (__atomic_load_n(&s->arrivals[k], __ATOMIC_RELAXED) != s->nproc)
            return 2;
    }
    return 0;
}

static int shm_child(void *p)
{
    alarm(60); /* never outlive a hung test */
    return shm_phases(p);
}

static void run_shm(int nproc)
{
    struct shm_barrier *s = kt_shared_alloc(sizeof *s);
    s->nproc = nproc;
    cr_assert_eq(ks_barrier_init(&s->b, (unsigned)nproc, KS_SHARED), 0);
    pid_t pid[SH_MAXPROC];
    for (int i = 0; i < nproc - 1; i++)
        pid[i] = kt_fork(shm_child, s);
    int mine = shm_phases(s);
    for (int i = 0; i < nproc - 1; i++)
        kt_wait_child(pid[i]);
    cr_assert_eq(mine, 0, "parent failed check %d", mine);
    for (int k = 0; k < SH_PHASES / KT_SLOW; k++) {
        cr_assert_eq(s->arrivals[k], nproc, "phase %d: %d arrivals", k, s->arrivals[k]);
        cr_assert_eq(s->serials[k], 1, "phase %d: %d serial returns", k, s->serials[k]);
    }
    cr_assert_eq(ks_barrier_destroy(&s->b), 0);
    kt_shared_free(s, sizeof *s);
}

Test(barrier, process_shared_parent_and_child, .timeout = 120) { run_shm(2); }
Test(barrier, process_shared_three_processes, .timeout = 120) { run_shm(3); }

/* ---- nobody touches the barrier after its final access (hardware watchpoint) ------------- */

static ks_barrier_t *watched_barrier;
static uint32_t watched_phase;

static int barrier_phase_moved(void)
{
    return (__atomic_load_n(&watched_barrier->seq, __ATOMIC_RELAXED) & ~1u) != watched_phase;
}

/* The last arriver: its releasing exchange on seq is its last access. */
Test(barrier, last_arriver_touches_nothing_after_release, .timeout = 30)
{
    _Alignas(16) static ks_barrier_t b;
    watched_barrier = &b;
    struct kt_watch w = {.n = 0};
    _Static_assert(sizeof(ks_barrier_t) == 20, "8+8+4-byte watches cover the barrier");
    if (kt_watch_add(&w, &b, 8) != 0 || kt_watch_add(&w, (char *)&b + 8, 8) != 0 ||
        kt_watch_add(&w, (char *)&b + 16, 4) != 0)
        cr_skip_test("no hardware watchpoints here (perf_event_open: %s)", strerror(errno));

    /* Calibration: release, then read the count. */
    cr_assert_eq(ks_barrier_init(&b, 2, 0), 0);
    watched_phase = 0;
    kt_watch_begin(&w, barrier_phase_moved);
    __atomic_store_n(&b.seq, 2u, __ATOMIC_RELEASE);
    (void)*(volatile uint32_t *)&b.count;
    kt_watch_end(&w);
    cr_assert_eq(w.hits, 2, "the watchpoint saw %d accesses, not 2", w.hits);
    cr_assert_eq(w.after, 2, "the watchpoint missed an access after release");

    for (int f = 0; f < 2; f++)
        for (int sleepers = 0; sleepers < 2; sleepers++) {
            cr_assert_eq(ks_barrier_init(&b, 3, f ? KS_SHARED : 0), 0);
            /* Two (simulated) threads have arrived in phase 5; one "sleeps". */
            watched_phase = 5u << 1;
            __atomic_store_n(&b.seq, watched_phase | (unsigned)sleepers, __ATOMIC_RELAXED);
            __atomic_store_n(&b.arrived, 2u, __ATOMIC_RELAXED);
            kt_watch_begin(&w, barrier_phase_moved);
            int r = ks_barrier_wait(&b);
            kt_watch_end(&w);
            cr_assert_eq(r, KS_BARRIER_SERIAL);
            cr_assert_geq(w.hits, 2, "the watchpoint saw %d accesses", w.hits);
            cr_assert_eq(w.after, 1,
                         "the last arriver accessed the barrier %d times after releasing the phase "
                         "(sleepers %d, flags %d)",
                         w.after - 1, sleepers, f);
            cr_assert_eq(b.seq, 6u << 1);
            cr_assert_eq(b.arrived, 0u);
        }
    kt_watch_close(&w);
}

/* A waiter: after the load that saw the phase move, its only access is the
 * decrement of `leaving` that lets a destroyer go ahead. */
struct watched_bwaiter {
    ks_barrier_t *b;
    int ret;
    struct kt_watched w;
};

static void *watched_barrier_waiter(void *p)
{
    struct watched_bwaiter *ww = p;
    struct kt_watch w;
    if (kt_watched_open(&ww->w, &w, ww->b, sizeof *ww->b) != 0)
        return NULL;
    kt_watch_begin(&w, barrier_phase_moved);
    kt_watched_ready(&ww->w);
    ww->ret = ks_barrier_wait(ww->b);
    kt_watch_end(&w);
    kt_watched_close(&ww->w, &w);
    return NULL;
}

Test(barrier, waiter_touches_nothing_after_the_phase_ends, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    _Alignas(16) static ks_barrier_t b;
    watched_barrier = &b;
    for (int f = 0; f < 2; f++)
        for (int round = 0; round < 2; round++) {
            cr_assert_eq(ks_barrier_init(&b, 2, f ? KS_SHARED : 0), 0);
            watched_phase = 0;
            struct watched_bwaiter ww = {.b = &b, .ret = -2};
            pthread_t t;
            kt_spawn(&t, watched_barrier_waiter, &ww);
            pid_t tid = KT_WATCHED_TID(&ww.w, t);
            /* Asleep: its accesses before the release have all been judged
             * (the watchpoint handler runs a little after each access, so a
             * release racing with it would be misread as an access after). */
            cr_assert(kt_wait_in_futex(tid, 20 * KS_NSEC_PER_SEC));
            cr_assert_eq(__atomic_load_n(&b.arrived, __ATOMIC_RELAXED), 1u);
            cr_assert_eq(ks_barrier_wait(&b), KS_BARRIER_SERIAL);
            kt_join(t);
            cr_assert_eq(ww.ret, 0);
            cr_assert_geq(ww.w.hits, 2, "the watchpoint saw %d accesses", ww.w.hits);
            cr_assert_eq(ww.w.after, 2,
                         "the waiter accessed the barrier %d times after seeing the phase end, "
                         "not once (its leave) (flags %d)",
                         ww.w.after - 1, f);
            cr_assert_eq(b.leaving, 0u);
        }
}

/* docs/pitfalls.md item 25, the POSIX reading glibc and musl follow: the serial thread
 * of the last phase destroys and frees the barrier as soon as its own wait
 * returns, while the threads it released may still be on their way out (one
 * reloading seq after its futex wait, say).  ks_barrier_destroy must wait for
 * them; under ASan a touch after the free is a heap-use-after-free. */
#define SF_THREADS 4
#define SF_ROUNDS 2000
struct serial_free {
    ks_barrier_t *b;
    int round;
    int done;
    int errors;
};

static void *serial_free_worker(void *p)
{
    struct serial_free *f = p;
    for (int r = 1; r <= SF_ROUNDS / KT_SLOW; r++) {
        while (__atomic_load_n(&f->round, __ATOMIC_ACQUIRE) < r)
            sched_yield();
        ks_barrier_t *b = f->b;
        if (ks_barrier_wait(b) == KS_BARRIER_SERIAL) {
            if (ks_barrier_destroy(b))
                __atomic_add_fetch(&f->errors, 1, __ATOMIC_RELAXED);
            memset(b, 0xdd, sizeof *b);
            free(b);
        }
        __atomic_add_fetch(&f->done, 1, __ATOMIC_ACQ_REL);
    }
    return NULL;
}

Test(barrier, serial_thread_frees_while_others_are_leaving, .timeout = 120)
{
    struct serial_free f = {0};
    pthread_t t[SF_THREADS];
    for (int i = 0; i < SF_THREADS; i++)
        kt_spawn(&t[i], serial_free_worker, &f);
    for (int r = 1; r <= SF_ROUNDS / KT_SLOW; r++) {
        f.b = malloc(sizeof *f.b);
        cr_assert_not_null(f.b);
        cr_assert_eq(ks_barrier_init(f.b, SF_THREADS, 0), 0);
        __atomic_store_n(&f.round, r, __ATOMIC_RELEASE);
        while (__atomic_load_n(&f.done, __ATOMIC_ACQUIRE) != r * SF_THREADS)
            sched_yield();
    }
    for (int i = 0; i < SF_THREADS; i++)
        kt_join(t[i]);
    cr_assert_eq(f.errors, 0, "destroy by the serial thread failed %d times", f.errors);
}
