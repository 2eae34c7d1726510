/* stress/b_ipc.c - section 11: messages between processes.
 *
 * Senders and receivers are separate processes (fork()ed, each with its own
 * address space; the channel's segment is a memfd each child maps for
 * itself).  For each message size (64 B, 1 KiB, 64 KiB) and each team (1
 * sender + 1 receiver, 4 + 4) the same protocol runs over:
 *
 *   ks_channel   one segment (a 4 MiB ring) shared by every sender and
 *                receiver: each message goes to whichever receiver is free
 *   pipe         pipe(2) with a 1 MiB buffer (F_SETPIPE_SZ)
 *   unix stream  socketpair(AF_UNIX, SOCK_STREAM), 1 MiB send buffer
 *   tcp loopback a connection to 127.0.0.1, TCP_NODELAY, 1 MiB send buffer
 *
 * The references are byte streams: with 4 + 4 each sender gets its own
 * pipe/socket and its own receiver (4 independent pairs), because writers
 * sharing one stream interleave messages above PIPE_BUF.  That favours the
 * references: they share nothing, while the channel's 8 processes share one
 * ring.
 *
 * A message starts with (sender id, sequence number); receivers check that
 * each sender's numbers only grow (exactly +1 on a stream, where a receiver
 * has one sender) and the run fails on any other value.  Senders send until
 * the stop flag (after the run's time cap), then close; receivers count
 * until the end of the stream (EOF, or EPIPE from the channel).  The rate
 * is the messages received over the time from the start to the last
 * receive.
 *
 * Ping-pong: two processes, a 64-byte message there and back, one channel
 * (pipe, socket pair, connection) per direction; round trips/s, and the
 * round trip in microseconds.
 */
#include "bench.h"
#include "stream_io.h"

#include <ksync/channel.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { T_CHANNEL, T_PIPE, T_UNIX, T_TCP, NT };
static const char *const tnames[NT] = {"ks_channel", "pipe", "unix stream", "tcp loopback"};
static const size_t sizes[] = {64, 1024, 65536};
#define NS (sizeof sizes / sizeof sizes[0])
static const int teams[] = {1, 4};
#define NTEAM 2
#define MAXP 4
#define RING (4u << 20)
#define BUF (1 << 20)

struct shared {
    int ready, go, stop, bad;
    int64_t start_ns;
    uint64_t got[MAXP];
    int64_t last_ns[MAXP];
    uint64_t rounds;
};

struct run {
    double msgs, mbs;
};

/* ---- byte streams ---- */

static void big_buffers(int fd, int tcp)
{
    int sz = BUF, one = 1;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    if (tcp)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A connected pair of descriptors: [0] the sender's end, [1] the receiver's. */
static void stream_pair(int t, int fds[2])
{
    if (t == T_PIPE) {
        if (pipe(fds))
            bench_fail("pipe: %s", strerror(errno));
        fcntl(fds[1], F_SETPIPE_SZ, BUF);
        int tmp = fds[0];
        fds[0] = fds[1];
        fds[1] = tmp;
        return;
    }
    if (t == T_UNIX) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
            bench_fail("socketpair: %s", strerror(errno));
        big_buffers(fds[0], 0);
        big_buffers(fds[1], 0);
        return;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &al))
        bench_fail("tcp listen: %s", strerror(errno));
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    big_buffers(fds[0], 1);
    if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a))
        bench_fail("tcp connect: %s", strerror(errno));
    fds[1] = accept(l, NULL, NULL);
    if (fds[1] < 0)
        bench_fail("tcp accept: %s", strerror(errno));
    big_buffers(fds[1], 1);
    close(l);
}

/* ---- the two roles ---- */

static void wait_go(struct shared *s)
{
    __atomic_fetch_add(&s->ready, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&s->go, __ATOMIC_ACQUIRE)) /* acquire: pairs with the parent's release */
        usleep(100);
}

static void sender(struct shared *s, int t, int fd, ks_channel_t *ch, uint32_t id, size_t size)
{
    char *msg = calloc(1, size);
    wait_go(s);
    for (uint32_t seq = 0; !__atomic_load_n(&s->stop, __ATOMIC_RELAXED); seq++) { /* relaxed: a stop hint */
        memcpy(msg, &id, 4);
        memcpy(msg + 4, &seq, 4);
        int e = t == T_CHANNEL ? ks_channel_send(ch, msg, size, KS_FOREVER) : st_write_all(fd, msg, size);
        if (e)
            break;
    }
    free(msg);
}

static void receiver(struct shared *s, int t, int fd, ks_channel_t *ch, int me, size_t size)
{
    char *msg = malloc(size);
    int64_t next[MAXP] = {0};
    uint64_t got = 0;
    int64_t last = 0;
    wait_go(s);
    for (;;) {
        size_t n = size;
        int ok;
        if (t == T_CHANNEL)
            ok = ks_channel_recv(ch, msg, size, &n, KS_FOREVER) == 0;
        else
            ok = st_read_all(fd, msg, size) == 1;
        if (!ok)
            break;
        uint32_t id, seq;
        memcpy(&id, msg, 4);
        memcpy(&seq, msg + 4, 4);
        if (n != size || id >= MAXP || (int64_t)seq < next[id] || (t != T_CHANNEL && (int64_t)seq != next[id]))
            __atomic_store_n(&s->bad, 1, __ATOMIC_RELAXED); /* read after waitpid */
        else
            next[id] = (int64_t)seq + 1;
        got++;
        last = bench_now();
    }
    s->got[me] = got;
    s->last_ns[me] = last;
    free(msg);
}

static struct shared *shared_new(void)
{
    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        bench_fail("mmap: %s", strerror(errno));
    return s;
}

static void start_and_stop(struct shared *s, int nproc, double secs)
{
    while (__atomic_load_n(&s->ready, __ATOMIC_SEQ_CST) < nproc)
        usleep(100);
    s->start_ns = bench_now();
    __atomic_store_n(&s->go, 1, __ATOMIC_RELEASE); /* release: pairs with wait_go */
    bench_sleep_ns((int64_t)(secs * 1e9));
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED); /* relaxed: a stop hint */
}

static void reap_all(pid_t *pids, int n)
{
    for (int i = 0; i < n; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st))
            bench_fail("ipc: a child failed (status %#x)", st);
    }
}

static struct run run_stream(int t, size_t size, int p, double secs)
{
    struct shared *s = shared_new();
    pid_t pids[2 * MAXP];
    ks_channel_t *ch = NULL;
    int fds[MAXP][2];
    if (t == T_CHANNEL) {
        int e = ks_channel_create(NULL, RING, 65536, KS_CHANNEL_RECV, &ch);
        if (e)
            bench_fail("ks_channel_create: %s", strerror(e));
    } else {
        for (int i = 0; i < p; i++)
            stream_pair(t, fds[i]);
    }
    fflush(NULL);
    for (int i = 0; i < 2 * p; i++) {
        int is_sender = i < p, k = i % p;
        pid_t pid = fork();
        if (pid < 0)
            bench_fail("fork: %s", strerror(errno));
        if (pid == 0) {
            ks_channel_t *mine = NULL;
            int fd = -1;
            if (t == T_CHANNEL) {
                if (ks_channel_open_fd(ks_channel_fd(ch), is_sender ? KS_CHANNEL_SEND : KS_CHANNEL_RECV, &mine))
                    _exit(3);
            } else {
                for (int j = 0; j < p; j++) {
                    if (j != k || !is_sender)
                        close(fds[j][0]);
                    if (j != k || is_sender)
                        close(fds[j][1]);
                }
                fd = fds[k][is_sender ? 0 : 1];
            }
            if (is_sender)
                sender(s, t, fd, mine, (uint32_t)k, size);
            else
                receiver(s, t, fd, mine, k, size);
            if (mine)
                ks_channel_close(mine);
            if (fd >= 0)
                close(fd);
            _exit(0);
        }
        pids[i] = pid;
    }
    if (t != T_CHANNEL)
        for (int i = 0; i < p; i++) {
            close(fds[i][0]);
            close(fds[i][1]);
        }
    start_and_stop(s, 2 * p, secs);
    if (ch)
        ks_channel_close(ch); /* every child attached before it counted as ready */
    reap_all(pids, 2 * p);
    if (s->bad)
        bench_fail("ipc %s %zu B %d+%d: a message out of order or malformed", tnames[t], size, p, p);
    uint64_t got = 0;
    int64_t last = s->start_ns;
    for (int i = 0; i < p; i++) {
        got += s->got[i];
        if (s->last_ns[i] > last)
            last = s->last_ns[i];
    }
    double el = (double)(last - s->start_ns) / 1e9;
    struct run r = {el > 0 ? (double)got / el : 0, el > 0 ? (double)got * (double)size / el / 1e6 : 0};
    munmap(s, sizeof *s);
    return r;
}

/* ---- ping-pong ---- */

struct ends {
    int t;
    ks_channel_t *ch[2]; /* [0] A to B, [1] B to A */
    int fd[2][2];
};

static int pp_send(struct ends *e, int dir, ks_channel_t *ch, const char *m)
{
    return e->t == T_CHANNEL ? ks_channel_send(ch, m, 64, KS_FOREVER) : st_write_all(e->fd[dir][0], m, 64);
}

static int pp_recv(struct ends *e, int dir, ks_channel_t *ch, char *m)
{
    size_t n;
    if (e->t == T_CHANNEL)
        return ks_channel_recv(ch, m, 64, &n, KS_FOREVER) == 0 && n == 64 ? 1 : 0;
    return st_read_all(e->fd[dir][1], m, 64);
}

static double run_pingpong(int t, double secs)
{
    struct shared *s = shared_new();
    struct ends e = {.t = t};
    if (t == T_CHANNEL) {
        for (int d = 0; d < 2; d++)
            if (ks_channel_create(NULL, 65536, 64, d ? KS_CHANNEL_SEND : KS_CHANNEL_RECV, &e.ch[d]))
                bench_fail("ks_channel_create");
    } else {
        stream_pair(t, e.fd[0]);
        stream_pair(t, e.fd[1]);
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        bench_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        /* B: echo until the end of the stream */
        ks_channel_t *in = NULL, *out = NULL;
        if (t != T_CHANNEL) {
            close(e.fd[0][0]); /* A's ends: B must see A's close as the end */
            close(e.fd[1][1]);
        }
        if (t == T_CHANNEL &&
            (ks_channel_open_fd(ks_channel_fd(e.ch[0]), KS_CHANNEL_RECV, &in) ||
             ks_channel_open_fd(ks_channel_fd(e.ch[1]), KS_CHANNEL_SEND, &out)))
            _exit(3);
        char m[64];
        wait_go(s);
        while (pp_recv(&e, 0, in, m) == 1)
            if (pp_send(&e, 1, out, m))
                break;
        if (in) {
            ks_channel_close(in);
            ks_channel_close(out);
        }
        _exit(0);
    }
    /* A: this process */
    ks_channel_t *out = NULL, *in = NULL;
    if (t == T_CHANNEL) {
        ks_channel_open_fd(ks_channel_fd(e.ch[0]), KS_CHANNEL_SEND, &out);
        ks_channel_open_fd(ks_channel_fd(e.ch[1]), KS_CHANNEL_RECV, &in);
    } else {
        close(e.fd[0][1]);
        close(e.fd[1][0]);
    }
    while (__atomic_load_n(&s->ready, __ATOMIC_SEQ_CST) < 1)
        usleep(100);
    char m[64] = {0};
    int64_t t0 = bench_now(), end = t0 + (int64_t)(secs * 1e9);
    uint64_t rounds = 0;
    __atomic_store_n(&s->go, 1, __ATOMIC_RELEASE); /* release: pairs with wait_go */
    while (bench_now() < end) {
        memcpy(m, &rounds, sizeof rounds);
        if (pp_send(&e, 0, out, m) || pp_recv(&e, 1, in, m) != 1)
            bench_fail("ping-pong %s: lost the partner", tnames[t]);
        uint64_t back;
        memcpy(&back, m, sizeof back);
        if (back != rounds)
            bench_fail("ping-pong %s: %llu came back for %llu", tnames[t], (unsigned long long)back,
                       (unsigned long long)rounds);
        rounds++;
    }
    double el = (double)(bench_now() - t0) / 1e9;
    if (t == T_CHANNEL) {
        ks_channel_close(out);
        ks_channel_close(in);
        ks_channel_close(e.ch[0]);
        ks_channel_close(e.ch[1]);
    } else {
        close(e.fd[0][0]);
        close(e.fd[1][1]);
    }
    reap_all(&pid, 1);
    munmap(s, sizeof *s);
    return (double)rounds / el;
}

void bench_ipc(void)
{
    double secs = bopt.seconds / (2 * BENCH_SHORT_DIV);
    int R = bopt.reps;
    bench_section("11");

    printf("\n== 11. Messages between processes (higher is better) ==\n");
    printf("%.2f s per run; senders and receivers are fork()ed processes; with 4+4 each\n"
           "reference sender has its own stream and receiver, the channel's 8 share one ring\n",
           secs);
    signal(SIGPIPE, SIG_IGN);
    static struct run med[NTEAM][NS][NT];
    for (int ti = 0; ti < NTEAM; ti++)
        for (size_t si = 0; si < NS; si++)
            for (int t = 0; t < NT; t++) {
                double m[BENCH_MAX_REPS], b[BENCH_MAX_REPS];
                for (int r = 0; r < R; r++) {
                    struct run x = run_stream(t, sizes[si], teams[ti], secs);
                    m[r] = x.msgs;
                    b[r] = x.mbs;
                }
                char label[96];
                snprintf(label, sizeof label, "%s %zu B %d+%d msgs/s", tnames[t], sizes[si], teams[ti], teams[ti]);
                med[ti][si][t].msgs = bench_stats_l(label, m, R).med;
                med[ti][si][t].mbs = bench_stats(b, R).med;
            }
    for (int ti = 0; ti < NTEAM; ti++) {
        printf("\n%d sender%s + %d receiver%s\n", teams[ti], teams[ti] > 1 ? "s" : "", teams[ti],
               teams[ti] > 1 ? "s" : "");
        printf("%-8s %-14s %14s %10s %16s\n", "size", "transport", "messages/s", "MB/s", "channel / this");
        for (size_t si = 0; si < NS; si++)
            for (int t = 0; t < NT; t++) {
                struct run x = med[ti][si][t];
                printf("%-8zu %-14s %14.0f %10.1f", sizes[si], tnames[t], x.msgs, x.mbs);
                if (t == T_CHANNEL)
                    printf(" %16s\n", "");
                else
                    printf(" %15.2fx\n", med[ti][si][T_CHANNEL].msgs / x.msgs);
            }
    }
    double pp[NT];
    for (int t = 0; t < NT; t++) {
        double v[BENCH_MAX_REPS];
        for (int r = 0; r < R; r++)
            v[r] = run_pingpong(t, secs);
        char label[64];
        snprintf(label, sizeof label, "%s ping-pong round trips/s", tnames[t]);
        pp[t] = bench_stats_l(label, v, R).med;
    }
    printf("\nping-pong, 64 B there and back\n%-14s %14s %12s\n", "transport", "round trips/s", "round trip");
    for (int t = 0; t < NT; t++)
        printf("%-14s %14.0f %9.2f us\n", tnames[t], pp[t], 1e6 / pp[t]);
    double r64 = med[0][0][T_CHANNEL].msgs / med[0][0][T_PIPE].msgs;
    double r64k = med[0][2][T_CHANNEL].mbs / med[0][2][T_PIPE].mbs;
    double rtt = pp[T_PIPE] / pp[T_CHANNEL]; /* channel round trip / pipe round trip */
    printf("\nratio ksync / pipe: 64 B 1+1 messages/s %.2fx; 64 KiB 1+1 MB/s %.2fx; round trip %.3f of the pipe's\n",
           r64, r64k, rtt);
    bench_target("ipc: channel 64 B 1+1 messages/s / pipe", r64, ">=", 5.0, "x");
    bench_target("ipc: channel 64 KiB 1+1 MB/s / pipe", r64k, ">=", 1.0, "x");
    bench_target("ipc: channel 64 B round trip / pipe's", rtt, "<=", 0.5, "x");
}
