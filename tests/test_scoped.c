/* tests/test_scoped.c - the scoped guards of <ksync/scoped.h>: every way out
 * of a scope releases (falling off the end, return, goto, break, continue),
 * guards nest and release in reverse order, the block form runs its block
 * once and break leaves only the block, the timed forms run the block only
 * when the acquisition succeeded and report why not, each object kind
 * (mutex, rmutex, rwlock read and write, sem, pool) is held exactly while
 * its guard lives, mutual exclusion holds under 16 threads on 2 CPUs, and a
 * guard that cannot acquire or release aborts with a message naming the
 * call and the line instead of running unlocked. */
#include "helpers.h"

#include <ksync/scoped.h>

#include <string.h>
#include <sys/wait.h>

/* ---- probes: is the object held right now? -------------------------------------- */

static int mutex_free(ks_mutex_t *m)
{
    if (ks_mutex_trylock(m) != 0)
        return 0;
    cr_assert_eq(ks_mutex_unlock(m), 0);
    return 1;
}

/* A recursive mutex is free for the caller's own thread even when held by
 * it, so the probe asks another thread. */
static void *rmutex_probe(void *arg)
{
    ks_rmutex_t *r = arg;
    int e = ks_rmutex_trylock(r);
    if (e == 0)
        cr_assert_eq(ks_rmutex_unlock(r), 0);
    return (void *)(intptr_t)e;
}

static int rmutex_free(ks_rmutex_t *r)
{
    pthread_t t;
    kt_spawn(&t, rmutex_probe, r);
    return (intptr_t)kt_join(t) == 0;
}

static int rwlock_writable(ks_rwlock_t *l)
{
    if (ks_rwlock_trywrlock(l) != 0)
        return 0;
    cr_assert_eq(ks_rwlock_unlock(l), 0);
    return 1;
}

static int rwlock_readable(ks_rwlock_t *l)
{
    if (ks_rwlock_tryrdlock(l) != 0)
        return 0;
    cr_assert_eq(ks_rwlock_unlock(l), 0);
    return 1;
}

/* ---- every way out of a statement-form scope releases ----------------------------- */

static int take_and_leave(ks_mutex_t *m, int early)
{
    KS_SCOPED_LOCK(m);
    cr_assert(!mutex_free(m), "held inside the scope");
    if (early)
        return 10;
    return 12;
}

static int goto_out(ks_mutex_t *m)
{
    int n = 0;
    {
        KS_SCOPED_LOCK(m);
        n++;
        if (n == 1)
            goto done;
        n = 100;
    }
done:
    cr_assert(mutex_free(m), "goto out of the scope released the mutex");
    return n;
}

Test(scoped, statement_form_releases_on_every_way_out)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(take_and_leave(&m, 1), 10);
    cr_assert(mutex_free(&m), "early return released");
    cr_assert_eq(take_and_leave(&m, 0), 12);
    cr_assert(mutex_free(&m), "return at the end released");
    cr_assert_eq(goto_out(&m), 1);
    {
        KS_SCOPED_LOCK(&m);
        cr_assert(!mutex_free(&m));
    }
    cr_assert(mutex_free(&m), "falling off the end of the block released");
    for (int i = 0; i < 3; i++) {
        KS_SCOPED_LOCK(&m);
        if (i == 0)
            continue; /* leaves this pass's scope: released */
        if (i == 1)
            break;
    }
    cr_assert(mutex_free(&m), "continue and break out of a loop body released");
    cr_assert_eq(ks_mutex_destroy(&m), 0);
}

/* ---- the block form ------------------------------------------------------------ */

Test(scoped, block_form_runs_once_and_break_leaves_only_the_block)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    int runs = 0, outer = 0;
    ks_with_lock(&m) runs++; /* a statement, without braces */
    cr_assert_eq(runs, 1);
    cr_assert(mutex_free(&m));

    for (int i = 0; i < 5; i++) {
        outer++;
        ks_with_lock(&m) {
            cr_assert(!mutex_free(&m));
            if (i % 2)
                break; /* leaves the block, not the loop */
            if (i == 2)
                continue; /* also leaves only the block */
            runs++;
        }
        cr_assert(mutex_free(&m), "released after pass %d", i);
    }
    cr_assert_eq(outer, 5, "break inside the block did not leave the loop");
    cr_assert_eq(runs, 1 + 2, "passes 0 and 4 ran to the end of the block");
    cr_assert_eq(ks_mutex_destroy(&m), 0);
}

static int return_from_block(ks_mutex_t *m)
{
    ks_with_lock(m) {
        return 7;
    }
    return -1;
}

Test(scoped, block_form_releases_on_return_and_goto)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    cr_assert_eq(return_from_block(&m), 7);
    cr_assert(mutex_free(&m));
    ks_with_lock(&m) {
        goto after;
    }
    cr_assert_fail("goto did not leave the block");
after:
    cr_assert(mutex_free(&m));
}

/* Guards in one scope are released in reverse order of declaration (as C
 * destroys automatic objects): the pool's FIFO of returns shows the order. */
Test(scoped, nested_guards_release_in_reverse_order)
{
    void *res[2] = {(void *)1, (void *)2};
    ks_pool_t *p;
    cr_assert_eq(ks_pool_create(&p, res, 2, 0), 0);
    void *a = NULL, *b = NULL;
    {
        KS_SCOPED_BORROW(p, a);
        KS_SCOPED_BORROW(p, b);
        cr_assert_eq(a, (void *)1);
        cr_assert_eq(b, (void *)2);
        cr_assert_eq(ks_pool_available(p), 0);
    }
    cr_assert_eq(ks_pool_available(p), 2);
    void *first, *second;
    cr_assert_eq(ks_pool_borrow(p, 0, &first), 0);
    cr_assert_eq(ks_pool_borrow(p, 0, &second), 0);
    cr_assert_eq(first, (void *)2, "b, declared last, went back first");
    cr_assert_eq(second, (void *)1);
    cr_assert_eq(ks_pool_return(p, first), 0);
    cr_assert_eq(ks_pool_return(p, second), 0);

    ks_mutex_t m1 = KS_MUTEX_INIT, m2 = KS_MUTEX_INIT;
    ks_with_lock(&m1) ks_with_lock(&m2) {
        cr_assert(!mutex_free(&m1));
        cr_assert(!mutex_free(&m2));
    }
    cr_assert(mutex_free(&m1) && mutex_free(&m2));
    cr_assert_eq(ks_pool_destroy(p), 0);
}

/* ---- each kind of object ---------------------------------------------------------- */

Test(scoped, rmutex_guards_nest_on_one_lock)
{
    ks_rmutex_t r = KS_RMUTEX_INIT;
    {
        KS_SCOPED_RMUTEX(&r);
        {
            KS_SCOPED_RMUTEX(&r); /* depth 2 */
            ks_with_rmutex(&r) cr_assert(!rmutex_free(&r)); /* depth 3 */
            cr_assert(!rmutex_free(&r));
        }
        cr_assert(!rmutex_free(&r), "the outer guard still holds it");
    }
    cr_assert(rmutex_free(&r), "depth back to 0");
    cr_assert_eq(ks_rmutex_destroy(&r), 0);
}

Test(scoped, rwlock_read_and_write_guards)
{
    ks_rwlock_t l = KS_RWLOCK_INIT;
    {
        KS_SCOPED_RDLOCK(&l);
        cr_assert(rwlock_readable(&l), "a read guard lets other readers in");
        cr_assert(!rwlock_writable(&l), "and keeps writers out");
    }
    cr_assert(rwlock_writable(&l));
    ks_with_wrlock(&l) {
        cr_assert(!rwlock_readable(&l), "a write guard keeps readers out");
        cr_assert(!rwlock_writable(&l));
    }
    ks_with_rdlock(&l) cr_assert(!rwlock_writable(&l));
    cr_assert(rwlock_writable(&l) && rwlock_readable(&l));
    cr_assert_eq(ks_rwlock_destroy(&l), 0);
}

Test(scoped, sem_guard_takes_one_unit)
{
    ks_sem_t s = KS_SEM_INIT(2);
    {
        KS_SCOPED_SEM(&s);
        cr_assert_eq(ks_sem_value(&s), 1);
        ks_with_sem(&s) cr_assert_eq(ks_sem_value(&s), 0);
        cr_assert_eq(ks_sem_value(&s), 1);
    }
    cr_assert_eq(ks_sem_value(&s), 2);
    cr_assert_eq(ks_sem_destroy(&s), 0);
}

Test(scoped, borrow_guard_returns_what_it_borrowed)
{
    void *res[3] = {(void *)10, (void *)20, (void *)30};
    ks_pool_t *p;
    cr_assert_eq(ks_pool_create(&p, res, 3, 0), 0);
    void *r = NULL;
    {
        KS_SCOPED_BORROW(p, r);
        cr_assert_eq(r, (void *)10);
        cr_assert_eq(ks_pool_available(p), 2);
        r = (void *)0xbad; /* the block's own business: the guard kept the value */
    }
    cr_assert_eq(ks_pool_available(p), 3);
    void *r2 = NULL;
    ks_with_borrow(p, &r2) {
        cr_assert_eq(r2, (void *)20);
        cr_assert_eq(ks_pool_available(p), 2);
    }
    cr_assert_eq(ks_pool_available(p), 3);
    cr_assert_eq(ks_pool_destroy(p), 0, "nothing left borrowed");
}

/* ---- timed forms: the block runs only on success -------------------------------------- */

static void *hold_rmutex(void *arg)
{
    ks_rmutex_t *r = arg;
    cr_assert_eq(ks_rmutex_lock(r), 0);
    kt_sleep_ns(300 * KT_MS);
    cr_assert_eq(ks_rmutex_unlock(r), 0);
    return NULL;
}

#define SHORT (20 * KT_MS)

/* Runs `block_form` with a deadline SHORT from now on an object that stays
 * taken: the block must not run, rc must be ETIMEDOUT, the wait must have
 * lasted the deadline; then with rc NULL; then with a negative deadline. */
#define EXPECT_TIMEOUT(form, ...)                                                                  \
    do {                                                                                           \
        int rc_ = -1, ran_ = 0;                                                                    \
        int64_t t0_ = ks_now();                                                                    \
        form(__VA_ARGS__, ks_deadline_after(SHORT), &rc_) ran_ = 1;                                \
        int64_t waited_ = ks_now() - t0_;                                                          \
        cr_assert_eq(ran_, 0, #form ": the block ran without the object");                        \
        cr_assert_eq(rc_, ETIMEDOUT, #form ": rc %d", rc_);                                        \
        cr_assert_geq(waited_, SHORT - KT_MS, #form ": gave up after %lld ns", (long long)waited_); \
        form(__VA_ARGS__, 0, NULL) ran_ = 1; /* a past deadline is a try; rc may be NULL */       \
        cr_assert_eq(ran_, 0, #form ": the try ran without the object");                          \
        form(__VA_ARGS__, -1, &rc_) ran_ = 1;                                                      \
        cr_assert_eq(ran_, 0);                                                                     \
        cr_assert_eq(rc_, EINVAL, #form ": a negative deadline gave %d", rc_);                     \
    } while (0)

#define EXPECT_RUNS(form, ...)                                                                     \
    do {                                                                                           \
        int rc_ = -1, ran_ = 0;                                                                    \
        form(__VA_ARGS__, ks_deadline_after(SHORT), &rc_) ran_++;                                  \
        cr_assert_eq(ran_, 1, #form ": the block did not run on a free object");                  \
        cr_assert_eq(rc_, 0);                                                                      \
        form(__VA_ARGS__, 0, NULL) ran_++;                                                         \
        cr_assert_eq(ran_, 2, #form ": the try did not run on a free object");                    \
    } while (0)

Test(scoped, timed_forms_run_the_block_only_when_acquired, .timeout = 30)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    EXPECT_RUNS(ks_with_timedlock, &m);
    cr_assert(mutex_free(&m));
    cr_assert_eq(ks_mutex_lock(&m), 0);
    EXPECT_TIMEOUT(ks_with_timedlock, &m);
    cr_assert_eq(ks_mutex_unlock(&m), 0);
    cr_assert(mutex_free(&m), "a failed timed guard released nothing");

    ks_rmutex_t r = KS_RMUTEX_INIT;
    EXPECT_RUNS(ks_with_timedrmutex, &r);
    pthread_t t;
    kt_spawn(&t, hold_rmutex, &r);
    while (rmutex_free(&r))
        kt_sleep_ns(KT_MS);
    EXPECT_TIMEOUT(ks_with_timedrmutex, &r);
    kt_join(t);
    cr_assert(rmutex_free(&r));

    ks_rwlock_t l = KS_RWLOCK_INIT;
    EXPECT_RUNS(ks_with_timedrdlock, &l);
    EXPECT_RUNS(ks_with_timedwrlock, &l);
    cr_assert_eq(ks_rwlock_wrlock(&l), 0);
    EXPECT_TIMEOUT(ks_with_timedrdlock, &l);
    EXPECT_TIMEOUT(ks_with_timedwrlock, &l);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert_eq(ks_rwlock_rdlock(&l), 0);
    EXPECT_TIMEOUT(ks_with_timedwrlock, &l);
    cr_assert_eq(ks_rwlock_unlock(&l), 0);
    cr_assert(rwlock_writable(&l));

    ks_sem_t s = KS_SEM_INIT(1);
    EXPECT_RUNS(ks_with_timedsem, &s);
    cr_assert_eq(ks_sem_value(&s), 1);
    cr_assert_eq(ks_sem_wait(&s), 0);
    EXPECT_TIMEOUT(ks_with_timedsem, &s);
    cr_assert_eq(ks_sem_value(&s), 0, "a failed timed guard posted nothing");
    cr_assert_eq(ks_sem_post(&s), 0);

    void *res[1] = {(void *)5};
    ks_pool_t *p;
    cr_assert_eq(ks_pool_create(&p, res, 1, 0), 0);
    void *got = NULL;
    EXPECT_RUNS(ks_with_timedborrow, p, &got);
    cr_assert_eq(got, (void *)5);
    void *held;
    cr_assert_eq(ks_pool_borrow(p, 0, &held), 0);
    got = (void *)0x77;
    EXPECT_TIMEOUT(ks_with_timedborrow, p, &got);
    cr_assert_eq(got, (void *)0x77, "a failed borrow guard left the out-pointer alone");
    cr_assert_eq(ks_pool_return(p, held), 0);
    cr_assert_eq(ks_pool_destroy(p), 0, "a failed borrow guard returned nothing twice");
}

/* ---- under contention: 16 threads on 2 CPUs --------------------------------------- */

#define THREADS 16
#define ROUNDS 20000

struct shared {
    ks_mutex_t m;
    ks_sem_t s;
    ks_rwlock_t l;
    long counter; /* under m */
    long a, b;    /* under l: always equal to a reader */
    int active;   /* inside the sem's block: at most 3 */
    int peak;
    int bad;
};

static void *contend(void *arg)
{
    struct shared *c = arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (i % 2) {
            KS_SCOPED_LOCK(&c->m);
            c->counter++;
        } else {
            ks_with_lock(&c->m) c->counter++;
        }
        if (i % 8 == 0) {
            ks_with_sem(&c->s) {
                int a = __atomic_add_fetch(&c->active, 1, __ATOMIC_RELAXED);
                if (a > 3)
                    __atomic_store_n(&c->bad, 1, __ATOMIC_RELAXED);
                int p = __atomic_load_n(&c->peak, __ATOMIC_RELAXED);
                while (a > p && !__atomic_compare_exchange_n(&c->peak, &p, a, 0, __ATOMIC_RELAXED,
                                                             __ATOMIC_RELAXED))
                    ;
                sched_yield();
                __atomic_sub_fetch(&c->active, 1, __ATOMIC_RELAXED);
            }
        }
        if (i % 4 == 0) {
            ks_with_wrlock(&c->l) {
                c->a++;
                c->b++;
            }
        } else {
            KS_SCOPED_RDLOCK(&c->l);
            if (c->a != c->b)
                __atomic_store_n(&c->bad, 2, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

Test(scoped, mutual_exclusion_under_16_threads, .timeout = 120)
{
    struct shared c = {.m = KS_MUTEX_INIT, .s = KS_SEM_INIT(3), .l = KS_RWLOCK_INIT};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        kt_spawn(&t[i], contend, &c);
    for (int i = 0; i < THREADS; i++)
        kt_join(t[i]);
    cr_assert_eq(c.counter, (long)THREADS * ROUNDS, "lost increments under the guards");
    cr_assert_eq(c.bad, 0, "bad %d (1: more than 3 inside the sem, 2: a reader saw a torn pair)",
                 c.bad);
    cr_assert_leq(c.peak, 3);
    cr_assert_eq(c.a, (long)THREADS * ROUNDS / 4);
    cr_assert_eq(ks_sem_value(&c.s), 3);
    cr_assert(mutex_free(&c.m) && rwlock_writable(&c.l));
}

/* ---- a guard that cannot acquire or release aborts, naming the call and line ------------ */

/* Runs fn in a child with stderr on a pipe; the child must die of SIGABRT
 * and have printed a line containing `want` and this file's name. */
static void expect_abort(void (*fn)(void), const char *want)
{
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0); /* the guard let the code run: the parent sees status 0 */
    }
    close(fd[1]);
    char buf[512] = {0};
    size_t n = 0;
    ssize_t k;
    while (n < sizeof buf - 1 && (k = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)k;
    close(fd[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "status 0x%x, stderr: %s", st, buf);
    cr_assert(strstr(buf, want) != NULL, "stderr lacks \"%s\": %s", want, buf);
    cr_assert(strstr(buf, "test_scoped.c:") != NULL, "stderr names no line: %s", buf);
}

static volatile int reached;

static void lock_null(void)
{
    KS_SCOPED_LOCK((ks_mutex_t *)NULL);
    reached = 1;
}

static void block_on_null_sem(void)
{
    ks_with_sem((ks_sem_t *)NULL) reached = 1;
}

static void unlock_inside_the_guard(void)
{
    ks_mutex_t m = KS_MUTEX_INIT;
    KS_SCOPED_LOCK(&m);
    ks_mutex_unlock(&m); /* the guard's release will find it not held: EPERM */
}

static void post_inside_a_bounded_guard(void)
{
    ks_sem_t s;
    ks_sem_init_bounded(&s, 1, 1, 0);
    ks_with_sem(&s) ks_sem_post(&s); /* back at 1: the guard's post overflows */
}

Test(scoped, untimed_guard_aborts_instead_of_running_unlocked, .timeout = 60)
{
    expect_abort(lock_null, "ks_mutex_lock failed");
    expect_abort(block_on_null_sem, "ks_sem_wait failed");
    expect_abort(unlock_inside_the_guard, "ks_mutex_unlock failed");
    expect_abort(post_inside_a_bounded_guard, "ks_sem_post failed");
    cr_assert_eq(reached, 0);
}

/* ---- a compiler without the cleanup attribute gets a clear error ------------------- */

/* No compiler on the machine lacks the attribute, so the test makes GCC
 * answer 0 to __has_attribute and checks that the header stops with its own
 * message (naming the attribute and the paired calls) and not with a
 * cascade of errors further down. */
Test(scoped, missing_cleanup_attribute_is_one_clear_error, .timeout = 60)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    cr_assert_not_null(slash, "__FILE__ %s has no directory", __FILE__);
    *slash = 0; /* tests/ */
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "echo '#include <ksync/scoped.h>' | ${CC:-cc} -std=c11 -I%s/../include "
             "'-D__has_attribute(x)=0' -x c -fsyntax-only - 2>&1",
             dir);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    char out[4096] = {0};
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    int st = pclose(f);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "the header compiled without the attribute: %s",
              out);
    cr_assert(strstr(out, "needs __attribute__((cleanup))") != NULL, "no clear message: %s", out);
    cr_assert(strstr(out, "paired calls") != NULL, "the message names no way out: %s", out);
    int errors = 0;
    for (const char *p = out; (p = strstr(p, "error:")) != NULL; p++)
        errors++;
    cr_assert_eq(errors, 1, "%d errors, want the one #error: %s", errors, out);
}
