/* stress/s_lockdep.c - S16 (the classic deadlock, and its fix).  Seed 000:
 * "Antipatterns 1: Deadlock classique", "Bonnes pratiques 2: Éviter les
 * deadlocks".
 *
 * The seed's fonction_1 takes lock_a then lock_b, fonction_2 lock_b then
 * lock_a, with a sleep in between: run together they deadlock.  Its fix is
 * the bank transfer that takes the two account locks in one global order
 * (min and max of id()).
 *
 *   inversion  ksync, lock-order checking on (ksync/lockdep.h): each thread
 *              moves money between two accounts, in the seed's two orders
 *              in turn (thread id + round parity), taking `from` with a lock
 *              and `to` with a timed lock that gives up after a millisecond
 *              (so the run cannot hang: a real deadlock becomes a back-off).
 *              Invariant: the checker reports exactly one inversion, that
 *              names both locks and both orders, the first time the second
 *              order is taken, whether or not the threads met; the total is
 *              conserved.
 *   ordered    ksync: ks_mutex_lock2 (address order) over ACCOUNTS accounts
 *              with the checker on: no report at all; the total is
 *              conserved.
 *   ref        pthread_mutex in the seed's order (lower address first), no
 *              checker: the total is conserved; its rate beside ksync's
 *              shows what the checker costs.
 */
#include "harness.h"

#include <ksync/lockdep.h>
#include <ksync/lockstat.h>
#include <ksync/mutex.h>
#include <ksync/time.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACCOUNTS 16
#define START 1000

enum s16_mode { INVERSION, ORDERED, REF };

struct s16 {
    enum s16_mode mode;
    ks_mutex_t lock[ACCOUNTS];
    pthread_mutex_t plock[ACCOUNTS];
    long balance[ACCOUNTS];
    struct st_note err;
};

/* What the checker said during a run (its handler). */
/* The report names both orders: the one being taken ("it holds X ..., and
 * is about to wait for Y") and the opposite one seen before ("Y -> X: first
 * seen"). */
static int names_both_orders(const char *text)
{
    int ab = strstr(text, "lock_a -> lock_b: first seen") != NULL;
    int ba = strstr(text, "lock_b -> lock_a: first seen") != NULL;
    if (ab == ba)
        return 0;
    const char *holds = strstr(text, ab ? "(lock_b), taken at" : "(lock_a), taken at");
    const char *waits = strstr(text, "is about to wait for ");
    return holds && waits && holds < waits && strstr(waits, ab ? "(lock_a) at:" : "(lock_b) at:") != NULL;
}

static struct {
    int cycles, others;
    char text[8192];
} said;

static void keep(int event, const char *report, void *arg)
{
    (void)arg;
    if (event == KS_LOCKDEP_CYCLE) {
        if (__atomic_fetch_add(&said.cycles, 1, __ATOMIC_RELAXED) == 0)
            snprintf(said.text, sizeof said.text, "%s", report);
    } else {
        __atomic_fetch_add(&said.others, 1, __ATOMIC_RELAXED);
        fputs(report, stderr);
    }
}

static void s16_body(struct st_thread *t)
{
    struct s16 *c = t->ctx;
    while (st_next(t)) {
        int from, to;
        if (c->mode == INVERSION) {
            /* fonction_1 and fonction_2 in turn */
            from = (int)((t->id + t->done) & 1);
            to = 1 - from;
        } else {
            from = (int)st_below(t, ACCOUNTS);
            to = (int)st_below(t, ACCOUNTS);
        }
        int e = 0;
        if (c->mode == INVERSION) {
            if ((e = ks_mutex_lock(&c->lock[from])))
                st_note(&c->err, "lock: %d", e);
            st_pause(t, 64); /* the seed's time.sleep(0.1), scaled */
            e = ks_mutex_timedlock(&c->lock[to], ks_deadline_after(1000000));
            if (e == ETIMEDOUT) { /* the deadlock, broken */
                ks_mutex_unlock(&c->lock[from]);
                t->stat[1]++;
                continue;
            }
        } else if (c->mode == ORDERED) {
            e = ks_mutex_lock2(&c->lock[from], &c->lock[to]);
        } else {
            pthread_mutex_t *x = &c->plock[from], *y = &c->plock[to];
            if ((uintptr_t)y < (uintptr_t)x) {
                pthread_mutex_t *s = x;
                x = y;
                y = s;
            }
            e = pthread_mutex_lock(x);
            if (!e && x != y)
                e = pthread_mutex_lock(y);
        }
        if (e) {
            st_note(&c->err, "lock: %d", e);
            continue;
        }
        c->balance[from] -= 7;
        c->balance[to] += 7;
        if (c->mode == REF) {
            pthread_mutex_unlock(&c->plock[from]);
            if (from != to)
                pthread_mutex_unlock(&c->plock[to]);
        } else if ((e = ks_mutex_unlock2(&c->lock[from], &c->lock[to]))) {
            st_note(&c->err, "unlock: %d", e);
        }
        t->stat[0]++;
    }
}

static const char *mode_name(enum s16_mode m)
{
    return m == INVERSION ? "lockdep, AB-BA" : m == ORDERED ? "lock2+lockdep" : "pthread ordered";
}

static void s16_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    for (int m = INVERSION; m <= REF; m++) {
        if (!st_selected(o, m == REF ? ST_REF : ST_KSYNC))
            continue;
        struct s16 *c = st_alloc(sizeof *c);
        c->mode = (enum s16_mode)m;
        st_note_init(&c->err);
        memset(&said, 0, sizeof said);
        int accounts = m == INVERSION ? 2 : ACCOUNTS;
        if (m != REF) {
            ks_lockdep_handler(keep, NULL);
            ks_lockdep_reset(); /* each run is checked from scratch */
            if (ks_lockdep_set(KS_LOCKDEP_ON) < 0)
                st_note(&c->err, "ks_lockdep_set: no memory");
        }
        for (int i = 0; i < accounts; i++) {
            c->balance[i] = START;
            if (m == REF) {
                pthread_mutex_init(&c->plock[i], NULL);
            } else {
                ks_mutex_init(&c->lock[i], KS_PRIVATE);
                if (m == INVERSION)
                    ks_lock_name(&c->lock[i], i ? "lock_b" : "lock_a");
            }
        }
        struct st_run run = {.scen = "S16",
                             .impl = mode_name(c->mode),
                             .kind = m == REF ? ST_REF : ST_KSYNC,
                             .threads = n,
                             .iters = st_iters(o, cfg->iters),
                             .body = s16_body,
                             .ctx = c};
        struct st_result r;
        st_run(o, &run, &r);
        if (m != REF) {
            ks_lockdep_set(KS_LOCKDEP_OFF);
            ks_lockdep_handler(NULL, NULL);
        }
        long total = 0;
        for (int i = 0; i < accounts; i++)
            total += c->balance[i];
        uint64_t moved = st_stat_sum(&r, 0), backoffs = st_stat_sum(&r, 1);
        char bad[sizeof said.text + 200] = "";
        int cycles = __atomic_load_n(&said.cycles, __ATOMIC_RELAXED);
        int others = __atomic_load_n(&said.others, __ATOMIC_RELAXED);
        if (st_note_count(&c->err))
            snprintf(bad, sizeof bad, "%s", c->err.msg);
        else if (total != (long)START * accounts)
            snprintf(bad, sizeof bad, "money created or lost: total %ld, expected %ld", total, (long)START * accounts);
        else if (others)
            snprintf(bad, sizeof bad, "%d report(s) other than inversions (on stderr)", others);
        else if (m == ORDERED && cycles)
            snprintf(bad, sizeof bad, "%d inversion(s) reported for address-ordered locking:\n%s", cycles, said.text);
        else if (m == INVERSION && r.ops >= 2 && cycles != 1)
            snprintf(bad, sizeof bad, "%d inversion reports, expected 1", cycles);
        else if (m == INVERSION && r.ops >= 2 && !names_both_orders(said.text))
            snprintf(bad, sizeof bad, "the report does not name both orders:\n%s", said.text);
        if (bad[0])
            st_row(&run, &r, ST_FAIL, "%s", bad);
        else if (m == INVERSION)
            st_row(&run, &r, ST_PASS,
                   "the inversion reported once (%s), no hang: %llu transfers, %llu deadlocks broken by the "
                   "timed lock; total conserved",
                   strstr(said.text, "cycle: lock_a") ? "cycle: lock_a -> lock_b -> lock_a"
                                                       : "cycle: lock_b -> lock_a -> lock_b",
                   (unsigned long long)moved, (unsigned long long)backoffs);
        else
            st_row(&run, &r, ST_PASS, "%llu transfers between %d accounts, total conserved%s",
                   (unsigned long long)moved, accounts, m == ORDERED ? ", no report" : "");
        for (int i = 0; i < accounts; i++)
            if (m == REF)
                pthread_mutex_destroy(&c->plock[i]);
            else
                ks_mutex_destroy(&c->lock[i]);
        st_result_free(&r);
        free(c);
    }
}

static void s16_run(const struct st_opts *o)
{
    static const struct st_config cfg[] = {{2, 2000, 0}, {16, 500, 0}};
    ST_CONFIGS(o, cfg, s16_config);
}

const struct st_scenario st_family_lockdep[] = {
    {"S16", "deadlock", "AB-BA reported before it hangs (both orders named); ordered transfers conserve the total",
     "ks_lockdep + ks_mutex_timedlock, ks_mutex_lock2 | pthread_mutex in address order",
     "2 threads x 2000, 16 x 500; 2 accounts (inversion), 16 (ordered)", s16_run},
    {0, 0, 0, 0, 0, 0},
};
