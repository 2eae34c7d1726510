/* tests/test_epoch.c - ks_epoch: API contract (EPERM, nesting, EDEADLK,
 * EBUSY, EINVAL), no object freed while a reader that could hold it is in
 * its section (nested or not), a thread that dies inside a section does not
 * hold reclamation back, orphans of threads that exit or leave are freed by
 * any barrier, readers never see a reclaimed object under 32 oversubscribed
 * threads (ASan turns a miss into a use-after-free report), bounded garbage
 * with and without a reader in the way, and reuse of thread records.
 *
 * The domain is process-wide and Criterion runs each test in its own
 * process; still, no counter is assumed to start at 0: the tests take
 * ks_epoch_stats deltas and count frees in the objects' own functions. */
#include "helpers.h"

#include <ksync/epoch.h>

#include <limits.h>
#include <stddef.h>

/* ---- objects ----------------------------------------------------------------------- */

#define LIVE 0x4c4956454c495645ull
#define DEAD 0xdeaddeaddeaddeadull
#define NPAY 6

struct obj {
    uint64_t allocator_room[2]; /* glibc's free() writes its links here, not over magic */
    uint64_t magic;             /* LIVE; DEAD once its function ran */
    uint64_t payload[NPAY];
    uint64_t sum; /* checksum of payload */
    long *freed;  /* counter the function increments, or NULL */
    struct ks_epoch_node rcu;
};

static struct obj *obj_of(struct ks_epoch_node *n) { return (struct obj *)((char *)n - offsetof(struct obj, rcu)); }

/* The fields a reader checks are read and written with relaxed atomics: if
 * the library freed an object under a reader, the test must see it, not be
 * undefined itself (relaxed: a detector; publication is by the slot's
 * release/acquire). */
static uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); /* relaxed: a detector */ }
static void st(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); /* relaxed: a detector */ }

static uint64_t checksum(const struct obj *o)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < NPAY; i++)
        s = (s ^ ld(&o->payload[i])) * 0x100000001b3ull;
    return s;
}

static struct obj *obj_new(uint64_t seq, long *freed)
{
    struct obj *o = malloc(sizeof *o);
    cr_assert_not_null(o);
    memset(o, 0, sizeof *o);
    for (int i = 0; i < NPAY; i++)
        st(&o->payload[i], seq * 0x9e3779b97f4a7c15ull + (uint64_t)i);
    st(&o->sum, checksum(o));
    st(&o->magic, LIVE);
    o->freed = freed;
    return o;
}

/* The reclamation function: mark DEAD, scribble the payload, count, free. */
static void obj_free(struct ks_epoch_node *n)
{
    struct obj *o = obj_of(n);
    st(&o->magic, DEAD);
    for (int i = 0; i < NPAY; i++)
        st(&o->payload[i], 0);
    if (o->freed)
        __atomic_fetch_add(o->freed, 1, __ATOMIC_RELAXED); /* relaxed: a count, read after a join or a release flag */
    free(o);
}

/* Is the object intact (LIVE, payload matching its checksum)? */
static int obj_intact(const struct obj *o) { return ld(&o->magic) == LIVE && checksum(o) == ld(&o->sum); }

static long count_of(const long *c) { return __atomic_load_n(c, __ATOMIC_RELAXED); /* relaxed: a count */ }

static struct ks_epoch_stats stats(void)
{
    struct ks_epoch_stats s;
    memset(&s, 0xff, sizeof s);
    ks_epoch_stats(&s);
    return s;
}

static void assert_same_stats(struct ks_epoch_stats a, struct ks_epoch_stats b, const char *what)
{
    cr_assert_eq(b.epoch, a.epoch, "%s: epoch %llu -> %llu", what, (unsigned long long)a.epoch,
                 (unsigned long long)b.epoch);
    cr_assert_eq(b.retired, a.retired, "%s: retired changed", what);
    cr_assert_eq(b.freed, a.freed, "%s: freed %llu -> %llu", what, (unsigned long long)a.freed,
                 (unsigned long long)b.freed);
    cr_assert_eq(b.records, a.records, "%s: records changed", what);
}

/* ---- waiting ------------------------------------------------------------------------ */

static int wait_flag(const int *flag, int64_t timeout_ns)
{
    int64_t end = ks_now() + timeout_ns;
    /* acquire: pairs with the release store that set the flag */
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
        if (ks_now() > end)
            return 0;
        kt_sleep_ns(100000);
    }
    return 1;
}

static void set_flag(int *flag) { __atomic_store_n(flag, 1, __ATOMIC_RELEASE); /* release: pairs with wait_flag */ }

/* A barrier in a thread of its own, so that a barrier that never returns
 * fails the test after timeout_ns instead of hanging it. */
struct bjob {
    int ret;
    int done;
};

static void *barrier_main(void *p)
{
    struct bjob *j = p;
    j->ret = ks_epoch_barrier();
    set_flag(&j->done);
    return NULL;
}

static int barrier_within(int64_t timeout_ns, int *ret)
{
    struct bjob *j = calloc(1, sizeof *j); /* left to the thread if it never returns */
    cr_assert_not_null(j);
    pthread_t t;
    kt_spawn(&t, barrier_main, j);
    if (!wait_flag(&j->done, timeout_ns)) {
        pthread_detach(t);
        return 0;
    }
    kt_join(t);
    *ret = j->ret;
    free(j);
    return 1;
}

/* ---- API contract ----------------------------------------------------------------------- */

static void *fresh_thread_calls(void *p)
{
    int *r = p;
    r[0] = ks_epoch_exit();  /* no record yet */
    r[1] = ks_epoch_leave(); /* nothing to leave */
    r[2] = ks_epoch_barrier();
    r[3] = ks_epoch_exit();
    return NULL;
}

Test(epoch, exit_without_enter_is_eperm, .timeout = 30)
{
    cr_assert_eq(ks_epoch_exit(), EPERM, "exit on a thread that never entered");
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_exit(), EPERM, "a second exit after one enter");
    cr_assert_eq(ks_epoch_exit(), EPERM);
    /* After the failed exits the thread still works normally. */
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_leave(), 0);
    cr_assert_eq(ks_epoch_exit(), EPERM, "exit after leave");

    int r[4] = {-1, -1, -1, -1};
    pthread_t t;
    kt_spawn(&t, fresh_thread_calls, r);
    kt_join(t);
    cr_assert_eq(r[0], EPERM, "exit on a fresh thread returned %d", r[0]);
    cr_assert_eq(r[1], 0, "leave on a fresh thread returned %d", r[1]);
    cr_assert_eq(r[2], 0, "barrier on a fresh thread returned %d", r[2]);
    cr_assert_eq(r[3], EPERM);
}

Test(epoch, sections_nest_and_count, .timeout = 30)
{
    for (int depth = 1; depth <= 5; depth++) {
        for (int i = 0; i < depth; i++)
            cr_assert_eq(ks_epoch_enter(), 0, "depth %d, enter %d", depth, i);
        for (int i = 0; i < depth; i++)
            cr_assert_eq(ks_epoch_exit(), 0, "depth %d, exit %d", depth, i);
        cr_assert_eq(ks_epoch_exit(), EPERM, "depth %d: one exit more than enters succeeded", depth);
    }
    /* Interleaved: enter enter exit enter exit exit. */
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_exit(), EPERM);
}

Test(epoch, barrier_inside_a_section_is_edeadlk_and_changes_nothing, .timeout = 30)
{
    static long freed; /* not on the stack: a helper thread may outlive a failed assertion */
    enum { N = 10 }; /* fewer than KS_EPOCH_BATCH: nothing is reclaimed on the way */
    for (int i = 0; i < N; i++)
        cr_assert_eq(ks_epoch_retire(&obj_new((uint64_t)i, &freed)->rcu, obj_free), 0);
    struct ks_epoch_stats a = stats();
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_barrier(), EDEADLK);
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_barrier(), EDEADLK, "barrier in a nested section");
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_barrier(), EDEADLK, "barrier after an inner exit (still inside)");
    assert_same_stats(a, stats(), "refused barriers");
    cr_assert_eq(count_of(&freed), 0, "a refused barrier freed %ld objects", count_of(&freed));
    /* Still exactly one level deep. */
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_exit(), EPERM);
    int ret = -1;
    cr_assert_eq(ks_epoch_barrier(), 0);
    cr_assert_eq(count_of(&freed), N, "the barrier freed %ld of %d", count_of(&freed), N);
    /* And from a helper thread too (nothing left there). */
    cr_assert(barrier_within(5 * KS_NSEC_PER_SEC, &ret));
    cr_assert_eq(ret, 0);
}

Test(epoch, leave_inside_a_section_is_ebusy_and_changes_nothing, .timeout = 30)
{
    static long freed; /* not on the stack: a helper thread may outlive a failed assertion */
    enum { N = 10 };
    cr_assert_eq(ks_epoch_enter(), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(ks_epoch_retire(&obj_new((uint64_t)i, &freed)->rcu, obj_free), 0);
    struct ks_epoch_stats a = stats();
    cr_assert_eq(ks_epoch_leave(), EBUSY);
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_leave(), EBUSY, "leave in a nested section");
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_leave(), EBUSY, "leave after an inner exit (still inside)");
    assert_same_stats(a, stats(), "refused leaves");
    cr_assert_eq(count_of(&freed), 0);
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(ks_epoch_exit(), EPERM, "the refused leave changed the nesting");
    /* Now it may leave; its objects become orphans that any barrier frees. */
    cr_assert_eq(ks_epoch_leave(), 0);
    cr_assert_eq(ks_epoch_leave(), 0, "a second leave");
    int ret = -1;
    cr_assert(barrier_within(5 * KS_NSEC_PER_SEC, &ret), "barrier stuck");
    cr_assert_eq(ret, 0);
    cr_assert_eq(count_of(&freed), N, "after leave and a barrier elsewhere: %ld of %d freed", count_of(&freed), N);
    /* The thread can join again. */
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_exit(), 0);
}

Test(epoch, retire_null_is_einval_and_changes_nothing, .timeout = 30)
{
    for (int inside = 0; inside < 2; inside++) {
        struct ks_epoch_node node, copy;
        memset(&node, 0xa5, sizeof node);
        memcpy(&copy, &node, sizeof node);
        if (inside)
            cr_assert_eq(ks_epoch_enter(), 0);
        struct ks_epoch_stats a = stats();
        cr_assert_eq(ks_epoch_retire(NULL, obj_free), EINVAL);
        cr_assert_eq(ks_epoch_retire(&node, NULL), EINVAL);
        cr_assert_eq(ks_epoch_retire(NULL, NULL), EINVAL);
        struct ks_epoch_stats b = stats();
        cr_assert_eq(memcmp(&node, &copy, sizeof node), 0, "a refused retire wrote the node");
        cr_assert_eq(b.retired, a.retired, "a refused retire was counted");
        if (inside)
            cr_assert_eq(ks_epoch_exit(), 0);
        cr_assert_eq(ks_epoch_exit(), EPERM);
    }
    /* Nothing was queued: a barrier frees nothing. */
    struct ks_epoch_stats a = stats();
    cr_assert_eq(ks_epoch_barrier(), 0);
    struct ks_epoch_stats b = stats();
    cr_assert_eq(b.freed, a.freed);
    cr_assert_eq(b.retired, a.retired);
}

/* ---- grace periods ---------------------------------------------------------------------- */

/* A reader that enters `depth` times, loads the shared pointer, exits
 * depth - 1 times (so it is still inside), tells the main thread and waits;
 * then checks the object again and exits the last level -- or, with
 * die_inside, returns from the thread without exiting at all. */
struct holder {
    struct obj **slot;
    int depth;
    int die_inside;
    int in;      /* holder -> main */
    int release; /* main -> holder */
    int errors;  /* nonzero returns from enter/exit */
    int damaged; /* the object was not intact */
};

static void *holder_main(void *p)
{
    struct holder *h = p;
    for (int i = 0; i < h->depth; i++)
        h->errors += ks_epoch_enter() != 0;
    /* acquire: pairs with the release that published the object */
    struct obj *o = __atomic_load_n(h->slot, __ATOMIC_ACQUIRE);
    if (!o || !obj_intact(o))
        h->damaged++;
    for (int i = 0; i < h->depth - 1; i++)
        h->errors += ks_epoch_exit() != 0;
    set_flag(&h->in);
    while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE)) /* acquire: pairs with set_flag */
        kt_sleep_ns(200000);                                 /* asleep inside the section, on purpose */
    if (o && !obj_intact(o))
        h->damaged++;
    if (!h->die_inside)
        h->errors += ks_epoch_exit() != 0;
    return NULL;
}

/* Retires one object, flushes until told to stop, then waits in a barrier. */
struct reclaimer {
    struct obj *o;
    int go_barrier; /* main -> reclaimer */
    long flushes;   /* atomic */
    int retire_ret, barrier_ret;
    int done;
};

static void *reclaimer_main(void *p)
{
    struct reclaimer *r = p;
    r->retire_ret = ks_epoch_retire(&r->o->rcu, obj_free);
    while (!__atomic_load_n(&r->go_barrier, __ATOMIC_ACQUIRE)) { /* acquire: pairs with set_flag */
        ks_epoch_flush();
        __atomic_fetch_add(&r->flushes, 1, __ATOMIC_RELAXED); /* relaxed: a count */
        sched_yield();
    }
    r->barrier_ret = ks_epoch_barrier();
    set_flag(&r->done);
    return NULL;
}

/* The grace-period scenario for one reader; die_inside: the reader's thread
 * ends inside its section instead of exiting it. */
/* What the threads of one scenario share.  On the heap, and left there if an
 * assertion fails: the test's stack unwinds while the threads still run. */
struct grace {
    long freed;
    struct obj *slot;
    struct holder h;
    struct reclaimer r;
};

static void grace_period(int depth, int die_inside)
{
    struct grace *g = calloc(1, sizeof *g);
    cr_assert_not_null(g);
    struct obj *o = obj_new(1, &g->freed);
    g->slot = o;
    g->h = (struct holder){.slot = &g->slot, .depth = depth, .die_inside = die_inside};
    pthread_t ht, rt;
    kt_spawn(&ht, holder_main, &g->h);
    cr_assert(wait_flag(&g->h.in, 5 * KS_NSEC_PER_SEC), "the reader never entered");

    /* Unlink (no new reader can find it), then retire and flush for >= 50 ms. */
    /* acq_rel: as a writer's exchange (the holder's acquire load read the release before it) */
    cr_assert_eq(__atomic_exchange_n(&g->slot, NULL, __ATOMIC_ACQ_REL), o);
    g->r = (struct reclaimer){.o = o};
    kt_spawn(&rt, reclaimer_main, &g->r);
    int64_t t0 = ks_now();
    while ((ks_now() - t0 < 50 * KT_MS || count_of(&g->r.flushes) < 20) && ks_now() - t0 < 5 * KS_NSEC_PER_SEC)
        kt_sleep_ns(KT_MS);
    cr_assert_geq(count_of(&g->r.flushes), 20, "the reclaimer hardly ran");
    cr_assert_eq(count_of(&g->freed), 0, "freed while a reader (depth %d) could hold it, after %ld flushes", depth,
                 count_of(&g->r.flushes));

    /* The barrier must wait for the reader. */
    set_flag(&g->r.go_barrier);
    kt_sleep_ns(20 * KT_MS);
    /* acquire: pairs with set_flag(&done) */
    cr_assert_eq(__atomic_load_n(&g->r.done, __ATOMIC_ACQUIRE), 0,
                 "the barrier returned while a reader (depth %d) was in its section", depth);
    cr_assert_eq(count_of(&g->freed), 0, "freed under the barrier while a reader (depth %d) held it", depth);

    set_flag(&g->h.release);
    kt_join(ht);
    cr_assert_eq(g->h.errors, 0);
    cr_assert_eq(g->h.damaged, 0, "the reader saw its object damaged");
    cr_assert(wait_flag(&g->r.done, 5 * KS_NSEC_PER_SEC),
              "the barrier did not return within 5 s after the reader %s (depth %d)",
              die_inside ? "died inside its section" : "exited", depth);
    kt_join(rt);
    cr_assert_eq(g->r.retire_ret, 0);
    cr_assert_eq(g->r.barrier_ret, 0);
    cr_assert_eq(count_of(&g->freed), 1, "after the barrier the object was freed %ld times", count_of(&g->freed));
    free(g);
}

Test(epoch, no_free_while_a_reader_is_inside, .timeout = 30)
{
    grace_period(1, 0);
}

Test(epoch, no_free_while_a_nested_reader_is_inside, .timeout = 30)
{
    grace_period(2, 0);
    grace_period(3, 0);
}

Test(epoch, thread_dying_inside_a_section_does_not_block_reclamation, .timeout = 30)
{
    grace_period(1, 1);
    grace_period(3, 1);
}

/* ---- orphans ---------------------------------------------------------------------------- */

enum orphan_mode {
    OM_PLAIN,       /* retire, return without leave */
    OM_SECTION,     /* retire inside a section, exit it, return without leave */
    OM_DIE_INSIDE,  /* retire inside a section, return inside it */
    OM_LEAVE,       /* retire inside a section, exit it, leave, stay alive */
    OM_NMODES
};

struct orphaner {
    enum orphan_mode mode;
    int n;
    long freed; /* atomic: counted by obj_free */
    int errors;
    int left;    /* OM_LEAVE: orphaner -> main */
    int release; /* OM_LEAVE: main -> orphaner */
};

static void *orphaner_main(void *p)
{
    struct orphaner *o = p;
    if (o->mode != OM_PLAIN)
        o->errors += ks_epoch_enter() != 0;
    for (int i = 0; i < o->n; i++)
        o->errors += ks_epoch_retire(&obj_new((uint64_t)i, &o->freed)->rcu, obj_free) != 0;
    if (o->mode == OM_DIE_INSIDE)
        return NULL;
    if (o->mode != OM_PLAIN)
        o->errors += ks_epoch_exit() != 0;
    if (o->mode == OM_LEAVE) {
        o->errors += ks_epoch_leave() != 0;
        set_flag(&o->left);
        while (!__atomic_load_n(&o->release, __ATOMIC_ACQUIRE)) /* acquire: pairs with set_flag */
            kt_sleep_ns(200000);
        /* After leaving, the thread may use the domain again. */
        o->errors += ks_epoch_enter() != 0;
        o->errors += ks_epoch_exit() != 0;
    }
    return NULL;
}

Test(epoch, orphans_are_freed_by_any_barrier, .timeout = 30)
{
    static const char *const names[] = {"plain exit", "exit after a section", "death inside a section",
                                        "explicit leave"};
    enum { N = 1000 }; /* < KS_EPOCH_MAX: retire never waits */
    for (int m = 0; m < OM_NMODES; m++) {
        struct ks_epoch_stats a = stats();
        struct orphaner *o = calloc(1, sizeof *o); /* the library's orphans point into it */
        cr_assert_not_null(o);
        o->mode = (enum orphan_mode)m;
        o->n = N;
        pthread_t t;
        kt_spawn(&t, orphaner_main, o);
        if (m == OM_LEAVE)
            cr_assert(wait_flag(&o->left, 5 * KS_NSEC_PER_SEC));
        else
            kt_join(t);
        long before = count_of(&o->freed);
        /* Its own section kept the epoch from passing its entry + 1, so at
         * least the objects retired after its first advance were pending
         * when it left: the barrier below is what frees them. */
        if (m != OM_PLAIN)
            cr_assert_lt(before, N, "%s: all %d objects were freed before any barrier", names[m], N);
        int ret = -1;
        cr_assert(barrier_within(5 * KS_NSEC_PER_SEC, &ret), "%s: barrier stuck", names[m]);
        cr_assert_eq(ret, 0);
        cr_assert_eq(count_of(&o->freed), N, "%s: %ld of %d objects freed after the barrier (%ld before)",
                     names[m], count_of(&o->freed), N, before);
        if (m == OM_LEAVE) {
            set_flag(&o->release);
            kt_join(t);
        }
        cr_assert_eq(o->errors, 0, "%s: %d calls failed", names[m], o->errors);
        struct ks_epoch_stats b = stats();
        cr_assert_eq(b.retired - a.retired, (uint64_t)N);
        cr_assert_eq(b.freed - a.freed, (uint64_t)N);
        free(o);
    }
}

/* ---- readers never see a reclaimed object ---------------------------------------------- */

#define ST_SLOTS 4
#define ST_READERS 24
#define ST_WRITERS 8
#define ST_RUN_NS (600 * KT_MS)

struct stress {
    struct obj *slot[ST_SLOTS];
    int stop;
    kt_gate_t gate;
    long reads, dead, bad, errors; /* atomics, added once per thread */
    long allocated, retired;       /* atomics, added once per thread */
    long freed;                    /* atomic: counted by obj_free */
};

struct st_arg {
    struct stress *s;
    int id;
};

static void *st_reader(void *p)
{
    struct st_arg *a = p;
    struct stress *s = a->s;
    long reads = 0, dead = 0, bad = 0, errors = 0;
    kt_gate_pass(&s->gate);
    for (unsigned i = (unsigned)a->id; !__atomic_load_n(&s->stop, __ATOMIC_RELAXED); i++) { /* relaxed: a stop hint */
        int nested = (i % 8) == 0;
        errors += ks_epoch_enter() != 0;
        if (nested)
            errors += ks_epoch_enter() != 0;
        /* acquire: pairs with the writers' acq_rel exchange that published it */
        struct obj *o = __atomic_load_n(&s->slot[i % ST_SLOTS], __ATOMIC_ACQUIRE);
        if (o) {
            uint64_t m1 = ld(&o->magic);
            uint64_t sum = checksum(o);
            if ((i & 63) == 0)
                sched_yield(); /* preempted inside the section: widen the window */
            uint64_t m2 = ld(&o->magic);
            if (m1 == DEAD || m2 == DEAD)
                dead++;
            else if (m1 != LIVE || m2 != LIVE || sum != ld(&o->sum) || checksum(o) != sum)
                bad++;
            reads++;
        }
        if (nested)
            errors += ks_epoch_exit() != 0;
        errors += ks_epoch_exit() != 0;
    }
    /* relaxed: totals read after the join */
    __atomic_fetch_add(&s->reads, reads, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->dead, dead, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->bad, bad, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->errors, errors, __ATOMIC_RELAXED);
    return NULL;
}

static void *st_writer(void *p)
{
    struct st_arg *a = p;
    struct stress *s = a->s;
    long allocated = 0, retired = 0, errors = 0;
    uint64_t seq = (uint64_t)a->id << 40;
    kt_gate_pass(&s->gate);
    for (unsigned i = (unsigned)a->id; !__atomic_load_n(&s->stop, __ATOMIC_RELAXED); i++) { /* relaxed: a stop hint */
        struct obj *o = obj_new(++seq, &s->freed);
        allocated++;
        /* acq_rel: release publishes o to readers; acquire takes the old one from its writer */
        struct obj *old = __atomic_exchange_n(&s->slot[i % ST_SLOTS], o, __ATOMIC_ACQ_REL);
        if (old) {
            errors += ks_epoch_retire(&old->rcu, obj_free) != 0;
            retired++;
        }
        if (retired % 1024 == 0)
            ks_epoch_flush();
        if (retired % 8192 == 4096)
            errors += ks_epoch_barrier() != 0;
    }
    /* relaxed: totals read after the join */
    __atomic_fetch_add(&s->allocated, allocated, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->retired, retired, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->errors, errors, __ATOMIC_RELAXED);
    return NULL;
}

Test(epoch, readers_never_see_a_reclaimed_object, .timeout = 60)
{
    struct stress *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    struct ks_epoch_stats a = stats();
    for (int k = 0; k < ST_SLOTS; k++)
        s->slot[k] = obj_new((uint64_t)k, &s->freed);
    long allocated = ST_SLOTS, retired = 0;
    enum { NT = ST_READERS + ST_WRITERS };
    pthread_t t[NT];
    struct st_arg args[NT];
    kt_gate_init(&s->gate, NT + 1);
    for (int i = 0; i < NT; i++) {
        args[i] = (struct st_arg){.s = s, .id = i};
        kt_spawn(&t[i], i < ST_READERS ? st_reader : st_writer, &args[i]);
    }
    kt_gate_pass(&s->gate);
    int64_t t0 = ks_now();
    kt_sleep_ns(ST_RUN_NS);
    long freed_while_running = count_of(&s->freed);
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED); /* relaxed: a stop hint, the joins order the rest */
    for (int i = 0; i < NT; i++)
        kt_join(t[i]);
    int64_t took = ks_now() - t0;
    kt_gate_destroy(&s->gate);
    struct ks_epoch_stats mid = stats();

    /* Retire the last objects and wait: everything must now be freed. */
    for (int k = 0; k < ST_SLOTS; k++) {
        cr_assert_eq(ks_epoch_retire(&s->slot[k]->rcu, obj_free), 0);
        retired++;
    }
    cr_assert_eq(ks_epoch_barrier(), 0);
    struct ks_epoch_stats b = stats();
    allocated += s->allocated;
    retired += s->retired;
    cr_log_info("epoch stress: %ld reads, %ld retired (%ld freed while running), epoch +%llu, %lld ms", s->reads,
                retired, freed_while_running, (unsigned long long)(mid.epoch - a.epoch), (long long)(took / KT_MS));

    cr_assert_eq(s->errors, 0, "%ld enter/exit/retire/barrier calls failed", s->errors);
    cr_assert_eq(s->dead, 0, "readers saw %ld reclaimed (DEAD) objects in %ld reads", s->dead, s->reads);
    cr_assert_eq(s->bad, 0, "readers saw %ld damaged objects in %ld reads", s->bad, s->reads);
    cr_assert_gt(s->reads, 1000, "only %ld reads: the test lost its point", s->reads);
    cr_assert_gt(retired, 1000, "only %ld retirements: the test lost its point", retired);
    cr_assert_gt(freed_while_running, 0, "nothing was reclaimed while the readers ran");
    cr_assert_geq(mid.epoch - a.epoch, 3u, "the epoch hardly moved");
    cr_assert_eq(retired, allocated, "%ld allocated, %ld retired", allocated, retired);
    cr_assert_eq(count_of(&s->freed), allocated, "%ld allocated, %ld freed (each must be freed exactly once)",
                 allocated, count_of(&s->freed));
    cr_assert_eq(b.retired - a.retired, (uint64_t)retired, "stats: %llu retired, %ld retire calls",
                 (unsigned long long)(b.retired - a.retired), retired);
    cr_assert_eq(b.freed - a.freed, b.retired - a.retired, "stats: %llu retired, %llu freed after the barrier",
                 (unsigned long long)(b.retired - a.retired), (unsigned long long)(b.freed - a.freed));
    free(s);
}

/* ---- bounded garbage -------------------------------------------------------------------- */

/* Retires `total` objects, noting after each retire how many of them are
 * still unfreed; then a barrier. */
struct garbage {
    long total;
    long attempted;  /* atomic: retire calls begun */
    long returned;   /* atomic: retire calls returned */
    long freed;      /* atomic: counted by obj_free */
    long max_out;    /* the most attempted - freed seen after a retire returned */
    int errors;
    int finished;
};

static void *garbage_main(void *p)
{
    struct garbage *g = p;
    for (long i = 0; i < g->total; i++) {
        struct obj *o = obj_new((uint64_t)i, &g->freed);
        __atomic_store_n(&g->attempted, i + 1, __ATOMIC_RELAXED); /* relaxed: a count */
        g->errors += ks_epoch_retire(&o->rcu, obj_free) != 0;
        __atomic_store_n(&g->returned, i + 1, __ATOMIC_RELAXED); /* relaxed: a count */
        long out = i + 1 - count_of(&g->freed);
        if (out > g->max_out)
            g->max_out = out;
    }
    g->errors += ks_epoch_barrier() != 0;
    set_flag(&g->finished);
    return NULL;
}

Test(epoch, garbage_stays_bounded_without_readers, .timeout = 30)
{
    struct garbage g = {.total = 3L * KS_EPOCH_MAX};
    struct ks_epoch_stats a = stats();
    garbage_main(&g); /* on the test's own thread */
    struct ks_epoch_stats b = stats();
    cr_log_info("no readers: at most %ld of %ld objects unfreed after a retire", g.max_out, g.total);
    cr_assert_eq(g.errors, 0);
    cr_assert_leq(g.max_out, (long)(KS_EPOCH_MAX + KS_EPOCH_BATCH), "%ld objects unfreed after a retire", g.max_out);
    /* With no reader every advance succeeds, and a thread tries one every
     * KS_EPOCH_BATCH retirements and frees the bags two epochs old: its
     * garbage stays within a few batches. */
    cr_assert_leq(g.max_out, 4L * KS_EPOCH_BATCH, "%ld objects unfreed after a retire with no reader anywhere",
                  g.max_out);
    cr_assert_eq(count_of(&g.freed), g.total);
    cr_assert_eq(b.retired - a.retired, (uint64_t)g.total);
    cr_assert_eq(b.freed - a.freed, (uint64_t)g.total);
}

Test(epoch, retire_waits_at_max_behind_a_reader_and_resumes, .timeout = 30)
{
    struct grace *rd = calloc(1, sizeof *rd); /* the reader's side; on the heap as in grace_period */
    cr_assert_not_null(rd);
    struct obj *ro = obj_new(1, &rd->freed);
    rd->slot = ro;
    rd->h = (struct holder){.slot = &rd->slot, .depth = 1};
    pthread_t ht, gt;
    kt_spawn(&ht, holder_main, &rd->h);
    cr_assert(wait_flag(&rd->h.in, 5 * KS_NSEC_PER_SEC), "the reader never entered");

    struct garbage *g = calloc(1, sizeof *g); /* left to the thread if it hangs */
    cr_assert_not_null(g);
    g->total = 2L * KS_EPOCH_MAX;
    int64_t t0 = ks_now();
    kt_spawn(&gt, garbage_main, g);
    /* Wait until the writer is stuck inside a retire (no return for 100 ms)
     * with about KS_EPOCH_MAX objects unfreed: the reader holds them all.
     * A writer merely preempted does not end the wait (the machine may be
     * busy); one that never stops fails it. */
    long last = -1, attempted = 0, out = 0;
    int64_t still_since = ks_now();
    for (;;) {
        kt_sleep_ns(10 * KT_MS);
        /* acquire: pairs with set_flag(&finished), so max_out is the writer's last */
        cr_assert_eq(__atomic_load_n(&g->finished, __ATOMIC_ACQUIRE), 0,
                     "the writer retired all %ld objects past a reader in its section (at most %ld unfreed)",
                     g->total, g->max_out);
        long now = __atomic_load_n(&g->returned, __ATOMIC_RELAXED); /* relaxed: a count */
        attempted = __atomic_load_n(&g->attempted, __ATOMIC_RELAXED); /* relaxed: a count */
        out = attempted - count_of(&g->freed);
        if (now != last) {
            last = now;
            still_since = ks_now();
        } else if (ks_now() - still_since >= 100 * KT_MS && attempted == now + 1 &&
                   out >= (long)(KS_EPOCH_MAX - KS_EPOCH_BATCH)) {
            break;
        }
        cr_assert_lt(ks_now() - t0, 2 * KS_NSEC_PER_SEC,
                     "the writer never stalled behind the reader (%ld retires returned, %ld unfreed)", now, out);
    }
    cr_log_info("behind a reader: the writer waits with %ld unfreed (%ld retires returned)", out, last);
    cr_assert_leq(out, (long)(KS_EPOCH_MAX + KS_EPOCH_BATCH), "%ld unfreed behind a reader", out);
    set_flag(&rd->h.release);
    kt_join(ht);
    cr_assert_eq(rd->h.errors, 0);
    cr_assert_eq(rd->h.damaged, 0);
    cr_assert(wait_flag(&g->finished, 2 * KS_NSEC_PER_SEC),
              "the writer did not resume after the reader left (%ld of %ld retires returned)",
              __atomic_load_n(&g->returned, __ATOMIC_RELAXED) /* relaxed: a count */, g->total);
    kt_join(gt);
    cr_assert_eq(g->errors, 0);
    cr_assert_eq(g->returned, g->total);
    cr_assert_leq(g->max_out, (long)(KS_EPOCH_MAX + KS_EPOCH_BATCH), "%ld objects unfreed after a retire",
                  g->max_out);
    cr_assert_eq(count_of(&g->freed), g->total, "%ld of %ld freed after the writer's barrier", count_of(&g->freed),
                 g->total);
    cr_assert_lt(ks_now() - t0, 3 * KS_NSEC_PER_SEC * KT_SLOW);
    free(g);
    free(ro); /* never retired */
    free(rd);
}

/* ---- thread records ---------------------------------------------------------------------- */

static void *short_lived(void *p)
{
    int *errors = p;
    int kind = *errors;
    *errors = 0;
    *errors += ks_epoch_enter() != 0;
    if (kind == 1)
        return NULL; /* dies inside its section */
    *errors += ks_epoch_exit() != 0;
    if (kind == 2)
        *errors += ks_epoch_leave() != 0;
    return NULL;
}

Test(epoch, records_of_exited_threads_are_reused, .timeout = 30)
{
    struct ks_epoch_stats a = stats();
    for (int i = 0; i < 200; i++) {
        int arg = i % 3; /* 0: plain exit, 1: dies inside, 2: leaves first */
        pthread_t t;
        kt_spawn(&t, short_lived, &arg);
        kt_join(t);
        cr_assert_eq(arg, 0, "thread %d: a call failed", i);
    }
    struct ks_epoch_stats b = stats();
    cr_assert_leq(b.records - a.records, 2u, "200 threads one after another made %llu records",
                  (unsigned long long)(b.records - a.records));
    /* And nobody holds the epoch: a barrier returns. */
    int ret = -1;
    cr_assert(barrier_within(5 * KS_NSEC_PER_SEC, &ret));
    cr_assert_eq(ret, 0);
}

/* ks_epoch_barrier() frees every orphan even while other threads reclaim
 * orphans at the same time (a reclaimer that took bags out under the lock
 * and frees them after unlocking, or pushed back bags that were not ready
 * by its older epoch, made the barrier return early in 44-183 of 200
 * rounds before orphan_busy was added). */
#define RB_K 2000
#define RB_ROUNDS 60

struct rb_obj {
    long *count;
    struct ks_epoch_node rcu;
};

static void rb_free(struct ks_epoch_node *n)
{
    struct rb_obj *o = (struct rb_obj *)((char *)n - offsetof(struct rb_obj, rcu));
    __atomic_fetch_add(o->count, 1, __ATOMIC_RELAXED); /* relaxed: a count */
    free(o);
}

static int rb_stop;

static void *rb_flusher(void *p)
{
    (void)p;
    while (!__atomic_load_n(&rb_stop, __ATOMIC_RELAXED)) /* relaxed: a stop hint */
        ks_epoch_flush();
    return NULL;
}

static void *rb_orphaner(void *p)
{
    ks_epoch_enter();
    for (int i = 0; i < RB_K; i++) {
        struct rb_obj *o = malloc(sizeof *o);
        if (!o)
            abort();
        o->count = p;
        ks_epoch_retire(&o->rcu, rb_free);
    }
    ks_epoch_exit();
    return NULL; /* no leave: the exit destructor hands the bags over */
}

Test(epoch, barrier_frees_orphans_while_others_reclaim, .timeout = 60)
{
    pthread_t f[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&f[i], NULL, rb_flusher, NULL), 0);
    static long count[RB_ROUNDS];
    int bad = 0, first = -1;
    long first_count = 0;
    for (int r = 0; r < RB_ROUNDS; r++) {
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, rb_orphaner, &count[r]), 0);
        pthread_join(t, NULL);
        int ret = ks_epoch_barrier();
        long c = __atomic_load_n(&count[r], __ATOMIC_RELAXED); /* relaxed: read after the barrier */
        if (ret != 0 || c != RB_K) {
            if (first < 0) {
                first = r;
                first_count = c;
            }
            bad++;
        }
    }
    __atomic_store_n(&rb_stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 2; i++)
        pthread_join(f[i], NULL);
    cr_assert_eq(bad, 0, "%d of %d barriers returned early (round %d: %ld of %d freed)", bad,
                 RB_ROUNDS, first, first_count, RB_K);
}

/* ---- retire callbacks that call ks_epoch_barrier (issue 17, item 2) ------------------------ */

/* An object retired by a thread that then exits becomes an orphan; the
 * thread that reclaims orphans marks the list busy and runs its function.
 * A function that reaches ks_epoch_barrier -- directly, through
 * ks_cache_destroy of a cache the object owned, or through a retire that
 * finds KS_EPOCH_MAX pending -- waited for the orphan list to be idle, i.e.
 * for itself, for ever.  The barrier runs in a thread of its own, so that a
 * hang fails the test after a few seconds. */
enum { CB_BARRIER, CB_CACHE, CB_RETIRE_MAX, CB_NMODES };

struct cb_obj {
    int mode;
    int ret;            /* what the inner call returned */
    long sibling_seen;  /* the sibling's count when the inner barrier returned */
    long *sibling;      /* counted by the sibling's function */
    int done;           /* atomic: the function finished */
    int64_t waited_ns;  /* CB_RETIRE_MAX: how long the retires took */
    ks_cache_t *cache;  /* CB_CACHE: owned by the object */
    struct ks_epoch_node rcu;
};

static struct ks_epoch_node *cb_nodes; /* CB_RETIRE_MAX: KS_EPOCH_MAX plain nodes */
static long cb_nodes_freed;

static void cb_count(struct ks_epoch_node *n)
{
    (void)n;
    __atomic_fetch_add(&cb_nodes_freed, 1, __ATOMIC_RELAXED); /* relaxed: a count */
}

/* CB_RETIRE_MAX: a reader that stays in its section for a while, so that
 * the epoch cannot advance and the function's retires reach KS_EPOCH_MAX
 * pending (a retire then waits in ks_epoch_barrier). */
#define CB_READER_NS (200 * KT_MS)
static void *cb_slow_reader(void *p)
{
    if (ks_epoch_enter() == 0) {
        set_flag(p);
        kt_sleep_ns(CB_READER_NS);
        ks_epoch_exit();
    } else {
        set_flag(p);
    }
    return NULL;
}

static void cb_free(struct ks_epoch_node *n)
{
    struct cb_obj *o = (struct cb_obj *)((char *)n - offsetof(struct cb_obj, rcu));
    pthread_t rd;
    int in = 0;
    int64_t t0;
    switch (o->mode) {
    case CB_BARRIER:
        o->ret = ks_epoch_barrier();
        break;
    case CB_CACHE:
        o->ret = ks_cache_destroy(o->cache);
        break;
    case CB_RETIRE_MAX:
        o->ret = pthread_create(&rd, NULL, cb_slow_reader, &in);
        if (o->ret)
            break;
        wait_flag(&in, 5 * KS_NSEC_PER_SEC);
        t0 = ks_now();
        for (unsigned i = 0; i < KS_EPOCH_MAX; i++)
            o->ret |= ks_epoch_retire(&cb_nodes[i], cb_count);
        o->waited_ns = ks_now() - t0;
        pthread_join(rd, NULL);
        break;
    }
    o->sibling_seen = count_of(o->sibling);
    set_flag(&o->done);
}

struct cb_job {
    struct cb_obj *obj;
    long *sibling_count;
    int errors;
};

/* Retire the sibling first, then the object: a bag runs newest first, so
 * the sibling is still waiting in the reclaimer's hands when the object's
 * function calls the barrier, which must run it too before returning. */
static void *cb_orphaner(void *p)
{
    struct cb_job *j = p;
    j->errors += ks_epoch_retire(&obj_new(1, j->sibling_count)->rcu, obj_free) != 0;
    j->errors += ks_epoch_retire(&j->obj->rcu, cb_free) != 0;
    return NULL; /* exits: both become orphans */
}

Test(epoch, retire_callback_may_call_barrier_when_run_from_the_orphan_list, .timeout = 60)
{
    static const char *const names[] = {"ks_epoch_barrier", "ks_cache_destroy", "retire at KS_EPOCH_MAX"};
    cb_nodes = calloc(KS_EPOCH_MAX, sizeof *cb_nodes);
    cr_assert_not_null(cb_nodes);
    for (int m = 0; m < CB_NMODES; m++) {
        struct cb_obj *o = calloc(1, sizeof *o); /* left to a hung thread on failure */
        long *sibling = calloc(1, sizeof *sibling);
        cr_assert(o && sibling);
        o->mode = m;
        o->ret = -1;
        o->sibling = sibling;
        if (m == CB_CACHE) {
            struct ks_cache_options opt = KS_CACHE_OPTIONS_INIT;
            opt.variant = KS_CACHE_LOCKFREE;
            cr_assert_eq(ks_cache_create(&o->cache, &opt), 0);
            for (int i = 0; i < 100; i++) /* replacements: the cache retires entries */
                cr_assert_eq(ks_cache_put(o->cache, "k", 1, &i, sizeof i, 0), 0);
        }
        struct cb_job j = {.obj = o, .sibling_count = sibling};
        pthread_t t;
        kt_spawn(&t, cb_orphaner, &j);
        kt_join(t);
        cr_assert_eq(j.errors, 0);
        int ret = -1;
        cr_assert(barrier_within(5 * KS_NSEC_PER_SEC, &ret),
                  "%s called from a function run off the orphan list: the reclaiming barrier hung", names[m]);
        cr_assert_eq(ret, 0);
        cr_assert(wait_flag(&o->done, 5 * KS_NSEC_PER_SEC));
        cr_assert_eq(o->ret, 0, "%s: the inner call returned %d", names[m], o->ret);
        cr_assert_eq(o->sibling_seen, 1, "%s: an orphan taken with the caller's object was not freed "
                         "when the inner barrier returned", names[m]);
        cr_assert_eq(count_of(sibling), 1);
        if (m == CB_RETIRE_MAX) /* the last retire waited for the reader: the barrier was reached */
            cr_assert_geq(o->waited_ns, CB_READER_NS / 2, "the retires never reached KS_EPOCH_MAX (%lld ns)",
                          (long long)o->waited_ns);
        free(o);
        free(sibling);
    }
    /* Later barriers in the process still return, and free everything. */
    int ret = -1;
    cr_assert(barrier_within(5 * KS_NSEC_PER_SEC, &ret), "a later barrier hung");
    cr_assert_eq(count_of(&cb_nodes_freed), (long)KS_EPOCH_MAX);
    free(cb_nodes);
}

/* ---- thread-exit hooks that run after the epoch's own ---------------------------------- */

/* glibc runs pthread key destructors in up to PTHREAD_DESTRUCTOR_ITERATIONS
 * rounds, a new round only while a destructor set a value again.  The
 * epoch's destructor leaves in round 1; a destructor of another key that
 * retires or enters a section in the last round claimed a record again,
 * whose own destructor never ran: the record stayed in use for ever, and
 * what was retired into it was never freed. */
static pthread_key_t late_key;
static long late_freed;

struct late {
    int mode; /* 0: retire in the last round; 1: enter and exit there */
    int round, errors, worked;
};

static void late_hook(void *p)
{
    struct late *l = p;
    if (++l->round < PTHREAD_DESTRUCTOR_ITERATIONS) {
        pthread_setspecific(late_key, l); /* run again in the next round */
        return;
    }
    if (l->mode == 0) {
        l->errors += ks_epoch_retire(&obj_new(7, &late_freed)->rcu, obj_free) != 0;
    } else {
        l->errors += ks_epoch_enter() != 0;
        l->errors += ks_epoch_exit() != 0;
    }
    l->worked = 1;
}

static void *late_main(void *p)
{
    struct late *l = p;
    l->errors += ks_epoch_enter() != 0; /* the epoch's destructor will run in round 1 */
    l->errors += ks_epoch_exit() != 0;
    l->errors += pthread_setspecific(late_key, l) != 0;
    return NULL;
}

Test(epoch, exit_hooks_after_the_epochs_own_leave_no_record_in_use, .timeout = 30)
{
    /* The hook's key is created after the epoch's (first use), so that in
     * each round its destructor runs after the epoch's. */
    cr_assert_eq(ks_epoch_enter(), 0);
    cr_assert_eq(ks_epoch_exit(), 0);
    cr_assert_eq(pthread_key_create(&late_key, late_hook), 0);
    /* A retire in the last round: the object must still be freed. */
    struct late l = {.mode = 0};
    pthread_t t;
    kt_spawn(&t, late_main, &l);
    kt_join(t);
    cr_assert_eq(l.worked, 1, "the hook did not run in round %d", PTHREAD_DESTRUCTOR_ITERATIONS);
    cr_assert_eq(l.errors, 0);
    int ret = -1;
    cr_assert(barrier_within(5 * KS_NSEC_PER_SEC, &ret));
    cr_assert_eq(count_of(&late_freed), 1, "an object retired by a last-round exit hook was never freed");
    /* Sections in the last round, 20 threads one after another: records
     * are released, not kept (each would be kept in use for ever). */
    struct ks_epoch_stats a = stats();
    for (int i = 0; i < 20; i++) {
        struct late m = {.mode = 1};
        kt_spawn(&t, late_main, &m);
        kt_join(t);
        cr_assert_eq(m.worked, 1);
        cr_assert_eq(m.errors, 0);
    }
    struct ks_epoch_stats b = stats();
    cr_assert_leq(b.records - a.records, 2u, "20 threads whose last exit hook entered a section made %llu records",
                  (unsigned long long)(b.records - a.records));
    cr_assert(barrier_within(5 * KS_NSEC_PER_SEC, &ret));
    pthread_key_delete(late_key);
}

/* ---- every kind of fork (issue 10, the same class as the recursive mutex) ----------------
 * A thread of the parent sits inside a section when the main thread forks.
 * It does not exist in the child, yet its record said ACTIVE at an old
 * epoch for good: the child's epoch could never advance, so its barrier
 * hung and nothing it retired was freed.  fork() reset the records in an
 * atfork handler; _Fork() and a raw clone run none.  Two cases: the forking
 * thread has a record (it resets, keeping its own), or it has none and a
 * new thread of the child makes the first epoch call. */
static int fk_freed;
static int fk_hold;    /* the parent's reader stays inside while set */
static int fk_inside;

static void fk_count(struct ks_epoch_node *n)
{
    (void)n;
    __atomic_add_fetch(&fk_freed, 1, __ATOMIC_RELAXED);
}

static void *fk_reader(void *p)
{
    (void)p;
    ks_epoch_enter();
    __atomic_store_n(&fk_inside, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&fk_hold, __ATOMIC_ACQUIRE))
        kt_sleep_ns(200000);
    ks_epoch_exit();
    return NULL;
}

static void *fk_child_thread(void *p)
{
    static struct ks_epoch_node n;
    int *ok = p;
    *ok = ks_epoch_enter() == 0 && ks_epoch_exit() == 0 && ks_epoch_retire(&n, fk_count) == 0 &&
          ks_epoch_barrier() == 0;
    return NULL;
}

static void *fk_child_retire(void *p)
{
    static struct ks_epoch_node n;
    int *ok = p;
    *ok = ks_epoch_enter() == 0 && ks_epoch_exit() == 0 && ks_epoch_retire(&n, fk_count) == 0;
    for (int i = 0; i < 10; i++)
        ks_epoch_flush(); /* try hard to free it: our reader must stop that */
    return NULL;
}

static int fk_child(void *p)
{
    int thread_first = *(int *)p;
    static struct ks_epoch_node a, b;
    alarm(10); /* a hang kills the child: the parent sees a signal */
    fk_freed = 0;
    if (thread_first) {
        /* A new thread makes the child's first epoch call. */
        pthread_t t;
        int ok = 0;
        if (pthread_create(&t, NULL, fk_child_thread, &ok) != 0)
            return 1;
        pthread_join(t, NULL);
        if (!ok)
            return 2;
    }
    if (ks_epoch_enter() != 0 || ks_epoch_exit() != 0)
        return 3;
    if (ks_epoch_retire(&a, fk_count) != 0 || ks_epoch_retire(&b, fk_count) != 0)
        return 4;
    if (ks_epoch_barrier() != 0)
        return 5;
    if (__atomic_load_n(&fk_freed, __ATOMIC_RELAXED) != 2 + thread_first)
        return 6;
    if (thread_first) {
        /* The forking thread and a new thread of the child do not share a
         * record: while we are inside, the other's object is not freed. */
        pthread_t t;
        int ok = 0;
        ks_epoch_enter();
        if (pthread_create(&t, NULL, fk_child_retire, &ok) != 0)
            return 7;
        pthread_join(t, NULL);
        if (!ok)
            return 8;
        ks_epoch_flush();
        if (__atomic_load_n(&fk_freed, __ATOMIC_RELAXED) != 3)
            return 9; /* freed under our section */
        ks_epoch_exit();
        if (ks_epoch_barrier() != 0 || __atomic_load_n(&fk_freed, __ATOMIC_RELAXED) != 4)
            return 10;
    }
    return 0;
}

static void run_fork_with_vanished_reader(int thread_first)
{
    for (int k = 0; k < KT_FORK_KINDS; k++) {
        __atomic_store_n(&fk_hold, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&fk_inside, 0, __ATOMIC_RELAXED);
        pthread_t t;
        kt_spawn(&t, fk_reader, NULL);
        while (!__atomic_load_n(&fk_inside, __ATOMIC_ACQUIRE))
            sched_yield();
        if (!thread_first) {
            cr_assert_eq(ks_epoch_enter(), 0); /* the forking thread has a record */
            cr_assert_eq(ks_epoch_exit(), 0);
        }
        int arg = thread_first;
        pid_t pid = kt_fork_as((enum kt_fork_kind)k, fk_child, &arg);
        kt_wait_child_named(pid, kt_fork_names[k]);
        __atomic_store_n(&fk_hold, 0, __ATOMIC_RELEASE);
        kt_join(t);
        cr_assert_eq(ks_epoch_barrier(), 0); /* the parent is unaffected */
    }
}

Test(epoch, fork_child_reclaims_although_a_reader_of_the_parent_vanished_inside, .timeout = 120)
{
    run_fork_with_vanished_reader(0);
}

Test(epoch, fork_child_whose_new_thread_calls_first_reclaims_too, .timeout = 120)
{
    run_fork_with_vanished_reader(1);
}

/* ---- a leave inside the thread's own leave ------------------------------------------ */

/* T's exit hook leaves; its flush runs a retire function that enters and
 * exits a section.  The end of that section must not leave again from
 * inside the first leave: a nested leave released T's record, another
 * thread (U) claimed it, and the outer leave then marked it free under U,
 * so a third thread (V) shared it and V's exit ended U's section behind
 * its back: a grace period then passed with U still reading. */
static struct {
    int inner_done; /* atomic: the retire function ended its section */
    int u_inside;   /* atomic: U is in its section */
    int u_release;  /* atomic: U may leave its section */
    int x_done;     /* atomic: X's barrier returned */
    int retired;    /* atomic: T retired its object */
    int advanced;   /* atomic: main moved the epoch on; T may exit */
    long freed;
} nl;

static void nested_leave_fn(struct ks_epoch_node *n)
{
    obj_free(n);
    ks_epoch_enter();
    ks_epoch_exit(); /* the thread is exiting: this used to leave */
    __atomic_store_n(&nl.inner_done, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&nl.u_inside, __ATOMIC_ACQUIRE))
        sched_yield();
}

static void *nl_t(void *p)
{
    (void)p;
    ks_epoch_enter();
    ks_epoch_exit();
    ks_epoch_retire(&obj_new(1, &nl.freed)->rcu, nested_leave_fn);
    __atomic_store_n(&nl.retired, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&nl.advanced, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100000);
    return NULL; /* the exit hook's leave runs nested_leave_fn: the bag is old enough */
}

static void *nl_u(void *p)
{
    (void)p;
    ks_epoch_enter();
    __atomic_store_n(&nl.u_inside, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&nl.u_release, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100000);
    ks_epoch_exit();
    ks_epoch_leave();
    return NULL;
}

static void *nl_v(void *p)
{
    (void)p;
    ks_epoch_enter();
    ks_epoch_exit();
    return NULL; /* its exit hook leaves */
}

static void *nl_x(void *p)
{
    (void)p;
    long freed = 0;
    ks_epoch_retire(&obj_new(2, &freed)->rcu, obj_free);
    ks_epoch_barrier();
    __atomic_store_n(&nl.x_done, 1, __ATOMIC_RELEASE);
    ks_epoch_leave();
    return NULL;
}

Test(epoch, a_section_ended_inside_the_exit_hooks_leave_does_not_release_the_record, .timeout = 60)
{
    pthread_t t, u, v, x;
    /* T retires; the barrier below (main has no record) makes T's bag old
     * enough that T's own exit-time flush runs its function. */
    kt_spawn(&t, nl_t, NULL);
    int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
    while (!__atomic_load_n(&nl.retired, __ATOMIC_ACQUIRE) && ks_now() < end)
        kt_sleep_ns(100000);
    cr_assert(__atomic_load_n(&nl.retired, __ATOMIC_ACQUIRE), "T did not retire");
    cr_assert_eq(ks_epoch_barrier(), 0); /* T's bag is its own: not run here */
    cr_assert_eq(__atomic_load_n(&nl.inner_done, __ATOMIC_ACQUIRE), 0);
    __atomic_store_n(&nl.advanced, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&nl.inner_done, __ATOMIC_ACQUIRE) && ks_now() < end)
        kt_sleep_ns(100000);
    cr_assert(__atomic_load_n(&nl.inner_done, __ATOMIC_ACQUIRE), "T's exit did not run its retire function");
    kt_spawn(&u, nl_u, NULL); /* claims a record while T's leave is still running */
    kt_join(t);
    kt_spawn(&v, nl_v, NULL);
    kt_join(v);
    /* U is still in its section: a grace period cannot end. */
    kt_spawn(&x, nl_x, NULL);
    kt_sleep_ns(200 * KT_MS);
    cr_assert_not(__atomic_load_n(&nl.x_done, __ATOMIC_ACQUIRE),
                  "a grace period ended while U was inside its section (its record was shared)");
    __atomic_store_n(&nl.u_release, 1, __ATOMIC_RELEASE);
    kt_join(u);
    kt_join(x);
    cr_assert(__atomic_load_n(&nl.x_done, __ATOMIC_ACQUIRE));
    cr_assert_eq(nl.freed, 1);
}

/* No ksync call is a cancellation point.  A barrier that waits for a reader
 * naps between its looks; the naps were nanosleep, a cancellation point, so
 * a cancel pending in the barrier's thread acted inside the barrier (and
 * inside a retire that waits at KS_EPOCH_MAX).  Here a reader stays in its
 * section for 50 ms while a thread with a cancel pending (deferred) calls
 * ks_epoch_barrier: the barrier returns 0, and the cancel acts at the
 * thread's own pthread_testcancel() afterwards. */
struct nap_reader {
    int in;
};

static void *nap_reader_main(void *p)
{
    struct nap_reader *r = p;
    cr_assert_eq(ks_epoch_enter(), 0);
    __atomic_store_n(&r->in, 1, __ATOMIC_RELEASE); /* release: the test waits for it */
    kt_sleep_ns(50 * KT_MS);
    cr_assert_eq(ks_epoch_exit(), 0);
    return NULL;
}

static void nap_barrier_calls(void *p)
{
    (void)p;
    cr_assert_eq(pthread_cancel(pthread_self()), 0); /* pending: deferred, enabled */
    cr_assert_eq(ks_epoch_barrier(), 0);
}

Test(epoch, a_barrier_that_waits_for_a_reader_is_not_a_cancellation_point, .timeout = 30)
{
    struct nap_reader r = {0};
    pthread_t rt;
    kt_spawn(&rt, nap_reader_main, &r);
    while (!__atomic_load_n(&r.in, __ATOMIC_ACQUIRE)) /* acquire: see the reader */
        kt_sleep_ns(KT_MS);
    cr_assert(kt_returned_then_cancelled(nap_barrier_calls, NULL), "the pending cancel acted inside ks_epoch_barrier");
    kt_join(rt);
}

/* Functions ksync runs for the caller run with cancellation disabled
 * (docs/conventions.md).  A retire function that reached a cancellation
 * point (here pthread_testcancel; a review's reproducer used close() of a
 * descriptor its object owned) while a barrier ran it from the orphan list
 * unwound the thread with the orphan counted as busy, and every later
 * barrier in the process waited for it forever.  Here a thread retires an
 * object whose function calls pthread_testcancel, then, with a cancel
 * pending, calls the barrier that runs it: the function runs to its end,
 * the barrier returns, the cancel acts at the thread's own
 * pthread_testcancel(), and a later barrier returns too. */
static int cb_nocancel_ran;

static void cb_testcancel(struct ks_epoch_node *n)
{
    pthread_testcancel(); /* a cancellation point, in the caller's thread */
    __atomic_add_fetch(&cb_nocancel_ran, 1, __ATOMIC_RELAXED); /* read after the joins */
    free(n);
}

static void cb_nocancel_calls(void *p)
{
    (void)p;
    struct ks_epoch_node *n = calloc(1, sizeof *n);
    cr_assert_not_null(n);
    cr_assert_eq(ks_epoch_retire(n, cb_testcancel), 0);
    cr_assert_eq(pthread_cancel(pthread_self()), 0); /* pending: deferred, enabled */
    cr_assert_eq(ks_epoch_barrier(), 0); /* runs the function here */
}

Test(epoch, a_retire_function_runs_with_cancellation_disabled, .timeout = 30)
{
    cr_assert(kt_returned_then_cancelled(cb_nocancel_calls, NULL),
              "a pending cancel acted inside the retire function run by ks_epoch_barrier");
    cr_assert_eq(__atomic_load_n(&cb_nocancel_ran, __ATOMIC_RELAXED), 1);
    cr_assert_eq(ks_epoch_barrier(), 0, "a later barrier");
}
