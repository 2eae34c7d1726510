/* src/channel.c - ks_channel: a ring of variable-length messages in one
 * shared-memory segment (docs/ipc.md has the layout, the protocol and why
 * it is correct).
 *
 * Each side has a lock word (senders serialise on send_lock, receivers on
 * recv_lock) and a position: tail (bytes ever published) belongs to the
 * send side, head (bytes ever consumed) to the receive side.  Between one
 * sender and one receiver the ring is the classic single-producer
 * single-consumer ring: the sender writes a record past tail and publishes
 * it with one store of tail; the receiver copies it out and gives the space
 * back with one store of head.  A lock word holds its holder's *slot token*
 * (peer slot index + the slot's generation), so a holder that died is seen
 * as dead (its slot was marked by the kernel through the keeper's robust
 * list, src/keeper.c) and its lock is taken over: nothing it had not
 * published (a record past tail, a message before head) was visible, so
 * there is nothing to repair.
 *
 * Sleeping: a receiver that finds the ring empty (after a spin) counts
 * itself in recv_sleepers and sleeps on recv_ev with futex_waitv, together
 * with the robust words of the live senders and the membership event; a
 * sender that published while recv_sleepers was non-zero bumps recv_ev and
 * wakes.  The counter and tail form the store-buffering pair (docs/README.md's
 * primer): each side stores its own (tail; the sleeper count) then loads the
 * other's, both seq_cst, so at least one sees the other.  Senders waiting
 * for space mirror it with send_sleepers / send_ev / head.
 *
 * Every position and length read from the segment is checked against the
 * geometry the handle validated at open (kept in private memory) before it
 * is used: a scribbled segment gives EBADMSG, never an access outside the
 * mapping (which has a PROT_NONE page on each side, so that a mistake here
 * would fault rather than read a neighbour).
 */
#include "internal.h"

#include <ksync/channel.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CH_MAGIC 0x314e414843534b00ull /* "\0KSCHAN1" little-endian */
#define CH_VERSION 1u
#define CH_HDR 4096u
#define CH_SLOTS_OFF 1024u
#define CH_MIN_RING 4096u
#define CH_PAGE 4096u

#define REC_MSG 0x4d534721u /* "!GSM" */
#define REC_PAD 0x44415021u /* "!PAD" */
#define REC_HDR 8u

#define TOK_IDX 0xffu
#define TOK_GEN_SHIFT 8
#define TOK_GEN_MASK 0x3fffffu
#define TOK_ANY 0x40000000u     /* a ks_wait_any caller waits for the unlock: wake all */
#define TOK_WAITERS 0x80000000u /* lockers may sleep on it: wake one */
#define TOK_FLAGS (TOK_WAITERS | TOK_ANY)

/* A slot's robust word: the keeper's TID, FUTEX_WAITERS, FUTEX_OWNER_DIED. */
#define LIVE_TID FUTEX_TID_MASK
#define LIVE_REAPING FUTEX_TID_MASK /* a TID no thread has: being reaped */

struct ch_slot {
    struct ks_keeper_slot k; /* word, gen, robust node */
    uint32_t role;           /* KS_CHANNEL_SEND | KS_CHANNEL_RECV, 0 when free */
    uint32_t pid;            /* for people reading the segment */
    char pad[KS_KEEPER_SLOT - 24];
};

struct ch_hdr {
    /* geometry: written once by the creator, magic last */
    uint64_t magic;
    uint32_t version, hdr_size;
    uint64_t ring_size;
    uint32_t max_msg, peers;
    uint64_t total_size;
    /* Each lock on a line of its own, apart from the position it guards:
     * a peer spinning on the position costs the holder one miss (its store
     * of the position), not three (lock, position, unlock). */
    _Alignas(64) uint32_t send_lock;
    /* send side: written by the sender holding send_lock */
    _Alignas(64) uint64_t tail;
    uint32_t recv_ev; /* receivers sleep on it; senders bump it */
    _Alignas(64) uint32_t recv_lock;
    /* receive side */
    _Alignas(64) uint64_t head;
    uint32_t send_ev; /* senders sleep on it; receivers bump it */
    /* read on every operation, written only around sleeps and membership changes */
    _Alignas(64) uint32_t recv_sleepers;
    uint32_t send_sleepers;
    uint32_t members_ev;    /* bumped (and woken) on attach, detach, reap */
    uint32_t alive[2];      /* attachments per role: [0] senders, [1] receivers */
    uint32_t ever[2];       /* 1 once a sender / a receiver has attached */
};

/* The layout is the format (docs/ipc.md): fixed offsets, 64-byte lines on
 * every architecture (an AArch64 peer and an x86-64 peer agree). */
_Static_assert(sizeof(struct ch_slot) == KS_KEEPER_SLOT, "slot is one line");
_Static_assert(offsetof(struct ch_hdr, max_msg) == 24 && offsetof(struct ch_hdr, total_size) == 32, "geometry");
_Static_assert(offsetof(struct ch_hdr, send_lock) == 64 && offsetof(struct ch_hdr, tail) == 128, "send lines");
_Static_assert(offsetof(struct ch_hdr, recv_lock) == 192 && offsetof(struct ch_hdr, head) == 256, "recv lines");
_Static_assert(offsetof(struct ch_hdr, recv_sleepers) == 320 && offsetof(struct ch_hdr, send_sleepers) == 324 &&
                   offsetof(struct ch_hdr, members_ev) == 328 && offsetof(struct ch_hdr, alive) == 332 &&
                   offsetof(struct ch_hdr, ever) == 340 && sizeof(struct ch_hdr) == 384,
               "shared line");
_Static_assert(offsetof(struct ch_hdr, recv_ev) == 136 && offsetof(struct ch_hdr, send_ev) == 264, "events");
_Static_assert(sizeof(struct ch_hdr) <= CH_SLOTS_OFF, "header before the slots");
_Static_assert(CH_SLOTS_OFF + KS_CHANNEL_PEERS * KS_KEEPER_SLOT <= CH_HDR, "slots in the header page");

struct ks_channel {
    struct ch_hdr *h;
    struct ch_slot *slots;
    unsigned char *ring;
    void *map;
    size_t map_len;
    uint64_t cap, mask;
    uint32_t max_msg;
    unsigned role, idx;
    uint32_t token;
    int fd;
    uint64_t gen;         /* ks_process_gen() of the process that opened it */
    uint64_t cached_head; /* a head seen by a sender (under send_lock) */
    uint64_t cached_tail; /* a tail seen by a receiver (under recv_lock) */
    uintptr_t resv_owner; /* pthread_self() of the reserving thread, or 0 */
    uint64_t resv_pos;    /* the record's position (after any pad) */
    uint32_t resv_len;
    uintptr_t peek_owner; /* pthread_self() of the peeking thread, or 0 */
    uint64_t peek_pos;
    uint32_t peek_len;
};

static inline uint64_t rec_size(uint64_t len)
{
    return REC_HDR + ((len + 7) & ~(uint64_t)7);
}

static inline uintptr_t self_id(void)
{
    return (uintptr_t)pthread_self();
}

/* ---- membership ---- */

static inline int word_alive(uint32_t w)
{
    return (w & LIVE_TID) && (w & LIVE_TID) != LIVE_REAPING && !(w & FUTEX_OWNER_DIED);
}

/* alive[] can be left too high by a peer killed between its count and its
 * role (inside attach or detach): after each departure, lower each count to
 * the live slots that show the role.  A count too low is harmless (a zero
 * is confirmed by the slots); an attach in progress may be missed here and
 * is counted low, never high. */
static void recount_alive(ks_channel_t *ch)
{
    uint32_t n[2] = {0, 0};
    for (unsigned i = 0; i < KS_CHANNEL_PEERS; i++) {
        struct ch_slot *s = &ch->slots[i];
        /* relaxed: counts, ordered by nothing (a hint) */
        uint32_t w = __atomic_load_n(&s->k.word, __ATOMIC_RELAXED);
        uint32_t r = __atomic_load_n(&s->role, __ATOMIC_RELAXED);
        if (word_alive(w)) {
            n[0] += !!(r & KS_CHANNEL_SEND);
            n[1] += !!(r & KS_CHANNEL_RECV);
        }
    }
    for (int r = 0; r < 2; r++) {
        uint32_t cur = __atomic_load_n(&ch->h->alive[r], __ATOMIC_RELAXED); /* a hint */
        while (cur > n[r] &&
               !__atomic_compare_exchange_n(&ch->h->alive[r], &cur, n[r], 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
    }
}

static void members_changed(struct ch_hdr *h)
{
    __atomic_fetch_add(&h->members_ev, 1, __ATOMIC_SEQ_CST);
    ks_futex_wake(&h->members_ev, KS_WAKE_ALL, KS_SHARED);
}

static inline int role_index(uint32_t role)
{
    return (role & KS_CHANNEL_SEND) ? 0 : 1;
}

/* A dead peer's slot (its process died; the kernel set OWNER_DIED): give it
 * back, once (the CAS), and tell everyone. */
static void reap(ks_channel_t *ch, unsigned i, uint32_t w)
{
    struct ch_slot *s = &ch->slots[i];
    /* acquire: pairs with nothing we need; the CAS only makes one reaper */
    if (!__atomic_compare_exchange_n(&s->k.word, &w, LIVE_REAPING, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return;
    uint32_t role = __atomic_exchange_n(&s->role, 0, __ATOMIC_RELAXED); /* released below */
    for (int r = 0; r < 2; r++)
        if (role & (r ? KS_CHANNEL_RECV : KS_CHANNEL_SEND))
            __atomic_fetch_sub(&ch->h->alive[r], 1, __ATOMIC_RELAXED); /* a hint, see docs/ipc.md */
    __atomic_store_n(&s->k.gen, __atomic_load_n(&s->k.gen, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    /* release: the generation bump is visible to whoever reads word first
     * (lock_holder_alive) and to the keeper's claim CAS (acquire) */
    __atomic_store_n(&s->k.word, 0, __ATOMIC_RELEASE);
    ks_futex_wake(&s->k.word, KS_WAKE_ALL, KS_SHARED);
    recount_alive(ch);
    members_changed(ch->h);
}

/* Is the holder named by a lock token alive?  The word is read before the
 * generation: a slot is reused only after its generation moved on (reap and
 * ks_keeper_release bump it before their release store of 0, which the next
 * claim's CAS acquires), so a reused slot shows a new generation here. */
static int holder_alive(ks_channel_t *ch, uint32_t tok, uint32_t *word_out)
{
    unsigned i = (tok & TOK_IDX);
    if (i == 0 || i > KS_CHANNEL_PEERS)
        return 0; /* scribbled: nobody */
    struct ch_slot *s = &ch->slots[i - 1];
    uint32_t w = __atomic_load_n(&s->k.word, __ATOMIC_ACQUIRE); /* acquire: see above */
    uint32_t g = __atomic_load_n(&s->k.gen, __ATOMIC_RELAXED);  /* ordered by the acquire above */
    if (w & FUTEX_OWNER_DIED)
        reap(ch, i - 1, w);
    *word_out = w;
    return word_alive(w) && (g & TOK_GEN_MASK) == ((tok >> TOK_GEN_SHIFT) & TOK_GEN_MASK);
}

/* Add the robust words of the live peers with `role` to a futex_waitv set,
 * with FUTEX_WAITERS set so that the kernel wakes a waiter at their death.
 * Reaps the dead ones.  Returns how many live peers it found. */
static unsigned watch_peers(ks_channel_t *ch, uint32_t role, const uint32_t **words, uint32_t *vals,
                            unsigned *n)
{
    unsigned live = 0;
    for (unsigned i = 0; i < KS_CHANNEL_PEERS; i++) {
        struct ch_slot *s = &ch->slots[i];
        uint32_t w = __atomic_load_n(&s->k.word, __ATOMIC_ACQUIRE); /* acquire: the role and the
                                                                     * positions it published */
        if (w & FUTEX_OWNER_DIED) {
            reap(ch, i, w);
            continue;
        }
        /* acquire: pairs with the release exchange of detach (and the release
         * store of attach): a peer seen gone published its positions first */
        if (!word_alive(w) || !(__atomic_load_n(&s->role, __ATOMIC_ACQUIRE) & role))
            continue;
        /* relaxed: a flag for the kernel and the keeper, which read it with
         * their own atomic operations */
        while (!(w & FUTEX_WAITERS) && word_alive(w))
            if (__atomic_compare_exchange_n(&s->k.word, &w, w | FUTEX_WAITERS, 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
                w |= FUTEX_WAITERS;
        if (!word_alive(w)) {
            /* It died (the kernel woke nobody: FUTEX_WAITERS was not set
             * yet) or left while we looked: not counted.  A death is reaped
             * here, which moves members_ev, so the caller's wait returns. */
            if (w & FUTEX_OWNER_DIED)
                reap(ch, i, w);
            continue;
        }
        live++;
        words[*n] = &s->k.word;
        vals[*n] = w;
        (*n)++;
    }
    return live;
}

/* Live peers with `role`, reaping the dead ones met. */
static unsigned count_peers(ks_channel_t *ch, uint32_t role)
{
    const uint32_t *words[KS_CHANNEL_PEERS];
    uint32_t vals[KS_CHANNEL_PEERS];
    unsigned n = 0;
    return watch_peers(ch, role, words, vals, &n);
}

/* Sleep until *word != expect, a membership change, the death of a peer
 * with `role` (or of the slot named by `holder`, a lock token), or the
 * deadline.  0 (look again), ETIMEDOUT, EPIPE (no live peer with `role`
 * though one has attached: only when `role` is set). */
static int ch_sleep(ks_channel_t *ch, const uint32_t *word, uint32_t expect, uint32_t members, uint32_t role,
                    uint32_t holder, int64_t deadline)
{
    const uint32_t *words[2 + KS_CHANNEL_PEERS];
    uint32_t vals[2 + KS_CHANNEL_PEERS];
    unsigned n = 0;
    words[n] = word;
    vals[n++] = expect;
    words[n] = &ch->h->members_ev;
    vals[n++] = members;
    if (role) {
        /* acquire: pairs with the release of the first attach of that role */
        uint32_t ever = __atomic_load_n(&ch->h->ever[role_index(role)], __ATOMIC_ACQUIRE);
        unsigned live = watch_peers(ch, role, words, vals, &n);
        if (ever && !live)
            return EPIPE;
    }
    if (holder) {
        uint32_t w;
        if (!holder_alive(ch, holder, &w))
            return 0; /* the caller takes the lock over */
        struct ch_slot *s = &ch->slots[(holder & TOK_IDX) - 1];
        if (!(w & FUTEX_WAITERS)) {
            /* relaxed: as in watch_peers */
            if (!__atomic_compare_exchange_n(&s->k.word, &w, w | FUTEX_WAITERS, 0, __ATOMIC_RELAXED,
                                             __ATOMIC_RELAXED))
                return 0;
        }
        words[n] = &s->k.word;
        vals[n++] = w | FUTEX_WAITERS;
    }
    /* Look again within KS_PEER_RECHECK_NS (internal.h): every caller
     * depends on its peers, also before the first of them has attached (a
     * peer killed inside attach, after ever[] and before its wake, leaves
     * nothing to watch and nobody woken) */
    int64_t until = deadline;
    int64_t cap = ks_deadline_after(KS_PEER_RECHECK_NS);
    if (cap < until)
        until = cap;
    KS_RACE_POINT();
    int e = ks_futex_waitv(words, vals, NULL, n, until);
    if (e == ETIMEDOUT && until != deadline)
        e = 0; /* the re-check, not the caller's deadline */
    /* The kernel wakes one waiter at a death, and this thread may return for
     * another reason (a message, room, the lock) and not look at its peers
     * again: whoever wakes passes the death on to the others (reap bumps
     * members_ev, which every waiter watches). */
    for (unsigned k = 2; k < n; k++) {
        uint32_t w = __atomic_load_n(words[k], __ATOMIC_RELAXED); /* reap's CAS acquires */
        if (w & FUTEX_OWNER_DIED)
            reap(ch, (unsigned)((const char *)words[k] - (const char *)ch->slots) / KS_KEEPER_SLOT, w);
    }
    if (e == ENOSYS) {
        /* Linux < 5.16: sleep on the main word and look at the peers again
         * every 10 ms (documented in channel.h). */
        int64_t slice = ks_deadline_after(10 * 1000 * 1000);
        e = ks_futex_wait(word, expect, deadline < slice ? deadline : slice, KS_SHARED);
        if (e == ETIMEDOUT && deadline > slice)
            e = 0;
    }
    return e == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* ---- the side locks ---- */

static int side_lock(ks_channel_t *ch, uint32_t *lock, int64_t deadline)
{
    uint32_t v = 0;
    /* acquire: pairs with the release in side_unlock (the last holder's
     * positions and records) */
    if (KS_LIKELY(__atomic_compare_exchange_n(lock, &v, ch->token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)))
        return 0;
    struct ks_spin sp; /* a side lock is a mutex: it learns at the mutex's site */
    if (ks_spin_begin(&sp, KS_SPIN_MUTEX)) {
        ks_spin_clip(&sp, deadline);
        do {
            ks_cpu_relax();
            v = __atomic_load_n(lock, __ATOMIC_RELAXED); /* seeds the CAS */
            if (v == 0 &&
                __atomic_compare_exchange_n(lock, &v, ch->token, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
                ks_spin_won(&sp);
                return 0;
            }
        } while (ks_spin_more(&sp));
        ks_spin_end(&sp);
    }
    for (int slept = 0;; slept = 1) {
        v = __atomic_load_n(lock, __ATOMIC_RELAXED); /* seeds the CAS */
        if (v == 0) {
            /* acquire: as above; WAITERS: others may sleep on it */
            if (__atomic_compare_exchange_n(lock, &v, ch->token | TOK_WAITERS, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED)) {
                if (slept)
                    ks_spin_waited(&sp);
                return 0;
            }
            continue;
        }
        /* A holder with our own token is another thread sharing this handle
         * (the callers refuse a thread that already holds it): wait. */
        uint32_t w;
        if (!holder_alive(ch, v & ~TOK_FLAGS, &w)) {
            /* acquire: the dead holder published nothing past its last
             * release of tail/head, which we read with acquire anyway */
            if (__atomic_compare_exchange_n(lock, &v, ch->token | (v & TOK_FLAGS), 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return 0;
            continue;
        }
        if (!(v & TOK_WAITERS)) {
            /* relaxed: the flag only asks the holder's unlock to wake */
            if (!__atomic_compare_exchange_n(lock, &v, v | TOK_WAITERS, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                continue;
            v |= TOK_WAITERS;
        }
        uint32_t members = __atomic_load_n(&ch->h->members_ev, __ATOMIC_RELAXED); /* a wake source only */
        int e = ch_sleep(ch, lock, v, members, 0, v & ~TOK_FLAGS, deadline);
        if (e == ETIMEDOUT)
            return ETIMEDOUT;
    }
}

static void side_unlock(uint32_t *lock)
{
    /* release: pairs with the acquire of the next holder's CAS */
    uint32_t old = __atomic_exchange_n(lock, 0, __ATOMIC_RELEASE);
    if (old & TOK_ANY)
        ks_futex_wake(lock, KS_WAKE_ALL, KS_SHARED); /* a ks_wait_any caller may take no lock: all */
    else if (old & TOK_WAITERS)
        ks_futex_wake(lock, 1, KS_SHARED);
}

/* ---- argument checks shared by every call ---- */

static int check(ks_channel_t *ch, unsigned role)
{
    if (!ch)
        return EINVAL;
    if (ch->gen != ks_process_gen())
        return EBADF; /* a fork child with its parent's handle */
    if (!(ch->role & role))
        return EPERM;
    return 0;
}

/* ---- sending ---- */

/* One wake per sleep.  A sleeper does not count itself: it stores a
 * record of the event value it will sleep on, (ev << 1) | 1 (sleep_record).
 * A waker that finds a record bumps the event, wakes every sleeper, and
 * then clears the record only if it is still the one it saw: a sleeper
 * that wrote a newer record read the event after the bump (or its wait
 * fails on the bumped value), and its record stays for the next waker.  So
 * the operations after a wake make no system call until someone sleeps
 * again, and a waker stalled before its wake (stopped, preempted) leaves
 * the record for the others instead of taking it with it (an exchange to
 * 0 before the wake once let a second sender's messages sit unannounced).
 * Records compare modulo 2^31 event values. */
static inline uint32_t sleep_record(uint32_t ev)
{
    return (ev << 1) | 1u;
}

static void wake_side(uint32_t *sleepers, uint32_t *ev)
{
    /* seq_cst: the store-buffering pair with the sleeper's record store (the
     * caller's seq_cst store of its position comes first) */
    uint32_t rec = __atomic_load_n(sleepers, __ATOMIC_SEQ_CST);
    if (rec) {
        /* seq_cst: a sleeper whose record we saw read ev before writing it,
         * so its wait sees this change or is woken */
        __atomic_fetch_add(ev, 1, __ATOMIC_SEQ_CST);
        ks_futex_wake(ev, KS_WAKE_ALL, KS_SHARED);
        /* relaxed failure: a newer record stays for the next waker */
        __atomic_compare_exchange_n(sleepers, &rec, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
    }
}

/* Wait, holding send_lock, until `need` bytes past tail are free. */
static int wait_space(ks_channel_t *ch, uint64_t t, uint64_t need, int64_t deadline)
{
    struct ch_hdr *h = ch->h;
    for (;;) {
        /* acquire: pairs with the receiver's release store of head after
         * its copy, so our writes cannot overtake its reads */
        uint64_t hd = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        if (t - hd > ch->cap || (hd & 7))
            return EBADMSG;
        ch->cached_head = hd;
        if (t + need - hd <= ch->cap)
            return 0;
        /* Spin until a quarter of the ring is free (or `need`, if more),
         * looking at head only every 32 pauses: a sender that wakes for
         * each message the receiver frees, and reads head in a tight loop,
         * takes the receiver's line from it at every message. */
        struct ks_spin sp;
        uint64_t want = need > ch->cap / 4 ? need : ch->cap / 4;
        if (ks_spin_begin(&sp, KS_SPIN_CHANNEL)) {
            ks_spin_clip(&sp, deadline);
            uint64_t now = hd;
            do {
                for (int i = 0; i < 32; i++)
                    ks_cpu_relax();
                now = __atomic_load_n(&h->head, __ATOMIC_RELAXED); /* re-read with acquire above */
            } while (t + want - now > ch->cap && t - now <= ch->cap && ks_spin_more(&sp));
            if (now != hd) {
                ks_spin_won(&sp);
                continue;
            }
            ks_spin_end(&sp);
        }
        uint32_t ev = __atomic_load_n(&h->send_ev, __ATOMIC_RELAXED); /* a wake source only */
        uint32_t members = __atomic_load_n(&h->members_ev, __ATOMIC_RELAXED);
        __atomic_store_n(&h->send_sleepers, sleep_record(ev), __ATOMIC_SEQ_CST); /* seq_cst: pairs with wake_side */
        int e = 0;
        if (__atomic_load_n(&h->head, __ATOMIC_SEQ_CST) == hd) /* seq_cst: the other half */
            e = ch_sleep(ch, &h->send_ev, ev, members, KS_CHANNEL_RECV, 0, deadline);
        if (!e && __atomic_load_n(&h->head, __ATOMIC_RELAXED) != hd) /* re-read with acquire above */
            ks_spin_waited(&sp); /* learn how long the partner took (src/spin.c) */
        if (e == EPIPE) {
            /* no receiver left: unless one freed the space on its way out */
            hd = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE); /* acquire: as above */
            if (t - hd <= ch->cap && t + need - hd <= ch->cap)
                continue;
            return EPIPE;
        }
        if (e == ETIMEDOUT) {
            hd = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE); /* acquire: as above */
            if (t - hd <= ch->cap && t + need - hd <= ch->cap)
                continue;
            return ETIMEDOUT;
        }
    }
}

static int reserve_locked(ks_channel_t *ch, size_t len, void **p, int64_t deadline)
{
    struct ch_hdr *h = ch->h;
    /* acquire: pairs with the release store of the last publisher, which
     * may be a holder that died before unlocking */
    uint64_t t = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    if (t & 7)
        return EBADMSG; /* records are 8-aligned: a pad is then 0 or at least 8 bytes */
    uint64_t rec = rec_size(len);
    uint64_t off = t & ch->mask;
    uint64_t pad = off + rec > ch->cap ? ch->cap - off : 0;
    uint64_t need = pad + rec;
    if (t - ch->cached_head > ch->cap || t + need - ch->cached_head > ch->cap) {
        int e = wait_space(ch, t, need, deadline);
        if (e)
            return e;
    }
    if (pad) {
        uint32_t ph[2] = {(uint32_t)(pad - REC_HDR), REC_PAD};
        memcpy(ch->ring + off, ph, sizeof ph);
    }
    ch->resv_pos = t + pad;
    ch->resv_len = (uint32_t)len;
    /* relaxed: read by other threads of this process only to refuse them
     * (EPERM/EDEADLK); ordered for the owner by program order */
    __atomic_store_n(&ch->resv_owner, self_id(), __ATOMIC_RELAXED);
    *p = ch->ring + ((t + pad) & ch->mask) + REC_HDR;
    return 0;
}

static int chan_reserve(ks_channel_t *ch, size_t len, void **p, int64_t deadline)
{
    int e = check(ch, KS_CHANNEL_SEND);
    if (e)
        return e;
    if (deadline < 0 || !p)
        return EINVAL;
    if (len > ch->max_msg)
        return EMSGSIZE;
    if (__atomic_load_n(&ch->resv_owner, __ATOMIC_RELAXED) == self_id()) /* relaxed: see reserve_locked */
        return EDEADLK;
    struct ch_hdr *h = ch->h;
    /* relaxed: alive[] is a hint (a peer killed inside attach or detach can
     * leave it one off), so a zero is confirmed by looking at the slots */
    if (__atomic_load_n(&h->ever[1], __ATOMIC_RELAXED) && !__atomic_load_n(&h->alive[1], __ATOMIC_RELAXED) &&
        !count_peers(ch, KS_CHANNEL_RECV))
        return EPIPE;
    e = side_lock(ch, &h->send_lock, deadline);
    if (e)
        return e;
    e = reserve_locked(ch, len, p, deadline);
    if (e)
        side_unlock(&h->send_lock);
    return e;
}

static void commit_locked(ks_channel_t *ch, size_t len)
{
    struct ch_hdr *h = ch->h;
    uint64_t pos = ch->resv_pos;
    uint32_t rh[2] = {(uint32_t)len, REC_MSG};
    memcpy(ch->ring + (pos & ch->mask), rh, sizeof rh);
    __atomic_store_n(&ch->resv_owner, 0, __ATOMIC_RELAXED); /* relaxed: see reserve_locked */
    /* seq_cst: publishes the record (pairs with the receiver's acquire loads
     * of tail) and is the first half of the store-buffering pair with
     * recv_sleepers (wake_side) */
    __atomic_store_n(&h->tail, pos + rec_size(len), __ATOMIC_SEQ_CST);
    side_unlock(&h->send_lock);
    wake_side(&h->recv_sleepers, &h->recv_ev);
}

int ks_channel_reserve(ks_channel_t *ch, size_t len, void **p, int64_t deadline)
{
    return chan_reserve(ch, len, p, deadline);
}

int ks_channel_commit(ks_channel_t *ch, size_t len)
{
    if (!ch)
        return EINVAL;
    if (ch->gen != ks_process_gen())
        return EBADF;
    if (__atomic_load_n(&ch->resv_owner, __ATOMIC_RELAXED) != self_id()) /* relaxed: see reserve_locked */
        return EPERM;
    if (len > ch->resv_len)
        return EINVAL;
    commit_locked(ch, len);
    return 0;
}

int ks_channel_send(ks_channel_t *ch, const void *buf, size_t len, int64_t deadline)
{
    void *p;
    if (!buf && len)
        return EINVAL;
    int e = chan_reserve(ch, len, &p, deadline);
    if (e)
        return e;
    if (len)
        memcpy(p, buf, len);
    commit_locked(ch, len);
    return 0;
}

/* ---- receiving ---- */

/* Find the oldest message, holding recv_lock: its position and length. */
static int next_locked(ks_channel_t *ch, uint64_t *pos, uint32_t *len, int64_t deadline)
{
    struct ch_hdr *h = ch->h;
    /* acquire: pairs with the release store of head by the last holder,
     * which may have died before unlocking */
    uint64_t hd = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    if (hd & 7)
        return EBADMSG; /* records are 8-aligned: anything else is scribbled */
    uint64_t t = ch->cached_tail;
    for (;;) {
        if (t - hd > ch->cap || t == hd) {
            /* acquire: pairs with the sender's seq_cst store of tail */
            t = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
            if (t - hd > ch->cap || ((t | hd) & 7))
                return EBADMSG; /* records are 8-aligned: anything else is scribbled */
            ch->cached_tail = t;
        }
        if (t == hd) {
            int e = 0;
            struct ks_spin sp;
            if (ks_spin_begin(&sp, KS_SPIN_CHANNEL)) {
                ks_spin_clip(&sp, deadline);
                do
                    ks_cpu_relax();
                while (__atomic_load_n(&h->tail, __ATOMIC_RELAXED) == hd && ks_spin_more(&sp)); /* re-read
                                                                                                  * with acquire */
                if (__atomic_load_n(&h->tail, __ATOMIC_RELAXED) != hd) {
                    ks_spin_won(&sp);
                    continue;
                }
                ks_spin_end(&sp);
            }
            uint32_t ev = __atomic_load_n(&h->recv_ev, __ATOMIC_RELAXED); /* a wake source only */
            uint32_t members = __atomic_load_n(&h->members_ev, __ATOMIC_RELAXED);
            __atomic_store_n(&h->recv_sleepers, sleep_record(ev), __ATOMIC_SEQ_CST); /* seq_cst: pairs with wake_side */
            if (__atomic_load_n(&h->tail, __ATOMIC_SEQ_CST) == hd)      /* seq_cst: the other half */
                e = ch_sleep(ch, &h->recv_ev, ev, members, KS_CHANNEL_SEND, 0, deadline);
            if (!e && __atomic_load_n(&h->tail, __ATOMIC_RELAXED) != hd) /* re-read with acquire above */
                ks_spin_waited(&sp); /* learn how long the partner took (src/spin.c) */
            if (e) {
                /* EPIPE or ETIMEDOUT, unless a message came meanwhile (a
                 * sender publishes before it detaches: the acquire load of
                 * its slot word in watch_peers ordered this load after) */
                t = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE); /* acquire: as above */
                if (t == hd)
                    return e;
                if (t - hd > ch->cap || (t & 7))
                    return EBADMSG;
                ch->cached_tail = t;
            }
            continue;
        }
        uint64_t off = hd & ch->mask;
        uint32_t rh[2];
        memcpy(rh, ch->ring + off, sizeof rh);
        if (rh[1] == REC_PAD) {
            uint64_t rest = ch->cap - off;
            if (rh[0] != rest - REC_HDR || rest > t - hd)
                return EBADMSG;
            hd += rest;
            continue;
        }
        if (rh[1] != REC_MSG || rh[0] > ch->max_msg)
            return EBADMSG;
        uint64_t rec = rec_size(rh[0]);
        if (off + rec > ch->cap || rec > t - hd)
            return EBADMSG;
        *pos = hd;
        *len = rh[0];
        return 0;
    }
}

static void consume_locked(ks_channel_t *ch, uint64_t pos, uint32_t len)
{
    struct ch_hdr *h = ch->h;
    /* seq_cst: gives the space back after our reads of the record (pairs
     * with the sender's acquire load of head in wait_space) and is the
     * first half of the store-buffering pair with send_sleepers */
    __atomic_store_n(&h->head, pos + rec_size(len), __ATOMIC_SEQ_CST);
    side_unlock(&h->recv_lock);
    wake_side(&h->send_sleepers, &h->send_ev);
}

static int recv_begin(ks_channel_t *ch, int64_t deadline, uint64_t *pos, uint32_t *len)
{
    int e = check(ch, KS_CHANNEL_RECV);
    if (e)
        return e;
    if (deadline < 0)
        return EINVAL;
    if (__atomic_load_n(&ch->peek_owner, __ATOMIC_RELAXED) == self_id()) /* relaxed: see peek */
        return EDEADLK;
    e = side_lock(ch, &ch->h->recv_lock, deadline);
    if (e)
        return e;
    e = next_locked(ch, pos, len, deadline);
    if (e)
        side_unlock(&ch->h->recv_lock);
    return e;
}

int ks_channel_recv(ks_channel_t *ch, void *buf, size_t cap, size_t *len, int64_t deadline)
{
    uint64_t pos;
    uint32_t n;
    if (!len || (!buf && cap))
        return EINVAL;
    int e = recv_begin(ch, deadline, &pos, &n);
    if (e)
        return e;
    *len = n;
    if (n > cap) {
        side_unlock(&ch->h->recv_lock);
        return EMSGSIZE;
    }
    if (n)
        memcpy(buf, ch->ring + (pos & ch->mask) + REC_HDR, n);
    consume_locked(ch, pos, n);
    return 0;
}

int ks_channel_peek(ks_channel_t *ch, const void **p, size_t *len, int64_t deadline)
{
    uint64_t pos;
    uint32_t n;
    if (!p || !len)
        return EINVAL;
    int e = recv_begin(ch, deadline, &pos, &n);
    if (e)
        return e;
    ch->peek_pos = pos;
    ch->peek_len = n;
    /* relaxed: read by other threads of this process only to refuse them */
    __atomic_store_n(&ch->peek_owner, self_id(), __ATOMIC_RELAXED);
    *p = ch->ring + (pos & ch->mask) + REC_HDR;
    *len = n;
    return 0;
}

int ks_channel_release(ks_channel_t *ch)
{
    if (!ch)
        return EINVAL;
    if (ch->gen != ks_process_gen())
        return EBADF;
    if (__atomic_load_n(&ch->peek_owner, __ATOMIC_RELAXED) != self_id()) /* relaxed: see peek */
        return EPERM;
    __atomic_store_n(&ch->peek_owner, 0, __ATOMIC_RELAXED);
    consume_locked(ch, ch->peek_pos, ch->peek_len);
    return 0;
}

int ks_channel_cancel(ks_channel_t *ch)
{
    if (!ch)
        return EINVAL;
    if (ch->gen != ks_process_gen())
        return EBADF;
    uintptr_t me = self_id();
    if (__atomic_load_n(&ch->resv_owner, __ATOMIC_RELAXED) == me) { /* relaxed: see reserve_locked */
        __atomic_store_n(&ch->resv_owner, 0, __ATOMIC_RELAXED);
        side_unlock(&ch->h->send_lock);
        return 0;
    }
    if (__atomic_load_n(&ch->peek_owner, __ATOMIC_RELAXED) == me) { /* relaxed: see peek */
        __atomic_store_n(&ch->peek_owner, 0, __ATOMIC_RELAXED);
        side_unlock(&ch->h->recv_lock);
        /* the message stays: a receiver asleep on the lock was woken */
        return 0;
    }
    return EPERM;
}

/* ---- segments ---- */

static int map_segment(int fd, size_t len, void **map, size_t *map_len, unsigned char **base)
{
    /* PROT_NONE guard pages around the segment */
    size_t total = len + 2 * CH_PAGE;
    void *m = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return errno;
    void *s = mmap((char *)m + CH_PAGE, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (s == MAP_FAILED) {
        int e = errno;
        munmap(m, total);
        return e;
    }
    *map = m;
    *map_len = total;
    *base = s;
    return 0;
}

static int attach(ks_channel_t *ch, unsigned role)
{
    /* Slots of processes that died while nobody waited are still marked:
     * give them back first, or a channel whose peers crash fills up. */
    for (unsigned k = 0; k < KS_CHANNEL_PEERS; k++) {
        uint32_t w = __atomic_load_n(&ch->slots[k].k.word, __ATOMIC_RELAXED); /* reap's CAS acquires */
        if (w & FUTEX_OWNER_DIED)
            reap(ch, k, w);
    }
    int i = ks_keeper_claim(ch->slots, KS_CHANNEL_PEERS);
    if (i < 0)
        return -i;
    struct ch_slot *s = &ch->slots[i];
    ch->idx = (unsigned)i;
    ch->role = role;
    /* relaxed: our own slot; its generation last changed before the 0 our
     * keeper's claim acquired */
    uint32_t g = __atomic_load_n(&s->k.gen, __ATOMIC_RELAXED);
    ch->token = ((uint32_t)i + 1) | ((g & TOK_GEN_MASK) << TOK_GEN_SHIFT);
    __atomic_store_n(&s->pid, (uint32_t)getpid(), __ATOMIC_RELAXED); /* informative */
    /* Counted before the role is published: a reaper that sees the role
     * (and so decrements) finds the increment made. */
    for (int r = 0; r < 2; r++)
        if (role & (r ? KS_CHANNEL_RECV : KS_CHANNEL_SEND))
            __atomic_fetch_add(&ch->h->alive[r], 1, __ATOMIC_SEQ_CST);
    /* release: pairs with the acquire loads of the slot word and of ever[]
     * in watch_peers/ch_sleep (a peer that sees us sees our role) */
    __atomic_store_n(&s->role, role, __ATOMIC_RELEASE);
    for (int r = 0; r < 2; r++)
        if (role & (r ? KS_CHANNEL_RECV : KS_CHANNEL_SEND))
            __atomic_store_n(&ch->h->ever[r], 1, __ATOMIC_RELEASE); /* release: as above */
    members_changed(ch->h);
    return 0;
}

static void detach(ks_channel_t *ch)
{
    struct ch_slot *s = &ch->slots[ch->idx];
    /* release: a peer that reads role 0 (watch_peers, acquire) and so counts
     * us gone also sees our last store of tail or head */
    uint32_t role = __atomic_exchange_n(&s->role, 0, __ATOMIC_RELEASE);
    for (int r = 0; r < 2; r++)
        if (role & (r ? KS_CHANNEL_RECV : KS_CHANNEL_SEND))
            __atomic_fetch_sub(&ch->h->alive[r], 1, __ATOMIC_RELAXED); /* a hint */
    ks_keeper_release(s);
    recount_alive(ch);
    members_changed(ch->h);
}

static int valid_role(unsigned role)
{
    return role && !(role & ~(KS_CHANNEL_SEND | KS_CHANNEL_RECV));
}

static int open_mapped(int fd, unsigned role, int creating, size_t ring, size_t max_msg, ks_channel_t **out)
{
    struct stat st;
    if (fstat(fd, &st))
        return errno;
    if (!creating) {
        if (st.st_size == 0)
            return EAGAIN; /* created, not yet sized */
        if (st.st_size < (off_t)CH_HDR)
            return EBADMSG;
        /* the geometry, read from the file itself (not trusted) */
        struct ch_hdr g;
        if (pread(fd, &g, sizeof g, 0) != (ssize_t)sizeof g)
            return EBADMSG;
        if (g.magic == 0)
            return EAGAIN; /* sized, not yet initialised */
        if (g.magic != CH_MAGIC)
            return EBADMSG;
        if (g.version != CH_VERSION)
            return EPROTO;
        if (g.hdr_size != CH_HDR || g.peers != KS_CHANNEL_PEERS || g.ring_size < CH_MIN_RING ||
            g.ring_size > KS_CHANNEL_MAX_CAPACITY || (g.ring_size & (g.ring_size - 1)) || g.max_msg == 0 ||
            g.max_msg > KS_CHANNEL_MAX_MSG || 2 * rec_size(g.max_msg) > g.ring_size ||
            g.total_size != CH_HDR + g.ring_size || (uint64_t)st.st_size != g.total_size)
            return EBADMSG;
        ring = g.ring_size;
        max_msg = g.max_msg;
    }
    ks_channel_t *ch = calloc(1, sizeof *ch);
    if (!ch)
        return ENOMEM;
    unsigned char *base = NULL;
    int e = map_segment(fd, CH_HDR + ring, &ch->map, &ch->map_len, &base);
    if (e) {
        free(ch);
        return e;
    }
    ch->h = (struct ch_hdr *)(void *)base;
    ch->slots = (struct ch_slot *)(void *)(base + CH_SLOTS_OFF);
    ch->ring = base + CH_HDR;
    ch->cap = ring;
    ch->mask = ring - 1;
    ch->max_msg = (uint32_t)max_msg;
    ch->fd = fd;
    ch->gen = ks_process_gen();
    if (creating) {
        struct ch_hdr *h = ch->h;
        h->version = CH_VERSION;
        h->hdr_size = CH_HDR;
        h->ring_size = ring;
        h->max_msg = (uint32_t)max_msg;
        h->peers = KS_CHANNEL_PEERS;
        h->total_size = CH_HDR + ring;
        /* release: openers read the file with pread after seeing it, and
         * map it; the fields above come first */
        __atomic_store_n(&h->magic, CH_MAGIC, __ATOMIC_RELEASE);
    }
    e = attach(ch, role);
    if (e) {
        munmap(ch->map, ch->map_len);
        free(ch);
        return e;
    }
    *out = ch;
    return 0;
}

static int channel_create(const char *name, size_t capacity, size_t max_msg, unsigned role, ks_channel_t **out)
{
    if (!out || !valid_role(role) || max_msg == 0 || max_msg > KS_CHANNEL_MAX_MSG || capacity == 0 ||
        capacity > KS_CHANNEL_MAX_CAPACITY)
        return EINVAL;
    size_t ring = CH_MIN_RING;
    while (ring < capacity)
        ring <<= 1;
    if (2 * rec_size(max_msg) > ring)
        return EINVAL;
    int fd = name ? shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)
                  : memfd_create("ksync-channel", MFD_CLOEXEC);
    if (fd < 0)
        return errno;
    int e = ftruncate(fd, (off_t)(CH_HDR + ring)) ? errno : 0;
    if (!e)
        e = open_mapped(fd, role, 1, ring, max_msg, out);
    if (e) {
        if (name)
            shm_unlink(name);
        close(fd);
    }
    return e;
}

static int channel_open_fd(int fd, unsigned role, ks_channel_t **out)
{
    if (!out || !valid_role(role) || fd < 0)
        return EINVAL;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (nfd < 0)
        return errno;
    int e = open_mapped(nfd, role, 0, 0, 0, out);
    if (e)
        close(nfd);
    return e;
}

static int channel_open(const char *name, unsigned role, ks_channel_t **out)
{
    if (!name || !out || !valid_role(role))
        return EINVAL;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int e = open_mapped(fd, role, 0, 0, 0, out);
    if (e)
        close(fd);
    return e;
}

/* Not cancellation points (docs/conventions.md): shm_open and close are,
 * and a cancel acting in one left a descriptor or the handle behind. */
int ks_channel_create(const char *name, size_t capacity, size_t max_msg, unsigned role, ks_channel_t **out)
{
    const int c = ks_nocancel_begin();
    const int e = channel_create(name, capacity, max_msg, role, out);
    ks_nocancel_end(c);
    return e;
}

int ks_channel_open_fd(int fd, unsigned role, ks_channel_t **out)
{
    const int c = ks_nocancel_begin();
    const int e = channel_open_fd(fd, role, out);
    ks_nocancel_end(c);
    return e;
}

int ks_channel_open(const char *name, unsigned role, ks_channel_t **out)
{
    const int c = ks_nocancel_begin();
    const int e = channel_open(name, role, out);
    ks_nocancel_end(c);
    return e;
}

int ks_channel_unlink(const char *name)
{
    if (!name)
        return EINVAL;
    return shm_unlink(name) ? errno : 0;
}

static int channel_close(ks_channel_t *ch)
{
    if (!ch)
        return EINVAL;
    if (ch->gen == ks_process_gen()) {
        /* relaxed: no thread may be inside a call on ch (the contract) */
        if (__atomic_load_n(&ch->resv_owner, __ATOMIC_RELAXED)) {
            __atomic_store_n(&ch->resv_owner, 0, __ATOMIC_RELAXED);
            side_unlock(&ch->h->send_lock);
        }
        if (__atomic_load_n(&ch->peek_owner, __ATOMIC_RELAXED)) {
            __atomic_store_n(&ch->peek_owner, 0, __ATOMIC_RELAXED);
            side_unlock(&ch->h->recv_lock);
        }
        detach(ch);
    }
    munmap(ch->map, ch->map_len);
    close(ch->fd);
    free(ch);
    return 0;
}

int ks_channel_close(ks_channel_t *ch)
{
    const int c = ks_nocancel_begin();
    const int e = channel_close(ch);
    ks_nocancel_end(c);
    return e;
}

int ks_channel_fd(const ks_channel_t *ch)
{
    return ch ? ch->fd : -1;
}

size_t ks_channel_max_msg(const ks_channel_t *ch)
{
    return ch ? ch->max_msg : 0;
}

/* ---- ks_wait_any's arm (src/internal.h) ----
 * Readable: a message is there, or no sender is left (receive would say
 * EPIPE) or the positions are garbage (it would say EBADMSG): a receive
 * would not block.  Writable: a message of the maximum size fits, or no
 * receiver is left.  Either only while no other thread holds that side's
 * lock through a peek or a reservation (the review found the caller's
 * try-and-loop spinning at full CPU behind a peek held for a second).
 * Level-triggered, like poll(2): another receiver (or sender) may take what
 * was seen.  Armed as a sleeping receiver (sender)
 * is: counted in the sleepers, watching the event, membership, and the
 * peers' robust words; a sleeper's count never needs undoing (the next
 * wake takes it). */
static int any_ready(ks_channel_t *ch, int send)
{
    struct ch_hdr *h = ch->h;
    /* seq_cst: pairs with the seq_cst stores of tail and head (the record or
     * the room they publish), and is the second half of the store-buffering
     * pair with wake_side after any_arm's record store */
    uint64_t t = __atomic_load_n(&h->tail, __ATOMIC_SEQ_CST);
    uint64_t hd = __atomic_load_n(&h->head, __ATOMIC_SEQ_CST);
    if (t - hd > ch->cap || ((t | hd) & 7))
        return 1; /* the call will say EBADMSG */
    if (!send)
        return t != hd;
    uint64_t rec = rec_size(ch->max_msg), off = t & ch->mask;
    uint64_t need = (off + rec > ch->cap ? ch->cap - off : 0) + rec;
    return t + need - hd <= ch->cap;
}

/* The side's lock, held by a live peer (a peek or a reservation in progress,
 * which the user may hold for long): the side is not ready until it lets
 * go.  Marks the word TOK_ANY, so the unlock wakes every waiter (a wake of
 * one could land here and be lost to a locker), and watches it.  1 when
 * held (watched), 0 when free or its holder is dead. */
static int any_lock_held(ks_channel_t *ch, uint32_t *lock, struct ks_waitset *ws)
{
    /* a wake source only: membership changes (a reaped holder) end the wait */
    uint32_t members = __atomic_load_n(&ch->h->members_ev, __ATOMIC_RELAXED);
    uint32_t v = __atomic_load_n(lock, __ATOMIC_RELAXED); /* seeds the CAS */
    uint32_t w;
    for (;;) {
        if (!v || !holder_alive(ch, v & ~TOK_FLAGS, &w))
            return 0;
        if (v & TOK_ANY)
            break;
        /* relaxed: the flag only asks the holder's unlock to wake all */
        if (__atomic_compare_exchange_n(lock, &v, v | TOK_ANY, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            v |= TOK_ANY;
            break;
        }
    }
    /* the holder's death must wake us too (as ch_sleep watches a holder) */
    struct ch_slot *s = &ch->slots[(v & TOK_IDX) - 1];
    if (!(w & FUTEX_WAITERS)) {
        /* relaxed: as in watch_peers */
        if (!__atomic_compare_exchange_n(&s->k.word, &w, w | FUTEX_WAITERS, 0, __ATOMIC_RELAXED,
                                         __ATOMIC_RELAXED))
            return 0; /* changed: look again (the caller arms once more) */
    }
    ks_waitset_add(ws, lock, v, KS_SHARED);
    ks_waitset_add(ws, &ch->h->members_ev, members, KS_SHARED);
    ks_waitset_add(ws, &s->k.word, w | FUTEX_WAITERS, KS_SHARED);
    return 1;
}

int ks_channel_any_arm(ks_channel_t *ch, int send, struct ks_waitset *ws)
{
    int e = check(ch, send ? KS_CHANNEL_SEND : KS_CHANNEL_RECV);
    if (e)
        return -e;
    /* relaxed: only this thread's own reservation or peek matters here; the
     * call would answer EDEADLK, which does not block */
    uintptr_t mine = send ? __atomic_load_n(&ch->resv_owner, __ATOMIC_RELAXED)
                          : __atomic_load_n(&ch->peek_owner, __ATOMIC_RELAXED);
    if (mine == self_id())
        return 1;
    struct ch_hdr *h = ch->h;
    if (any_lock_held(ch, send ? &h->send_lock : &h->recv_lock, ws))
        return 0;
    if (any_ready(ch, send))
        return 1;
    uint32_t *ev = send ? &h->send_ev : &h->recv_ev;
    uint32_t *sleepers = send ? &h->send_sleepers : &h->recv_sleepers;
    uint32_t evv = __atomic_load_n(ev, __ATOMIC_RELAXED); /* a wake source only */
    uint32_t members = __atomic_load_n(&h->members_ev, __ATOMIC_RELAXED);
    __atomic_store_n(sleepers, sleep_record(evv), __ATOMIC_SEQ_CST); /* seq_cst: pairs with wake_side */
    if (any_ready(ch, send)) /* its seq_cst loads: the other half of the pair */
        return 1;
    const uint32_t *words[KS_CHANNEL_PEERS];
    uint32_t vals[KS_CHANNEL_PEERS];
    unsigned n = 0;
    uint32_t role = send ? KS_CHANNEL_RECV : KS_CHANNEL_SEND;
    /* acquire: pairs with the release of the first attach of that role */
    uint32_t ever = __atomic_load_n(&h->ever[role_index(role)], __ATOMIC_ACQUIRE);
    unsigned live = watch_peers(ch, role, words, vals, &n);
    if (ever && !live)
        return 1; /* the call will say EPIPE (after the last messages, for a receiver) */
    ks_waitset_add(ws, ev, evv, KS_SHARED);
    ks_waitset_add(ws, &h->members_ev, members, KS_SHARED);
    for (unsigned k = 0; k < n; k++)
        ks_waitset_add(ws, words[k], vals[k], KS_SHARED);
    return 0;
}

/* After a ks_wait_any sleep: the kernel wakes one waiter at a death, and the
 * caller may return for another object without arming this one again, so
 * it passes any death on here (as ch_sleep does). */
void ks_channel_any_after(ks_channel_t *ch)
{
    for (unsigned k = 0; k < KS_CHANNEL_PEERS; k++) {
        uint32_t w = __atomic_load_n(&ch->slots[k].k.word, __ATOMIC_RELAXED); /* reap's CAS acquires */
        if (w & FUTEX_OWNER_DIED)
            reap(ch, k, w);
    }
}
