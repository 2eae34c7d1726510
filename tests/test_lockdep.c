/* tests/test_lockdep.c - lock-order checking (docs/lockdep.md).  Criterion
 * runs each test in a process of its own, so the checker's graph and mode
 * never leak from one test into the next.
 *
 * KSYNC_DEBUG: this file's ks_mutex fast paths call the library, so that
 * statically initialised mutexes are seen from their first acquisition
 * (the tests of ks_mutex_init'ed ones would pass without it). */
#define KSYNC_DEBUG 1
#include "helpers.h"

#include <fcntl.h>
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
    cr_assert(strstr(last, "(they are of one class)"), "%s", last);
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

/* ---- regressions from the review (docs/lockdep.md, "Review") ---- */

static void *lock_off_unlock_on(void *p)
{
    ks_mutex_t *a = p;
    ks_mutex_lock(a);
    ks_lockdep_set(KS_LOCKDEP_OFF);
    ks_mutex_unlock(a); /* not seen */
    ks_lockdep_set(KS_LOCKDEP_ON);
    ks_mutex_lock(a); /* not a relock: the list of before is stale */
    ks_mutex_unlock(a);
    ks_mutex_lock(a);
    ks_lockdep_set(KS_LOCKDEP_OFF);
    ks_mutex_unlock(a);
    ks_lockdep_set(KS_LOCKDEP_ON);
    return NULL; /* holds nothing at its exit */
}

Test(lockdep, switched_off_and_on_again_the_old_lists_are_dropped, .timeout = 30)
{
    static ks_mutex_t a;
    on();
    ks_mutex_init(&a, 0);
    pthread_t t;
    kt_spawn(&t, lock_off_unlock_on, &a);
    kt_join(t);
    cr_assert_eq(reports(), 0, "%s", last);
}

struct node {
    ks_mutex_t lock;
    long v;
};

static __attribute__((noinline)) struct node *make_node(void)
{
    struct node *n = malloc(sizeof *n);
    cr_assert_not_null(n);
    cr_assert_eq(ks_mutex_init(&n->lock, 0), 0); /* one site: one class */
    return n;
}

/* Freed locks' pairs must not stick to their addresses: objects made again
 * at swapped addresses, always parent then child. */
Test(lockdep, memory_reused_after_destroy_is_a_new_lock, .timeout = 30)
{
    on();
    for (int round = 0; round < 4; round++) {
        struct node *parent = make_node(), *child = make_node();
        ks_mutex_lock(&parent->lock);
        ks_mutex_lock(&child->lock);
        ks_mutex_unlock(&child->lock);
        ks_mutex_unlock(&parent->lock);
        cr_assert_eq(ks_mutex_destroy(&parent->lock), 0);
        cr_assert_eq(ks_mutex_destroy(&child->lock), 0);
        /* freed parent first: the next malloc gets the child's block */
        free(parent);
        free(child);
    }
    cr_assert_eq(reports(), 0, "%s", last);
}

/* The same for a lock never initialised (a class of its own): a pool slot
 * that holds a lock taken before q, destroyed, then one taken after q. */
Test(lockdep, a_static_lock_destroyed_and_reused_is_a_new_class, .timeout = 30)
{
    static struct node slot;
    static ks_mutex_t q;
    on();
    ks_mutex_lock(&slot.lock);
    ks_mutex_lock(&q);
    ks_mutex_unlock(&q);
    ks_mutex_unlock(&slot.lock);
    cr_assert_eq(ks_mutex_destroy(&slot.lock), 0);
    memset(&slot, 0, sizeof slot);
    ks_mutex_lock(&q);
    ks_mutex_lock(&slot.lock);
    ks_mutex_unlock(&slot.lock);
    ks_mutex_unlock(&q);
    cr_assert_eq(reports(), 0, "%s", last);
}

static __attribute__((noinline)) void make_account(ks_mutex_t *m)
{
    cr_assert_eq(ks_mutex_init(m, 0), 0);
}

Test(lockdep, a_nest_annotation_ends_with_its_lock, .timeout = 30)
{
    static ks_mutex_t acct[3];
    on();
    cr_assert_eq(ks_mutex_init(&acct[1], 0), 0);
    cr_assert_eq(ks_lock_nest(&acct[1], 1), 0);
    ks_mutex_lock(&acct[1]);
    ks_mutex_unlock(&acct[1]);
    cr_assert_eq(ks_mutex_destroy(&acct[1]), 0);
    for (int i = 0; i < 3; i++)
        make_account(&acct[i]);
    cr_assert_eq(ks_mutex_lock2(&acct[0], &acct[1]), 0);
    ks_mutex_unlock2(&acct[0], &acct[1]);
    ks_mutex_lock(&acct[1]); /* address order by hand, as lock2 */
    ks_mutex_lock(&acct[2]);
    ks_mutex_unlock(&acct[2]);
    ks_mutex_unlock(&acct[1]);
    cr_assert_eq(reports(), 0, "%s", last);
}

/* The usual fork-safety idiom, registered before the checker: a prepare
 * handler that takes a lock (the checker's own prepare handler runs
 * first and holds its lock across the fork). */
static ks_mutex_t forklock;
static void prep(void)
{
    ks_mutex_lock(&forklock);
}
static void rel(void)
{
    ks_mutex_unlock(&forklock);
}

Test(lockdep, fork_with_a_prepare_handler_that_locks, .timeout = 30)
{
    cr_assert_eq(pthread_atfork(prep, rel, rel), 0);
    on();
    cr_assert_eq(ks_mutex_init(&forklock, 0), 0);
    for (int i = 0; i < 3; i++) {
        pid_t p = fork();
        cr_assert_geq(p, 0);
        if (p == 0)
            _exit(ks_mutex_trylock(&forklock) == 0 ? 0 : 1); /* the child's copy was released */
        int st;
        cr_assert_eq(waitpid(p, &st, 0), p);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
    }
    cr_assert_eq(reports(), 0, "%s", last);
}

/* A report is not written with stdio: the thread that reports holds A,
 * while another holds stderr's FILE lock and waits for A. */
static ks_mutex_t sa, sb;
static void *log_then_lock(void *p)
{
    (void)p;
    flockfile(stderr);
    ks_mutex_lock(&sa);
    ks_mutex_unlock(&sa);
    funlockfile(stderr);
    return NULL;
}

Test(lockdep, a_report_does_not_wait_for_stderr, .timeout = 30)
{
    ks_lockdep_handler(NULL, NULL);
    cr_assert_eq(ks_lockdep_set(KS_LOCKDEP_ON), KS_LOCKDEP_OFF);
    int devnull = open("/dev/null", O_WRONLY);
    cr_assert_geq(devnull, 0);
    cr_assert_geq(dup2(devnull, 2), 0); /* the report goes nowhere; stderr's FILE lock is what matters */
    ks_mutex_init(&sa, 0);
    ks_mutex_init(&sb, 0);
    ks_mutex_lock(&sb);
    ks_mutex_lock(&sa);
    ks_mutex_unlock(&sa);
    ks_mutex_unlock(&sb);
    ks_mutex_lock(&sa);
    pthread_t t;
    kt_spawn(&t, log_then_lock, NULL);
    kt_sleep_ns(50 * KT_MS); /* the other thread takes stderr's lock and waits for sa */
    ks_mutex_lock(&sb); /* reported: sa -> sb after sb -> sa */
    ks_mutex_unlock(&sb);
    ks_mutex_unlock(&sa);
    kt_join(t);
    cr_assert_eq(ks_lockdep_count(KS_LOCKDEP_CYCLE), 1u);
}

/* A lock a thread releases in its own pthread key destructor is not held
 * at its exit, whichever destructor runs first. */
static ks_mutex_t own;
static pthread_key_t own_key;
static void release_own(void *p)
{
    ks_mutex_unlock(p);
}
static void *hold_until_exit(void *p)
{
    (void)p;
    ks_mutex_lock(&own);
    pthread_setspecific(own_key, &own);
    return NULL;
}

Test(lockdep, a_lock_released_by_a_key_destructor_is_not_held_at_exit, .timeout = 30)
{
    on();
    ks_mutex_init(&own, 0);
    ks_mutex_lock(&own); /* the checker's exit key is made here, before the program's */
    ks_mutex_unlock(&own);
    cr_assert_eq(pthread_key_create(&own_key, release_own), 0);
    pthread_t t;
    kt_spawn(&t, hold_until_exit, NULL);
    kt_join(t);
    cr_assert_eq(ks_mutex_trylock(&own), 0, "the destructor released it");
    ks_mutex_unlock(&own);
    cr_assert_eq(reports(), 0, "%s", last);
}

/* Pairs of one class fill their own table: the orders between classes
 * are still checked. */
Test(lockdep, many_pairs_do_not_stop_the_class_orders, .timeout = 60)
{
    enum { N = 400 };
    static ks_mutex_t acct[N], a, b;
    on();
    for (int i = 0; i < N; i++)
        make_account(&acct[i]);
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            ks_mutex_lock(&acct[i]);
            ks_mutex_lock(&acct[j]);
            ks_mutex_unlock(&acct[j]);
            ks_mutex_unlock(&acct[i]);
        }
    cr_assert_eq(reports(), 0, "%s", last);
    in_thread(&a, &b);
    in_thread(&b, &a);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1);
}

/* _Fork() runs no fork handler: a child made while another thread holds
 * the checker's lock still checks (its first taker frees the lock). */
extern pid_t _Fork(void);
static int stop_resets;
static void *reset_forever(void *p)
{
    (void)p;
    while (!__atomic_load_n(&stop_resets, __ATOMIC_RELAXED)) /* a flag: orders nothing */
        ks_lockdep_reset();
    return NULL;
}

Test(lockdep, a_Fork_child_does_not_inherit_the_checkers_lock, .timeout = 60)
{
    static ks_mutex_t m;
    on();
    pthread_t t;
    kt_spawn(&t, reset_forever, NULL);
    kt_sleep_ns(10 * KT_MS);
    for (int i = 0; i < 20; i++) {
        pid_t p = _Fork();
        cr_assert_geq(p, 0);
        if (p == 0) {
            ks_mutex_init(&m, 0);
            ks_mutex_lock(&m);
            ks_mutex_unlock(&m);
            _exit(0);
        }
        int st;
        cr_assert_eq(waitpid(p, &st, 0), p, "a child hung"); /* the test's timeout catches a hang */
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
    }
    __atomic_store_n(&stop_resets, 1, __ATOMIC_RELAXED);
    kt_join(t);
}

/* ks_mutex_lock2 takes its two locks in address order: silent whatever
 * their classes; a plain acquisition in the opposite order of one of its
 * pairs is reported. */
static __attribute__((noinline)) void make_checking(ks_mutex_t *m)
{
    cr_assert_eq(ks_mutex_init(m, 0), 0);
}
static __attribute__((noinline)) void make_savings(ks_mutex_t *m)
{
    cr_assert_eq(ks_mutex_init(m, 0), 0);
}

Test(lockdep, lock2_between_two_classes_is_silent, .timeout = 30)
{
    static ks_mutex_t acct[4]; /* 0, 2: checking; 1, 3: savings */
    on();
    make_checking(&acct[0]);
    make_savings(&acct[1]);
    make_checking(&acct[2]);
    make_savings(&acct[3]);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            cr_assert_eq(ks_mutex_lock2(&acct[i], &acct[j]), 0);
            ks_mutex_unlock2(&acct[i], &acct[j]);
        }
    cr_assert_eq(reports(), 0, "%s", last);
    /* by hand, opposite to lock2's order for this pair: reported */
    in_thread(&acct[1], &acct[0]);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1, "%s", last);
    cr_assert(strstr(last, "ks_mutex_lock2"), "%s", last);
}

Test(lockdep, reports_go_to_the_file_also_when_switched_on_by_the_program, .timeout = 30)
{
    char path[] = "/tmp/ksync-lockdep-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(setenv("KSYNC_LOCKDEP_FILE", path, 1), 0);
    cr_assert_eq(ks_lockdep_set(KS_LOCKDEP_ON), KS_LOCKDEP_OFF);
    static ks_mutex_t a, b;
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    in_thread(&a, &b);
    in_thread(&b, &a);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[256] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    unlink(path);
    cr_assert(strstr(line, "lock order inversion"), "%s", line);
}

/* ---- the watchdog ---- */

struct ab {
    ks_mutex_t *first, *second;
    int64_t hold_ns;
    int result;
};

static void *take_and_wait(void *p)
{
    struct ab *x = p;
    ks_mutex_lock(x->first);
    kt_sleep_ns(x->hold_ns);
    /* a real deadlock, bounded: the timed lock gives up after a second */
    x->result = ks_mutex_timedlock(x->second, ks_deadline_after(KS_NSEC_PER_SEC));
    if (!x->result)
        ks_mutex_unlock(x->second);
    ks_mutex_unlock(x->first);
    return NULL;
}

Test(lockdep, the_watchdog_reports_a_real_deadlock_with_both_threads, .timeout = 60)
{
    static ks_mutex_t a, b;
    on();
    cr_assert_eq(ks_lockdep_watchdog(100), 0);
    ks_mutex_init(&a, 0);
    ks_mutex_init(&b, 0);
    ks_lock_name(&a, "wd_a");
    ks_lock_name(&b, "wd_b");
    struct ab x = {&a, &b, 50 * KT_MS, -1}, y = {&b, &a, 50 * KT_MS, -1};
    pthread_t t1, t2;
    kt_spawn(&t1, take_and_wait, &x);
    kt_spawn(&t2, take_and_wait, &y);
    kt_join(t1);
    kt_join(t2);
    cr_assert(x.result == ETIMEDOUT || y.result == ETIMEDOUT, "they did meet: %d %d", x.result, y.result);
    cr_assert_eq(seen[KS_LOCKDEP_DEADLOCK], 1, "%s", last);
    cr_assert(strstr(last, "wd_a") && strstr(last, "wd_b"), "%s", last);
    cr_assert(strstr(last, "none of these threads can go on"), "%s", last);
    cr_assert_eq(seen[KS_LOCKDEP_CYCLE], 1, "and the inversion, before it: %s", last);
    cr_assert_eq(ks_lockdep_watchdog(0), 0);
}

static void *hold_long(void *p)
{
    ks_mutex_lock(p);
    kt_sleep_ns(600 * KT_MS);
    ks_mutex_unlock(p);
    return NULL;
}

Test(lockdep, the_watchdog_names_the_holder_of_a_long_wait, .timeout = 60)
{
    static ks_mutex_t m;
    on();
    cr_assert_eq(ks_lockdep_watchdog(150), 0);
    ks_mutex_init(&m, 0);
    ks_lock_name(&m, "wd_long");
    pthread_t t;
    kt_spawn(&t, hold_long, &m);
    kt_sleep_ns(50 * KT_MS);
    cr_assert_eq(ks_mutex_lock(&m), 0); /* waits ~550 ms */
    ks_mutex_unlock(&m);
    kt_join(t);
    cr_assert_eq(seen[KS_LOCKDEP_BLOCKED], 1, "one report for one wait: %s", last);
    cr_assert(strstr(last, "wd_long") && strstr(last, "is not waiting for a ksync lock"), "%s", last);
    char holder[32];
    snprintf(holder, sizeof holder, "held by thread ");
    cr_assert(strstr(last, holder), "%s", last);
    cr_assert_eq(reports(), 1);
    cr_assert_eq(ks_lockdep_watchdog(0), 0);
}

static void *hammer_lock(void *p)
{
    for (int i = 0; i < 20000; i++) {
        ks_mutex_lock(p);
        ks_mutex_unlock(p);
    }
    return NULL;
}

Test(lockdep, the_watchdog_is_silent_for_short_waits_and_careless_calls, .timeout = 60)
{
    static ks_mutex_t m;
    on();
    cr_assert_eq(ks_lockdep_watchdog(-1), EINVAL);
    cr_assert_eq(ks_lockdep_watchdog(0), 0, "stopping what does not run");
    cr_assert_eq(ks_lockdep_watchdog(500), 0);
    cr_assert_eq(ks_lockdep_watchdog(400), 0, "a new threshold");
    ks_mutex_init(&m, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        kt_spawn(&t[i], hammer_lock, &m);
    for (int i = 0; i < 4; i++)
        kt_join(t[i]);
    cr_assert_eq(reports(), 0, "%s", last);
    cr_assert_eq(ks_lockdep_watchdog(0), 0);
    cr_assert_eq(ks_lockdep_watchdog(0), 0);
}

/* No ksync call is a cancellation point (docs/conventions.md).  Stopping the
 * watchdog joins its thread, a cancellation point, while the watchdog's
 * set-up lock is held: a cancel pending in the caller acted there and left
 * that lock held, and the next ks_lockdep_watchdog call hung.  Now the call
 * returns, the cancel acts at the caller's own pthread_testcancel(), and
 * the watchdog starts and stops again. */
static void wd_nocancel_calls(void *p)
{
    (void)p;
    cr_assert_eq(ks_lockdep_watchdog(100), 0);
    cr_assert_eq(pthread_cancel(pthread_self()), 0); /* pending: deferred, enabled */
    cr_assert_eq(ks_lockdep_watchdog(0), 0);
}

Test(lockdep, the_watchdog_switch_is_not_a_cancellation_point, .timeout = 30)
{
    cr_assert(kt_returned_then_cancelled(wd_nocancel_calls, NULL),
              "a pending cancel acted inside ks_lockdep_watchdog(0)");
    cr_assert_eq(ks_lockdep_watchdog(100), 0, "the watchdog after a cancelled caller");
    cr_assert_eq(ks_lockdep_watchdog(0), 0);
}

/* The same for switching the checker on with KSYNC_LOCKDEP_FILE set: the
 * first ks_lockdep_set opens the file under the checker's graph lock (a
 * review's reproducer was cancelled there, and the next ks_lockdep_reset
 * hung). */
static void set_nocancel_calls(void *p)
{
    (void)p;
    cr_assert_eq(pthread_cancel(pthread_self()), 0); /* pending: deferred, enabled */
    cr_assert_geq(ks_lockdep_set(KS_LOCKDEP_ON), 0);
}

Test(lockdep, switching_on_with_a_report_file_is_not_a_cancellation_point, .timeout = 30)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/ksync-test-lockdep-nocancel-%d", (int)getpid());
    cr_assert_eq(setenv("KSYNC_LOCKDEP_FILE", path, 1), 0); /* this test's process only */
    const int ok = kt_returned_then_cancelled(set_nocancel_calls, NULL);
    unlink(path);
    cr_assert(ok, "a pending cancel acted inside ks_lockdep_set");
    ks_lockdep_reset(); /* takes the graph lock */
    cr_assert_eq(ks_lockdep_set(KS_LOCKDEP_OFF), KS_LOCKDEP_ON);
}
