/* stress/bench_main.c - ksync-bench: the options and main(), which runs the
 * sections of b_*.c between the services of bench.c (context first, the
 * PASS/MISS summary and load last).
 *
 * Honesty rules this program keeps: every printed figure is measured in this
 * run; each is the median of --reps repetitions, with the implementations
 * interleaved inside each repetition so that drift (other load, frequency)
 * hits them alike; ratios compare figures from the same run; a result that
 * fails its integrity check (lost counter increments, too many permit
 * holders) stops the program with exit status 2 instead of being printed.
 */
#include "bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    .rw_threads = {2, 16},
    .pin = PIN_AUTO,
};

/* ---- options ------------------------------------------------------------------------- */

/* --quick: set before the other options are read, so that they override it. */
static void quick_defaults(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick")) {
            bopt.sections = SEC_MUTEX | SEC_SEM | SEC_CPU | SEC_HANDOFF | SEC_BARRIER | SEC_RWLOCK | SEC_BROADCAST;
            bopt.reps = 3;
            bopt.seconds = 0.4;
            bopt.tlist[0] = 2;
            bopt.tlist[1] = 16;
            bopt.ntlist = 2;
            return;
        }
}

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
            "                      rwlock       7. rwlock, 90%% and 99%% reads, at 2 and 16 threads (Mops/s)\n"
            "                      broadcast    8. cond broadcast to 16 waiters: futex calls, sleeps\n"
            "                      queue        9. MPMC ring (ks_mpmc, ck_ring, wfcqueue) and blocking\n"
            "                                      queue (ks_queue, mutex+2cond) at 1p1c..16p16c (items/s)\n"
            "                      cache       10. key/value caches with TTL (ks_cache variants, ck_ht,\n"
            "                                      rculfhash, mutex table), 3 mixes at 2 and 16 threads\n"
            "                                      (M ops/s); S3-FIFO vs LRU hit ratio\n"
            "                      ipc         11. ks_channel vs pipe, AF_UNIX stream, loopback TCP between\n"
            "                                      processes: 64 B..64 KiB, 1+1 and 4+4, ping-pong\n"
            "  --reps N          repetitions per figure, median printed (default %d)\n"
            "  --seconds S       measurement cap per run of sections 2-4 (default %.1f);\n"
            "                    sections 5-8 run --seconds/%d per run (they have many runs),\n"
            "                    sections 9 and 10 --seconds/%d\n"
            "  --threads LIST    thread counts of section 2 (default 2,4,16)\n"
            "  --counter-apart   section 2 with the counter on the cache line after the lock's\n"
            "                    (default: beside the lock, on its line)\n"
            "  --iters N         section 1: lock+unlock pairs per timed repetition (default %llu)\n"
            "  --cg-iters N      section 1: pairs per callgrind repetition (default %llu)\n"
            "  --no-callgrind    section 1 without the valgrind half\n"
            "  --valgrind PATH   valgrind to run (default: valgrind from PATH)\n"
            "  --lim-threads N   section 3 threads (default %d)\n"
            "  --permits N       section 3 permits (default %d)\n"
            "  --work-ns N       section 3 busy work per permit (default %d)\n"
            "  --counter-hold-ns N  section 2 busy work inside the lock (default 0)\n"
            "  --counter-work-ns N  section 2 busy work after each unlock, outside the lock (default 0)\n"
            "  --rw-work-ns N    section 7 busy work after each operation, outside the lock\n"
            "                    (default 0: the lock is all the threads do)\n"
            "  --rw-threads A,B  section 7's two thread counts (default 2,16; its targets are\n"
            "                    printed for those only)\n"
            "  --pin MODE        bind thread i to CPU i mod nCPU: auto (when threads <= CPUs;\n"
            "                    default), always, never\n"
            "  --verbose         also print every repetition's value, in run order\n"
            "  --csv FILE        write every labelled repetition to FILE (section,label,rep,value;\n"
            "                    # lines name the date and CPU)\n"
            "  --quick           the targets of the blocking primitives in about a minute: sections\n"
            "                    mutex,sem,cpu,handoff,barrier,rwlock,broadcast with --reps 3\n"
            "                    --seconds 0.4 --threads 2,16 (options given too override these)\n"
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
        {"ipc", SEC_IPC},          {"channel", SEC_IPC},
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
                    "barrier, rwlock, broadcast, queue, cache, ipc, all)\n", tok);
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
       O_LIM_THREADS, O_PERMITS, O_WORK_NS, O_RW_WORK_NS, O_RW_THREADS, O_COUNTER_APART, O_COUNTER_HOLD_NS, O_COUNTER_WORK_NS, O_PIN, O_VERBOSE, O_CG_CHILD, O_QUICK, O_CSV, O_HELP };

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
        {"rw-work-ns", required_argument, 0, O_RW_WORK_NS},
        {"rw-threads", required_argument, 0, O_RW_THREADS},
        {"counter-apart", no_argument, 0, O_COUNTER_APART},
        {"counter-hold-ns", required_argument, 0, O_COUNTER_HOLD_NS},
        {"counter-work-ns", required_argument, 0, O_COUNTER_WORK_NS},
        {"pin", required_argument, 0, O_PIN},
        {"verbose", no_argument, 0, O_VERBOSE},
        {"quick", no_argument, 0, O_QUICK},
        {"csv", required_argument, 0, O_CSV},
        {"callgrind-child", no_argument, 0, O_CG_CHILD}, /* internal: run under valgrind */
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int cg_child = 0, c;
    quick_defaults(argc, argv);
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_ONLY: bopt.sections = parse_sections(optarg); break;
        case O_REPS: bopt.reps = (int)parse_long("--reps", optarg, 1, BENCH_MAX_REPS); break;
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
        case O_COUNTER_APART: bopt.counter_apart = 1; break;
        case O_COUNTER_HOLD_NS:
            bopt.counter_hold_ns = (int)parse_long("--counter-hold-ns", optarg, 0, 100000000);
            break;
        case O_COUNTER_WORK_NS:
            bopt.counter_work_ns = (int)parse_long("--counter-work-ns", optarg, 0, 100000000);
            break;
        case O_RW_WORK_NS: bopt.rw_work_ns = (int)parse_long("--rw-work-ns", optarg, 0, 100000000); break;
        case O_RW_THREADS: {
            char *comma = strchr(optarg, ',');
            if (!comma || strchr(comma + 1, ',')) {
                fprintf(stderr, "ksync-bench: --rw-threads wants two counts, such as 4,16\n");
                return 1;
            }
            *comma = 0;
            bopt.rw_threads[0] = (int)parse_long("--rw-threads", optarg, 1, BENCH_MAX_THREADS);
            bopt.rw_threads[1] = (int)parse_long("--rw-threads", comma + 1, 1, BENCH_MAX_THREADS);
            break;
        }
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
        case O_CSV: bopt.csv = optarg; break;
        case O_QUICK: break; /* applied by quick_defaults */
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

    bench_run_begin();
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
    if (bopt.sections & SEC_IPC)
        bench_ipc();
    bench_run_end();
    return 0;
}
