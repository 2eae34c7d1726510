/* tests/test_robust.c - ks_robust: the API and every error code; owners
 * that die holding it (a thread that exits, a fork child killed or exiting,
 * with the other side already asleep in lock); deaths at the worst
 * instructions (hardware watchpoints kill the child right after the
 * acquiring CAS, right after the list insert, between the unlink and the
 * release, between the release and the wake); SIGKILL storms against a
 * shared invariant; two unrelated processes (this binary re-executed, the
 * segment shm_open'ed and mapped at another address); the list shared with
 * glibc's own robust mutexes.  docs/robust.md. */
#include "helpers.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <spawn.h>
#include <sys/stat.h>

extern char **environ;

#define TIDM KS_ROBUST_TID_MASK

static uint32_t word_of(ks_robust_t *m) { return __atomic_load_n(&m->word, __ATOMIC_RELAXED); }

/* glibc's robust-list head of the calling thread, as the kernel has it. */
static struct robust_list_head *my_head(void)
{
    struct robust_list_head *h = NULL;
    size_t len = 0;
    if (syscall(SYS_get_robust_list, 0, &h, &len) != 0)
        return NULL;
    return h;
}

/* Is node on the calling thread's list?  -1 if the list is malformed. */
static int on_my_list(const void *node)
{
    struct robust_list_head *h = my_head();
    struct robust_list *e = h->list.next;
    for (int n = 0; n < 1000; n++) {
        e = (struct robust_list *)((uintptr_t)e & ~(uintptr_t)1);
        if (e == &h->list)
            return 0;
        if ((const void *)e == node)
            return 1;
        e = e->next;
    }
    return -1;
}

static int my_list_is_empty(void)
{
    struct robust_list_head *h = my_head();
    return h->list.next == &h->list && h->list_op_pending == NULL;
}

static void kill_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    kt_reap(pid);
}

/* ---- API and error codes ------------------------------------------------------ */

Test(robust, layout_matches_glibc_robust_list)
{
    cr_assert_eq(sizeof(ks_robust_t), 40u);
    struct robust_list_head *h = my_head();
    cr_assert_not_null(h);
    cr_assert_eq(h->futex_offset, -32L, "glibc's futex_offset %ld", h->futex_offset);
    cr_assert(my_list_is_empty());
}

static ks_robust_t static_zero;

Test(robust, init_destroy_and_zero_initialised)
{
    ks_robust_t m;
    memset(&m, 0xa5, sizeof m);
    cr_assert_eq(ks_robust_init(&m, KS_PRIVATE), 0);
    cr_assert_eq(m.word, 0u);
    cr_assert_eq(m.flags, 0u);
    cr_assert_eq(ks_robust_init(&m, KS_SHARED), 0);
    cr_assert_eq(m.flags, KS_SHARED);
    cr_assert_eq(ks_robust_init(&m, 4), EINVAL);
    cr_assert_eq(m.flags, KS_SHARED, "a failed init changes nothing");
    cr_assert_eq(ks_robust_init(NULL, 0), EINVAL);

    ks_robust_t a = KS_ROBUST_INIT;
    ks_robust_t *heap = calloc(1, sizeof *heap);
    ks_robust_t *ms[] = {&m, &a, &static_zero, heap};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(ks_robust_lock(ms[i]), 0, "mutex %d", i);
        cr_assert_eq(word_of(ms[i]), (uint32_t)kt_gettid());
        cr_assert_eq(on_my_list(&ms[i]->next_), 1);
        cr_assert_eq(ks_robust_destroy(ms[i]), EBUSY);
        cr_assert_eq(ks_robust_unlock(ms[i]), 0);
        cr_assert_eq(word_of(ms[i]), 0u);
        cr_assert(my_list_is_empty());
        cr_assert_eq(ks_robust_trylock(ms[i]), 0);
        cr_assert_eq(ks_robust_unlock(ms[i]), 0);
        cr_assert_eq(ks_robust_timedlock(ms[i], ks_deadline_after(KT_MS)), 0);
        cr_assert_eq(ks_robust_unlock(ms[i]), 0);
        cr_assert_eq(ks_robust_destroy(ms[i]), 0);
        cr_assert_eq(ks_robust_destroy(ms[i]), 0);
    }
    free(heap);
}

Test(robust, error_codes_of_the_owner)
{
    ks_robust_t m = KS_ROBUST_INIT;
    cr_assert_eq(ks_robust_lock(NULL), EINVAL);
    cr_assert_eq(ks_robust_trylock(NULL), EINVAL);
    cr_assert_eq(ks_robust_timedlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_robust_unlock(NULL), EINVAL);
    cr_assert_eq(ks_robust_consistent(NULL), EINVAL);
    cr_assert_eq(ks_robust_destroy(NULL), EINVAL);
    cr_assert_eq(ks_robust_timedlock(&m, -1), EINVAL);
    cr_assert_eq(word_of(&m), 0u, "a negative deadline changes nothing");

    cr_assert_eq(ks_robust_unlock(&m), EPERM, "not locked");
    cr_assert_eq(ks_robust_consistent(&m), EINVAL, "not locked");
    cr_assert_eq(ks_robust_lock(&m), 0);
    cr_assert_eq(ks_robust_lock(&m), EDEADLK);
    cr_assert_eq(ks_robust_trylock(&m), EDEADLK);
    cr_assert_eq(ks_robust_timedlock(&m, ks_deadline_after(KT_MS)), EDEADLK);
    cr_assert_eq(ks_robust_timedlock(&m, 0), EDEADLK);
    cr_assert_eq(ks_robust_consistent(&m), EINVAL, "held but consistent");
    cr_assert_eq(word_of(&m), (uint32_t)kt_gettid(), "errors change nothing");
    cr_assert_eq(on_my_list(&m.next_), 1);
    cr_assert_eq(my_head()->list_op_pending, NULL, "no pending op left by an error");
    cr_assert_eq(ks_robust_unlock(&m), 0);
    cr_assert_eq(ks_robust_unlock(&m), EPERM);
    cr_assert(my_list_is_empty());
}

struct other {
    ks_robust_t *m;
    int trylock, timedlock, unlock, consistent, past;
    int64_t waited;
};

static void *other_thread(void *p)
{
    struct other *o = p;
    o->trylock = ks_robust_trylock(o->m);
    o->unlock = ks_robust_unlock(o->m);
    o->consistent = ks_robust_consistent(o->m);
    o->past = ks_robust_timedlock(o->m, 0);
    int64_t t0 = ks_now(), dl = t0 + 20 * KT_MS;
    o->timedlock = ks_robust_timedlock(o->m, dl);
    o->waited = ks_now() - dl;
    return NULL;
}

Test(robust, error_codes_of_another_thread)
{
    ks_robust_t m = KS_ROBUST_INIT;
    cr_assert_eq(ks_robust_lock(&m), 0);
    struct other o = {.m = &m};
    pthread_t t;
    kt_spawn(&t, other_thread, &o);
    kt_join(t);
    cr_assert_eq(o.trylock, EBUSY);
    cr_assert_eq(o.unlock, EPERM);
    cr_assert_eq(o.consistent, EINVAL);
    cr_assert_eq(o.past, ETIMEDOUT);
    cr_assert_eq(o.timedlock, ETIMEDOUT);
    cr_assert_geq(o.waited, 0, "timed out %lld ns early", (long long)-o.waited);
    cr_assert_lt(o.waited, KT_LATE_NS);
    /* the waiter left W behind: unlock takes the slow path and still works */
    cr_assert_eq(word_of(&m) & TIDM, (uint32_t)kt_gettid());
    cr_assert_eq(ks_robust_unlock(&m), 0);
    cr_assert_eq(word_of(&m), 0u);
    cr_assert(my_list_is_empty());
}

Test(robust, nested_mutexes_unlock_in_any_order)
{
    ks_robust_t m[4] = {KS_ROBUST_INIT, KS_ROBUST_INIT, KS_ROBUST_INIT, KS_ROBUST_INIT};
    static const int orders[][4] = {{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}, {2, 0, 3, 1}};
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 4; i++)
            cr_assert_eq(ks_robust_lock(&m[i]), 0);
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(ks_robust_unlock(&m[orders[k][i]]), 0);
            for (int j = 0; j < 4; j++) {
                int held = 0;
                for (int l = i + 1; l < 4; l++)
                    held |= orders[k][l] == j;
                cr_assert_eq(on_my_list(&m[j].next_), held, "order %d step %d mutex %d", k, i, j);
            }
        }
        cr_assert(my_list_is_empty());
    }
}

/* ---- mutual exclusion --------------------------------------------------------- */

struct counter {
    ks_robust_t m;
    long n;
    int bad;
};

static void *count_thread(void *p)
{
    struct counter *c = p;
    for (int i = 0; i < 20000; i++) {
        int e = (i & 7) == 0 ? ks_robust_trylock(&c->m) : ks_robust_lock(&c->m);
        if (e == EBUSY) {
            e = ks_robust_timedlock(&c->m, ks_deadline_after(KT_MS * 1000));
        }
        if (e) {
            __atomic_fetch_add(&c->bad, 1, __ATOMIC_RELAXED);
            continue;
        }
        long v = c->n;
        if ((i & 255) == 0)
            sched_yield();
        c->n = v + 1;
        if (ks_robust_unlock(&c->m))
            __atomic_fetch_add(&c->bad, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

Test(robust, mutual_exclusion_between_threads, .timeout = 60)
{
    struct counter c = {.m = KS_ROBUST_INIT};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        kt_spawn(&t[i], count_thread, &c);
    for (int i = 0; i < 4; i++)
        kt_join(t[i]);
    cr_assert_eq(c.bad, 0);
    cr_assert_eq(c.n, 4 * 20000L);
    cr_assert_eq(word_of(&c.m), 0u);
}

/* ---- owner death: threads ------------------------------------------------------ */

static void *lock_and_exit(void *p)
{
    return (void *)(intptr_t)ks_robust_lock(p);
}

Test(robust, thread_exiting_holding_it_gives_eownerdead)
{
    ks_robust_t m = KS_ROBUST_INIT;
    pthread_t t;
    kt_spawn(&t, lock_and_exit, &m);
    cr_assert_eq((intptr_t)kt_join(t), 0);
    cr_assert_eq(word_of(&m), KS_ROBUST_OWNER_DIED, "the kernel marked it: %#x", word_of(&m));
    cr_assert_eq(ks_robust_destroy(&m), 0, "owner-dead and free");
    cr_assert_eq(ks_robust_lock(&m), EOWNERDEAD);
    cr_assert_eq(on_my_list(&m.next_), 1);
    cr_assert_eq(ks_robust_consistent(&m), 0);
    cr_assert_eq(ks_robust_consistent(&m), EINVAL, "already consistent");
    cr_assert_eq(ks_robust_unlock(&m), 0);
    cr_assert_eq(ks_robust_lock(&m), 0);
    cr_assert_eq(ks_robust_unlock(&m), 0);
    cr_assert(my_list_is_empty());
}

struct blocked {
    ks_robust_t *m;
    pid_t tid;
    int rc;
    int64_t done;
};

static void *block_in_lock(void *p)
{
    struct blocked *b = p;
    __atomic_store_n(&b->tid, kt_gettid(), __ATOMIC_RELEASE);
    b->rc = ks_robust_lock(b->m);
    __atomic_store_n(&b->done, ks_now(), __ATOMIC_RELEASE);
    if (b->rc == 0 || b->rc == EOWNERDEAD)
        ks_robust_unlock(b->m); /* EOWNERDEAD: unlocked inconsistent -> not recoverable */
    return NULL;
}

static pid_t wait_tid(struct blocked *b)
{
    pid_t tid;
    while (!(tid = __atomic_load_n(&b->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    return tid;
}

Test(robust, unlock_without_consistent_is_notrecoverable_for_everyone, .timeout = 30)
{
    ks_robust_t m = KS_ROBUST_INIT;
    pthread_t t;
    kt_spawn(&t, lock_and_exit, &m);
    kt_join(t);
    cr_assert_eq(ks_robust_trylock(&m), EOWNERDEAD, "trylock takes an owner-dead mutex too");
    /* two waiters asleep behind the inconsistent owner */
    struct blocked b[2] = {{.m = &m}, {.m = &m}};
    pthread_t w[2];
    for (int i = 0; i < 2; i++) {
        kt_spawn(&w[i], block_in_lock, &b[i]);
        cr_assert(kt_wait_in_futex(wait_tid(&b[i]), 5000 * KT_MS));
    }
    cr_assert_eq(word_of(&m), (uint32_t)kt_gettid() | KS_ROBUST_OWNER_DIED | KS_ROBUST_WAITERS);
    cr_assert_eq(ks_robust_unlock(&m), 0);
    cr_assert(my_list_is_empty());
    for (int i = 0; i < 2; i++) {
        kt_join(w[i]);
        cr_assert_eq(b[i].rc, ENOTRECOVERABLE, "waiter %d: %d", i, b[i].rc);
    }
    cr_assert_eq(ks_robust_lock(&m), ENOTRECOVERABLE);
    cr_assert_eq(ks_robust_trylock(&m), ENOTRECOVERABLE);
    cr_assert_eq(ks_robust_timedlock(&m, ks_deadline_after(KT_MS)), ENOTRECOVERABLE);
    cr_assert_eq(ks_robust_unlock(&m), EPERM);
    cr_assert_eq(ks_robust_consistent(&m), EINVAL);
    cr_assert(my_list_is_empty(), "no pending op left behind");
    cr_assert_eq(ks_robust_destroy(&m), 0);
    cr_assert_eq(ks_robust_init(&m, 0), 0);
    cr_assert_eq(ks_robust_lock(&m), 0);
    cr_assert_eq(ks_robust_unlock(&m), 0);
}

/* ---- owner death: processes ------------------------------------------------------ */

struct shared {
    ks_robust_t m;
    int locked, go;
    uint64_t a, b;     /* the storm's invariant: a == b outside a critical section */
    uint64_t rounds;   /* critical sections completed */
    uint64_t repairs;  /* EOWNERDEAD seen (by anyone) */
    uint64_t torn;     /* partial updates repaired after EOWNERDEAD */
    uint64_t violations; /* a != b seen after a plain 0 */
    int unexpected;
};

static int child_lock_then(void *p, int how)
{
    struct shared *s = p;
    if (ks_robust_lock(&s->m) != 0)
        return 2;
    __atomic_store_n(&s->locked, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&s->go, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100000);
    kt_sleep_ns(20 * KT_MS); /* let the parent fall asleep in lock */
    if (how)
        raise(SIGKILL);
    return 0; /* _exit while holding it */
}
static int child_lock_exit(void *p) { return child_lock_then(p, 0); }
static int child_lock_kill(void *p) { return child_lock_then(p, 1); }

Test(robust, child_process_dies_holding_it_parent_asleep_in_lock, .timeout = 30)
{
    for (int how = 0; how < 2; how++) {
        struct shared *s = kt_shared_alloc(sizeof *s);
        cr_assert_eq(ks_robust_init(&s->m, KS_SHARED), 0);
        pid_t pid = kt_fork(how ? child_lock_kill : child_lock_exit, s);
        while (!__atomic_load_n(&s->locked, __ATOMIC_ACQUIRE))
            kt_sleep_ns(100000);
        cr_assert_eq(ks_robust_trylock(&s->m), EBUSY);
        cr_assert_eq(ks_robust_unlock(&s->m), EPERM);
        __atomic_store_n(&s->go, 1, __ATOMIC_RELEASE);
        int e = ks_robust_lock(&s->m); /* asleep until the kernel's wake */
        int st = kt_reap(pid);
        cr_assert(how ? (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) : (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                  "child status %#x", st);
        cr_assert_eq(e, EOWNERDEAD, "%s: %d", how ? "killed" : "exited", e);
        cr_assert_eq(ks_robust_consistent(&s->m), 0);
        cr_assert_eq(ks_robust_unlock(&s->m), 0);
        cr_assert_eq(ks_robust_lock(&s->m), 0);
        cr_assert_eq(ks_robust_unlock(&s->m), 0);
        kt_shared_free(s, sizeof *s);
    }
}

/* The kernel's wake, not the sleeper's periodic re-check, ends the wait:
 * the parent's lock returns well within the re-check period (1 s). */
Test(robust, kernel_wakes_the_sleeper_when_the_owner_is_killed, .timeout = 30)
{
    struct shared *s = kt_shared_alloc(sizeof *s);
    cr_assert_eq(ks_robust_init(&s->m, KS_PRIVATE), 0, "a private one is woken too");
    s->go = 1;
    pid_t pid = kt_fork(child_lock_exit, s); /* holds it and sleeps 20 ms... */
    while (!__atomic_load_n(&s->locked, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100000);
    kill(pid, SIGSTOP);
    struct blocked b = {.m = &s->m};
    pthread_t t;
    kt_spawn(&t, block_in_lock, &b);
    cr_assert(kt_wait_in_futex(wait_tid(&b), 5000 * KT_MS));
    int64_t t0 = ks_now();
    kill(pid, SIGKILL);
    kt_reap(pid);
    kt_join(t);
    cr_assert_eq(b.rc, EOWNERDEAD);
    cr_assert_lt(b.done - t0, 500 * KT_MS * KT_SLOW, "woken after %lld ms", (long long)((b.done - t0) / KT_MS));
    /* block_in_lock unlocked it without consistent */
    cr_assert_eq(ks_robust_lock(&s->m), ENOTRECOVERABLE);
    kt_shared_free(s, sizeof *s);
}

/* Three sleepers behind the holder: each unlock must reach the next one
 * at once.  A woken thread that acquired without setting W (R2) would
 * unlock without a wake and leave the others to the sleepers' 1 s
 * re-check, which this bound catches. */
static void *chain_waiter(void *p)
{
    struct blocked *b = p;
    __atomic_store_n(&b->tid, kt_gettid(), __ATOMIC_RELEASE);
    b->rc = ks_robust_lock(b->m);
    kt_sleep_ns(2 * KT_MS); /* the others go back to sleep meanwhile */
    __atomic_store_n(&b->done, ks_now(), __ATOMIC_RELEASE);
    ks_robust_unlock(b->m);
    return NULL;
}

Test(robust, every_unlock_wakes_the_next_sleeper, .timeout = 30)
{
    ks_robust_t m = KS_ROBUST_INIT;
    cr_assert_eq(ks_robust_lock(&m), 0);
    struct blocked b[3] = {{.m = &m}, {.m = &m}, {.m = &m}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        kt_spawn(&t[i], chain_waiter, &b[i]);
        cr_assert(kt_wait_in_futex(wait_tid(&b[i]), 5000 * KT_MS));
    }
    int64_t t0 = ks_now();
    cr_assert_eq(ks_robust_unlock(&m), 0);
    int64_t last = 0;
    for (int i = 0; i < 3; i++) {
        kt_join(t[i]);
        cr_assert_eq(b[i].rc, 0);
        last = b[i].done > last ? b[i].done : last;
    }
    cr_assert_lt(last - t0, 500 * KT_MS * KT_SLOW, "the last sleeper got it after %lld ms",
                 (long long)((last - t0) / KT_MS));
    cr_assert_eq(word_of(&m), 0u);
}

/* ---- deaths at the worst instructions (hardware watchpoints) ---------------------- */

enum moment { AFTER_ACQUIRING_CAS, BEFORE_LIST_INSERT, AFTER_LIST_INSERT, BETWEEN_UNLINK_AND_RELEASE,
              BETWEEN_RELEASE_AND_WAKE };
static const char *const moment_names[] = {"after the acquiring CAS", "at the list insert's first look",
                                           "after the list insert", "between unlink and release",
                                           "between release and wake"};

static struct {
    enum moment when;
    ks_robust_t *m;
    struct robust_list_head *h;
    uint32_t tid;
    struct kt_watch w;
} wm;

static void wm_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)si, (void)uc;
    for (int i = 0; i < wm.w.n; i++)
        ioctl(wm.w.fd[i], PERF_EVENT_IOC_DISABLE, 0);
    uint32_t w = wm.m->word;
    void *first = (void *)((uintptr_t)wm.h->list.next & ~(uintptr_t)1);
    void *node = &wm.m->next_;
    /* The moments are told by what the word and the list show, not by
     * the pending slot: that is what the kernel is to rely on, and a
     * library that forgot it must fail the test, not dodge the kill. */
    int mine = (w & TIDM) == wm.tid, linked = first == node;
    int die = 0;
    switch (wm.when) {
    case AFTER_ACQUIRING_CAS: die = mine && !linked; break;          /* the trap of the CAS */
    case BEFORE_LIST_INSERT: die = mine && !linked; break;           /* its read of the head */
    case AFTER_LIST_INSERT: die = mine && linked; break;             /* the store to the head */
    case BETWEEN_UNLINK_AND_RELEASE: die = mine && !linked; break;   /* the unlinking store */
    case BETWEEN_RELEASE_AND_WAKE: die = !(w & TIDM); break;         /* the releasing exchange */
    }
    if (die)
        kill(getpid(), SIGKILL);
    for (int i = 0; i < wm.w.n; i++)
        ioctl(wm.w.fd[i], PERF_EVENT_IOC_ENABLE, 0);
}

static int wm_released(void) { return 0; }

static int child_dies_at(void *p)
{
    struct shared *s = p;
    wm.m = &s->m;
    wm.h = my_head();
    wm.tid = (uint32_t)kt_gettid();
    wm.w.n = 0;
    int unlocking = wm.when >= BETWEEN_UNLINK_AND_RELEASE;
    if (unlocking && ks_robust_lock(&s->m) != 0)
        return 2;
    /* the word for the CAS and the release; the list head for the insert
     * and the unlink (glibc's list is empty but for us: the head is the
     * node's neighbour) */
    int watch_head = wm.when == BEFORE_LIST_INSERT || wm.when == AFTER_LIST_INSERT ||
                     wm.when == BETWEEN_UNLINK_AND_RELEASE;
    if (kt_watch_add(&wm.w, watch_head ? (void *)&wm.h->list.next : (void *)&s->m.word, watch_head ? 8 : 4) != 0)
        return 77;
    __atomic_store_n(&s->locked, 1, __ATOMIC_RELEASE);
    if (wm.when == BETWEEN_RELEASE_AND_WAKE)
        while (!__atomic_load_n(&s->go, __ATOMIC_ACQUIRE)) /* the parent's thread is asleep */
            kt_sleep_ns(100000);
    kt_watch_begin_with(&wm.w, wm_released, wm_handler);
    int e = unlocking ? ks_robust_unlock(&s->m) : ks_robust_lock(&s->m);
    kt_watch_end(&wm.w);
    return e == 0 ? 3 : 4; /* should have died */
}

static void dies_at(enum moment when)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    struct shared *s = kt_shared_alloc(sizeof *s);
    cr_assert_eq(ks_robust_init(&s->m, KS_SHARED), 0);
    wm.when = when;
    pid_t pid = kt_fork(child_dies_at, s);
    struct blocked b = {.m = &s->m};
    pthread_t t;
    int64_t t0 = 0;
    if (when == BETWEEN_RELEASE_AND_WAKE) {
        while (!__atomic_load_n(&s->locked, __ATOMIC_ACQUIRE)) {
            if (waitpid(pid, NULL, WNOHANG) == pid)
                cr_skip_test("no hardware watchpoints here");
            kt_sleep_ns(100000);
        }
        kt_spawn(&t, block_in_lock, &b);
        cr_assert(kt_wait_in_futex(wait_tid(&b), 5000 * KT_MS));
        t0 = ks_now();
        __atomic_store_n(&s->go, 1, __ATOMIC_RELEASE);
    }
    int st = kt_reap(pid);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        cr_skip_test("no hardware watchpoints here");
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: child status %#x", moment_names[when], st);
    if (when == BETWEEN_RELEASE_AND_WAKE) {
        /* released, so the sleeper gets it clean; the pending slot had the
         * kernel pass on the wake the dead unlocker owed */
        kt_join(t);
        cr_assert_eq(b.rc, 0, "%s: %d", moment_names[when], b.rc);
        cr_assert_lt(b.done - t0, 500 * KT_MS * KT_SLOW, "woken after %lld ms", (long long)((b.done - t0) / KT_MS));
        cr_assert_eq(ks_robust_lock(&s->m), 0);
    } else {
        cr_assert_eq(word_of(&s->m) & ~KS_ROBUST_WAITERS, KS_ROBUST_OWNER_DIED, "%s: word %#x", moment_names[when],
                     word_of(&s->m));
        cr_assert_eq(ks_robust_lock(&s->m), EOWNERDEAD, "%s", moment_names[when]);
        cr_assert_eq(ks_robust_consistent(&s->m), 0);
    }
    cr_assert_eq(ks_robust_unlock(&s->m), 0);
    cr_assert(my_list_is_empty());
    kt_shared_free(s, sizeof *s);
}

Test(robust, killed_right_after_the_acquiring_cas, .timeout = 30) { dies_at(AFTER_ACQUIRING_CAS); }
Test(robust, killed_right_before_the_list_insert, .timeout = 30) { dies_at(BEFORE_LIST_INSERT); }
Test(robust, killed_right_after_the_list_insert, .timeout = 30) { dies_at(AFTER_LIST_INSERT); }
Test(robust, killed_between_unlink_and_release, .timeout = 30) { dies_at(BETWEEN_UNLINK_AND_RELEASE); }
Test(robust, killed_between_release_and_wake, .timeout = 30) { dies_at(BETWEEN_RELEASE_AND_WAKE); }

/* ---- SIGKILL storm ------------------------------------------------------------------ */

/* The critical section writes a then b; a thread that finds a != b after a
 * plain 0 has caught a partial update that no EOWNERDEAD announced.  After
 * EOWNERDEAD the repair rolls back (a = b) and counts what it rolled back. */
static void storm_section(struct shared *s, int e)
{
    if (e == EOWNERDEAD) {
        __atomic_fetch_add(&s->repairs, 1, __ATOMIC_RELAXED);
        if (s->a != s->b) {
            s->torn++;
            s->a = s->b;
        }
        if (ks_robust_consistent(&s->m) != 0)
            s->unexpected++;
    } else if (s->a != s->b) {
        s->violations++;
    }
    uint64_t n = s->b + 1;
    __atomic_store_n(&s->a, n, __ATOMIC_RELAXED);
    for (int i = 0; i < 50; i++)
        ks_cpu_relax();
    __atomic_store_n(&s->b, n, __ATOMIC_RELAXED);
    s->rounds++;
}

static int storm_child(void *p)
{
    struct shared *s = p;
    for (;;) {
        int e = ks_robust_lock(&s->m);
        if (e != 0 && e != EOWNERDEAD) {
            __atomic_fetch_add(&s->unexpected, 1, __ATOMIC_RELAXED);
            return 1;
        }
        storm_section(s, e);
        if (ks_robust_unlock(&s->m) != 0) {
            __atomic_fetch_add(&s->unexpected, 1, __ATOMIC_RELAXED);
            return 1;
        }
    }
}

Test(robust, sigkill_storm_keeps_the_invariant, .timeout = 120)
{
    struct shared *s = kt_shared_alloc(sizeof *s);
    cr_assert_eq(ks_robust_init(&s->m, KS_SHARED), 0);
    pid_t kids[2];
    for (int i = 0; i < 2; i++)
        kids[i] = kt_fork(storm_child, s);
    uint64_t seed = (uint64_t)ks_now(), last_b = 0;
    const int kills = 300;
    for (int k = 0; k < kills; k++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        kt_sleep_ns((int64_t)((seed >> 33) % 2000000)); /* 0-2 ms */
        int i = (int)((seed >> 20) & 1);
        kill_reap(kids[i]);
        if (k % 10 == 9) {
            /* the parent takes its turn: always able to lock */
            int e = ks_robust_timedlock(&s->m, ks_deadline_after(10000 * KT_MS));
            cr_assert(e == 0 || e == EOWNERDEAD, "kill %d: parent's lock %d", k, e);
            storm_section(s, e);
            cr_assert_geq(s->b, last_b, "committed count went back");
            last_b = s->b;
            cr_assert_eq(ks_robust_unlock(&s->m), 0);
        }
        kids[i] = kt_fork(storm_child, s);
    }
    for (int i = 0; i < 2; i++)
        kill_reap(kids[i]);
    int e = ks_robust_timedlock(&s->m, ks_deadline_after(10000 * KT_MS));
    cr_assert(e == 0 || e == EOWNERDEAD, "final lock %d", e);
    storm_section(s, e);
    cr_assert_eq(s->a, s->b);
    cr_assert_eq(s->violations, 0u, "partial updates seen without EOWNERDEAD");
    cr_assert_eq(s->unexpected, 0);
    cr_assert_geq(s->b, last_b);
    cr_assert_eq(ks_robust_unlock(&s->m), 0);
    cr_log_info("robust storm: %d kills, %llu sections, %llu EOWNERDEAD, %llu torn updates rolled back", kills,
                (unsigned long long)s->rounds, (unsigned long long)s->repairs, (unsigned long long)s->torn);
    cr_assert_gt(s->repairs, 0u, "no kill landed inside a critical section in %d kills", kills);
    kt_shared_free(s, sizeof *s);
}

/* ---- fork children of every kind --------------------------------------------------- */

struct forked {
    ks_robust_t held; /* the parent holds it across the fork */
    ks_robust_t mine; /* the child locks it and dies */
    int trylock, unlock, lock;
};

static int forked_child(void *p)
{
    struct forked *f = p;
    f->trylock = ks_robust_trylock(&f->held);
    f->unlock = ks_robust_unlock(&f->held);
    f->lock = ks_robust_lock(&f->mine);
    return 0; /* exits holding `mine` (if it got it) */
}

Test(robust, fork_children_have_their_own_tid_and_list, .timeout = 30)
{
    for (int kind = 0; kind < KT_FORK_KINDS; kind++) {
        struct forked *f = kt_shared_alloc(sizeof *f);
        cr_assert_eq(ks_robust_init(&f->held, KS_SHARED), 0);
        cr_assert_eq(ks_robust_init(&f->mine, KS_SHARED), 0);
        cr_assert_eq(ks_robust_lock(&f->held), 0); /* this thread's TID and list are cached */
        pid_t pid = kt_fork_as((enum kt_fork_kind)kind, forked_child, f);
        kt_wait_child_named(pid, kt_fork_names[kind]);
        cr_assert_eq(f->trylock, kind == KT_RAW_CLONE ? ENOTSUP : EBUSY, "%s: trylock %d", kt_fork_names[kind],
                     f->trylock);
        cr_assert_eq(f->unlock, EPERM, "%s: unlock %d", kt_fork_names[kind], f->unlock);
        if (kind == KT_RAW_CLONE) {
            /* the kernel gives a raw clone child no robust list, and glibc
             * registered none: refused, not silently unprotected */
            cr_assert_eq(f->lock, ENOTSUP, "clone: lock %d", f->lock);
            cr_assert_eq(ks_robust_lock(&f->mine), 0);
        } else {
            cr_assert_eq(f->lock, 0, "%s: lock %d", kt_fork_names[kind], f->lock);
            cr_assert_eq(ks_robust_lock(&f->mine), EOWNERDEAD, "%s", kt_fork_names[kind]);
            cr_assert_eq(ks_robust_consistent(&f->mine), 0);
        }
        cr_assert_eq(ks_robust_unlock(&f->mine), 0);
        cr_assert_eq(word_of(&f->held), (uint32_t)kt_gettid(), "the parent still holds it");
        cr_assert_eq(ks_robust_unlock(&f->held), 0);
        cr_assert(my_list_is_empty());
        kt_shared_free(f, sizeof *f);
    }
}

/* ---- the list shared with glibc's robust mutexes --------------------------------------- */

struct mixed {
    ks_robust_t a, c;
    pthread_mutex_t b, d;
};

static void init_glibc_robust(pthread_mutex_t *p)
{
    pthread_mutexattr_t at;
    cr_assert_eq(pthread_mutexattr_init(&at), 0);
    cr_assert_eq(pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST), 0);
    cr_assert_eq(pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_mutex_init(p, &at), 0);
    pthread_mutexattr_destroy(&at);
}

/* object i of the four: a (ks), b (glibc), c (ks), d (glibc) */
static int mx_lock(struct mixed *x, int i)
{
    switch (i) {
    case 0: return ks_robust_lock(&x->a);
    case 1: return pthread_mutex_lock(&x->b);
    case 2: return ks_robust_lock(&x->c);
    default: return pthread_mutex_lock(&x->d);
    }
}
static int mx_unlock(struct mixed *x, int i)
{
    switch (i) {
    case 0: return ks_robust_unlock(&x->a);
    case 1: return pthread_mutex_unlock(&x->b);
    case 2: return ks_robust_unlock(&x->c);
    default: return pthread_mutex_unlock(&x->d);
    }
}
static int mx_consistent(struct mixed *x, int i)
{
    switch (i) {
    case 0: return ks_robust_consistent(&x->a);
    case 1: return pthread_mutex_consistent(&x->b);
    case 2: return ks_robust_consistent(&x->c);
    default: return pthread_mutex_consistent(&x->d);
    }
}

/* Every permutation of the four as lock order, with the unlock orders
 * "same", "reverse" and "rotated": the list stays well-formed (the walk
 * finds exactly the held ones) and ends empty. */
Test(robust, shares_the_list_with_glibc_robust_mutexes)
{
    struct mixed x;
    memset(&x, 0, sizeof x);
    init_glibc_robust(&x.b);
    init_glibc_robust(&x.d);
    int perm[4] = {0, 1, 2, 3}, n = 0;
    for (;;) {
        for (int u = 0; u < 3; u++) {
            int held[4] = {0};
            for (int i = 0; i < 4; i++) {
                cr_assert_eq(mx_lock(&x, perm[i]), 0);
                held[perm[i]] = 1;
            }
            cr_assert_eq(on_my_list(&x.a.next_), 1);
            cr_assert_eq(on_my_list(&x.c.next_), 1);
            for (int i = 0; i < 4; i++) {
                int j = u == 0 ? perm[i] : u == 1 ? perm[3 - i] : perm[(i + 2) & 3];
                cr_assert_eq(mx_unlock(&x, j), 0, "unlock %d", j);
                held[j] = 0;
                cr_assert_eq(on_my_list(&x.a.next_), held[0]);
                cr_assert_eq(on_my_list(&x.c.next_), held[2]);
            }
            cr_assert(my_list_is_empty());
        }
        n++;
        /* next permutation */
        int i = 2;
        while (i >= 0 && perm[i] > perm[i + 1])
            i--;
        if (i < 0)
            break;
        int j = 3;
        while (perm[j] < perm[i])
            j--;
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        for (int l = i + 1, r = 3; l < r; l++, r--)
            t = perm[l], perm[l] = perm[r], perm[r] = t;
    }
    cr_assert_eq(n, 24);
}

/* The child locks all four in some order, unlocks the ones named in
 * `drop` (touching its neighbours' list pointers, of both kinds), and
 * exits holding the rest: each of those is owner-dead for the parent. */
static int mx_order[4], mx_drop;

static int mixed_child(void *p)
{
    struct mixed *x = p;
    for (int i = 0; i < 4; i++)
        if (mx_lock(x, mx_order[i]) != 0)
            return 10 + i;
    for (int i = 0; i < 4; i++)
        if ((mx_drop >> i) & 1)
            if (mx_unlock(x, i) != 0)
                return 20 + i;
    return 0;
}

Test(robust, dying_holding_ks_and_glibc_robust_mutexes_makes_all_owner_dead, .timeout = 60)
{
    static const int orders[][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {3, 2, 1, 0}, {1, 2, 3, 0}};
    for (int o = 0; o < 4; o++)
        for (int drop = 0; drop < 16; drop++) {
            struct mixed *x = kt_shared_alloc(sizeof *x);
            cr_assert_eq(ks_robust_init(&x->a, KS_SHARED), 0);
            cr_assert_eq(ks_robust_init(&x->c, KS_SHARED), 0);
            init_glibc_robust(&x->b);
            init_glibc_robust(&x->d);
            memcpy(mx_order, orders[o], sizeof mx_order);
            mx_drop = drop;
            pid_t pid = kt_fork(mixed_child, x);
            kt_wait_child_named(pid, "mixed child");
            for (int i = 0; i < 4; i++) {
                int e = mx_lock(x, i);
                int want = ((drop >> i) & 1) ? 0 : EOWNERDEAD;
                cr_assert_eq(e, want, "order %d drop %#x object %d: %d", o, drop, i, e);
                if (e == EOWNERDEAD)
                    cr_assert_eq(mx_consistent(x, i), 0);
            }
            for (int i = 0; i < 4; i++)
                cr_assert_eq(mx_unlock(x, i), 0);
            cr_assert(my_list_is_empty());
            pthread_mutex_destroy(&x->b);
            pthread_mutex_destroy(&x->d);
            kt_shared_free(x, sizeof *x);
        }
}

/* ---- two unrelated processes ------------------------------------------------------------ */

/* The segment: the mutex, and where each side mapped it. */
struct seg {
    ks_robust_t m;
    uintptr_t parent_addr, helper_addr;
    int helper_locked, go, helper_rc, helper_step;
    long counter;
};

#define SEG_SIZE 4096

/* This binary started again with KT_ROBUST_SHM=<name> and
 * KT_ROBUST_MODE=<hold|wait|count> in its environment runs this and exits
 * before Criterion's main: a process that shares nothing with the test
 * but the shm_open'ed segment, which it maps at another address. */
__attribute__((constructor)) static void robust_helper(void)
{
    const char *name = getenv("KT_ROBUST_SHM"), *mode = getenv("KT_ROBUST_MODE");
    if (!name || !mode)
        return;
    /* a spacer, so that the segment cannot land where the parent has it */
    void *spacer = mmap(NULL, 64 * SEG_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    (void)spacer;
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0)
        _exit(90);
    struct seg *s = mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (s == MAP_FAILED)
        _exit(91);
    s->helper_addr = (uintptr_t)s;
    alarm(60);
    if (!strcmp(mode, "hold")) {
        /* lock, tell, wait for go, then die holding it */
        if ((s->helper_rc = ks_robust_lock(&s->m)) != 0)
            _exit(92);
        __atomic_store_n(&s->helper_locked, 1, __ATOMIC_RELEASE);
        while (!__atomic_load_n(&s->go, __ATOMIC_ACQUIRE))
            kt_sleep_ns(100000);
        kt_sleep_ns(30 * KT_MS); /* the parent falls asleep in lock */
        raise(SIGKILL);
    } else if (!strcmp(mode, "wait")) {
        /* the parent holds it: EPERM, EBUSY, then asleep until it unlocks */
        int e1 = ks_robust_unlock(&s->m), e2 = ks_robust_trylock(&s->m);
        __atomic_store_n(&s->helper_step, 1, __ATOMIC_RELEASE);
        int e3 = ks_robust_timedlock(&s->m, ks_deadline_after(20000 * KT_MS));
        s->helper_rc = e3;
        if (e1 != EPERM || e2 != EBUSY)
            _exit(93);
        if (e3 == EOWNERDEAD)
            ks_robust_consistent(&s->m);
        if (e3 == 0 || e3 == EOWNERDEAD)
            ks_robust_unlock(&s->m);
        _exit(0);
    } else if (!strcmp(mode, "count")) {
        for (int i = 0; i < 20000; i++) {
            int e = ks_robust_lock(&s->m);
            if (e != 0)
                _exit(94);
            s->counter++;
            if (ks_robust_unlock(&s->m) != 0)
                _exit(95);
        }
        _exit(0);
    }
    _exit(99);
}

static pid_t spawn_helper(const char *name, const char *mode)
{
    char e1[128], e2[64];
    snprintf(e1, sizeof e1, "KT_ROBUST_SHM=%s", name);
    snprintf(e2, sizeof e2, "KT_ROBUST_MODE=%s", mode);
    /* the environment of this process (ASAN_OPTIONS...) plus the two */
    int n = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)n + 3, sizeof *env);
    cr_assert_not_null(env);
    memcpy(env, environ, (size_t)n * sizeof *env);
    env[n] = e1;
    env[n + 1] = e2;
    char *argv[] = {"ksync-robust-helper", NULL};
    pid_t pid;
    int e = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, env);
    free(env);
    cr_assert_eq(e, 0, "posix_spawn: %s", strerror(e));
    return pid;
}

static struct seg *make_seg(char *name, size_t cap)
{
    snprintf(name, cap, "/ksync-robust-%d", (int)getpid());
    shm_unlink(name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0, "shm_open: %s", strerror(errno));
    cr_assert_eq(ftruncate(fd, SEG_SIZE), 0);
    struct seg *s = mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(s, MAP_FAILED);
    memset(s, 0, sizeof *s);
    cr_assert_eq(ks_robust_init(&s->m, KS_SHARED), 0);
    s->parent_addr = (uintptr_t)s;
    return s;
}

static void expect_exit0(pid_t pid, const char *what)
{
    int st = kt_reap(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: status %#x", what, st);
}

Test(robust, unrelated_processes_through_shm_open, .timeout = 90)
{
    char name[64];
    struct seg *s = make_seg(name, sizeof name);

    /* 1. the helper dies holding it while this process sleeps in lock */
    pid_t pid = spawn_helper(name, "hold");
    while (!__atomic_load_n(&s->helper_locked, __ATOMIC_ACQUIRE)) {
        cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "helper exited early");
        kt_sleep_ns(100000);
    }
    cr_assert_neq(s->helper_addr, s->parent_addr, "mapped at the same address");
    cr_assert_eq(ks_robust_trylock(&s->m), EBUSY);
    cr_assert_eq(ks_robust_unlock(&s->m), EPERM);
    __atomic_store_n(&s->go, 1, __ATOMIC_RELEASE);
    int e = ks_robust_lock(&s->m);
    int st = kt_reap(pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "helper status %#x", st);
    cr_assert_eq(e, EOWNERDEAD);
    cr_assert_eq(ks_robust_consistent(&s->m), 0);

    /* 2. this process holds it; the helper sees EPERM and EBUSY, then
     * sleeps until the unlock here wakes it */
    pid = spawn_helper(name, "wait");
    while (!__atomic_load_n(&s->helper_step, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100000);
    kt_wait_child_in_futex(pid, 5000 * KT_MS);
    cr_assert_eq(ks_robust_unlock(&s->m), 0);
    expect_exit0(pid, "waiting helper");
    cr_assert_eq(s->helper_rc, 0);

    /* 3. a counter from both sides */
    pid = spawn_helper(name, "count");
    for (int i = 0; i < 20000; i++) {
        cr_assert_eq(ks_robust_lock(&s->m), 0);
        s->counter++;
        cr_assert_eq(ks_robust_unlock(&s->m), 0);
    }
    expect_exit0(pid, "counting helper");
    cr_assert_eq(s->counter, 40000);
    cr_assert_eq(word_of(&s->m), 0u);
    munmap(s, SEG_SIZE);
    shm_unlink(name);
}

/* ---- found by review ------------------------------------------------------------ */

/* A timed waiter woken by an unlock, held off its CPU (here: a 300 ms signal
 * handler) while a newcomer takes the free word with a plain 0 -> TID, and
 * past its deadline when it looks again, used to return ETIMEDOUT leaving
 * the word without W: it had used up the one wake, the newcomer's unlock
 * woke nobody, and the other sleeper C waited for the 1 s re-check.  The
 * leaving waiter must put W back, so C gets the mutex at the unlock. */
static ks_robust_t tw_m;
static int64_t tw_deadline, tw_c_got;
static int tw_rc_a;

static void tw_hold_off(int sig)
{
    (void)sig;
    kt_sleep_ns(300 * KT_MS);
}
static void *tw_a(void *p)
{
    (void)p;
    tw_rc_a = ks_robust_timedlock(&tw_m, tw_deadline);
    if (tw_rc_a == 0)
        ks_robust_unlock(&tw_m);
    return NULL;
}
static void *tw_c(void *p)
{
    (void)p;
    int e = ks_robust_lock(&tw_m);
    tw_c_got = ks_now();
    cr_assert_eq(e, 0);
    cr_assert_eq(ks_robust_unlock(&tw_m), 0);
    return NULL;
}

Test(robust, timed_waiter_leaving_puts_the_wake_back, .timeout = 60)
{
    struct sigaction sa = {.sa_handler = tw_hold_off}, old;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
    int barged = 0;
    for (int trial = 0; trial < 10 && barged < 3; trial++) {
        cr_assert_eq(ks_robust_init(&tw_m, 0), 0);
        cr_assert_eq(ks_robust_lock(&tw_m), 0);
        tw_deadline = ks_now() + 150 * KT_MS;
        tw_rc_a = -1;
        pthread_t a, c;
        kt_spawn(&a, tw_a, NULL);
        kt_sleep_ns(30 * KT_MS); /* A asleep first */
        kt_spawn(&c, tw_c, NULL);
        kt_sleep_ns(30 * KT_MS); /* then C */
        cr_assert_eq(ks_robust_unlock(&tw_m), 0); /* wakes A, the first sleeper */
        cr_assert_eq(pthread_kill(a, SIGUSR1), 0);
        if (ks_robust_trylock(&tw_m) != 0) { /* A won the race: no barge this time */
            kt_join(a);
            kt_join(c);
            continue;
        }
        kt_join(a);
        if (tw_rc_a == 0) {
            /* A ran at once on the other CPU, took and released the mutex
             * before the signal and the newcomer came: no barge either. */
            cr_assert_eq(ks_robust_unlock(&tw_m), 0);
            kt_join(c);
            continue;
        }
        barged++;
        cr_assert_eq(tw_rc_a, ETIMEDOUT, "A: %d", tw_rc_a);
        cr_assert(word_of(&tw_m) & KS_ROBUST_WAITERS, "A left the word 0x%x without W, C asleep",
                  word_of(&tw_m));
        int64_t t_unlock = ks_now();
        cr_assert_eq(ks_robust_unlock(&tw_m), 0);
        kt_join(c);
        cr_assert_lt(tw_c_got - t_unlock, 500 * KT_MS, "C got the mutex %lld ms after the unlock",
                     (long long)((tw_c_got - t_unlock) / KT_MS));
    }
    cr_assert_gt(barged, 0, "the newcomer never got in between");
    sigaction(SIGUSR1, &old, NULL);
}

static void *hold_then_init(void *p)
{
    ks_robust_t *m = p;
    cr_assert_eq(ks_robust_lock(m), 0);
    cr_assert(on_my_list(&m->next_) == 1);
    cr_assert_eq(ks_robust_init(m, 0), EBUSY, "init of a mutex the caller holds");
    cr_assert(on_my_list(&m->next_) == 1, "and its node is still on the list");
    cr_assert_eq(ks_robust_unlock(m), 0);
    cr_assert_eq(ks_robust_init(m, 0), 0, "free again: init is fine");
    return NULL;
}

Test(robust, init_of_a_mutex_the_caller_holds_is_ebusy, .timeout = 30)
{
    static ks_robust_t m;
    pthread_t t;
    kt_spawn(&t, hold_then_init, &m);
    kt_join(t);
}

Test(robust, misaligned_object_is_einval, .timeout = 30)
{
    static union {
        ks_robust_t m[2];
        char bytes[2 * sizeof(ks_robust_t)];
    } u;
    ks_robust_t *bad = (ks_robust_t *)(void *)(u.bytes + 4);
    cr_assert_eq(ks_robust_init(bad, 0), EINVAL);
    cr_assert_eq(ks_robust_lock(bad), EINVAL);
    cr_assert_eq(ks_robust_trylock(bad), EINVAL);
    cr_assert_eq(ks_robust_timedlock(bad, ks_deadline_after(KT_MS)), EINVAL);
    cr_assert(my_list_is_empty(), "nothing was linked");
    cr_assert_eq(ks_robust_lock(&u.m[0]), 0, "an aligned one still works");
    cr_assert_eq(ks_robust_unlock(&u.m[0]), 0);
}

/* ---- recursive robust mutexes (KS_ROBUST_RECURSIVE) ---- */

static ks_robust_t static_recursive = KS_ROBUST_RECURSIVE_INIT;

static void *try_from_another(void *p)
{
    int e = ks_robust_trylock(p);
    if (e == 0)
        cr_assert_eq(ks_robust_unlock(p), 0);
    return (void *)(intptr_t)e;
}

/* Another thread's trylock (it unlocks what it got). */
static int other_thread_trylock(ks_robust_t *m)
{
    pthread_t t;
    kt_spawn(&t, try_from_another, m);
    return (int)(intptr_t)kt_join(t);
}

Test(robust, recursive_counts_levels_and_releases_at_the_last_unlock)
{
    ks_robust_t m;
    cr_assert_eq(ks_robust_init(&m, KS_ROBUST_RECURSIVE | KS_SHARED), 0);
    cr_assert_eq(m.flags, KS_ROBUST_RECURSIVE | KS_SHARED);
    ks_robust_t *ms[] = {&m, &static_recursive};
    for (int i = 0; i < 2; i++) {
        ks_robust_t *r = ms[i];
        cr_assert_eq(ks_robust_lock(r), 0);
        cr_assert_eq(ks_robust_lock(r), 0, "a relock counts, no EDEADLK");
        cr_assert_eq(ks_robust_trylock(r), 0);
        cr_assert_eq(ks_robust_timedlock(r, ks_deadline_after(KT_MS)), 0);
        cr_assert_eq(r->depth, 3u);
        cr_assert_eq(on_my_list(&r->next_), 1, "on the list once");
        cr_assert_eq(ks_robust_destroy(r), EBUSY);
        cr_assert_eq(other_thread_trylock(r), EBUSY);
        for (int k = 0; k < 3; k++) {
            cr_assert_eq(ks_robust_unlock(r), 0);
            cr_assert_eq(word_of(r), (uint32_t)kt_gettid(), "still held after %d unlocks", k + 1);
            cr_assert_eq(other_thread_trylock(r), EBUSY);
        }
        cr_assert_eq(ks_robust_unlock(r), 0);
        cr_assert_eq(word_of(r), 0u);
        cr_assert(my_list_is_empty());
        cr_assert_eq(ks_robust_unlock(r), EPERM, "one unlock too many");
        cr_assert_eq(other_thread_trylock(r), 0);
    }
    /* the count's ceiling */
    cr_assert_eq(ks_robust_lock(&m), 0);
    m.depth = KS_ROBUST_MAX_DEPTH;
    cr_assert_eq(ks_robust_lock(&m), EAGAIN);
    cr_assert_eq(ks_robust_trylock(&m), EAGAIN);
    cr_assert_eq(m.depth, KS_ROBUST_MAX_DEPTH, "EAGAIN changes nothing");
    m.depth = 0;
    cr_assert_eq(ks_robust_unlock(&m), 0);
    cr_assert(my_list_is_empty());
    /* a plain robust mutex still answers EDEADLK */
    ks_robust_t plain = KS_ROBUST_INIT;
    cr_assert_eq(ks_robust_lock(&plain), 0);
    cr_assert_eq(ks_robust_lock(&plain), EDEADLK);
    cr_assert_eq(plain.depth, 0u);
    cr_assert_eq(ks_robust_unlock(&plain), 0);
}

static void *lock_deep_and_exit(void *p)
{
    for (int k = 0; k < 5; k++)
        if (ks_robust_lock(p) != 0)
            return (void *)1;
    return NULL; /* exits holding five levels */
}

/* The dead owner's levels die with it: the next owner gets EOWNERDEAD,
 * holds it once, and one unlock (after consistent) releases it; without
 * consistent that one unlock makes it not recoverable. */
Test(robust, recursive_owner_dying_deep_leaves_one_level_to_the_next)
{
    for (int make_consistent = 1; make_consistent >= 0; make_consistent--) {
        ks_robust_t m = KS_ROBUST_RECURSIVE_INIT;
        pthread_t t;
        kt_spawn(&t, lock_deep_and_exit, &m);
        cr_assert_eq((intptr_t)kt_join(t), 0);
        cr_assert_eq(word_of(&m), KS_ROBUST_OWNER_DIED);
        cr_assert_eq(ks_robust_lock(&m), EOWNERDEAD);
        cr_assert_eq(m.depth, 0u);
        cr_assert_eq(ks_robust_lock(&m), 0, "a relock after EOWNERDEAD counts");
        cr_assert_eq(ks_robust_unlock(&m), 0);
        cr_assert_eq(word_of(&m) & KS_ROBUST_TID_MASK, (uint32_t)kt_gettid(), "one level left");
        if (make_consistent) {
            cr_assert_eq(ks_robust_consistent(&m), 0);
            cr_assert_eq(ks_robust_unlock(&m), 0);
            cr_assert_eq(other_thread_trylock(&m), 0);
        } else {
            cr_assert_eq(ks_robust_unlock(&m), 0);
            cr_assert_eq(word_of(&m), KS_ROBUST_NOTRECOVERABLE);
            cr_assert_eq(other_thread_trylock(&m), ENOTRECOVERABLE);
            cr_assert_eq(ks_robust_lock(&m), ENOTRECOVERABLE);
        }
        cr_assert(my_list_is_empty());
    }
}

/* Across processes: a child killed holding three levels of a shared
 * recursive mutex; the parent, asleep in lock, gets EOWNERDEAD. */
struct rshared {
    ks_robust_t m;
    int locked;
};

static int child_lock_deep_and_wait(void *p)
{
    struct rshared *s = p;
    for (int k = 0; k < 3; k++)
        if (ks_robust_lock(&s->m) != 0)
            return 1;
    __atomic_store_n(&s->locked, 1, __ATOMIC_RELEASE);
    for (;;)
        pause();
}

Test(robust, recursive_shared_owner_killed_deep, .timeout = 30)
{
    struct rshared *s = kt_shared_alloc(sizeof *s);
    cr_assert_eq(ks_robust_init(&s->m, KS_SHARED | KS_ROBUST_RECURSIVE), 0);
    pid_t pid = kt_fork(child_lock_deep_and_wait, s);
    while (!__atomic_load_n(&s->locked, __ATOMIC_ACQUIRE))
        kt_sleep_ns(100000);
    cr_assert_eq(ks_robust_trylock(&s->m), EBUSY);
    kill(pid, SIGKILL);
    cr_assert_eq(ks_robust_lock(&s->m), EOWNERDEAD);
    int st = kt_reap(pid);
    cr_assert(WIFSIGNALED(st));
    cr_assert_eq(s->m.depth, 0u);
    cr_assert_eq(ks_robust_consistent(&s->m), 0);
    cr_assert_eq(ks_robust_unlock(&s->m), 0);
    cr_assert_eq(word_of(&s->m), 0u);
    kt_shared_free(s, sizeof *s);
}
