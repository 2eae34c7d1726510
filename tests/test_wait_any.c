/* tests/test_wait_any.c - ks_wait_any: every error with careless arguments;
 * each kind ready at once and woken from another thread; a timeout that
 * takes no unit and leaves no registration; event pulses; semaphores shared
 * with plain waiters (no unit lost, no waiter stranded, 16 threads on 2
 * CPUs); private and shared objects in one set; a channel whose last sender
 * is SIGKILLed; one object that is always ready does not starve another;
 * 64 objects.  docs/wait_any.md. */
#include "helpers.h"

#include <ksync/wait_any.h>

static unsigned waiters_of(const ks_sem_t *s)
{
    return (unsigned)(__atomic_load_n(&s->state, __ATOMIC_RELAXED) >> 32);
}

Test(wait_any, careless_arguments)
{
    ks_event_t e = KS_EVENT_INIT;
    ks_sem_t s = KS_SEM_INIT(0);
    struct ks_any set[KS_ANY_MAX + 1];
    unsigned i = 77;
    for (unsigned k = 0; k <= KS_ANY_MAX; k++)
        set[k] = (struct ks_any){KS_ANY_EVENT, &e};
    cr_assert_eq(ks_wait_any(NULL, 1, 0, &i), EINVAL);
    cr_assert_eq(ks_wait_any(set, 1, 0, NULL), EINVAL);
    cr_assert_eq(ks_wait_any(set, 0, 0, &i), EINVAL);
    cr_assert_eq(ks_wait_any(set, KS_ANY_MAX + 1, 0, &i), EINVAL);
    cr_assert_eq(ks_wait_any(set, 1, -1, &i), EINVAL);
    set[0].obj = NULL;
    cr_assert_eq(ks_wait_any(set, 1, 0, &i), EINVAL);
    set[0] = (struct ks_any){0, &e};
    cr_assert_eq(ks_wait_any(set, 1, 0, &i), EINVAL);
    set[0] = (struct ks_any){99, &e};
    cr_assert_eq(ks_wait_any(set, 1, 0, &i), EINVAL);
    set[0] = (struct ks_any){KS_ANY_SEM, &s};
    set[1] = (struct ks_any){KS_ANY_SEM, &s};
    cr_assert_eq(ks_wait_any(set, 2, 0, &i), EINVAL, "one semaphore twice");
    cr_assert_eq(i, 77, "index untouched on errors");
    ks_channel_t *rx;
    cr_assert_eq(ks_channel_create(NULL, 4096, 100, KS_CHANNEL_RECV, &rx), 0);
    set[0] = (struct ks_any){KS_ANY_SEND, rx};
    cr_assert_eq(ks_wait_any(set, 1, 0, &i), EPERM, "a receive-only handle is never writable");
    /* an error after a semaphore was registered takes no unit and leaves no waiter */
    set[0] = (struct ks_any){KS_ANY_SEM, &s};
    set[1] = (struct ks_any){KS_ANY_SEND, rx};
    for (int k = 0; k < 4; k++)
        cr_assert_eq(ks_wait_any(set, 2, 0, &i), EPERM);
    cr_assert_eq(waiters_of(&s), 0);
    ks_channel_close(rx);
    /* 64 objects */
    for (unsigned k = 0; k < KS_ANY_MAX; k++)
        set[k] = (struct ks_any){KS_ANY_EVENT, k == 41 ? (void *)&e : (void *)malloc(sizeof(ks_event_t))};
    for (unsigned k = 0; k < KS_ANY_MAX; k++)
        if (k != 41)
            ks_event_init(set[k].obj, 0);
    ks_event_set(&e);
    cr_assert_eq(ks_wait_any(set, KS_ANY_MAX, 0, &i), 0);
    cr_assert_eq(i, 41);
    for (unsigned k = 0; k < KS_ANY_MAX; k++)
        if (k != 41)
            free(set[k].obj);
}

Test(wait_any, ready_at_once_and_timeout)
{
    ks_event_t e = KS_EVENT_INIT;
    ks_sem_t s = KS_SEM_INIT(0);
    ks_channel_t *rx, *tx;
    cr_assert_eq(ks_channel_create(NULL, 4096, 1000, KS_CHANNEL_RECV, &rx), 0);
    cr_assert_eq(ks_channel_open_fd(ks_channel_fd(rx), KS_CHANNEL_SEND, &tx), 0);
    struct ks_any set[] = {{KS_ANY_EVENT, &e}, {KS_ANY_SEM, &s}, {KS_ANY_RECV, rx}};
    unsigned i = 99;
    int64_t t0 = ks_now();
    cr_assert_eq(ks_wait_any(set, 3, t0 + 50 * KT_MS, &i), ETIMEDOUT);
    int64_t waited = ks_now() - t0;
    cr_assert_geq(waited, 50 * KT_MS);
    cr_assert_lt(waited, 50 * KT_MS + KT_LATE_NS);
    cr_assert_eq(i, 99);
    cr_assert_eq(waiters_of(&s), 0, "no registration left behind");
    cr_assert_eq(ks_wait_any(set, 3, 0, &i), ETIMEDOUT, "a deadline already past: one look");

    cr_assert_eq(ks_sem_post(&s), 0);
    cr_assert_eq(ks_wait_any(set, 3, 0, &i), 0);
    cr_assert_eq(i, 1);
    cr_assert_eq(ks_sem_trywait(&s), EAGAIN, "the unit was taken for the caller");

    cr_assert_eq(ks_channel_send(tx, "m", 1, 0), 0);
    cr_assert_eq(ks_wait_any(set, 3, 0, &i), 0);
    cr_assert_eq(i, 2);
    cr_assert_eq(ks_wait_any(set, 3, 0, &i), 0, "level-triggered: still readable");
    char b[8];
    size_t n;
    cr_assert_eq(ks_channel_recv(rx, b, sizeof b, &n, 0), 0);

    struct ks_any out[] = {{KS_ANY_SEND, tx}};
    cr_assert_eq(ks_wait_any(out, 1, 0, &i), 0, "room for a 1000-byte message");
    char big[1000] = {0};
    while (ks_channel_send(tx, big, sizeof big, 0) == 0)
        ;
    cr_assert_eq(ks_wait_any(out, 1, ks_deadline_after(20 * KT_MS), &i), ETIMEDOUT, "full");

    ks_event_set(&e);
    cr_assert_eq(ks_wait_any(set, 2, 0, &i), 0);
    cr_assert_eq(i, 0);
    ks_channel_close(tx);
    ks_channel_close(rx);
}

struct waker {
    int kind;
    void *obj;
    int64_t at;
};

static void *wake_later(void *p)
{
    struct waker *w = p;
    kt_sleep_ns(30 * KT_MS);
    w->at = ks_now();
    char big[1000];
    size_t n;
    switch (w->kind) {
    case KS_ANY_EVENT: ks_event_set(w->obj); break;
    case KS_ANY_SEM: ks_sem_post(w->obj); break;
    case KS_ANY_RECV: ks_channel_send(w->obj, "x", 1, KS_FOREVER); break;
    case KS_ANY_SEND: ks_channel_recv(w->obj, big, sizeof big, &n, KS_FOREVER); break;
    case 0: /* a pulse: set and clear at once */
        ks_event_set(w->obj);
        ks_event_clear(w->obj);
        break;
    }
    return NULL;
}

Test(wait_any, woken_by_each_kind, .timeout = 60)
{
    ks_event_t e = KS_EVENT_INIT, shared_e;
    ks_sem_t s = KS_SEM_INIT(0);
    ks_event_init(&shared_e, KS_SHARED);
    ks_channel_t *rx, *tx, *rx2, *tx2;
    cr_assert_eq(ks_channel_create(NULL, 4096, 1000, KS_CHANNEL_RECV, &rx), 0);
    cr_assert_eq(ks_channel_open_fd(ks_channel_fd(rx), KS_CHANNEL_SEND, &tx), 0);
    cr_assert_eq(ks_channel_create(NULL, 4096, 1000, KS_CHANNEL_RECV, &rx2), 0);
    cr_assert_eq(ks_channel_open_fd(ks_channel_fd(rx2), KS_CHANNEL_SEND, &tx2), 0);
    char big[1000] = {0};
    while (ks_channel_send(tx2, big, sizeof big, 0) == 0)
        ; /* tx2 full: writable only once the waker receives */
    struct ks_any set[] = {{KS_ANY_EVENT, &e}, {KS_ANY_SEM, &s}, {KS_ANY_RECV, rx}, {KS_ANY_SEND, tx2},
                           {KS_ANY_EVENT, &shared_e}};
    struct {
        int kind;
        void *obj;
        unsigned want;
    } cases[] = {{KS_ANY_EVENT, &e, 0}, {KS_ANY_SEM, &s, 1}, {KS_ANY_RECV, tx, 2}, {KS_ANY_SEND, rx2, 3},
                 {0, &shared_e, 4}};
    for (unsigned c = 0; c < 5; c++) {
        struct waker w = {cases[c].kind, cases[c].obj, 0};
        pthread_t t;
        kt_spawn(&t, wake_later, &w);
        unsigned i = 99;
        int r = ks_wait_any(set, 5, ks_deadline_after(5000 * KT_MS), &i);
        int64_t done = ks_now();
        kt_join(t);
        cr_assert_eq(r, 0, "case %u: %s", c, strerror(r));
        cr_assert_eq(i, cases[c].want, "case %u: index %u", c, i);
        cr_assert_lt(done - w.at, KT_LATE_NS, "case %u: woken after %lld ms", c, (long long)((done - w.at) / KT_MS));
        /* consume what made it ready */
        size_t n;
        if (c == 0)
            ks_event_clear(&e);
        if (c == 2)
            cr_assert_eq(ks_channel_recv(rx, big, sizeof big, &n, 0), 0);
        if (c == 3)
            while (ks_channel_send(tx2, big, sizeof big, 0) == 0)
                ;
    }
    cr_assert_eq(waiters_of(&s), 0);
    ks_channel_close(tx);
    ks_channel_close(rx);
    ks_channel_close(tx2);
    ks_channel_close(rx2);
}

/* Semaphores shared by ks_wait_any callers and plain ks_sem_wait callers,
 * 24 threads on 2 CPUs: every unit posted is taken (a wake absorbed by a
 * wait_any caller that took another semaphore's unit, or none, must be
 * handed on; otherwise units stay in a semaphore while its waiters sleep,
 * and the count stops short). */
enum { SA_ANY = 8, SA_PLAIN = 8 };
struct sems {
    ks_sem_t a, b;
    long total, taken;
    int done, fails;
};

static int sems_take_one(struct sems *x, int which)
{
    if (which == 2) {
        struct ks_any set[] = {{KS_ANY_SEM, &x->a}, {KS_ANY_SEM, &x->b}};
        unsigned i;
        return ks_wait_any(set, 2, ks_deadline_after(30000 * KT_MS), &i);
    }
    return ks_sem_timedwait(which ? &x->b : &x->a, ks_deadline_after(30000 * KT_MS));
}

struct sem_consumer {
    struct sems *x;
    int which; /* 0: plain on a, 1: plain on b, 2: wait_any on both */
};

static void *sem_consumer(void *p)
{
    struct sem_consumer *c = p;
    struct sems *x = c->x;
    for (;;) {
        if (sems_take_one(x, c->which)) {
            __atomic_fetch_add(&x->fails, 1, __ATOMIC_RELAXED);
            return NULL;
        }
        if (__atomic_load_n(&x->done, __ATOMIC_ACQUIRE)) /* acquire: pairs with the test's release */
            return NULL; /* one of the units that release the stragglers */
        __atomic_fetch_add(&x->taken, 1, __ATOMIC_SEQ_CST);
    }
}

Test(wait_any, semaphores_shared_with_plain_waiters_lose_nothing, .timeout = 120)
{
    static struct sems x = {KS_SEM_INIT(0), KS_SEM_INIT(0), 0, 0, 0, 0};
    x.total = 40000 / KT_SLOW;
    struct sem_consumer c[SA_ANY + 2 * SA_PLAIN];
    pthread_t t[SA_ANY + 2 * SA_PLAIN];
    for (int k = 0; k < SA_ANY + 2 * SA_PLAIN; k++) {
        c[k] = (struct sem_consumer){&x, k < SA_ANY ? 2 : (k - SA_ANY) % 2};
        kt_spawn(&t[k], sem_consumer, &c[k]);
    }
    for (long k = 0; k < x.total; k++) {
        cr_assert_eq(ks_sem_post(k % 3 == 0 ? &x.b : &x.a), 0);
        if (k % 64 == 0)
            sched_yield();
    }
    int64_t end = ks_now() + 20000 * KT_MS;
    while (__atomic_load_n(&x.taken, __ATOMIC_SEQ_CST) < x.total && ks_now() < end)
        kt_sleep_ns(KT_MS);
    long taken = __atomic_load_n(&x.taken, __ATOMIC_SEQ_CST);
    /* release every consumer: done first, then a unit for each on each semaphore */
    __atomic_store_n(&x.done, 1, __ATOMIC_RELEASE);
    for (int k = 0; k < SA_ANY + 2 * SA_PLAIN; k++) {
        ks_sem_post(&x.a);
        ks_sem_post(&x.b);
    }
    for (int k = 0; k < SA_ANY + 2 * SA_PLAIN; k++)
        kt_join(t[k]);
    cr_assert_eq(taken, x.total, "%ld of %ld units taken: units left with their waiters asleep", taken, x.total);
    cr_assert_eq(x.fails, 0);
    cr_assert_eq(waiters_of(&x.a), 0);
    cr_assert_eq(waiters_of(&x.b), 0);
}

Test(wait_any, a_busy_object_does_not_starve_another)
{
    ks_event_t e1 = KS_EVENT_INIT, e2 = KS_EVENT_INIT;
    ks_event_set(&e1);
    ks_event_set(&e2);
    struct ks_any set[] = {{KS_ANY_EVENT, &e1}, {KS_ANY_EVENT, &e2}};
    int seen[2] = {0, 0};
    for (int k = 0; k < 100; k++) {
        unsigned i;
        cr_assert_eq(ks_wait_any(set, 2, 0, &i), 0);
        seen[i]++;
    }
    cr_assert_gt(seen[0], 0);
    cr_assert_gt(seen[1], 0);
}

static int attach_then_sleep(void *p)
{
    ks_channel_t *tx;
    if (ks_channel_open_fd(*(int *)p, KS_CHANNEL_SEND, &tx))
        return 1;
    if (ks_channel_send(tx, "r", 1, KS_FOREVER))
        return 2;
    pause();
    return 3;
}

struct killer {
    pid_t pid;
    int64_t at;
};

static void *kill_later(void *p)
{
    struct killer *k = p;
    kt_sleep_ns(30 * KT_MS);
    k->at = ks_now();
    kill(k->pid, SIGKILL);
    return NULL;
}

Test(wait_any, a_channel_whose_last_sender_dies_is_ready, .timeout = 60)
{
    ks_event_t never = KS_EVENT_INIT;
    ks_channel_t *rx;
    cr_assert_eq(ks_channel_create(NULL, 4096, 100, KS_CHANNEL_RECV, &rx), 0);
    int fd = ks_channel_fd(rx);
    pid_t pid = kt_fork(attach_then_sleep, &fd);
    char b[8];
    size_t n;
    cr_assert_eq(ks_channel_recv(rx, b, sizeof b, &n, ks_deadline_after(5000 * KT_MS)), 0);
    struct ks_any set[] = {{KS_ANY_EVENT, &never}, {KS_ANY_RECV, rx}};
    unsigned i = 99;
    cr_assert_eq(ks_wait_any(set, 2, ks_deadline_after(50 * KT_MS), &i), ETIMEDOUT, "the sender is alive");
    pthread_t t;
    struct killer k = {pid, 0};
    kt_spawn(&t, kill_later, &k); /* while this thread sleeps in ks_wait_any */
    cr_assert_eq(ks_wait_any(set, 2, ks_deadline_after(10000 * KT_MS), &i), 0);
    int64_t done = ks_now();
    kt_join(t);
    cr_assert_eq(i, 1);
    cr_assert_lt(done - k.at, KT_LATE_NS, "learned it after %lld ms", (long long)((done - k.at) / KT_MS));
    cr_assert_eq(ks_channel_recv(rx, b, sizeof b, &n, 0), EPIPE);
    int st;
    waitpid(pid, &st, 0);
    ks_channel_close(rx);
}

/* The wake a ks_wait_any caller absorbs and does not use is handed on.
 * Deterministic order, all three threads on CPU 0 and this one SCHED_FIFO
 * (so that the woken threads run only once it sleeps):
 *   W: ks_wait_any({b, a}) asleep, queued on a's word before P;
 *   P: ks_sem_timedwait(a) asleep;
 *   this thread posts a (the kernel wakes W, first in a's queue), then b
 *   (its wake finds nobody: W has left every queue);
 *   W runs, looks at b first (its first call scans from index 0), takes b's
 *   unit, and must hand a's wake to P, or P sleeps beside a's unit until its
 *   deadline. */
struct absorb {
    ks_sem_t a, b;
    pid_t wtid, ptid;
    int wrc, prc;
    unsigned widx;
    int64_t pdone;
};

static void pin_cpu0(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    cr_assert_eq(sched_setaffinity(0, sizeof set, &set), 0);
}

static void *absorb_w(void *p)
{
    struct absorb *x = p;
    pin_cpu0();
    struct ks_any set[] = {{KS_ANY_SEM, &x->b}, {KS_ANY_SEM, &x->a}};
    __atomic_store_n(&x->wtid, kt_gettid(), __ATOMIC_RELEASE);
    x->wrc = ks_wait_any(set, 2, ks_deadline_after(5000 * KT_MS), &x->widx);
    return NULL;
}

static void *absorb_p(void *p)
{
    struct absorb *x = p;
    pin_cpu0();
    __atomic_store_n(&x->ptid, kt_gettid(), __ATOMIC_RELEASE);
    x->prc = ks_sem_timedwait(&x->a, ks_deadline_after(2000 * KT_MS));
    x->pdone = ks_now(); /* a stranded P takes the unit at its deadline: 2 s late */
    return NULL;
}

static pid_t tid_of(pid_t *t)
{
    pid_t v;
    while (!(v = __atomic_load_n(t, __ATOMIC_ACQUIRE)))
        kt_sleep_ns(KT_MS);
    return v;
}

Test(wait_any, an_absorbed_semaphore_wake_is_handed_on, .timeout = 60)
{
    struct absorb x = {KS_SEM_INIT(0), KS_SEM_INIT(0), 0, 0, -1, -1, 9, 0};
    pin_cpu0();
    struct sched_param sp = {.sched_priority = 1};
    if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp))
        cr_skip_test("needs SCHED_FIFO (root)");
    pthread_t w, p;
    kt_spawn(&w, absorb_w, &x);
    cr_assert(kt_wait_in_futex(tid_of(&x.wtid), 5000 * KT_MS));
    kt_spawn(&p, absorb_p, &x);
    cr_assert(kt_wait_in_futex(tid_of(&x.ptid), 5000 * KT_MS));
    int64_t posted = ks_now();
    cr_assert_eq(ks_sem_post(&x.a), 0);
    cr_assert_eq(ks_sem_post(&x.b), 0);
    sp.sched_priority = 0;
    pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp);
    kt_join(w);
    kt_join(p);
    cr_assert_eq(x.wrc, 0);
    cr_assert_eq(x.prc, 0, "%s (W took %u)", strerror(x.prc), x.widx);
    cr_assert_lt(x.pdone - posted, 1000 * KT_MS, "P slept %lld ms beside a's unit (W took %u)",
                 (long long)((x.pdone - posted) / KT_MS), x.widx);
    cr_assert_eq(ks_sem_trywait(&x.a) + ks_sem_trywait(&x.b), 2 * EAGAIN, "both units taken once");
}

/* A channel side whose lock another thread holds (a peek, a reservation)
 * is not ready: the review found ks_wait_any answering "ready" at once,
 * 700 000 times in 0.8 s, while the caller's receive could not get in. */
struct holder {
    ks_channel_t *ch;
    int send;
    int64_t released;
};

static void *hold_side(void *p)
{
    struct holder *h = p;
    const void *q;
    void *w;
    size_t n;
    if (h->send)
        cr_assert_eq(ks_channel_reserve(h->ch, 10, &w, 0), 0);
    else
        cr_assert_eq(ks_channel_peek(h->ch, &q, &n, 0), 0);
    kt_sleep_ns(300 * KT_MS);
    h->released = ks_now();
    if (h->send)
        cr_assert_eq(ks_channel_cancel(h->ch), 0);
    else
        cr_assert_eq(ks_channel_cancel(h->ch), 0); /* the message stays */
    return NULL;
}

Test(wait_any, a_side_held_by_a_peek_or_a_reservation_is_not_ready, .timeout = 60)
{
    ks_channel_t *rx, *tx, *rx2, *tx2;
    cr_assert_eq(ks_channel_create(NULL, 4096, 100, KS_CHANNEL_RECV, &rx), 0);
    cr_assert_eq(ks_channel_open_fd(ks_channel_fd(rx), KS_CHANNEL_SEND, &tx), 0);
    cr_assert_eq(ks_channel_open_fd(ks_channel_fd(rx), KS_CHANNEL_RECV, &rx2), 0);
    cr_assert_eq(ks_channel_open_fd(ks_channel_fd(rx), KS_CHANNEL_SEND, &tx2), 0);
    cr_assert_eq(ks_channel_send(tx, "a", 1, 0), 0);
    for (int send = 0; send < 2; send++) {
        struct holder h = {send ? tx2 : rx2, send, 0};
        pthread_t t;
        kt_spawn(&t, hold_side, &h);
        kt_sleep_ns(50 * KT_MS); /* it holds the side now */
        struct ks_any set[] = {{send ? KS_ANY_SEND : KS_ANY_RECV, send ? (void *)tx : (void *)rx}};
        unsigned i;
        int64_t cpu0 = kt_thread_cpu_ns();
        cr_assert_eq(ks_wait_any(set, 1, ks_deadline_after(5000 * KT_MS), &i), 0);
        int64_t done = ks_now(), cpu = kt_thread_cpu_ns() - cpu0;
        kt_join(t);
        cr_assert_geq(done, h.released, "%s: ready while the other thread held the side", send ? "send" : "recv");
        cr_assert_lt(done - h.released, KT_LATE_NS);
        cr_assert_lt(cpu, 100 * KT_MS * KT_SLOW, "%s: %lld ms of CPU while waiting", send ? "send" : "recv",
                     (long long)(cpu / KT_MS));
    }
    /* this thread's own peek: the receive would say EDEADLK, so ready */
    const void *q;
    size_t n;
    cr_assert_eq(ks_channel_peek(rx, &q, &n, 0), 0);
    struct ks_any mine[] = {{KS_ANY_RECV, rx}};
    unsigned i;
    cr_assert_eq(ks_wait_any(mine, 1, ks_deadline_after(1000 * KT_MS), &i), 0);
    cr_assert_eq(ks_channel_release(rx), 0);
    ks_channel_close(tx2);
    ks_channel_close(rx2);
    ks_channel_close(tx);
    ks_channel_close(rx);
}

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>

/* futex_waitv refused with EPERM (a seccomp filter, as older container
 * runtimes install): the waits must sleep in slices, not spin (the review
 * measured 390 ms of CPU in a 500 ms wait). */
static int refuse_waitv_then_wait(void *p)
{
    (void)p;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 449, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
        return 50; /* no seccomp here */
    ks_event_t e = KS_EVENT_INIT;
    ks_channel_t *rx, *tx;
    if (ks_channel_create(NULL, 4096, 100, KS_CHANNEL_RECV, &rx) ||
        ks_channel_open_fd(ks_channel_fd(rx), KS_CHANNEL_SEND, &tx))
        return 2;
    struct ks_any set[] = {{KS_ANY_EVENT, &e}, {KS_ANY_RECV, rx}};
    unsigned i;
    int64_t cpu0 = kt_thread_cpu_ns();
    if (ks_wait_any(set, 2, ks_deadline_after(300 * KT_MS), &i) != ETIMEDOUT)
        return 3;
    char b[8];
    size_t n;
    if (ks_channel_recv(rx, b, sizeof b, &n, ks_deadline_after(300 * KT_MS)) != ETIMEDOUT)
        return 4;
    int64_t cpu = kt_thread_cpu_ns() - cpu0;
    return cpu < 100 * KT_MS * KT_SLOW ? 0 : 5;
}

Test(wait_any, futex_waitv_refused_by_seccomp_sleeps_in_slices, .timeout = 60)
{
    pid_t pid = kt_fork(refuse_waitv_then_wait, NULL);
    int st;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 50)
        cr_skip_test("no seccomp filters here");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x (5: it spun)", st);
}

/* ---- queues: KS_ANY_GET, KS_ANY_PUT ---- */

static uint32_t side_sleepers(const ks_queue_side_t *side)
{
    return __atomic_load_n(&side->sleepers, __ATOMIC_RELAXED);
}

struct qwaker {
    ks_queue_t *q;
    int what; /* 0 put, 1 get, 2 close */
    int64_t at;
};

static void *queue_later(void *p)
{
    struct qwaker *w = p;
    kt_sleep_ns(30 * KT_MS);
    w->at = ks_now();
    void *item;
    switch (w->what) {
    case 0: cr_assert_eq(ks_queue_put(w->q, (void *)7), 0); break; /* the header's inline path */
    case 1: cr_assert_eq(ks_queue_get(w->q, &item), 0); break;
    default: cr_assert_eq(ks_queue_close(w->q), 0); break;
    }
    return NULL;
}

/* Sleep in ks_wait_any on one side of q until queue_later's `what` wakes it. */
static void queue_woken(ks_queue_t *q, unsigned kind, int what)
{
    ks_event_t never = KS_EVENT_INIT;
    struct ks_any set[] = {{KS_ANY_EVENT, &never}, {kind, q}};
    unsigned i = 99;
    cr_assert_eq(ks_wait_any(set, 2, 0, &i), ETIMEDOUT, "not ready before the waker");
    struct qwaker w = {q, what, 0};
    pthread_t t;
    kt_spawn(&t, queue_later, &w);
    int r = ks_wait_any(set, 2, ks_deadline_after(5000 * KT_MS), &i);
    int64_t done = ks_now();
    kt_join(t);
    cr_assert_eq(r, 0, "kind %u, waker %d: %s", kind, what, strerror(r));
    cr_assert_eq(i, 1);
    cr_assert_lt(done - w.at, KT_LATE_NS, "woken after %lld ms", (long long)((done - w.at) / KT_MS));
    cr_assert_eq(side_sleepers(&q->getters), 0, "the watch ended");
    cr_assert_eq(side_sleepers(&q->putters), 0, "the watch ended");
}

Test(wait_any, a_queue_side_is_ready_and_woken, .timeout = 60)
{
    for (unsigned flags = 0; flags <= KS_SHARED; flags++) {
        ks_queue_t *q;
        cr_assert_eq(ks_queue_create(&q, 2, flags), 0);
        struct ks_any get[] = {{KS_ANY_GET, q}}, put[] = {{KS_ANY_PUT, q}};
        unsigned i = 99;
        /* empty: writable, not readable; the timeout leaves no watcher */
        cr_assert_eq(ks_wait_any(put, 1, 0, &i), 0);
        cr_assert_eq(ks_wait_any(get, 1, ks_deadline_after(5 * KT_MS), &i), ETIMEDOUT);
        cr_assert_eq(side_sleepers(&q->getters), 0);
        /* a put wakes a watcher of the getters' side; level-triggered: the
         * item is still there for the caller */
        queue_woken(q, KS_ANY_GET, 0);
        void *item = NULL;
        cr_assert_eq(ks_queue_tryget(q, &item), 0);
        cr_assert_eq(item, (void *)7);
        /* full: readable, not writable; a get wakes a watcher of the putters */
        cr_assert_eq(ks_queue_put(q, (void *)1), 0);
        cr_assert_eq(ks_queue_put(q, (void *)2), 0);
        cr_assert_eq(ks_wait_any(get, 1, 0, &i), 0);
        cr_assert_eq(ks_wait_any(put, 1, 0, &i), ETIMEDOUT);
        queue_woken(q, KS_ANY_PUT, 1);
        cr_assert_eq(ks_queue_put(q, (void *)3), 0);
        /* close wakes the putters' watcher of a full queue ... */
        queue_woken(q, KS_ANY_PUT, 2);
        cr_assert_eq(ks_queue_tryput(q, (void *)4), EPIPE);
        cr_assert_eq(ks_queue_destroy(q), 0);
        /* ... and the getters' watcher of an empty one: get answers EPIPE */
        cr_assert_eq(ks_queue_create(&q, 2, flags), 0);
        queue_woken(q, KS_ANY_GET, 2);
        cr_assert_eq(ks_queue_tryget(q, &item), EPIPE);
        cr_assert_eq(ks_queue_destroy(q), 0);
    }
    ks_queue_t *q;
    cr_assert_eq(ks_queue_create(&q, 2, 0), 0);
    struct ks_any bad[] = {{KS_ANY_GET, NULL}};
    unsigned i;
    cr_assert_eq(ks_wait_any(bad, 1, 0, &i), EINVAL);
    bad[0] = (struct ks_any){KS_ANY_PUT + 1, q};
    cr_assert_eq(ks_wait_any(bad, 1, 0, &i), EINVAL);
    cr_assert_eq(ks_queue_destroy(q), 0);
}

/* Watchers beside plain getters on one small queue, 4 producers, 6 plain
 * getters and 6 watchers on 2 CPUs (private and shared queue), then the
 * watchers alone: every item is taken exactly once, no watcher misses a put
 * (a lost wake-up would leave it asleep with items queued: its 2 s
 * deadline counts a stall; with no plain getter nothing else would take
 * them), no plain getter is stranded (they wait forever: a hang fails the
 * test's timeout), and both sides' counts are 0 after. */
enum { QW_PROD = 4, QW_PLAIN = 6, QW_WATCH = 6, QW_ITEMS = 20000 };
struct qmix {
    ks_queue_t *q;
    long sum, taken;
    int stalls, producers_left;
};

static void *qmix_producer(void *p)
{
    struct qmix *x = p;
    for (long k = 1; k <= QW_ITEMS; k++)
        cr_assert_eq(ks_queue_put(x->q, (void *)k), 0);
    if (__atomic_sub_fetch(&x->producers_left, 1, __ATOMIC_ACQ_REL) == 0)
        ks_queue_close(x->q);
    return NULL;
}

static void qmix_took(struct qmix *x, void *item)
{
    __atomic_fetch_add(&x->sum, (long)(uintptr_t)item, __ATOMIC_RELAXED);
    __atomic_fetch_add(&x->taken, 1, __ATOMIC_RELAXED);
}

static void *qmix_plain(void *p)
{
    struct qmix *x = p;
    void *item;
    int e;
    while ((e = ks_queue_get(x->q, &item)) == 0)
        qmix_took(x, item);
    cr_assert_eq(e, EPIPE);
    return NULL;
}

static void *qmix_watcher(void *p)
{
    struct qmix *x = p;
    struct ks_any set[] = {{KS_ANY_GET, x->q}};
    for (;;) {
        unsigned i;
        int r = ks_wait_any(set, 1, ks_deadline_after(2000 * KT_MS), &i);
        if (r == ETIMEDOUT) {
            if (ks_queue_size(x->q) > 0)
                __atomic_fetch_add(&x->stalls, 1, __ATOMIC_RELAXED);
            continue;
        }
        cr_assert_eq(r, 0);
        void *item;
        int e = ks_queue_tryget(x->q, &item);
        if (e == 0)
            qmix_took(x, item);
        else if (e == EPIPE)
            return NULL;
        else
            cr_assert(e == EAGAIN, "tryget: %s", strerror(e)); /* another took it first */
    }
}

Test(wait_any, queue_watchers_beside_plain_getters_lose_nothing, .timeout = 240)
{
    for (unsigned run = 0; run < 4; run++) {
        unsigned flags = run & 1, plain = run < 2 ? QW_PLAIN : 0;
        struct qmix x = {.producers_left = QW_PROD};
        cr_assert_eq(ks_queue_create(&x.q, 4, flags), 0);
        pthread_t t[QW_PROD + QW_PLAIN + QW_WATCH];
        unsigned n = 0;
        for (unsigned k = 0; k < plain; k++)
            kt_spawn(&t[n++], qmix_plain, &x);
        for (unsigned k = 0; k < QW_WATCH; k++)
            kt_spawn(&t[n++], qmix_watcher, &x);
        for (unsigned k = 0; k < QW_PROD; k++)
            kt_spawn(&t[n++], qmix_producer, &x);
        for (unsigned k = 0; k < n; k++)
            kt_join(t[k]);
        cr_assert_eq(x.taken, (long)QW_PROD * QW_ITEMS, "flags %u, %u plain getters", flags, plain);
        cr_assert_eq(x.sum, (long)QW_PROD * QW_ITEMS * (QW_ITEMS + 1) / 2);
        cr_assert_eq(x.stalls, 0, "a watcher slept 2 s with items queued");
        cr_assert_eq(side_sleepers(&x.q->getters), 0);
        cr_assert_eq(side_sleepers(&x.q->putters), 0);
        cr_assert_eq(ks_queue_destroy(x.q), 0);
    }
}

/* A process-shared queue watched from a fork child: woken by the parent's
 * put (shared futex keys, the parent's inline path). */
static int queue_child(void *p)
{
    ks_queue_t *q = p;
    struct ks_any set[] = {{KS_ANY_GET, q}};
    unsigned i;
    /* a wait past its deadline still reports the item found at the last
     * look: only the time tells a wake from a timeout */
    int64_t t0 = ks_now();
    if (ks_wait_any(set, 1, ks_deadline_after(5000 * KT_MS), &i) != 0)
        return 1;
    if (ks_now() - t0 > 2500 * KT_MS)
        return 3; /* not woken by the put, 30 ms in */
    void *item;
    return ks_queue_tryget(q, &item) == 0 && item == (void *)42 ? 0 : 2;
}

Test(wait_any, a_shared_queue_watched_from_another_process, .timeout = 60)
{
    size_t bytes = ks_queue_bytes(8);
    ks_queue_t *q = kt_shared_alloc(bytes);
    cr_assert_eq(ks_queue_init(q, 8, KS_SHARED), 0);
    pid_t pid = kt_fork(queue_child, q);
    /* the child is watching once the getters' count shows its weight */
    int64_t give_up = ks_deadline_after(5000 * KT_MS);
    while (side_sleepers(&q->getters) == 0 && ks_now() < give_up)
        kt_sleep_ns(KT_MS);
    cr_assert_neq(side_sleepers(&q->getters), 0, "the child never watched");
    kt_sleep_ns(30 * KT_MS); /* asleep in futex_waitv by now */
    cr_assert_eq(ks_queue_put(q, (void *)42), 0);
    kt_wait_child(pid);
    cr_assert_eq(side_sleepers(&q->getters), 0);
    cr_assert_eq(ks_queue_destroy(q), 0);
    kt_shared_free(q, bytes);
}

/* Destroy sees watchers (they are not the queue's users): EBUSY while one
 * sleeps on an open queue; after close it waits for the woken watcher to
 * leave.  The first version freed the queue under the watcher (a write in
 * ks_queue_any_disarm after the free; found by review). */
struct qwatch {
    ks_queue_t *q;
    int rc;
    unsigned index;
};

static void *watch_once(void *p)
{
    struct qwatch *w = p;
    struct ks_any set[] = {{KS_ANY_GET, w->q}};
    w->rc = ks_wait_any(set, 1, ks_deadline_after(5000 * KT_MS), &w->index);
    return NULL;
}

Test(wait_any, destroy_sees_a_queue_watcher, .timeout = 60)
{
    for (unsigned flags = 0; flags <= KS_SHARED; flags++) {
        struct qwatch w = {NULL, -1, 99};
        cr_assert_eq(ks_queue_create(&w.q, 4, flags), 0);
        pthread_t t;
        kt_spawn(&t, watch_once, &w);
        while (side_sleepers(&w.q->getters) == 0)
            kt_sleep_ns(KT_MS);
        kt_sleep_ns(20 * KT_MS); /* asleep */
        cr_assert_eq(ks_queue_destroy(w.q), EBUSY, "a watcher asleep on an open queue");
        cr_assert_eq(ks_queue_close(w.q), 0);
        cr_assert_eq(ks_queue_destroy(w.q), 0, "closed: destroy waits for the watcher to leave");
        kt_join(t);
        cr_assert_eq(w.rc, 0);
        cr_assert_eq(w.index, 0u);
    }
}

/* 4095 watches asleep on one side (63 threads x 64 entries + 63), and one
 * thread asking for more: it gets EAGAIN, and the count never reads below
 * 4095 watchers meanwhile.  The first version added, checked and took the
 * add back: the 12 bits wrapped to 0 in between, and a put then woke no
 * watcher (found by review). */
enum { CAP_THREADS = 64 };
struct capper {
    ks_queue_t *q;
    unsigned n;
    int rc, done;
};

static void *watch_many(void *p)
{
    struct capper *c = p;
    struct ks_any set[KS_ANY_MAX];
    for (unsigned k = 0; k < c->n; k++)
        set[k] = (struct ks_any){KS_ANY_GET, c->q};
    unsigned i;
    c->rc = ks_wait_any(set, c->n, ks_deadline_after(20000 * KT_MS), &i);
    return NULL;
}

static void *ask_for_more(void *p)
{
    struct capper *c = p;
    struct ks_any set[] = {{KS_ANY_GET, c->q}};
    unsigned i;
    c->rc = 0;
    int64_t until = ks_deadline_after(200 * KT_MS);
    while (ks_now() < until) {
        int e = ks_wait_any(set, 1, 0, &i);
        if (e != EAGAIN) {
            c->rc = e;
            break;
        }
    }
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(wait_any, the_queue_watch_cap_refuses_without_wrapping, .timeout = 120)
{
    ks_queue_t *q;
    cr_assert_eq(ks_queue_create(&q, 4, 0), 0);
    struct capper c[CAP_THREADS];
    pthread_t t[CAP_THREADS];
    for (unsigned k = 0; k < CAP_THREADS; k++) {
        c[k] = (struct capper){q, k == CAP_THREADS - 1 ? KS_ANY_MAX - 1 : KS_ANY_MAX, -1, 0};
        kt_spawn(&t[k], watch_many, &c[k]);
    }
    const uint32_t full = 4095u << 20;
    int64_t give_up = ks_deadline_after(20000 * KT_MS);
    while (side_sleepers(&q->getters) != full && ks_now() < give_up)
        kt_sleep_ns(KT_MS);
    cr_assert_eq(side_sleepers(&q->getters), full);
    struct capper more = {q, 1, -1, 0};
    pthread_t m;
    kt_spawn(&m, ask_for_more, &more);
    long low = 0, reads = 0;
    while (!__atomic_load_n(&more.done, __ATOMIC_ACQUIRE)) {
        low += side_sleepers(&q->getters) < full;
        reads++;
    }
    kt_join(m);
    cr_assert_eq(more.rc, 0, "the asker got %s, not only EAGAIN", strerror(more.rc));
    cr_assert_eq(low, 0, "%ld of %ld reads saw the watchers' bits wrapped", low, reads);
    cr_assert_eq(side_sleepers(&q->getters), full);
    cr_assert_eq(ks_queue_put(q, (void *)1), 0); /* wakes all 63 + 1 threads */
    for (unsigned k = 0; k < CAP_THREADS; k++) {
        kt_join(t[k]);
        cr_assert_eq(c[k].rc, 0);
    }
    cr_assert_eq(side_sleepers(&q->getters), 0u);
    cr_assert_eq(ks_queue_destroy(q), 0);
}
