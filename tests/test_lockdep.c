/* tests/test_lockdep.c - lock-order checking (docs/lockdep.md).  Criterion
 * runs each test in a process of its own, so the checker's graph and mode
 * never leak from one test into the next.
 *
 * KSYNC_DEBUG: this file's ks_mutex fast paths call the library, so that
 * statically initialised mutexes are seen from their first acquisition
 * (the tests of ks_mutex_init'ed ones would pass without it). */
#define KSYNC_DEBUG 1
#include "helpers.h"

#include <string.h>

/* Every report, kept by the handler: text of the last one, count per event. */
static char last[16384];
static int seen[KS_LOCKDEP_EVENTS];

static void keep(int event, const char *report, void *arg)
{
    (void)arg;
    cr_assert(event > 0 && event < KS_LOCKDEP_EVENTS);
    __atomic_fetch_add(&seen[event], 1, __ATOMIC_RELAXED);
    snprintf(last, sizeof last, "%s", report);
}

static void on(void)
{
    ks_lockdep_handler(keep, NULL);
    cr_assert_eq(ks_lockdep_set(KS_LOCKDEP_ON), KS_LOCKDEP_OFF);
    cr_assert_eq(ks_lockdep_mode(), KS_LOCKDEP_ON);
}

static int reports(void)
{
    int n = 0;
    for (int e = 1; e < KS_LOCKDEP_EVENTS; e++)
        n += __atomic_load_n(&seen[e], __ATOMIC_RELAXED);
    cr_assert_eq((uint64_t)n, ks_lockdep_count(0), "the handler saw every report");
    return n;
}

struct two {
    ks_mutex_t *first, *second;
};

static void *take_two(void *p)
{
    struct two *t = p;
    cr_assert_eq(ks_mutex_lock(t->first), 0);
    cr_assert_eq(ks_mutex_lock(t->second), 0);
    cr_assert_eq(ks_mutex_unlock(t->second), 0);
    cr_assert_eq(ks_mutex_unlock(t->first), 0);
    return NULL;
}

static void in_thread(ks_mutex_t *first, ks_mutex_t *second)
{
    struct two t = {first, second};
    kt_join(({ pthread_t th; kt_spawn(&th, take_two, &t); th; }));
}

/* The course's antipattern (S16): fonction_1 takes a then b, fonction_2 b
 * then a.  Run one after the other they never deadlock, and the inversion
 * is still reported, once, naming both locks and both orders. */
Test(lockdep, abba_is_reported_in_a_run_that_does_not_deadlock, .timeout = 30)
{
    static ks_mutex_t a, b;
    cr_assert_eq(ks_mutex_init(&a, 0), 0);
    cr_assert_eq(ks_mutex_init(&b, 0), 0);
    on();
    cr_assert_eq(ks_lock_name(&a, "lock_a"), 0);
    cr_assert_eq(ks_lock_name(&b, "lock_b"), 0);
    in_thread(&a, &b);
    cr_assert_eq(reports(), 0, "one order alone is no deadlock");
    in_thread(&b, &a);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
    cr_assert_eq(reports(), 1);
    cr_assert(strstr(last, "lock order inversion"), "%s", last);
    cr_assert(strstr(last, "it holds") && strstr(last, "(lock_b)"), "%s", last);
    cr_assert(strstr(last, "about to wait for") && strstr(last, "(lock_a)"), "%s", last);
    cr_assert(strstr(last, "lock_a -> lock_b: first seen in thread"), "%s", last);
    cr_assert(strstr(last, "cycle: lock_b -> lock_a -> lock_b"), "%s", last);
    /* a stack for each order: the current one and the recorded one */
    char *first = strstr(last, "#0 "), *second = first ? strstr(first + 1, "#0 ") : NULL;
    cr_assert(first && second, "%s", last);
    /* again: the inversion was reported, and is not reported twice */
    in_thread(&b, &a);
    in_thread(&a, &b);
    cr_assert_eq(reports(), 1);
}

/* A longer cycle: a -> b, b -> c, then c -> a closes it (two steps back). */
Test(lockdep, a_three_lock_cycle_is_reported_with_its_path, .timeout = 30)
{
    static ks_mutex_t a, b, c;
    on();
    cr_assert_eq(ks_mutex_init(&a, 0), 0);
    cr_assert_eq(ks_mutex_init(&b, 0), 0);
    cr_assert_eq(ks_mutex_init(&c, 0), 0);
    ks_lock_name(&a, "A");
    ks_lock_name(&b, "B");
    ks_lock_name(&c, "C");
    in_thread(&a, &b);
    in_thread(&b, &c);
    in_thread(&a, &c); /* consistent with the others */
    cr_assert_eq(reports(), 0);
    in_thread(&c, &a);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
    cr_assert(strstr(last, "C -> A -> "), "%s", last);
    cr_assert(strstr(last, "A -> C: first seen") || (strstr(last, "A -> B: first seen") && strstr(last, "B -> C: first seen")),
              "%s", last);
}

/* The same three taken as a -> b -> c in one thread: no report, and the
 * orders are recorded between every held lock and the new one. */
Test(lockdep, nested_in_one_order_is_silent, .timeout = 30)
{
    static ks_mutex_t a, b, c;
    on();
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    ks_mutex_init(&c, 0);
    for (int i = 0; i < 3; i++) {
        ks_mutex_lock(&a);
        ks_mutex_lock(&b);
        ks_mutex_lock(&c);
        ks_mutex_unlock(&c);
        ks_mutex_unlock(&b);
        ks_mutex_unlock(&a);
    }
    cr_assert_eq(reports(), 0);
    in_thread(&c, &a); /* a -> c was recorded directly, b in between or not */
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
}

/* A trylock cannot wait, so it adds no order towards its lock: a held,
 * trylock b, then b held, lock a is no deadlock. */
Test(lockdep, trylock_adds_no_order_towards_its_lock, .timeout = 30)
{
    static ks_mutex_t a, b;
    on();
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    cr_assert_eq(ks_mutex_lock(&a), 0);
    cr_assert_eq(ks_mutex_trylock(&b), 0);
    cr_assert_eq(ks_mutex_unlock(&b), 0);
    cr_assert_eq(ks_mutex_unlock(&a), 0);
    in_thread(&b, &a);
    cr_assert_eq(reports(), 0);
}

/* ... but locks taken while a trylocked lock is held are ordered after it. */
Test(lockdep, locks_taken_under_a_trylock_are_ordered_after_it, .timeout = 30)
{
    static ks_mutex_t a, b;
    on();
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    cr_assert_eq(ks_mutex_trylock(&a), 0);
    cr_assert_eq(ks_mutex_lock(&b), 0);
    ks_mutex_unlock(&b);
    ks_mutex_unlock(&a);
    in_thread(&b, &a);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
    cr_assert(strstr(last, "(trylock)") == NULL, "b is held by lock, not trylock: %s", last);
}

/* A timed lock waits, so it orders like a lock. */
Test(lockdep, timedlock_orders_like_lock, .timeout = 30)
{
    static ks_mutex_t a, b;
    on();
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    ks_mutex_lock(&a);
    cr_assert_eq(ks_mutex_timedlock(&b, ks_deadline_after(KS_NSEC_PER_SEC)), 0);
    ks_mutex_unlock(&b);
    ks_mutex_unlock(&a);
    in_thread(&b, &a);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
}

/* Accounts made at one init site share a class.  Two of them taken in
 * both orders (the course's transfer without ordering) are reported as
 * locks; taken in address order (ks_mutex_lock2) they are not. */
struct bank {
    ks_mutex_t acct[8];
    long balance[8];
    int ordered, rounds;
};

static void *transfers(void *p)
{
    struct bank *bk = p;
    unsigned r = (unsigned)(uintptr_t)&r;
    for (int i = 0; i < bk->rounds; i++) {
        r = r * 1103515245u + 12345u;
        int from = (int)((r >> 8) % 8), to = (int)((r >> 16) % 8);
        if (bk->ordered) {
            cr_assert_eq(ks_mutex_lock2(&bk->acct[from], &bk->acct[to]), 0);
        } else {
            if (from == to)
                continue;
            /* timed: the unordered version may really deadlock */
            cr_assert_eq(ks_mutex_lock(&bk->acct[from]), 0);
            if (ks_mutex_timedlock(&bk->acct[to], ks_deadline_after(KT_MS))) {
                ks_mutex_unlock(&bk->acct[from]);
                continue;
            }
        }
        bk->balance[from] -= 3;
        bk->balance[to] += 3;
        cr_assert_eq(ks_mutex_unlock2(&bk->acct[from], &bk->acct[to]), 0);
    }
    return NULL;
}

static void run_bank(struct bank *bk, int threads)
{
    pthread_t t[16];
    for (int i = 0; i < threads; i++)
        kt_spawn(&t[i], transfers, bk);
    for (int i = 0; i < threads; i++)
        kt_join(t[i]);
    long total = 0;
    for (int i = 0; i < 8; i++)
        total += bk->balance[i];
    cr_assert_eq(total, 0, "money created or lost: %ld", total);
}

Test(lockdep, ordered_transfers_between_accounts_of_one_class_are_silent, .timeout = 60)
{
    static struct bank bk = {.ordered = 1, .rounds = 5000};
    on();
    for (int i = 0; i < 8; i++)
        cr_assert_eq(ks_mutex_init(&bk.acct[i], 0), 0);
    run_bank(&bk, 16);
    cr_assert_eq(reports(), 0, "%s", last);
}

Test(lockdep, ordered_transfers_between_static_accounts_are_silent, .timeout = 60)
{
    /* never initialised: each lock is a class of its own, and the address
     * order of lock2 must not look like two orders of two classes */
    static struct bank bk = {.ordered = 1, .rounds = 5000};
    on();
    run_bank(&bk, 16);
    cr_assert_eq(reports(), 0, "%s", last);
}

Test(lockdep, unordered_transfers_between_accounts_of_one_class_are_reported, .timeout = 60)
{
    static struct bank bk = {.ordered = 0, .rounds = 2000};
    on();
    for (int i = 0; i < 8; i++)
        cr_assert_eq(ks_mutex_init(&bk.acct[i], 0), 0);
    run_bank(&bk, 4);
    cr_assert_geq(seen[KS_LOCKDEP_CYCLE], 1);
    cr_assert_eq(reports(), seen[KS_LOCKDEP_CYCLE]);
    cr_assert(strstr(last, "the two locks are of one class"), "%s", last);
}

/* Same class across a lock of another class: parent P (class C), then L
 * (class D), then child Q (class C) gives C -> D and D -> C, a cycle of
 * classes that no two threads can close if parents always come before
 * children.  ks_lock_nest tells the checker so. */
static void parent_then_child(ks_mutex_t *p, ks_mutex_t *l, ks_mutex_t *q)
{
    ks_mutex_lock(p);
    ks_mutex_lock(l);
    ks_mutex_lock(q);
    ks_mutex_unlock(q);
    ks_mutex_unlock(l);
    ks_mutex_unlock(p);
}

static void make_nodes(ks_mutex_t *n, int count)
{
    for (int i = 0; i < count; i++)
        cr_assert_eq(ks_mutex_init(&n[i], 0), 0); /* one site: one class */
}

Test(lockdep, one_class_on_both_sides_of_another_is_a_class_cycle, .timeout = 30)
{
    static ks_mutex_t node[2], list;
    on();
    make_nodes(node, 2);
    cr_assert_eq(ks_mutex_init(&list, 0), 0);
    parent_then_child(&node[0], &list, &node[1]);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1, "without the annotation the class graph has a cycle");
}

Test(lockdep, nest_annotation_separates_the_child, .timeout = 30)
{
    static ks_mutex_t node[2], list;
    on();
    make_nodes(node, 2);
    cr_assert_eq(ks_mutex_init(&list, 0), 0);
    cr_assert_eq(ks_lock_nest(&node[1], 1), 0);
    parent_then_child(&node[0], &list, &node[1]);
    parent_then_child(&node[0], &list, &node[1]);
    cr_assert_eq(reports(), 0, "%s", last);
    /* the other way round is still an inversion */
    in_thread(&node[1], &list);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
    cr_assert(strstr(last, "/1"), "the subclass is named: %s", last);
}

Test(lockdep, a_relock_by_the_holder_is_reported_before_it_waits, .timeout = 30)
{
    static ks_mutex_t m;
    on();
    ks_mutex_init(&m, 0);
    ks_lock_name(&m, "self");
    cr_assert_eq(ks_mutex_lock(&m), 0);
    cr_assert_eq(ks_mutex_timedlock(&m, ks_deadline_after(10 * KT_MS)), ETIMEDOUT);
    cr_assert_eq(seen[KS_LOCKDEP_RECURSION], 1);
    cr_assert(strstr(last, "locks it again") && strstr(last, "self"), "%s", last);
    cr_assert_eq(ks_mutex_trylock(&m), EBUSY, "a trylock of one's own lock cannot hang");
    cr_assert_eq(reports(), 1);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(reports(), 1, "the failed relock left nothing behind");
}

static void *lock_and_leave(void *p)
{
    cr_assert_eq(ks_mutex_lock(p), 0);
    return NULL;
}

Test(lockdep, unlocking_a_mutex_another_thread_took_is_reported, .timeout = 30)
{
    static ks_mutex_t m;
    on();
    ks_mutex_init(&m, 0);
    pthread_t t;
    kt_spawn(&t, lock_and_leave, &m);
    kt_join(t);
    cr_assert_eq(seen[KS_LOCKDEP_EXIT_HELD], 1, "the thread exited holding it");
    cr_assert(strstr(last, "exits holding"), "%s", last);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert_eq(seen[KS_LOCKDEP_NOT_HELD], 1);
    cr_assert(strstr(last, "which thread"), "%s", last);
    cr_assert_eq(reports(), 2);
}

/* one call site whatever the compiler does with the loop around it */
static __attribute__((noinline)) int unlock_here(ks_mutex_t *m)
{
    return ks_mutex_unlock(m);
}

Test(lockdep, unlocking_an_unlocked_mutex_is_reported_once_per_site, .timeout = 30)
{
    static ks_mutex_t m;
    on();
    ks_mutex_init(&m, 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(unlock_here(&m), EPERM);
    cr_assert_eq(seen[KS_LOCKDEP_UNLOCKED], 1, "%d: %s", seen[KS_LOCKDEP_UNLOCKED], last);
    cr_assert_eq(ks_mutex_unlock(&m), EPERM); /* another line */
    cr_assert_eq(seen[KS_LOCKDEP_UNLOCKED], 2);
}

Test(lockdep, destroying_a_held_mutex_is_reported, .timeout = 30)
{
    static ks_mutex_t m;
    on();
    ks_mutex_init(&m, 0);
    ks_mutex_lock(&m);
    cr_assert_eq(ks_mutex_destroy(&m), EBUSY);
    cr_assert_eq(seen[KS_LOCKDEP_DESTROY_HELD], 1);
    cr_assert(strstr(last, "which this thread holds"), "%s", last);
    ks_mutex_unlock(&m);
    cr_assert_eq(ks_mutex_destroy(&m), 0);
    cr_assert_eq(reports(), 1);
}

/* No limit on locks held at once (TSan's deadlock detector stops at 64). */
Test(lockdep, two_hundred_held_locks, .timeout = 60)
{
    enum { N = 200 };
    static ks_mutex_t m[N];
    on();
    for (int i = 0; i < N; i++) {
        ks_mutex_init(&m[i], 0);
        ks_lock_nest(&m[i], (unsigned)i); /* 200 classes */
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(ks_mutex_lock(&m[i]), 0);
    for (int i = N; i-- > 0;)
        cr_assert_eq(ks_mutex_unlock(&m[i]), 0);
    cr_assert_eq(reports(), 0);
    in_thread(&m[N - 1], &m[0]);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
}

/* A condition wait releases and retakes its mutex: no false order. */
struct pc {
    ks_mutex_t m, outer;
    ks_cond_t c;
    int items, done;
};

static void *consumer(void *p)
{
    struct pc *s = p;
    for (int got = 0; got < 1000;) {
        ks_mutex_lock(&s->m);
        while (!s->items)
            ks_cond_wait(&s->c, &s->m);
        s->items--;
        got++;
        ks_mutex_unlock(&s->m);
    }
    return NULL;
}

Test(lockdep, condition_waits_are_silent, .timeout = 60)
{
    static struct pc s;
    on();
    ks_mutex_init(&s.m, 0);
    ks_mutex_init(&s.outer, 0);
    ks_cond_init(&s.c, 0);
    pthread_t t;
    kt_spawn(&t, consumer, &s);
    for (int i = 0; i < 1000; i++) {
        ks_mutex_lock(&s.outer);
        ks_mutex_lock(&s.m);
        s.items++;
        ks_cond_broadcast(&s.c);
        ks_mutex_unlock(&s.m);
        ks_mutex_unlock(&s.outer);
    }
    kt_join(t);
    cr_assert_eq(reports(), 0, "%s", last);
}

/* A fork child does not hold the KS_SHARED mutex its parent holds: its
 * lock of it is a wait for another process, not for itself. */
static int child_locks_the_parents(void *p)
{
    ks_mutex_t *m = p;
    int e = ks_mutex_timedlock(m, ks_deadline_after(20 * KT_MS));
    if (e != ETIMEDOUT)
        return 1;
    return ks_lockdep_count(0) == 0 ? 0 : 2;
}

Test(lockdep, fork_children_do_not_hold_the_parents_shared_mutex, .timeout = 30)
{
    on();
    ks_mutex_t *m = kt_shared_alloc(sizeof *m);
    cr_assert_eq(ks_mutex_init(m, KS_SHARED), 0);
    cr_assert_eq(ks_mutex_lock(m), 0);
    for (int k = 0; k < KT_FORK_KINDS; k++)
        kt_wait_child_named(kt_fork_as((enum kt_fork_kind)k, child_locks_the_parents, m), kt_fork_names[k]);
    cr_assert_eq(ks_mutex_unlock(m), 0);
    cr_assert_eq(reports(), 0, "%s", last);
    kt_shared_free(m, sizeof *m);
}

static int abba_then_abort(void *p)
{
    (void)p;
    static ks_mutex_t a, b;
    ks_lockdep_handler(NULL, NULL);
    if (ks_lockdep_set(KS_LOCKDEP_ABORT) < 0)
        return 1;
    fclose(stderr); /* the report goes nowhere: the test reads the signal */
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    in_thread(&a, &b);
    in_thread(&b, &a);
    return 3; /* not reached */
}

Test(lockdep, abort_mode_stops_at_the_first_report, .timeout = 30)
{
    pid_t pid = kt_fork(abba_then_abort, NULL);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "status %#x", st);
}

Test(lockdep, off_reports_nothing, .timeout = 30)
{
    static ks_mutex_t a, b;
    ks_lockdep_handler(keep, NULL);
    cr_assert_eq(ks_lockdep_mode(), KS_LOCKDEP_OFF);
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    in_thread(&a, &b);
    in_thread(&b, &a);
    cr_assert_eq(ks_mutex_unlock(&a), EPERM);
    cr_assert_eq(reports(), 0);
    /* on, then off again: what happens while off is not checked */
    on();
    cr_assert_eq(ks_lockdep_set(KS_LOCKDEP_OFF), KS_LOCKDEP_ON);
    in_thread(&a, &b);
    in_thread(&b, &a);
    cr_assert_eq(reports(), 0);
}

Test(lockdep, careless_arguments, .timeout = 30)
{
    cr_assert_eq(ks_lockdep_set(3), -EINVAL);
    cr_assert_eq(ks_lockdep_set(-1), -EINVAL);
    cr_assert_eq(ks_lockdep_mode(), KS_LOCKDEP_OFF);
    cr_assert_eq(ks_lockdep_count(-1), 0u);
    cr_assert_eq(ks_lockdep_count(KS_LOCKDEP_EVENTS), 0u);
    cr_assert_eq(ks_lockdep_count(1000), 0u);
    cr_assert_eq(ks_lock_nest(NULL, 1), EINVAL);
    cr_assert_eq(ks_lockdep_set(KS_LOCKDEP_ABORT), KS_LOCKDEP_OFF);
    cr_assert_eq(ks_lockdep_mode(), KS_LOCKDEP_ABORT);
    cr_assert_eq(ks_lockdep_set(KS_LOCKDEP_ON), KS_LOCKDEP_ABORT);
    cr_assert_eq(ks_lockdep_set(KS_LOCKDEP_OFF), KS_LOCKDEP_ON);
    /* a nest annotation on something that is not a lock yet is kept for it */
    static ks_mutex_t later;
    cr_assert_eq(ks_lock_nest(&later, 7), 0);
}

Test(lockdep, reset_forgets_the_orders, .timeout = 30)
{
    static ks_mutex_t a, b;
    on();
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    in_thread(&a, &b);
    in_thread(&b, &a);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
    ks_lockdep_reset();
    in_thread(&b, &a); /* the only order now */
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
    in_thread(&a, &b);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 2, "reported again after the reset");
    ks_lockdep_reset();
    ks_lockdep_reset();
}
