/* stress/s_cost.c - S15, uncontended cost (seed 000 "Benchmark
 * synchronisation": Lock vs RLock vs Semaphore).
 *
 * One thread, a tight loop of acquire+release pairs on a primitive nobody
 * else touches; the row gives ns per pair.  Each loop calls the primitive's
 * own (inline where it has one) functions directly, not through a table,
 * so the figure is the primitive's and not an indirect call's.  The first
 * row is the harness loop alone, already included in every other figure.
 */
#include "harness.h"

#include <ksync/mutex.h>
#include <ksync/rmutex.h>
#include <ksync/sem.h>

#include <ck_spinlock.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

struct s15 {
    ks_mutex_t km;
    ks_rmutex_t kr;
    ks_sem_t ks;
    pthread_mutex_t pm;
    pthread_mutex_t pr; /* PTHREAD_MUTEX_RECURSIVE */
    sem_t ps;
    ck_spinlock_fas_t fas;
    ck_spinlock_ticket_t tk;
    ck_spinlock_mcs_t mcs;
    struct ck_spinlock_mcs node;
};

/* One loop per primitive; `bad` collects any non-zero return. */
#define PAIR_LOOP(fn, ACQUIRE, RELEASE)                                                           \
    static void fn(struct st_thread *t)                                                        \
    {                                                                                          \
        struct s15 *c = t->ctx;                                                                \
        unsigned bad = 0;                                                                      \
        while (st_next(t)) {                                                                   \
            bad |= (unsigned)(ACQUIRE);                                                        \
            bad |= (unsigned)(RELEASE);                                                        \
        }                                                                                      \
        t->stat[0] = bad;                                                                      \
        (void)c;                                                                               \
    }

PAIR_LOOP(loop_none, 0, 0)
PAIR_LOOP(loop_ks_mutex, ks_mutex_lock(&c->km), ks_mutex_unlock(&c->km))
PAIR_LOOP(loop_ks_rmutex, ks_rmutex_lock(&c->kr), ks_rmutex_unlock(&c->kr))
PAIR_LOOP(loop_ks_sem, ks_sem_wait(&c->ks), ks_sem_post(&c->ks))
PAIR_LOOP(loop_pt_mutex, pthread_mutex_lock(&c->pm), pthread_mutex_unlock(&c->pm))
PAIR_LOOP(loop_pt_rmutex, pthread_mutex_lock(&c->pr), pthread_mutex_unlock(&c->pr))
PAIR_LOOP(loop_sem_t, sem_wait(&c->ps), sem_post(&c->ps))
PAIR_LOOP(loop_fas, (ck_spinlock_fas_lock(&c->fas), 0), (ck_spinlock_fas_unlock(&c->fas), 0))
PAIR_LOOP(loop_ticket, (ck_spinlock_ticket_lock(&c->tk), 0), (ck_spinlock_ticket_unlock(&c->tk), 0))
PAIR_LOOP(loop_mcs, (ck_spinlock_mcs_lock(&c->mcs, &c->node), 0),
          (ck_spinlock_mcs_unlock(&c->mcs, &c->node), 0))

static int init_all(struct s15 *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutexattr_t a;
    int e = ks_mutex_init(&c->km, KS_PRIVATE) | ks_rmutex_init(&c->kr, KS_PRIVATE) |
            ks_sem_init(&c->ks, 1, KS_PRIVATE) | pthread_mutex_init(&c->pm, NULL) |
            pthread_mutexattr_init(&a) | pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE) |
            pthread_mutex_init(&c->pr, &a) | sem_init(&c->ps, 0, 1);
    pthread_mutexattr_destroy(&a);
    ck_spinlock_fas_init(&c->fas);
    ck_spinlock_ticket_init(&c->tk);
    ck_spinlock_mcs_init(&c->mcs);
    return e;
}

static void s15_run(const struct st_opts *o)
{
    static const struct {
        const char *name;
        enum st_kind kind;
        void (*body)(struct st_thread *t);
    } pairs[] = {
        {"(harness loop)", ST_BASE, loop_none},
        {"ks_mutex", ST_KSYNC, loop_ks_mutex},
        {"ks_rmutex", ST_KSYNC, loop_ks_rmutex},
        {"ks_sem", ST_KSYNC, loop_ks_sem},
        {"pthread_mutex", ST_REF, loop_pt_mutex},
        {"pthread_recursive", ST_REF, loop_pt_rmutex},
        {"sem_t", ST_REF, loop_sem_t},
        {"ck_spinlock_fas", ST_REF, loop_fas},
        {"ck_spinlock_ticket", ST_REF, loop_ticket},
        {"ck_spinlock_mcs", ST_REF, loop_mcs},
    };
    struct s15 *c = st_alloc(sizeof *c);
    int e = init_all(c);
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (!st_selected(o, pairs[i].kind))
            continue;
        struct st_run run = {.scen = "S15", .impl = pairs[i].name, .kind = pairs[i].kind,
                             .threads = 1, .iters = st_iters(o, 5000000), .body = pairs[i].body,
                             .ctx = c};
        struct st_result r;
        if (e) {
            st_row(&run, NULL, ST_FAIL, "init returned an error");
            break;
        }
        st_run(o, &run, &r);
        if (r.t[0].stat[0])
            st_row(&run, &r, ST_FAIL, "an acquire or release returned an error");
        else
            st_row(&run, &r, ST_REPORT, "%.1f ns per uncontended acquire+release pair",
                   r.ops ? r.secs * 1e9 / (double)r.ops : 0.0);
        st_result_free(&r);
    }
    pthread_mutex_destroy(&c->pm);
    pthread_mutex_destroy(&c->pr);
    sem_destroy(&c->ps);
    free(c);
}

const struct st_scenario st_family_cost[] = {
    {"S15", "uncontended-cost", "one thread, lock+unlock pairs: ns per pair (Lock vs RLock vs Semaphore)",
     "ks_mutex, ks_rmutex, ks_sem | pthread_mutex, PTHREAD_MUTEX_RECURSIVE, sem_t, ck_spinlock_{fas,ticket,mcs}",
     "1 thread x 5000000 pairs each (--threads ignored)", s15_run},
    {0, 0, 0, 0, 0, 0},
};
