/* tests/test_rmutex.c - ks_rmutex: recursion, ownership, owner ids that
 * survive TID reuse and fork(), depth overflow, process-shared use. */
#include "helpers.h"

#include <fcntl.h>
#include <sys/random.h>

static uint64_t owner_of(ks_rmutex_t *r) { return __atomic_load_n(&r->owner, __ATOMIC_RELAXED); }

/* Run fn(arg) on a fresh thread and return its int result. */
static int on_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    kt_spawn(&t, fn, arg);
    return (int)(intptr_t)kt_join(t);
}

static void *t_trylock(void *p) { return (void *)(intptr_t)ks_rmutex_trylock(p); }
static void *t_unlock(void *p) { return (void *)(intptr_t)ks_rmutex_unlock(p); }
static void *t_timedlock_short(void *p)
{
    return (void *)(intptr_t)ks_rmutex_timedlock(p, ks_deadline_after(20 * KT_MS));
}
static void *t_lock_unlock(void *p)
{
    int e = ks_rmutex_lock(p);
    if (e)
        return (void *)(intptr_t)e;
    return (void *)(intptr_t)ks_rmutex_unlock(p);
}

/* ---- API contract ------------------------------------------------------------ */

static ks_rmutex_t static_zero;

Test(rmutex, init_destroy_and_static_initializers)
{
    ks_rmutex_t a = KS_RMUTEX_INIT, b;
    memset(&b, 0xa5, sizeof b);
    cr_assert_eq(ks_rmutex_init(&b, 0), 0);
    cr_assert_eq(b.depth, 0u);
    cr_assert_eq(b.owner, 0u);
    cr_assert_eq(b.lock.state, 0u);
    ks_rmutex_t c;
    cr_assert_eq(ks_rmutex_init(&c, KS_SHARED), 0);
    cr_assert_eq(c.lock.flags, KS_SHARED);
    ks_rmutex_t *rs[] = {&a, &b, &c, &static_zero};
    for (int i = 0; i < 4; i++) {
        ks_rmutex_t *r = rs[i];
        cr_assert_eq(ks_rmutex_lock(r), 0, "rmutex %d", i);
        cr_assert_eq(ks_rmutex_trylock(r), 0);
        cr_assert_eq(ks_rmutex_timedlock(r, 0), 0);
        cr_assert_eq(r->depth, 3u);
        cr_assert_eq(owner_of(r), ks_thread_id());
        cr_assert_eq(ks_rmutex_destroy(r), EBUSY);
        for (int k = 0; k < 3; k++)
            cr_assert_eq(ks_rmutex_unlock(r), 0);
        cr_assert_eq(ks_rmutex_unlock(r), EPERM);
        cr_assert_eq(owner_of(r), 0u);
        cr_assert_eq(ks_rmutex_destroy(r), 0);
    }
}

Test(rmutex, bad_arguments_are_einval_and_change_nothing)
{
    cr_assert_eq(ks_rmutex_init(NULL, 0), EINVAL);
    cr_assert_eq(ks_rmutex_destroy(NULL), EINVAL);
    cr_assert_eq(ks_rmutex_lock(NULL), EINVAL);
    cr_assert_eq(ks_rmutex_trylock(NULL), EINVAL);
    cr_assert_eq(ks_rmutex_timedlock(NULL, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_rmutex_unlock(NULL), EINVAL);

    const unsigned bad_flags[] = {2u, 0x100u, ~0u, KS_SHARED | 4u};
    for (unsigned i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
        ks_rmutex_t r, copy;
        memset(&r, 0x5a, sizeof r);
        memcpy(&copy, &r, sizeof r);
        cr_assert_eq(ks_rmutex_init(&r, bad_flags[i]), EINVAL, "flags 0x%x", bad_flags[i]);
        cr_assert_eq(memcmp(&r, &copy, sizeof r), 0, "flags 0x%x changed the object", bad_flags[i]);
    }

    const int64_t bad_deadlines[] = {-1, INT64_MIN, ks_deadline_after(-1)};
    for (unsigned i = 0; i < sizeof bad_deadlines / sizeof bad_deadlines[0]; i++) {
        ks_rmutex_t r = KS_RMUTEX_INIT, copy;
        memcpy(&copy, &r, sizeof r);
        cr_assert_eq(ks_rmutex_timedlock(&r, bad_deadlines[i]), EINVAL);
        cr_assert_eq(memcmp(&r, &copy, sizeof r), 0, "free rmutex changed");
        /* Owned: re-entry with a bad deadline is refused too, depth unchanged. */
        cr_assert_eq(ks_rmutex_lock(&r), 0);
        memcpy(&copy, &r, sizeof r);
        cr_assert_eq(ks_rmutex_timedlock(&r, bad_deadlines[i]), EINVAL);
        cr_assert_eq(memcmp(&r, &copy, sizeof r), 0, "owned rmutex changed");
        cr_assert_eq(ks_rmutex_unlock(&r), 0);
        cr_assert_eq(owner_of(&r), 0u);
    }
}

Test(rmutex, recursion_then_another_thread_can_take_it)
{
    enum { N = 1000 };
    ks_rmutex_t r = KS_RMUTEX_INIT;
    for (int i = 0; i < N; i++) {
        int e = (i % 3 == 0) ? ks_rmutex_lock(&r)
              : (i % 3 == 1) ? ks_rmutex_trylock(&r)
                             : ks_rmutex_timedlock(&r, ks_deadline_after(KS_NSEC_PER_SEC));
        cr_assert_eq(e, 0, "level %d: %d", i, e);
    }
    cr_assert_eq(r.depth, (uint32_t)N);
    for (int i = 0; i < N - 1; i++) {
        cr_assert_eq(ks_rmutex_unlock(&r), 0);
        /* Still ours until the last unlock. */
        cr_assert_eq(on_thread(t_trylock, &r), EBUSY, "taken by another at depth %d", N - 1 - i);
    }
    cr_assert_eq(ks_rmutex_unlock(&r), 0);
    cr_assert_eq(on_thread(t_lock_unlock, &r), 0);
    cr_assert_eq(on_thread(t_trylock, &r), 0); /* that thread exits holding it */
    cr_assert_eq(ks_rmutex_trylock(&r), EBUSY);
}

Test(rmutex, non_owner_unlock_is_eperm_and_trylock_ebusy, .timeout = 30)
{
    ks_rmutex_t r = KS_RMUTEX_INIT;
    cr_assert_eq(on_thread(t_unlock, &r), EPERM, "unlock of a free rmutex");
    cr_assert_eq(ks_rmutex_lock(&r), 0);
    cr_assert_eq(ks_rmutex_lock(&r), 0);
    ks_rmutex_t copy;
    memcpy(&copy, &r, sizeof r);
    cr_assert_eq(on_thread(t_unlock, &r), EPERM);
    cr_assert_eq(on_thread(t_trylock, &r), EBUSY);
    cr_assert_eq(on_thread(t_timedlock_short, &r), ETIMEDOUT);
    cr_assert_eq(r.depth, 2u, "a non-owner changed the depth");
    cr_assert_eq(owner_of(&r), copy.owner, "a non-owner changed the owner");
    cr_assert_eq(ks_rmutex_unlock(&r), 0);
    cr_assert_eq(ks_rmutex_unlock(&r), 0);
    cr_assert_eq(ks_rmutex_unlock(&r), EPERM);
    cr_assert_eq(on_thread(t_lock_unlock, &r), 0);
}

Test(rmutex, depth_overflow_is_eagain)
{
    ks_rmutex_t r = KS_RMUTEX_INIT;
    cr_assert_eq(ks_rmutex_lock(&r), 0);
    /* White-box: jump to one below the limit instead of 4 billion locks. */
    r.depth = KS_RMUTEX_MAX_DEPTH - 1;
    cr_assert_eq(ks_rmutex_lock(&r), 0);
    cr_assert_eq(r.depth, KS_RMUTEX_MAX_DEPTH);
    cr_assert_eq(ks_rmutex_lock(&r), EAGAIN);
    cr_assert_eq(ks_rmutex_trylock(&r), EAGAIN);
    cr_assert_eq(ks_rmutex_timedlock(&r, ks_deadline_after(KS_NSEC_PER_SEC)), EAGAIN);
    cr_assert_eq(ks_rmutex_timedlock(&r, 0), EAGAIN);
    cr_assert_eq(r.depth, KS_RMUTEX_MAX_DEPTH, "a refused re-entry changed the depth");
    cr_assert_eq(owner_of(&r), ks_thread_id());
    /* One unlock makes room again. */
    cr_assert_eq(ks_rmutex_unlock(&r), 0);
    cr_assert_eq(ks_rmutex_lock(&r), 0);
    r.depth = 1; /* restore */
    cr_assert_eq(ks_rmutex_unlock(&r), 0);
    cr_assert_eq(owner_of(&r), 0u);
    cr_assert_eq(r.lock.state, 0u);
    cr_assert_eq(ks_rmutex_destroy(&r), 0);
}

/* ---- thread ids ------------------------------------------------------------------- */

#define ID_THREADS 16

struct idrec {
    uint64_t id, again;
    pid_t tid;
    kt_gate_t *gate;
};

static void *record_id(void *p)
{
    struct idrec *rec = p;
    if (rec->gate)
        kt_gate_pass(rec->gate);
    rec->id = ks_thread_id();
    rec->again = ks_thread_id();
    rec->tid = kt_gettid();
    if (rec->gate)
        kt_gate_pass(rec->gate); /* stay alive until all have their id */
    return NULL;
}

Test(rmutex, thread_ids_are_nonzero_stable_and_distinct)
{
    struct idrec rec[2 * ID_THREADS + 1];
    memset(rec, 0, sizeof rec);
    kt_gate_t gate;
    kt_gate_init(&gate, ID_THREADS);
    /* Concurrent threads. */
    for (int i = 0; i < ID_THREADS; i++)
        rec[i].gate = &gate;
    kt_run_threads(ID_THREADS, record_id, rec, sizeof rec[0]);
    kt_gate_destroy(&gate);
    /* Sequential threads: the kernel may reuse TIDs, ids must still differ. */
    for (int i = ID_THREADS; i < 2 * ID_THREADS; i++)
        kt_run_threads(1, record_id, &rec[i], sizeof rec[0]);
    rec[2 * ID_THREADS].id = ks_thread_id();
    rec[2 * ID_THREADS].again = ks_thread_id();
    int n = 2 * ID_THREADS + 1;
    for (int i = 0; i < n; i++) {
        cr_assert_neq(rec[i].id, 0u, "thread %d has id 0", i);
        cr_assert_eq(rec[i].id, rec[i].again, "thread %d's id changed", i);
        for (int j = 0; j < i; j++)
            cr_assert_neq(rec[i].id, rec[j].id, "threads %d and %d share id 0x%llx", i, j,
                          (unsigned long long)rec[i].id);
    }
}

/* ---- a thread that exits holding it ------------------------------------------------- */

struct dead_owner {
    ks_rmutex_t *r;
    pid_t tid;
    int ret;
};

static void *lock_and_exit(void *p)
{
    struct dead_owner *a = p;
    a->tid = kt_gettid();
    a->ret = ks_rmutex_lock(a->r);
    return NULL;
}

struct probe {
    ks_rmutex_t *r;
    pid_t tid;
    int unlock_ret, trylock_ret, timed_ret;
};

static void *probe_main(void *p)
{
    struct probe *pr = p;
    pr->tid = kt_gettid();
    pr->unlock_ret = ks_rmutex_unlock(pr->r);
    pr->trylock_ret = ks_rmutex_trylock(pr->r);
    pr->timed_ret = ks_rmutex_timedlock(pr->r, ks_deadline_after(10 * KT_MS));
    return NULL;
}

/* Ask the kernel to hand out `tid` to the next task created (root only, and
 * racy against the rest of the system: best effort). */
static int set_next_tid(pid_t tid)
{
    int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
    if (fd < 0)
        return 0;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d", (int)tid - 1);
    int ok = write(fd, buf, (size_t)n) == n;
    close(fd);
    return ok;
}

Test(rmutex, thread_exiting_while_holding_leaves_it_locked_even_with_tid_reuse, .timeout = 30)
{
    ks_rmutex_t r = KS_RMUTEX_INIT;
    struct dead_owner dead = {&r, 0, -1};
    pthread_t t;
    kt_spawn(&t, lock_and_exit, &dead);
    kt_join(t);
    cr_assert_eq(dead.ret, 0);
    cr_assert_neq(owner_of(&r), 0u);

    int reused = 0;
    for (int attempt = 0; attempt < 20; attempt++) {
        int tried = set_next_tid(dead.tid);
        struct probe pr = {&r, 0, -1, -1, -1};
        kt_spawn(&t, probe_main, &pr);
        kt_join(t);
        cr_assert_eq(pr.unlock_ret, EPERM, "a new thread (tid %d, dead owner %d) unlocked it",
                     (int)pr.tid, (int)dead.tid);
        cr_assert_eq(pr.trylock_ret, EBUSY, "a new thread (tid %d) took it by trylock", (int)pr.tid);
        cr_assert_eq(pr.timed_ret, ETIMEDOUT);
        if (pr.tid == dead.tid) {
            reused = 1;
            break;
        }
        if (!tried)
            break;
    }
    cr_log_info("TID %s reused by a probe thread", reused ? "was" : "was not");
    /* The main thread is no owner either. */
    cr_assert_eq(ks_rmutex_unlock(&r), EPERM);
    cr_assert_eq(ks_rmutex_trylock(&r), EBUSY);
    cr_assert_eq(ks_rmutex_destroy(&r), EBUSY);
}

/* ---- fork ---------------------------------------------------------------------------- */

/* Issue 10 bug 3: the owner id was cached per thread and forgotten only by a
 * pthread_atfork handler, which _Fork() and a raw clone do not run: such a
 * child got trylock == 0 (depth 3) on the parent's held KS_SHARED lock, its
 * unlocks released the parent's lock, and the parent's own unlock then said
 * EPERM.  Every fork kind, private (a copy) and shared (the same lock). */
struct fork_owner {
    ks_rmutex_t r;
    uint64_t parent_id, child_id;
};

static int child_is_not_owner(void *p)
{
    struct fork_owner *f = p;
    f->child_id = ks_thread_id();
    if (f->child_id == f->parent_id || f->child_id == 0)
        return 1;
    if (ks_rmutex_unlock(&f->r) != EPERM)
        return 2;
    if (ks_rmutex_trylock(&f->r) != EBUSY)
        return 3;
    if (ks_rmutex_timedlock(&f->r, ks_deadline_after(10 * KT_MS)) != ETIMEDOUT)
        return 4;
    if (f->r.depth != 2)
        return 5;
    return 0;
}

static void run_fork_owner(enum kt_fork_kind kind, unsigned flags)
{
    struct fork_owner *f = kt_shared_alloc(sizeof *f);
    cr_assert_eq(ks_rmutex_init(&f->r, flags), 0);
    f->parent_id = ks_thread_id();
    cr_assert_eq(ks_rmutex_lock(&f->r), 0);
    cr_assert_eq(ks_rmutex_lock(&f->r), 0);
    kt_wait_child(kt_fork_as(kind, child_is_not_owner, f));
    /* The parent still owns it, twice, and its id did not change. */
    cr_assert_eq(ks_thread_id(), f->parent_id);
    cr_assert_eq(f->r.depth, 2u, "%s child changed the depth", kt_fork_names[kind]);
    cr_assert_eq(ks_rmutex_unlock(&f->r), 0, "%s child took the parent's ownership", kt_fork_names[kind]);
    cr_assert_eq(ks_rmutex_unlock(&f->r), 0);
    cr_assert_eq(ks_rmutex_unlock(&f->r), EPERM);
    cr_assert_eq(ks_rmutex_destroy(&f->r), 0);
    kt_shared_free(f, sizeof *f);
}

Test(rmutex, fork_child_does_not_own_the_parents_lock, .timeout = 30) { run_fork_owner(KT_FORK, 0); }
Test(rmutex, ufork_child_does_not_own_the_parents_lock, .timeout = 30) { run_fork_owner(KT_UFORK, 0); }
Test(rmutex, clone_child_does_not_own_the_parents_lock, .timeout = 30) { run_fork_owner(KT_RAW_CLONE, 0); }
Test(rmutex, ufork_child_does_not_own_the_parents_shared_lock, .timeout = 30)
{
    run_fork_owner(KT_UFORK, KS_SHARED);
}
Test(rmutex, clone_child_does_not_own_the_parents_shared_lock, .timeout = 30)
{
    run_fork_owner(KT_RAW_CLONE, KS_SHARED);
}

static int child_id(void *p)
{
    uint64_t *ids = p; /* shared: [0] parent's, [1] child's, [2] child's again */
    ids[1] = ks_thread_id();
    ids[2] = ks_thread_id();
    return ids[1] != 0 && ids[1] != ids[0] && ids[2] == ids[1] ? 0 : 1;
}

Test(rmutex, every_fork_kind_gives_the_child_a_new_stable_thread_id)
{
    uint64_t *ids = kt_shared_alloc(3 * sizeof *ids);
    ids[0] = ks_thread_id();
    for (int k = 0; k < KT_FORK_KINDS; k++) {
        kt_wait_child(kt_fork_as((enum kt_fork_kind)k, child_id, ids));
        cr_assert_neq(ids[1], ids[0], "%s child kept the parent's id", kt_fork_names[k]);
        cr_assert_eq(ks_thread_id(), ids[0]);
    }
    kt_shared_free(ids, 3 * sizeof *ids);
}

/* ---- many threads, with re-entry ---------------------------------------------------- */

struct rcounter {
    ks_rmutex_t r;
    long value;
    int inside, overlap, errors, iters;
    kt_gate_t gate;
};

static int nested(struct rcounter *c, int depth)
{
    int e = (depth % 2) ? ks_rmutex_trylock(&c->r) : ks_rmutex_lock(&c->r);
    if (e)
        return e;
    if (depth < 3) {
        e = nested(c, depth + 1);
        if (e)
            return e;
    } else {
        if (__atomic_fetch_add(&c->inside, 1, __ATOMIC_RELAXED) != 0)
            __atomic_add_fetch(&c->overlap, 1, __ATOMIC_RELAXED);
        c->value++;
        if (c->r.depth != 4)
            __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&c->inside, 1, __ATOMIC_RELAXED);
    }
    return ks_rmutex_unlock(&c->r);
}

static void *rcounter_main(void *p)
{
    struct rcounter *c = p;
    kt_gate_pass(&c->gate);
    for (int i = 0; i < c->iters; i++) {
        int e;
        if (i % 4 == 0) {
            e = ks_rmutex_timedlock(&c->r, ks_deadline_after(60 * KS_NSEC_PER_SEC));
            if (!e) {
                e = nested(c, 1);
                int e2 = ks_rmutex_unlock(&c->r);
                e = e ? e : e2;
            }
        } else {
            e = nested(c, 0);
        }
        if (i % 128 == 0)
            sched_yield();
        if (e)
            __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void run_rcounter(int nthreads, int total)
{
    struct rcounter *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    cr_assert_eq(ks_rmutex_init(&c->r, 0), 0);
    c->iters = total / nthreads;
    kt_gate_init(&c->gate, (unsigned)nthreads);
    pthread_t t[KT_MAX_THREADS];
    for (int i = 0; i < nthreads; i++)
        kt_spawn(&t[i], rcounter_main, c);
    for (int i = 0; i < nthreads; i++)
        kt_join(t[i]);
    cr_assert_eq(c->errors, 0);
    cr_assert_eq(c->overlap, 0);
    cr_assert_eq(c->value, (long)c->iters * nthreads);
    cr_assert_eq(owner_of(&c->r), 0u);
    cr_assert_eq(c->r.lock.state, 0u);
    cr_assert_eq(ks_rmutex_destroy(&c->r), 0);
    kt_gate_destroy(&c->gate);
    free(c);
}

Test(rmutex, exact_counter_with_reentry_4_threads, .timeout = 120) { run_rcounter(4, 50000); }
Test(rmutex, exact_counter_with_reentry_32_threads, .timeout = 120) { run_rcounter(32, 50000); }

/* ---- process-shared across fork() ---------------------------------------------------- */

#define SHM_ITERS 20000

struct shm_r {
    ks_rmutex_t r;
    long value;
    int overlap, inside;
};

static int shm_r_worker(void *p)
{
    struct shm_r *s = p;
    for (int i = 0; i < SHM_ITERS; i++) {
        if (ks_rmutex_lock(&s->r) || ks_rmutex_lock(&s->r))
            return 1;
        if (__atomic_fetch_add(&s->inside, 1, __ATOMIC_RELAXED) != 0)
            __atomic_add_fetch(&s->overlap, 1, __ATOMIC_RELAXED);
        s->value++;
        __atomic_sub_fetch(&s->inside, 1, __ATOMIC_RELAXED);
        if (ks_rmutex_unlock(&s->r) || ks_rmutex_unlock(&s->r))
            return 2;
        if (i % 256 == 0)
            sched_yield();
    }
    return 0;
}

static int shm_r_child_checks_owner(void *p)
{
    struct shm_r *s = p;
    /* The parent holds it: not ours to unlock, not free to take. */
    if (ks_rmutex_unlock(&s->r) != EPERM)
        return 10;
    if (ks_rmutex_trylock(&s->r) != EBUSY)
        return 11;
    /* Block until the parent lets go. */
    if (ks_rmutex_lock(&s->r) != 0)
        return 12;
    s->value = 99;
    if (ks_rmutex_unlock(&s->r) != 0)
        return 13;
    return shm_r_worker(p);
}

Test(rmutex, process_shared_across_fork, .timeout = 120)
{
    struct shm_r *s = kt_shared_alloc(sizeof *s);
    cr_assert_eq(ks_rmutex_init(&s->r, KS_SHARED), 0);
    cr_assert_eq(ks_rmutex_lock(&s->r), 0);
    pid_t pid = kt_fork(shm_r_child_checks_owner, s);
    cr_assert(kt_wait_child_in_futex(pid, 10 * KS_NSEC_PER_SEC), "child never blocked");
    cr_assert_eq(ks_rmutex_unlock(&s->r), 0);
    /* Wait for the child's 99, then race it. */
    int64_t end = ks_now() + 10 * KS_NSEC_PER_SEC;
    for (;;) {
        cr_assert_eq(ks_rmutex_lock(&s->r), 0);
        long v = s->value;
        cr_assert_eq(ks_rmutex_unlock(&s->r), 0);
        if (v >= 99)
            break;
        cr_assert_lt(ks_now(), end, "the child never got the lock");
        kt_sleep_ns(KT_MS);
    }
    int mine = shm_r_worker(s);
    kt_wait_child(pid);
    cr_assert_eq(mine, 0);
    cr_assert_eq(s->overlap, 0);
    cr_assert_eq(s->value, 99L + 2 * SHM_ITERS, "shared counter %ld", s->value);
    cr_assert_eq(owner_of(&s->r), 0u);
    cr_assert_eq(ks_rmutex_destroy(&s->r), 0);
    kt_shared_free(s, sizeof *s);
}

/* ---- ids and signal handlers, constructors and atfork handlers (issue 10 review) ----------- */

/* Made by constructors that run before the library's own (priority 101
 * comes before default-priority constructors in a static link), and by an
 * atfork child handler registered before the library's. */
static uint64_t ctor_id;
static uint64_t early_atfork_id;

static void early_atfork_child(void) { early_atfork_id = ks_thread_id(); }

__attribute__((constructor(101))) static void early_ctor(void)
{
    ctor_id = ks_thread_id();
    pthread_atfork(NULL, NULL, early_atfork_child);
}

/* An id made before the library's constructor ran used to have the nonce 0
 * (low bits 0x9e3779b9 for the first thread in every process), so two
 * processes whose threads reused a TID got the same id. */
Test(rmutex, ids_made_before_the_library_constructor_have_a_nonce)
{
    cr_assert_neq(ctor_id, 0u);
    cr_assert_neq((uint32_t)ctor_id, 0x9e3779b9u, "id %#llx made with the nonce 0",
                  (unsigned long long)ctor_id);
}

/* An atfork child handler registered before the library's asked for its id
 * in the child; the library's handler then drew a second generation, and
 * the same thread had a new id after fork() returned (an rmutex locked in
 * that handler was no longer its own). */
static int same_id_as_early_handler(void *p)
{
    (void)p;
    return early_atfork_id != 0 && ks_thread_id() == early_atfork_id ? 0 : 1;
}

Test(rmutex, one_id_per_thread_per_fork_child_whatever_the_atfork_order)
{
    for (int i = 0; i < 5; i++)
        kt_wait_child(kt_fork(same_id_as_early_handler, NULL));
}

/* A signal handler that asks for the id while its own thread is drawing the
 * child's generation (the word says BUSY) used to wait for itself for ever.
 * The test's getrandom() (it interposes libc's, as LD_PRELOAD would) raises
 * the signal exactly there. */
static volatile sig_atomic_t gr_inject;
static volatile uint64_t handler_id;

ssize_t getrandom(void *buf, size_t len, unsigned int flags)
{
    if (gr_inject) {
        gr_inject = 0;
        raise(SIGUSR1);
    }
    return syscall(SYS_getrandom, buf, len, flags);
}

static void id_in_handler(int sig)
{
    (void)sig;
    handler_id = ks_thread_id();
}

static int child_id_with_a_handler_in_the_draw(void *p)
{
    (void)p;
    alarm(10); /* a hang kills the child */
    handler_id = 0;
    gr_inject = 1;
    uint64_t id = ks_thread_id();
    if (gr_inject)
        return 1; /* the draw did not call getrandom: the test lost its point */
    if (handler_id == 0)
        return 2;
    return id == handler_id ? 0 : 3; /* one thread, one id */
}

Test(rmutex, signal_handler_asking_for_the_id_during_the_childs_first_draw, .timeout = 60)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = id_in_handler;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    (void)ks_thread_id();
    for (int k = KT_UFORK; k < KT_FORK_KINDS; k++) {
        pid_t pid = kt_fork_as((enum kt_fork_kind)k, child_id_with_a_handler_in_the_draw, NULL);
        kt_wait_child_named(pid, kt_fork_names[k]);
    }
}

/* ---- ks_rmutex_lock2: two at once in one global order (the bank transfer) ----------------- */

static int l2_lock(void *l) { return ks_rmutex_lock(l); }
static int l2_unlock(void *l) { return ks_rmutex_unlock(l); }
static int l2_trylock(void *l) { return ks_rmutex_trylock(l); }
static int l2_lock2(void *a, void *b) { return ks_rmutex_lock2(a, b); }
static int l2_timedlock2(void *a, void *b, int64_t d) { return ks_rmutex_timedlock2(a, b, d); }
static int l2_unlock2(void *a, void *b) { return ks_rmutex_unlock2(a, b); }
static const struct kt_lock2_ops l2_ops = {l2_lock, l2_unlock, l2_trylock, l2_lock2, l2_timedlock2, l2_unlock2};

Test(rmutex, lock2_in_opposite_orders_does_not_deadlock, .timeout = 120)
{
    static ks_rmutex_t locks[KT_ACCOUNTS] = {KS_RMUTEX_INIT, KS_RMUTEX_INIT, KS_RMUTEX_INIT, KS_RMUTEX_INIT};
    void *p[KT_ACCOUNTS] = {&locks[0], &locks[1], &locks[2], &locks[3]};
    kt_bank_run(&l2_ops, p, 16);
}

Test(rmutex, timedlock2_gives_back_the_first_when_the_second_times_out, .timeout = 30)
{
    static ks_rmutex_t x = KS_RMUTEX_INIT, y = KS_RMUTEX_INIT;
    kt_lock2_contract(&l2_ops, &x, &y);
}
