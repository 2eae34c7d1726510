/* stress/s_mutex.c - the mutex family: S1 (race condition), S2 (locked
 * counter), S3 (multi-part line in the critical section), S17 (lock too
 * wide).  Seeds: 000 "Race Condition", "Lock simple", "Antipatterns 2";
 * 002 "Mutex".
 *
 * Every lock is driven through one small table (struct lock_impl) so that
 * ksync's mutex and each reference run exactly the same worker code.
 */
#include "harness.h"

#include <ksync/mutex.h>

#include <ck_spinlock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the locks compared ------------------------------------------------------ */

union anylock {
    ks_mutex_t ks;
    pthread_mutex_t pt;
    ck_spinlock_fas_t fas;
    ck_spinlock_ticket_t ticket;
    ck_spinlock_mcs_t mcs; /* the queue tail; each locker brings its own node */
};

struct lock_impl {
    const char *name;
    enum st_kind kind;
    int spins; /* busy-waits: collapses when threads outnumber cores */
    int (*init)(union anylock *l);
    int (*lock)(union anylock *l, struct ck_spinlock_mcs *node);
    int (*unlock)(union anylock *l, struct ck_spinlock_mcs *node);
    int (*destroy)(union anylock *l);
};

static int ks_init(union anylock *l) { return ks_mutex_init(&l->ks, KS_PRIVATE); }
static int ks_lock(union anylock *l, struct ck_spinlock_mcs *n) { (void)n; return ks_mutex_lock(&l->ks); }
static int ks_unlock(union anylock *l, struct ck_spinlock_mcs *n) { (void)n; return ks_mutex_unlock(&l->ks); }
static int ks_destroy(union anylock *l) { return ks_mutex_destroy(&l->ks); }

static int pt_init(union anylock *l) { return pthread_mutex_init(&l->pt, NULL); }
static int pt_lock(union anylock *l, struct ck_spinlock_mcs *n) { (void)n; return pthread_mutex_lock(&l->pt); }
static int pt_unlock(union anylock *l, struct ck_spinlock_mcs *n) { (void)n; return pthread_mutex_unlock(&l->pt); }
static int pt_destroy(union anylock *l) { return pthread_mutex_destroy(&l->pt); }

static int fas_init(union anylock *l) { ck_spinlock_fas_init(&l->fas); return 0; }
static int fas_lock(union anylock *l, struct ck_spinlock_mcs *n) { (void)n; ck_spinlock_fas_lock(&l->fas); return 0; }
static int fas_unlock(union anylock *l, struct ck_spinlock_mcs *n) { (void)n; ck_spinlock_fas_unlock(&l->fas); return 0; }

static int tk_init(union anylock *l) { ck_spinlock_ticket_init(&l->ticket); return 0; }
static int tk_lock(union anylock *l, struct ck_spinlock_mcs *n) { (void)n; ck_spinlock_ticket_lock(&l->ticket); return 0; }
static int tk_unlock(union anylock *l, struct ck_spinlock_mcs *n) { (void)n; ck_spinlock_ticket_unlock(&l->ticket); return 0; }

static int mcs_init(union anylock *l) { ck_spinlock_mcs_init(&l->mcs); return 0; }
static int mcs_lock(union anylock *l, struct ck_spinlock_mcs *n) { ck_spinlock_mcs_lock(&l->mcs, n); return 0; }
static int mcs_unlock(union anylock *l, struct ck_spinlock_mcs *n) { ck_spinlock_mcs_unlock(&l->mcs, n); return 0; }

static int no_destroy(union anylock *l) { (void)l; return 0; }

static const struct lock_impl locks[] = {
    {"ksync", ST_KSYNC, 0, ks_init, ks_lock, ks_unlock, ks_destroy},
    {"pthread_mutex", ST_REF, 0, pt_init, pt_lock, pt_unlock, pt_destroy},
    {"ck_spinlock_fas", ST_REF, 1, fas_init, fas_lock, fas_unlock, no_destroy},
    {"ck_spinlock_ticket", ST_REF, 1, tk_init, tk_lock, tk_unlock, no_destroy},
    {"ck_spinlock_mcs", ST_REF, 1, mcs_init, mcs_lock, mcs_unlock, no_destroy},
};
#define N_LOCKS (sizeof locks / sizeof locks[0])
#define N_BLOCKING 2 /* locks[0..1]: ksync and pthread_mutex */

static void lock_dump(void *ctx, char *buf, size_t len)
{
    /* Every context below starts with its lock. */
    const ks_mutex_t *m = ctx;
    snprintf(buf, len, "first word of the lock: 0x%x", __atomic_load_n(&m->state, __ATOMIC_RELAXED));
}

/* ---- S1: race condition ------------------------------------------------------- */

struct s1 {
    _Atomic uint64_t counter;
};

/* The seed's temp = counter; temp += 1; counter = temp, with no lock.  Two
 * relaxed atomics rather than a plain int: the same lost updates, without
 * undefined behaviour (and clean under ThreadSanitizer).  A few steps of
 * work between the read and the write stand for the seed's "another thread
 * can run between these steps" and keep the threads overlapping. */
static void s1_body(struct st_thread *t)
{
    struct s1 *c = t->ctx;
    while (st_next(t)) {
        uint64_t tmp = atomic_load_explicit(&c->counter, memory_order_relaxed);
        tmp += 1;
        st_spin(t, 8);
        atomic_store_explicit(&c->counter, tmp, memory_order_relaxed);
    }
}

static void s1_run(const struct st_opts *o)
{
    struct s1 c;
    atomic_init(&c.counter, 0);
    struct st_run run = {.scen = "S1", .impl = "unlocked", .kind = ST_BASE,
                         .threads = st_threads(o, 4), .iters = st_iters(o, 1000000),
                         .body = s1_body, .ctx = &c};
    struct st_result r;
    st_run(o, &run, &r);
    uint64_t got = atomic_load(&c.counter), lost = r.ops - got;
    st_row(&run, &r, ST_REPORT, "lost %llu of %llu updates (%.2f%%)%s",
           (unsigned long long)lost, (unsigned long long)r.ops,
           r.ops ? 100.0 * (double)lost / (double)r.ops : 0.0,
           lost ? "" : ": none lost this time, the race is still there");
    st_result_free(&r);
}

/* ---- S2: locked counter --------------------------------------------------------- */

struct s2 {
    union anylock lk;
    uint64_t counter; /* plain: the lock is what makes it exact */
    const struct lock_impl *li;
    struct st_note err;
};

static void s2_body(struct st_thread *t)
{
    struct s2 *c = t->ctx;
    struct ck_spinlock_mcs node;
    while (st_next(t)) {
        int e = c->li->lock(&c->lk, &node);
        if (e) {
            st_note(&c->err, "lock returned %d", e);
            continue;
        }
        uint64_t tmp = c->counter; /* the seed's read, modify, write */
        tmp += 1;
        c->counter = tmp;
        if ((e = c->li->unlock(&c->lk, &node)))
            st_note(&c->err, "unlock returned %d", e);
    }
}

static void s2_run(const struct st_opts *o)
{
    for (size_t i = 0; i < N_LOCKS; i++) {
        const struct lock_impl *li = &locks[i];
        if (!st_selected(o, li->kind))
            continue;
        struct s2 *c = st_alloc(sizeof *c);
        c->li = li;
        st_note_init(&c->err);
        struct st_run run = {.scen = "S2", .impl = li->name, .kind = li->kind,
                             .threads = st_threads(o, 16), .iters = st_iters(o, 100000),
                             .cap_s = li->spins ? ST_SPIN_CAP_S : 0, .body = s2_body, .ctx = c,
                             .dump = li->kind == ST_KSYNC ? lock_dump : NULL};
        int e = li->init(&c->lk);
        if (e) {
            st_row(&run, NULL, ST_FAIL, "init returned %d", e);
            free(c);
            continue;
        }
        struct st_result r;
        st_run(o, &run, &r);
        int de = li->destroy(&c->lk);
        unsigned errs = st_note_count(&c->err);
        /* Exact: the counter equals the increments completed, which (unless
         * the run was capped) are all the planned ones. */
        int all_done = r.capped || !r.planned || r.ops == r.planned;
        uint64_t lo, hi;
        st_spread(&r, &lo, &hi);
        if (c->counter != r.ops || !all_done || errs || de)
            st_row(&run, &r, ST_FAIL, "counter %llu != %llu increments done (planned %llu)%s%s; destroy %d",
                   (unsigned long long)c->counter, (unsigned long long)r.ops,
                   (unsigned long long)r.planned, errs ? "; " : "", errs ? c->err.msg : "", de);
        else if (r.capped)
            st_row(&run, &r, ST_PASS, "counter %llu == increments done (%llu..%llu per thread)%s",
                   (unsigned long long)c->counter, (unsigned long long)lo, (unsigned long long)hi,
                   li->spins ? "; a spinlock collapses when threads outnumber cpus" : "");
        else if (r.planned)
            st_row(&run, &r, ST_PASS, "counter %llu == %u x %llu", (unsigned long long)c->counter,
                   run.threads, (unsigned long long)run.iters);
        else
            st_row(&run, &r, ST_PASS, "counter %llu == increments done (%llu..%llu per thread)",
                   (unsigned long long)c->counter, (unsigned long long)lo, (unsigned long long)hi);
        st_result_free(&r);
        free(c);
    }
}

/* ---- S3: a line written in parts inside the critical section ----------------------
 * The seed's print "Welcome Mr. ", id: each thread writes a line of three
 * parts into a shared buffer, pausing between parts as a slow print would.
 * With the lock no line may be interleaved with another; without it (the
 * seed's first program, row "unlocked") they are. */

#define S3_MAXLINE 64
#define S3_BUF (64 * 1024)

struct s3 {
    union anylock lk;
    const struct lock_impl *li; /* NULL: unlocked */
    _Atomic size_t pos;         /* parts reserve their bytes here */
    char *buf;
    size_t cap;
    unsigned nthreads;
    uint64_t *next_seq; /* per thread: the sequence number its next line must carry */
    uint64_t good;      /* lines well-formed and in sequence */
    uint64_t lines, bad;
    struct st_note err;
};

static void s3_put(struct s3 *c, const char *s, size_t n)
{
    /* relaxed: under the lock the mutex orders everything; unlocked, the
     * reservation only has to hand out disjoint byte ranges. */
    size_t at = atomic_fetch_add_explicit(&c->pos, n, memory_order_relaxed);
    memcpy(c->buf + at, s, n);
}

/* Parse "<t>:Welcome <t>:Mr. <t>:#<seq>" with one t and the expected seq.
 * A well-formed line with an unexpected seq (a line lost or repeated) is
 * bad too, and resynchronises that thread's sequence so that one loss is
 * counted once. */
static int s3_line_ok(struct s3 *c, const char *p, size_t n)
{
    static const char *const word[3] = {"Welcome ", "Mr. ", "#"};
    unsigned tid = 0;
    size_t i = 0;
    for (int k = 0; k < 3; k++) {
        unsigned v = 0;
        size_t d = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9' && d < 6)
            v = v * 10 + (unsigned)(p[i++] - '0'), d++;
        if (!d || i >= n || p[i++] != ':' || (k && v != tid))
            return 0;
        tid = v;
        size_t wl = strlen(word[k]);
        if (n - i < wl || memcmp(p + i, word[k], wl))
            return 0;
        i += wl;
    }
    if (tid >= c->nthreads)
        return 0;
    uint64_t seq = 0;
    size_t d = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9' && d < 20)
        seq = seq * 10 + (uint64_t)(p[i++] - '0'), d++;
    if (!d || i != n)
        return 0;
    int ok = seq == c->next_seq[tid];
    c->next_seq[tid] = seq + 1;
    return ok;
}

static void s3_check(struct s3 *c, size_t len)
{
    const char *p = c->buf, *end = c->buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        c->lines++;
        if (s3_line_ok(c, p, (size_t)(nl - p))) {
            c->good++;
        } else {
            if (!c->bad)
                st_note(&c->err, "line %llu: \"%.*s\"", (unsigned long long)c->lines,
                        (int)(nl - p < 60 ? nl - p : 60), p);
            c->bad++;
        }
        p = nl + 1;
    }
}

static void s3_body(struct st_thread *t)
{
    struct s3 *c = t->ctx;
    struct ck_spinlock_mcs node;
    char part[3][32];
    int len[3];
    while (st_next(t)) {
        len[0] = snprintf(part[0], sizeof part[0], "%u:Welcome ", t->id);
        len[1] = snprintf(part[1], sizeof part[1], "%u:Mr. ", t->id);
        len[2] = snprintf(part[2], sizeof part[2], "%u:#%llu\n", t->id, (unsigned long long)(t->done - 1));
        if (c->li) {
            int e = c->li->lock(&c->lk, &node);
            if (e) {
                st_note(&c->err, "lock returned %d", e);
                continue;
            }
            /* Buffer full: check what is there and start over, still holding the lock. */
            size_t at = atomic_load_explicit(&c->pos, memory_order_relaxed);
            if (at + S3_MAXLINE > c->cap) {
                s3_check(c, at);
                atomic_store_explicit(&c->pos, 0, memory_order_relaxed);
            }
        }
        for (int k = 0; k < 3; k++) {
            s3_put(c, part[k], (size_t)len[k]);
            if (k < 2)
                st_pause(t, 200);
        }
        if (c->li) {
            int e = c->li->unlock(&c->lk, &node);
            if (e)
                st_note(&c->err, "unlock returned %d", e);
        }
    }
}

static void s3_one(const struct st_opts *o, const struct lock_impl *li)
{
    unsigned n = st_threads(o, 8);
    uint64_t iters = st_iters(o, 20000);
    size_t cap = S3_BUF;
    if (!li) {
        /* Unlocked: nothing may reset the buffer, so it holds every line. */
        uint64_t most = (16u << 20) / ((uint64_t)n * S3_MAXLINE);
        if (iters > 2000)
            iters = 2000;
        if (iters > most)
            iters = most ? most : 1;
        cap = (size_t)(iters * n * S3_MAXLINE);
    }
    struct s3 *c = st_alloc(sizeof *c);
    c->li = li;
    c->cap = cap;
    c->buf = st_alloc(cap);
    c->nthreads = n;
    c->next_seq = st_alloc(n * sizeof *c->next_seq);
    atomic_init(&c->pos, 0);
    st_note_init(&c->err);
    struct st_run run = {.scen = "S3", .impl = li ? li->name : "unlocked",
                         .kind = li ? li->kind : ST_BASE, .threads = n, .iters = iters,
                         .fixed = !li, .body = s3_body, .ctx = c,
                         .dump = li && li->kind == ST_KSYNC ? lock_dump : NULL};
    int e = li ? li->init(&c->lk) : 0;
    struct st_result r;
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        goto out;
    }
    st_run(o, &run, &r);
    s3_check(c, atomic_load(&c->pos));
    int de = li ? li->destroy(&c->lk) : 0;
    /* Every operation writes one line; with a working lock each is good. */
    if (!li)
        st_row(&run, &r, ST_REPORT, "%llu of %llu lines interleaved, e.g. %s",
               (unsigned long long)c->bad, (unsigned long long)c->lines,
               c->bad ? c->err.msg : "(none this time)");
    else if (c->bad || st_note_count(&c->err) || c->lines != r.ops || c->good != r.ops || de)
        st_row(&run, &r, ST_FAIL, "%llu of %llu lines interleaved, %llu good lines for %llu written, "
               "destroy %d; %s",
               (unsigned long long)c->bad, (unsigned long long)c->lines,
               (unsigned long long)c->good, (unsigned long long)r.ops, de, c->err.msg);
    else {
        uint64_t lo, hi;
        st_spread(&r, &lo, &hi);
        st_row(&run, &r, ST_PASS, "%llu lines of 3 parts, none interleaved, none missing (%llu..%llu per thread)",
               (unsigned long long)c->lines, (unsigned long long)lo, (unsigned long long)hi);
    }
    st_result_free(&r);
out:
    free(c->buf);
    free(c->next_seq);
    free(c);
}

static void s3_run(const struct st_opts *o)
{
    s3_one(o, NULL);
    for (size_t i = 0; i < N_BLOCKING; i++)
        if (st_selected(o, locks[i].kind))
            s3_one(o, &locks[i]);
}

/* ---- S17: lock too wide --------------------------------------------------------------
 * Each operation does a fixed amount of CPU work and adds its result to a
 * shared total.  Wide: the work is inside the critical section (the seed's
 * anti-pattern); narrow: only the addition is. */

#define S17_WORK 2000 /* LCG steps per operation, about 2-3 us */

struct s17 {
    ks_mutex_t m;
    int wide;
    uint64_t total;
    struct st_note err;
};

static void s17_body(struct st_thread *t)
{
    struct s17 *c = t->ctx;
    while (st_next(t)) {
        uint64_t seed = ((uint64_t)t->id << 40) ^ t->done, v = 0;
        if (!c->wide)
            v = st_work(seed, S17_WORK);
        int e = ks_mutex_lock(&c->m);
        if (e) {
            st_note(&c->err, "lock returned %d", e);
            continue;
        }
        if (c->wide)
            v = st_work(seed, S17_WORK);
        c->total += v;
        if ((e = ks_mutex_unlock(&c->m)))
            st_note(&c->err, "unlock returned %d", e);
        t->stat[0] += v; /* wraps like the total */
    }
}

static void s17_run(const struct st_opts *o)
{
    if (!st_selected(o, ST_KSYNC)) {
        struct st_run none = {.scen = "S17", .impl = "-", .threads = st_threads(o, 4)};
        st_row(&none, NULL, ST_SKIP, "no reference: the scenario compares two uses of one mutex");
        return;
    }
    double rate[2] = {0, 0};
    for (int wide = 1; wide >= 0; wide--) {
        struct s17 *c = st_alloc(sizeof *c);
        ks_mutex_init(&c->m, KS_PRIVATE);
        c->wide = wide;
        st_note_init(&c->err);
        struct st_run run = {.scen = "S17", .impl = wide ? "ksync-wide" : "ksync-narrow",
                             .kind = ST_KSYNC, .threads = st_threads(o, 4),
                             .iters = st_iters(o, 10000), .body = s17_body, .ctx = c,
                             .dump = lock_dump};
        struct st_result r;
        st_run(o, &run, &r);
        uint64_t want = st_stat_sum(&r, 0);
        rate[wide] = r.secs > 0 ? (double)r.ops / r.secs : 0;
        int de = ks_mutex_destroy(&c->m);
        if (c->total != want || st_note_count(&c->err) || de)
            st_row(&run, &r, ST_FAIL, "total 0x%llx != 0x%llx expected; destroy %d; %s",
                   (unsigned long long)c->total, (unsigned long long)want, de, c->err.msg);
        else if (wide)
            st_row(&run, &r, ST_REPORT, "total exact; work of %d steps inside the lock", S17_WORK);
        else
            st_row(&run, &r, ST_REPORT, "total exact; work outside: %.2fx the wide rate%s",
                   rate[1] > 0 ? rate[0] / rate[1] : 0.0,
                   rate[1] > 0 && rate[0] <= rate[1] && run.threads > 1 ? " (not faster here: noisy machine?)" : "");
        st_result_free(&r);
        free(c);
    }
}

const struct st_scenario st_family_mutex[] = {
    {"S1", "race", "N threads read-modify-write a counter with no lock (lost updates, reported)",
     "unlocked relaxed load + store (the broken baseline)", "4 threads x 1000000", s1_run},
    {"S2", "locked-counter", "N threads increment a shared counter under a lock: final == N*M",
     "ksync mutex | pthread_mutex, ck_spinlock_fas, ck_spinlock_ticket, ck_spinlock_mcs",
     "16 threads x 100000; spinlocks capped at 2 s", s2_run},
    {"S3", "print-line", "a line written in parts inside the critical section is never interleaved",
     "ksync mutex | pthread_mutex (and the unlocked seed, reported)", "8 threads x 20000 lines",
     s3_run},
    {"S17", "lock-too-wide", "long work inside vs outside the critical section: both exact, narrow faster",
     "ksync mutex (wide and narrow)", "4 threads x 10000 ops of 2000 LCG steps", s17_run},
    {0, 0, 0, 0, 0, 0},
};
