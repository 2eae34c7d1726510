/* stress/bench.c - ksync-bench: main(), options, context, the thread team,
 * statistics and the PASS/MISS summary.  The sections are in b_*.c; what
 * they measure is described in bench.h and printed by --help.
 *
 * Honesty rules this program keeps: every printed figure is measured in this
 * run; each is the median of --reps repetitions, with the implementations
 * interleaved inside each repetition so that drift (other load, frequency)
 * hits them alike; ratios compare figures from the same run; a result that
 * fails its integrity check (lost counter increments, too many permit
 * holders) stops the program with exit status 2 instead of being printed.
 */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <gnu/libc-version.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

struct bench_opts bopt = {
    .sections = SEC_ALL,
    .reps = 5,
    .seconds = 1.0,
    .tlist = {2, 4, 16},
    .ntlist = 3,
    .iters = 5000000,
    .cg_iters = 200000,
    .callgrind = 1,
    .valgrind = "valgrind",
    .lim_threads = 16,
    .permits = 3,
    .work_ns = 300,
    .pin = PIN_AUTO,
};

int bench_stop_flag;

/* ---- time ------------------------------------------------------------------ */

int64_t bench_now(void)
{
    return ks_now();
}

int64_t bench_thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * KS_NSEC_PER_SEC + ts.tv_nsec;
}

void bench_sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / KS_NSEC_PER_SEC), (long)(ns % KS_NSEC_PER_SEC)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void *idle_thread(void *p)
{
    return p;
}

void bench_go_multithreaded(void)
{
    static int done;
    pthread_t t;
    if (done)
        return;
    if (pthread_create(&t, NULL, idle_thread, NULL) == 0)
        pthread_join(t, NULL);
    done = 1;
}

void bench_fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "ksync-bench: INTEGRITY FAILURE: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ---- statistics --------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct bench_stat bench_stats(double *v, int n)
{
    struct bench_stat s;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    s.min = v[0];
    s.max = v[n - 1];
    s.med = (n & 1) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return s;
}

struct bench_stat bench_stats_l(const char *label, double *v, int n)
{
    if (bopt.verbose) {
        printf("    [%s]", label);
        for (int i = 0; i < n; i++)
            printf(" %.4g", v[i]);
        printf("\n");
    }
    return bench_stats(v, n);
}

double bench_spread(struct bench_stat s)
{
    return s.med != 0 ? 100.0 * (s.max - s.min) / fabs(s.med) : 0;
}

/* ---- busy work ------------------------------------------------------------------- */

void bench_spin(uint64_t iters)
{
    for (uint64_t i = 0; i < iters; i++)
        __asm__ __volatile__("" ::: "memory");
}

uint64_t bench_spin_calibrate(int64_t ns, double *ns_per_iter)
{
    enum { N = 4000000, TRIES = 9 };
    double v[TRIES];
    bench_spin(N); /* warm up: let the core reach its running clock */
    for (int i = 0; i < TRIES; i++) {
        int64_t t0 = bench_now();
        bench_spin(N);
        v[i] = (double)(bench_now() - t0) / N;
    }
    double per = bench_stats(v, TRIES).med;
    if (per <= 0)
        per = 0.25;
    *ns_per_iter = per;
    uint64_t it = (uint64_t)((double)ns / per + 0.5);
    return it ? it : 1;
}

/* ---- targets -------------------------------------------------------------------- */

#define MAX_TARGETS 64
static struct {
    char what[96];
    double value, limit;
    const char *cmp, *unit;
} targets[MAX_TARGETS];
static int ntargets;

void bench_target(const char *what, double value, const char *cmp, double limit, const char *unit)
{
    if (ntargets == MAX_TARGETS)
        return;
    snprintf(targets[ntargets].what, sizeof targets[ntargets].what, "%s", what);
    targets[ntargets].value = value;
    targets[ntargets].cmp = cmp;
    targets[ntargets].limit = limit;
    targets[ntargets].unit = unit;
    ntargets++;
}

static void print_targets(void)
{
    printf("\n== Targets (informational) ==\n");
    if (!ntargets)
        printf("  (no target measured by the selected sections)\n");
    for (int i = 0; i < ntargets; i++) {
        double v = targets[i].value, l = targets[i].limit;
        const char *c = targets[i].cmp;
        const char *verdict;
        if (isnan(v))
            verdict = "SKIP";
        else if (!strcmp(c, "<="))
            verdict = v <= l ? "PASS" : "MISS";
        else if (!strcmp(c, ">="))
            verdict = v >= l ? "PASS" : "MISS";
        else if (!strcmp(c, ">"))
            verdict = v > l ? "PASS" : "MISS";
        else
            verdict = v < l ? "PASS" : "MISS";
        if (isnan(v))
            printf("  %-4s  %-58s (not measured; target %s %.2f%s)\n", verdict, targets[i].what, c, l,
                   targets[i].unit);
        else
            printf("  %-4s  %-58s %8.3f%s  (target %s %.2f%s)\n", verdict, targets[i].what, v,
                   targets[i].unit, c, l, targets[i].unit);
    }
}

/* ---- the thread team --------------------------------------------------------------- */

struct team_start {
    pthread_barrier_t barrier;
    struct bench_team *team;
};

struct team_arg {
    struct team_start *ts;
    bench_thr_t *t;
};

static void *team_thread(void *p)
{
    struct team_arg *a = p;
    bench_thr_t *t = a->t;
    struct ks_futex_stats f0, f1;
    struct rusage r0, r1;
    pthread_barrier_wait(&a->ts->barrier);
    getrusage(RUSAGE_THREAD, &r0);
    ks_futex_stats(&f0);
    t->cpu_ns = bench_thread_cpu();
    t->begin_ns = bench_now();
    a->ts->team->body(t);
    t->end_ns = bench_now();
    t->cpu_ns = bench_thread_cpu() - t->cpu_ns;
    ks_futex_stats(&f1);
    getrusage(RUSAGE_THREAD, &r1);
    t->vcsw = (uint64_t)(r1.ru_nvcsw - r0.ru_nvcsw);
    t->ivcsw = (uint64_t)(r1.ru_nivcsw - r0.ru_nivcsw);
    t->fx.waits = f1.waits - f0.waits;
    t->fx.wakes = f1.wakes - f0.wakes;
    t->fx.woken = f1.woken - f0.woken;
    return NULL;
}

void bench_team_run(struct bench_team *team)
{
    int n = team->n;
    struct team_start ts;
    pthread_t *tid = calloc((size_t)n, sizeof *tid);
    struct team_arg *args = calloc((size_t)n, sizeof *args);
    team->thr = aligned_alloc(KS_CACHELINE, (size_t)n * sizeof(bench_thr_t));
    if (!tid || !args || !team->thr) {
        fprintf(stderr, "ksync-bench: out of memory\n");
        exit(1);
    }
    memset(team->thr, 0, (size_t)n * sizeof(bench_thr_t));
    ts.team = team;
    pthread_barrier_init(&ts.barrier, NULL, (unsigned)n + 1);
    /* Thread i runs on the i-th allowed CPU (round robin) if pinning. */
    cpu_set_t allowed;
    int ncpu = 0, cpus[CPU_SETSIZE];
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &allowed))
                cpus[ncpu++] = c;
    int pin = ncpu > 0 && (bopt.pin == PIN_ALWAYS || (bopt.pin == PIN_AUTO && n <= ncpu));
    team->pinned = pin;
    __atomic_store_n(&bench_stop_flag, 0, __ATOMIC_RELAXED);
    for (int i = 0; i < n; i++) {
        team->thr[i].id = i;
        team->thr[i].arg = team->arg;
        args[i].ts = &ts;
        args[i].t = &team->thr[i];
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (pin) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpus[i % ncpu], &one);
            pthread_attr_setaffinity_np(&attr, sizeof one, &one);
        }
        int e = pthread_create(&tid[i], &attr, team_thread, &args[i]);
        pthread_attr_destroy(&attr);
        if (e) {
            fprintf(stderr, "ksync-bench: pthread_create: %s\n", strerror(e));
            exit(1);
        }
    }
    pthread_barrier_wait(&ts.barrier);
    team->start_ns = bench_now();
    bench_sleep_ns(team->cap_ns);
    __atomic_store_n(&bench_stop_flag, 1, __ATOMIC_RELAXED);
    if (team->release)
        team->release(team->arg);
    int64_t last = team->start_ns;
    team->ops = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(tid[i], NULL);
        if (team->thr[i].end_ns > last)
            last = team->thr[i].end_ns;
        team->ops += team->thr[i].ops;
    }
    team->elapsed_ns = last - team->start_ns;
    pthread_barrier_destroy(&ts.barrier);
    free(tid);
    free(args);
}

void bench_team_free(struct bench_team *team)
{
    free(team->thr);
    team->thr = NULL;
}

/* ---- context ------------------------------------------------------------------------- */

static void cpu_model(char *buf, size_t len)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(buf, len, "unknown");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (colon && !strncmp(line, "model name", 10)) {
            colon++;
            while (*colon == ' ' || *colon == '\t')
                colon++;
            colon[strcspn(colon, "\n")] = 0;
            snprintf(buf, len, "%s", colon);
            break;
        }
    }
    fclose(f);
}

static void print_load(const char *when, const char *note)
{
    double la[3];
    if (getloadavg(la, 3) == 3)
        printf("load avg %-6s %.2f %.2f %.2f (1/5/15 min)%s\n", when, la[0], la[1], la[2], note);
}

/* Machine-wide CPU accounting, to tell whether something else ran during
 * the measurements: busy and steal time from /proc/stat, in ns. */
struct cpu_acct {
    double busy, steal, own;
};

static struct cpu_acct cpu_acct_now(void)
{
    struct cpu_acct a = {0, 0, 0};
    unsigned long long us, ni, sy, id, io, irq, sirq, st;
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &us, &ni, &sy, &id, &io, &irq, &sirq,
                   &st) == 8) {
            double tick = 1e9 / (double)sysconf(_SC_CLK_TCK);
            a.busy = (double)(us + ni + sy + irq + sirq) * tick;
            a.steal = (double)st * tick;
        }
        fclose(f);
    }
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    a.own = ((double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) * 1e9 +
             (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) * 1e3);
    return a;
}

static void print_other_load(struct cpu_acct a0, int64_t wall_ns)
{
    struct cpu_acct a1 = cpu_acct_now();
    double cap = (double)wall_ns * (double)sysconf(_SC_NPROCESSORS_ONLN);
    double other = a1.busy - a0.busy - (a1.own - a0.own);
    if (wall_ns < 2 * KS_NSEC_PER_SEC)
        return; /* /proc/stat counts in ticks: too coarse for a short run */
    printf("other load   CPU used by other processes during this run: %.1f%% of the machine; "
           "steal (hypervisor): %.1f%%\n", other > 0 ? 100 * other / cap : 0.0, 100 * (a1.steal - a0.steal) / cap);
}

static void print_context(void)
{
    char model[256], date[64];
    struct utsname u;
    time_t now = time(NULL);
    cpu_model(model, sizeof model);
    uname(&u);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", localtime(&now));
    printf("ksync-bench  (every figure: median of %d repetitions measured in this run)\n", bopt.reps);
    printf("date         %s\n", date);
    printf("cpu          %s\n", model);
    printf("nproc        %ld online\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("kernel       %s %s %s\n", u.sysname, u.release, u.machine);
    printf("glibc        %s\n", gnu_get_libc_version());
    printf("compiler     gcc %s\n", __VERSION__);
    printf("ck model     %s\n", BENCH_CK_MD_NOTE);
    printf("options      --reps %d --seconds %.2f --threads", bopt.reps, bopt.seconds);
    for (int i = 0; i < bopt.ntlist; i++)
        printf("%c%d", i ? ',' : ' ', bopt.tlist[i]);
    printf(" --pin %s --lim-threads %d --permits %d --work-ns %d\n",
           bopt.pin == PIN_AUTO ? "auto" : bopt.pin == PIN_ALWAYS ? "always" : "never", bopt.lim_threads,
           bopt.permits, bopt.work_ns);
    print_load("start", "");
}

/* ---- options ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ksync-bench [options]\n"
            "  --only LIST       sections, comma-separated (default: all):\n"
            "                      uncontended  1. one thread lock+unlock: ns/pair and callgrind Ir/pair\n"
            "                      mutex        2. contended counter at --threads (Mops/s)\n"
            "                      sem          3. --lim-threads threads through a --permits semaphore\n"
            "                      cpu          4. CPU time of a thread blocked --seconds\n"
            "                      handoff      5. 2-thread ping-pong: event, sem, cond+mutex pairs\n"
            "                      barrier      6. barrier episodes/s at 2 and 8 threads\n"
            "                      rwlock       7. rwlock, 90%% reads, at 2 and 16 threads (Mops/s)\n"
            "                      broadcast    8. cond broadcast to 16 waiters: futex calls, sleeps\n"
            "                      queue        9. MPMC ring (ks_mpmc, ck_ring, wfcqueue) and blocking\n"
            "                                      queue (ks_queue, mutex+2cond) at 1p1c..16p16c (items/s)\n"
            "                      cache       10. key/value caches with TTL (ks_cache variants, ck_ht,\n"
            "                                      rculfhash, mutex table), 3 mixes at 2 and 16 threads\n"
            "                                      (M ops/s); S3-FIFO vs LRU hit ratio\n"
            "  --reps N          repetitions per figure, median printed (default %d)\n"
            "  --seconds S       measurement cap per run of sections 2-4 (default %.1f);\n"
            "                    sections 5-8 run --seconds/%d per run (they have many runs),\n"
            "                    sections 9 and 10 --seconds/%d\n"
            "  --threads LIST    thread counts of section 2 (default 2,4,16)\n"
            "  --iters N         section 1: lock+unlock pairs per timed repetition (default %llu)\n"
            "  --cg-iters N      section 1: pairs per callgrind repetition (default %llu)\n"
            "  --no-callgrind    section 1 without the valgrind half\n"
            "  --valgrind PATH   valgrind to run (default: valgrind from PATH)\n"
            "  --lim-threads N   section 3 threads (default %d)\n"
            "  --permits N       section 3 permits (default %d)\n"
            "  --work-ns N       section 3 busy work per permit (default %d)\n"
            "  --pin MODE        bind thread i to CPU i mod nCPU: auto (when threads <= CPUs;\n"
            "                    default), always, never\n"
            "  --verbose         also print every repetition's value, in run order\n"
            "Exit status: 0 (targets are informational), 1 usage/setup error, 2 integrity failure.\n",
            bopt.reps, bopt.seconds, BENCH_SHORT_DIV, 2 * BENCH_SHORT_DIV, (unsigned long long)bopt.iters,
            (unsigned long long)bopt.cg_iters,
            bopt.lim_threads, bopt.permits, bopt.work_ns);
}

static long parse_long(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "ksync-bench: %s wants an integer in [%ld, %ld], not '%s'\n", opt, lo, hi, s);
        exit(1);
    }
    return v;
}

static unsigned parse_sections(const char *s)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"all", SEC_ALL},          {"uncontended", SEC_UNCONTENDED}, {"mutex", SEC_MUTEX},
        {"counter", SEC_MUTEX},    {"sem", SEC_SEM},                 {"limiter", SEC_SEM},
        {"cpu", SEC_CPU},          {"handoff", SEC_HANDOFF},         {"pingpong", SEC_HANDOFF},
        {"barrier", SEC_BARRIER},  {"rwlock", SEC_RWLOCK},           {"broadcast", SEC_BROADCAST},
        {"queue", SEC_QUEUE},      {"mpmc", SEC_QUEUE},              {"cache", SEC_CACHE},
    };
    unsigned bits = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t i;
        for (i = 0; i < sizeof names / sizeof names[0]; i++)
            if (!strcmp(tok, names[i].name))
                break;
        if (i == sizeof names / sizeof names[0]) {
            fprintf(stderr, "ksync-bench: unknown section '%s' (uncontended, mutex, sem, cpu, handoff, "
                    "barrier, rwlock, broadcast, queue, cache, all)\n", tok);
            exit(1);
        }
        bits |= names[i].bit;
    }
    free(copy);
    if (!bits) {
        fprintf(stderr, "ksync-bench: --only needs at least one section\n");
        exit(1);
    }
    return bits;
}

static void parse_tlist(const char *s)
{
    char *copy = strdup(s), *save = NULL;
    bopt.ntlist = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (bopt.ntlist == BENCH_MAX_TLIST) {
            fprintf(stderr, "ksync-bench: at most %d thread counts\n", BENCH_MAX_TLIST);
            exit(1);
        }
        bopt.tlist[bopt.ntlist++] = (int)parse_long("--threads", tok, 1, BENCH_MAX_THREADS);
    }
    free(copy);
    if (!bopt.ntlist) {
        fprintf(stderr, "ksync-bench: --threads needs a list such as 2,4,16\n");
        exit(1);
    }
}

enum { O_ONLY = 256, O_REPS, O_SECONDS, O_THREADS, O_ITERS, O_CG_ITERS, O_NO_CG, O_VALGRIND,
       O_LIM_THREADS, O_PERMITS, O_WORK_NS, O_PIN, O_VERBOSE, O_CG_CHILD, O_HELP };

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"only", required_argument, 0, O_ONLY},
        {"reps", required_argument, 0, O_REPS},
        {"seconds", required_argument, 0, O_SECONDS},
        {"threads", required_argument, 0, O_THREADS},
        {"iters", required_argument, 0, O_ITERS},
        {"cg-iters", required_argument, 0, O_CG_ITERS},
        {"no-callgrind", no_argument, 0, O_NO_CG},
        {"valgrind", required_argument, 0, O_VALGRIND},
        {"lim-threads", required_argument, 0, O_LIM_THREADS},
        {"permits", required_argument, 0, O_PERMITS},
        {"work-ns", required_argument, 0, O_WORK_NS},
        {"pin", required_argument, 0, O_PIN},
        {"verbose", no_argument, 0, O_VERBOSE},
        {"callgrind-child", no_argument, 0, O_CG_CHILD}, /* internal: run under valgrind */
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int cg_child = 0, c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_ONLY: bopt.sections = parse_sections(optarg); break;
        case O_REPS: bopt.reps = (int)parse_long("--reps", optarg, 1, 1000); break;
        case O_SECONDS: {
            char *end;
            bopt.seconds = strtod(optarg, &end);
            if (end == optarg || *end || !(bopt.seconds >= 0.01 && bopt.seconds <= 3600)) {
                fprintf(stderr, "ksync-bench: --seconds wants a number in [0.01, 3600]\n");
                return 1;
            }
            break;
        }
        case O_THREADS: parse_tlist(optarg); break;
        case O_ITERS: bopt.iters = (uint64_t)parse_long("--iters", optarg, 1000, 1000000000L); break;
        case O_CG_ITERS: bopt.cg_iters = (uint64_t)parse_long("--cg-iters", optarg, 1000, 100000000L); break;
        case O_NO_CG: bopt.callgrind = 0; break;
        case O_VALGRIND: bopt.valgrind = optarg; break;
        case O_LIM_THREADS: bopt.lim_threads = (int)parse_long("--lim-threads", optarg, 1, BENCH_MAX_THREADS); break;
        case O_PERMITS: bopt.permits = (int)parse_long("--permits", optarg, 1, 1000000); break;
        case O_WORK_NS: bopt.work_ns = (int)parse_long("--work-ns", optarg, 0, 100000000); break;
        case O_PIN:
            if (!strcmp(optarg, "auto"))
                bopt.pin = PIN_AUTO;
            else if (!strcmp(optarg, "always"))
                bopt.pin = PIN_ALWAYS;
            else if (!strcmp(optarg, "never"))
                bopt.pin = PIN_NEVER;
            else {
                fprintf(stderr, "ksync-bench: --pin auto|always|never\n");
                return 1;
            }
            break;
        case O_VERBOSE: bopt.verbose = 1; break;
        case O_CG_CHILD: cg_child = 1; break;
        case 'h':
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ksync-bench: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    if (cg_child)
        return bench_callgrind_child();

    setvbuf(stdout, NULL, _IOLBF, 0);
    int64_t t0 = bench_now();
    struct cpu_acct a0 = cpu_acct_now();
    print_context();
    if (bopt.sections & SEC_UNCONTENDED)
        bench_uncontended();
    if (bopt.sections & SEC_MUTEX)
        bench_counter();
    if (bopt.sections & SEC_SEM)
        bench_limiter();
    if (bopt.sections & SEC_CPU)
        bench_cpu();
    if (bopt.sections & SEC_HANDOFF)
        bench_handoff();
    if (bopt.sections & SEC_BARRIER)
        bench_barrier();
    if (bopt.sections & SEC_RWLOCK)
        bench_rwlock();
    if (bopt.sections & SEC_BROADCAST)
        bench_broadcast();
    if (bopt.sections & SEC_QUEUE)
        bench_queue();
    if (bopt.sections & SEC_CACHE)
        bench_cache();
    print_targets();
    printf("\n");
    print_load("end", " - includes this run's own threads");
    print_other_load(a0, bench_now() - t0);
    printf("total run time %.1f s\n", (double)(bench_now() - t0) / 1e9);
    return 0;
}
