/* tests/test_channel.c - ks_channel: every error code with the inputs a
 * careless caller passes; messages of every size through the wrap-around
 * (pad records), in order and intact (sequence numbers and checksums);
 * many senders and receivers; zero-copy reserve/commit and peek/release,
 * cancel; deadlines; close (EPIPE after the last message); peer death
 * (SIGKILL of a child sender mid-stream, inside a reservation, of a
 * receiver holding a peek, of a sender while the receiver sleeps); fork
 * children with their parent's handle; two unrelated processes (this binary
 * re-executed) over a named segment; bad segments; and a fuzzer that
 * scribbles over the header and the ring between operations.  docs/ipc.md. */
#include "helpers.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>

extern char **environ;

#define MAXM 1000

static ks_channel_t *anon(size_t cap, size_t max, unsigned role)
{
    ks_channel_t *ch = NULL;
    int e = ks_channel_create(NULL, cap, max, role, &ch);
    cr_assert_eq(e, 0, "create: %s", strerror(e));
    cr_assert_not_null(ch);
    return ch;
}

static ks_channel_t *reopen(ks_channel_t *ch, unsigned role)
{
    ks_channel_t *o = NULL;
    int e = ks_channel_open_fd(ks_channel_fd(ch), role, &o);
    cr_assert_eq(e, 0, "open_fd: %s", strerror(e));
    return o;
}

/* A message: sender id, sequence number, a body derived from both, and a
 * checksum over everything before it. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static size_t make_msg(unsigned char *buf, uint32_t who, uint32_t seq, size_t max)
{
    size_t len = 12 + mix((uint64_t)who << 32 | seq) % (max - 11);
    memcpy(buf, &who, 4);
    memcpy(buf + 4, &seq, 4);
    uint32_t sum = who * 31u + seq;
    for (size_t i = 12; i < len; i++) {
        buf[i] = (unsigned char)mix(seq * 131u + i + who);
        sum = sum * 33u + buf[i];
    }
    memcpy(buf + 8, &sum, 4);
    return len;
}

/* 0 if buf[0..len) is a well-formed message; its sender and sequence. */
static int check_msg(const unsigned char *buf, size_t len, uint32_t *who, uint32_t *seq)
{
    if (len < 12)
        return -1;
    uint32_t sum;
    memcpy(who, buf, 4);
    memcpy(seq, buf + 4, 4);
    memcpy(&sum, buf + 8, 4);
    uint32_t s = *who * 31u + *seq;
    for (size_t i = 12; i < len; i++) {
        if (buf[i] != (unsigned char)mix(*seq * 131u + i + *who))
            return -2;
        s = s * 33u + buf[i];
    }
    return s == sum ? 0 : -3;
}

/* ---- the API, with careless arguments ---- */

Test(channel, create_rejects_bad_arguments)
{
    ks_channel_t *ch = (ks_channel_t *)0x1;
    cr_assert_eq(ks_channel_create(NULL, 4096, 100, KS_CHANNEL_SEND, NULL), EINVAL);
    cr_assert_eq(ks_channel_create(NULL, 4096, 100, 0, &ch), EINVAL);
    cr_assert_eq(ks_channel_create(NULL, 4096, 100, 4, &ch), EINVAL);
    cr_assert_eq(ks_channel_create(NULL, 4096, 0, KS_CHANNEL_SEND, &ch), EINVAL);
    cr_assert_eq(ks_channel_create(NULL, 0, 100, KS_CHANNEL_SEND, &ch), EINVAL);
    cr_assert_eq(ks_channel_create(NULL, 4096, 4096, KS_CHANNEL_SEND, &ch), EINVAL, "two max messages must fit");
    cr_assert_eq(ks_channel_create(NULL, SIZE_MAX, 100, KS_CHANNEL_SEND, &ch), EINVAL);
    cr_assert_eq(ks_channel_create(NULL, 4096, SIZE_MAX, KS_CHANNEL_SEND, &ch), EINVAL);
    cr_assert_eq(ks_channel_create(NULL, 4096, (size_t)KS_CHANNEL_MAX_MSG + 1, KS_CHANNEL_SEND, &ch), EINVAL);
    cr_assert_eq(ch, (ks_channel_t *)0x1, "out untouched on failure");
    cr_assert_eq(ks_channel_create("no-slash/x", 4096, 100, KS_CHANNEL_SEND, &ch), EINVAL);
    /* capacity rounds up: 5000 gives 8192, which takes two 4000-byte messages */
    ch = anon(5000, 4000, KS_CHANNEL_SEND | KS_CHANNEL_RECV);
    cr_assert_eq(ks_channel_max_msg(ch), 4000);
    cr_assert_eq(ks_channel_close(ch), 0);
    cr_assert_eq(ks_channel_close(NULL), EINVAL);
    cr_assert_eq(ks_channel_fd(NULL), -1);
    cr_assert_eq(ks_channel_max_msg(NULL), 0);
}

Test(channel, calls_reject_bad_arguments)
{
    ks_channel_t *ch = anon(4096, 100, KS_CHANNEL_SEND | KS_CHANNEL_RECV);
    char buf[200];
    size_t n = 7;
    void *p;
    const void *cp;
    cr_assert_eq(ks_channel_send(NULL, buf, 1, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_channel_send(ch, NULL, 1, KS_FOREVER), EINVAL);
    cr_assert_eq(ks_channel_send(ch, buf, 101, KS_FOREVER), EMSGSIZE);
    cr_assert_eq(ks_channel_send(ch, buf, SIZE_MAX, KS_FOREVER), EMSGSIZE);
    cr_assert_eq(ks_channel_send(ch, buf, 1, -1), EINVAL);
    cr_assert_eq(ks_channel_recv(NULL, buf, 1, &n, 0), EINVAL);
    cr_assert_eq(ks_channel_recv(ch, buf, 1, NULL, 0), EINVAL);
    cr_assert_eq(ks_channel_recv(ch, NULL, 1, &n, 0), EINVAL);
    cr_assert_eq(ks_channel_recv(ch, buf, 1, &n, -5), EINVAL);
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), ETIMEDOUT, "empty, deadline past");
    cr_assert_eq(ks_channel_reserve(ch, 10, NULL, 0), EINVAL);
    cr_assert_eq(ks_channel_reserve(ch, 101, &p, 0), EMSGSIZE);
    cr_assert_eq(ks_channel_peek(ch, NULL, &n, 0), EINVAL);
    cr_assert_eq(ks_channel_peek(ch, &cp, NULL, 0), EINVAL);
    cr_assert_eq(ks_channel_commit(ch, 0), EPERM, "no reservation");
    cr_assert_eq(ks_channel_release(ch), EPERM, "no peek");
    cr_assert_eq(ks_channel_cancel(ch), EPERM);
    cr_assert_eq(ks_channel_commit(NULL, 0), EINVAL);
    cr_assert_eq(ks_channel_release(NULL), EINVAL);
    cr_assert_eq(ks_channel_cancel(NULL), EINVAL);
    /* a zero-length message is a message */
    cr_assert_eq(ks_channel_send(ch, NULL, 0, 0), 0);
    cr_assert_eq(ks_channel_recv(ch, NULL, 0, &n, 0), 0);
    cr_assert_eq(n, 0);
    /* reserve twice, send or peek while holding: EDEADLK, not a hang */
    cr_assert_eq(ks_channel_reserve(ch, 10, &p, 0), 0);
    cr_assert_eq(ks_channel_reserve(ch, 10, &p, 0), EDEADLK);
    cr_assert_eq(ks_channel_send(ch, buf, 1, 0), EDEADLK);
    cr_assert_eq(ks_channel_commit(ch, 11), EINVAL, "longer than reserved");
    memset(p, 'x', 10);
    cr_assert_eq(ks_channel_commit(ch, 10), 0);
    cr_assert_eq(ks_channel_commit(ch, 10), EPERM, "committed already");
    cr_assert_eq(ks_channel_peek(ch, &cp, &n, 0), 0);
    cr_assert_eq(n, 10);
    cr_assert_eq(ks_channel_peek(ch, &cp, &n, 0), EDEADLK);
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), EDEADLK);
    cr_assert_eq(ks_channel_release(ch), 0);
    cr_assert_eq(ks_channel_close(ch), 0);

    ks_channel_t *tx = anon(4096, 100, KS_CHANNEL_SEND);
    cr_assert_eq(ks_channel_recv(tx, buf, sizeof buf, &n, 0), EPERM);
    cr_assert_eq(ks_channel_peek(tx, &cp, &n, 0), EPERM);
    ks_channel_t *rx = reopen(tx, KS_CHANNEL_RECV);
    cr_assert_eq(ks_channel_send(rx, buf, 1, 0), EPERM);
    cr_assert_eq(ks_channel_reserve(rx, 1, &p, 0), EPERM);
    ks_channel_close(rx);
    ks_channel_close(tx);
    cr_assert_eq(ks_channel_open_fd(-1, KS_CHANNEL_SEND, &rx), EINVAL);
    cr_assert_eq(ks_channel_open_fd(12345, KS_CHANNEL_SEND, &rx), EBADF);
    cr_assert_eq(ks_channel_open(NULL, KS_CHANNEL_SEND, &rx), EINVAL);
    cr_assert_eq(ks_channel_open("/ksync-no-such-channel", KS_CHANNEL_SEND, &rx), ENOENT);
    cr_assert_eq(ks_channel_unlink(NULL), EINVAL);
    cr_assert_eq(ks_channel_unlink("/ksync-no-such-channel"), ENOENT);
}

Test(channel, short_buffer_keeps_the_message)
{
    ks_channel_t *ch = anon(4096, 100, KS_CHANNEL_SEND | KS_CHANNEL_RECV);
    char buf[100];
    size_t n = 0;
    cr_assert_eq(ks_channel_send(ch, "hello, world", 12, 0), 0);
    cr_assert_eq(ks_channel_recv(ch, buf, 5, &n, 0), EMSGSIZE);
    cr_assert_eq(n, 12, "the length it needs");
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), 0);
    cr_assert_eq(n, 12);
    cr_assert_eq(memcmp(buf, "hello, world", 12), 0);
    ks_channel_close(ch);
}

/* ---- order and integrity ---- */

struct flow {
    ks_channel_t *ch;
    uint32_t who, count;
    size_t max;
    /* receiver's results */
    uint32_t got, bad;
    uint32_t *next; /* per sender: the next sequence number expected */
    uint64_t *total;
};

static void *sender(void *p)
{
    struct flow *f = p;
    unsigned char buf[MAXM];
    for (uint32_t i = 0; i < f->count; i++) {
        size_t len = make_msg(buf, f->who, i, f->max);
        int e;
        if (i % 3 == 0) {
            void *q;
            e = ks_channel_reserve(f->ch, len, &q, ks_deadline_after(20000 * KT_MS));
            if (e == 0) {
                memcpy(q, buf, len);
                e = ks_channel_commit(f->ch, len);
            }
        } else {
            e = ks_channel_send(f->ch, buf, len, ks_deadline_after(20000 * KT_MS));
        }
        cr_assert_eq(e, 0, "send %u: %s", i, strerror(e));
    }
    return NULL;
}

static void *receiver(void *p)
{
    struct flow *f = p;
    unsigned char buf[MAXM];
    for (;;) {
        size_t len = 0;
        uint32_t who, seq;
        int e;
        if (f->got % 2) {
            const void *q;
            e = ks_channel_peek(f->ch, &q, &len, ks_deadline_after(20000 * KT_MS));
            if (e == 0) {
                if (check_msg(q, len, &who, &seq))
                    f->bad++;
                e = ks_channel_release(f->ch);
            }
        } else {
            e = ks_channel_recv(f->ch, buf, sizeof buf, &len, ks_deadline_after(20000 * KT_MS));
            if (e == 0 && check_msg(buf, len, &who, &seq))
                f->bad++;
        }
        if (e == EPIPE)
            return NULL;
        cr_assert_eq(e, 0, "recv: %s", strerror(e));
        cr_assert_lt(who, 64);
        /* each receiver sees each sender's messages in increasing order */
        cr_assert_geq(seq, f->next[who], "sender %u: %u after %u", who, seq, f->next[who]);
        f->next[who] = seq + 1;
        __atomic_fetch_add(&f->total[who], 1, __ATOMIC_RELAXED);
        f->got++;
    }
}

static void run_flow(int senders, int receivers, size_t cap, size_t max, uint32_t count)
{
    ks_channel_t *base = anon(cap, max, KS_CHANNEL_RECV);
    struct flow s[16], r[16];
    uint64_t total[16] = {0};
    uint32_t next[16][16];
    memset(next, 0, sizeof next);
    pthread_t ts[16], tr[16];
    for (int i = 0; i < receivers; i++) {
        r[i] = (struct flow){.ch = i ? reopen(base, KS_CHANNEL_RECV) : base, .next = next[i], .total = total};
    }
    for (int i = 0; i < senders; i++)
        s[i] = (struct flow){.ch = reopen(base, KS_CHANNEL_SEND), .who = (uint32_t)i, .count = count, .max = max};
    for (int i = 0; i < receivers; i++)
        kt_spawn(&tr[i], receiver, &r[i]);
    for (int i = 0; i < senders; i++)
        kt_spawn(&ts[i], sender, &s[i]);
    for (int i = 0; i < senders; i++) {
        kt_join(ts[i]);
        ks_channel_close(s[i].ch); /* the last close ends the receivers with EPIPE */
    }
    uint32_t got = 0;
    for (int i = 0; i < receivers; i++) {
        kt_join(tr[i]);
        cr_assert_eq(r[i].bad, 0, "receiver %d saw %u corrupt messages", i, r[i].bad);
        got += r[i].got;
        ks_channel_close(r[i].ch);
    }
    for (int i = 0; i < senders; i++)
        cr_assert_eq(total[i], count, "sender %d: %llu of %u", i, (unsigned long long)total[i], count);
    cr_assert_eq(got, (uint32_t)senders * count);
}

Test(channel, one_to_one_every_size_through_the_wrap, .timeout = 120)
{
    /* a small ring: most messages meet the end of the ring (pad records) */
    run_flow(1, 1, 4096, 1000, 40000 / KT_SLOW);
}

Test(channel, many_to_many_oversubscribed, .timeout = 120)
{
    run_flow(8, 8, 16384, 500, 4000 / KT_SLOW);
}

Test(channel, zero_copy_cancel)
{
    ks_channel_t *ch = anon(4096, 100, KS_CHANNEL_SEND | KS_CHANNEL_RECV);
    void *p;
    const void *q;
    size_t n;
    char buf[100];
    cr_assert_eq(ks_channel_reserve(ch, 50, &p, 0), 0);
    memset(p, 'a', 50);
    cr_assert_eq(ks_channel_cancel(ch), 0, "drops the reservation");
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), ETIMEDOUT, "nothing was sent");
    cr_assert_eq(ks_channel_reserve(ch, 50, &p, 0), 0);
    memcpy(p, "short", 5);
    cr_assert_eq(ks_channel_commit(ch, 5), 0, "commit less than reserved");
    cr_assert_eq(ks_channel_peek(ch, &q, &n, 0), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(q, "short", 5), 0);
    cr_assert_eq(ks_channel_cancel(ch), 0, "the message stays");
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(buf, "short", 5), 0);
    /* close with a reservation and a peek outstanding releases both locks */
    ks_channel_t *other = reopen(ch, KS_CHANNEL_SEND | KS_CHANNEL_RECV);
    cr_assert_eq(ks_channel_send(ch, "m", 1, 0), 0);
    cr_assert_eq(ks_channel_reserve(ch, 10, &p, 0), 0);
    cr_assert_eq(ks_channel_peek(ch, &q, &n, 0), 0);
    cr_assert_eq(ks_channel_close(ch), 0);
    cr_assert_eq(ks_channel_send(other, "n", 1, ks_deadline_after(1000 * KT_MS)), 0);
    cr_assert_eq(ks_channel_recv(other, buf, sizeof buf, &n, ks_deadline_after(1000 * KT_MS)), 0);
    cr_assert_eq(buf[0], 'm', "the peeked message was left to the next receiver");
    cr_assert_eq(ks_channel_recv(other, buf, sizeof buf, &n, ks_deadline_after(1000 * KT_MS)), 0);
    cr_assert_eq(buf[0], 'n');
    ks_channel_close(other);
}

struct other_thread {
    ks_channel_t *ch;
    int rc;
};

static void *commit_from_other(void *p)
{
    struct other_thread *o = p;
    o->rc = ks_channel_commit(o->ch, 1);
    return NULL;
}

Test(channel, a_reservation_belongs_to_its_thread)
{
    ks_channel_t *ch = anon(4096, 100, KS_CHANNEL_SEND | KS_CHANNEL_RECV);
    void *p;
    cr_assert_eq(ks_channel_reserve(ch, 1, &p, 0), 0);
    struct other_thread o = {ch, -1};
    pthread_t t;
    kt_spawn(&t, commit_from_other, &o);
    kt_join(t);
    cr_assert_eq(o.rc, EPERM);
    cr_assert_eq(ks_channel_commit(ch, 1), 0);
    ks_channel_close(ch);
}

/* ---- deadlines and close ---- */

Test(channel, deadlines)
{
    ks_channel_t *ch = anon(4096, 1000, KS_CHANNEL_SEND | KS_CHANNEL_RECV);
    char buf[1000] = {0};
    size_t n;
    int64_t t0 = ks_now();
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, t0 + 50 * KT_MS), ETIMEDOUT);
    int64_t waited = ks_now() - t0;
    cr_assert_geq(waited, 50 * KT_MS);
    cr_assert_lt(waited, 50 * KT_MS + KT_LATE_NS);
    int sent = 0;
    while (ks_channel_send(ch, buf, sizeof buf, 0) == 0)
        sent++;
    cr_assert_eq(sent, 4, "4096 bytes hold four records of 1008");
    t0 = ks_now();
    cr_assert_eq(ks_channel_send(ch, buf, sizeof buf, t0 + 50 * KT_MS), ETIMEDOUT);
    waited = ks_now() - t0;
    cr_assert_geq(waited, 50 * KT_MS);
    cr_assert_lt(waited, 50 * KT_MS + KT_LATE_NS);
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), 0);
    cr_assert_eq(ks_channel_send(ch, buf, sizeof buf, 0), 0, "room again");
    ks_channel_close(ch);
}

Test(channel, last_sender_closing_ends_the_receiver_after_the_last_message)
{
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    char buf[100];
    size_t n;
    cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, 0), ETIMEDOUT, "no sender yet: not EPIPE");
    ks_channel_t *a = reopen(rx, KS_CHANNEL_SEND), *b = reopen(rx, KS_CHANNEL_SEND);
    cr_assert_eq(ks_channel_send(a, "1", 1, 0), 0);
    cr_assert_eq(ks_channel_send(b, "2", 1, 0), 0);
    ks_channel_close(a);
    cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, 0), 0);
    cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, 0), 0);
    cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, 0), ETIMEDOUT, "b is still attached");
    ks_channel_close(b);
    cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, KS_FOREVER), EPIPE);
    ks_channel_t *tx = reopen(rx, KS_CHANNEL_SEND);
    ks_channel_close(rx);
    cr_assert_eq(ks_channel_send(tx, "x", 1, KS_FOREVER), EPIPE, "no receiver left");
    ks_channel_close(tx);
}

struct sleeper {
    ks_channel_t *ch;
    int rc;
    pid_t tid;
    int64_t done;
};

static void *recv_forever(void *p)
{
    struct sleeper *s = p;
    char buf[100];
    size_t n;
    s->tid = kt_gettid();
    s->rc = ks_channel_recv(s->ch, buf, sizeof buf, &n, ks_deadline_after(20000 * KT_MS));
    s->done = ks_now();
    return NULL;
}

static pid_t sleeper_tid(void *p) { return __atomic_load_n(&((struct sleeper *)p)->tid, __ATOMIC_ACQUIRE); }

Test(channel, close_wakes_a_sleeping_receiver)
{
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    ks_channel_t *tx = reopen(rx, KS_CHANNEL_SEND);
    struct sleeper s = {rx, -1, 0, 0};
    pthread_t t;
    kt_spawn(&t, recv_forever, &s);
    while (!sleeper_tid(&s))
        sched_yield();
    cr_assert(kt_wait_in_futex(sleeper_tid(&s), 5000 * KT_MS));
    int64_t t0 = ks_now();
    ks_channel_close(tx);
    kt_join(t);
    cr_assert_eq(s.rc, EPIPE);
    cr_assert_lt(s.done - t0, KT_LATE_NS);
    ks_channel_close(rx);
}

/* ---- processes ---- */

struct child_arg {
    int fd;
    uint32_t count;
    int mode;
};

enum { SEND_THEN_DIE, DIE_IN_RESERVE, DIE_IN_PEEK, SLEEP_THEN_DIE, USE_PARENT_HANDLE };

static ks_channel_t *parent_handle;

static int child_main(void *p)
{
    struct child_arg *a = p;
    alarm(60);
    if (a->mode == USE_PARENT_HANDLE) {
        char c = 0;
        size_t n;
        if (ks_channel_send(parent_handle, "x", 1, 0) != EBADF)
            return 10;
        if (ks_channel_recv(parent_handle, &c, 1, &n, 0) != EBADF)
            return 11;
        ks_channel_t *mine;
        if (ks_channel_open_fd(a->fd, KS_CHANNEL_SEND, &mine) != 0)
            return 13;
        if (ks_channel_close(parent_handle) != 0) /* unmaps and closes its fd, in the child */
            return 12;
        if (ks_channel_send(mine, "from the child", 14, KS_FOREVER) != 0)
            return 14;
        return ks_channel_close(mine);
    }
    ks_channel_t *ch;
    unsigned role = a->mode == DIE_IN_PEEK ? KS_CHANNEL_RECV : KS_CHANNEL_SEND;
    if (ks_channel_open_fd(a->fd, role, &ch) != 0)
        return 20;
    unsigned char buf[MAXM];
    if (a->mode == DIE_IN_PEEK) {
        const void *q;
        size_t n;
        if (ks_channel_peek(ch, &q, &n, KS_FOREVER) != 0)
            return 21;
        raise(SIGKILL);
    }
    if (a->mode == SLEEP_THEN_DIE) {
        if (ks_channel_send(ch, "r", 1, KS_FOREVER) != 0)
            return 25;
        pause(); /* attached, sending nothing: the parent kills it */
        return 22;
    }
    for (uint32_t i = 0;; i++) {
        size_t len = make_msg(buf, 0, i, MAXM);
        if (a->mode == DIE_IN_RESERVE && i == a->count) {
            void *q;
            if (ks_channel_reserve(ch, len, &q, KS_FOREVER) != 0)
                return 23;
            memcpy(q, buf, len / 2); /* half a message, never committed */
            raise(SIGKILL);
        }
        if (ks_channel_send(ch, buf, len, KS_FOREVER) != 0)
            return 24;
    }
}

Test(channel, sender_killed_mid_stream_loses_nothing_committed, .timeout = 60)
{
    ks_channel_t *rx = anon(65536, MAXM, KS_CHANNEL_RECV);
    struct child_arg a = {ks_channel_fd(rx), 0, SEND_THEN_DIE};
    pid_t pid = kt_fork(child_main, &a);
    unsigned char buf[MAXM];
    uint32_t expect = 0;
    int e;
    size_t n;
    for (;;) {
        e = ks_channel_recv(rx, buf, sizeof buf, &n, ks_deadline_after(20000 * KT_MS));
        if (e)
            break;
        uint32_t who, seq;
        cr_assert_eq(check_msg(buf, n, &who, &seq), 0, "message %u corrupt", expect);
        cr_assert_eq(seq, expect, "got %u, expected %u", seq, expect);
        expect++;
        if (expect == 5000)
            kill(pid, SIGKILL); /* mid-stream: it is sending as fast as it can */
    }
    cr_assert_eq(e, EPIPE, "after the last committed message: %s", strerror(e));
    cr_assert_geq(expect, 5000);
    int st = kt_reap(pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    ks_channel_close(rx);
}

Test(channel, sender_dying_inside_a_reservation, .timeout = 60)
{
    ks_channel_t *rx = anon(65536, MAXM, KS_CHANNEL_RECV | KS_CHANNEL_SEND);
    struct child_arg a = {ks_channel_fd(rx), 20, DIE_IN_RESERVE};
    pid_t pid = kt_fork(child_main, &a);
    int st = kt_reap(pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "status %#x", st);
    /* the dead child held the send lock: this sender takes it over */
    cr_assert_eq(ks_channel_send(rx, "after", 5, ks_deadline_after(5000 * KT_MS)), 0);
    unsigned char buf[MAXM];
    size_t n;
    for (uint32_t i = 0; i < 20; i++) {
        uint32_t who, seq;
        cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, 0), 0);
        cr_assert_eq(check_msg(buf, n, &who, &seq), 0);
        cr_assert_eq(seq, i);
    }
    cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, 0), 0);
    cr_assert_eq(n, 5, "the half-written message is never seen");
    cr_assert_eq(memcmp(buf, "after", 5), 0);
    cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, 0), ETIMEDOUT);
    ks_channel_close(rx);
}

Test(channel, receiver_dying_inside_a_peek_leaves_the_message, .timeout = 60)
{
    ks_channel_t *tx = anon(4096, 100, KS_CHANNEL_SEND | KS_CHANNEL_RECV);
    cr_assert_eq(ks_channel_send(tx, "precious", 8, 0), 0);
    struct child_arg a = {ks_channel_fd(tx), 0, DIE_IN_PEEK};
    pid_t pid = kt_fork(child_main, &a);
    int st = kt_reap(pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "status %#x", st);
    char buf[100];
    size_t n;
    cr_assert_eq(ks_channel_recv(tx, buf, sizeof buf, &n, ks_deadline_after(5000 * KT_MS)), 0);
    cr_assert_eq(n, 8);
    cr_assert_eq(memcmp(buf, "precious", 8), 0);
    ks_channel_close(tx);
}

Test(channel, sleeping_receiver_learns_the_sender_died, .timeout = 60)
{
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    struct child_arg a = {ks_channel_fd(rx), 0, SLEEP_THEN_DIE};
    pid_t pid = kt_fork(child_main, &a);
    struct sleeper s = {rx, -1, 0, 0};
    /* the child says it has attached */
    char buf[100];
    size_t n;
    cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, ks_deadline_after(5000 * KT_MS)), 0);
    pthread_t t;
    kt_spawn(&t, recv_forever, &s);
    while (!sleeper_tid(&s))
        sched_yield();
    cr_assert(kt_wait_in_futex(sleeper_tid(&s), 5000 * KT_MS));
    int64_t t0 = ks_now();
    kill(pid, SIGKILL);
    kt_join(t);
    cr_assert_eq(s.rc, EPIPE, "%s", strerror(s.rc));
    cr_assert_lt(s.done - t0, KT_LATE_NS, "learned it after %lld ms", (long long)((s.done - t0) / KT_MS));
    kt_reap(pid);
    ks_channel_close(rx);
}

Test(channel, fork_child_must_open_again)
{
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV | KS_CHANNEL_SEND);
    parent_handle = rx;
    struct child_arg a = {ks_channel_fd(rx), 0, USE_PARENT_HANDLE};
    for (int kind = 0; kind < KT_FORK_KINDS; kind++) {
        pid_t pid = kt_fork_as((enum kt_fork_kind)kind, child_main, &a);
        kt_wait_child_named(pid, kt_fork_names[kind]);
        char buf[100];
        size_t n;
        cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, ks_deadline_after(5000 * KT_MS)), 0);
        cr_assert_eq(n, 14);
        cr_assert_eq(memcmp(buf, "from the child", 14), 0);
    }
    /* the parent's handle still works */
    cr_assert_eq(ks_channel_send(rx, "p", 1, 0), 0);
    ks_channel_close(rx);
}

Test(channel, every_peer_slot_taken)
{
    ks_channel_t *ch = anon(4096, 100, KS_CHANNEL_RECV);
    ks_channel_t *h[KS_CHANNEL_PEERS];
    for (unsigned i = 0; i < KS_CHANNEL_PEERS - 1; i++)
        h[i] = reopen(ch, KS_CHANNEL_SEND);
    ks_channel_t *x = (ks_channel_t *)0x1;
    cr_assert_eq(ks_channel_open_fd(ks_channel_fd(ch), KS_CHANNEL_SEND, &x), EUSERS);
    cr_assert_eq(x, (ks_channel_t *)0x1);
    ks_channel_close(h[3]);
    h[3] = reopen(ch, KS_CHANNEL_SEND);
    for (unsigned i = 0; i < KS_CHANNEL_PEERS - 1; i++)
        ks_channel_close(h[i]);
    ks_channel_close(ch);
}

/* ---- named segments, unrelated processes ---- */

static void unique_name(char *name, size_t cap, const char *what)
{
    static int seq;
    snprintf(name, cap, "/ksync-test-%s-%d-%d", what, (int)getpid(), seq++);
    shm_unlink(name);
}

/* This binary re-executed with KT_CHANNEL_NAME set: a process that shares
 * nothing with the test but the name.  It sends KT_CHANNEL_COUNT messages
 * and closes. */
__attribute__((constructor)) static void channel_helper(void)
{
    const char *name = getenv("KT_CHANNEL_NAME"), *count = getenv("KT_CHANNEL_COUNT");
    if (!name || !count)
        return;
    alarm(60);
    void *spacer = mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    (void)spacer;
    ks_channel_t *ch;
    int e;
    while ((e = ks_channel_open(name, KS_CHANNEL_SEND, &ch)) == EAGAIN)
        usleep(1000);
    if (e)
        _exit(80);
    unsigned char buf[MAXM];
    uint32_t n = (uint32_t)atoi(count);
    for (uint32_t i = 0; i < n; i++) {
        size_t len = make_msg(buf, 1, i, MAXM);
        if (ks_channel_send(ch, buf, len, KS_FOREVER))
            _exit(81);
    }
    _exit(ks_channel_close(ch) ? 82 : 0);
}

Test(channel, unrelated_processes_by_name, .timeout = 60)
{
    char name[96], e1[128], e2[64];
    unique_name(name, sizeof name, "byname");
    ks_channel_t *rx;
    cr_assert_eq(ks_channel_create(name, 8192, MAXM, KS_CHANNEL_RECV, &rx), 0);
    ks_channel_t *dup = (ks_channel_t *)0x1;
    cr_assert_eq(ks_channel_create(name, 8192, MAXM, KS_CHANNEL_RECV, &dup), EEXIST);
    uint32_t count = 20000 / KT_SLOW;
    snprintf(e1, sizeof e1, "KT_CHANNEL_NAME=%s", name);
    snprintf(e2, sizeof e2, "KT_CHANNEL_COUNT=%u", count);
    int n = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)n + 3, sizeof *env);
    memcpy(env, environ, (size_t)n * sizeof *env);
    env[n] = e1;
    env[n + 1] = e2;
    char *argv[] = {"ksync-channel-helper", NULL};
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, env), 0);
    free(env);
    unsigned char buf[MAXM];
    uint32_t expect = 0;
    size_t len;
    int e;
    while ((e = ks_channel_recv(rx, buf, sizeof buf, &len, ks_deadline_after(20000 * KT_MS))) == 0) {
        uint32_t who, seq;
        cr_assert_eq(check_msg(buf, len, &who, &seq), 0);
        cr_assert_eq(seq, expect);
        expect++;
    }
    cr_assert_eq(e, EPIPE, "%s", strerror(e));
    cr_assert_eq(expect, count);
    int st = kt_reap(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "helper status %#x", st);
    cr_assert_eq(ks_channel_unlink(name), 0);
    ks_channel_close(rx);
}

/* ---- bad segments ---- */

static int open_file_with(const char *name, const void *data, size_t len, off_t size)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, size), 0);
    if (len)
        cr_assert_eq(pwrite(fd, data, len, 0), (ssize_t)len);
    ks_channel_t *ch = (ks_channel_t *)0x1;
    int e = ks_channel_open(name, KS_CHANNEL_RECV, &ch);
    if (e == 0)
        ks_channel_close(ch);
    else
        cr_assert_eq(ch, (ks_channel_t *)0x1, "out untouched");
    close(fd);
    shm_unlink(name);
    return e;
}

Test(channel, bad_segments_give_clear_errors)
{
    char name[96], good[96];
    unique_name(name, sizeof name, "bad");
    unique_name(good, sizeof good, "good");
    ks_channel_t *ch;
    cr_assert_eq(ks_channel_create(good, 8192, 100, KS_CHANNEL_RECV, &ch), 0);
    unsigned char hdr[4096];
    cr_assert_eq(pread(ks_channel_fd(ch), hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
    ks_channel_close(ch);
    ks_channel_unlink(good);
    memset(hdr + 64, 0, sizeof hdr - 64); /* the geometry alone */
    off_t size = 4096 + 8192;
    unsigned char h[64];

    cr_assert_eq(open_file_with(name, hdr, 64, size), 0, "the good geometry opens");
    cr_assert_eq(open_file_with(name, NULL, 0, 0), EAGAIN, "not sized yet");
    cr_assert_eq(open_file_with(name, NULL, 0, size), EAGAIN, "no magic yet");
    cr_assert_eq(open_file_with(name, hdr, 64, 100), EBADMSG, "truncated");
    cr_assert_eq(open_file_with(name, hdr, 64, size - 4096), EBADMSG, "shorter than its header says");
    cr_assert_eq(open_file_with(name, hdr, 64, size + 4096), EBADMSG, "longer than its header says");
    memcpy(h, hdr, 64);
    h[0] ^= 1;
    cr_assert_eq(open_file_with(name, h, 64, size), EBADMSG, "magic");
    memcpy(h, hdr, 64);
    h[8] = 2;
    cr_assert_eq(open_file_with(name, h, 64, size), EPROTO, "version");
    uint64_t v;
    memcpy(h, hdr, 64);
    v = 8192 + 1;
    memcpy(h + 16, &v, 8);
    cr_assert_eq(open_file_with(name, h, 64, size), EBADMSG, "ring size not a power of two");
    memcpy(h, hdr, 64);
    uint32_t m = 8000;
    memcpy(h + 24, &m, 4);
    cr_assert_eq(open_file_with(name, h, 64, size), EBADMSG, "max message too big for the ring");
    memcpy(h, hdr, 64);
    m = 0;
    memcpy(h + 24, &m, 4);
    cr_assert_eq(open_file_with(name, h, 64, size), EBADMSG, "max message 0");
    memcpy(h, hdr, 64);
    m = 33;
    memcpy(h + 28, &m, 4);
    cr_assert_eq(open_file_with(name, h, 64, size), EBADMSG, "peer count");
    /* an existing file that is not a channel */
    cr_assert_eq(open_file_with(name, "#!/bin/sh\necho hello\n", 21, 4096), EBADMSG);
}

/* The fuzzer: a second, writable mapping of the segment scribbles random
 * bytes over the header (past the geometry the handle keeps) and the ring
 * between operations; each operation must return 0 or an error, never fault
 * (the mapping has guard pages on both sides) and never hang (deadlines
 * already past). */
Test(channel, scribbled_segment_never_reads_or_writes_out_of_bounds, .timeout = 120)
{
    uint64_t seed = (uint64_t)ks_now();
    int ebadmsg = 0;
    for (int round = 0; round < 40; round++) {
        ks_channel_t *ch = anon(4096, 1000, KS_CHANNEL_RECV | KS_CHANNEL_SEND);
        ks_channel_t *other = reopen(ch, KS_CHANNEL_RECV | KS_CHANNEL_SEND);
        size_t size = 4096 + 4096;
        unsigned char *seg = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, ks_channel_fd(ch), 0);
        cr_assert_neq(seg, MAP_FAILED);
        unsigned char buf[1000];
        int errors = 0;
        for (int op = 0; op < 400; op++) {
            seed = mix(seed + (uint64_t)op);
            int what = (int)(seed % 8);
            if (what < 3) {
                /* scribble: one word of the header's moving parts, or of the ring */
                size_t at = (seed >> 8) % 3 ? 4096 + (seed >> 16) % 4096 : 64 + (seed >> 16) % (1024 - 64);
                at &= ~(size_t)3;
                uint32_t val = (uint32_t)mix(seed);
                if ((seed >> 40) % 2)
                    val %= 4096; /* plausible lengths and positions */
                memcpy(seg + at, &val, 4);
                continue;
            }
            ks_channel_t *h = (seed >> 20) % 2 ? ch : other;
            size_t n = 0;
            int e;
            const void *q;
            void *p;
            switch (what) {
            case 3:
                e = ks_channel_send(h, buf, (seed >> 24) % 1000, 0);
                break;
            case 4:
                e = ks_channel_recv(h, buf, sizeof buf, &n, 0);
                cr_assert(e != 0 || n <= 1000, "a message longer than the maximum: %zu", n);
                break;
            case 5:
                e = ks_channel_peek(h, &q, &n, 0);
                if (e == 0) {
                    cr_assert_leq(n, 1000);
                    memcpy(buf, q, n); /* the pointer and length stay inside the ring */
                    ks_channel_release(h);
                }
                break;
            case 6:
                e = ks_channel_reserve(h, (seed >> 24) % 1001, &p, 0);
                if (e == 0) {
                    memset(p, 0xab, (seed >> 24) % 1001);
                    ks_channel_commit(h, (seed >> 24) % 1001);
                }
                break;
            default:
                e = ks_channel_recv(h, buf, 10, &n, 0);
                break;
            }
            cr_assert(e == 0 || e == ETIMEDOUT || e == EBADMSG || e == EMSGSIZE || e == EPIPE || e == EUSERS,
                      "round %d op %d: %d %s", round, op, e, strerror(e));
            errors += e == EBADMSG;
        }
        munmap(seg, size);
        ks_channel_close(other);
        ks_channel_close(ch);
        ebadmsg += errors;
    }
    cr_assert_gt(ebadmsg, 0, "the scribbles were never noticed: the fuzzer tests nothing");
}

Test(channel, corrupt_record_length_is_ebadmsg)
{
    ks_channel_t *ch = anon(4096, 100, KS_CHANNEL_RECV | KS_CHANNEL_SEND);
    cr_assert_eq(ks_channel_send(ch, "abc", 3, 0), 0);
    unsigned char *seg = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, ks_channel_fd(ch), 0);
    cr_assert_neq(seg, MAP_FAILED);
    uint32_t len = 5000;
    memcpy(seg + 4096, &len, 4); /* the first record's length: above the maximum */
    char buf[100];
    size_t n;
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), EBADMSG);
    len = 3;
    memcpy(seg + 4096, &len, 4);
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), 0, "repaired");
    uint64_t tail = 1u << 20; /* tail far beyond head */
    memcpy(seg + 128, &tail, 8); /* the header's tail (docs/ipc.md) */
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), EBADMSG);
    cr_assert_eq(ks_channel_send(ch, "x", 1, 0), EBADMSG);
    munmap(seg, 8192);
    ks_channel_close(ch);
}

/* ---- regressions from the adversarial review (docs/ipc.md, "Failures") ---- */

#include <dirent.h>
#include <linux/futex.h>
#include <sys/resource.h>

/* Offsets of the segment's format (docs/ipc.md). */
#define OFF_TAIL 128
#define OFF_HEAD 256
#define OFF_ALIVE 332
#define OFF_SLOTS 1024

static unsigned char *map_seg(ks_channel_t *ch, size_t size)
{
    unsigned char *seg = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, ks_channel_fd(ch), 0);
    cr_assert_neq(seg, MAP_FAILED);
    return seg;
}

Test(channel, unaligned_positions_are_ebadmsg_not_a_fault)
{
    /* A scribbled tail or head that is not a multiple of 8 once made the
     * pad record's header straddle the end of the ring. */
    ks_channel_t *ch = anon(4096, 100, KS_CHANNEL_RECV | KS_CHANNEL_SEND);
    unsigned char *seg = map_seg(ch, 8192);
    uint64_t v = 4093;
    memcpy(seg + OFF_TAIL, &v, 8);
    memcpy(seg + OFF_HEAD, &v, 8);
    cr_assert_eq(ks_channel_send(ch, "abc", 3, 0), EBADMSG);
    v = 8192;
    memcpy(seg + OFF_TAIL, &v, 8);
    v = 8191;
    memcpy(seg + OFF_HEAD, &v, 8);
    char buf[100];
    size_t n;
    cr_assert_eq(ks_channel_recv(ch, buf, sizeof buf, &n, 0), EBADMSG);
    munmap(seg, 8192);
    ks_channel_close(ch);
}

Test(channel, a_wrong_alive_count_is_checked_against_the_slots)
{
    /* alive[] is a hint: a peer killed inside attach once left it 0 with a
     * receiver alive, and every send failed with EPIPE from then on. */
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    ks_channel_t *tx = reopen(rx, KS_CHANNEL_SEND);
    unsigned char *seg = map_seg(rx, 8192);
    uint32_t zero = 0;
    memcpy(seg + OFF_ALIVE + 4, &zero, 4); /* receivers: 0 */
    cr_assert_eq(ks_channel_send(tx, "x", 1, 0), 0, "the receiver is alive");
    munmap(seg, 8192);
    ks_channel_close(tx);
    ks_channel_close(rx);
}

static int attach_and_die(void *p)
{
    ks_channel_t *ch;
    if (ks_channel_open_fd(*(int *)p, KS_CHANNEL_SEND, &ch))
        return 1;
    raise(SIGKILL);
    return 2;
}

Test(channel, slots_of_the_dead_are_given_back_to_openers, .timeout = 60)
{
    /* Processes that died while nobody waited left their slots marked: the
     * table filled up (EUSERS) with one live attachment. */
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    int fd = ks_channel_fd(rx);
    for (unsigned i = 0; i < KS_CHANNEL_PEERS + 8; i++) {
        pid_t pid = kt_fork(attach_and_die, &fd);
        int st = kt_reap(pid);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child %u: status %#x", i, st);
    }
    ks_channel_t *tx;
    cr_assert_eq(ks_channel_open_fd(fd, KS_CHANNEL_SEND, &tx), 0);
    ks_channel_close(tx);
    ks_channel_close(rx);
}

static int race_fd;
static pthread_barrier_t race_bar;

static void *race_open(void *p)
{
    (void)p;
    ks_channel_t *h;
    pthread_barrier_wait(&race_bar);
    return ks_channel_open_fd(race_fd, KS_CHANNEL_SEND, &h) ? (void *)1 : NULL;
}

static int tasks(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static int two_first_opens(void *p)
{
    (void)p;
    alarm(20);
    pthread_barrier_init(&race_bar, NULL, 2);
    pthread_t a, b;
    void *ra, *rb;
    pthread_create(&a, NULL, race_open, NULL);
    pthread_create(&b, NULL, race_open, NULL);
    pthread_join(a, &ra);
    pthread_join(b, &rb);
    if (ra || rb)
        return 1;
    /* This thread and one keeper.  A joined thread can still be listed in
     * /proc/self/task for a moment: glibc's join returns when the kernel
     * clears the thread's tid, before the task is released (CI saw 3 tasks
     * once, on a loaded machine).  A second keeper would stay for good, so
     * the count is given 2 s to settle. */
    for (int i = 0; i < 200 && tasks() != 2; i++)
        usleep(10000);
    return tasks() == 2 ? 0 : 10 + tasks();
}

Test(channel, first_opens_racing_in_a_fork_child_start_one_keeper, .timeout = 120)
{
    /* _Fork and clone children run no atfork handler: two threads racing to
     * the first open both reset the keeper, and two keepers started. */
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV); /* the parent has a keeper */
    race_fd = ks_channel_fd(rx);
    for (int kind = KT_UFORK; kind < KT_FORK_KINDS; kind++)
        for (int i = 0; i < 20; i++) {
            pid_t pid = kt_fork_as((enum kt_fork_kind)kind, two_first_opens, NULL);
            kt_wait_child_named(pid, kt_fork_names[kind]);
        }
    ks_channel_close(rx);
}

Test(channel, attachments_beyond_the_kernels_walk_are_refused, .timeout = 120)
{
    /* The kernel walks 2048 entries of a robust list at a death: a process
     * with more attachments would leave the oldest unmarked. */
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    r.rlim_cur = r.rlim_max;
    if (r.rlim_cur < 2200 || setrlimit(RLIMIT_NOFILE, &r))
        cr_skip_test("needs 2200 descriptors");
    ks_channel_t *ch[64] = {0};
    static ks_channel_t *h[2100];
    int nh = 0, e = 0;
    for (int c = 0; c < 64 && !e; c++) {
        e = ks_channel_create(NULL, 4096, 100, KS_CHANNEL_RECV, &ch[c]);
        if (e)
            break;
        for (unsigned k = 1; k < KS_CHANNEL_PEERS && !e; k++) {
            e = ks_channel_open_fd(ks_channel_fd(ch[c]), KS_CHANNEL_SEND, &h[nh]);
            if (!e)
                nh++;
        }
    }
    cr_assert_eq(e, EMFILE, "%s", strerror(e));
    cr_assert_eq(nh + (nh + KS_CHANNEL_PEERS - 1) / (KS_CHANNEL_PEERS - 1), 2047,
                 "%d handles: refused at the 2048th attachment", nh);
    for (int i = 0; i < nh; i++)
        cr_assert_eq(ks_channel_close(h[i]), 0);
    for (int c = 0; c < 64 && ch[c]; c++)
        cr_assert_eq(ks_channel_close(ch[c]), 0);
}

/* A "death" made by hand, as the kernel makes it (FUTEX_OWNER_DIED in place
 * of the TID, a wake of one waiter if FUTEX_WAITERS is set), at the moment a
 * hardware watchpoint says. */
static uint32_t *dying_word;

static void kill_slot(uint32_t *w)
{
    uint32_t v = __atomic_load_n(w, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(w, &v, (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED))
        ;
    if (v & FUTEX_WAITERS)
        syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void die_on_first_look(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    struct kt_watch *w = kt_watch_cur;
    for (int i = 0; i < w->n; i++)
        ioctl(w->fd[i], PERF_EVENT_IOC_DISABLE, 0);
    if (!w->hits++)
        kill_slot(dying_word); /* right after the receiver's first load of it */
    /* stays disabled: one death */
}

static int never(void) { return 0; }

Test(channel, a_sender_dying_while_the_receiver_looks_at_it_is_seen, .timeout = 60)
{
    /* The receiver loaded the sender's slot (alive, no FUTEX_WAITERS yet),
     * the sender died (the kernel woke nobody), the receiver's CAS failed:
     * it skipped the word but counted the sender, and slept for good. */
    KT_SKIP_WATCH_UNDER_TSAN();
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    ks_channel_t *tx = reopen(rx, KS_CHANNEL_SEND); /* its "death" is made by hand; never closed */
    unsigned char *seg = map_seg(rx, 8192);
    dying_word = NULL;
    for (unsigned i = 0; i < KS_CHANNEL_PEERS; i++) {
        uint32_t role;
        memcpy(&role, seg + OFF_SLOTS + i * 64 + 16, 4);
        if (role == KS_CHANNEL_SEND)
            dying_word = (uint32_t *)(void *)(seg + OFF_SLOTS + i * 64);
    }
    cr_assert_not_null(dying_word);
    /* watch the receiver's own mapping of that word */
    struct kt_watch w = {.n = 0};
    uintptr_t off = (uintptr_t)dying_word - (uintptr_t)seg;
    /* the handle maps the segment one page after a guard page: find it from
     * a peeked pointer into the ring */
    cr_assert_eq(ks_channel_send(tx, "p", 1, 0), 0);
    const void *q;
    size_t n;
    cr_assert_eq(ks_channel_peek(rx, &q, &n, 0), 0);
    const unsigned char *base = (const unsigned char *)q - 8 - 4096; /* the first record is at ring + 0 */
    cr_assert_eq(ks_channel_release(rx), 0);
    if (kt_watch_add(&w, base + off, 4))
        cr_skip_test("no hardware watchpoints here");
    kt_watch_begin_with(&w, never, die_on_first_look);
    char buf[8];
    int64_t t0 = ks_now();
    int e = ks_channel_recv(rx, buf, sizeof buf, &n, t0 + 3000 * KT_MS);
    kt_watch_end(&w);
    kt_watch_close(&w);
    cr_assert_geq(w.hits, 1);
    cr_assert_eq(e, EPIPE, "%s after %lld ms", strerror(e), (long long)((ks_now() - t0) / KT_MS));
    munmap(seg, 8192);
    ks_channel_close(rx);
    KT_LEAK_OK(tx);
}

struct side {
    ks_channel_t *ch;
    int rc;
    size_t n;
    pid_t tid;
    int64_t done;
};

static void *recv_side(void *p)
{
    struct side *s = p;
    char buf[100];
    __atomic_store_n(&s->tid, kt_gettid(), __ATOMIC_RELEASE);
    s->rc = ks_channel_recv(s->ch, buf, sizeof buf, &s->n, ks_deadline_after(10000 * KT_MS));
    s->done = ks_now();
    return NULL;
}

static void *send_side(void *p)
{
    struct side *s = p;
    __atomic_store_n(&s->tid, kt_gettid(), __ATOMIC_RELEASE);
    s->rc = ks_channel_send(s->ch, "from C", 6, ks_deadline_after(3000 * KT_MS));
    s->done = ks_now();
    return NULL;
}

static pid_t side_tid(struct side *s)
{
    pid_t t;
    while (!(t = __atomic_load_n(&s->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    return t;
}

Test(channel, the_one_wake_of_a_death_is_passed_on, .timeout = 60)
{
    /* Sender D commits and dies before it unlocks.  The kernel wakes one
     * waiter on D's slot: receiver R, which finds D's message and returns.
     * Sender C, asleep on the lock D held, was never told, and slept until
     * its deadline with room in the ring. */
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    ks_channel_t *c = reopen(rx, KS_CHANNEL_SEND);
    ks_channel_t *d = reopen(rx, KS_CHANNEL_SEND); /* its "death" is made by hand; never closed */
    unsigned char *seg = map_seg(rx, 8192);
    void *p;
    cr_assert_eq(ks_channel_reserve(d, 5, &p, 0), 0); /* D holds the send lock */
    struct side r = {.ch = rx}, s = {.ch = c};
    pthread_t tr, tc;
    kt_spawn(&tr, recv_side, &r);
    cr_assert(kt_wait_in_futex(side_tid(&r), 5000 * KT_MS));
    kt_spawn(&tc, send_side, &s);
    cr_assert(kt_wait_in_futex(side_tid(&s), 5000 * KT_MS));
    /* D's commit, all but the unlock: the record, then tail */
    memcpy(p, "hello", 5);
    uint32_t rh[2] = {5, 0x4d534721u};
    memcpy((char *)p - 8, rh, 8);
    uint64_t tail = 16;
    __atomic_store_n((uint64_t *)(void *)(seg + OFF_TAIL), tail, __ATOMIC_SEQ_CST);
    /* D's death: its slot is the one whose lock token the send lock holds */
    uint32_t tok = __atomic_load_n((uint32_t *)(void *)(seg + 64), __ATOMIC_RELAXED);
    unsigned idx = (tok & 0xff) - 1;
    cr_assert_lt(idx, KS_CHANNEL_PEERS);
    int64_t t0 = ks_now();
    kill_slot((uint32_t *)(void *)(seg + OFF_SLOTS + idx * 64));
    kt_join(tr);
    kt_join(tc);
    cr_assert_eq(r.rc, 0, "R: %s", strerror(r.rc));
    cr_assert_eq(r.n, 5, "R got D's committed message");
    cr_assert_eq(s.rc, 0, "C: %s after %lld ms", strerror(s.rc), (long long)((s.done - t0) / KT_MS));
    cr_assert_lt(s.done - t0, KT_LATE_NS, "C took the dead holder's lock over after %lld ms",
                 (long long)((s.done - t0) / KT_MS));
    munmap(seg, 8192);
    ks_channel_close(c);
    ks_channel_close(rx);
    KT_LEAK_OK(d);
}

/* A waiter in another process that the kernel's one wake at a death reaches
 * first, and that dies before it can pass the death on: here a raw futex
 * wait on the dead peer's word that returns and does nothing. */
struct thief {
    uint32_t *word;
    pid_t tid;
    long rc;
};

static void *steal_the_wake(void *p)
{
    struct thief *t = p;
    uint32_t v = __atomic_load_n(t->word, __ATOMIC_RELAXED);
    while (!(v & FUTEX_WAITERS) &&
           !__atomic_compare_exchange_n(t->word, &v, v | FUTEX_WAITERS, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    __atomic_store_n(&t->tid, kt_gettid(), __ATOMIC_RELEASE);
    /* shared (no FUTEX_PRIVATE_FLAG): the key the kernel's death wake uses */
    t->rc = syscall(SYS_futex, t->word, FUTEX_WAIT, v | FUTEX_WAITERS, NULL, NULL, 0);
    return NULL;
}

/* The thief first in line on `word`: spawned, then seen asleep in the
 * kernel before anyone else queues there. */
static void thief_first(struct thief *th, pthread_t *t, uint32_t *word)
{
    *th = (struct thief){.word = word};
    kt_spawn(t, steal_the_wake, th);
    pid_t tid;
    while (!(tid = __atomic_load_n(&th->tid, __ATOMIC_ACQUIRE)))
        sched_yield();
    cr_assert(kt_wait_in_futex(tid, 5000 * KT_MS));
}

/* The death of the slot `word`, as the kernel makes it; the thief must have
 * taken its one wake, or the test proves nothing.  Returns when it died. */
static int64_t die_to_the_thief(struct thief *th, pthread_t t, uint32_t *word)
{
    int64_t t0 = ks_now();
    kill_slot(word);
    kt_join(t);
    cr_assert_eq(th->rc, 0, "the kernel's one wake went to the thief");
    return t0;
}

static void *wait_any_side(void *p)
{
    struct side *s = p;
    struct ks_any a = {KS_ANY_RECV, s->ch};
    unsigned idx = 99;
    __atomic_store_n(&s->tid, kt_gettid(), __ATOMIC_RELEASE);
    s->rc = ks_wait_any(&a, 1, ks_deadline_after(10000 * KT_MS), &idx);
    s->done = ks_now();
    s->n = idx;
    return NULL;
}

/* Sender D dies while receiver R sleeps; the kernel wakes one waiter on D's
 * word, and the first in line is a waiter that dies before it runs (S21:
 * senders asleep on the lock of a sender killed with them).  R was never
 * woken, and slept to its deadline. */
static void death_wake_stolen(void *(*rfn)(void *))
{
    KT_SKIP_WATCH_UNDER_TSAN();
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    ks_channel_t *d = reopen(rx, KS_CHANNEL_SEND); /* its death is made by hand; never closed */
    unsigned char *seg = map_seg(rx, 8192);
    uint32_t *dw = NULL;
    for (unsigned i = 0; i < KS_CHANNEL_PEERS; i++) {
        uint32_t role;
        memcpy(&role, seg + OFF_SLOTS + i * 64 + 16, 4);
        if (role == KS_CHANNEL_SEND)
            dw = (uint32_t *)(void *)(seg + OFF_SLOTS + i * 64);
    }
    cr_assert_not_null(dw);
    struct thief th;
    pthread_t tt, tr;
    thief_first(&th, &tt, dw);
    struct side r = {.ch = rx};
    kt_spawn(&tr, rfn, &r);
    cr_assert(kt_wait_in_futex(side_tid(&r), 5000 * KT_MS));
    int64_t t0 = die_to_the_thief(&th, tt, dw);
    kt_join(tr);
    cr_assert_eq(r.rc, rfn == recv_side ? EPIPE : 0, "R: %s", strerror(r.rc));
    cr_assert_lt(r.done - t0, 1000 * KT_MS + KT_LATE_NS, "R learned the death after %lld ms",
                 (long long)((r.done - t0) / KT_MS));
    if (rfn != recv_side) {
        char buf[8];
        size_t n;
        cr_assert_eq(r.n, 0);
        cr_assert_eq(ks_channel_recv(rx, buf, sizeof buf, &n, 0), EPIPE);
    }
    munmap(seg, 8192);
    ks_channel_close(rx);
    KT_LEAK_OK(d);
}

Test(channel, a_death_wake_taken_by_a_dying_waiter_is_not_lost, .timeout = 60)
{
    death_wake_stolen(recv_side);
}

Test(channel, a_death_wake_taken_by_a_dying_waiter_is_not_lost_to_wait_any, .timeout = 60)
{
    death_wake_stolen(wait_any_side);
}

struct opener {
    int fd;
    pthread_barrier_t *bar;
    ks_channel_t *h;
};

static void *open_at_once(void *p)
{
    struct opener *o = p;
    pthread_barrier_wait(o->bar);
    cr_assert_eq(ks_channel_open_fd(o->fd, KS_CHANNEL_SEND, &o->h), 0);
    return NULL;
}

static int live_slots(const unsigned char *seg)
{
    int n = 0;
    for (unsigned i = 0; i < KS_CHANNEL_PEERS; i++) {
        uint32_t w = __atomic_load_n((const uint32_t *)(const void *)(seg + OFF_SLOTS + i * 64), __ATOMIC_RELAXED);
        n += (w & FUTEX_TID_MASK) != 0 && !(w & FUTEX_OWNER_DIED);
    }
    return n;
}

Test(channel, concurrent_opens_get_a_slot_each, .timeout = 120)
{
    /* The keeper once kept its answer in one shared field: a caller could
     * read the answer to the next caller's claim, so two handles shared a
     * slot (their send locks were one token) and another slot leaked. */
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    unsigned char *seg = map_seg(rx, 8192);
    for (int round = 0; round < 30; round++) {
        enum { N = 16 };
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, N);
        struct opener o[N];
        pthread_t t[N];
        for (int i = 0; i < N; i++) {
            o[i] = (struct opener){ks_channel_fd(rx), &bar, NULL};
            kt_spawn(&t[i], open_at_once, &o[i]);
        }
        for (int i = 0; i < N; i++)
            kt_join(t[i]);
        cr_assert_eq(live_slots(seg), N + 1, "round %d: %d live slots for %d handles", round, live_slots(seg), N + 1);
        for (int i = 0; i < N; i++)
            cr_assert_eq(ks_channel_close(o[i].h), 0);
        cr_assert_eq(live_slots(seg), 1, "round %d: %d slots left after the closes", round, live_slots(seg));
        pthread_barrier_destroy(&bar);
    }
    munmap(seg, 8192);
    ks_channel_close(rx);
}

/* ---- the other waits that watch a peer's word (found by review) ---- */

/* A sender C asleep on the send lock that dead sender D holds: the kernel's
 * one wake at D's death goes to a thief first in line on D's word. */
Test(channel, a_death_wake_taken_by_a_dying_waiter_reaches_a_locker, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    ks_channel_t *rx = anon(4096, 100, KS_CHANNEL_RECV);
    ks_channel_t *c = reopen(rx, KS_CHANNEL_SEND);
    ks_channel_t *d = reopen(rx, KS_CHANNEL_SEND); /* dies by hand */
    unsigned char *seg = map_seg(rx, 8192);
    void *p;
    cr_assert_eq(ks_channel_reserve(d, 5, &p, 0), 0); /* D holds the send lock */
    uint32_t tok = __atomic_load_n((uint32_t *)(void *)(seg + 64), __ATOMIC_RELAXED);
    unsigned idx = (tok & 0xff) - 1;
    cr_assert_lt(idx, KS_CHANNEL_PEERS);
    uint32_t *dw = (uint32_t *)(void *)(seg + OFF_SLOTS + idx * 64);
    struct thief th;
    pthread_t tt, tc;
    thief_first(&th, &tt, dw);
    struct side s = {.ch = c};
    kt_spawn(&tc, send_side, &s);
    cr_assert(kt_wait_in_futex(side_tid(&s), 5000 * KT_MS));
    int64_t t0 = die_to_the_thief(&th, tt, dw);
    kt_join(tc);
    cr_assert_eq(s.rc, 0, "C: %s after %lld ms", strerror(s.rc), (long long)((s.done - t0) / KT_MS));
    cr_assert_lt(s.done - t0, 1000 * KT_MS + KT_LATE_NS, "C took the lock over after %lld ms",
                 (long long)((s.done - t0) / KT_MS));
    munmap(seg, 8192);
    ks_channel_close(c);
    ks_channel_close(rx);
    KT_LEAK_OK(d);
}

/* A sender asleep for room (wait_space); the only receiver dies and a thief
 * takes the kernel's one wake. */
Test(channel, a_death_wake_taken_by_a_dying_waiter_reaches_a_sender_waiting_for_room, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    ks_channel_t *tx = anon(4096, 100, KS_CHANNEL_SEND);
    ks_channel_t *r = reopen(tx, KS_CHANNEL_RECV); /* dies by hand */
    unsigned char *seg = map_seg(tx, 8192);
    char b[100] = {0};
    while (ks_channel_send(tx, b, 100, 0) == 0)
        ;
    while (ks_channel_send(tx, b, 6, 0) == 0) /* send_side's size: no room for it either */
        ;
    uint32_t *rw = NULL;
    for (unsigned i = 0; i < KS_CHANNEL_PEERS; i++) {
        uint32_t role;
        memcpy(&role, seg + OFF_SLOTS + i * 64 + 16, 4);
        if (role == KS_CHANNEL_RECV)
            rw = (uint32_t *)(void *)(seg + OFF_SLOTS + i * 64);
    }
    cr_assert_not_null(rw);
    struct thief th;
    pthread_t tt, ts;
    thief_first(&th, &tt, rw);
    struct side s = {.ch = tx};
    kt_spawn(&ts, send_side, &s);
    cr_assert(kt_wait_in_futex(side_tid(&s), 5000 * KT_MS));
    int64_t t0 = die_to_the_thief(&th, tt, rw);
    kt_join(ts);
    cr_assert_eq(s.rc, EPIPE, "S: %s after %lld ms", strerror(s.rc), (long long)((s.done - t0) / KT_MS));
    cr_assert_lt(s.done - t0, 1000 * KT_MS + KT_LATE_NS, "S learned the death after %lld ms",
                 (long long)((s.done - t0) / KT_MS));
    munmap(seg, 8192);
    ks_channel_close(tx);
    KT_LEAK_OK(r);
}

/* ks_wait_any behind a peek held by a receiver that dies (any_lock_held):
 * the one wake goes to a thief. */
Test(channel, a_death_wake_taken_by_a_dying_waiter_reaches_wait_any_behind_a_peek, .timeout = 60)
{
    KT_SKIP_WATCH_UNDER_TSAN();
    ks_channel_t *tx = anon(4096, 100, KS_CHANNEL_SEND);
    ks_channel_t *rx = reopen(tx, KS_CHANNEL_RECV);
    ks_channel_t *h = reopen(tx, KS_CHANNEL_RECV); /* dies by hand inside a peek */
    unsigned char *seg = map_seg(tx, 8192);
    cr_assert_eq(ks_channel_send(tx, "m", 1, 0), 0);
    const void *p;
    size_t n;
    cr_assert_eq(ks_channel_peek(h, &p, &n, 0), 0);
    uint32_t tok = __atomic_load_n((uint32_t *)(void *)(seg + 192), __ATOMIC_RELAXED);
    unsigned idx = (tok & 0xff) - 1;
    cr_assert_lt(idx, KS_CHANNEL_PEERS);
    uint32_t *hw = (uint32_t *)(void *)(seg + OFF_SLOTS + idx * 64);
    struct thief th;
    pthread_t tt, tw;
    thief_first(&th, &tt, hw);
    struct side w = {.ch = rx};
    kt_spawn(&tw, wait_any_side, &w);
    cr_assert(kt_wait_in_futex(side_tid(&w), 5000 * KT_MS));
    int64_t t0 = die_to_the_thief(&th, tt, hw);
    kt_join(tw);
    cr_assert_eq(w.rc, 0, "W: %s", strerror(w.rc));
    cr_assert_lt(w.done - t0, 1000 * KT_MS + KT_LATE_NS, "W saw the lock free after %lld ms",
                 (long long)((w.done - t0) / KT_MS));
    char b[8];
    cr_assert_eq(ks_channel_recv(rx, b, sizeof b, &n, 0), 0, "the message stayed");
    munmap(seg, 8192);
    ks_channel_close(rx);
    ks_channel_close(tx);
    KT_LEAK_OK(h);
}

/* A peer SIGKILLed inside open, after it set ever[] and bumped members_ev
 * and before its wake: the waiter that slept with no peer of that role yet
 * watched no slot, and the kernel woke nobody.  It slept to its deadline
 * (forever with KS_FOREVER) while a new call answered EPIPE at once.  The
 * child dies in a link-time wrapper of ks_futex_wake (TEST_WRAP in the
 * Makefile) at the wake of members_ev, offset 328 of the header page. */
static volatile int die_at_members_wake;
int __real_ks_futex_wake(const uint32_t *word, int n, unsigned flags);
int __wrap_ks_futex_wake(const uint32_t *word, int n, unsigned flags);
int __wrap_ks_futex_wake(const uint32_t *word, int n, unsigned flags)
{
    if (die_at_members_wake && ((uintptr_t)word & 4095) == 328 &&
        *(const uint64_t *)((uintptr_t)word & ~(uintptr_t)4095) == 0x314e414843534b00ull)
        raise(SIGKILL);
    return __real_ks_futex_wake(word, n, flags);
}

static void first_peer_killed_inside_open(int send)
{
    ks_channel_t *ch = anon(4096, 100, send ? KS_CHANNEL_SEND : KS_CHANNEL_RECV);
    if (send) {
        char b[100] = {0};
        while (ks_channel_send(ch, b, 100, 0) == 0) /* full: send_side waits for room */
            ;
        while (ks_channel_send(ch, b, 6, 0) == 0)
            ;
    }
    struct side s = {.ch = ch};
    pthread_t t;
    kt_spawn(&t, send ? send_side : recv_side, &s);
    cr_assert(kt_wait_in_futex(side_tid(&s), 5000 * KT_MS));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        ks_channel_t *mine;
        die_at_members_wake = 1;
        int e = ks_channel_open_fd(ks_channel_fd(ch), send ? KS_CHANNEL_RECV : KS_CHANNEL_SEND, &mine);
        _exit(e ? 3 : 4); /* not reached: killed inside */
    }
    int st = kt_reap(pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the child died inside open (status 0x%x)", st);
    int64_t t0 = ks_now();
    kt_join(t);
    cr_assert_eq(s.rc, EPIPE, "%s after %lld ms", strerror(s.rc), (long long)((s.done - t0) / KT_MS));
    cr_assert_lt(s.done - t0, 1000 * KT_MS + KT_LATE_NS, "learned it after %lld ms",
                 (long long)((s.done - t0) / KT_MS));
    ks_channel_close(ch);
}

Test(channel, a_first_sender_killed_inside_open_ends_a_waiting_receiver, .timeout = 60)
{
    first_peer_killed_inside_open(0);
}

Test(channel, a_first_receiver_killed_inside_open_ends_a_waiting_sender, .timeout = 60)
{
    first_peer_killed_inside_open(1);
}

/* No ksync call is a cancellation point (docs/conventions.md).  create,
 * open, open_fd and close make system calls that are (close, pread;
 * shm_open for a named channel):
 * a cancel pending in the caller acted inside them, and close then left the
 * handle allocated.  Now both return, and the cancel acts at the caller's
 * own pthread_testcancel(). */
static void chan_nocancel_calls(void *p)
{
    const char *name = p;
    cr_assert_eq(pthread_cancel(pthread_self()), 0); /* pending: deferred, enabled */
    ks_channel_t *ch = NULL, *again = NULL;
    cr_assert_eq(ks_channel_create(name, 4096, 64, KS_CHANNEL_SEND | KS_CHANNEL_RECV, &ch), 0);
    /* open again, by name or through the descriptor */
    if (name)
        cr_assert_eq(ks_channel_open(name, KS_CHANNEL_RECV, &again), 0);
    else
        cr_assert_eq(ks_channel_open_fd(ks_channel_fd(ch), KS_CHANNEL_RECV, &again), 0);
    cr_assert_eq(ks_channel_close(again), 0);
    cr_assert_eq(ks_channel_close(ch), 0);
    if (name)
        cr_assert_eq(ks_channel_unlink(name), 0);
}

Test(channel, create_open_and_close_are_not_cancellation_points, .timeout = 30)
{
    char name[64];
    snprintf(name, sizeof name, "/ksync-test-nocancel-%d", (int)getpid());
    const char *names[2] = {NULL, name};
    for (int i = 0; i < 2; i++)
        cr_assert(kt_returned_then_cancelled(chan_nocancel_calls, (void *)names[i]),
                  "%s channel: a pending cancel acted inside create, open or close", names[i] ? "a named" : "an anonymous");
}
