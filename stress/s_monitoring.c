/* stress/s_monitoring.c - S14 (monitoring pipeline: a task queue, workers
 * under a semaphore, a result queue, stats under a lock, a stop event).
 * Seed 000: "Exercice récapitulatif : Système de monitoring complet".  The
 * queues (ks_queue and the ck_ring reference) are ref_queue.h's, as in S10.
 */
#include "harness.h"
#include "ref_queue.h"

#include <ksync/event.h>
#include <ksync/mutex.h>
#include <ksync/queue.h>
#include <ksync/sem.h>
#include <ksync/time.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- S14: monitoring pipeline ----------------------------------------------------------------
 * The seed's SystemeMonitoring: a main thread adds monitoring tasks to a task
 * queue (stats["taches_ajoutees"] under the stats lock); W workers take tasks
 * with a timeout, execute each inside a semaphore of `permits` (the value
 * measured, stats "taches_executees"/"alertes_generees" under the lock) and
 * put the result into a result queue, then task_done; one result handler
 * takes results with a timeout and appends alerts under the lock, then
 * task_done.  Workers and handler loop until the stop event is set.
 *
 * A task is its id; its type (cpu/memoire/disque/autre), the value measured
 * in that type's range and its threshold (70/80/85/90) are pure functions of
 * the id.  The main thread counts the alerts to expect when it creates each
 * task; workers recompute the value, the handler re-checks the result's
 * value and alert flag against the id.  The seed's arreter() sets the event
 * while tasks may still be queued (they are lost); here stop() first joins
 * the task queue and then the result queue, then sets the event and waits
 * for every thread to leave (a pthread count, test machinery).
 *
 * Checked: tasks added == executed == results handled == tasks made, each
 * task handled once (seen flags, iteration mode); alerts generated (under the
 * lock) == alerts kept by the handler == alerts expected from the task values,
 * with equal checksums of their ids; never more than `permits` workers inside
 * the semaphore, and its value back at the end; stop() joined every thread
 * within 2 s (its latency is reported).
 * Reference: the same pipeline on two ck_ring MPMC queues (polling, with the
 * counter task_done/join of ref_queue.c), sem_t, a pthread mutex, and for
 * stop a flag set under a pthread mutex with a condition broadcast
 * (threading.Event).
 */

#define S14_QCAP 64
#define S14_STOP_BOUND_NS 2000000000LL

struct pt_flag {
    pthread_mutex_t m;
    pthread_cond_t c;
    atomic_int flag; /* written under m */
};

struct s14 {
    /* ksync */
    struct rq_queue tq, rq; /* first: the stall dump reads tq.u.ks */
    ks_sem_t ksem;
    ks_mutex_t kmx;
    ks_event_t kstop;
    /* reference */
    sem_t psem;
    pthread_mutex_t pmx;
    struct pt_flag pstop;
    const struct rq_impl *qi;
    int ks;
    unsigned workers, permits;
    uint64_t salt;
    /* the seed's statistiques and alertes, under the stats lock */
    uint64_t added, executed, alerts_gen, alerts_kept, alerts_sum;
    /* main thread only */
    uint64_t made, expect_alerts, expect_sum;
    /* handler only */
    uint64_t handled;
    _Alignas(KS_CACHELINE) atomic_uint in_sem;
    atomic_uint peak;
    /* who has left (test machinery) */
    pthread_mutex_t xm;
    pthread_cond_t xc; /* CLOCK_MONOTONIC */
    unsigned exited;
    int64_t stop_ns, stop_lat_ns;
    unsigned left_at_bound;
    atomic_uchar *seen; /* [id - 1], iteration mode */
    uint64_t iters;
    struct st_note err;
};

enum { S14_TMO };

static const struct {
    unsigned lo, hi;
} s14_types[4] = {{10, 95}, {30, 90}, {40, 95}, {0, 100}}; /* cpu, memoire, disque, autre */
static const unsigned s14_seuils[4] = {70, 80, 85, 90};

static unsigned s14_threshold(const struct s14 *c, uint64_t id)
{
    return s14_seuils[st_mix64(id ^ c->salt) & 3];
}

static unsigned s14_value(const struct s14 *c, uint64_t id)
{
    uint64_t h = st_mix64(id * 0x9e3779b97f4a7c15ull + c->salt);
    unsigned ty = (unsigned)(h & 3), lo = s14_types[ty].lo, hi = s14_types[ty].hi;
    return lo + (unsigned)((h >> 8) % (hi - lo + 1));
}

static void s14_sem_wait(struct s14 *c)
{
    int e = 0;
    if (c->ks)
        e = ks_sem_wait(&c->ksem);
    else
        while (sem_wait(&c->psem))
            if (errno != EINTR) {
                e = errno;
                break;
            }
    if (e)
        st_note(&c->err, "sem wait returned %d", e);
}

static void s14_sem_post(struct s14 *c)
{
    int e = c->ks ? ks_sem_post(&c->ksem) : sem_post(&c->psem) ? errno : 0;
    if (e)
        st_note(&c->err, "sem post returned %d", e);
}

static void s14_lock(struct s14 *c)
{
    int e = c->ks ? ks_mutex_lock(&c->kmx) : pthread_mutex_lock(&c->pmx);
    if (e)
        st_note(&c->err, "lock returned %d", e);
}

static void s14_unlock(struct s14 *c)
{
    int e = c->ks ? ks_mutex_unlock(&c->kmx) : pthread_mutex_unlock(&c->pmx);
    if (e)
        st_note(&c->err, "unlock returned %d", e);
}

static int s14_stopping(struct s14 *c)
{
    if (c->ks)
        return ks_event_is_set(&c->kstop);
    /* acquire: pairs with the release store in s14_stop */
    return atomic_load_explicit(&c->pstop.flag, memory_order_acquire);
}

static void s14_stop(struct s14 *c)
{
    int e = 0;
    if (c->ks) {
        e = ks_event_set(&c->kstop);
    } else {
        pthread_mutex_lock(&c->pstop.m);
        /* release: pairs with the acquire load in s14_stopping */
        atomic_store_explicit(&c->pstop.flag, 1, memory_order_release);
        pthread_cond_broadcast(&c->pstop.c); /* Event.set() wakes its waiters (none here) */
        pthread_mutex_unlock(&c->pstop.m);
    }
    if (e)
        st_note(&c->err, "event set returned %d", e);
}

static void s14_exit(struct s14 *c)
{
    pthread_mutex_lock(&c->xm);
    c->exited++;
    pthread_cond_broadcast(&c->xc);
    pthread_mutex_unlock(&c->xm);
}

static void s14_dump(void *ctx, char *buf, size_t len)
{
    struct s14 *c = ctx;
    size_t at = st_note_prefix(&c->err, buf, len, 90);
    at += (size_t)snprintf(buf + at, len - at, "tasks: ");
    at += (size_t)rq_ks_describe(c->tq.u.ks, buf + at, len - at);
    at = at < len ? at : len - 1;
    at += (size_t)snprintf(buf + at, len - at, "; results: ");
    at = at < len ? at : len - 1;
    at += (size_t)rq_ks_describe(c->rq.u.ks, buf + at, len - at);
    at = at < len ? at : len - 1;
    snprintf(buf + at, len - at, "; sem %d, %u inside, stop %d, %u exited", /* a snapshot */
             ks_sem_value(&c->ksem), atomic_load_explicit(&c->in_sem, memory_order_relaxed),
             ks_event_is_set(&c->kstop), c->exited);
}

/* The seed's main: ajouter_tache() in a loop, then (drained) arreter(). */
static void s14_main(struct st_thread *t, struct s14 *c)
{
    int e;
    while (st_next(t)) {
        uint64_t id = t->done;
        if (s14_value(c, id) > s14_threshold(c, id)) {
            c->expect_alerts++;
            c->expect_sum += st_mix64(id);
        }
        if ((e = c->qi->put(&c->tq, id, KS_FOREVER))) {
            st_note(&c->err, "task put returned %d", e);
            break;
        }
        c->made++;
        s14_lock(c);
        c->added++;
        s14_unlock(c);
        st_pause(t, 100); /* the seed's time.sleep(0.2) between tasks */
    }
    if ((e = c->qi->join(&c->tq, KS_FOREVER)))
        st_note(&c->err, "task queue join returned %d", e);
    if ((e = c->qi->join(&c->rq, KS_FOREVER)))
        st_note(&c->err, "result queue join returned %d", e);
    c->stop_ns = ks_now();
    s14_stop(c);
    struct timespec ts = rq_timespec(c->stop_ns + S14_STOP_BOUND_NS);
    pthread_mutex_lock(&c->xm);
    while (c->exited < c->workers + 1)
        if (pthread_cond_timedwait(&c->xc, &c->xm, &ts) == ETIMEDOUT)
            break;
    unsigned ex = c->exited;
    pthread_mutex_unlock(&c->xm);
    c->stop_lat_ns = ks_now() - c->stop_ns;
    if (ex < c->workers + 1) {
        c->left_at_bound = c->workers + 1 - ex;
        st_note(&c->err, "stop(): %u of %u threads still running %lld ms after the stop event",
                c->left_at_bound, c->workers + 1, S14_STOP_BOUND_NS / 1000000);
    }
}

static void s14_worker(struct st_thread *t, struct s14 *c)
{
    while (!s14_stopping(c)) {
        uint64_t id;
        int e = c->qi->get(&c->tq, &id, ks_now() + 200000 + st_below(t, 4800000));
        if (e == ETIMEDOUT) {
            t->stat[S14_TMO]++;
            continue; /* check the stop event */
        }
        if (e) {
            st_note(&c->err, "task get returned %d", e);
            break;
        }
        s14_sem_wait(c); /* with self.semaphore_ressources: */
        /* relaxed (in_sem, peak): a detector; the semaphore orders the holders. */
        unsigned in = atomic_fetch_add_explicit(&c->in_sem, 1, memory_order_relaxed) + 1;
        unsigned pk = atomic_load_explicit(&c->peak, memory_order_relaxed);
        while (in > pk && !atomic_compare_exchange_weak_explicit(&c->peak, &pk, in,
                                                                 memory_order_relaxed,
                                                                 memory_order_relaxed))
            ;
        if (in > c->permits)
            st_note(&c->err, "%u workers inside a semaphore of %u", in, c->permits);
        /* executer_tache(): measure, then time.sleep */
        unsigned v = s14_value(c, id), alert = v > s14_threshold(c, id);
        t->sink += st_work(id, 20 + v);
        st_pause(t, 300);
        s14_lock(c);
        c->executed++;
        c->alerts_gen += alert;
        s14_unlock(c);
        if ((e = c->qi->put(&c->rq, id << 8 | (uint64_t)alert << 7 | v, KS_FOREVER)))
            st_note(&c->err, "result put returned %d", e);
        atomic_fetch_sub_explicit(&c->in_sem, 1, memory_order_relaxed); /* relaxed: a detector */
        s14_sem_post(c);
        if ((e = c->qi->task_done(&c->tq)))
            st_note(&c->err, "task queue task_done returned %d", e);
        st_count_op(t);
    }
    s14_exit(c);
}

static void s14_handler(struct st_thread *t, struct s14 *c)
{
    while (!s14_stopping(c)) {
        uint64_t res;
        int e = c->qi->get(&c->rq, &res, ks_now() + 200000 + st_below(t, 4800000));
        if (e == ETIMEDOUT) {
            t->stat[S14_TMO]++;
            continue;
        }
        if (e) {
            st_note(&c->err, "result get returned %d", e);
            break;
        }
        uint64_t id = res >> 8;
        unsigned v = (unsigned)(res & 127), alert = (unsigned)(res >> 7) & 1;
        if (id == 0 || v != s14_value(c, id) || alert != (v > s14_threshold(c, id)))
            st_note(&c->err, "result 0x%llx: task %llu's value or alert is wrong",
                    (unsigned long long)res, (unsigned long long)id);
        /* relaxed: the exchanges on one flag are totally ordered anyway. */
        else if (c->seen && id <= c->iters &&
                 atomic_exchange_explicit(&c->seen[id - 1], 1, memory_order_relaxed))
            st_note(&c->err, "task %llu's result handled twice", (unsigned long long)id);
        if (alert) {
            s14_lock(c);
            c->alerts_kept++; /* self.alertes.append(alerte) */
            c->alerts_sum += st_mix64(id);
            s14_unlock(c);
        }
        c->handled++;
        if ((e = c->qi->task_done(&c->rq)))
            st_note(&c->err, "result queue task_done returned %d", e);
        st_count_op(t);
    }
    s14_exit(c);
}

static void s14_body(struct st_thread *t)
{
    struct s14 *c = t->ctx;
    if (t->id == 0)
        s14_main(t, c);
    else if (t->id <= c->workers)
        s14_worker(t, c);
    else
        s14_handler(t, c);
}

static int s14_init(struct s14 *c)
{
    int e = c->qi->init(&c->tq, S14_QCAP);
    if (!e)
        e = c->qi->init(&c->rq, S14_QCAP);
    if (!e)
        e = pthread_mutex_init(&c->xm, NULL);
    if (!e)
        e = rq_cond_init_mono(&c->xc);
    if (e)
        return e;
    if (c->ks) {
        if (!(e = ks_sem_init(&c->ksem, c->permits, KS_PRIVATE)) &&
            !(e = ks_mutex_init(&c->kmx, KS_PRIVATE)))
            e = ks_event_init(&c->kstop, KS_PRIVATE);
        return e;
    }
    atomic_init(&c->pstop.flag, 0);
    if (sem_init(&c->psem, 0, c->permits))
        return errno;
    if (!(e = pthread_mutex_init(&c->pmx, NULL)) && !(e = pthread_mutex_init(&c->pstop.m, NULL)))
        e = rq_cond_init_mono(&c->pstop.c);
    return e;
}

/* Destroys everything; returns the first error and the semaphore's value. */
static int s14_destroy(struct s14 *c, int *semval)
{
    int e = 0, r;
#define S14_KEEP(x)                                                                               \
    if ((r = (x)) && !e)                                                                          \
    e = r
    if (c->ks) {
        *semval = ks_sem_value(&c->ksem);
        S14_KEEP(ks_sem_destroy(&c->ksem));
        S14_KEEP(ks_mutex_destroy(&c->kmx));
        S14_KEEP(ks_event_destroy(&c->kstop));
    } else {
        if (sem_getvalue(&c->psem, semval))
            *semval = -1;
        S14_KEEP(sem_destroy(&c->psem) ? errno : 0);
        S14_KEEP(pthread_mutex_destroy(&c->pmx));
        S14_KEEP(pthread_mutex_destroy(&c->pstop.m));
        S14_KEEP(pthread_cond_destroy(&c->pstop.c));
    }
    S14_KEEP(c->qi->unfinished(&c->tq) ? EBUSY : 0);
    S14_KEEP(c->qi->unfinished(&c->rq) ? EBUSY : 0);
    S14_KEEP(c->qi->destroy(&c->tq));
    S14_KEEP(c->qi->destroy(&c->rq));
    S14_KEEP(pthread_mutex_destroy(&c->xm));
    S14_KEEP(pthread_cond_destroy(&c->xc));
#undef S14_KEEP
    return e;
}

static void s14_one(const struct st_opts *o, const struct rq_impl *qi, unsigned workers,
                    unsigned permits, uint64_t iters)
{
    struct s14 *c = st_alloc(sizeof *c);
    c->qi = qi;
    c->ks = qi->ksync;
    c->workers = workers;
    c->permits = permits;
    c->salt = st_mix64(o->seed + workers);
    atomic_init(&c->in_sem, 0);
    atomic_init(&c->peak, 0);
    st_note_init(&c->err);
    if (o->seconds <= 0 && iters <= ST_SEEN_MAX) {
        c->iters = iters;
        c->seen = calloc(iters, 1);
    }
    const char *name = c->ks ? "ksync" : "ck_ring+pthread";
    struct st_run run = {.scen = "S14", .impl = name, .kind = qi->ksync ? ST_KSYNC : ST_REF,
                         .threads = workers + 2, .iters = iters,
                         .cap_s = qi->spins ? ST_SPIN_CAP_S : 0, .body = s14_body,
                         .ctx = c, .dump = c->ks ? s14_dump : NULL};
    int e = s14_init(c);
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        free(c->seen);
        free(c);
        return;
    }
    struct st_result r;
    st_run(o, &run, &r);
    int semval = -1;
    int de = s14_destroy(c, &semval);
    uint64_t missing = 0;
    if (c->seen) /* relaxed: the threads are joined */
        for (uint64_t i = 0; i < c->made && i < c->iters; i++)
            missing += !atomic_load_explicit(&c->seen[i], memory_order_relaxed);
    unsigned errs = st_note_count(&c->err), peak = atomic_load(&c->peak);
    double stop_ms = (double)c->stop_lat_ns / 1e6;
    char rate[32];
    st_human(r.secs > 0 ? (double)c->handled / r.secs : 0, rate, sizeof rate);
    if (errs || c->added != c->made || c->executed != c->made || c->handled != c->made ||
        missing || c->alerts_gen != c->expect_alerts || c->alerts_kept != c->expect_alerts ||
        c->alerts_sum != c->expect_sum || peak > permits || semval != (int)permits ||
        c->left_at_bound || de)
        st_row(&run, &r, ST_FAIL,
               "1+%u+1, sem %u: tasks made %llu, added %llu, executed %llu, handled %llu, %llu "
               "never handled; alerts expected %llu, generated %llu, kept %llu (checksums %s); "
               "sem peak %u, value %d; stop %.1f ms, %u threads left; destroy %d; %u errors: %s",
               workers, permits, (unsigned long long)c->made, (unsigned long long)c->added,
               (unsigned long long)c->executed, (unsigned long long)c->handled,
               (unsigned long long)missing, (unsigned long long)c->expect_alerts,
               (unsigned long long)c->alerts_gen, (unsigned long long)c->alerts_kept,
               c->alerts_sum == c->expect_sum ? "equal" : "DIFFER", peak, semval, stop_ms,
               c->left_at_bound, de, errs, errs ? c->err.msg : "-");
    else
        st_row(&run, &r, ST_PASS,
               "1 adder + %u workers (sem %u) + 1 handler: %llu tasks (%s/s) added == executed "
               "== handled%s; %llu alerts == results over threshold (expected from the task "
               "values); sem peak %u/%u; stop() joined %u threads in %.1f ms",
               workers, permits, (unsigned long long)c->made, rate,
               c->seen ? " (each once)" : "", (unsigned long long)c->expect_alerts, peak,
               permits, workers + 1, stop_ms);
    st_result_free(&r);
    free(c->seen);
    free(c);
}

static void s14_config(const struct st_opts *o, const struct st_config *cfg, unsigned w)
{
    static const struct rq_impl *const impls[] = {&rq_ksync, &rq_ck_ring};
    unsigned permits = o->threads ? 3 : cfg->arg;
    for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
        if (st_selected(o, impls[i]->ksync ? ST_KSYNC : ST_REF))
            s14_one(o, impls[i], w, permits, st_iters(o, cfg->iters));
}

static void s14_run(const struct st_opts *o)
{
    /* Defaults: the seed's SystemeMonitoring(max_workers=2) with 3 workers,
     * and 32 workers on 3 permits (oversubscribed).  --threads N: N workers,
     * 3 permits.  Threads: workers; iterations: tasks; arg: permits. */
    static const struct st_config cfg[] = {{3, 20000, 2}, {32, 10000, 3}};
    ST_CONFIGS(o, cfg, s14_config);
}

const struct st_scenario st_family_monitoring[] = {
    {"S14", "monitoring", "task queue -> workers under a semaphore -> result queue -> handler, "
                          "stats under a lock, stop event: added == executed == handled, alerts "
                          "== results over threshold, stop() joins every thread within 2 s",
     "ksync queue + sem + mutex + event | ck_ring + sem_t + pthread_mutex + flag/cond",
     "1 adder + 3 workers (sem 2) + 1 handler x 20000 tasks, 1 + 32 (sem 3) + 1 x 10000 "
     "(--threads N: N workers, sem 3)",
     s14_run},
    {0, 0, 0, 0, 0, 0},
};
