/* stress/s_shm.c - the shared-memory family: S20 (a writer process and a
 * reader process share memory).  Seed: 002 "Memoria compartida", where a C
 * program writes a value into a System V segment and a Python program reads
 * it; here the writer and the reader are processes that pass a stream of
 * records through a ring in one segment, synchronised by process-shared
 * objects placed in the segment itself (docs/shared.md).
 *
 * The ring holds S20_RING records of 8..S20_MAX payload bytes.  A record
 * carries its writer, its sequence number, its length and a checksum of
 * its payload; the payload is a pure function of (writer, seq), so a reader
 * regenerates it and compares every byte.  Writers put records until their
 * count (or --seconds) is reached; the last writer to finish then puts one
 * end record per reader, behind every data record (the ring is FIFO).
 *
 * Invariant: each reader sees each writer's records in order (with one
 * reader, exactly seq 0, 1, 2, ...), each byte as written and each checksum
 * right; over all readers, as many records as the writers put and the same
 * sum of (checksum + key) values, so nothing was lost, duplicated or torn.
 *
 * Synchronisation compared (all in the segment, all process-shared):
 *   ks_cond    ks_mutex + two ks_cond (not empty / not full)
 *   ks_sem     three ks_sem: empty slots, full slots, and a binary one as
 *              the ring's lock (the textbook bounded buffer)
 *   sem_t      the same with POSIX sem_t, pshared = 1 (the reference)
 *   pthread    pthread mutex + two conds, PTHREAD_PROCESS_SHARED
 * each in two ways of sharing:
 *   fork       an anonymous MAP_SHARED segment, the writers and readers
 *              fork() children of the runner (the same addresses)
 *   spawn      a shm_open segment, the writers and readers this program
 *              started again by posix_spawn (unrelated processes: each maps
 *              the segment itself, at an address other than the runner's,
 *              checked)
 *
 * --threads N is the number of processes: N/2 writers and N - N/2 readers
 * (at least one of each, at most S20_MAXP).  The runner only creates,
 * watches and checks: a run with no progress for ST_STALL_S seconds is
 * reported as a stall (its processes are killed, exit status 3, as the
 * harness does for threads).  --yield reaches the children (fork: inherited;
 * spawn: passed in the environment with the seed).
 */
#include "harness.h"

#include <ksync/cond.h>
#include <ksync/debug.h>
#include <ksync/mutex.h>
#include <ksync/sem.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define S20_RING 16
#define S20_MAX 200      /* payload bytes of the longest record */
#define S20_MAXP 64      /* processes */
#define S20_END UINT32_MAX /* the writer field of an end record */

struct s20_rec {
    uint32_t writer; /* 0..nw-1, or S20_END */
    uint32_t len;    /* payload bytes */
    uint64_t seq;    /* per writer: 0, 1, ... */
    uint64_t sum;    /* FNV-1a of the payload */
    uint8_t payload[S20_MAX];
};
#define S20_HEAD offsetof(struct s20_rec, payload)

union s20_sync {
    struct {
        ks_mutex_t m;
        ks_cond_t not_empty, not_full;
    } kc;
    struct {
        ks_sem_t empty, full, mx;
    } ks;
    struct {
        sem_t empty, full, mx;
    } px;
    struct {
        pthread_mutex_t m;
        pthread_cond_t not_empty, not_full;
    } pc;
};

struct s20_side {
    _Alignas(64) uint64_t n;   /* records written / read (relaxed: the runner's progress) */
    uint64_t keysum;           /* sum of sum + st_mix64(key) over them */
    uint64_t errs;
    int64_t t_end;             /* when the process finished (CLOCK_MONOTONIC) */
    char msg[160];             /* the first error */
};

struct s20_seg {
    union s20_sync u;
    uint32_t head, tail, count; /* under the ring's lock */
    _Alignas(64) struct s20_rec ring[S20_RING];
    /* set by the runner before any child starts */
    uint32_t impl, nw, nr;
    uint64_t iters; /* per writer; 0: until stop */
    /* control */
    uint32_t go, stop, writers_done;
    uintptr_t addr[1 + S20_MAXP]; /* where the runner (0) and each child mapped it */
    struct s20_side w[S20_MAXP], r[S20_MAXP];
};

#define S20_BYTES ((sizeof(struct s20_seg) + 4095) & ~(size_t)4095)

/* ---- records ---------------------------------------------------------------------- */

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t rec_key(uint32_t w, uint64_t seq) { return ((uint64_t)w << ST_SEQ_BITS) | seq; }

/* The payload of (w, seq) into p; its length. */
static uint32_t rec_fill(uint8_t *p, uint32_t w, uint64_t seq)
{
    uint64_t x = st_mix64(rec_key(w, seq) ^ 0x9e3779b97f4a7c15ull);
    uint32_t len = 8 + (uint32_t)(x % (S20_MAX - 7));
    for (uint32_t i = 0; i < len; i += 8) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        memcpy(p + i, &x, len - i < 8 ? len - i : 8);
    }
    return len;
}

/* ---- the synchronisations compared ---------------------------------------------------- */

struct s20_impl {
    const char *name;
    enum st_kind kind;
    int (*init)(union s20_sync *u);
    int (*destroy)(union s20_sync *u);
    /* copy r into the ring / the oldest record out of it; 0 or an errno value */
    int (*put)(struct s20_seg *s, const struct s20_rec *r);
    int (*get)(struct s20_seg *s, struct s20_rec *r);
};

static void ring_in(struct s20_seg *s, const struct s20_rec *r)
{
    memcpy(&s->ring[s->head], r, S20_HEAD + r->len);
    s->head = (s->head + 1) % S20_RING;
    s->count++;
}

static void ring_out(struct s20_seg *s, struct s20_rec *r)
{
    const struct s20_rec *q = &s->ring[s->tail];
    memcpy(r, q, S20_HEAD);
    memcpy(r->payload, q->payload, r->len <= S20_MAX ? r->len : S20_MAX);
    s->tail = (s->tail + 1) % S20_RING;
    s->count--;
}

/* ks_mutex + two ks_cond */
static int kc_init(union s20_sync *u)
{
    int e = ks_mutex_init(&u->kc.m, KS_SHARED);
    if (!e)
        e = ks_cond_init(&u->kc.not_empty, KS_SHARED);
    if (!e)
        e = ks_cond_init(&u->kc.not_full, KS_SHARED);
    return e;
}
static int kc_destroy(union s20_sync *u)
{
    int e = ks_cond_destroy(&u->kc.not_empty);
    int e2 = ks_cond_destroy(&u->kc.not_full);
    int e3 = ks_mutex_destroy(&u->kc.m);
    return e ? e : e2 ? e2 : e3;
}
static int kc_put(struct s20_seg *s, const struct s20_rec *r)
{
    int e = ks_mutex_lock(&s->u.kc.m);
    while (!e && s->count == S20_RING)
        e = ks_cond_wait(&s->u.kc.not_full, &s->u.kc.m);
    if (e)
        return e;
    ring_in(s, r);
    e = ks_cond_signal(&s->u.kc.not_empty);
    int e2 = ks_mutex_unlock(&s->u.kc.m);
    return e ? e : e2;
}
static int kc_get(struct s20_seg *s, struct s20_rec *r)
{
    int e = ks_mutex_lock(&s->u.kc.m);
    while (!e && s->count == 0)
        e = ks_cond_wait(&s->u.kc.not_empty, &s->u.kc.m);
    if (e)
        return e;
    ring_out(s, r);
    e = ks_cond_signal(&s->u.kc.not_full);
    int e2 = ks_mutex_unlock(&s->u.kc.m);
    return e ? e : e2;
}

/* three ks_sem */
static int ks3_init(union s20_sync *u)
{
    int e = ks_sem_init(&u->ks.empty, S20_RING, KS_SHARED);
    if (!e)
        e = ks_sem_init(&u->ks.full, 0, KS_SHARED);
    if (!e)
        e = ks_sem_init_bounded(&u->ks.mx, 1, 1, KS_SHARED);
    return e;
}
static int ks3_destroy(union s20_sync *u)
{
    int e = ks_sem_destroy(&u->ks.empty);
    int e2 = ks_sem_destroy(&u->ks.full);
    int e3 = ks_sem_destroy(&u->ks.mx);
    return e ? e : e2 ? e2 : e3;
}
static int ks3_put(struct s20_seg *s, const struct s20_rec *r)
{
    int e = ks_sem_wait(&s->u.ks.empty);
    if (!e)
        e = ks_sem_wait(&s->u.ks.mx);
    if (e)
        return e;
    ring_in(s, r);
    e = ks_sem_post(&s->u.ks.mx); /* bounded at 1: EOVERFLOW would be a double release */
    int e2 = ks_sem_post(&s->u.ks.full);
    return e ? e : e2;
}
static int ks3_get(struct s20_seg *s, struct s20_rec *r)
{
    int e = ks_sem_wait(&s->u.ks.full);
    if (!e)
        e = ks_sem_wait(&s->u.ks.mx);
    if (e)
        return e;
    ring_out(s, r);
    e = ks_sem_post(&s->u.ks.mx);
    int e2 = ks_sem_post(&s->u.ks.empty);
    return e ? e : e2;
}

/* three POSIX sem_t, pshared = 1; errors come through errno */
static int px_wait(sem_t *x)
{
    while (sem_wait(x))
        if (errno != EINTR)
            return errno;
    return 0;
}
static int px_init(union s20_sync *u)
{
    if (sem_init(&u->px.empty, 1, S20_RING) || sem_init(&u->px.full, 1, 0) || sem_init(&u->px.mx, 1, 1))
        return errno;
    return 0;
}
static int px_destroy(union s20_sync *u)
{
    int e = sem_destroy(&u->px.empty) ? errno : 0;
    e = sem_destroy(&u->px.full) && !e ? errno : e;
    e = sem_destroy(&u->px.mx) && !e ? errno : e;
    return e;
}
static int px_put(struct s20_seg *s, const struct s20_rec *r)
{
    int e = px_wait(&s->u.px.empty);
    if (!e)
        e = px_wait(&s->u.px.mx);
    if (e)
        return e;
    ring_in(s, r);
    if (sem_post(&s->u.px.mx) || sem_post(&s->u.px.full))
        return errno;
    return 0;
}
static int px_get(struct s20_seg *s, struct s20_rec *r)
{
    int e = px_wait(&s->u.px.full);
    if (!e)
        e = px_wait(&s->u.px.mx);
    if (e)
        return e;
    ring_out(s, r);
    if (sem_post(&s->u.px.mx) || sem_post(&s->u.px.empty))
        return errno;
    return 0;
}

/* pthread mutex + two conds, PTHREAD_PROCESS_SHARED */
static int pc_init(union s20_sync *u)
{
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    int e = pthread_mutex_init(&u->pc.m, &ma);
    if (!e)
        e = pthread_cond_init(&u->pc.not_empty, &ca);
    if (!e)
        e = pthread_cond_init(&u->pc.not_full, &ca);
    pthread_mutexattr_destroy(&ma);
    pthread_condattr_destroy(&ca);
    return e;
}
static int pc_destroy(union s20_sync *u)
{
    int e = pthread_cond_destroy(&u->pc.not_empty);
    int e2 = pthread_cond_destroy(&u->pc.not_full);
    int e3 = pthread_mutex_destroy(&u->pc.m);
    return e ? e : e2 ? e2 : e3;
}
static int pc_put(struct s20_seg *s, const struct s20_rec *r)
{
    int e = pthread_mutex_lock(&s->u.pc.m);
    while (!e && s->count == S20_RING)
        e = pthread_cond_wait(&s->u.pc.not_full, &s->u.pc.m);
    if (e)
        return e;
    ring_in(s, r);
    e = pthread_cond_signal(&s->u.pc.not_empty);
    int e2 = pthread_mutex_unlock(&s->u.pc.m);
    return e ? e : e2;
}
static int pc_get(struct s20_seg *s, struct s20_rec *r)
{
    int e = pthread_mutex_lock(&s->u.pc.m);
    while (!e && s->count == 0)
        e = pthread_cond_wait(&s->u.pc.not_empty, &s->u.pc.m);
    if (e)
        return e;
    ring_out(s, r);
    e = pthread_cond_signal(&s->u.pc.not_full);
    int e2 = pthread_mutex_unlock(&s->u.pc.m);
    return e ? e : e2;
}

static const struct s20_impl impls[] = {
    {"ks_cond", ST_KSYNC, kc_init, kc_destroy, kc_put, kc_get},
    {"ks_sem", ST_KSYNC, ks3_init, ks3_destroy, ks3_put, ks3_get},
    {"sem_t", ST_REF, px_init, px_destroy, px_put, px_get},
    {"pthread", ST_REF, pc_init, pc_destroy, pc_put, pc_get},
};
#define N_IMPLS (sizeof impls / sizeof impls[0])

/* ---- the children ---------------------------------------------------------------------- */

enum { S20_WRITER, S20_READER };

__attribute__((format(printf, 2, 3))) static void side_note(struct s20_side *d, const char *fmt, ...)
{
    if (d->errs++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof d->msg, fmt, ap);
        va_end(ap);
    }
}

static int s20_writer(struct s20_seg *s, unsigned me)
{
    const struct s20_impl *im = &impls[s->impl];
    struct s20_side *d = &s->w[me];
    struct s20_rec r;
    for (uint64_t seq = 0; !s->iters || seq < s->iters; seq++) {
        /* relaxed: the stop flag only ends the loop; no data hangs on it */
        if (__atomic_load_n(&s->stop, __ATOMIC_RELAXED))
            break;
        r.writer = me;
        r.seq = seq;
        r.len = rec_fill(r.payload, me, seq);
        r.sum = fnv1a(r.payload, r.len);
        int e = im->put(s, &r);
        if (e) {
            side_note(d, "writer %u: put of seq %llu returned %d", me, (unsigned long long)seq, e);
            break;
        }
        d->keysum += r.sum + st_mix64(rec_key(me, seq));
        /* relaxed: the runner's progress count; the total is read after the exit */
        __atomic_store_n(&d->n, d->n + 1, __ATOMIC_RELAXED);
    }
    /* the last writer closes the stream: one end record per reader, behind
     * every data record.  acq_rel: pairs with the other writers' increments,
     * each made after that writer's last put returned */
    if (__atomic_add_fetch(&s->writers_done, 1, __ATOMIC_ACQ_REL) == s->nw) {
        r.writer = S20_END;
        r.len = 0;
        r.seq = 0;
        r.sum = 0;
        for (uint32_t i = 0; i < s->nr; i++) {
            int e = im->put(s, &r);
            if (e)
                side_note(d, "writer %u: put of end record %u returned %d", me, i, e);
        }
    }
    d->t_end = ks_now();
    return d->errs ? 1 : 0;
}

static int s20_reader(struct s20_seg *s, unsigned me)
{
    const struct s20_impl *im = &impls[s->impl];
    struct s20_side *d = &s->r[me];
    uint64_t next[S20_MAXP] = {0}; /* per writer: the lowest seq still allowed */
    uint8_t want[S20_MAX];
    struct s20_rec r;
    for (;;) {
        int e = im->get(s, &r);
        if (e) {
            side_note(d, "reader %u: get returned %d", me, e);
            break;
        }
        if (r.writer == S20_END)
            break;
        if (r.writer >= s->nw || r.len > S20_MAX) {
            side_note(d, "reader %u: a record from writer %u of %u bytes", me, r.writer, r.len);
            continue;
        }
        if (s->nr == 1 ? r.seq != next[r.writer] : r.seq < next[r.writer])
            side_note(d, "reader %u: writer %u's seq %llu after %llu (order, loss or duplicate)", me,
                      r.writer, (unsigned long long)r.seq, (unsigned long long)next[r.writer]);
        next[r.writer] = r.seq + 1;
        uint32_t len = rec_fill(want, r.writer, r.seq);
        if (r.len != len || memcmp(r.payload, want, len) != 0)
            side_note(d, "reader %u: writer %u seq %llu: %u bytes, not the %u written", me, r.writer,
                      (unsigned long long)r.seq, r.len, len);
        else if (r.sum != fnv1a(r.payload, r.len))
            side_note(d, "reader %u: writer %u seq %llu: checksum %#llx does not match", me, r.writer,
                      (unsigned long long)r.seq, (unsigned long long)r.sum);
        d->keysum += r.sum + st_mix64(rec_key(r.writer, r.seq));
        /* relaxed: the runner's progress count; the total is read after the exit */
        __atomic_store_n(&d->n, d->n + 1, __ATOMIC_RELAXED);
    }
    d->t_end = ks_now();
    return d->errs ? 1 : 0;
}

/* A child's life: wait for the start, play the role. */
static int s20_child(struct s20_seg *s, int role, unsigned me)
{
    /* acquire: pairs with the runner's release of go, after every setting */
    while (!__atomic_load_n(&s->go, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    return role == S20_WRITER ? s20_writer(s, me) : s20_reader(s, me);
}

/* Slot of a child in addr[]: readers 1..nr, writers after them. */
static unsigned s20_slot(const struct s20_seg *s, int role, unsigned me)
{
    return 1 + (role == S20_READER ? me : s->nr + me);
}

/* This program started by posix_spawn with KSYNC_S20_CHILD=name:role:index:yield:seed
 * runs as that child here and exits before main: it shares nothing with
 * the runner but the segment's name, and maps the segment itself, after a
 * spacer, and again if it still landed where the runner has it. */
__attribute__((constructor)) static void s20_spawned(void)
{
    const char *env = getenv("KSYNC_S20_CHILD");
    if (!env)
        return;
    char name[64];
    int role;
    unsigned me, yield;
    unsigned long long seed;
    if (sscanf(env, "%63[^:]:%d:%u:%u:%llu", name, &role, &me, &yield, &seed) != 5 || me >= S20_MAXP)
        _exit(120);
    ks_debug_yield_config(yield, (uint64_t)seed);
    alarm(600); /* an orphan of a killed runner ends by itself */
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0)
        _exit(121);
    void *spacer = mmap(NULL, 16 * S20_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    (void)spacer;
    struct s20_seg *s = mmap(NULL, S20_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s != MAP_FAILED && (uintptr_t)s == s->addr[0]) {
        void *again = mmap(NULL, S20_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        munmap(s, S20_BYTES);
        s = again;
    }
    close(fd);
    if (s == MAP_FAILED)
        _exit(122);
    /* release: pairs with the runner's acquire while it waits for us */
    __atomic_store_n(&s->addr[s20_slot(s, role, me)], (uintptr_t)s, __ATOMIC_RELEASE);
    _exit(s20_child(s, role, me));
}

/* ---- the runner ---------------------------------------------------------------------------- */

enum { S20_FORK, S20_SPAWN };

struct s20_kid {
    pid_t pid;
    int role;
    unsigned me;
    int status; /* once reaped */
    int reaped;
};

static pid_t s20_start(struct s20_seg *s, int mode, const char *name, int role, unsigned me,
                       const struct st_opts *o)
{
    if (mode == S20_FORK) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            /* release: pairs with the runner's acquire while it waits for us */
            __atomic_store_n(&s->addr[s20_slot(s, role, me)], (uintptr_t)s, __ATOMIC_RELEASE);
            _exit(s20_child(s, role, me));
        }
        return pid;
    }
    char env1[160];
    snprintf(env1, sizeof env1, "KSYNC_S20_CHILD=%s:%d:%u:%u:%llu", name, role, me, o->yield,
             (unsigned long long)(o->seed ^ ((uint64_t)(role * S20_MAXP + me + 1) << 48)));
    int n = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)n + 2, sizeof *env);
    if (!env)
        return -1;
    memcpy(env, environ, (size_t)n * sizeof *env);
    env[n] = env1;
    char *argv[] = {role == S20_WRITER ? "ksync-s20-writer" : "ksync-s20-reader", NULL};
    pid_t pid;
    int e = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, env);
    free(env);
    if (e) {
        errno = e;
        return -1;
    }
    return pid;
}

static void s20_kill_all(struct s20_kid *k, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (k[i].pid > 0 && !k[i].reaped) {
            kill(k[i].pid, SIGKILL);
            waitpid(k[i].pid, &k[i].status, 0);
            k[i].reaped = 1;
        }
}

/* Reap whoever ended; returns how many are still running. */
static unsigned s20_reap(struct s20_kid *k, unsigned n)
{
    unsigned running = 0;
    for (unsigned i = 0; i < n; i++) {
        if (k[i].reaped)
            continue;
        if (waitpid(k[i].pid, &k[i].status, WNOHANG) == k[i].pid)
            k[i].reaped = 1;
        else
            running++;
    }
    return running;
}

static uint64_t s20_progress(const struct s20_seg *s)
{
    uint64_t p = 0;
    for (unsigned i = 0; i < s->nw; i++)
        p += __atomic_load_n(&s->w[i].n, __ATOMIC_RELAXED); /* relaxed: a progress count */
    for (unsigned i = 0; i < s->nr; i++)
        p += __atomic_load_n(&s->r[i].n, __ATOMIC_RELAXED); /* relaxed: likewise */
    return p;
}

static void s20_one(const struct st_opts *o, const struct s20_impl *im, int mode, unsigned procs,
                    uint64_t iters)
{
    static unsigned counter;
    char impl[32], name[64] = "";
    snprintf(impl, sizeof impl, "%s/%s", im->name, mode == S20_FORK ? "fork" : "spawn");
    const unsigned nw = procs / 2 ? procs / 2 : 1, nr = procs > nw ? procs - nw : 1;
    const bool timed = o->seconds > 0;
    struct st_run run = {.scen = "S20", .impl = impl, .kind = im->kind, .threads = nw + nr, .iters = iters};

    struct s20_seg *s;
    if (mode == S20_FORK) {
        s = mmap(NULL, S20_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    } else {
        snprintf(name, sizeof name, "/ksync-stress-s20-%d-%u", (int)getpid(), ++counter);
        shm_unlink(name);
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)S20_BYTES) != 0) {
            st_row(&run, NULL, ST_FAIL, "shm_open/ftruncate %s: %s", name, strerror(errno));
            if (fd >= 0)
                close(fd);
            shm_unlink(name);
            return;
        }
        s = mmap(NULL, S20_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
    }
    if (s == MAP_FAILED) {
        st_row(&run, NULL, ST_FAIL, "mmap: %s", strerror(errno));
        if (name[0])
            shm_unlink(name);
        return;
    }
    memset(s, 0, sizeof *s);
    s->impl = (uint32_t)(im - impls);
    s->nw = nw;
    s->nr = nr;
    s->iters = timed ? 0 : iters;
    s->addr[0] = (uintptr_t)s;
    int e = im->init(&s->u);
    struct s20_kid kids[2 * S20_MAXP];
    unsigned nk = 0;
    const char *skip = NULL;
    int skip_status = 0;
    if (e) {
        st_row(&run, NULL, ST_FAIL, "init returned %d", e);
        goto out;
    }
    for (unsigned i = 0; i < nr + nw; i++) {
        int role = i < nr ? S20_READER : S20_WRITER;
        unsigned me = i < nr ? i : i - nr;
        pid_t pid = s20_start(s, mode, name, role, me, o);
        if (pid < 0) {
            st_row(&run, NULL, ST_FAIL, "cannot start process %u: %s", i, strerror(errno));
            s20_kill_all(kids, nk);
            goto out;
        }
        kids[nk++] = (struct s20_kid){.pid = pid, .role = role, .me = me};
    }
    /* every child has mapped the segment (a spawned one may not start at
     * all: qemu-user without binfmt_misc cannot run this program again) */
    int64_t until = ks_now() + 10 * KS_NSEC_PER_SEC;
    for (unsigned i = 0; i < nk && !skip; i++) {
        unsigned slot = s20_slot(s, kids[i].role, kids[i].me);
        /* acquire: pairs with the child's release store of its address */
        while (!skip && !__atomic_load_n(&s->addr[slot], __ATOMIC_ACQUIRE)) {
            if (waitpid(kids[i].pid, &kids[i].status, WNOHANG) == kids[i].pid) {
                kids[i].reaped = 1;
                skip_status = kids[i].status;
                skip = "a started copy of this program exited before it mapped the segment";
            } else if (ks_now() > until) {
                skip = "a started copy of this program did not map the segment within 10 s";
            } else {
                struct timespec ts = {0, 200000};
                nanosleep(&ts, NULL);
            }
        }
        if (!skip && mode == S20_SPAWN && s->addr[slot] == s->addr[0]) {
            s20_kill_all(kids, nk);
            st_row(&run, NULL, ST_FAIL, "a spawned process mapped the segment where the runner has it");
            goto out;
        }
    }
    if (skip) {
        s20_kill_all(kids, nk);
        st_row(&run, NULL, mode == S20_SPAWN ? ST_SKIP : ST_FAIL, "%s (status %#x)", skip, skip_status);
        goto out;
    }

    const int64_t t0 = ks_now();
    __atomic_store_n(&s->go, 1, __ATOMIC_RELEASE); /* release: pairs with the children's acquire */
    const double limit = timed ? o->seconds : ST_CAP_S;
    bool capped = false;
    int64_t last_change = t0;
    uint64_t last = 0;
    while (s20_reap(kids, nk)) {
        int64_t now = ks_now();
        /* relaxed (load and store): the writers only stop; nothing hangs on the flag */
        if (!__atomic_load_n(&s->stop, __ATOMIC_RELAXED) && (double)(now - t0) / 1e9 >= limit) {
            __atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
            capped = !timed;
        }
        uint64_t p = s20_progress(s);
        if (p != last) {
            last = p;
            last_change = now;
        } else if ((double)(now - last_change) / 1e9 >= ST_STALL_S) {
            struct st_result res = {.ops = p, .secs = (double)(now - t0) / 1e9};
            st_row(&run, &res, ST_FAIL,
                   "STALL: no progress for %.0f s; ring count %u head %u tail %u, %u of %u writers "
                   "done, %u processes still running",
                   ST_STALL_S, s->count, s->head, s->tail, s->writers_done, nw, s20_reap(kids, nk));
            s20_kill_all(kids, nk);
            if (name[0])
                shm_unlink(name);
            fflush(NULL);
            _exit(3);
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }

    /* the checks */
    uint64_t written = 0, read = 0, wsum = 0, rsum = 0, errs = 0;
    int64_t t_end = t0;
    const char *msg = NULL;
    for (unsigned i = 0; i < nw; i++) {
        written += s->w[i].n;
        wsum += s->w[i].keysum;
        errs += s->w[i].errs;
        msg = msg ? msg : s->w[i].errs ? s->w[i].msg : NULL;
        t_end = s->w[i].t_end > t_end ? s->w[i].t_end : t_end;
    }
    for (unsigned i = 0; i < nr; i++) {
        read += s->r[i].n;
        rsum += s->r[i].keysum;
        errs += s->r[i].errs;
        msg = msg ? msg : s->r[i].errs ? s->r[i].msg : NULL;
        t_end = s->r[i].t_end > t_end ? s->r[i].t_end : t_end;
    }
    unsigned bad_exit = 0;
    int bad_status = 0;
    for (unsigned i = 0; i < nk; i++)
        if (!WIFEXITED(kids[i].status) || WEXITSTATUS(kids[i].status) != 0) {
            bad_exit++;
            bad_status = kids[i].status;
        }
    int de = im->destroy(&s->u);
    struct st_result res = {.ops = read,
                            .planned = timed ? 0 : (uint64_t)nw * iters,
                            .secs = (double)(t_end - t0) / 1e9,
                            .capped = capped && written < (uint64_t)nw * iters};
    bool full = timed || res.capped || written == (uint64_t)nw * iters;
    if (errs || bad_exit || read != written || rsum != wsum || de || !full || s->count != 0)
        st_row(&run, &res, ST_FAIL,
               "%llu records written, %llu read, sums %s, %u processes failed (last status %#x), "
               "ring count %u, destroy %d, %llu errors: %s",
               (unsigned long long)written, (unsigned long long)read, rsum == wsum ? "equal" : "DIFFER",
               bad_exit, bad_status, s->count, de, (unsigned long long)errs, msg ? msg : "-");
    else
        st_row(&run, &res, ST_PASS,
               "%u writer%s -> %u reader%s (%s): %llu records of 8-%d B through a ring of %d, "
               "each in order, byte-exact, checksummed; counts and sums equal on both sides",
               nw, nw > 1 ? "s" : "", nr, nr > 1 ? "s" : "",
               mode == S20_FORK ? "fork children, one mapping"
                                : "spawned processes, each mapping the shm_open segment elsewhere",
               (unsigned long long)read, S20_MAX, S20_RING);
out:
    munmap(s, S20_BYTES);
    if (name[0])
        shm_unlink(name);
}

static void s20_config(const struct st_opts *o, const struct st_config *cfg, unsigned n)
{
    n = n < 2 ? 2 : n > S20_MAXP ? S20_MAXP : n;
    for (int mode = S20_FORK; mode <= S20_SPAWN; mode++)
        for (size_t i = 0; i < N_IMPLS; i++)
            if (st_selected(o, impls[i].kind))
                s20_one(o, &impls[i], mode, n, st_iters(o, cfg->iters));
}

static void s20_run(const struct st_opts *o)
{
    /* Defaults: the seed's one writer and one reader, then two of each */
    static const struct st_config cfg[] = {{2, 100000, 0}, {4, 25000, 0}};
    ST_CONFIGS(o, cfg, s20_config);
}

const struct st_scenario st_family_shm[] = {
    {"S20", "shared-memory",
     "a writer process and a reader process share a segment: records through a ring under "
     "process-shared objects, across fork() and between unrelated processes (shm_open, "
     "posix_spawn); each reader sees each record in order, byte-exact, checksummed",
     "ksync mutex+cond, ksync 3 semaphores | sem_t pshared=1, pthread mutex+cond PROCESS_SHARED; "
     "each /fork and /spawn",
     "1 writer + 1 reader x 100000 records, 2 + 2 x 25000 (--threads N: N/2 writers + N-N/2 "
     "readers, processes, at most 64)",
     s20_run},
    {0, 0, 0, 0, 0, 0},
};
