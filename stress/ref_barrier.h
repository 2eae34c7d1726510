/* stress/ref_barrier.h - Concurrency Kit's barriers behind one shape, for
 * S19 (s_barrier.c) and bench section 6 (b_barrier.c).  Header-only and
 * static inline, so that the bench's loops call CK's barrier directly.
 *
 *   cen    centralized: one counter and a global sense
 *   comb   combining tree: groups of 2 threads, which CK joins into a tree
 *   dis    dissemination: log2(N) rounds of pairwise flags
 *   tour   tournament: statically paired rounds, a champion wakes the losers
 *   mcs    MCS: 4-ary arrival tree, binary wake-up tree
 *
 * For each: ckb_<name>_init(b, n, alloc) once (b zeroed), then in every
 * thread ckb_<name>_join(b, me, id) (me zeroed, id 0..n-1) and
 * ckb_<name>_wait(b, me) per phase; ckb_free(b) at the end.  None
 * names a serial thread, and none can be abandoned: a thread that stops
 * arriving leaves the others spinning for good.
 */
#ifndef KS_STRESS_REF_BARRIER_H
#define KS_STRESS_REF_BARRIER_H

#include <ck_barrier.h>
#include <stddef.h>
#include <stdlib.h>

/* The barriers' shared state; one of them is used at a time. */
struct ckb {
    ck_barrier_centralized_t cen;
    ck_barrier_combining_t comb;
    ck_barrier_combining_group_t *root, *groups;
    ck_barrier_dissemination_t *dis;
    ck_barrier_dissemination_flag_t **dflags;
    ck_barrier_tournament_t tour;
    ck_barrier_tournament_round_t **rounds;
    ck_barrier_mcs_t *mcs;
    unsigned n; /* threads; last, so that the objects keep their offsets */
};

/* A thread's own barrier state (CK keeps the sense per thread). */
struct ckb_me {
    union {
        ck_barrier_centralized_state_t cen;
        ck_barrier_combining_state_t comb;
        ck_barrier_dissemination_state_t dis;
        ck_barrier_tournament_state_t tour;
        ck_barrier_mcs_state_t mcs;
    } s;
    ck_barrier_combining_group_t *group;
};

/* Zeroed memory of at least `size` bytes (and at least 1); never NULL
 * (the caller's allocator exits when out of memory).  Freed by free(). */
typedef void *(*ckb_alloc_fn)(size_t size);

/* centralized */
static inline void ckb_cen_init(struct ckb *b, unsigned n, ckb_alloc_fn alloc)
{
    b->n = n;
    (void)alloc;
    b->cen = (ck_barrier_centralized_t)CK_BARRIER_CENTRALIZED_INITIALIZER;
}
static inline void ckb_cen_join(struct ckb *b, struct ckb_me *me, unsigned id)
{
    (void)b, (void)id;
    me->s.cen = (ck_barrier_centralized_state_t)CK_BARRIER_CENTRALIZED_STATE_INITIALIZER;
}
static inline void ckb_cen_wait(struct ckb *b, struct ckb_me *me)
{
    ck_barrier_centralized(&b->cen, &me->s.cen, b->n);
}

/* combining tree */
static inline void ckb_comb_init(struct ckb *b, unsigned n, ckb_alloc_fn alloc)
{
    b->n = n;
    unsigned ng = (b->n + 1) / 2;
    b->root = alloc(sizeof *b->root);
    b->groups = alloc(sizeof *b->groups * ng);
    ck_barrier_combining_init(&b->comb, b->root);
    for (unsigned g = 0; g < ng; g++)
        ck_barrier_combining_group_init(&b->comb, &b->groups[g], 2 * g + 1 < b->n ? 2 : 1);
}
static inline void ckb_comb_join(struct ckb *b, struct ckb_me *me, unsigned id)
{
    me->s.comb = (ck_barrier_combining_state_t)CK_BARRIER_COMBINING_STATE_INITIALIZER;
    me->group = &b->groups[id / 2];
}
static inline void ckb_comb_wait(struct ckb *b, struct ckb_me *me)
{
    ck_barrier_combining(&b->comb, me->group, &me->s.comb);
}

/* dissemination */
static inline void ckb_dis_init(struct ckb *b, unsigned n, ckb_alloc_fn alloc)
{
    b->n = n;
    unsigned size = ck_barrier_dissemination_size(b->n);
    b->dis = alloc(sizeof *b->dis * b->n);
    b->dflags = alloc(sizeof *b->dflags * b->n);
    for (unsigned i = 0; i < b->n; i++)
        b->dflags[i] = alloc(sizeof **b->dflags * (size ? size : 1));
    ck_barrier_dissemination_init(b->dis, b->dflags, b->n);
}
static inline void ckb_dis_join(struct ckb *b, struct ckb_me *me, unsigned id)
{
    (void)id;
    ck_barrier_dissemination_subscribe(b->dis, &me->s.dis);
}
static inline void ckb_dis_wait(struct ckb *b, struct ckb_me *me)
{
    ck_barrier_dissemination(b->dis, &me->s.dis);
}

/* tournament */
static inline void ckb_tour_init(struct ckb *b, unsigned n, ckb_alloc_fn alloc)
{
    b->n = n;
    unsigned size = ck_barrier_tournament_size(b->n);
    b->rounds = alloc(sizeof *b->rounds * b->n);
    for (unsigned i = 0; i < b->n; i++)
        b->rounds[i] = alloc(sizeof **b->rounds * size);
    ck_barrier_tournament_init(&b->tour, b->rounds, b->n);
}
static inline void ckb_tour_join(struct ckb *b, struct ckb_me *me, unsigned id)
{
    (void)id;
    ck_barrier_tournament_subscribe(&b->tour, &me->s.tour);
}
static inline void ckb_tour_wait(struct ckb *b, struct ckb_me *me)
{
    ck_barrier_tournament(&b->tour, &me->s.tour);
}

/* MCS */
static inline void ckb_mcs_init(struct ckb *b, unsigned n, ckb_alloc_fn alloc)
{
    b->n = n;
    b->mcs = alloc(sizeof *b->mcs * b->n);
    ck_barrier_mcs_init(b->mcs, b->n);
}
static inline void ckb_mcs_join(struct ckb *b, struct ckb_me *me, unsigned id)
{
    (void)id;
    ck_barrier_mcs_subscribe(b->mcs, &me->s.mcs);
}
static inline void ckb_mcs_wait(struct ckb *b, struct ckb_me *me)
{
    ck_barrier_mcs(b->mcs, &me->s.mcs);
}

/* Frees whatever an init allocated; nothing on a zeroed, never initialised b. */
static inline void ckb_free(struct ckb *b)
{
    if (b->dflags)
        for (unsigned i = 0; i < b->n; i++)
            free(b->dflags[i]);
    if (b->rounds)
        for (unsigned i = 0; i < b->n; i++)
            free(b->rounds[i]);
    free(b->root), free(b->groups), free(b->dis), free(b->dflags), free(b->rounds), free(b->mcs);
}

#endif
