/* stress/b_handoff.c - section 5: two-thread ping-pong hand-off.
 *
 * Thread A (team thread 0) hands the turn to B (thread 1), B hands it back:
 * one round trip is two hand-offs.  A loops { pass to B; wait for the turn }
 * until the stop flag; B { wait for the turn; pass to A } until A's quit.
 * The threads sit on separate CPUs when --pin allows (as in section 2).
 * Compared, one "channel" per direction:
 *
 *   ks_event pair     take: ks_event_wait(mine); ks_event_clear(mine)
 *                     give: ks_event_set(other's)
 *                     (mine is cleared before the other's is set, and the
 *                     other clears its own before setting mine, so no set
 *                     can be lost or seen twice)
 *   ks_sem pair       take: ks_sem_wait(mine)   give: ks_sem_post(other's)
 *   ks_cond+ks_mutex  a turn variable under one ks_mutex and one ks_cond per
 *                     side: lock; turn = other; signal(other's cond);
 *                     while (turn != me) wait(my cond); unlock
 *   pthread_cond+mutex  the same protocol with glibc's mutex and condvar
 *   sem_t pair        take: sem_wait(mine)       give: sem_post(other's)
 *   ck_ec32 pair      Concurrency Kit's event count, one per direction, used
 *                     as a counter: give increments the other's; take waits
 *                     until mine moves past the count already consumed.
 *                     Each counter has a single producer, so ck_ec's x86
 *                     single-producer mode is used where CK provides it.
 *
 * To stop, A sets `quit` and gives B the turn once more; B reads quit after
 * each take (the give/take pair orders it).  The rate is A's round trips
 * divided by the time from the start barrier to the last thread's exit.
 * Also reported: voluntary context switches per round trip (both threads,
 * getrusage), the CPU both threads used as a share of the machine, and for
 * the ksync pairs their futex waits and wakes per round trip
 * (ks_futex_stats summed over both threads).
 */
#include "bench.h"

#include <ksync/cond.h>
#include <ksync/event.h>

#include "ck_ec_os.h"
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- Concurrency Kit's event count: OS callbacks in ck_ec_os.h ---------------- */

#ifdef CK_F_EC_SP
static const struct ck_ec_mode ec_mode = {.ops = &ec_ops, .single_producer = true};
#define EC_MODE_NOTE "single-producer mode"
#else
static const struct ck_ec_mode ec_mode = {.ops = &ec_ops, .single_producer = false};
#define EC_MODE_NOTE "multi-producer mode"
#endif

/* ---- the channels ---------------------------------------------------------------- */

/* What each side waits on, on its own line: side[i] is thread i's. */
struct ho_side {
    union {
        ks_event_t ev;
        ks_sem_t ks;
        ks_cond_t kc;
        pthread_cond_t pc;
        sem_t ps;
        struct ck_ec32 ec;
    } u;
} __attribute__((aligned(KS_CACHELINE)));

struct ho_obj {
    struct ho_side side[2];
    struct {
        union {
            ks_mutex_t km;
            pthread_mutex_t pm;
        } m;
        int turn; /* cond kinds: whose turn, under m */
    } __attribute__((aligned(KS_CACHELINE))) shared;
    int quit __attribute__((aligned(KS_CACHELINE))); /* A -> B: the last give */
};

/* A thread's own state: the ck_ec count it has consumed. */
struct ho_me {
    uint32_t seen;
};

/* name_h_init(o), name_h_give(o, me, other), name_h_take(o, me, mine),
 * name_h_pass(o, me, mine, other) = give then take. */
#define HO_PASS_IS_GIVE_TAKE(name)                                                        \
    static inline void name##_h_pass(struct ho_obj *o, struct ho_me *me, int mine, int other) \
    {                                                                                     \
        name##_h_give(o, me, other);                                                      \
        name##_h_take(o, me, mine);                                                       \
    }

/* ks_event */
static void ks_event_h_init(struct ho_obj *o)
{
    ks_event_init(&o->side[0].u.ev, KS_PRIVATE);
    ks_event_init(&o->side[1].u.ev, KS_PRIVATE);
}
static inline void ks_event_h_give(struct ho_obj *o, struct ho_me *me, int other)
{
    (void)me;
    ks_event_set(&o->side[other].u.ev);
}
static inline void ks_event_h_take(struct ho_obj *o, struct ho_me *me, int mine)
{
    (void)me;
    ks_event_wait(&o->side[mine].u.ev);
    ks_event_clear(&o->side[mine].u.ev);
}
HO_PASS_IS_GIVE_TAKE(ks_event)

/* ks_sem */
static void ks_sem_h_init(struct ho_obj *o)
{
    ks_sem_init(&o->side[0].u.ks, 0, KS_PRIVATE);
    ks_sem_init(&o->side[1].u.ks, 0, KS_PRIVATE);
}
static inline void ks_sem_h_give(struct ho_obj *o, struct ho_me *me, int other)
{
    (void)me;
    ks_sem_post(&o->side[other].u.ks);
}
static inline void ks_sem_h_take(struct ho_obj *o, struct ho_me *me, int mine)
{
    (void)me;
    ks_sem_wait(&o->side[mine].u.ks);
}
HO_PASS_IS_GIVE_TAKE(ks_sem)

/* sem_t */
static void sem_t_h_init(struct ho_obj *o)
{
    sem_init(&o->side[0].u.ps, 0, 0);
    sem_init(&o->side[1].u.ps, 0, 0);
}
static inline void sem_t_h_give(struct ho_obj *o, struct ho_me *me, int other)
{
    (void)me;
    sem_post(&o->side[other].u.ps);
}
static inline void sem_t_h_take(struct ho_obj *o, struct ho_me *me, int mine)
{
    (void)me;
    while (sem_wait(&o->side[mine].u.ps) != 0) /* EINTR */
        ;
}
HO_PASS_IS_GIVE_TAKE(sem_t)

/* ck_ec32: one event count per direction, incremented once per give */
static void ck_ec_h_init(struct ho_obj *o)
{
    ck_ec32_init(&o->side[0].u.ec, 0);
    ck_ec32_init(&o->side[1].u.ec, 0);
}
static inline void ck_ec_h_give(struct ho_obj *o, struct ho_me *me, int other)
{
    (void)me;
    ck_ec32_inc(&o->side[other].u.ec, &ec_mode);
}
static inline void ck_ec_h_take(struct ho_obj *o, struct ho_me *me, int mine)
{
    struct ck_ec32 *ec = &o->side[mine].u.ec;
    /* ck_ec32_value has acquire semantics (a load fence after the load). */
    while (ck_ec32_value(ec) == me->seen)
        ck_ec32_wait(ec, &ec_mode, me->seen, NULL);
    me->seen = (me->seen + 1) & INT32_MAX; /* the counter is 31 bits */
}
HO_PASS_IS_GIVE_TAKE(ck_ec)

/* Condition variable + turn, one lock round per pass. */
#define HO_COND(name, init_m, init_c, lock, unlock, signal, wait, M, C)                       \
    static void name##_h_init(struct ho_obj *o)                                               \
    {                                                                                         \
        init_m;                                                                               \
        init_c(0);                                                                            \
        init_c(1);                                                                            \
        o->shared.turn = 0;                                                                   \
    }                                                                                         \
    static inline void name##_h_take(struct ho_obj *o, struct ho_me *me, int mine)            \
    {                                                                                         \
        (void)me;                                                                             \
        lock(&o->shared.m.M);                                                                 \
        while (o->shared.turn != mine)                                                        \
            wait(&o->side[mine].u.C, &o->shared.m.M);                                         \
        unlock(&o->shared.m.M);                                                               \
    }                                                                                         \
    static inline void name##_h_give(struct ho_obj *o, struct ho_me *me, int other)           \
    {                                                                                         \
        (void)me;                                                                             \
        lock(&o->shared.m.M);                                                                 \
        o->shared.turn = other;                                                               \
        signal(&o->side[other].u.C);                                                          \
        unlock(&o->shared.m.M);                                                               \
    }                                                                                         \
    static inline void name##_h_pass(struct ho_obj *o, struct ho_me *me, int mine, int other) \
    {                                                                                         \
        (void)me;                                                                             \
        lock(&o->shared.m.M);                                                                 \
        o->shared.turn = other;                                                               \
        signal(&o->side[other].u.C);                                                          \
        while (o->shared.turn != mine)                                                        \
            wait(&o->side[mine].u.C, &o->shared.m.M);                                         \
        unlock(&o->shared.m.M);                                                               \
    }
#define KC_INIT(i) ks_cond_init(&o->side[i].u.kc, KS_PRIVATE)
#define PC_INIT(i) pthread_cond_init(&o->side[i].u.pc, NULL)
HO_COND(ks_cond, ks_mutex_init(&o->shared.m.km, KS_PRIVATE), KC_INIT, ks_mutex_lock, ks_mutex_unlock,
        ks_cond_signal, ks_cond_wait, km, kc)
HO_COND(pthread_cond, pthread_mutex_init(&o->shared.m.pm, NULL), PC_INIT, pthread_mutex_lock,
        pthread_mutex_unlock, pthread_cond_signal, pthread_cond_wait, pm, pc)
#undef KC_INIT
#undef PC_INIT

/* A counts round trips; B answers until A's quit. */
#define HO_BODY(name)                                                 \
    static void body_##name(bench_thr_t *t)                           \
    {                                                                 \
        struct ho_obj *o = t->arg;                                    \
        struct ho_me me = {0};                                        \
        uint64_t n = 0;                                               \
        if (t->id == 0) {                                             \
            while (!bench_stopped()) {                                \
                name##_h_pass(o, &me, 0, 1);                          \
                n++;                                                  \
            }                                                         \
            /* relaxed: the give below releases it to B's take. */    \
            __atomic_store_n(&o->quit, 1, __ATOMIC_RELAXED);          \
            name##_h_give(o, &me, 1);                                 \
        } else {                                                      \
            name##_h_take(o, &me, 1);                                 \
            while (!__atomic_load_n(&o->quit, __ATOMIC_RELAXED))      \
                name##_h_pass(o, &me, 1, 0);                          \
        }                                                             \
        t->ops = n;                                                   \
    }
HO_BODY(ks_event)
HO_BODY(ks_sem)
HO_BODY(ks_cond)
HO_BODY(pthread_cond)
HO_BODY(sem_t)
HO_BODY(ck_ec)

enum { K_KS_EVENT, K_KS_SEM, K_KS_COND, K_PT_COND, K_SEM_T, K_CK_EC };
static const struct hkind {
    const char *name;
    void (*init)(struct ho_obj *o);
    void (*body)(bench_thr_t *t);
    int ksync;
} kinds[] = {
    {"ks_event pair", ks_event_h_init, body_ks_event, 1},
    {"ks_sem pair", ks_sem_h_init, body_ks_sem, 1},
    {"ks_cond+ks_mutex", ks_cond_h_init, body_ks_cond, 1},
    {"pthread_cond+mutex", pthread_cond_h_init, body_pthread_cond, 0},
    {"sem_t pair", sem_t_h_init, body_sem_t, 0},
    {"ck_ec32 pair", ck_ec_h_init, body_ck_ec, 0},
};
#define NK ((int)(sizeof kinds / sizeof kinds[0]))

static struct ho_obj obj;

struct ho_result {
    double rate, sleeps, cpu_share, waits, wakes; /* per round trip, except rate and cpu */
    int pinned;
};

static struct ho_result run_once(const struct hkind *k)
{
    struct ho_result res;
    struct bench_team team = {
        .n = 2, .body = k->body, .arg = &obj, .cap_ns = (int64_t)(bopt.seconds * 1e9 / BENCH_SHORT_DIV),
    };
    memset(&obj, 0, sizeof obj);
    k->init(&obj);
    bench_team_run(&team);
    uint64_t rt = team.ops, sleeps = 0, waits = 0, wakes = 0;
    int64_t cpu = 0;
    if (rt == 0)
        bench_fail("%s: no round trip in %.2f s", k->name, (double)team.elapsed_ns / 1e9);
    for (int i = 0; i < team.n; i++) {
        sleeps += team.thr[i].vcsw;
        waits += team.thr[i].fx.waits;
        wakes += team.thr[i].fx.wakes;
        cpu += team.thr[i].cpu_ns;
    }
    res.rate = (double)rt / ((double)team.elapsed_ns / 1e9);
    res.sleeps = (double)sleeps / (double)rt;
    res.waits = (double)waits / (double)rt;
    res.wakes = (double)wakes / (double)rt;
    res.cpu_share = 100.0 * (double)cpu / ((double)team.elapsed_ns * (double)sysconf(_SC_NPROCESSORS_ONLN));
    res.pinned = team.pinned;
    bench_team_free(&team);
    return res;
}

void bench_handoff(void)
{
    const int R = bopt.reps;
    struct ho_result *res = calloc((size_t)(NK * R), sizeof *res);
    struct bench_stat rate[NK], slp[NK], cpu[NK], waits[NK], wakes[NK];
#define RES(k, r) res[(k) * R + (r)]

    bench_section("5");

    printf("\n== 5. Ping-pong hand-off between 2 threads (round trips/s, higher is better) ==\n");
    printf("%.2f s per run; one round trip = A hands to B, B hands back; ck_ec32 in %s\n",
           bopt.seconds / BENCH_SHORT_DIV, EC_MODE_NOTE);
    for (int r = 0; r < R; r++)
        for (int k = 0; k < NK; k++)
            RES(k, r) = run_once(&kinds[k]);
    for (int k = 0; k < NK; k++) {
        char label[64];
        snprintf(label, sizeof label, "%s round trips/s", kinds[k].name);
        rate[k] = BENCH_STATS_OF(label, RES(k, 0), rate, R);
        slp[k] = BENCH_STATS_OF(NULL, RES(k, 0), sleeps, R);
        cpu[k] = BENCH_STATS_OF(NULL, RES(k, 0), cpu_share, R);
        waits[k] = BENCH_STATS_OF(NULL, RES(k, 0), waits, R);
        wakes[k] = BENCH_STATS_OF(NULL, RES(k, 0), wakes, R);
    }

    printf("\nthreads pinned to separate CPUs: %s\n", RES(0, 0).pinned ? "yes" : "no");
    printf("%-20s %14s %7s %11s %9s %16s %16s\n", "implementation", "round trips/s", "spread", "sleeps/rt",
           "CPU used", "ks futex waits/rt", "ks futex wakes/rt");
    for (int k = 0; k < NK; k++) {
        printf("%-20s %14.0f %6.0f%% %11.4f %8.0f%%", kinds[k].name, rate[k].med, bench_spread(rate[k]),
               slp[k].med, cpu[k].med);
        if (kinds[k].ksync)
            printf(" %16.4f %16.4f\n", waits[k].med, wakes[k].med);
        else
            printf(" %16s %16s\n", "(not ksync)", "");
    }
    printf("(sleeps/rt: voluntary context switches of both threads per round trip, getrusage\n"
           " RUSAGE_THREAD; CPU used: both threads' CPU time / (wall x nproc); ks futex: FUTEX_WAIT /\n"
           " FUTEX_WAKE calls of both threads per round trip, ks_futex_stats)\n");
    if (RES(0, 0).pinned && waits[K_KS_EVENT].med > 1.0)
        printf("note: the ksync pairs slept at most hand-offs (futex waits/rt above 1): ksync spins before\n"
               "sleeping only if the calling thread may run on more than one CPU (ks_usable_cpus, its own\n"
               "affinity mask), and a pinned thread may not; --pin never lets them spin\n");

    const double ev_pt = rate[K_KS_EVENT].med / rate[K_PT_COND].med;
    const double sem_st = rate[K_KS_SEM].med / rate[K_SEM_T].med;
    const double cond_pt = rate[K_KS_COND].med / rate[K_PT_COND].med;
    printf("\nratio ksync / reference (above 1 = ksync faster)\n");
    printf("  ks_event pair    / pthread_cond+mutex  %9.3f\n", ev_pt);
    printf("  ks_event pair    / ck_ec32 pair        %9.4f\n", rate[K_KS_EVENT].med / rate[K_CK_EC].med);
    printf("  ks_sem pair      / sem_t pair          %9.3f\n", sem_st);
    printf("  ks_cond+ks_mutex / pthread_cond+mutex  %9.3f\n", cond_pt);
#undef RES

    bench_target("hand-off: ks_event pair / pthread_cond+mutex", ev_pt, ">=", 10.0, "x");
    bench_target("hand-off: ks_sem pair / sem_t pair", sem_st, ">=", 10.0, "x");
    bench_target("hand-off: ks_cond+ks_mutex / pthread_cond+mutex", cond_pt, ">=", 2.0, "x");
    free(res);
}
