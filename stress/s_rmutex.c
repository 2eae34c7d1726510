/* stress/s_rmutex.c - the recursive mutex family: S4 (seed 000 "RLock").
 *
 * The seed's CompteurAvecLog: increment() and decrement() take the lock and
 * call _log_operation(), which takes the same lock again.  Threads alternate
 * increment and decrement as the seed's workers do.  Checked:
 *  - value and history length exact (the history is a ring of the last
 *    entries; each append checks that the previous entry's value plus this
 *    operation's delta is the current value, which fails if two threads were
 *    ever inside together);
 *  - re-entry (to a random depth of 2..4) never deadlocks (the stall
 *    watchdog reports it if it does);
 *  - an unlock by a thread that does not hold the lock is refused with EPERM
 *    and changes nothing.  ck_rwlock_recursive's write_unlock takes no
 *    thread id, so it cannot refuse; that reference is not probed.
 */
#include "harness.h"

#include <ksync/rmutex.h>

#include <ck_rwlock.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

union anyrlock {
    ks_rmutex_t ks;
    pthread_mutex_t pt;
    ck_rwlock_recursive_t ck;
};

struct rlock_impl {
    const char *name;
    enum st_kind kind;
    int owner_check; /* unlock by a non-owner is refused (EPERM) */
    int spins;
    int (*init)(union anyrlock *l);
    int (*lock)(union anyrlock *l, unsigned tid);
    int (*unlock)(union anyrlock *l);
    int (*destroy)(union anyrlock *l);
};

static int ks_init(union anyrlock *l) { return ks_rmutex_init(&l->ks, KS_PRIVATE); }
static int ks_lock(union anyrlock *l, unsigned tid) { (void)tid; return ks_rmutex_lock(&l->ks); }
static int ks_unlock(union anyrlock *l) { return ks_rmutex_unlock(&l->ks); }
static int ks_destroy(union anyrlock *l) { return ks_rmutex_destroy(&l->ks); }

static int pt_init(union anyrlock *l)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    int e = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    if (!e)
        e = pthread_mutex_init(&l->pt, &a);
    pthread_mutexattr_destroy(&a);
    return e;
}
static int pt_lock(union anyrlock *l, unsigned tid) { (void)tid; return pthread_mutex_lock(&l->pt); }
static int pt_unlock(union anyrlock *l) { return pthread_mutex_unlock(&l->pt); }
static int pt_destroy(union anyrlock *l) { return pthread_mutex_destroy(&l->pt); }

static int ck_init(union anyrlock *l)
{
    ck_rwlock_recursive_t z = CK_RWLOCK_RECURSIVE_INITIALIZER;
    l->ck = z;
    return 0;
}
/* CK wants a non-zero id per thread: the harness's id + 1. */
static int ck_lock(union anyrlock *l, unsigned tid) { ck_rwlock_recursive_write_lock(&l->ck, tid + 1); return 0; }
static int ck_unlock(union anyrlock *l) { ck_rwlock_recursive_write_unlock(&l->ck); return 0; }
static int ck_destroy(union anyrlock *l) { return l->ck.rw.writer || l->ck.wc ? EBUSY : 0; }

static const struct rlock_impl rlocks[] = {
    {"ksync", ST_KSYNC, 1, 0, ks_init, ks_lock, ks_unlock, ks_destroy},
    {"pthread_recursive", ST_REF, 1, 0, pt_init, pt_lock, pt_unlock, pt_destroy},
    {"ck_rwlock_recursive", ST_REF, 0, 1, ck_init, ck_lock, ck_unlock, ck_destroy},
};

#define S4_RING 256

struct s4_entry {
    uint32_t tid;
    int32_t delta;
    int64_t value;
};

struct s4 {
    union anyrlock lk;
    const struct rlock_impl *li;
    int64_t value;
    uint64_t hist_len;
    struct s4_entry hist[S4_RING];
    struct st_note err;
};

enum { S4_PROBES, S4_REFUSED, S4_DEPTH };

static int s4_lock(struct s4 *c, struct st_thread *t)
{
    int e = c->li->lock(&c->lk, t->id);
    if (e)
        st_note(&c->err, "thread %u: lock returned %d", t->id, e);
    return e;
}

static void s4_unlock(struct s4 *c, struct st_thread *t)
{
    int e = c->li->unlock(&c->lk);
    if (e)
        st_note(&c->err, "thread %u: owner's unlock returned %d", t->id, e);
}

/* _log_operation(): takes the lock again (extra more times, nested). */
static void s4_log(struct s4 *c, struct st_thread *t, int delta, unsigned extra)
{
    if (s4_lock(c, t))
        return;
    if (extra) {
        s4_log(c, t, delta, extra - 1);
    } else {
        uint64_t n = c->hist_len;
        const struct s4_entry *prev = &c->hist[(n - 1) % S4_RING];
        if (n && prev->value + delta != c->value)
            st_note(&c->err, "history entry %llu: %lld %+d != value %lld (two threads inside)",
                    (unsigned long long)n, (long long)prev->value, delta, (long long)c->value);
        c->hist[n % S4_RING] = (struct s4_entry){t->id, delta, c->value};
        c->hist_len = n + 1;
    }
    s4_unlock(c, t);
}

static void s4_body(struct st_thread *t)
{
    struct s4 *c = t->ctx;
    while (st_next(t)) {
        /* Now and then, unlock without holding: must be refused, change nothing. */
        if (c->li->owner_check && st_below(t, 32) == 0) {
            t->stat[S4_PROBES]++;
            int e = c->li->unlock(&c->lk);
            if (e == EPERM)
                t->stat[S4_REFUSED]++;
            else
                st_note(&c->err, "thread %u: unlock by a non-owner returned %d, not EPERM", t->id, e);
        }
        int delta = (t->done - 1) % 2 == 0 ? 1 : -1; /* incrementer() / decrementer() */
        unsigned extra = st_below(t, 3);             /* depth 2..4 in all */
        if (extra + 2 > t->stat[S4_DEPTH])
            t->stat[S4_DEPTH] = extra + 2;
        if (s4_lock(c, t))
            continue;
        c->value += delta;
        if (st_below(t, 8) == 0)
            st_pause(t, 100);
        s4_log(c, t, delta, extra);
        s4_unlock(c, t);
    }
}

static void s4_dump(void *ctx, char *buf, size_t len)
{
    const struct s4 *c = ctx;
    if (c->li->kind == ST_KSYNC)
        snprintf(buf, len, "rmutex word 0x%x owner 0x%llx depth %u",
                 __atomic_load_n(&c->lk.ks.lock.state, __ATOMIC_RELAXED),
                 (unsigned long long)__atomic_load_n(&c->lk.ks.owner, __ATOMIC_RELAXED),
                 __atomic_load_n(&c->lk.ks.depth, __ATOMIC_RELAXED));
    else
        snprintf(buf, len, "history length %llu", (unsigned long long)c->hist_len);
}

static void s4_run(const struct st_opts *o)
{
    for (size_t i = 0; i < sizeof rlocks / sizeof rlocks[0]; i++) {
        const struct rlock_impl *li = &rlocks[i];
        if (!st_selected(o, li->kind))
            continue;
        struct s4 *c = st_alloc(sizeof *c);
        c->li = li;
        st_note_init(&c->err);
        struct st_run run = {.scen = "S4", .impl = li->name, .kind = li->kind,
                             .threads = st_threads(o, 4), .iters = st_iters(o, 50000),
                             .cap_s = li->spins ? ST_SPIN_CAP_S : 0, .body = s4_body, .ctx = c,
                             .dump = s4_dump};
        int e = li->init(&c->lk);
        struct st_result r;
        if (e) {
            st_row(&run, NULL, ST_FAIL, "init returned %d", e);
            free(c);
            continue;
        }
        st_run(o, &run, &r);
        int64_t want = 0;
        unsigned depth = 0;
        for (unsigned k = 0; k < r.nthreads; k++) {
            uint64_t d = r.t[k].done;
            want += (int64_t)((d + 1) / 2) - (int64_t)(d / 2);
            if (r.t[k].stat[S4_DEPTH] > depth)
                depth = (unsigned)r.t[k].stat[S4_DEPTH];
        }
        uint64_t probes = st_stat_sum(&r, S4_PROBES), refused = st_stat_sum(&r, S4_REFUSED);
        int de = li->destroy(&c->lk);
        if (c->value != want || c->hist_len != r.ops || st_note_count(&c->err) || refused != probes || de)
            st_row(&run, &r, ST_FAIL,
                   "value %lld (want %lld), history %llu (want %llu), %llu/%llu non-owner unlocks "
                   "refused, destroy %d, %u errors: %s",
                   (long long)c->value, (long long)want, (unsigned long long)c->hist_len,
                   (unsigned long long)r.ops, (unsigned long long)refused,
                   (unsigned long long)probes, de, st_note_count(&c->err), c->err.msg);
        else if (li->owner_check)
            st_row(&run, &r, ST_PASS,
                   "value %lld and history %llu exact, re-entry to depth %u, %llu non-owner "
                   "unlocks refused (EPERM)",
                   (long long)c->value, (unsigned long long)c->hist_len, depth,
                   (unsigned long long)refused);
        else
            st_row(&run, &r, ST_PASS,
                   "value %lld and history %llu exact, re-entry to depth %u; non-owner unlock "
                   "NOT refused: write_unlock takes no thread id (no owner check), not probed",
                   (long long)c->value, (unsigned long long)c->hist_len, depth);
        st_result_free(&r);
        free(c);
    }
}

const struct st_scenario st_family_rmutex[] = {
    {"S4", "rlock", "counter whose increment() re-takes the lock in log(): exact, no deadlock, "
                    "non-owner unlock refused",
     "ksync rmutex | pthread PTHREAD_MUTEX_RECURSIVE, ck_rwlock_recursive (write side)",
     "4 threads x 50000; ck_rwlock capped at 2 s", s4_run},
    {0, 0, 0, 0, 0, 0},
};
