/* stress/s_channel.c - the message-passing family: S21 (seed 002
 * "Tuberías": a child process sends records to its parent, which logs them)
 * and S22 (seed 002 "Paso de mensajes": clients and a server exchange
 * messages).  Every party is a process of its own (fork()ed by the runner;
 * the channel's segment is a memfd each child maps itself).
 *
 * S21: N children each send records to the parent: a record is (child,
 * seq, length, checksum) and a payload that is a pure function of (child,
 * seq, seed), 8..S21_MAX bytes.  ksync: one ks_channel, N senders, the
 * parent receiving; reference: pipe(2), one per child (writes above
 * PIPE_BUF from several writers would interleave in one pipe), the parent
 * poll()ing them.  Invariant: the parent sees each child's records exactly
 * in order (seq 0, 1, 2, ...), every byte as written, and the end of every
 * stream (EPIPE from the channel, EOF from the pipe) after the last record.
 * A second configuration SIGKILLs every child mid-stream: the parent must
 * still see an intact, gap-free prefix of each child's records and then the
 * end of the stream (the death detected, no wait until a timeout).
 *
 * S22: N clients each send requests to one server and wait for the reply
 * to each: the reply carries the request's (client, seq) and a checksum of
 * its payload, which the client checks.  ksync: one request channel (N
 * senders, the server receiving) and one reply channel per client;
 * references: a socketpair(AF_UNIX, SOCK_STREAM) per client, and a loopback
 * TCP connection per client (TCP_NODELAY), the server poll()ing them.
 * Invariant: every client gets the right reply to each request, in order;
 * the server sees each client's requests in order and exactly N x iters
 * in all.
 *
 * Every blocking call has a deadline (ST_STALL_S): a lost wake-up fails the
 * row instead of hanging the run.
 */
#include "harness.h"
#include "stream_io.h"

#include <ksync/channel.h>
#include <ksync/time.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define S21_MAX 1024
#define MAXP 64
/* Parties per run, whatever --threads asks: the channel side attaches one
 * sender per child (S21) or client (S22) plus the parent or server, and a
 * channel holds KS_CHANNEL_PEERS attachments at once (the creator's is the
 * first; the open that would make a 33rd fails with EUSERS, by design), so
 * 31 at most; the reference rows of the same
 * configuration use the same number.  The row's thread column shows it. */
#define MAX_PARTIES (KS_CHANNEL_PEERS - 1 < MAXP ? KS_CHANNEL_PEERS - 1 : MAXP)
#define STALL_NS ((int64_t)(ST_STALL_S * 1e9))

struct rec {
    uint32_t who, len;
    uint64_t seq;
    uint64_t sum;
    uint8_t payload[S21_MAX];
};
#define REC_HEAD offsetof(struct rec, payload)

static uint64_t g_seed;

static size_t make_rec(struct rec *r, uint32_t who, uint64_t seq)
{
    uint64_t x = st_mix64(g_seed ^ ((uint64_t)who << 48) ^ seq);
    r->who = who;
    r->seq = seq;
    r->len = 8 + (uint32_t)(x % (S21_MAX - 7));
    uint64_t sum = 14695981039346656037ull;
    for (uint32_t i = 0; i < r->len; i++) {
        r->payload[i] = (uint8_t)st_mix64(x + i);
        sum = (sum ^ r->payload[i]) * 1099511628211ull;
    }
    r->sum = sum;
    return REC_HEAD + r->len;
}

/* 0 when r (n bytes) is exactly record (who, seq). */
static int check_rec(const struct rec *r, size_t n, uint32_t who, uint64_t seq)
{
    static struct rec want;
    size_t wn = make_rec(&want, who, seq);
    return n == wn && memcmp(r, &want, wn) == 0 ? 0 : -1;
}

/* ---- byte streams ---- */

/* A record on a stream: the header, then the payload. */
static int read_rec(int fd, struct rec *r, size_t *n)
{
    int e = st_read_all(fd, r, REC_HEAD);
    if (e != 1)
        return e;
    if (r->len > S21_MAX)
        return -1;
    if (st_read_all(fd, r->payload, r->len) != 1)
        return -1;
    *n = REC_HEAD + r->len;
    return 1;
}

static void stream_pair(int tcp, int fds[2])
{
    if (!tcp) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
            fds[0] = fds[1] = -1;
        return;
    }
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    fds[0] = fds[1] = -1;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &al))
        goto out;
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a))
        goto out;
    fds[1] = accept(l, NULL, NULL);
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
out:
    if (l >= 0)
        close(l);
}

/* ---- processes ---- */

struct shared {
    int64_t end_ns; /* --seconds mode: children stop here; else 0 */
    uint64_t sent[MAXP];
    int ready;
};

static struct shared *shared_new(const struct st_opts *o)
{
    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
        perror("mmap");
        exit(4);
    }
    s->end_ns = o->seconds > 0 ? ks_now() + (int64_t)(o->seconds * 1e9) : 0;
    return s;
}

/* Wait until n children have attached (a child that failed to attach exits
 * 3 and never counts): 1 when they all did within ST_STALL_S.  A receiver
 * that started before a late child attached saw EPIPE (no sender alive yet
 * though one had been) and stopped serving: S22 once failed that way. */
static int all_ready(struct shared *s, unsigned n)
{
    int64_t end = ks_deadline_after(STALL_NS);
    while (__atomic_load_n(&s->ready, __ATOMIC_SEQ_CST) < (int)n)
        if (ks_now() > end)
            return 0;
        else
            usleep(100);
    return 1;
}

static int more(const struct shared *s, uint64_t i, uint64_t iters)
{
    return s->end_ns ? ks_now() < s->end_ns : i < iters;
}

/* Reap every child; the number that did not exit 0 (a kill we sent is
 * expected when `killed`). */
static unsigned reap_all(const pid_t *pids, unsigned n, int killed)
{
    unsigned bad = 0;
    for (unsigned i = 0; i < n; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        int ok = WIFEXITED(st) ? WEXITSTATUS(st) == 0 : (killed && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        bad += !ok;
    }
    return bad;
}

static void fill_result(struct st_result *res, unsigned n, uint64_t ops, uint64_t planned, int64_t t0)
{
    memset(res, 0, sizeof *res);
    res->nthreads = n;
    res->ops = ops;
    res->planned = planned;
    res->secs = (double)(ks_now() - t0) / 1e9;
}

/* ---- S21 ---- */

enum { T_CHANNEL, T_PIPE, T_UNIX, T_TCP };

static void s21_child(int t, int fd, ks_channel_t *ch, uint32_t who, uint64_t iters, struct shared *s)
{
    struct rec r;
    uint64_t i = 0;
    for (; more(s, i, iters); i++) {
        size_t n = make_rec(&r, who, i);
        int e = t == T_CHANNEL ? ks_channel_send(ch, &r, n, ks_deadline_after(STALL_NS)) : st_write_all(fd, &r, n);
        if (e)
            _exit(2);
        /* relaxed: read by the parent after waitpid */
        __atomic_store_n(&s->sent[who], i + 1, __ATOMIC_RELAXED);
    }
}

static void s21_one(const struct st_opts *o, int t, unsigned n, uint64_t iters, int kill_them)
{
    char impl[48];
    snprintf(impl, sizeof impl, "%s%s", t == T_CHANNEL ? "ks_channel" : "pipe", kill_them ? "/SIGKILL" : "");
    struct st_run run = {.scen = "S21", .impl = impl, .kind = t == T_CHANNEL ? ST_KSYNC : ST_REF, .threads = n,
                         .iters = iters};
    struct shared *s = shared_new(o);
    ks_channel_t *ch = NULL;
    int fds[MAXP][2];
    if (t == T_CHANNEL) {
        int e = ks_channel_create(NULL, 64 << 10, sizeof(struct rec), KS_CHANNEL_RECV, &ch);
        if (e) {
            /* ENOSYS: no robust-futex list (qemu-user): not a failure of the channel */
            st_row(&run, NULL, e == ENOSYS ? ST_SKIP : ST_FAIL, "ks_channel_create: %s", strerror(e));
            return;
        }
    } else {
        for (unsigned i = 0; i < n; i++)
            if (pipe(fds[i])) {
                st_row(&run, NULL, ST_FAIL, "pipe: %s", strerror(errno));
                return;
            }
    }
    int64_t t0 = ks_now();
    pid_t pids[MAXP];
    fflush(NULL);
    for (unsigned i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            ks_channel_t *mine = NULL;
            int fd = -1;
            if (t == T_CHANNEL) {
                if (ks_channel_open_fd(ks_channel_fd(ch), KS_CHANNEL_SEND, &mine))
                    _exit(3);
            } else {
                for (unsigned j = 0; j < n; j++) {
                    close(fds[j][0]);
                    if (j != i)
                        close(fds[j][1]);
                }
                fd = fds[i][1];
            }
            __atomic_fetch_add(&s->ready, 1, __ATOMIC_SEQ_CST);
            s21_child(t, fd, mine, i, kill_them ? UINT64_MAX : iters, s);
            if (mine)
                ks_channel_close(mine);
            _exit(0);
        }
    }
    if (t != T_CHANNEL)
        for (unsigned i = 0; i < n; i++)
            close(fds[i][1]);
    uint64_t next[MAXP] = {0}, total = 0, bad = 0;
    unsigned open_streams = all_ready(s, n) ? n : 0;
    int killed = 0, timeout = 0;
    if (!open_streams) { /* a child could not attach: end the others */
        bad++;
        for (unsigned i = 0; i < n; i++)
            kill(pids[i], SIGKILL);
        killed = 1;
    }
    struct rec r;
    size_t len = 0;
    struct pollfd pf[MAXP];
    for (unsigned i = 0; i < n; i++)
        pf[i] = (struct pollfd){.fd = t == T_CHANNEL ? -1 : fds[i][0], .events = POLLIN};
    while (open_streams) {
        if (kill_them && !killed && total >= iters * n / 2) {
            for (unsigned i = 0; i < n; i++)
                kill(pids[i], SIGKILL);
            killed = 1;
        }
        if (t == T_CHANNEL) {
            int e = ks_channel_recv(ch, &r, sizeof r, &len, ks_deadline_after(STALL_NS));
            if (e == EPIPE)
                break;
            if (e) {
                timeout = e == ETIMEDOUT;
                bad++;
                break;
            }
        } else {
            int p = poll(pf, n, (int)(ST_STALL_S * 1000));
            if (p <= 0) {
                timeout = p == 0;
                bad++;
                break;
            }
            unsigned i = 0;
            while (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                i++;
            int e = read_rec(pf[i].fd, &r, &len);
            if (e == 0) { /* the end of this child's stream */
                close(pf[i].fd);
                pf[i].fd = -1;
                open_streams--;
                continue;
            }
            if (e < 0) {
                bad += !killed; /* a record cut by a SIGKILL is not a failure: the stream ended */
                close(pf[i].fd);
                pf[i].fd = -1;
                open_streams--;
                continue;
            }
        }
        if (r.who >= n || check_rec(&r, len, r.who, next[r.who])) {
            bad++;
            break;
        }
        next[r.who]++;
        total++;
    }
    unsigned failed = reap_all(pids, n, killed);
    uint64_t sent = 0;
    for (unsigned i = 0; i < n; i++)
        sent += s->sent[i];
    struct st_result res;
    fill_result(&res, n, total, kill_them ? 0 : (uint64_t)n * iters, t0);
    if (ch)
        ks_channel_close(ch);
    /* With SIGKILL, a child may die after its last send returned and before
     * it counted it, or between its commit and its count: the parent can
     * hold one more per child than the counts say, never fewer. */
    int lost = kill_them ? total + n < sent || total > sent + n : total != sent;
    if (bad || failed || lost || timeout)
        st_row(&run, &res, ST_FAIL, "%llu bad record(s)%s, %u child(ren) failed, received %llu of %llu sent",
               (unsigned long long)bad, timeout ? " (timed out: a lost wake-up?)" : "", failed,
               (unsigned long long)total, (unsigned long long)sent);
    else
        st_row(&run, &res, ST_PASS, "%llu records from %u child(ren), each in order and intact, then %s%s",
               (unsigned long long)total, n, t == T_CHANNEL ? "EPIPE" : "EOF",
               kill_them ? " after SIGKILL mid-stream" : "");
    munmap(s, sizeof *s);
}

static void s21_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    g_seed = st_mix64(o->seed ^ 21);
    n = n > MAX_PARTIES ? MAX_PARTIES : n ? n : 1;
    uint64_t iters = st_iters(o, cfg->iters);
    for (int t = T_CHANNEL; t <= T_PIPE; t++)
        if (st_selected(o, t == T_CHANNEL ? ST_KSYNC : ST_REF))
            s21_one(o, t, n, iters, cfg->arg);
}

static void s21_run(const struct st_opts *o)
{
    static const struct st_config cfg[] = {{1, 100000, 0}, {4, 25000, 0}, {4, 25000, 1}};
    ST_CONFIGS(o, cfg, s21_config);
}

/* ---- S22 ---- */

struct req {
    uint32_t who, len;
    uint64_t seq;
    uint8_t payload[256];
};
struct reply {
    uint32_t who, pad;
    uint64_t seq, sum;
};

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int s22_client(int t, int fd, ks_channel_t *rq, ks_channel_t *rp, uint32_t who, uint64_t iters,
                      struct shared *s)
{
    struct req q;
    struct reply a;
    uint64_t i = 0;
    for (; more(s, i, iters); i++) {
        q.who = who;
        q.seq = i;
        q.len = 1 + (uint32_t)(st_mix64(g_seed ^ ((uint64_t)who << 40) ^ i) % sizeof q.payload);
        for (uint32_t k = 0; k < q.len; k++)
            q.payload[k] = (uint8_t)(i * 7 + k + who);
        size_t qn = offsetof(struct req, payload) + q.len, an = 0;
        int e;
        if (t == T_CHANNEL) {
            e = ks_channel_send(rq, &q, qn, ks_deadline_after(STALL_NS));
            if (!e)
                e = ks_channel_recv(rp, &a, sizeof a, &an, ks_deadline_after(STALL_NS));
        } else {
            e = st_write_all(fd, &q, qn) || st_read_all(fd, &a, sizeof a) != 1;
            an = sizeof a;
        }
        if (e)
            return 2;
        if (an != sizeof a || a.who != who || a.seq != i || a.sum != fnv(q.payload, q.len))
            return 5;
        __atomic_store_n(&s->sent[who], i + 1, __ATOMIC_RELAXED); /* read after waitpid */
    }
    return 0;
}

static void s22_one(const struct st_opts *o, int t, unsigned n, uint64_t iters)
{
    static const char *const names[] = {"ks_channel", "pipe", "unix stream", "tcp loopback"};
    struct st_run run = {.scen = "S22", .impl = names[t], .kind = t == T_CHANNEL ? ST_KSYNC : ST_REF,
                         .threads = n, .iters = iters};
    struct shared *s = shared_new(o);
    ks_channel_t *rq = NULL, *rp[MAXP] = {0};
    int fds[MAXP][2];
    if (t == T_CHANNEL) {
        int e = ks_channel_create(NULL, 64 << 10, sizeof(struct req), KS_CHANNEL_RECV, &rq);
        for (unsigned i = 0; !e && i < n; i++)
            e = ks_channel_create(NULL, 4096, sizeof(struct reply), KS_CHANNEL_SEND, &rp[i]);
        if (e) {
            st_row(&run, NULL, e == ENOSYS ? ST_SKIP : ST_FAIL, "ks_channel_create: %s", strerror(e));
            return;
        }
    } else {
        for (unsigned i = 0; i < n; i++) {
            stream_pair(t == T_TCP, fds[i]);
            if (fds[i][0] < 0 || fds[i][1] < 0) {
                st_row(&run, NULL, ST_SKIP, "%s: %s", t == T_TCP ? "loopback TCP" : "socketpair", strerror(errno));
                return;
            }
        }
    }
    int64_t t0 = ks_now();
    pid_t pids[MAXP];
    fflush(NULL);
    for (unsigned i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            ks_channel_t *q = NULL, *a = NULL;
            int fd = -1;
            if (t == T_CHANNEL) {
                if (ks_channel_open_fd(ks_channel_fd(rq), KS_CHANNEL_SEND, &q) ||
                    ks_channel_open_fd(ks_channel_fd(rp[i]), KS_CHANNEL_RECV, &a))
                    _exit(3);
                __atomic_fetch_add(&s->ready, 1, __ATOMIC_SEQ_CST);
            } else {
                for (unsigned j = 0; j < n; j++) {
                    close(fds[j][1]);
                    if (j != i)
                        close(fds[j][0]);
                }
                fd = fds[i][0];
            }
            int rc = s22_client(t, fd, q, a, i, iters, s);
            if (q) {
                ks_channel_close(q);
                ks_channel_close(a);
            }
            _exit(rc);
        }
    }
    /* the server: this process */
    struct pollfd pf[MAXP];
    if (t != T_CHANNEL)
        for (unsigned i = 0; i < n; i++) {
            close(fds[i][0]);
            pf[i] = (struct pollfd){.fd = fds[i][1], .events = POLLIN};
        }
    uint64_t next[MAXP] = {0}, total = 0, bad = 0;
    /* every client attached before the first receive: see all_ready */
    unsigned open_streams = t != T_CHANNEL || all_ready(s, n) ? n : 0;
    struct req q;
    int timeout = 0;
    bad += !open_streams;
    while (open_streams) {
        size_t qn = 0;
        int from = -1;
        if (t == T_CHANNEL) {
            int e = ks_channel_recv(rq, &q, sizeof q, &qn, ks_deadline_after(STALL_NS));
            if (e == EPIPE)
                break;
            if (e) {
                timeout = e == ETIMEDOUT;
                bad++;
                break;
            }
        } else {
            int p = poll(pf, n, (int)(ST_STALL_S * 1000));
            if (p <= 0) {
                timeout = 1;
                bad++;
                break;
            }
            unsigned i = 0;
            while (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                i++;
            int e = st_read_all(pf[i].fd, &q, offsetof(struct req, payload));
            if (e == 1 && (q.len == 0 || q.len > sizeof q.payload || st_read_all(pf[i].fd, q.payload, q.len) != 1))
                e = -1;
            if (e != 1) {
                bad += e < 0;
                close(pf[i].fd);
                pf[i].fd = -1;
                open_streams--;
                continue;
            }
            from = (int)i;
            qn = offsetof(struct req, payload) + q.len;
        }
        if (q.who >= n || q.seq != next[q.who] || qn != offsetof(struct req, payload) + q.len ||
            (from >= 0 && (unsigned)from != q.who)) {
            bad++;
            break;
        }
        next[q.who]++;
        total++;
        struct reply a = {.who = q.who, .seq = q.seq, .sum = fnv(q.payload, q.len)};
        int e = t == T_CHANNEL ? ks_channel_send(rp[q.who], &a, sizeof a, ks_deadline_after(STALL_NS))
                               : st_write_all(pf[q.who].fd, &a, sizeof a);
        if (e) {
            bad++;
            break;
        }
    }
    if (bad)
        for (unsigned i = 0; i < n; i++)
            kill(pids[i], SIGKILL); /* the clients would wait for replies that never come */
    unsigned failed = reap_all(pids, n, bad != 0);
    uint64_t done = 0;
    for (unsigned i = 0; i < n; i++)
        done += s->sent[i];
    struct st_result res;
    fill_result(&res, n, total, s->end_ns ? 0 : (uint64_t)n * iters, t0);
    if (t == T_CHANNEL) {
        ks_channel_close(rq);
        for (unsigned i = 0; i < n; i++)
            ks_channel_close(rp[i]);
    } else {
        for (unsigned i = 0; i < n; i++)
            if (pf[i].fd >= 0)
                close(pf[i].fd);
    }
    if (bad || failed || done != total)
        st_row(&run, &res, ST_FAIL, "%llu bad request(s)%s, %u client(s) failed, %llu served, %llu confirmed",
               (unsigned long long)bad, timeout ? " (timed out: a lost wake-up?)" : "", failed,
               (unsigned long long)total, (unsigned long long)done);
    else
        st_row(&run, &res, ST_PASS, "%llu round trips, each reply checked by its client, in order", (unsigned long long)total);
    munmap(s, sizeof *s);
}

static void s22_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    g_seed = st_mix64(o->seed ^ 22);
    n = n > MAX_PARTIES ? MAX_PARTIES : n ? n : 1;
    uint64_t iters = st_iters(o, cfg->iters);
    if (st_selected(o, ST_KSYNC))
        s22_one(o, T_CHANNEL, n, iters);
    if (st_selected(o, ST_REF)) {
        s22_one(o, T_UNIX, n, iters);
        s22_one(o, T_TCP, n, iters);
    }
}

static void s22_run(const struct st_opts *o)
{
    static const struct st_config cfg[] = {{2, 20000, 0}, {16, 2000, 0}};
    ST_CONFIGS(o, cfg, s22_config);
}

const struct st_scenario st_family_channel[] = {
    {"S21", "pipe-records", "child processes send records to their parent, which logs them: in order, intact, "
                            "the end of the stream seen (also after a SIGKILL mid-stream)",
     "ksync channel | pipe(2), one per child", "1 child x 100000, 4 x 25000, 4 killed mid-stream", s21_run},
    {"S22", "client-server", "clients and a server exchange messages: every reply checked, in order",
     "ksync channel (requests) + one per client (replies) | AF_UNIX stream, loopback TCP",
     "2 clients x 20000, 16 x 2000", s22_run},
    {0, 0, 0, 0, 0, 0},
};
