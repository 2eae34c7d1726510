/* tests/test_python.c - the Python side (python/ksync.py, docs/python.md),
 * run with python3: the course's C writer (examples/shm_writer.c) and the
 * Python reader (python/reader.py) end to end in both modes, each side's
 * count and checksum against what this test computes from
 * examples/course.h; and the checks of careless use in tests/test_python.py,
 * some on segments this test makes.
 *
 * python3 is looked up on PATH.  If it is missing these tests fail: `make
 * deps` (tools/deps.sh) installs it.  The Makefile passes the paths of this
 * build's libksync.so.1 (given to python3 as KSYNC_LIB) and writer. */
#include "helpers.h"

#include "../examples/course.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>

#if !defined(KT_REPO) || !defined(KT_LIB) || !defined(KT_WRITER)
#error "built by the Makefile, which defines KT_REPO, KT_LIB and KT_WRITER"
#endif

extern char **environ;

struct kt_proc {
    pid_t pid;
    int out; /* read end of the child's stdout and stderr */
    char buf[16384];
    size_t len;
};

/* environ without the variables we set, then ours. */
static char **py_env(void)
{
    static char *ours[] = {
        "KSYNC_LIB=" KT_LIB,
        "PYTHONDONTWRITEBYTECODE=1", /* no __pycache__ in the source tree */
#ifdef KT_ASAN_RT
        /* an ASan build of the library loads into python3 only after the
         * runtime; python3's own allocations are not ours to leak-check */
        "LD_PRELOAD=" KT_ASAN_RT,
        "ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1",
#endif
        NULL};
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + sizeof ours / sizeof *ours, sizeof *env);
    cr_assert(env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int drop = 0;
        for (char **o = ours; *o; o++) {
            size_t klen = (size_t)(strchr(*o, '=') - *o) + 1;
            drop |= strncmp(environ[i], *o, klen) == 0;
        }
        if (!drop)
            env[k++] = environ[i];
    }
    for (char **o = ours; *o; o++)
        env[k++] = *o;
    env[k] = NULL;
    return env;
}

static void start(struct kt_proc *p, const char *prog, char *const argv[])
{
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    char **env = py_env();
    int python = strcmp(prog, "python3") == 0;
    int e = python ? posix_spawnp(&p->pid, prog, &fa, NULL, argv, env)
                   : posix_spawn(&p->pid, prog, &fa, NULL, argv, env);
    free(env);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (e == ENOENT && python)
        cr_assert_fail("python3 is not on PATH: these tests need it (`make deps` installs it, tools/deps.sh)");
    cr_assert_eq(e, 0, "posix_spawn %s: %s", prog, strerror(e));
    p->out = fds[0];
    p->len = 0;
    p->buf[0] = 0;
}

/* Collect the output until EOF (killing the child after timeout_ms), reap
 * it, return its wait status. */
static int finish(struct kt_proc *p, int timeout_ms)
{
    int64_t end = ks_now() + (int64_t)timeout_ms * KT_MS;
    int killed = 0;
    for (;;) {
        int left = (int)((end - ks_now()) / KT_MS);
        struct pollfd pf = {p->out, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, left) == 0) {
            kill(p->pid, SIGKILL);
            killed = 1;
            break;
        }
        char tmp[4096];
        ssize_t r = read(p->out, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t room = sizeof p->buf - 1 - p->len, take = (size_t)r < room ? (size_t)r : room;
        memcpy(p->buf + p->len, tmp, take);
        p->len += take;
        p->buf[p->len] = 0;
    }
    close(p->out);
    int st;
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
    cr_assert(!killed, "pid %d still running after %d ms; its output:\n%s", (int)p->pid, timeout_ms, p->buf);
    return st;
}

static void assert_exit0(int st, const struct kt_proc *p, const char *who)
{
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: wait status %#x; its output:\n%s", who, st, p->buf);
}

/* "count=N checksum=X" in a process's output. */
static void assert_result(const struct kt_proc *p, const char *who, unsigned long long count, uint32_t crc)
{
    const char *s = strstr(p->buf, "count=");
    unsigned long long n;
    unsigned x;
    cr_assert(s && sscanf(s, "count=%llu checksum=%x", &n, &x) == 2, "%s printed no result:\n%s", who, p->buf);
    cr_assert(n == count && x == crc, "%s: count=%llu checksum=%08x, expected count=%llu checksum=%08x", who, n, x,
              count, crc);
}

static void unique_name(char *name, size_t cap, const char *what)
{
    static int seq;
    snprintf(name, cap, "/ksync-py-%s-%d-%d", what, (int)getpid(), seq++);
    shm_unlink(name);
}

static int shm_exists(const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd >= 0)
        close(fd);
    return fd >= 0;
}

static unsigned char scratch[KSC_CHAN_MAX];

/* ---- the course's pair, end to end ---- */

/* The reader starts first and waits for the segment; the writer comes
 * 100 ms later.  8 slots, so both sides wait on each other many times. */
Test(python, shm_writer_to_python_reader, .timeout = 120)
{
    char name[96], count[32];
    unique_name(name, sizeof name, "shm");
    unsigned n = 20000 / KT_SLOW;
    snprintf(count, sizeof count, "%u", n);
    struct kt_proc rd, wr;
    start(&rd, "python3", (char *[]){"python3", KT_REPO "/python/reader.py", "shm", name, NULL});
    kt_sleep_ns(100 * KT_MS);
    start(&wr, KT_WRITER, (char *[]){"shm_writer", "shm", name, count, "--slots", "8", NULL});
    int rst = finish(&rd, 90000), wst = finish(&wr, 10000);
    int left = shm_exists(name);
    shm_unlink(name); /* in case the writer did not get that far */
    uint32_t crc = ksc_expected_crc(n, KSC_SLOT - sizeof(struct ksc_rec), scratch);
    assert_exit0(rst, &rd, "python/reader.py");
    assert_exit0(wst, &wr, "shm_writer");
    assert_result(&rd, "python/reader.py", n, crc);
    assert_result(&wr, "shm_writer", n, crc);
    cr_assert(!left, "the writer unlinks the segment once the reader says done");
}

/* The writer first, the reader concurrently: messages of 0 to 12 KiB
 * through a 64 KiB ring (the reader's buffer grows from 4 KiB on EMSGSIZE),
 * then EPIPE when the writer closes. */
Test(python, channel_writer_to_python_reader, .timeout = 120)
{
    char name[96], count[32];
    unique_name(name, sizeof name, "chan");
    unsigned n = 3000 / KT_SLOW;
    snprintf(count, sizeof count, "%u", n);
    struct kt_proc rd, wr;
    start(&wr, KT_WRITER, (char *[]){"shm_writer", "channel", name, count, NULL});
    start(&rd, "python3", (char *[]){"python3", KT_REPO "/python/reader.py", "channel", name, NULL});
    int rst = finish(&rd, 90000), wst = finish(&wr, 10000);
    ks_channel_unlink(name); /* in case the reader did not get that far */
    uint32_t crc = ksc_expected_crc(n, KSC_CHAN_MAX - sizeof(struct ksc_rec), scratch);
    assert_exit0(rst, &rd, "python/reader.py");
    assert_exit0(wst, &wr, "shm_writer");
    assert_result(&rd, "python/reader.py", n, crc);
    assert_result(&wr, "shm_writer", n, crc);
}

/* The writer sends 5 records, closes and exits before the reader starts:
 * the records wait in the channel, and the reader gets all 5, then EPIPE. */
Test(python, channel_records_wait_for_a_late_reader, .timeout = 60)
{
    char name[96];
    unique_name(name, sizeof name, "late");
    struct kt_proc rd, wr;
    start(&wr, KT_WRITER, (char *[]){"shm_writer", "channel", name, "5", NULL});
    assert_exit0(finish(&wr, 10000), &wr, "shm_writer");
    cr_assert(shm_exists(name));
    start(&rd, "python3", (char *[]){"python3", KT_REPO "/python/reader.py", "channel", name, NULL});
    int rst = finish(&rd, 30000);
    int left = shm_exists(name);
    ks_channel_unlink(name);
    uint32_t crc = ksc_expected_crc(5, KSC_CHAN_MAX - sizeof(struct ksc_rec), scratch);
    assert_exit0(rst, &rd, "python/reader.py");
    assert_result(&rd, "python/reader.py", 5, crc);
    assert_result(&wr, "shm_writer", 5, crc);
    cr_assert(!left, "the reader unlinks the name once it has opened it");
}

/* ---- careless use, from Python (tests/test_python.py) ---- */

/* Run one case of tests/test_python.py (on the segment name, which is then
 * unlinked: a failed case leaves nothing behind). */
static void py_case(const char *c, const char *name)
{
    struct kt_proc p;
    start(&p, "python3",
          (char *[]){"python3", KT_REPO "/tests/test_python.py", (char *)c, (char *)name, NULL});
    int st = finish(&p, 60000);
    if (name)
        shm_unlink(name);
    assert_exit0(st, &p, c);
    char ok[64];
    snprintf(ok, sizeof ok, "ok %s:", c);
    cr_assert(strstr(p.buf, ok), "%s:\n%s", c, p.buf);
}

Test(python, recv_on_a_closed_channel_is_ebadf, .timeout = 60) { py_case("closed", NULL); }
Test(python, timeout_zero_on_empty_is_timeout_error, .timeout = 60) { py_case("timeout_zero", NULL); }
Test(python, oversize_send_is_emsgsize, .timeout = 60) { py_case("oversize", NULL); }
Test(python, recv_grows_its_buffer_on_emsgsize, .timeout = 60) { py_case("grow", NULL); }
Test(python, end_of_stream_is_broken_pipe_error, .timeout = 60) { py_case("broken_pipe", NULL); }

/* A shm object of size bytes holding data (zero-filled after it). */
static void make_shm(const char *name, const void *data, size_t len, size_t size)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0, "shm_open %s: %s", name, strerror(errno));
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    if (len)
        cr_assert_eq(pwrite(fd, data, len, 0), (ssize_t)len);
    close(fd);
}

/* A course segment laid out by ksc_init with these flags, mapped. */
static unsigned char *make_course(const char *name, unsigned flags)
{
    size_t size = ksc_segment_size(4, KSC_SLOT);
    make_shm(name, NULL, 0, size);
    int fd = shm_open(name, O_RDWR, 0);
    cr_assert_geq(fd, 0);
    unsigned char *seg = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(seg, MAP_FAILED);
    cr_assert_eq(ksc_init(seg, 4, KSC_SLOT, flags, (uint32_t)getpid()), 0);
    return seg;
}

Test(python, segment_with_a_bad_magic_is_a_clear_error, .timeout = 60)
{
    char name[96];
    unique_name(name, sizeof name, "magic");
    make_shm(name, "NOTOURS!", 8, 4096);
    py_case("bad_magic", name);
}

Test(python, truncated_segment_is_a_clear_error, .timeout = 60)
{
    char name[96];
    unique_name(name, sizeof name, "trunc");
    make_shm(name, KSC_MAGIC, 8, 40);
    py_case("truncated", name);
}

/* The C side's usual mistake: objects made without KS_SHARED (a Python
 * waiter would sleep on a private futex that the writer's post never wakes). */
Test(python, objects_without_ks_shared_are_refused, .timeout = 60)
{
    char name[96];
    unique_name(name, sizeof name, "private");
    unsigned char *seg = make_course(name, 0);
    munmap(seg, ksc_segment_size(4, KSC_SLOT)); /* the mapping, not the name */
    py_case("not_shared", name);
}

Test(python, unpublished_or_missing_segment_times_out, .timeout = 60)
{
    char name[96];
    unique_name(name, sizeof name, "zeros");
    make_shm(name, NULL, 0, ksc_segment_size(4, KSC_SLOT)); /* sized, never written */
    py_case("unpublished", name); /* and unlinks it */
    py_case("missing", name);
}

/* A C process and a Python one wake each other through a ks_event and a
 * ks_sem in one segment: C waits until Python sleeps in each wait (the
 * event's SLEEPERS bit, the semaphore's waiter count), then wakes it. */
Test(python, c_and_python_wake_each_other, .timeout = 60)
{
    char name[96];
    unique_name(name, sizeof name, "cross");
    unsigned char *seg = make_course(name, KS_SHARED);
    ks_sem_t *items = (ks_sem_t *)(void *)(seg + KSC_ITEMS_OFF);
    ks_event_t *done = (ks_event_t *)(void *)(seg + KSC_DONE_OFF);
    struct kt_proc p;
    start(&p, "python3", (char *[]){"python3", KT_REPO "/tests/test_python.py", "cross", name, NULL});
    int e = ks_sem_timedwait(items, ks_deadline_after(30000 * KT_MS)); /* Python's post */
    int64_t end = ks_now() + 30000 * KT_MS;
    while (e == 0 && !(__atomic_load_n(&done->word, __ATOMIC_RELAXED) & KS_EVENT_SLEEPERS) && ks_now() < end)
        kt_sleep_ns(KT_MS);
    int ev_slept = (__atomic_load_n(&done->word, __ATOMIC_RELAXED) & KS_EVENT_SLEEPERS) != 0;
    ks_event_set(done);
    while (e == 0 && !(__atomic_load_n(&items->state, __ATOMIC_RELAXED) >> 32) && ks_now() < end)
        kt_sleep_ns(KT_MS);
    int sem_slept = (__atomic_load_n(&items->state, __ATOMIC_RELAXED) >> 32) != 0;
    ks_sem_post(items);
    int st = finish(&p, 60000);
    munmap(seg, ksc_segment_size(4, KSC_SLOT));
    shm_unlink(name);
    cr_assert_eq(e, 0, "Python's post did not reach C: %s\n%s", strerror(e), p.buf);
    cr_assert(ev_slept && sem_slept, "Python never slept (event %d, sem %d)", ev_slept, sem_slept);
    assert_exit0(st, &p, "cross");
    cr_assert(strstr(p.buf, "ok cross:"), "%s", p.buf);
}
