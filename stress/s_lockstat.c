/* stress/s_lockstat.c - S18 (lock monitoring: acquisitions, wait and hold
 * times per named lock).  Seed 000: "Monitoring des locks".
 *
 * The seed's LockMonitor wraps two named locks ("lock_critique" and
 * "lock_stats"); three threads take each in turn five times, sleeping
 * inside (0.1 s and 0.05 s), and the monitor reports acquisitions and the
 * total and mean time per lock.  Here each hold is a busy wait of a fixed
 * time (WORK_A_NS, WORK_B_NS) and the threads loop M times:
 *
 *   ksync  ks_lockstat (ksync/lockstat.h) in KS_LOCKSTAT_ALL on two ks_mutex
 *          named with ks_lock_name; nothing in the loop measures anything.
 *   ref    the seed's LockMonitor written in C over pthread_mutex: a
 *          stats lock, a start time read before the acquisition, the total
 *          added at release.
 *
 * A third lock, "lock_table", is a read-write lock that the seed does not
 * have: each round reads it (three rounds in four) or writes it, holding it
 * WORK_C_NS; its two sides are counted apart (ks_rwlock; the reference
 * monitors a pthread_rwlock the same way, a reader's start time kept by the
 * thread since readers overlap).
 *
 * Invariants, on both: each lock's acquisitions == the rounds made (exact;
 * for lock_table, per side); its total hold >= rounds x the work injected,
 * and, for the exclusive locks and lock_table's write side, no more than
 * the run's wall time (their holds do not overlap).  ksync also: every hold
 * timed, contended <= acquisitions, the wait histogram sums to the
 * contended count.  The seed's monitor starts its clock before it waits
 * for the lock, so its "time held" includes the wait (reported, not
 * failed: it is the seed's design). */
#include "harness.h"

#include <ksync/lockstat.h>
#include <ksync/mutex.h>
#include <ksync/rwlock.h>
#include <ksync/time.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORK_A_NS 20000 /* lock_critique: the seed's 0.1 s, scaled */
#define WORK_B_NS 10000 /* lock_stats: the seed's 0.05 s, scaled */
#define WORK_C_NS 5000  /* lock_table (not in the seed), either side */
#define WRITE_EVERY 4   /* lock_table: one round in four writes */

static void hold_for(int64_t ns)
{
    int64_t end = ks_now() + ns;
    while (ks_now() < end)
        ;
}

/* ---- the seed's LockMonitor over pthread_mutex ---- */

struct mon_lock {
    pthread_mutex_t m;
    uint64_t acq;      /* under the monitor's stats lock */
    int64_t total_ns;  /* under the monitor's stats lock */
    int64_t last;      /* the seed's derniere_acquisition */
};

/* The same monitor on a pthread_rwlock: a side's counts under the stats
 * lock; a reader's start time is the thread's own (readers overlap). */
struct mon_rw {
    pthread_rwlock_t l;
    uint64_t acq[2];      /* [0] read, [1] write; under the stats lock */
    int64_t total_ns[2];  /* under the stats lock */
};

struct s18 {
    int ref;
    ks_mutex_t a, b;
    ks_rwlock_t c;
    struct mon_lock ma, mb;
    struct mon_rw mc;
    pthread_mutex_t stats; /* the seed's lock_stats of the monitor itself */
    struct st_note err;
};

static void mon_enter(struct s18 *c, struct mon_lock *l)
{
    int64_t start = ks_now(); /* the seed reads it before the acquisition */
    pthread_mutex_lock(&l->m);
    pthread_mutex_lock(&c->stats);
    l->acq++;
    l->last = start;
    pthread_mutex_unlock(&c->stats);
}

static void mon_exit(struct s18 *c, struct mon_lock *l)
{
    int64_t d = ks_now() - l->last;
    pthread_mutex_lock(&c->stats);
    l->total_ns += d;
    pthread_mutex_unlock(&c->stats);
    pthread_mutex_unlock(&l->m);
}

static int64_t mon_rw_enter(struct s18 *c, struct mon_rw *l, int wr)
{
    int64_t start = ks_now(); /* as the seed: before the acquisition */
    if (wr)
        pthread_rwlock_wrlock(&l->l);
    else
        pthread_rwlock_rdlock(&l->l);
    pthread_mutex_lock(&c->stats);
    l->acq[wr]++;
    pthread_mutex_unlock(&c->stats);
    return start;
}

static void mon_rw_exit(struct s18 *c, struct mon_rw *l, int wr, int64_t start)
{
    int64_t d = ks_now() - start;
    pthread_mutex_lock(&c->stats);
    l->total_ns[wr] += d;
    pthread_mutex_unlock(&c->stats);
    pthread_rwlock_unlock(&l->l);
}

static void s18_body(struct st_thread *t)
{
    struct s18 *c = t->ctx;
    uint64_t round = 0;
    while (st_next(t)) {
        const int wr = round++ % WRITE_EVERY == WRITE_EVERY - 1;
        if (c->ref) {
            mon_enter(c, &c->ma);
            hold_for(WORK_A_NS);
            mon_exit(c, &c->ma);
            mon_enter(c, &c->mb);
            hold_for(WORK_B_NS);
            mon_exit(c, &c->mb);
            int64_t start = mon_rw_enter(c, &c->mc, wr);
            hold_for(WORK_C_NS);
            mon_rw_exit(c, &c->mc, wr, start);
        } else {
            int e = ks_mutex_lock(&c->a);
            if (e)
                st_note(&c->err, "lock a: %d", e);
            hold_for(WORK_A_NS);
            if ((e = ks_mutex_unlock(&c->a)))
                st_note(&c->err, "unlock a: %d", e);
            if ((e = ks_mutex_lock(&c->b)))
                st_note(&c->err, "lock b: %d", e);
            hold_for(WORK_B_NS);
            if ((e = ks_mutex_unlock(&c->b)))
                st_note(&c->err, "unlock b: %d", e);
            if ((e = wr ? ks_rwlock_wrlock(&c->c) : ks_rwlock_rdlock(&c->c)))
                st_note(&c->err, "lock c (%s): %d", wr ? "write" : "read", e);
            hold_for(WORK_C_NS);
            if ((e = ks_rwlock_unlock(&c->c)))
                st_note(&c->err, "unlock c: %d", e);
        }
        t->stat[0]++;
        t->stat[1 + wr]++; /* lock_table's reads, writes */
    }
}

static int find_stat(const void *lock, unsigned kind, struct ks_lockstat *out)
{
    size_t n = ks_lockstat_read(NULL, 0);
    struct ks_lockstat *all = calloc(n ? n : 1, sizeof *all);
    if (!all)
        return 0;
    size_t now = ks_lockstat_read(all, n);
    n = now < n ? now : n; /* records may have been added since the count */
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        if (all[i].lock == lock && all[i].kind == kind) {
            *out = all[i];
            found = 1;
        }
    free(all);
    return found;
}

/* One lock's check: "" or the first thing wrong. */
static void check_ksync(const char *name, const struct ks_lockstat *s, uint64_t rounds, int64_t work,
                        double secs, int shared, char *bad, size_t len)
{
    uint64_t h = 0;
    for (int b = 0; b < KS_LOCKSTAT_BUCKETS; b++)
        h += s->wait_hist[b];
    if (s->acquisitions != rounds)
        snprintf(bad, len, "%s: %llu acquisitions recorded, %llu made", name,
                 (unsigned long long)s->acquisitions, (unsigned long long)rounds);
    else if (s->holds != rounds)
        snprintf(bad, len, "%s: %llu holds timed of %llu", name, (unsigned long long)s->holds,
                 (unsigned long long)rounds);
    else if (s->hold_ns < rounds * (uint64_t)work)
        snprintf(bad, len, "%s: hold %.1f ms < %.1f ms of injected work", name, (double)s->hold_ns / 1e6,
                 (double)(rounds * (uint64_t)work) / 1e6);
    else if (!shared && (double)s->hold_ns > secs * 1e9 * 1.05 + 1e6)
        snprintf(bad, len, "%s: hold %.1f ms > the run's %.1f ms", name, (double)s->hold_ns / 1e6, secs * 1e3);
    else if (s->contended > s->acquisitions || h != s->contended)
        snprintf(bad, len, "%s: contended %llu, histogram %llu, acquisitions %llu", name,
                 (unsigned long long)s->contended, (unsigned long long)h, (unsigned long long)s->acquisitions);
    else if (!s->name || strcmp(s->name, name) != 0)
        snprintf(bad, len, "%s: recorded under the name %s", name, s->name ? s->name : "(none)");
}

static void s18_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    for (int ref = 0; ref <= 1; ref++) {
        if (!st_selected(o, ref ? ST_REF : ST_KSYNC))
            continue;
        struct s18 *c = st_alloc(sizeof *c);
        c->ref = ref;
        st_note_init(&c->err);
        int prev = 0;
        if (ref) {
            pthread_mutex_init(&c->ma.m, NULL);
            pthread_mutex_init(&c->mb.m, NULL);
            pthread_mutex_init(&c->stats, NULL);
            pthread_rwlock_init(&c->mc.l, NULL);
        } else {
            prev = ks_lockstat_set(KS_LOCKSTAT_ALL);
            ks_mutex_init(&c->a, KS_PRIVATE);
            ks_mutex_init(&c->b, KS_PRIVATE);
            ks_rwlock_init(&c->c, KS_PRIVATE);
            ks_lock_name(&c->a, "lock_critique");
            ks_lock_name(&c->b, "lock_stats");
            ks_lock_name(&c->c, "lock_table");
        }
        struct st_run run = {.scen = "S18",
                             .impl = ref ? "LockMonitor/pthread" : "ks_lockstat",
                             .kind = ref ? ST_REF : ST_KSYNC,
                             .threads = n,
                             .iters = st_iters(o, cfg->iters),
                             .body = s18_body,
                             .ctx = c};
        struct st_result r;
        st_run(o, &run, &r);
        uint64_t rounds = st_stat_sum(&r, 0), reads = st_stat_sum(&r, 1), writes = st_stat_sum(&r, 2);
        char bad[240] = "";
        if (st_note_count(&c->err))
            snprintf(bad, sizeof bad, "%s", c->err.msg);
        if (ref) {
            struct mon_lock *l[2] = {&c->ma, &c->mb};
            const char *nm[2] = {"lock_critique", "lock_stats"};
            const int64_t w[2] = {WORK_A_NS, WORK_B_NS};
            for (int k = 0; k < 2 && !bad[0]; k++)
                if (l[k]->acq != rounds)
                    snprintf(bad, sizeof bad, "%s: %llu acquisitions counted, %llu made", nm[k],
                             (unsigned long long)l[k]->acq, (unsigned long long)rounds);
                else if (l[k]->total_ns < (int64_t)rounds * w[k])
                    snprintf(bad, sizeof bad, "%s: %.1f ms < %.1f ms of injected work", nm[k],
                             (double)l[k]->total_ns / 1e6, (double)rounds * (double)w[k] / 1e6);
            const uint64_t side[2] = {reads, writes};
            for (int wr = 0; wr < 2 && !bad[0]; wr++)
                if (c->mc.acq[wr] != side[wr] || c->mc.total_ns[wr] < (int64_t)side[wr] * WORK_C_NS)
                    snprintf(bad, sizeof bad, "lock_table %s: %llu acquisitions counted of %llu, %.1f ms held",
                             wr ? "write" : "read", (unsigned long long)c->mc.acq[wr], (unsigned long long)side[wr],
                             (double)c->mc.total_ns[wr] / 1e6);
            if (bad[0])
                st_row(&run, &r, ST_FAIL, "%s", bad);
            else
                st_row(&run, &r, ST_PASS,
                       "acquisitions exact (%llu per lock; lock_table %llu reads, %llu writes); 'time held' "
                       "lock_critique %.1f ms, lock_stats %.1f ms (>= %.1f, %.1f ms of work: the seed's clock starts "
                       "before the wait, so the wait is in it)",
                       (unsigned long long)rounds, (unsigned long long)reads, (unsigned long long)writes,
                       (double)c->ma.total_ns / 1e6, (double)c->mb.total_ns / 1e6, (double)rounds * WORK_A_NS / 1e6,
                       (double)rounds * WORK_B_NS / 1e6);
            pthread_rwlock_destroy(&c->mc.l);
            pthread_mutex_destroy(&c->ma.m);
            pthread_mutex_destroy(&c->mb.m);
            pthread_mutex_destroy(&c->stats);
        } else {
            struct ks_lockstat sa, sb, scr, scw;
            if (!bad[0] && (!find_stat(&c->a, KS_LOCK_MUTEX, &sa) || !find_stat(&c->b, KS_LOCK_MUTEX, &sb) ||
                            !find_stat(&c->c, KS_LOCK_RWLOCK_READ, &scr) ||
                            !find_stat(&c->c, KS_LOCK_RWLOCK_WRITE, &scw)))
                snprintf(bad, sizeof bad, "no record for a lock");
            if (!bad[0])
                check_ksync("lock_critique", &sa, rounds, WORK_A_NS, r.secs, 0, bad, sizeof bad);
            if (!bad[0])
                check_ksync("lock_stats", &sb, rounds, WORK_B_NS, r.secs, 0, bad, sizeof bad);
            if (!bad[0])
                check_ksync("lock_table", &scr, reads, WORK_C_NS, r.secs, 1, bad, sizeof bad);
            if (!bad[0])
                check_ksync("lock_table", &scw, writes, WORK_C_NS, r.secs, 0, bad, sizeof bad);
            if (bad[0])
                st_row(&run, &r, ST_FAIL, "%s", bad);
            else
                st_row(&run, &r, ST_PASS,
                       "acquisitions exact (%llu per lock; lock_table %llu reads, %llu writes); held lock_critique "
                       "%.1f ms, lock_stats %.1f ms, lock_table %.1f ms read, %.1f ms written (>= %.1f, %.1f, %.1f, "
                       "%.1f ms of work); contended %llu, %llu, %llu+%llu; max wait %.0f, %.0f, %.0f us",
                       (unsigned long long)rounds, (unsigned long long)reads, (unsigned long long)writes,
                       (double)sa.hold_ns / 1e6, (double)sb.hold_ns / 1e6, (double)scr.hold_ns / 1e6,
                       (double)scw.hold_ns / 1e6, (double)rounds * WORK_A_NS / 1e6, (double)rounds * WORK_B_NS / 1e6,
                       (double)reads * WORK_C_NS / 1e6, (double)writes * WORK_C_NS / 1e6,
                       (unsigned long long)sa.contended, (unsigned long long)sb.contended,
                       (unsigned long long)scr.contended, (unsigned long long)scw.contended,
                       (double)sa.wait_max_ns / 1e3, (double)sb.wait_max_ns / 1e3,
                       (double)(scr.wait_max_ns > scw.wait_max_ns ? scr.wait_max_ns : scw.wait_max_ns) / 1e3);
            ks_rwlock_destroy(&c->c);
            ks_mutex_destroy(&c->a);
            ks_mutex_destroy(&c->b);
            ks_lockstat_set(prev < 0 ? KS_LOCKSTAT_OFF : prev);
        }
        st_result_free(&r);
        free(c);
    }
}

static void s18_run(const struct st_opts *o)
{
    static const struct st_config cfg[] = {{3, 2000, 0}, {16, 300, 0}};
    ST_CONFIGS(o, cfg, s18_config);
}

const struct st_scenario st_family_lockstat[] = {
    {"S18", "lock-monitor",
     "per-lock acquisitions, wait and hold times of two named locks and an rwlock's two sides: counts exact, hold >= work",
     "ks_lockstat (KS_LOCKSTAT_ALL) on ks_mutex and ks_rwlock | the seed's LockMonitor over pthread_mutex and "
     "pthread_rwlock",
     "3 threads x 2000, 16 x 300; holds of 20, 10 and 5 us (lock_table: 1 round in 4 writes)", s18_run},
    {0, 0, 0, 0, 0, 0},
};
