/* tests/test_lockstat.c - lock statistics (docs/lockstat.md).  Criterion
 * runs each test in a process of its own, so the global mode never leaks
 * from one test into the next. */
#include "helpers.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>

static struct ks_lockstat stat_of(const void *lock)
{
    struct ks_lockstat all[64];
    size_t n = ks_lockstat_read(all, 64);
    for (size_t i = 0; i < n && i < 64; i++)
        if (all[i].lock == lock)
            return all[i];
    cr_assert_fail("no record for %p among %zu", lock, n);
    struct ks_lockstat none = {0};
    return none;
}

static void busy_ns(int64_t ns)
{
    int64_t end = ks_now() + ns;
    while (ks_now() < end)
        ;
}

/* ks_lockstat_report's text, to be freed. */
static char *report_text(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    cr_assert_eq(ks_lockstat_report(f), 0);
    fclose(f);
    return buf;
}

enum { THREADS = 8, ROUNDS = 2000, WORK_NS = 2000 };

struct worker {
    ks_mutex_t *m;
    uint64_t *counter;
    int tries; /* also trylock (looping until it succeeds) every other round */
};

static void *work(void *p)
{
    struct worker *w = p;
    for (int i = 0; i < ROUNDS; i++) {
        if (w->tries && (i & 1)) {
            while (ks_mutex_trylock(w->m) != 0)
                sched_yield();
        } else {
            cr_assert_eq(ks_mutex_lock(w->m), 0);
        }
        ++*w->counter;
        busy_ns(WORK_NS);
        cr_assert_eq(ks_mutex_unlock(w->m), 0);
    }
    return NULL;
}

static void run_workers(ks_mutex_t *m, uint64_t *counter, int tries)
{
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){m, counter, tries};
        kt_spawn(&t[i], work, &w[i]);
    }
    for (int i = 0; i < THREADS; i++)
        kt_join(t[i]);
}

Test(lockstat, all_mode_counts_every_acquisition_and_hold, .timeout = 120)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_mutex_t m;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(m.state, KS_MUTEX_TRACED, "marked at init");
    uint64_t counter = 0;
    run_workers(&m, &counter, 1);
    cr_assert_eq(counter, (uint64_t)THREADS * ROUNDS);
    struct ks_lockstat s = stat_of(&m);
    cr_assert_eq(s.kind, KS_LOCK_MUTEX);
    cr_assert_eq(s.acquisitions, (uint64_t)THREADS * ROUNDS, "acquisitions %llu", (unsigned long long)s.acquisitions);
    cr_assert_eq(s.holds, (uint64_t)THREADS * ROUNDS, "every hold timed: %llu", (unsigned long long)s.holds);
    cr_assert_geq(s.hold_ns, (uint64_t)THREADS * ROUNDS * WORK_NS, "hold %llu ns >= the injected work",
                  (unsigned long long)s.hold_ns);
    cr_assert_geq(s.hold_max_ns, (uint64_t)WORK_NS);
    cr_assert_leq(s.contended, s.acquisitions);
    uint64_t h = 0;
    for (int b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
        h += s.wait_hist[b];
    cr_assert_eq(h, s.contended, "the histogram holds every contended wait");
    cr_assert_leq(s.wait_max_ns, s.wait_ns);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
    cr_assert_eq(m.state, 0u, "destroy clears the mark");
}

Test(lockstat, contention_mode_leaves_the_fast_path_alone)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_mutex_t m;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(m.state, 0u, "no mark: the fast paths work");
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(ks_mutex_lock(&m), 0);
        cr_assert_eq(m.state, KS_MUTEX_LOCKED);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
    }
    struct ks_lockstat s = stat_of(&m); /* init made the record */
    cr_assert_eq(s.acquisitions, 0, "uncontended acquisitions are not seen in this mode");
    cr_assert_eq(s.contended, 0);
}

Test(lockstat, contention_mode_sees_contended_waits, .timeout = 120)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_mutex_t m;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    uint64_t counter = 0;
    run_workers(&m, &counter, 0);
    cr_assert_eq(counter, (uint64_t)THREADS * ROUNDS);
    struct ks_lockstat s = stat_of(&m);
    cr_assert_gt(s.contended, 0, "8 threads holding 2 us each contended");
    cr_assert_leq(s.contended, s.acquisitions);
    cr_assert_leq(s.acquisitions, (uint64_t)THREADS * ROUNDS);
    cr_assert_gt(s.wait_ns, 0);
    /* the holds timed are those whose unlock came to the slow path */
    cr_assert_leq(s.holds, s.acquisitions);
    if (s.holds)
        cr_assert_geq(s.hold_ns, s.holds * WORK_NS);
}

Test(lockstat, off_records_nothing)
{
    ks_mutex_t m;
    cr_assert_eq(ks_lockstat_mode(), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    uint64_t counter = 0;
    run_workers(&m, &counter, 1);
    cr_assert_eq(ks_lockstat_read(NULL, 0), 0);
    cr_assert_eq(m.state, 0u);
}

Test(lockstat, the_mark_goes_when_the_mode_does)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_mutex_t m;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_OFF), KS_LOCKSTAT_ALL);
    cr_assert_eq(ks_mutex_lock(&m), 0); /* slow once: drops the mark */
    cr_assert_eq(m.state, KS_MUTEX_LOCKED);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(m.state, 0u);
    cr_assert_eq(stat_of(&m).acquisitions, 1, "only the acquisition made in KS_LOCKSTAT_ALL");
    /* a trylock on a marked mutex after the mode went off also drops it */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_mutex_t m2;
    cr_assert_eq(ks_mutex_init(&m2, 0), 0);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_OFF), KS_LOCKSTAT_ALL);
    cr_assert_eq(ks_mutex_trylock(&m2), 0);
    cr_assert_eq(m2.state, KS_MUTEX_LOCKED);
    cr_assert_eq(ks_mutex_trylock(&m2), EBUSY);
    cr_assert_eq(ks_mutex_unlock(&m2), 0);
}

Test(lockstat, a_static_mutex_is_marked_at_its_first_slow_path)
{
    static ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_mutex_lock(&m), 0); /* fast: not seen */
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(ks_lockstat_read(NULL, 0), 0);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_timedlock(&m, 0), ETIMEDOUT); /* a slow path that fails marks nothing */
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    /* contention: a second thread waits */
    uint64_t counter = 0;
    run_workers(&m, &counter, 0);
    cr_assert(m.state & KS_MUTEX_TRACED, "marked once a slow path acquired it");
    struct ks_lockstat s = stat_of(&m);
    cr_assert_gt(s.acquisitions, 0);
    cr_assert_leq(s.acquisitions, (uint64_t)THREADS * ROUNDS);
    uint64_t before = s.acquisitions;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(ks_mutex_lock(&m), 0);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
    }
    cr_assert_eq(stat_of(&m).acquisitions, before + 10, "marked: every acquisition counted from then on");
}

Test(lockstat, condition_wait_on_a_marked_mutex, .timeout = 60)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_mutex_t m;
    ks_cond_t c;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(ks_cond_init(&c, 0), 0);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_cond_timedwait(&c, &m, ks_deadline_after(1000000)), ETIMEDOUT);
    cr_assert(m.state & KS_MUTEX_LOCKED, "held again after the wait");
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    struct ks_lockstat s = stat_of(&m);
    cr_assert_eq(s.acquisitions, 2, "the lock and the relock after the wait");
    cr_assert_eq(s.holds, 2, "two holds: before the wait and after it");
    cr_assert_eq(ks_mutex_destroy(&m), 0);
    cr_assert_eq(ks_cond_destroy(&c), 0);
}

Test(lockstat, report_names_the_class)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_mutex_t a[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ks_mutex_init(&a[i], 0), 0);
        cr_assert_eq(ks_lock_name(&a[i], "accounts"), 0);
        for (int k = 0; k <= i; k++) {
            cr_assert_eq(ks_mutex_lock(&a[i]), 0);
            cr_assert_eq(ks_mutex_unlock(&a[i]), 0);
        }
    }
    char *buf = report_text();
    cr_assert(strstr(buf, "mode all"), "%s", buf);
    const char *row = strstr(buf, "\naccounts ");
    cr_assert_not_null(row, "%s", buf);
    unsigned locks = 0;
    unsigned long long acq = 0;
    cr_assert_eq(sscanf(row + 1, "accounts mutex %u %llu", &locks, &acq), 2, "%s", row);
    cr_assert_eq(locks, 3);
    cr_assert_eq(acq, 6, "1 + 2 + 3 acquisitions in the class");
    free(buf);
}

struct holder {
    ks_mutex_t *m;
    ks_event_t *held;
    int64_t ns;
};

static void *hold_a_while(void *p)
{
    struct holder *h = p;
    cr_assert_eq(ks_mutex_lock(h->m), 0);
    ks_event_set(h->held);
    /* Hold on until the other thread is in the slow path and has marked
     * the word (it is about to sleep), then for h->ns more: its wait is at
     * least h->ns however the two threads are scheduled.  Timing the hold
     * from ks_event_set() alone failed in CI: with the suite's parallel
     * jobs on 2 cores the waiter was not run for 20 ms, and found the
     * mutex free (no contention recorded). */
    int64_t give_up = ks_now() + 30 * INT64_C(1000000000);
    while (!(__atomic_load_n(&h->m->state, __ATOMIC_RELAXED) & KS_MUTEX_CONTENDED))
    {
        cr_assert_lt(ks_now(), give_up, "the other thread never waited");
        sched_yield();
    }
    busy_ns(h->ns);
    cr_assert_eq(ks_mutex_unlock(h->m), 0);
    return NULL;
}

/* Lock m after waiting at least 20 ms for a thread that holds it (the
 * acquisition sleeps, so its release reaches the slow path); returns that
 * thread, to be joined. */
static pthread_t lock_after_a_wait(ks_mutex_t *m, struct holder *h, ks_event_t *held)
{
    cr_assert_eq(ks_event_init(held, 0), 0);
    *h = (struct holder){m, held, 20 * 1000 * 1000};
    pthread_t t;
    kt_spawn(&t, hold_a_while, h);
    cr_assert_eq(ks_event_wait(held), 0);
    cr_assert_eq(ks_mutex_lock(m), 0);
    return t;
}

Test(lockstat, one_wait_lands_in_its_bucket, .timeout = 60)
{
    /* One contended acquisition of about 20 ms: the histogram holds it in
     * the bucket of floor(log2(its wait in ns)), the wait the record reports
     * (two conversions of one tick count that must agree). */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_mutex_t m;
    ks_event_t held;
    struct holder h;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    pthread_t t = lock_after_a_wait(&m, &h, &held);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    kt_join(t);
    struct ks_lockstat s = stat_of(&m);
    cr_assert_eq(s.contended, 1);
    cr_assert_geq(s.wait_ns, 15 * 1000 * 1000, "waited %llu ns for a 20 ms hold", (unsigned long long)s.wait_ns);
    cr_assert_eq(s.wait_max_ns, s.wait_ns);
    unsigned want = 63 - (unsigned)__builtin_clzll(s.wait_ns);
    for (unsigned b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
        cr_assert_eq(s.wait_hist[b], b == want ? 1u : 0u, "bucket %u holds %llu; the wait was %llu ns (bucket %u)", b,
                     (unsigned long long)s.wait_hist[b], (unsigned long long)s.wait_ns, want);
    cr_assert_eq(s.holds, 1, "the waiter slept, so its release was seen");
}

/* ---- regressions from the review (docs/lockstat.md, "Review") ---- */

struct pending_worker {
    ks_mutex_t *m;
    ks_event_t done, go;
};

static void *lock_50_then_wait(void *p)
{
    struct pending_worker *w = p;
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(ks_mutex_lock(w->m), 0);
        cr_assert_eq(ks_mutex_unlock(w->m), 0);
    }
    ks_event_set(&w->done);
    ks_event_wait(&w->go); /* alive: its 50 are pending in its shard */
    return NULL;
}

static void pending_counts_dropped(int reinit)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    ks_mutex_t m;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    struct pending_worker w = {.m = &m};
    cr_assert_eq(ks_event_init(&w.done, 0), 0);
    cr_assert_eq(ks_event_init(&w.go, 0), 0);
    pthread_t t;
    kt_spawn(&t, lock_50_then_wait, &w);
    cr_assert_eq(ks_event_wait(&w.done), 0);
    if (reinit) {
        /* another lock at the same address */
        cr_assert_eq(ks_mutex_destroy(&m), 0);
        cr_assert_eq(ks_mutex_init(&m, 0), 0);
    } else {
        ks_lockstat_reset();
    }
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ks_mutex_lock(&m), 0);
        cr_assert_eq(ks_mutex_unlock(&m), 0);
    }
    ks_event_set(&w.go);
    kt_join(t); /* its exit flushes what it had pending */
    struct ks_lockstat s = stat_of(&m);
    cr_assert_eq(s.acquisitions, 5, "%llu acquisitions: the old lock's (or pre-reset) counts came back",
                 (unsigned long long)s.acquisitions);
    cr_assert_eq(s.holds, 5);
}

Test(lockstat, a_new_lock_at_an_old_address_gets_none_of_its_counts, .timeout = 60)
{
    pending_counts_dropped(1);
}

Test(lockstat, reset_drops_what_other_threads_have_pending, .timeout = 60)
{
    pending_counts_dropped(0);
}

Test(lockstat, a_stamp_from_before_the_mode_went_off_is_not_a_hold, .timeout = 60)
{
    /* CONTENTION: an acquisition after a sleep is stamped; its release,
     * made with statistics off, must consume the stamp, or a later hold
     * reads it (305 ms reported for a 20 ms hold). */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_mutex_t m;
    ks_event_t held;
    struct holder h;
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    pthread_t t = lock_after_a_wait(&m, &h, &held); /* waited: stamped */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_OFF), KS_LOCKSTAT_CONTENTION);
    kt_join(t);
    cr_assert_eq(ks_mutex_unlock(&m), 0); /* C set: slow, with statistics off */
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    ks_lockstat_reset();
    /* a fast-path acquisition whose release is slow: nothing to time */
    cr_assert_eq(ks_mutex_lock(&m), 0);
    __atomic_fetch_or(&m.state, KS_MUTEX_CONTENDED, __ATOMIC_RELAXED); /* as a sleeper would */
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    struct ks_lockstat s = stat_of(&m);
    cr_assert_lt(s.hold_max_ns, 100 * 1000 * 1000, "a hold of %.1f ms was read from an old stamp",
                 (double)s.hold_max_ns / 1e6);
}

Test(lockstat, trylock_slow_marks_in_all_mode)
{
    static ks_mutex_t m = KS_MUTEX_INIT; /* unmarked */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_mutex_trylock_slow(&m), 0);
    cr_assert_eq(m.state, KS_MUTEX_LOCKED | KS_MUTEX_TRACED, "word 0x%x", m.state);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    struct ks_lockstat s = stat_of(&m);
    cr_assert_eq(s.acquisitions, 1);
    cr_assert_eq(s.holds, 1, "the release was seen");
}

Test(lockstat, a_lock_without_a_record_loses_its_mark, .timeout = 120)
{
    /* Fill the table with names of addresses that are no locks; a mutex
     * initialised in ALL mode then has no record: after its first slow
     * path it must be unmarked (every lock and unlock once walked the
     * whole table, 650 us a pair). */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    static char fake[200000];
    for (size_t i = 0; i < sizeof fake; i++)
        (void)ks_lock_name(&fake[i], "filler"); /* ENOSPC once its slots are taken */
    cr_assert_eq(ks_lockstat_read(NULL, 0), 65536, "the table is full");
    ks_mutex_t m;
    cr_assert_eq(ks_lock_name(&m, "m"), ENOSPC, "no room for m either");
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(m.state, 0u, "no record: no mark (word 0x%x)", m.state);
    char *buf = report_text();
    cr_assert(strstr(buf, "some locks are missing"), "the report says so");
    free(buf);
}

struct namer {
    ks_event_t stop;
    char *base;
    size_t n;
};

static void *name_many(void *p)
{
    struct namer *nm = p;
    for (size_t i = 0; i < nm->n && !ks_event_is_set(&nm->stop); i++)
        (void)ks_lock_name(nm->base + i, "grows");
    return NULL;
}

Test(lockstat, report_while_locks_are_added, .timeout = 120)
{
    /* The report sized its arrays from one count and read with another: a
     * heap overflow (ASan) or a crash when records came meanwhile. */
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_CONTENTION), KS_LOCKSTAT_OFF);
    static char fake[60000];
    struct namer nm = {.base = fake, .n = sizeof fake};
    cr_assert_eq(ks_event_init(&nm.stop, 0), 0);
    pthread_t t;
    kt_spawn(&t, name_many, &nm);
    FILE *f = fopen("/dev/null", "w");
    for (int i = 0; i < 200; i++)
        cr_assert_eq(ks_lockstat_report(f), 0);
    fclose(f);
    ks_event_set(&nm.stop);
    kt_join(t);
}

/* An allocator guarded by a ks_mutex: the statistics code's own calloc
 * takes it, and (first version) recursed through the lock's slow path
 * until the stack overflowed.  A link-time wrapper (TEST_WRAP) puts a
 * ks_mutex around every calloc the library makes while `guarded`. */
static ks_mutex_t alloc_lock;
static volatile int guarded;
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
    if (!guarded)
        return __real_calloc(n, size);
    ks_mutex_lock(&alloc_lock);
    void *p = __real_calloc(n, size);
    ks_mutex_unlock(&alloc_lock);
    return p;
}

Test(lockstat, an_allocator_guarded_by_a_ks_mutex_does_not_recurse, .timeout = 60)
{
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_mutex_init(&alloc_lock, 0), 0); /* marked: its every lock reaches the slow path */
    guarded = 1;
    ks_mutex_t m[8];
    for (int i = 0; i < 8; i++) { /* each new lock's record is a calloc */
        cr_assert_eq(ks_mutex_init(&m[i], 0), 0);
        cr_assert_eq(ks_mutex_lock(&m[i]), 0);
        cr_assert_eq(ks_mutex_unlock(&m[i]), 0);
    }
    guarded = 0;
    cr_assert_eq(stat_of(&m[7]).acquisitions, 1);
}

/* ---- the live view: ks_lockstat_publish and ksync-top ---- */

static char *page_path(pid_t pid, char *buf, size_t len)
{
    snprintf(buf, len, KS_LOCKSTAT_PAGE_PREFIX "%d", (int)pid);
    return buf;
}

/* ksync-top's output on this process, to be freed. */
static char *top_output(const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s %d 2>&1", KT_TOP, args, (int)getpid());
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, p);
    buf[n] = 0;
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: status %#x: %s", cmd, st, buf);
    return buf;
}

static void *hammer_named(void *p)
{
    for (int i = 0; i < 2000; i++) {
        ks_mutex_lock(p);
        ks_mutex_unlock(p);
    }
    return NULL;
}

Test(lockstat, ksync_top_reads_the_published_page, .timeout = 60)
{
    static ks_mutex_t m;
    cr_assert_eq(ks_lockstat_set(KS_LOCKSTAT_ALL), KS_LOCKSTAT_OFF);
    cr_assert_eq(ks_mutex_init(&m, 0), 0);
    cr_assert_eq(ks_lock_name(&m, "the-published-lock"), 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        kt_spawn(&t[i], hammer_named, &m);
    for (int i = 0; i < 4; i++)
        kt_join(t[i]); /* their counts are flushed at their exit */
    cr_assert_eq(ks_lockstat_publish(20), 0);
    char name[64];
    int fd = shm_open(page_path(getpid(), name, sizeof name), O_RDONLY, 0);
    cr_assert_geq(fd, 0, "no page: %s", strerror(errno));
    const struct ks_lockstat_page *pg = mmap(NULL, sizeof *pg, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(pg, MAP_FAILED);
    int64_t end = ks_now() + 5 * KS_NSEC_PER_SEC;
    while (__atomic_load_n(&pg->updated_ns, __ATOMIC_ACQUIRE) == 0 && ks_now() < end)
        kt_sleep_ns(5 * KT_MS);
    cr_assert_eq(pg->magic, KS_LOCKSTAT_PAGE_MAGIC);
    cr_assert_eq(pg->pid, (int32_t)getpid());
    munmap((void *)pg, sizeof *pg);
    char *out = top_output("-b -n 2 -d 0.05");
    const char *row = strstr(out, "the-published-lock");
    cr_assert_not_null(row, "%s", out);
    unsigned locks = 0;
    unsigned long long acq = 0;
    cr_assert_eq(sscanf(row, "the-published-lock mutex %u %llu", &locks, &acq), 2, "%s", row);
    cr_assert_eq(locks, 1u);
    cr_assert_eq(acq, 8000ull, "%s", out);
    cr_assert(strstr(out, "mode all"), "%s", out);
    free(out);
    /* stopped: the page is gone */
    cr_assert_eq(ks_lockstat_publish(0), 0);
    cr_assert_eq(shm_open(name, O_RDONLY, 0), -1);
    cr_assert_eq(errno, ENOENT);
}

Test(lockstat, publish_careless_calls, .timeout = 30)
{
    char name[64];
    cr_assert_eq(ks_lockstat_publish(-1), EINVAL);
    cr_assert_eq(ks_lockstat_publish(0), 0, "stopping what does not run");
    cr_assert_eq(ks_lockstat_publish(1000), 0);
    cr_assert_eq(ks_lockstat_publish(10), 0, "running: a new interval");
    cr_assert_eq(ks_lockstat_publish(0), 0);
    cr_assert_eq(ks_lockstat_publish(0), 0);
    cr_assert_eq(shm_open(page_path(getpid(), name, sizeof name), O_RDONLY, 0), -1);
    cr_assert_eq(ks_lockstat_publish(5), 0, "again after a stop");
    cr_assert_eq(ks_lockstat_publish(0), 0);
}

static int child_stops_publishing(void *arg)
{
    (void)arg;
    return ks_lockstat_publish(0) == 0 ? 0 : 1; /* no thread to join here, no page of its own */
}

Test(lockstat, a_fork_child_leaves_its_parents_page_alone, .timeout = 30)
{
    char name[64];
    cr_assert_eq(ks_lockstat_publish(10), 0);
    for (int k = 0; k < KT_FORK_KINDS; k++)
        kt_wait_child_named(kt_fork_as((enum kt_fork_kind)k, child_stops_publishing, NULL), kt_fork_names[k]);
    int fd = shm_open(page_path(getpid(), name, sizeof name), O_RDONLY, 0);
    cr_assert_geq(fd, 0, "the children removed the parent's page");
    close(fd);
    cr_assert_eq(ks_lockstat_publish(0), 0);
}

static int top_status(const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", KT_TOP, args);
    int st = system(cmd);
    cr_assert(WIFEXITED(st), "%s: %#x", cmd, st);
    return WEXITSTATUS(st);
}

Test(lockstat, ksync_top_careless_use, .timeout = 30)
{
    cr_assert_eq(top_status(""), 2);
    cr_assert_eq(top_status("-d 0 1"), 2);
    cr_assert_eq(top_status("-n 0 1"), 2);
    cr_assert_eq(top_status("abc"), 2);
    cr_assert_eq(top_status("-1"), 2);
    cr_assert_eq(top_status("1 2"), 2);
    cr_assert_eq(top_status("-b -n 1 2147483646"), 1, "no such page");
    /* a page that is not one: too short, then the right size of garbage */
    char name[64];
    pid_t fake = 2147483000;
    page_path(fake, name, sizeof name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 100), 0);
    char args[64];
    snprintf(args, sizeof args, "-b -n 1 %d", (int)fake);
    cr_assert_eq(top_status(args), 1, "a short page");
    cr_assert_eq(ftruncate(fd, sizeof(struct ks_lockstat_page)), 0);
    unsigned char *p = mmap(NULL, sizeof(struct ks_lockstat_page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(p, MAP_FAILED);
    for (size_t i = 0; i < sizeof(struct ks_lockstat_page); i++)
        p[i] = (unsigned char)(i * 2654435761u >> 13);
    ((struct ks_lockstat_page *)(void *)p)->seq = 0;
    cr_assert_eq(top_status(args), 1, "garbage");
    struct ks_lockstat_page *pg = (void *)p;
    pg->magic = KS_LOCKSTAT_PAGE_MAGIC;
    pg->version = KS_LOCKSTAT_PAGE_VERSION;
    pg->rows_max = KS_LOCKSTAT_PAGE_ROWS;
    pg->pid = fake;
    pg->mode = 1;
    pg->rows = 100000;
    cr_assert_eq(top_status(args), 1, "too many rows");
    pg->rows = 3; /* rows of garbage text, unterminated: printed cut, not overrun */
    cr_assert_eq(top_status(args), 0, "a page of garbage rows is shown, not followed");
    pg->seq = 1; /* a writer that died in the middle */
    cr_assert_eq(top_status(args), 1);
    munmap(p, sizeof(struct ks_lockstat_page));
    close(fd);
    shm_unlink(name);
}

/* No ksync call is a cancellation point (docs/conventions.md).  publish
 * opens the page and, stopping, joins its thread, both cancellation points,
 * while it holds its set-up lock: a cancel pending in the caller acted there
 * and left that lock held, and every later publish hung.  report writes
 * through stdio.  Now all return, and the cancel acts at the caller's own
 * pthread_testcancel(); publish works afterwards. */
static void ls_nocancel_calls(void *f)
{
    cr_assert_eq(pthread_cancel(pthread_self()), 0); /* pending: deferred, enabled */
    cr_assert_eq(ks_lockstat_report(f), 0); /* unbuffered: its writes are write(2) calls */
    cr_assert_eq(ks_lockstat_publish(20), 0);
    cr_assert_eq(ks_lockstat_publish(0), 0);
}

Test(lockstat, publish_and_report_are_not_cancellation_points, .timeout = 30)
{
    FILE *f = fopen("/dev/null", "w");
    cr_assert_not_null(f);
    cr_assert_eq(setvbuf(f, NULL, _IONBF, 0), 0);
    const int ok = kt_returned_then_cancelled(ls_nocancel_calls, f);
    fclose(f);
    cr_assert(ok, "a pending cancel acted inside publish or report");
    cr_assert_eq(ks_lockstat_publish(20), 0, "publish after a cancelled caller");
    cr_assert_eq(ks_lockstat_publish(0), 0);
}
