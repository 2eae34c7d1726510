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
