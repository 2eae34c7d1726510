/* stress/bench.c - ksync-bench's services: time, statistics, busy work,
 * targets, the thread team, and the context printed around a run.  main()
 * and the options are in bench_main.c (it dispatches, this file serves, as
 * main.c and harness.c do for ksync-stress); the sections are in b_*.c;
 * what they measure is described in bench.h and printed by --help.
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

static FILE *csv;
static const char *csv_section = "";

void bench_section(const char *id)
{
    csv_section = id;
}

/* A label as one CSV field: quoted, its quotes doubled. */
static void csv_field(const char *s)
{
    fputc('"', csv);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', csv);
        fputc(*s, csv);
    }
    fputc('"', csv);
}

struct bench_stat bench_stats_l(const char *label, double *v, int n)
{
    if (csv) {
        for (int i = 0; i < n; i++) {
            fprintf(csv, "%s,", csv_section);
            csv_field(label);
            fprintf(csv, ",%d,%.9g\n", i + 1, v[i]);
        }
        fflush(csv);
    }
    if (bopt.verbose) {
        printf("    [%s]", label);
        for (int i = 0; i < n; i++)
            printf(" %.4g", v[i]);
        printf("\n");
    }
    return bench_stats(v, n);
}

struct bench_stat bench_stats_at(const char *label, const double *first, size_t stride, int n)
{
    double v[BENCH_MAX_REPS];
    for (int i = 0; i < n; i++)
        v[i] = *(const double *)(const void *)((const char *)first + (size_t)i * stride);
    return label ? bench_stats_l(label, v, n) : bench_stats(v, n);
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
    /* Time the very code the sections call.  Called directly, bench_spin was
     * inlined here as a one-instruction `sub; jne` loop, one iteration per
     * cycle, while the out-of-line `add; cmp; jne` loop the sections run
     * did two per cycle on the Intel Xeon guest (2026-12-05): the work
     * called 300 ns lasted about 150. */
    void (*volatile spin)(uint64_t) = bench_spin;
    spin(N); /* warm up: let the core reach its running clock */
    for (int i = 0; i < TRIES; i++) {
        int64_t t0 = bench_now();
        spin(N);
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
    printf(" --pin %s --lim-threads %d --permits %d --work-ns %d --rw-work-ns %d --rw-threads %d,%d%s\n",
           bopt.pin == PIN_AUTO ? "auto" : bopt.pin == PIN_ALWAYS ? "always" : "never", bopt.lim_threads,
           bopt.permits, bopt.work_ns, bopt.rw_work_ns, bopt.rw_threads[0], bopt.rw_threads[1],
           bopt.counter_apart ? " --counter-apart" : "");
    if (bopt.counter_hold_ns || bopt.counter_work_ns)
        printf("             --counter-hold-ns %d --counter-work-ns %d\n", bopt.counter_hold_ns, bopt.counter_work_ns);
    print_load("start", "");
}

/* ---- a run's prologue and epilogue ------------------------------------------------------ */

static int64_t run_t0;
static struct cpu_acct run_a0;

void bench_run_begin(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    run_t0 = bench_now();
    run_a0 = cpu_acct_now();
    print_context();
    if (bopt.csv) {
        if (!(csv = fopen(bopt.csv, "w"))) {
            fprintf(stderr, "ksync-bench: --csv %s: %s\n", bopt.csv, strerror(errno));
            exit(1); /* a setup error (the exit status of usage errors) */
        }
        char model[128], date[64];
        cpu_model(model, sizeof model);
        time_t now = time(NULL);
        struct tm tm;
        strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&now, &tm));
        /* the run's context as comment lines, then one row per repetition */
        fprintf(csv, "# ksync-bench %s\n# cpu: %s, %ld online\n# reps: %d\n", date, model,
                sysconf(_SC_NPROCESSORS_ONLN), bopt.reps);
        fprintf(csv, "section,label,rep,value\n");
    }
}

void bench_run_end(void)
{
    print_targets();
    printf("\n");
    print_load("end", " - includes this run's own threads");
    print_other_load(run_a0, bench_now() - run_t0);
    printf("total run time %.1f s\n", (double)(bench_now() - run_t0) / 1e9);
    if (csv && fclose(csv) != 0) {
        fprintf(stderr, "ksync-bench: --csv %s: %s\n", bopt.csv, strerror(errno));
        exit(1);
    }
    csv = NULL;
}
