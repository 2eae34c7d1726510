/* stress/s_sem.c - the semaphore family: S5 (limited resource: DB
 * connections), S6 (bounded semaphore over-release), S7 (printer: scoped
 * acquire/release with an active-user count under a second lock).
 * Seeds: 000 "Semaphores", "Context manager pour Semaphore"; 002
 * "Semáforos" and BoundedSemaphore.
 */
#include "harness.h"

#include <ksync/mutex.h>
#include <ksync/scoped.h>
#include <ksync/sem.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the semaphores and mutexes compared ----------------------------------------- */

union anysem {
    ks_sem_t ks;
    sem_t px;
};

struct sem_impl {
    const char *name;
    enum st_kind kind;
    int (*init)(union anysem *s, unsigned value);
    int (*wait)(union anysem *s);
    int (*post)(union anysem *s);
    int (*value)(union anysem *s);
    int (*destroy)(union anysem *s);
};

static int ks_sinit(union anysem *s, unsigned v) { return ks_sem_init(&s->ks, v, KS_PRIVATE); }
static int ks_swait(union anysem *s) { return ks_sem_wait(&s->ks); }
static int ks_spost(union anysem *s) { return ks_sem_post(&s->ks); }
static int ks_svalue(union anysem *s) { return ks_sem_value(&s->ks); }
static int ks_sdestroy(union anysem *s) { return ks_sem_destroy(&s->ks); }

/* POSIX reports errors through errno; fold them into return values. */
static int px_sinit(union anysem *s, unsigned v) { return sem_init(&s->px, 0, v) ? errno : 0; }
static int px_swait(union anysem *s)
{
    while (sem_wait(&s->px))
        if (errno != EINTR)
            return errno;
    return 0;
}
static int px_spost(union anysem *s) { return sem_post(&s->px) ? errno : 0; }
static int px_svalue(union anysem *s)
{
    int v;
    return sem_getvalue(&s->px, &v) ? -errno : v;
}
static int px_sdestroy(union anysem *s) { return sem_destroy(&s->px) ? errno : 0; }

static const struct sem_impl sems[] = {
    {"ksync", ST_KSYNC, ks_sinit, ks_swait, ks_spost, ks_svalue, ks_sdestroy},
    {"sem_t", ST_REF, px_sinit, px_swait, px_spost, px_svalue, px_sdestroy},
};
#define N_SEMS (sizeof sems / sizeof sems[0])

static void sem_dump(void *ctx, char *buf, size_t len)
{
    /* Every context below starts with its semaphore. */
    const ks_sem_t *s = ctx;
    uint64_t v = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
    snprintf(buf, len, "ks_sem state 0x%016llx: value %llu, waking %d, %llu registered waiters",
             (unsigned long long)v, (unsigned long long)(v & KS_SEM_VALUE_MASK),
             !!(v & KS_SEM_WAKING), (unsigned long long)(v >> 32));
}

/* ---- S5: limited resource (3 DB connections, more clients) -------------------------- */

#define S5_PERMITS 3

struct s5 {
    union anysem s;
    const struct sem_impl *si;
    atomic_uint in_use;
    atomic_uint peak;
    struct st_note err;
};

static void s5_body(struct st_thread *t)
{
    struct s5 *c = t->ctx;
    while (st_next(t)) {
        int e = c->si->wait(&c->s);
        if (e) {
            st_note(&c->err, "wait returned %d", e);
            continue;
        }
        /* relaxed: the semaphore's release/acquire orders the previous
         * holder's decrement before this increment. */
        unsigned u = atomic_fetch_add_explicit(&c->in_use, 1, memory_order_relaxed) + 1;
        unsigned p = atomic_load_explicit(&c->peak, memory_order_relaxed);
        while (u > p && !atomic_compare_exchange_weak_explicit(&c->peak, &p, u, memory_order_relaxed,
                                                               memory_order_relaxed))
            ;
        if (u > S5_PERMITS)
            st_note(&c->err, "%u clients connected at once", u);
        st_pause(t, 400); /* the seed's time.sleep(duree) on the connection */
        atomic_fetch_sub_explicit(&c->in_use, 1, memory_order_relaxed);
        if ((e = c->si->post(&c->s)))
            st_note(&c->err, "post returned %d", e);
    }
}

static void s5_one(const struct st_opts *o, const struct sem_impl *si, unsigned threads,
                   uint64_t iters)
{
    struct s5 *c = st_alloc(sizeof *c);
    c->si = si;
    atomic_init(&c->in_use, 0);
    atomic_init(&c->peak, 0);
    st_note_init(&c->err);
    struct st_run run = {.scen = "S5", .impl = si->name, .kind = si->kind, .threads = threads,
                         .iters = iters, .body = s5_body, .ctx = c,
                         .dump = si->kind == ST_KSYNC ? sem_dump : NULL};
    int e = si->init(&c->s, S5_PERMITS);
    struct st_result r;
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
    } else {
        st_run(o, &run, &r);
        uint64_t lo, hi;
        st_spread(&r, &lo, &hi);
        int v = si->value(&c->s), de = si->destroy(&c->s);
        unsigned peak = atomic_load(&c->peak), left = atomic_load(&c->in_use);
        /* Every client finished: all joined, and each got the resource. */
        int finished = r.capped ? lo > 0 : r.planned ? r.ops == r.planned : lo > 0;
        if (st_note_count(&c->err) || peak > S5_PERMITS || left || v != S5_PERMITS || de || !finished)
            st_row(&run, &r, ST_FAIL,
                   "peak %u/%d in use, %u left in use, value %d (want %d), destroy %d, per-client "
                   "ops %llu..%llu, %u errors: %s",
                   peak, S5_PERMITS, left, v, S5_PERMITS, de, (unsigned long long)lo,
                   (unsigned long long)hi, st_note_count(&c->err), c->err.msg);
        else
            st_row(&run, &r, ST_PASS,
                   "peak %u/%d in use, all %u clients finished (%llu..%llu uses each), value back "
                   "to %d",
                   peak, S5_PERMITS, threads, (unsigned long long)lo,
                   (unsigned long long)hi, v);
        st_result_free(&r);
    }
    free(c);
}

static void s5_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    for (size_t i = 0; i < N_SEMS; i++)
        if (st_selected(o, sems[i].kind))
            s5_one(o, &sems[i], n, st_iters(o, cfg->iters));
}

static void s5_run(const struct st_opts *o)
{
    /* Defaults: 16 clients, and the seed's 100-client spirit with 64. */
    static const struct st_config cfg[] = {{16, 20000, 0}, {64, 5000, 0}};
    ST_CONFIGS(o, cfg, s5_config);
}

/* ---- S6: bounded semaphore over-release -----------------------------------------------
 * A bounded semaphore (max 3, starting full) under normal wait/work/post
 * traffic, while threads now and then post without having waited.  A post
 * must succeed exactly when the value is below max, and a refused post
 * (EOVERFLOW) must change nothing.  Both are checked by conservation:
 * at the end, value == 3 + successful posts - successful waits, and the
 * value sampled after every operation never exceeds max.  (An accepted
 * over-release adds a unit; a later normal post that meets a full semaphore
 * is then refused, which can only happen while such a unit exists: the
 * units in circulation never drop below 3, so the traffic cannot starve.)
 * Before and after the traffic, single-threaded: a full semaphore refuses a
 * post and keeps its value; posting up from the final value stops at max. */

#define S6_MAX 3

struct s6 {
    ks_sem_t s;
    struct st_note err;
};

enum { S6_WAITS, S6_POSTS, S6_REFUSED, S6_ROGUE, S6_ROGUE_OK, S6_ABSORBED };

static void s6_body(struct st_thread *t)
{
    struct s6 *c = t->ctx;
    while (st_next(t)) {
        int e;
        if (st_below(t, 8) == 0) {
            /* Release what was never acquired. */
            t->stat[S6_ROGUE]++;
            e = ks_sem_post(&c->s);
            if (e == 0)
                t->stat[S6_POSTS]++, t->stat[S6_ROGUE_OK]++;
            else if (e == EOVERFLOW)
                t->stat[S6_REFUSED]++;
            else
                st_note(&c->err, "over-release returned %d", e);
        } else {
            if ((e = ks_sem_wait(&c->s))) {
                st_note(&c->err, "wait returned %d", e);
                continue;
            }
            t->stat[S6_WAITS]++;
            st_pause(t, 200);
            e = ks_sem_post(&c->s);
            if (e == 0)
                t->stat[S6_POSTS]++;
            else if (e == EOVERFLOW)
                t->stat[S6_REFUSED]++, t->stat[S6_ABSORBED]++;
            else
                st_note(&c->err, "post returned %d", e);
        }
        int v = ks_sem_value(&c->s);
        if (v < 0 || v > S6_MAX)
            st_note(&c->err, "value %d outside [0, %d]", v, S6_MAX);
    }
}

/* A full bounded semaphore refuses a post and keeps its value; returns a
 * description of the first deviation, or NULL. */
static const char *s6_full_refuses(ks_sem_t *s)
{
    if (ks_sem_value(s) != S6_MAX)
        return "not full";
    if (ks_sem_post(s) != EOVERFLOW)
        return "post on a full semaphore was not refused with EOVERFLOW";
    if (ks_sem_value(s) != S6_MAX)
        return "refused post changed the value";
    return NULL;
}

static const char *s6_before(void)
{
    ks_sem_t s;
    if (ks_sem_init_bounded(&s, S6_MAX + 1, S6_MAX, KS_PRIVATE) != EINVAL)
        return "init with value > max was accepted";
    if (ks_sem_init_bounded(&s, S6_MAX, S6_MAX, KS_PRIVATE))
        return "init_bounded failed";
    const char *w = s6_full_refuses(&s);
    if (w)
        return w;
    for (int i = 0; i < S6_MAX; i++)
        if (ks_sem_trywait(&s))
            return "trywait on a positive value failed";
    if (ks_sem_trywait(&s) != EAGAIN)
        return "trywait at 0 was not EAGAIN";
    for (int i = 0; i < S6_MAX; i++)
        if (ks_sem_post(&s))
            return "post below max failed";
    return s6_full_refuses(&s);
}

static void s6_run(const struct st_opts *o)
{
    struct s6 *c = st_alloc(sizeof *c);
    st_note_init(&c->err);
    struct st_run run = {.scen = "S6", .impl = "ksync", .kind = ST_KSYNC,
                         .threads = st_threads(o, 8), .iters = st_iters(o, 50000),
                         .body = s6_body, .ctx = c, .dump = sem_dump};
    if (!st_selected(o, ST_KSYNC)) {
        run.impl = "-";
        st_row(&run, NULL, ST_SKIP, "no reference: Python's BoundedSemaphore raises ValueError");
        free(c);
        return;
    }
    const char *pre = s6_before();
    struct st_result r;
    if (pre) {
        st_row(&run, NULL, ST_FAIL, "single-threaded check: %s", pre);
    } else if (ks_sem_init_bounded(&c->s, S6_MAX, S6_MAX, KS_PRIVATE)) {
        st_row(&run, NULL, ST_FAIL, "init_bounded failed");
    } else {
        st_run(o, &run, &r);
        uint64_t waits = st_stat_sum(&r, S6_WAITS), posts = st_stat_sum(&r, S6_POSTS);
        int v = ks_sem_value(&c->s);
        int64_t want = S6_MAX + (int64_t)posts - (int64_t)waits;
        /* Post up to max from wherever the traffic left it. */
        int climbed = 0;
        while (climbed <= S6_MAX && ks_sem_post(&c->s) == 0)
            climbed++;
        const char *post = s6_full_refuses(&c->s);
        int de = ks_sem_destroy(&c->s);
        if (st_note_count(&c->err) || v != want || climbed != S6_MAX - v || post || de)
            st_row(&run, &r, ST_FAIL,
                   "value %d != %lld (= %d + %llu posts - %llu waits); %d posts up to max (want "
                   "%d); %s; destroy %d; %u errors: %s",
                   v, (long long)want, S6_MAX, (unsigned long long)posts,
                   (unsigned long long)waits, climbed, S6_MAX - v, post ? post : "full refuses",
                   de, st_note_count(&c->err), c->err.msg);
        else
            st_row(&run, &r, ST_PASS,
                   "%llu over-releases: %llu refused (EOVERFLOW), %llu accepted below max; %llu "
                   "releases refused at max; value %d == %d + posts - waits; never above %d",
                   (unsigned long long)st_stat_sum(&r, S6_ROGUE),
                   (unsigned long long)(st_stat_sum(&r, S6_ROGUE) - st_stat_sum(&r, S6_ROGUE_OK)),
                   (unsigned long long)st_stat_sum(&r, S6_ROGUE_OK),
                   (unsigned long long)st_stat_sum(&r, S6_ABSORBED), v, S6_MAX, S6_MAX);
        st_result_free(&r);
    }
    free(c);
}

/* ---- S7: printer, scoped use with an active-user count under a mutex ---------------- */

#define S7_MAX 2 /* the seed's Imprimante(max_utilisateurs=2) */

union anymx {
    ks_mutex_t ks;
    pthread_mutex_t pt;
};

struct s7_impl {
    const char *name;
    const struct sem_impl *sem;
    int scoped; /* the body is written with <ksync/scoped.h>'s guards */
    int (*init)(union anymx *m);
    int (*lock)(union anymx *m);
    int (*unlock)(union anymx *m);
    int (*destroy)(union anymx *m);
};

static int ks_minit(union anymx *m) { return ks_mutex_init(&m->ks, KS_PRIVATE); }
static int ks_mlock(union anymx *m) { return ks_mutex_lock(&m->ks); }
static int ks_munlock(union anymx *m) { return ks_mutex_unlock(&m->ks); }
static int ks_mdestroy(union anymx *m) { return ks_mutex_destroy(&m->ks); }
static int pt_minit(union anymx *m) { return pthread_mutex_init(&m->pt, NULL); }
static int pt_mlock(union anymx *m) { return pthread_mutex_lock(&m->pt); }
static int pt_munlock(union anymx *m) { return pthread_mutex_unlock(&m->pt); }
static int pt_mdestroy(union anymx *m) { return pthread_mutex_destroy(&m->pt); }

static const struct s7_impl printers[] = {
    {"ksync", &sems[0], 0, ks_minit, ks_mlock, ks_munlock, ks_mdestroy},
    {"ksync scoped guards", &sems[0], 1, ks_minit, ks_mlock, ks_munlock, ks_mdestroy},
    {"sem_t+pthread_mutex", &sems[1], 0, pt_minit, pt_mlock, pt_munlock, pt_mdestroy},
};

struct s7 {
    union anysem s;
    union anymx m;
    const struct s7_impl *im;
    int active; /* utilisateurs_actifs, under m */
    int peak;   /* under m */
    struct st_note err;
};

/* The seed's "with imprimante.utiliser(nom):" as a begin/end pair. */
static int s7_begin(struct s7 *c)
{
    int e = c->im->sem->wait(&c->s);
    if (e) {
        st_note(&c->err, "sem wait returned %d", e);
        return e;
    }
    if ((e = c->im->lock(&c->m))) {
        st_note(&c->err, "lock returned %d", e);
        return e;
    }
    int a = ++c->active;
    if (a > c->peak)
        c->peak = a;
    if (a < 1 || a > S7_MAX)
        st_note(&c->err, "%d active users after entering (max %d)", a, S7_MAX);
    if ((e = c->im->unlock(&c->m)))
        st_note(&c->err, "unlock returned %d", e);
    return 0;
}

static void s7_end(struct s7 *c)
{
    int e = c->im->lock(&c->m);
    if (e) {
        st_note(&c->err, "lock returned %d", e);
        return;
    }
    int a = --c->active;
    if (a < 0 || a >= S7_MAX)
        st_note(&c->err, "%d active users after leaving (max %d)", a, S7_MAX);
    if ((e = c->im->unlock(&c->m)))
        st_note(&c->err, "unlock returned %d", e);
    if ((e = c->im->sem->post(&c->s)))
        st_note(&c->err, "sem post returned %d", e);
}

/* The seed's context manager written with ksync's scoped guards: the
 * semaphore is held for the whole use, the mutex for each update of the
 * count, as in `acquire(); with self.lock: ...; try: yield finally: with
 * self.lock: ...; release()`.  The guards abort rather than run without
 * their object, so there is no error to note on the way in. */
static void s7_use_scoped(struct st_thread *t, struct s7 *c)
{
    ks_with_sem(&c->s.ks) {
        ks_with_lock(&c->m.ks) {
            int a = ++c->active;
            if (a > c->peak)
                c->peak = a;
            if (a < 1 || a > S7_MAX)
                st_note(&c->err, "%d active users after entering (max %d)", a, S7_MAX);
        }
        st_pause(t, 300); /* the print job */
        ks_with_lock(&c->m.ks) {
            int a = --c->active;
            if (a < 0 || a >= S7_MAX)
                st_note(&c->err, "%d active users after leaving (max %d)", a, S7_MAX);
        }
    }
}

static void s7_body(struct st_thread *t)
{
    struct s7 *c = t->ctx;
    if (c->im->scoped) {
        while (st_next(t))
            s7_use_scoped(t, c);
        return;
    }
    while (st_next(t)) {
        if (s7_begin(c))
            continue;
        st_pause(t, 300); /* the print job */
        s7_end(c);
    }
}

static void s7_run(const struct st_opts *o)
{
    for (size_t i = 0; i < sizeof printers / sizeof printers[0]; i++) {
        const struct s7_impl *im = &printers[i];
        if (!st_selected(o, im->sem->kind))
            continue;
        struct s7 *c = st_alloc(sizeof *c);
        c->im = im;
        st_note_init(&c->err);
        struct st_run run = {.scen = "S7", .impl = im->name, .kind = im->sem->kind,
                             .threads = st_threads(o, 5), .iters = st_iters(o, 20000),
                             .body = s7_body, .ctx = c,
                             .dump = im->sem->kind == ST_KSYNC ? sem_dump : NULL};
        int e = im->sem->init(&c->s, S7_MAX);
        if (!e)
            e = im->init(&c->m);
        struct st_result r;
        if (e) {
            st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        } else {
            st_run(o, &run, &r);
            int v = im->sem->value(&c->s);
            int de = im->sem->destroy(&c->s), dm = im->destroy(&c->m);
            if (st_note_count(&c->err) || c->active || c->peak > S7_MAX || v != S7_MAX || de || dm)
                st_row(&run, &r, ST_FAIL,
                       "active %d at the end, peak %d/%d, value %d (want %d), destroy %d/%d, %u "
                       "errors: %s",
                       c->active, c->peak, S7_MAX, v, S7_MAX, de, dm, st_note_count(&c->err),
                       c->err.msg);
            else
                st_row(&run, &r, ST_PASS, "active count in [0, %d] throughout (peak %d), 0 at the end",
                       S7_MAX, c->peak);
            st_result_free(&r);
        }
        free(c);
    }
}

const struct st_scenario st_family_sem[] = {
    {"S5", "db-connections", "more clients than permits share 3 DB connections: never more than 3 "
                             "in use, every client finishes",
     "ksync counting sem | POSIX sem_t", "16 threads x 20000 and 64 threads x 5000", s5_run},
    {"S6", "bounded-sem", "over-release of a bounded semaphore under traffic: EOVERFLOW, value unchanged",
     "ksync bounded sem | - (Python raises ValueError)", "8 threads x 50000", s6_run},
    {"S7", "printer", "scoped acquire/release with an active-user count under a second lock: "
                      "count in [0, max], back to 0",
     "ksync sem + mutex (paired calls; scoped guards) | sem_t + pthread_mutex",
     "5 threads x 20000, 2 printers", s7_run},
    {0, 0, 0, 0, 0, 0},
};
