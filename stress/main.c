/* stress/main.c - ksync-stress: the course scenarios (docs/stress.md),
 * each run against ksync and its reference implementations.
 *
 *   ksync-stress --scenario NAME|all [--threads N] [--seconds S | --iters M]
 *                [--seed X] [--impl ksync|ref|all] [--yield P] [--list] [--help]
 *
 * Scenarios live in stress/s_<family>.c; each family exports a table
 * (harness.h), and this file only gathers the tables, parses the command line
 * and dispatches.  Exit status: 0 all invariants held, 1 an invariant failed,
 * 2 bad usage, 3 a run stalled (no progress for ST_STALL_S seconds).
 */
#include "harness.h"

#include <ksync/debug.h>
#include <ksync/time.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const struct st_scenario *const families[] = {
    st_family_mutex, st_family_rmutex, st_family_sem, st_family_cost,
    st_family_event, st_family_cond,  st_family_barrier, st_family_queue,
    st_family_pool,  st_family_monitoring, st_family_cache, st_family_channel,
    st_family_shm,   st_family_lockstat, st_family_lockdep,
};

#define MAX_SCENARIOS 64
static const struct st_scenario *all[MAX_SCENARIOS];
static unsigned n_all;

static int by_id(const void *a, const void *b)
{
    const struct st_scenario *x = *(const struct st_scenario *const *)a;
    const struct st_scenario *y = *(const struct st_scenario *const *)b;
    return atoi(x->id + 1) - atoi(y->id + 1);
}

static void gather(void)
{
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
        for (const struct st_scenario *s = families[f]; s->id && n_all < MAX_SCENARIOS; s++)
            all[n_all++] = s;
    qsort(all, n_all, sizeof all[0], by_id);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ksync-stress [--scenario NAME|all] [--threads N] [--seconds S | --iters M]\n"
            "                    [--seed X] [--impl ksync|ref|all] [--yield P] [--list] [--help]\n"
            "\n"
            "Runs the course scenarios (docs/stress.md) against ksync and against each\n"
            "reference implementation, checks each invariant on both and prints one row\n"
            "per scenario and implementation.  Exit status 1 if any invariant failed.\n"
            "\n"
            "  --scenario NAME  an id (S2), a name (locked-counter), a comma list, or all\n"
            "                   (default all)\n"
            "  --threads N      override every scenario's thread count (S15 stays at 1)\n"
            "  --seconds S      timed mode: every run lasts S seconds (soak)\n"
            "  --iters M        operations per thread (default: per scenario, short);\n"
            "                   iteration-mode runs are also capped at %.0f s (S2 spinlocks\n"
            "                   and ck_rwlock at 2 s) and report the partial count\n"
            "  --seed X         PRNG seed for the workers and the race points (default:\n"
            "                   from the clock; printed in the header)\n"
            "  --impl WHICH     ksync, ref or all (default all)\n"
            "  --yield P        permille of ksync's race points that yield/spin/sleep\n"
            "                   (race-widening build; default 0)\n"
            "  --list           list the scenarios and their defaults\n"
            "\n"
            "A run with no progress for %.0f s is reported as a STALL and ends the program\n"
            "(exit status 3).\n",
            ST_CAP_S, ST_STALL_S);
}

static void list(void)
{
    printf("%-4s %-18s %s\n", "id", "name", "scenario");
    for (unsigned i = 0; i < n_all; i++)
        printf("%-4s %-18s %s\n%23s impls: %s\n%23s defaults: %s\n", all[i]->id, all[i]->name,
               all[i]->title, "", all[i]->impls, "", all[i]->dflt);
}

/* Does `sel` (a comma list, or "all") pick scenario s? */
static int picks(const char *sel, const struct st_scenario *s)
{
    if (!strcasecmp(sel, "all"))
        return 1;
    const char *p = sel;
    while (*p) {
        size_t n = strcspn(p, ",");
        if ((strlen(s->id) == n && !strncasecmp(p, s->id, n)) ||
            (strlen(s->name) == n && !strncasecmp(p, s->name, n)))
            return 1;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Every item of the list must name some scenario. */
static const char *unknown(const char *sel)
{
    static char item[64];
    if (!strcasecmp(sel, "all"))
        return NULL;
    const char *p = sel;
    while (*p) {
        size_t n = strcspn(p, ",");
        snprintf(item, sizeof item, "%.*s", (int)(n < 63 ? n : 63), p);
        unsigned i;
        for (i = 0; i < n_all; i++)
            if (picks(item, all[i]))
                break;
        if (i == n_all)
            return item;
        p += n;
        if (*p == ',')
            p++;
    }
    return NULL;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-')
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    struct st_opts o = {.scenario = "all", .kinds = ST_KSYNC | ST_REF};
    int seed_given = 0;
    enum { O_SCEN = 1, O_THR, O_SEC, O_ITER, O_SEED, O_IMPL, O_YIELD, O_LIST, O_HELP };
    static const struct option lo[] = {
        {"scenario", required_argument, 0, O_SCEN}, {"threads", required_argument, 0, O_THR},
        {"seconds", required_argument, 0, O_SEC},   {"iters", required_argument, 0, O_ITER},
        {"seed", required_argument, 0, O_SEED},     {"impl", required_argument, 0, O_IMPL},
        {"yield", required_argument, 0, O_YIELD},   {"list", no_argument, 0, O_LIST},
        {"help", no_argument, 0, O_HELP},           {0, 0, 0, 0},
    };
    gather();
    int c, bad = 0, do_list = 0;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case O_SCEN:
            o.scenario = optarg;
            break;
        case O_THR:
            if (parse_u64(optarg, &v) || v == 0 || v > 4096)
                bad = fprintf(stderr, "ksync-stress: --threads wants 1..4096\n");
            o.threads = (unsigned)v;
            break;
        case O_SEC: {
            char *end;
            o.seconds = strtod(optarg, &end);
            if (end == optarg || *end || !(o.seconds > 0) || o.seconds > 1e7)
                bad = fprintf(stderr, "ksync-stress: --seconds wants a positive number\n");
            break;
        }
        case O_ITER:
            if (parse_u64(optarg, &v) || v == 0)
                bad = fprintf(stderr, "ksync-stress: --iters wants a positive integer\n");
            o.iters = v;
            break;
        case O_SEED:
            if (parse_u64(optarg, &o.seed))
                bad = fprintf(stderr, "ksync-stress: --seed wants an integer\n");
            seed_given = 1;
            break;
        case O_IMPL:
            if (!strcmp(optarg, "ksync"))
                o.kinds = ST_KSYNC;
            else if (!strcmp(optarg, "ref"))
                o.kinds = ST_REF;
            else if (!strcmp(optarg, "all"))
                o.kinds = ST_KSYNC | ST_REF;
            else
                bad = fprintf(stderr, "ksync-stress: --impl wants ksync, ref or all\n");
            break;
        case O_YIELD:
            if (parse_u64(optarg, &v) || v > 1000)
                bad = fprintf(stderr, "ksync-stress: --yield wants a permille, 0..1000\n");
            o.yield = (unsigned)v;
            break;
        case O_LIST:
            do_list = 1;
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            bad = 1;
        }
    }
    if (optind < argc)
        bad = fprintf(stderr, "ksync-stress: unexpected argument '%s'\n", argv[optind]);
    if (o.seconds > 0 && o.iters)
        bad = fprintf(stderr, "ksync-stress: --seconds and --iters exclude each other\n");
    const char *u = bad ? NULL : unknown(o.scenario);
    if (u)
        bad = fprintf(stderr, "ksync-stress: no scenario '%s' (see --list)\n", u);
    if (bad) {
        usage(stderr);
        return 2;
    }
    if (do_list) {
        list();
        return 0;
    }
    if (!seed_given)
        o.seed = (uint64_t)ks_now() ^ ((uint64_t)getpid() << 32);
    ks_debug_yield_config(o.yield, o.seed);

    char mode[64];
    if (o.seconds > 0)
        snprintf(mode, sizeof mode, "%g s per run", o.seconds);
    else if (o.iters)
        snprintf(mode, sizeof mode, "%llu iters/thread", (unsigned long long)o.iters);
    else
        snprintf(mode, sizeof mode, "default iters");
    char thr[32] = "default";
    if (o.threads)
        snprintf(thr, sizeof thr, "%u", o.threads);
    printf("ksync-stress: scenario %s, threads %s, %s, seed 0x%llx, impl %s, yield %u/1000, "
           "%ld cpus\n",
           o.scenario, thr, mode, (unsigned long long)o.seed,
           o.kinds == ST_KSYNC ? "ksync" : o.kinds == ST_REF ? "ref" : "all", o.yield,
           sysconf(_SC_NPROCESSORS_ONLN));
    st_table_header();

    int64_t t0 = ks_now();
    for (unsigned i = 0; i < n_all; i++)
        if (picks(o.scenario, all[i]))
            all[i]->run(&o);
    printf("ksync-stress: %u rows, %u failed, %.1f s (reproduce with --seed 0x%llx)\n", st_rows(),
           st_failures(), (double)(ks_now() - t0) / 1e9, (unsigned long long)o.seed);
    return st_failures() ? 1 : 0;
}
