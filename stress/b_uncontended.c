/* stress/b_uncontended.c - section 1: lock+unlock on one thread, no
 * contention (and read-side enter+exit of the reclamation schemes: ks_epoch,
 * ck_epoch, liburcu's default flavour).  Two figures per primitive:
 *
 *   ns/pair   wall time of --iters pairs (CLOCK_MONOTONIC), per pair;
 *   Ir/pair   instructions executed per pair, counted by valgrind's
 *             callgrind: this program re-executes itself under
 *             `valgrind --tool=callgrind --collect-atstart=no` with the
 *             internal option --callgrind-child; the child switches
 *             collection on only around each loop (CALLGRIND_TOGGLE_COLLECT)
 *             and dumps the count after it (CALLGRIND_DUMP_STATS_AT), and we
 *             parse the "summary:" line of each dump.
 *
 * Both are net of the empty loop (same loop, no lock), measured the same way
 * in the same repetition.  Each primitive's loop is its own noinline function
 * with the lock and unlock inlined where the library allows it (ksync's and
 * CK's fast paths are inline; glibc's are calls through the PLT, as in any
 * program that uses them).  A short warm-up before each measured loop takes
 * lazy symbol binding and first-use initialisation out of the count.
 */
#include "bench.h"
#include "b_hpp.h"

#include <ksync/epoch.h>
#include <ksync/scoped.h>

#include <ck_epoch.h>
#define _LGPL_SOURCE /* liburcu's read side inline, as ck_epoch's is */
#include <urcu.h>    /* the default flavour: urcu-memb (sys_membarrier) */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

typedef void (*loop_fn)(bench_lock_t *l, uint64_t n);

/* One loop per primitive, generated from its adapters in bench.h. */
#define UNC_LOOP(name)                                                           \
    static __attribute__((noinline)) void loop_##name(bench_lock_t *l, uint64_t n) \
    {                                                                            \
        bench_ctx_t ctx;                                                         \
        memset(&ctx, 0, sizeof ctx);                                             \
        for (uint64_t i = 0; i < n; i++) {                                       \
            name##_b_acq(l, &ctx);                                               \
            name##_b_rel(l, &ctx);                                               \
        }                                                                        \
    }
UNC_LOOP(ks_mutex)
UNC_LOOP(pthread_mutex)
UNC_LOOP(ck_fas)
UNC_LOOP(ck_ticket)
UNC_LOOP(ck_mcs)
UNC_LOOP(pthread_spin)
UNC_LOOP(ks_rmutex)
UNC_LOOP(pthread_rec)
UNC_LOOP(ks_sem)
UNC_LOOP(sem_t)
UNC_LOOP(ks_rwlock_rd)
UNC_LOOP(pthread_rwlock_rd)
UNC_LOOP(ks_rwlock_wr)
UNC_LOOP(pthread_rwlock_wr)

/* The C++ rows: the loop runs in stress/b_hpp.cc on an object of its own. */
static __attribute__((noinline)) void loop_hpp_ks(bench_lock_t *l, uint64_t n)
{
    (void)l;
    bench_hpp_ks_lock_guard(n);
}
static __attribute__((noinline)) void loop_hpp_std(bench_lock_t *l, uint64_t n)
{
    (void)l;
    bench_hpp_std_lock_guard(n);
}

/* The C scoped guard of include/ksync/scoped.h: the same lock and unlock,
 * the unlock run by the cleanup attribute at the end of each pass. */
static __attribute__((noinline)) void loop_ks_scoped(bench_lock_t *l, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        KS_SCOPED_LOCK(&l->ks);
    }
}

/* Read-side sections: enter+exit with nothing inside.  ksync's are calls
 * into the library (a thread-local record lookup, an SC load, a store and a
 * full fence); CK's ck_epoch_begin/end and liburcu's rcu_read_lock/unlock
 * are inline.  Each thread registers once (ks_epoch does it on first use). */
static ck_epoch_t ck_ep;
static ck_epoch_record_t ck_ep_rec;

static void ks_epoch_b_init(bench_lock_t *l) { (void)l; }
static inline void ks_epoch_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)l, (void)c; ks_epoch_enter(); }
static inline void ks_epoch_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)l, (void)c; ks_epoch_exit(); }

static void ck_epoch_b_init(bench_lock_t *l)
{
    static int done;
    (void)l;
    if (!done) {
        ck_epoch_init(&ck_ep);
        ck_epoch_register(&ck_ep, &ck_ep_rec, NULL);
        done = 1;
    }
}
static inline void ck_epoch_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)l, (void)c; ck_epoch_begin(&ck_ep_rec, NULL); }
static inline void ck_epoch_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)l, (void)c; ck_epoch_end(&ck_ep_rec, NULL); }

static int urcu_registered;

static void urcu_b_init(bench_lock_t *l)
{
    (void)l;
    if (!urcu_registered) {
        rcu_register_thread();
        urcu_registered = 1;
    }
}
static inline void urcu_b_acq(bench_lock_t *l, bench_ctx_t *c) { (void)l, (void)c; rcu_read_lock(); }
static inline void urcu_b_rel(bench_lock_t *l, bench_ctx_t *c) { (void)l, (void)c; rcu_read_unlock(); }

UNC_LOOP(ks_epoch)
UNC_LOOP(ck_epoch)
UNC_LOOP(urcu)

/* ks_rwlock with its reader bias on (docs/rwlock.md, "Reader bias"): one
 * read lock through the library's slow path turns it on, as contention
 * would, and every read lock of the loop then goes through the thread's
 * slot of the visible-readers table instead of the lock word.  The row
 * shows what a biased read costs one thread alone (no writer ever revokes
 * it here). */
static void ks_rwlock_biased_b_init(bench_lock_t *l)
{
    ks_rwlock_b_init(l);
    if (ks_rwlock_rdlock_slow(&l->ksrw, KS_FOREVER) == 0)
        ks_rwlock_unlock(&l->ksrw);
    if (!(__atomic_load_n(&l->ksrw.bias, __ATOMIC_RELAXED) & KS_RWLOCK_BIAS)) {
        fprintf(stderr, "ksync-bench: the reader bias did not turn on\n");
        exit(2);
    }
}

static __attribute__((noinline)) void loop_empty(bench_lock_t *l, uint64_t n)
{
    (void)l;
    for (uint64_t i = 0; i < n; i++)
        __asm__ __volatile__("" ::: "memory");
}

enum { G_EMPTY = -1, G_MUTEX, G_RECURSIVE, G_SEM, G_RWREAD, G_RWWRITE, G_READ, NGROUPS };
static const char *const group_title[NGROUPS] = {
    "mutex lock+unlock", "recursive mutex lock+unlock (depth 1)", "semaphore wait+post (value 1)",
    "rwlock read lock+unlock", "rwlock write lock+unlock",
    "read-side section enter+exit (reclamation schemes)"};

static const struct ukind {
    const char *name;
    int group;
    int ksync; /* the ksync row of its group: the numerator of the ratios */
    void (*init)(bench_lock_t *l);
    loop_fn loop;
} kinds[] = {
    {"(empty loop)", G_EMPTY, 0, NULL, loop_empty},
    {"ks_mutex", G_MUTEX, 1, ks_mutex_b_init, loop_ks_mutex},
    {"pthread_mutex (default type)", G_MUTEX, 0, pthread_mutex_b_init, loop_pthread_mutex},
    {"ck_spinlock_fas", G_MUTEX, 0, ck_fas_b_init, loop_ck_fas},
    {"ck_spinlock_ticket", G_MUTEX, 0, ck_ticket_b_init, loop_ck_ticket},
    {"ck_spinlock_mcs", G_MUTEX, 0, ck_mcs_b_init, loop_ck_mcs},
    {"pthread_spin_lock", G_MUTEX, 0, pthread_spin_b_init, loop_pthread_spin},
    {"KS_SCOPED_LOCK(ks_mutex) (C)", G_MUTEX, 0, ks_mutex_b_init, loop_ks_scoped},
    {"lock_guard<ks::mutex> (C++)", G_MUTEX, 0, NULL, loop_hpp_ks},
    {"lock_guard<std::mutex> (C++)", G_MUTEX, 0, NULL, loop_hpp_std},
    {"ks_rmutex", G_RECURSIVE, 1, ks_rmutex_b_init, loop_ks_rmutex},
    {"pthread_mutex RECURSIVE", G_RECURSIVE, 0, pthread_rec_b_init, loop_pthread_rec},
    {"ks_sem", G_SEM, 1, ks_sem_b_init, loop_ks_sem},
    {"sem_t", G_SEM, 0, sem_t_b_init, loop_sem_t},
    {"ks_rwlock rdlock", G_RWREAD, 1, ks_rwlock_b_init, loop_ks_rwlock_rd},
    {"pthread_rwlock_rdlock", G_RWREAD, 0, pthread_rwlock_b_init, loop_pthread_rwlock_rd},
    {"ks_rwlock rdlock, bias on", G_RWREAD, 0, ks_rwlock_biased_b_init, loop_ks_rwlock_rd},
    {"ks_rwlock wrlock", G_RWWRITE, 1, ks_rwlock_b_init, loop_ks_rwlock_wr},
    {"pthread_rwlock_wrlock", G_RWWRITE, 0, pthread_rwlock_b_init, loop_pthread_rwlock_wr},
    {"ks_epoch enter+exit", G_READ, 1, ks_epoch_b_init, loop_ks_epoch},
    {"ck_epoch begin+end", G_READ, 0, ck_epoch_b_init, loop_ck_epoch},
    {"urcu-memb read lock+unlock", G_READ, 0, urcu_b_init, loop_urcu},
};
#define NK ((int)(sizeof kinds / sizeof kinds[0]))
#define K_HPP_KS 8 /* kinds[] index of lock_guard<ks::mutex> */
#define WARMUP 1000

static bench_lock_t obj __attribute__((aligned(KS_CACHELINE)));

static void prepare(const struct ukind *k)
{
    memset(&obj, 0, sizeof obj);
    if (k->init)
        k->init(&obj);
    k->loop(&obj, WARMUP);
}

/* ---- the process valgrind runs ---------------------------------------------- */

#define CG_LABEL "ksync-bench k=%d r=%d"

int bench_callgrind_child(void)
{
    char label[64];
    if (!RUNNING_ON_VALGRIND) {
        fprintf(stderr, "ksync-bench: --callgrind-child is internal: it must run under callgrind\n");
        return 1;
    }
    bench_go_multithreaded();
    for (int r = 0; r < bopt.reps; r++)
        for (int k = 0; k < NK; k++) {
            prepare(&kinds[k]);
            snprintf(label, sizeof label, CG_LABEL, k, r);
            CALLGRIND_ZERO_STATS;
            CALLGRIND_TOGGLE_COLLECT;
            kinds[k].loop(&obj, bopt.cg_iters);
            CALLGRIND_TOGGLE_COLLECT;
            CALLGRIND_DUMP_STATS_AT(label);
        }
    return 0;
}

/* ---- running and reading callgrind -------------------------------------------- */

/* Read one dump: its label (k, r) and its instruction count. */
static int parse_dump(const char *path, int *k, int *r, double *ir)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int have_label = 0, have_ir = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f) && !(have_label && have_ir)) {
        unsigned long long v;
        if (!strncmp(line, "desc: Trigger: Client Request: ", 31))
            have_label = sscanf(line + 31, CG_LABEL, k, r) == 2;
        else if (sscanf(line, "summary: %llu", &v) == 1) {
            *ir = (double)v;
            have_ir = 1;
        }
    }
    fclose(f);
    return have_label && have_ir ? 0 : -1;
}

static void show_log(const char *log)
{
    FILE *f = fopen(log, "r");
    char line[512];
    if (!f)
        return;
    fprintf(stderr, "---- %s ----\n", log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

/* Run this program under callgrind; fill ir[k * reps + r].  0 on success. */
static int run_callgrind(double *ir)
{
    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX], self[PATH_MAX], outopt[PATH_MAX + 32], log[PATH_MAX + 16];
    char reps[32], iters[32];
    int ok = -1, status;

    snprintf(dir, sizeof dir, "%s/ksync-bench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("ksync-bench: mkdtemp");
        return -1;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        perror("ksync-bench: readlink /proc/self/exe");
        rmdir(dir);
        return -1;
    }
    self[n] = 0;
    snprintf(outopt, sizeof outopt, "--callgrind-out-file=%s/cg.out", dir);
    snprintf(log, sizeof log, "%s/valgrind.log", dir);
    snprintf(reps, sizeof reps, "%d", bopt.reps);
    snprintf(iters, sizeof iters, "%llu", (unsigned long long)bopt.cg_iters);
    char *argv[] = {(char *)bopt.valgrind, "--tool=callgrind", "--collect-atstart=no", outopt, self,
                    "--callgrind-child", "--reps", reps, "--cg-iters", iters, NULL};
    printf("callgrind    %s --tool=callgrind --collect-atstart=no %s --callgrind-child --reps %s --cg-iters %s\n",
           bopt.valgrind, self, reps, iters);

    pid_t pid = fork();
    if (pid < 0) {
        perror("ksync-bench: fork");
        rmdir(dir);
        return -1;
    }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "ksync-bench: callgrind run failed (%s %d); Ir column skipped\n",
                WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        show_log(log);
    } else {
        for (int i = 0; i < NK * bopt.reps; i++)
            ir[i] = NAN;
        ok = 0;
    }

    /* Collect the dumps (cg.out.1, cg.out.2, ...) and clean the directory. */
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[PATH_MAX * 2];
        int k = -1, r = -1;
        double v = NAN;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (ok == 0 && !strncmp(e->d_name, "cg.out.", 7) && parse_dump(path, &k, &r, &v) == 0 &&
            k >= 0 && k < NK && r >= 0 && r < bopt.reps)
            ir[k * bopt.reps + r] = v;
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
    for (int i = 0; ok == 0 && i < NK * bopt.reps; i++)
        if (isnan(ir[i])) {
            fprintf(stderr, "ksync-bench: callgrind dump %d of %d missing; Ir column skipped\n", i,
                    NK * bopt.reps);
            ok = -1;
        }
    return ok;
}

/* ---- the section ----------------------------------------------------------------- */

void bench_uncontended(void)
{
    const int R = bopt.reps;
    double *ns = calloc((size_t)(NK * R), sizeof *ns);
    double *ir = calloc((size_t)(NK * R), sizeof *ir);
    double v[1000];
    struct bench_stat ns_s[NK], ir_s[NK];
    int have_ir = 0;

    bench_go_multithreaded();
    bench_section("1");

    printf("\n== 1. Uncontended, one thread ==\n");
    printf("ns/pair: %llu pairs per repetition, wall clock; Ir/pair: valgrind callgrind instructions,\n"
           "%llu pairs per repetition, counted only inside the loop.  Both net of the empty loop.\n"
           "The process has created a thread first: glibc skips atomics in a process that never did.\n",
           (unsigned long long)bopt.iters, (unsigned long long)bopt.cg_iters);

    /* Timed half: primitives interleaved inside each repetition. */
    for (int r = 0; r < R; r++)
        for (int k = 0; k < NK; k++) {
            prepare(&kinds[k]);
            int64_t t0 = bench_now();
            kinds[k].loop(&obj, bopt.iters);
            ns[k * R + r] = (double)(bench_now() - t0) / (double)bopt.iters;
        }
    /* Instruction half: one valgrind run does every repetition. */
    if (bopt.callgrind)
        have_ir = run_callgrind(ir) == 0;
    else
        printf("callgrind    skipped (--no-callgrind)\n");

    for (int k = 0; k < NK; k++) {
        for (int r = 0; r < R; r++)
            v[r] = k ? ns[k * R + r] - ns[r] : ns[r]; /* kinds[0] is the empty loop */
        char label[64];
        snprintf(label, sizeof label, "%s ns", kinds[k].name);
        ns_s[k] = bench_stats_l(label, v, R);
        if (have_ir) {
            for (int r = 0; r < R; r++)
                v[r] = (k ? ir[k * R + r] - ir[r] : ir[r]) / (double)bopt.cg_iters;
            snprintf(label, sizeof label, "%s Ir", kinds[k].name);
            ir_s[k] = bench_stats_l(label, v, R);
        }
    }

    printf("\n%-30s %9s %7s %9s   %s\n", "primitive", "ns/pair", "spread", "Ir/pair",
           "ksync/ref: ns   Ir   (below 1 = ksync cheaper)");
    {
        char irbuf[32] = "n/a";
        if (have_ir)
            snprintf(irbuf, sizeof irbuf, "%.2f", ir_s[0].med);
        printf("%-30s %9.2f %6.0f%% %9s   (subtracted from every row below)\n", kinds[0].name, ns_s[0].med,
               bench_spread(ns_s[0]), irbuf);
    }
    for (int g = 0; g < NGROUPS; g++) {
        int ks = -1;
        for (int k = 0; k < NK; k++)
            if (kinds[k].group == g && kinds[k].ksync)
                ks = k;
        printf("-- %s\n", group_title[g]);
        for (int k = 0; k < NK; k++) {
            if (kinds[k].group != g)
                continue;
            char irbuf[32] = "n/a";
            if (have_ir)
                snprintf(irbuf, sizeof irbuf, "%.2f", ir_s[k].med);
            printf("%-30s %9.2f %6.0f%% %9s", kinds[k].name, ns_s[k].med, bench_spread(ns_s[k]), irbuf);
            if (k != ks) {
                printf("   %13.3f", ns_s[ks].med / ns_s[k].med);
                if (have_ir)
                    printf(" %6.3f", ir_s[ks].med / ir_s[k].med);
            }
            printf("\n");
        }
    }

    /* kinds[1] is ks_mutex, kinds[2] glibc's default mutex. */
    bench_target("uncontended ks_mutex Ir / pthread_mutex Ir", have_ir ? ir_s[1].med / ir_s[2].med : NAN,
                 "<=", 0.25, "");
    /* include/ksync.hpp adds nothing to the inline fast paths: the same
     * instructions per pair.  The limit is not exactly 1 because the C++
     * loop is reached through one more call per repetition (a few
     * instructions over --cg-iters pairs). */
    bench_target("uncontended lock_guard<ks::mutex> Ir / ks_mutex Ir",
                 have_ir ? ir_s[K_HPP_KS].med / ir_s[1].med : NAN, "<=", 1.001, "");
    free(ns);
    free(ir);
    /* Later sections register this thread again (section 10's rculfhash):
     * liburcu asserts a thread is registered once at a time. */
    if (urcu_registered) {
        rcu_unregister_thread();
        urcu_registered = 0;
    }
}
