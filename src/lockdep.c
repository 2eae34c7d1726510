/* src/lockdep.c - lock-order checking (docs/lockdep.md).
 *
 * The idea is the Linux kernel's lockdep (Documentation/locking/
 * lockdep-design.rst): locks are grouped in classes, and each time a thread
 * that holds a lock of class A takes one of class B, the order A -> B is
 * recorded in a graph of classes.  A deadlock needs a cycle of such orders
 * among threads that run at the same time; the graph has the cycle as soon
 * as each of its orders has been taken once, by any thread, at any time.
 * So the checker reports the acquisition that would close a cycle (B held,
 * A wanted, and A ... -> B already recorded) before the thread waits, in
 * runs that never deadlock.
 *
 * Data:
 *  - the lock registry (src/lockreg.h): a lock's record caches its class
 *    and carries the generation of its identity (init, destroy, name, nest);
 *  - classes: found by key (name, else init site, else the lock itself and
 *    its generation; kind; subclass) in an open-addressing table; each
 *    holds its outgoing orders (edges);
 *  - two maps from a 64-bit key to an edge, read without a lock (a key is
 *    published with release after its edge is complete): `orders` (class
 *    pairs, and the once-per-site notes of misuse reports) and `pairs`
 *    (two locks by address and generation: two locks of one class, and
 *    the two locks of a ks_mutex_lock2).  An order already known costs one
 *    probe per held lock and no shared write;
 *  - per thread, the list of held locks (grown on demand: no limit).
 * New edges, new classes and the cycle search take `graph`, one mutex.
 *
 * Same class: locks made at one init site (an array of accounts) share a
 * class, and a class graph cannot tell "x then y" from "y then x" among
 * them.  Two locks of one class are checked as a pair of locks: taking y
 * while holding x records (x, y) and reports if (y, x) was recorded.  The
 * two locks of a ks_mutex_lock2 (address order: the library's own cure for
 * the inversion) are checked the same way whatever their classes: the
 * header tells the checker (ks_lockdep_ordered_) and no class order is
 * recorded for them, only the pair; a plain acquisition in the opposite
 * order of a recorded pair is reported.
 *
 * An inverted edge is recorded in its map (it is reported once) but not in
 * the graph, so the graph stays acyclic and every report names a cycle
 * that ends in the edge being added.
 *
 * Re-entry: the thread that is inside this file (`busy`) is not checked
 * again, whatever it calls (malloc, backtrace, the handler, `graph` itself:
 * a ks_mutex whose own slow path calls in here).
 */
#include "lockreg.h"

#include <ksync/cond.h>
#include <ksync/lockdep.h>
#include <ksync/mutex.h>
#include <ksync/rmutex.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <unistd.h>

#define FRAMES 16
#define CLASS_BITS 14 /* 16384 slots, half of them usable */
#define CLASS_SIZE (1u << CLASS_BITS)
#define MAP_BITS 17 /* 131072 slots per map, half of them usable */
#define MAP_SIZE (1u << MAP_BITS)

KS_HIDDEN int ks_ld_on_;
static int abort_after;        /* relaxed: KS_LOCKDEP_ABORT */
static uint32_t epoch;         /* relaxed: moved at each switch from off to on (see enter) */
static uint64_t counts[KS_LOCKDEP_EVENTS]; /* relaxed: statistics */
static int out_fd = -1;        /* KSYNC_LOCKDEP_FILE's descriptor, or -1: stderr (set under graph) */
static int full_said;          /* relaxed: a table-full note was printed */
static int ordered_pairs;      /* relaxed: a lock2 pair of two classes was recorded (a switch) */

struct handler {
    ks_lockdep_handler_fn *fn;
    void *arg;
    struct handler *prev; /* the ones before: never freed (a report may be using one), kept reachable */
};
static struct handler *handler; /* acquire/release: a pair published whole, never freed */

struct edge {
    struct ks_ld_class *from, *to;
    const void *from_lock, *to_lock;   /* the locks of the first sighting */
    const void *from_site, *to_site;   /* where each was taken then */
    int tid;
    int ordered;                       /* taken by ks_mutex_lock2 (address order) */
    struct edge *next_out;             /* under graph: the next edge of `from`'s list */
    char thread[16];
    int nframes;
    void *frames[FRAMES];              /* the stack of the acquisition of `to` */
};

struct ks_ld_class {
    uint32_t id; /* 1.. */
    const char *name;
    const void *site;        /* the init site, or NULL for a lock of its own */
    const void *lock;        /* a lock never initialised: the class is the lock ... */
    uint32_t lgen;           /* ... in this generation of its identity */
    const void *first;       /* ... and where it was first taken, for reports */
    unsigned kind, sub;
    /* under `graph` */
    struct edge *out;       /* its orders, a list through next_out (no allocation under graph) */
    uint32_t seen;          /* the search that last visited it */
    struct edge *via;       /* the edge that search came in by */
};

static ks_mutex_t graph = {0u, 0u};
static uint64_t graph_image;         /* relaxed: the process image `graph` belongs to (see image_check) */
static struct ks_ld_class **ctab;    /* acquire/release: class table, published once */
static uint32_t nclasses;            /* under graph */
static uint32_t search_mark;         /* under graph */

struct slot {
    uint64_t key;   /* acquire/release: published after e */
    struct edge *e; /* relaxed: ordered by the key; dereferenced under graph only */
};
struct map {
    struct slot *slots; /* acquire/release: published once */
    uint32_t n;         /* under graph */
    int full;           /* relaxed: a switch: no new key */
    const char *what;
};
static struct map orders = {.what = "order"}, pairs = {.what = "lock pair"};

/* ---- a thread's held locks ---- */

#define HELD_TRY 1

struct held {
    const void *lock;
    struct ks_ld_class *cls;
    const void *site;
    uint32_t gen;   /* the lock's identity generation when it was taken */
    unsigned flags;
};

struct watched;

static KS_TLS struct {
    struct held *h;
    unsigned n, cap;
    struct watched *w;  /* this thread's entry for the watchdog, or NULL: then h, n, cap change under w->spin */
    int busy;
    int armed;          /* the exit hook */
    int exit_again;     /* the exit hook has run once with locks held */
    uint32_t epoch;     /* the checking epoch the list belongs to */
    uint64_t image;     /* the process image the list belongs to (ks_process_gen) */
    const void *ordered_after, *ordered_next; /* ks_lockdep_ordered_: next follows after in a lock2 */
} me;


static int tid(void)
{
    return (int)(ks_thread_id() >> 32);
}

static uint64_t holder_word(void)
{
    return (uint64_t)__atomic_load_n(&epoch, __ATOMIC_RELAXED) << 32 | (uint32_t)tid(); /* a switch's count */
}

/* The thread seen taking the lock of record r in this epoch, or 0. */
static int holder_of_rec(struct ks_lockrec *r)
{
    uint64_t hw = r ? __atomic_load_n(&r->ld_holder, __ATOMIC_RELAXED) : 0; /* informative */
    return hw >> 32 == __atomic_load_n(&epoch, __ATOMIC_RELAXED) ? (int)(uint32_t)hw : 0;
}

/* ---- the maps ---- */

static struct edge *map_find(struct map *m, uint64_t key)
{
    /* acquire: pairs with the release in make_tables (the zeroed map) */
    struct slot *t = __atomic_load_n(&m->slots, __ATOMIC_ACQUIRE);
    if (!t)
        return NULL;
    for (uint32_t n = 0, i = (uint32_t)ks_mix64(key) & (MAP_SIZE - 1); n < MAP_SIZE; n++, i = (i + 1) & (MAP_SIZE - 1)) {
        /* acquire: pairs with the release in map_put (the edge is complete) */
        uint64_t k = __atomic_load_n(&t[i].key, __ATOMIC_ACQUIRE);
        if (k == key)
            return __atomic_load_n(&t[i].e, __ATOMIC_RELAXED); /* ordered by the key's acquire */
        if (!k)
            return NULL;
    }
    return NULL;
}

static void say_full(const char *what)
{
    if (!__atomic_exchange_n(&full_said, 1, __ATOMIC_RELAXED)) { /* relaxed: says once, orders nothing */
        char line[160];
        int n = snprintf(line, sizeof line, "ksync lockdep: the %s table is full: new ones are no longer checked\n",
                         what);
        const int c = ks_nocancel_begin(); /* inside a lock call, maybe under graph */
        if (n > 0 && write(2, line, (size_t)n) < 0) {
        }
        ks_nocancel_end(c);
    }
}

/* Under graph: room for one more key?  (Half full at most, to keep probes
 * short; a full map stops recording for good, as the kernel's lockdep turns
 * itself off when it runs out of entries.) */
static int map_room(struct map *m)
{
    if (!m->slots || m->n + 1 >= MAP_SIZE / 2) { /* under graph: plain reads */
        if (m->slots)
            __atomic_store_n(&m->full, 1, __ATOMIC_RELAXED); /* a switch: readers only skip work */
        say_full(m->what);
        return 0;
    }
    return 1;
}

/* Under graph, with room checked. */
static void map_put(struct map *m, uint64_t key, struct edge *e)
{
    for (uint32_t i = (uint32_t)ks_mix64(key) & (MAP_SIZE - 1);; i = (i + 1) & (MAP_SIZE - 1))
        if (!__atomic_load_n(&m->slots[i].key, __ATOMIC_RELAXED)) { /* only writers under graph store keys */
            __atomic_store_n(&m->slots[i].e, e, __ATOMIC_RELAXED); /* published by the key's release */
            __atomic_store_n(&m->slots[i].key, key, __ATOMIC_RELEASE); /* pairs with map_find */
            m->n++;
            return;
        }
}

/* the watchdog's list (below): reset with `graph` in a new process image */
struct watched;
static ks_mutex_t watch_lock = {0u, 0u};
static struct watched *watch_list; /* under watch_lock */

/* ---- taking `graph` ---- */

/* `graph` in a process image other than the one it was last taken in (a
 * child made by _Fork() or a raw clone, which run no fork handler) may be
 * held by a thread that does not exist here: the first thread of the image
 * that comes to take it makes it free.  No thread of this image can hold it
 * then: every taker passes here first. */
#define IMAGE_RESETTING UINT64_MAX /* no generation is ever that */

static void image_check(void)
{
    uint64_t g = ks_process_gen();
    for (;;) {
        /* acquire: pairs with the release below (the reset is done) */
        uint64_t was = __atomic_load_n(&graph_image, __ATOMIC_ACQUIRE);
        if (KS_LIKELY(was == g))
            return;
        if (was == IMAGE_RESETTING) { /* another thread of this image resets: microseconds */
            sched_yield();
            continue;
        }
        /* The CAS elects one thread; the others wait above until it has
         * published the image, so none of them can hold either lock when
         * it frees them.  acquire: as the load above. */
        if (!__atomic_compare_exchange_n(&graph_image, &was, IMAGE_RESETTING, 0, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED))
            continue;
        if (was) {
            /* the watchdog's list holds the parent's threads, whose state
             * is not in this image: dropped (leaked: it may be half-changed);
             * relaxed: published by the release store of the image */
            __atomic_store_n(&watch_list, NULL, __ATOMIC_RELAXED);
            __atomic_store_n(&watch_lock.state, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&graph.state, 0, __ATOMIC_RELAXED);
        }
        __atomic_store_n(&graph_image, g, __ATOMIC_RELEASE); /* pairs with the acquire loads above */
        return;
    }
}

static void graph_lock(void)
{
    image_check();
    ks_mutex_lock(&graph);
}

static void graph_unlock(void)
{
    ks_mutex_unlock(&graph);
}

/* ---- classes ---- */

static uint64_t class_hash(const char *name, const void *site, uint32_t lgen, unsigned kind, unsigned sub)
{
    uint64_t h = 1469598103934665603ull;
    if (name)
        for (const char *p = name; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ull;
    else
        h ^= ks_mix64((uint64_t)(uintptr_t)site ^ ((uint64_t)lgen << 48));
    return ks_mix64(h ^ ((uint64_t)kind << 40) ^ ((uint64_t)sub << 48));
}

static int class_is(const struct ks_ld_class *c, const char *name, const void *site, const void *lock,
                    uint32_t lgen, unsigned kind, unsigned sub)
{
    if (c->kind != kind || c->sub != sub)
        return 0;
    if (name || c->name)
        return name && c->name && strcmp(name, c->name) == 0;
    return c->site == site && c->lock == lock && c->lgen == lgen;
}

void ks_ld_changed(struct ks_lockrec *r)
{
    /* seq_cst, both: class_of reads the generation before it looks the
     * class up and again after it cached it, so one of the two sees this
     * change, or this NULL store comes after its cache (see class_of) */
    __atomic_add_fetch(&r->ld_gen, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&r->ld_class, NULL, __ATOMIC_SEQ_CST);
}

/* The class of the lock of record r: the record's cache, else found or
 * made (under graph).  NULL when the tables are full or memory is out. */
static struct ks_ld_class *class_of(struct ks_lockrec *r)
{
    /* seq_cst: see ks_ld_changed (the class, published whole by the CAS
     * below, is read through this load) */
    struct ks_ld_class *c = __atomic_load_n(&r->ld_class, __ATOMIC_SEQ_CST);
    if (KS_LIKELY(c))
        return c;
    uint32_t g0 = __atomic_load_n(&r->ld_gen, __ATOMIC_SEQ_CST); /* see ks_ld_changed */
    const char *name = __atomic_load_n(&r->name, __ATOMIC_ACQUIRE); /* pairs with ks_lock_name */
    const void *site = __atomic_load_n(&r->site, __ATOMIC_RELAXED); /* after g0: ordered by it */
    unsigned kind = __atomic_load_n(&r->kind, __ATOMIC_RELAXED);
    unsigned sub = __atomic_load_n(&r->ld_sub, __ATOMIC_RELAXED); /* after g0, as `site` */
    /* A lock that was never initialised (KS_MUTEX_INIT, PTHREAD_MUTEX_INITIALIZER,
     * zeroed memory) is a class of its own, as the kernel's static locks:
     * two such locks first taken at the same line (both sides of a
     * ks_mutex_lock2) must not share a class.  Its generation is part of
     * it: memory reused after a destroy is another lock. */
    const void *first = NULL, *lock = NULL;
    uint32_t lgen = 0;
    if (!name && !__atomic_load_n(&r->inited, __ATOMIC_RELAXED)) { /* after g0, as `site` */
        first = site;
        site = NULL;
        lock = r->lock;
        lgen = g0;
    }
    struct ks_ld_class **t = __atomic_load_n(&ctab, __ATOMIC_ACQUIRE); /* pairs with make_tables */
    if (!t)
        return NULL;
    uint64_t h = class_hash(name, lock ? lock : site, lgen, kind, sub);
    struct ks_ld_class *spare = calloc(1, sizeof *spare); /* not under graph: see reaches */
    graph_lock();
    for (uint32_t n = 0, i = (uint32_t)h & (CLASS_SIZE - 1); n < CLASS_SIZE; n++, i = (i + 1) & (CLASS_SIZE - 1)) {
        struct ks_ld_class *x = t[i];
        if (x && class_is(x, name, site, lock, lgen, kind, sub)) {
            c = x;
            break;
        }
        if (!x) {
            if (nclasses + 1 >= CLASS_SIZE / 2 || !(x = spare))
                break;
            spare = NULL;
            x->id = ++nclasses;
            x->name = name; /* names are never freed (src/lockstat.c) */
            x->site = site;
            x->lock = lock;
            x->lgen = lgen;
            x->first = first;
            x->kind = kind;
            x->sub = sub;
            t[i] = x; /* read only under graph */
            c = x;
            break;
        }
    }
    graph_unlock();
    free(spare);
    if (!c) {
        say_full("class");
        return NULL;
    }
    /* Cache it if nothing changed meanwhile; a change after the check
     * stores NULL after our CAS (ks_ld_changed), one before it is seen by
     * the check and undone here. */
    struct ks_ld_class *none = NULL;
    if (__atomic_compare_exchange_n(&r->ld_class, &none, c, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) &&
        __atomic_load_n(&r->ld_gen, __ATOMIC_SEQ_CST) != g0) {
        struct ks_ld_class *mine = c;
        __atomic_compare_exchange_n(&r->ld_class, &mine, NULL, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    return c;
}

/* ---- keys ---- */

static uint64_t class_key(const struct ks_ld_class *a, const struct ks_ld_class *b)
{
    return ((uint64_t)a->id << 32 | b->id) & ~(1ull << 63); /* ids < 2^14: never 0 */
}

static uint64_t pair_key(const void *x, uint32_t gx, const void *y, uint32_t gy)
{
    uint64_t k = ks_mix64(((uint64_t)(uintptr_t)x ^ ((uint64_t)gx << 48)) * 0x9e3779b97f4a7c15ull ^
                     ks_mix64((uint64_t)(uintptr_t)y ^ ((uint64_t)gy << 48)));
    return k ? k : 1;
}

/* Under graph: is there a path from `from` to `to` in the graph?  If so,
 * each class on it has `via` set to the edge it was reached by. */
/* Under graph, and without allocating (a thread that waits for `graph`
 * may hold the allocator's lock): the search's stack holds each class at
 * most once, so CLASS_SIZE entries are enough. */
static struct ks_ld_class *todo[CLASS_SIZE]; /* under graph */

static int reaches(struct ks_ld_class *from, struct ks_ld_class *to)
{
    uint32_t mark = ++search_mark;
    size_t n = 0;
    from->seen = mark;
    from->via = NULL;
    todo[n++] = from;
    while (n) {
        struct ks_ld_class *c = todo[--n];
        for (struct edge *e = c->out; e; e = e->next_out) {
            struct ks_ld_class *d = e->to;
            if (d->seen == mark)
                continue;
            d->seen = mark;
            d->via = e;
            if (d == to)
                return 1;
            if (n < CLASS_SIZE)
                todo[n++] = d;
        }
    }
    return 0;
}

/* Under graph: e into its source's list. */
static void link_edge(struct edge *e)
{
    e->next_out = e->from->out;
    e->from->out = e;
}

/* ---- reports ---- */

static void frame(FILE *f, const void *pc)
{
    char what[160];
    ks_lockrec_describe(NULL, pc, what, sizeof what);
    Dl_info di;
    if (pc && dladdr(pc, &di) && di.dli_fname && di.dli_sname) {
        const char *file = strrchr(di.dli_fname, '/') ? strrchr(di.dli_fname, '/') + 1 : di.dli_fname;
        fprintf(f, "%s (%s+0x%lx)", what, file, (unsigned long)((uintptr_t)pc - (uintptr_t)di.dli_fbase));
    } else {
        fputs(what, f);
    }
}

/* A stack from backtrace(), printed from the caller's frame `site` on (the
 * frames before it are the library's own); all of it if site is not in it. */
static void stack(FILE *f, void *const *frames, int n, const void *site)
{
    int from = 0;
    for (int i = 0; i < n; i++)
        if (frames[i] == site) {
            from = i;
            break;
        }
    if (!n) {
        fprintf(f, "        (no stack)\n");
        return;
    }
    for (int i = from; i < n; i++) {
        fprintf(f, "        #%d ", i - from);
        frame(f, frames[i]);
        fputc('\n', f);
    }
}

static void class_text(FILE *f, const struct ks_ld_class *c)
{
    char what[160];
    if (c->lock && !c->name) {
        ks_lockrec_describe(NULL, c->first, what, sizeof what);
        fprintf(f, "lock %p first taken at %s", c->lock, what);
    } else {
        ks_lockrec_describe(c->name, c->site, what, sizeof what);
        fprintf(f, "%s%s", c->name ? "" : "class of ", what);
    }
    if (c->sub)
        fprintf(f, "/%u", c->sub);
}

static void lock_text(FILE *f, const void *lock, const struct ks_ld_class *c)
{
    if (c && c->lock == lock && !c->name) {
        class_text(f, c); /* a lock of its own class */
        return;
    }
    fprintf(f, "%p (", lock);
    if (c)
        class_text(f, c);
    else
        fputs("unknown class", f);
    fputc(')', f);
}

static void thread_text(FILE *f, int t, const char *name)
{
    fprintf(f, "thread %d", t);
    if (name && *name)
        fprintf(f, " \"%s\"", name);
}

static void my_name(char out[16])
{
    memset(out, 0, 16);
    (void)prctl(PR_GET_NAME, out, 0, 0, 0);
}

static void held_text(FILE *f)
{
    if (!me.n) {
        fprintf(f, "    it holds no lock that ksync knows of\n");
        return;
    }
    fprintf(f, "    it holds, oldest first:\n");
    for (unsigned i = 0; i < me.n; i++) {
        fprintf(f, "      %s", (me.h[i].flags & HELD_TRY) ? "(trylock) " : "");
        lock_text(f, me.h[i].lock, me.h[i].cls);
        fprintf(f, " taken at ");
        frame(f, me.h[i].site);
        fputc('\n', f);
    }
}

static const char *event_title(int ev)
{
    switch (ev) {
    case KS_LOCKDEP_CYCLE: return "possible deadlock: lock order inversion";
    case KS_LOCKDEP_RECURSION: return "deadlock: a thread locks a mutex it holds";
    case KS_LOCKDEP_NOT_HELD: return "a thread unlocks a mutex another thread holds";
    case KS_LOCKDEP_UNLOCKED: return "a thread unlocks a mutex that is not locked";
    case KS_LOCKDEP_DESTROY_HELD: return "a locked mutex is destroyed";
    case KS_LOCKDEP_EXIT_HELD: return "a thread exits holding mutexes";
    case KS_LOCKDEP_BLOCKED: return "a thread has waited longer than the threshold";
    case KS_LOCKDEP_DEADLOCK: return "deadlock: threads wait for each other";
    }
    return "?";
}

/* Starts a report: a memory stream the caller writes into, then deliver. */
static FILE *begin(int ev, char **buf, size_t *len)
{
    FILE *f = open_memstream(buf, len);
    if (!f)
        return NULL;
    char name[16];
    my_name(name);
    fprintf(f, "ksync lockdep: %s\n    in ", event_title(ev));
    thread_text(f, tid(), name);
    fprintf(f, " of process %d\n", (int)getpid());
    return f;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* a report is not worth a retry loop on a broken descriptor */
        p += w;
        n -= (size_t)w;
    }
}

/* Ends the report begun into *bufp and hands it over.  The default output
 * is write(2), not stdio: the reporting thread may hold the locks of the
 * report while another thread holds stderr's FILE lock and waits for one. */
static void deliver(int ev, FILE *f, char **bufp, size_t *lenp)
{
    if (!f)
        return;
    fclose(f); /* sets *bufp and *lenp */
    char *buf = *bufp;
    if (!buf)
        return;
    __atomic_fetch_add(&counts[ev], 1, __ATOMIC_RELAXED); /* a statistic */
    /* No cancellation inside a lock call: write(2) is a cancellation point,
     * and pthread_mutex_lock is not one. */
    int cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    /* acquire: pairs with the release in ks_lockdep_handler (fn and arg whole) */
    const struct handler *h = __atomic_load_n(&handler, __ATOMIC_ACQUIRE);
    if (h && h->fn) {
        h->fn(ev, buf, h->arg);
    } else {
        int fd = __atomic_load_n(&out_fd, __ATOMIC_RELAXED); /* set once, before checking is on */
        write_all(fd >= 0 ? fd : 2, buf, *lenp);
    }
    free(buf);
    if (__atomic_load_n(&abort_after, __ATOMIC_RELAXED)) { /* a switch */
        /* Still not cancellable: a pending cancel acting in this write
         * unwound the thread instead of aborting the process. */
        static const char msg[] = "ksync lockdep: KSYNC_LOCKDEP=abort: aborting\n";
        write_all(2, msg, sizeof msg - 1);
        abort();
    }
    pthread_setcancelstate(cancel, NULL);
}

/* ---- the checks ---- */

static void own_lock(void);
static void own_unlock(void);
static void thread_exit(void);

/* Enters the checker: 0 if this thread is already inside it.  The list is
 * dropped when checking was switched off and on again since it was made
 * (its releases were not seen), and trimmed in a new process image (a
 * child made by fork(), _Fork() or a raw clone: src/thread.c's generation
 * tells them all): the forking thread keeps its private locks (their
 * copies are held by it), but a KS_SHARED mutex is the same object in both
 * processes, held by the parent's thread, not by this one. */
static int enter(void)
{
    if (me.busy)
        return 0;
    me.busy = 1;
    me.ordered_after = me.ordered_next = NULL; /* a hint lives until the next hook (ks_ld_lock read it first) */
    uint32_t e = __atomic_load_n(&epoch, __ATOMIC_RELAXED); /* a switch's count */
    if (KS_UNLIKELY(e != me.epoch)) {
        me.epoch = e;
        own_lock();
        me.n = 0;
        own_unlock();
    }
    uint64_t g = ks_process_gen();
    if (KS_UNLIKELY(g != me.image)) {
        me.image = g;
        /* a child's entry is a copy that is on no list of this image */
        me.w = NULL;
        unsigned k = 0;
        for (unsigned i = 0; i < me.n; i++) {
            const ks_mutex_t *m = me.h[i].lock;
            if (m->flags & KS_SHARED) /* every lock checked is a ks_mutex */
                continue;
            me.h[k++] = me.h[i];
        }
        me.n = k;
    }
    return 1;
}

static void leave(void)
{
    me.busy = 0;
}

/* ---- what the watchdog sees of a thread ----
 * A thread that runs while the watchdog is on has an entry on a list the
 * watchdog walks: its id and name, the lock it waits for and since when,
 * and (through pointers into the thread's own state) its held list.  The
 * thread changes its list and its wait under the entry's spin word; the
 * watchdog copies them under it.  The entry leaves the list at the
 * thread's exit, under watch_lock, which the watchdog holds while it
 * copies. */
struct watched {
    struct watched *next;      /* under watch_lock */
    uint32_t spin;             /* acquire/release: a spin lock (see own_lock) */
    int tid;
    char name[16];
    const void *waiting;       /* under spin: the lock it waits for, or NULL */
    int64_t since;             /* under spin */
    uint64_t waits;            /* under spin: counts the waits */
    uint64_t reported;         /* the watchdog's: the wait it last reported */
    struct held **h;           /* under spin: the thread's list (its own state) */
    unsigned *n;
};

static int64_t watch_ns;           /* relaxed: the threshold, 0 when the watchdog is off */

static void spin_lock(uint32_t *w)
{
    /* acquire: pairs with the release in spin_unlock */
    while (__atomic_exchange_n(w, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(w, __ATOMIC_RELAXED)) /* test before the exchange retries */
            ks_cpu_relax();
}

static void spin_unlock(uint32_t *w)
{
    __atomic_store_n(w, 0, __ATOMIC_RELEASE); /* pairs with spin_lock's acquire */
}

static void own_lock(void)
{
    if (me.w)
        spin_lock(&me.w->spin);
}

static void own_unlock(void)
{
    if (me.w)
        spin_unlock(&me.w->spin);
}

/* Under `busy`: put this thread on the watchdog's list (once, and only if
 * its exit hook runs, which takes it off). */
static void watch_me(void)
{
    if (!me.armed && ks_thread_at_exit(KS_EXIT_LOCKDEP, thread_exit) == 0)
        me.armed = 1;
    if (me.w || !me.armed)
        return;
    struct watched *w = calloc(1, sizeof *w);
    if (!w)
        return;
    w->tid = tid();
    my_name(w->name);
    w->h = &me.h;
    w->n = &me.n;
    image_check();
    ks_mutex_lock(&watch_lock);
    w->next = watch_list;
    watch_list = w;
    me.w = w;
    ks_mutex_unlock(&watch_lock);
}

static void unwatch_me(void)
{
    struct watched *w = me.w;
    if (!w)
        return;
    image_check();
    ks_mutex_lock(&watch_lock);
    for (struct watched **p = &watch_list; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    me.w = NULL;
    ks_mutex_unlock(&watch_lock);
    free(w);
}

static void set_waiting(const void *lock)
{
    struct watched *w = me.w;
    if (!w)
        return;
    spin_lock(&w->spin);
    w->waiting = lock;
    if (lock) {
        w->since = ks_now();
        w->waits++;
    }
    spin_unlock(&w->spin);
}

/* 1 the first time `ev` happens at `site` (the misuse reports are made once
 * per call site: a loop that repeats one misuse makes one report).  Kept in
 * the orders map under a key of its own (bit 63, which class keys never
 * have); 1 too when the map is full. */
static struct edge said;

static int first_at(int ev, const void *site)
{
    uint64_t key = ks_mix64((uint64_t)(uintptr_t)site ^ ((uint64_t)ev << 56) ^ 0x5bd1e995ull) | (1ull << 63);
    if (map_find(&orders, key))
        return 0;
    int first = 1;
    graph_lock();
    if (map_find(&orders, key))
        first = 0;
    else if (map_room(&orders))
        map_put(&orders, key, &said); /* any non-NULL edge: map_find's "found" */
    graph_unlock();
    return first;
}

static int push(const void *lock, struct ks_ld_class *c, const void *site, uint32_t gen, unsigned flags)
{
    int e = 0;
    own_lock();
    if (me.n == me.cap) {
        unsigned cap = me.cap ? 2 * me.cap : 16;
        struct held *h = realloc(me.h, cap * sizeof *h);
        if (!h)
            e = -1;
        else {
            me.h = h;
            me.cap = cap;
        }
    }
    if (!e)
        me.h[me.n++] = (struct held){lock, c, site, gen, flags};
    own_unlock();
    return e;
}

static int find_held(const void *lock)
{
    for (unsigned i = me.n; i-- > 0;)
        if (me.h[i].lock == lock)
            return (int)i;
    return -1;
}

static void drop_held(int i)
{
    own_lock();
    memmove(&me.h[i], &me.h[i + 1], (me.n - (unsigned)i - 1) * sizeof *me.h);
    me.n--;
    own_unlock();
}

static struct edge *new_edge(const struct held *h, struct ks_ld_class *to, const void *lock, const void *site,
                             void **frames, int nframes, int ordered)
{
    struct edge *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->from = h->cls;
    e->to = to;
    e->from_lock = h->lock;
    e->to_lock = lock;
    e->from_site = h->site;
    e->to_site = site;
    e->tid = tid();
    e->ordered = ordered;
    my_name(e->thread);
    e->nframes = nframes;
    memcpy(e->frames, frames, (size_t)nframes * sizeof *frames);
    return e;
}

static void edge_text(FILE *f, const struct edge *e)
{
    fprintf(f, "      ");
    class_text(f, e->from);
    fprintf(f, " -> ");
    class_text(f, e->to);
    fprintf(f, ": first seen in ");
    thread_text(f, e->tid, e->thread);
    fprintf(f, ", holding %p taken at ", e->from_lock);
    frame(f, e->from_site);
    fprintf(f, ",\n      taking %p%s at:\n", e->to_lock, e->ordered ? " in a ks_mutex_lock2 (address order)" : "");
    stack(f, e->frames, e->nframes, e->to_site);
}

/* The opening of a cycle report: what the thread holds and is about to take. */
static void cycle_head(FILE *f, const struct held *h, struct ks_ld_class *c, const void *lock, const void *site,
                       void *const *frames, int nframes)
{
    fprintf(f, "    it holds ");
    lock_text(f, h->lock, h->cls);
    fprintf(f, ", taken at ");
    frame(f, h->site);
    fprintf(f, ",\n    and is about to wait for ");
    lock_text(f, lock, c);
    fprintf(f, " at:\n");
    stack(f, frames, nframes, site);
}

/* How the order h -> (lock, c) is checked. */
enum how { BY_CLASS, BY_PAIR, BY_LOCK2 };

/* The order h -> (lock, c) is new (its key is not in its map): record it,
 * or report the cycle it closes.  frames: this acquisition's stack, taken
 * once per acquisition. */
static void add_order(const struct held *h, struct ks_ld_class *c, const void *lock, uint32_t gen, const void *site,
                      enum how how, void **frames, int *nframes)
{
    if (*nframes < 0)
        *nframes = backtrace(frames, FRAMES);
    struct map *m = how == BY_CLASS ? &orders : &pairs;
    uint64_t key = how == BY_CLASS ? class_key(h->cls, c) : pair_key(h->lock, h->gen, lock, gen);
    struct edge *e = new_edge(h, c, lock, site, frames, *nframes, how == BY_LOCK2);
    if (!e)
        return;
    /* Under graph: decide, and copy what a report needs (edges are only
     * dereferenced under graph; classes never change).  The report is
     * written after graph is released: formatting calls dladdr, which
     * takes the dynamic loader's lock, which a dlopen holds while the
     * constructors it runs take ksync locks. */
    enum { SHOWN = 32 };
    struct edge back_copy, path[SHOWN];
    unsigned steps = 0, shown = 0;
    int found_back = 0, found_path = 0;
    graph_lock();
    if (map_find(m, key) || !map_room(m)) { /* recorded meanwhile by another thread, or no room */
        graph_unlock();
        free(e);
        return;
    }
    struct edge *back = NULL; /* the opposite pair, if any */
    if (how != BY_CLASS)
        back = map_find(&pairs, pair_key(lock, gen, h->lock, h->gen));
    if (back) {
        back_copy = *back;
        found_back = 1;
    } else if (how != BY_PAIR && reaches(c, h->cls)) {
        /* the path c -> ... -> h->cls: its last SHOWN steps, in order */
        found_path = 1;
        for (struct ks_ld_class *x = h->cls; x != c && x->via; x = x->via->from)
            steps++;
        shown = steps < SHOWN ? steps : SHOWN;
        unsigned k = shown;
        for (struct ks_ld_class *x = h->cls; k && x != c && x->via; x = x->via->from)
            path[--k] = *x->via;
    }
    if (found_back || found_path) {
        map_put(m, key, e); /* reported once; never in the graph, which stays acyclic */
    } else {
        if (how == BY_CLASS)
            link_edge(e);
        map_put(m, key, e);
        if (how == BY_LOCK2)
            __atomic_store_n(&ordered_pairs, 1, __ATOMIC_RELAXED); /* a switch */
    }
    graph_unlock();
    if (!found_back && !found_path)
        return;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = begin(KS_LOCKDEP_CYCLE, &buf, &len);
    if (f) {
        cycle_head(f, h, c, lock, site, frames, *nframes);
        if (found_back) {
            fprintf(f, "    the opposite order of these two locks was seen%s:\n",
                    h->cls == c ? " (they are of one class)" : "");
            edge_text(f, &back_copy);
            fprintf(f, "    cycle: %p -> %p -> %p\n", h->lock, lock, h->lock);
            fprintf(f, "    a thread in the first order and one in the second can wait for each other forever.\n");
        } else {
            fprintf(f, "    the opposite order, %u step(s) from ", steps);
            class_text(f, c);
            fprintf(f, " to ");
            class_text(f, h->cls);
            fprintf(f, ", was seen before%s:\n", shown < steps ? " (its last steps)" : "");
            for (unsigned i = 0; i < shown; i++)
                edge_text(f, &path[i]);
            fprintf(f, "    cycle: ");
            class_text(f, h->cls);
            fprintf(f, " -> ");
            class_text(f, c);
            if (shown < steps)
                fprintf(f, " -> ...");
            for (unsigned i = 0; i < shown; i++) {
                fprintf(f, " -> ");
                class_text(f, path[i].to);
            }
            fprintf(f, "\n    threads that take these orders at the same time can wait for each other forever.\n");
        }
        held_text(f);
    }
    deliver(KS_LOCKDEP_CYCLE, f, &buf, &len);
}

static void thread_exit(void);

void ks_ld_forget(const void *lock)
{
    if (!enter())
        return;
    int i = find_held(lock);
    if (i >= 0)
        drop_held(i);
    leave();
}

KS_API int ks_lockdep_on_; /* relaxed: the switch the headers read (ksync/mutex.h), as ks_ld_on_ */

void ks_lockdep_ordered_(const void *first, const void *second)
{
    if (ks_ld_on()) { /* this thread's own: read by its next ks_ld_lock, for `second` only */
        me.ordered_after = first;
        me.ordered_next = second;
    }
}

/* The lock `lock` is about to be waited for (not a trylock): recursion and
 * order checks. */
void ks_ld_lock(const void *lock, unsigned kind, const void *site)
{
    /* the hint is for this lock only, and lives until the next hook (enter clears it) */
    const void *after = me.ordered_next == lock ? me.ordered_after : NULL;
    if (!enter())
        return;
    struct ks_lockrec *r = ks_lockrec_find(lock, 1, kind, site);
    struct ks_ld_class *c = r ? class_of(r) : NULL;
    uint32_t gen = r ? __atomic_load_n(&r->ld_gen, __ATOMIC_RELAXED) : 0; /* after class_of's seq_cst loads */
    int i = find_held(lock);
    if (i >= 0) {
        if (first_at(KS_LOCKDEP_RECURSION, site)) {
            char *buf = NULL;
            size_t len = 0;
            FILE *f = begin(KS_LOCKDEP_RECURSION, &buf, &len);
            if (f) {
                void *fr[FRAMES];
                int n = backtrace(fr, FRAMES);
                fprintf(f, "    it holds ");
                lock_text(f, lock, c);
                fprintf(f, ", taken at ");
                frame(f, me.h[i].site);
                fprintf(f, ",\n    and locks it again at:\n");
                stack(f, fr, n, site);
                fprintf(f, "    a ks_mutex is not recursive: this thread waits for itself, forever or until a timed\n"
                           "    lock's deadline (use ks_rmutex).\n");
                held_text(f);
            }
            deliver(KS_LOCKDEP_RECURSION, f, &buf, &len);
        }
    } else if (c) {
        void *frames[FRAMES];
        int nframes = -1;
        int check_pairs = __atomic_load_n(&ordered_pairs, __ATOMIC_RELAXED); /* a switch */
        /* me.h stays as it is meanwhile: nothing is pushed while busy */
        for (unsigned k = 0; k < me.n; k++) {
            const struct held *h = &me.h[k];
            if (!h->cls)
                continue;
            enum how how = h->cls == c ? BY_PAIR : h->lock == after ? BY_LOCK2 : BY_CLASS;
            struct map *m = how == BY_CLASS ? &orders : &pairs;
            if (__atomic_load_n(&m->full, __ATOMIC_RELAXED)) /* a switch */
                continue;
            /* a plain order opposite to a lock2 pair: reported as a pair
             * (once: the pair is recorded then), whatever the classes say */
            if (how == BY_CLASS && check_pairs &&
                KS_UNLIKELY(map_find(&pairs, pair_key(lock, gen, h->lock, h->gen)) != NULL) &&
                !map_find(&pairs, pair_key(h->lock, h->gen, lock, gen)))
                add_order(h, c, lock, gen, site, BY_PAIR, frames, &nframes);
            uint64_t key = how == BY_CLASS ? class_key(h->cls, c) : pair_key(h->lock, h->gen, lock, gen);
            if (KS_UNLIKELY(map_find(m, key) == NULL))
                add_order(h, c, lock, gen, site, how, frames, &nframes);
        }
    }
    if (__atomic_load_n(&watch_ns, __ATOMIC_RELAXED)) { /* a switch */
        watch_me();
        set_waiting(lock);
    }
    leave();
}

void ks_ld_wait_end(void)
{
    if (!me.w || !enter())
        return;
    set_waiting(NULL);
    leave();
}

/* The lock is now held by this thread. */
void ks_ld_locked(const void *lock, unsigned kind, const void *site, int trylock)
{
    if (!enter())
        return;
    struct ks_lockrec *r = ks_lockrec_find(lock, 1, kind, site);
    struct ks_ld_class *c = r ? class_of(r) : NULL;
    uint32_t gen = r ? __atomic_load_n(&r->ld_gen, __ATOMIC_RELAXED) : 0; /* as in ks_ld_lock */
    if (!me.armed && ks_thread_at_exit(KS_EXIT_LOCKDEP, thread_exit) == 0)
        me.armed = 1;
    set_waiting(NULL);
    if (push(lock, c, site, gen, trylock ? HELD_TRY : 0) == 0 && r)
        __atomic_store_n(&r->ld_holder, holder_word(), __ATOMIC_RELAXED); /* informative: who took it */
    leave();
}

/* The caller is about to release `lock`; `locked`: the word says it is held. */
void ks_ld_unlock(const void *lock, int locked, const void *site)
{
    if (!enter())
        return;
    int i = find_held(lock);
    struct ks_lockrec *r = ks_lockrec_find(lock, 0, 0, NULL);
    if (i >= 0) {
        drop_held(i);
        if (r)
            __atomic_store_n(&r->ld_holder, 0, __ATOMIC_RELAXED); /* informative */
    } else if (!locked || r) {
        /* Not ours.  Report it if the mutex is not locked at all, or if
         * the checker saw another thread take it in this epoch (a lock
         * taken before checking was on is not known: silent). */
        int holder = holder_of_rec(r);
        int ev = !locked ? KS_LOCKDEP_UNLOCKED : holder && holder != tid() ? KS_LOCKDEP_NOT_HELD : 0;
        if (ev && first_at(ev, site)) {
            char *buf = NULL;
            size_t len = 0;
            FILE *f = begin(ev, &buf, &len);
            if (f) {
                void *fr[FRAMES];
                int n = backtrace(fr, FRAMES);
                fprintf(f, "    unlocking ");
                lock_text(f, lock, r ? class_of(r) : NULL);
                if (ev == KS_LOCKDEP_NOT_HELD)
                    fprintf(f, ", which thread %d took,", holder);
                fprintf(f, " at:\n");
                stack(f, fr, n, site);
                held_text(f);
            }
            deliver(ev, f, &buf, &len);
        }
        if (ev == KS_LOCKDEP_NOT_HELD && r)
            __atomic_store_n(&r->ld_holder, 0, __ATOMIC_RELAXED); /* informative */
    }
    leave();
}

/* `lock` is being destroyed; `locked`: its word says it is held.  A report
 * if it is; and either way the lock's identity ends here: its pairs, its
 * subclass and (for a lock never initialised) its class belong to it, not
 * to what the memory holds next. */
void ks_ld_destroy(const void *lock, int locked, const void *site)
{
    if (!enter())
        return;
    int i = find_held(lock);
    struct ks_lockrec *r = ks_lockrec_find(lock, 0, 0, NULL);
    if ((i >= 0 || locked) && first_at(KS_LOCKDEP_DESTROY_HELD, site)) {
        int holder = i >= 0 ? tid() : holder_of_rec(r);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = begin(KS_LOCKDEP_DESTROY_HELD, &buf, &len);
        if (f) {
            void *fr[FRAMES];
            int n = backtrace(fr, FRAMES);
            fprintf(f, "    destroying ");
            lock_text(f, lock, r ? class_of(r) : NULL);
            if (i >= 0) {
                fprintf(f, ", which this thread holds (taken at ");
                frame(f, me.h[i].site);
                fprintf(f, ")");
            } else if (holder) {
                fprintf(f, ", which thread %d holds", holder);
            } else {
                fprintf(f, ", which is locked");
            }
            fprintf(f, ", at:\n");
            stack(f, fr, n, site);
        }
        deliver(KS_LOCKDEP_DESTROY_HELD, f, &buf, &len);
    }
    if (!locked && r) { /* a destroy that succeeds (a locked one returns EBUSY and the lock lives on) */
        if (i >= 0)
            drop_held(i);
        /* its init site and name go with it: memory reused for a lock that
         * is never initialised is a lock of its own (read after ld_gen,
         * which moves next) */
        __atomic_store_n(&r->ld_sub, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r->inited, 0, __ATOMIC_RELAXED); /* before ld_gen moves (seq_cst) */
        __atomic_store_n(&r->name, NULL, __ATOMIC_RELEASE); /* as ks_lock_name's store */
        ks_ld_changed(r);
    }
    leave();
}

/* The thread's exit.  A lock its own pthread key destructors release is
 * released after this hook may have run (destructors run in key order, and
 * this key is often the oldest): with locks held, the hook arms itself for
 * glibc's next round of destructors and reports only what is still held
 * then. */
static void thread_exit(void)
{
    me.armed = 0;
    if (me.n && !me.exit_again && !me.busy && ks_thread_at_exit(KS_EXIT_LOCKDEP, thread_exit) == 0) {
        me.exit_again = 1;
        me.armed = 1;
        return;
    }
    if (me.n && !me.busy && __atomic_load_n(&ks_ld_on_, __ATOMIC_RELAXED) && /* switches */
        me.epoch == __atomic_load_n(&epoch, __ATOMIC_RELAXED)) {
        me.busy = 1;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = begin(KS_LOCKDEP_EXIT_HELD, &buf, &len);
        if (f) {
            held_text(f);
            fprintf(f, "    nobody can unlock them: a thread that waits for one waits forever.\n");
        }
        deliver(KS_LOCKDEP_EXIT_HELD, f, &buf, &len);
        me.busy = 0;
    }
    unwatch_me();
    free(me.h);
    me.h = NULL;
    me.n = me.cap = 0;
    me.exit_again = 0;
}

/* ---- the watchdog ---- */

struct wsnap {               /* one thread, as the watchdog copied it */
    struct watched *w;
    int tid;
    char name[16];
    const void *waiting;
    int64_t since;
    uint64_t waits;
    struct held *h;
    unsigned n;
};

static struct wsnap *holder_of(struct wsnap *t, size_t n, const void *lock)
{
    for (size_t i = 0; i < n; i++)
        for (unsigned k = 0; k < t[i].n; k++)
            if (t[i].h[k].lock == lock)
                return &t[i];
    return NULL;
}

static void snap_held(FILE *f, const struct wsnap *t)
{
    if (!t->n) {
        fprintf(f, "        holding no lock that ksync knows of\n");
        return;
    }
    for (unsigned k = 0; k < t->n; k++) {
        fprintf(f, "        holding ");
        lock_text(f, t->h[k].lock, t->h[k].cls);
        fprintf(f, " taken at ");
        frame(f, t->h[k].site);
        fputc('\n', f);
    }
}

/* One look: every thread that has waited longer than the threshold, not
 * reported yet for this wait, gets a report that follows the chain of
 * holders: to a thread that is not waiting (blocked), or back to a thread
 * of the chain (a wait-for cycle: a deadlock). */
static void watch_once(int64_t threshold)
{
    image_check();
    ks_mutex_lock(&watch_lock);
    size_t n = 0;
    for (struct watched *w = watch_list; w; w = w->next)
        n++;
    struct wsnap *t = calloc(n ? n : 1, sizeof *t);
    size_t k = 0;
    for (struct watched *w = watch_list; t && w; w = w->next, k++) {
        t[k].w = w;
        t[k].tid = w->tid;
        memcpy(t[k].name, w->name, sizeof t[k].name);
        spin_lock(&w->spin);
        t[k].waiting = w->waiting;
        t[k].since = w->since;
        t[k].waits = w->waits;
        unsigned hn = *w->n;
        t[k].h = hn ? malloc(hn * sizeof *t[k].h) : NULL;
        if (t[k].h || !hn) {
            if (hn)
                memcpy(t[k].h, *w->h, hn * sizeof *t[k].h);
            t[k].n = hn;
        }
        spin_unlock(&w->spin);
    }
    int64_t now = ks_now();
    for (size_t i = 0; t && i < n; i++) {
        struct wsnap *a = &t[i];
        if (!a->waiting || now - a->since < threshold || a->w->reported == a->waits)
            continue;
        /* the chain: a, its lock's holder, that one's lock's holder, ... */
        struct wsnap *chain[64];
        size_t len = 0;
        int cycle = -1;
        for (struct wsnap *x = a; x && len < 64;) {
            for (size_t j = 0; j < len; j++)
                if (chain[j] == x)
                    cycle = (int)j;
            if (cycle >= 0)
                break;
            chain[len++] = x;
            x = x->waiting ? holder_of(t, n, x->waiting) : NULL;
        }
        int ev = cycle >= 0 ? KS_LOCKDEP_DEADLOCK : KS_LOCKDEP_BLOCKED;
        char *buf = NULL;
        size_t blen = 0;
        FILE *f = open_memstream(&buf, &blen);
        if (f) {
            fprintf(f, "ksync lockdep watchdog: %s\n",
                    ev == KS_LOCKDEP_DEADLOCK ? "deadlock: threads wait for each other"
                                              : "a thread has waited longer than the threshold");
            fprintf(f, "    in process %d, threshold %.3f s:\n", (int)getpid(), (double)threshold / 1e9);
            for (size_t j = 0; j < len; j++) {
                struct wsnap *x = chain[j];
                fprintf(f, "    ");
                thread_text(f, x->tid, x->name);
                if (x->waiting) {
                    struct ks_lockrec *r = ks_lockrec_find(x->waiting, 0, 0, NULL);
                    fprintf(f, " has waited %.3f s for ", (double)(now - x->since) / 1e9);
                    /* seq_cst: as class_of's load (the class, or NULL) */
                    lock_text(f, x->waiting, r ? __atomic_load_n(&r->ld_class, __ATOMIC_SEQ_CST) : NULL);
                    struct wsnap *h = holder_of(t, n, x->waiting);
                    if (h)
                        fprintf(f, ", held by thread %d,\n", h->tid);
                    else
                        fprintf(f, ", held by no thread ksync knows of (another process, or a thread that"
                                   " took it before checking was on),\n");
                } else {
                    fprintf(f, " is not waiting for a ksync lock,\n");
                }
                snap_held(f, x);
            }
            if (ev == KS_LOCKDEP_DEADLOCK)
                fprintf(f, "    and so back to thread %d: none of these threads can go on (a wait-for cycle).\n",
                        chain[cycle]->tid);
        }
        /* reported once per wait, and each thread of a cycle with it */
        a->w->reported = a->waits;
        for (size_t j = 0; cycle >= 0 && j < len; j++)
            chain[j]->w->reported = chain[j]->waits;
        ks_mutex_unlock(&watch_lock); /* the handler may take ksync locks: not under it */
        deliver(ev, f, &buf, &blen);
        ks_mutex_lock(&watch_lock);
        /* entries of threads that exited meanwhile are gone: this look ends */
        break;
    }
    ks_mutex_unlock(&watch_lock);
    for (size_t i = 0; t && i < n; i++)
        free(t[i].h);
    free(t);
}

static pthread_t watchdog;
static int wd_state;                 /* under wd_setup: 0 none, 1 running, 2 asked to stop */
static pid_t wd_pid;                 /* under wd_setup: the process it runs in */
static ks_mutex_t wd_setup = {0u, 0u};
static ks_mutex_t wd_lock = {0u, 0u};
static ks_cond_t wd_wake = KS_COND_INIT;

static void *watch_loop(void *arg)
{
    (void)arg;
    me.busy = 1; /* this thread's own locks are not checked */
    ks_mutex_lock(&wd_lock);
    while (__atomic_load_n(&wd_state, __ATOMIC_RELAXED) == 1) { /* under wd_lock for the stop */
        int64_t th = __atomic_load_n(&watch_ns, __ATOMIC_RELAXED);
        int64_t period = th / 4 > 10000000 ? th / 4 : 10000000;
        ks_cond_timedwait(&wd_wake, &wd_lock, ks_deadline_after(period));
        if (__atomic_load_n(&wd_state, __ATOMIC_RELAXED) != 1) /* under wd_lock, as its stores */
            break;
        ks_mutex_unlock(&wd_lock);
        if (__atomic_load_n(&ks_ld_on_, __ATOMIC_RELAXED)) /* a switch */
            watch_once(th);
        ks_mutex_lock(&wd_lock);
    }
    ks_mutex_unlock(&wd_lock);
    return NULL;
}

int ks_lockdep_watchdog(int threshold_ms)
{
    if (threshold_ms < 0)
        return EINVAL;
    int was_busy = me.busy;
    me.busy = 1;
    /* Not a cancellation point (docs/conventions.md): stopping joins the
     * watchdog thread while wd_setup is held. */
    const int cancel = ks_nocancel_begin();
    ks_mutex_lock(&wd_setup);
    if (wd_state && wd_pid != getpid())
        wd_state = 0; /* a fork child: the thread is its parent's */
    int e = 0;
    if (threshold_ms == 0) {
        __atomic_store_n(&watch_ns, 0, __ATOMIC_RELAXED); /* a switch: threads stop announcing waits */
        if (wd_state == 1) {
            ks_mutex_lock(&wd_lock);
            __atomic_store_n(&wd_state, 2, __ATOMIC_RELAXED); /* under wd_lock: the loop reads it so */
            ks_cond_signal(&wd_wake);
            ks_mutex_unlock(&wd_lock);
            pthread_join(watchdog, NULL);
            wd_state = 0;
        }
    } else {
        __atomic_store_n(&watch_ns, (int64_t)threshold_ms * 1000000, __ATOMIC_RELAXED); /* a switch */
        if (wd_state == 1) {
            ks_mutex_lock(&wd_lock);
            ks_cond_signal(&wd_wake);
            ks_mutex_unlock(&wd_lock);
        } else {
            __atomic_store_n(&wd_state, 1, __ATOMIC_RELAXED); /* before the thread exists: its creation orders it */
            wd_pid = getpid();
            sigset_t all, old;
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &old);
            e = pthread_create(&watchdog, NULL, watch_loop, NULL);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            if (e) {
                wd_state = 0;
                __atomic_store_n(&watch_ns, 0, __ATOMIC_RELAXED); /* a switch */
            } else {
                pthread_setname_np(watchdog, "ksync-watchdog");
            }
        }
    }
    ks_mutex_unlock(&wd_setup);
    ks_nocancel_end(cancel);
    me.busy = was_busy;
    return e;
}

/* ---- switches ---- */

/* fork(): `graph` is held across it, so the child gets the tables in one
 * piece, and the forking thread is `busy` meanwhile: the prepare handlers
 * registered before this one run after it and may take ksync locks, which
 * must not come here for `graph`. */
static int fork_was_busy;

static void fork_prepare(void)
{
    fork_was_busy = me.busy;
    me.busy = 1;
    graph_lock();
}

static void fork_parent(void)
{
    graph_unlock();
    me.busy = fork_was_busy;
}

static void fork_child(void)
{
    graph_unlock();
    me.busy = fork_was_busy;
}

/* KSYNC_LOCKDEP_FILE, opened once (O_CLOEXEC: not a descriptor a program's
 * children inherit). */
static void open_out(void)
{
    static int tried; /* under graph */
    if (tried)
        return;
    tried = 1;
    const char *path = getenv("KSYNC_LOCKDEP_FILE");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        char line[300];
        int n = snprintf(line, sizeof line, "ksync: KSYNC_LOCKDEP_FILE=%s: cannot open it; reports go to stderr\n",
                         path);
        if (n > 0)
            write_all(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        return;
    }
    __atomic_store_n(&out_fd, fd, __ATOMIC_RELAXED); /* before checking is switched on (ks_lockdep_set) */
}

static int make_map(struct map *m)
{
    if (m->slots) /* under graph: a plain read */
        return 0;
    struct slot *t = calloc(MAP_SIZE, sizeof *t);
    if (!t)
        return ENOMEM;
    __atomic_store_n(&m->slots, t, __ATOMIC_RELEASE); /* pairs with map_find */
    return 0;
}

static int make_tables(void)
{
    static int atfork_done;
    if (ks_lockrec_table())
        return ENOMEM;
    graph_lock();
    int e = make_map(&orders);
    if (!e)
        e = make_map(&pairs);
    if (!e && !__atomic_load_n(&ctab, __ATOMIC_RELAXED)) { /* under graph */
        struct ks_ld_class **t = calloc(CLASS_SIZE, sizeof *t);
        if (t)
            __atomic_store_n(&ctab, t, __ATOMIC_RELEASE); /* pairs with class_of */
        else
            e = ENOMEM;
    }
    if (!e)
        open_out();
    graph_unlock();
    if (!e && !__atomic_exchange_n(&atfork_done, 1, __ATOMIC_RELAXED)) { /* once: orders nothing */
        /* backtrace() loads its unwinder now, not inside a lock path */
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        void *fr[2];
        (void)backtrace(fr, 2);
    }
    return e;
}

int ks_lockdep_set(int mode)
{
    if (mode != KS_LOCKDEP_OFF && mode != KS_LOCKDEP_ON && mode != KS_LOCKDEP_ABORT)
        return -EINVAL;
    int was_busy = me.busy;
    me.busy = 1; /* the tables' own locks are not checked */
    /* Not a cancellation point (docs/conventions.md): make_tables opens
     * KSYNC_LOCKDEP_FILE under graph. */
    const int c = ks_nocancel_begin();
    int e = mode != KS_LOCKDEP_OFF ? make_tables() : 0;
    ks_nocancel_end(c);
    me.busy = was_busy;
    if (e)
        return -e;
    int old = __atomic_load_n(&abort_after, __ATOMIC_RELAXED) ? KS_LOCKDEP_ABORT : 0; /* a switch */
    __atomic_store_n(&abort_after, mode == KS_LOCKDEP_ABORT, __ATOMIC_RELAXED); /* a switch */
    if (mode != KS_LOCKDEP_OFF) { /* relaxed: switches (src/internal.h) */
        /* a new epoch before the switch: lists made while it was on before
         * missed the releases made while it was off */
        if (!__atomic_load_n(&ks_ld_on_, __ATOMIC_RELAXED))
            __atomic_add_fetch(&epoch, 1, __ATOMIC_RELAXED);
        __atomic_fetch_or(&ks_trace_all_, KS_TRACE_LOCKDEP, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_and(&ks_trace_all_, ~KS_TRACE_LOCKDEP, __ATOMIC_RELAXED);
    }
    int on = __atomic_exchange_n(&ks_ld_on_, mode != KS_LOCKDEP_OFF, __ATOMIC_RELAXED); /* a switch */
    __atomic_store_n(&ks_lockdep_on_, mode != KS_LOCKDEP_OFF, __ATOMIC_RELAXED); /* the headers' copy */
    return on ? (old ? old : KS_LOCKDEP_ON) : KS_LOCKDEP_OFF;
}

int ks_lockdep_mode(void)
{
    if (!__atomic_load_n(&ks_ld_on_, __ATOMIC_RELAXED)) /* switches: ordered by nothing */
        return KS_LOCKDEP_OFF;
    return __atomic_load_n(&abort_after, __ATOMIC_RELAXED) ? KS_LOCKDEP_ABORT : KS_LOCKDEP_ON;
}

void ks_lockdep_handler(ks_lockdep_handler_fn *fn, void *arg)
{
    struct handler *h = malloc(sizeof *h);
    if (!h)
        return; /* the previous handler stays */
    h->fn = fn; /* NULL: the default output */
    h->arg = arg;
    /* release: fn and arg before the pointer (pairs with deliver) */
    h->prev = __atomic_load_n(&handler, __ATOMIC_RELAXED); /* seeds the CAS */
    while (!__atomic_compare_exchange_n(&handler, &h->prev, h, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
}

uint64_t ks_lockdep_count(int event)
{
    if (event < 0 || event >= KS_LOCKDEP_EVENTS)
        return 0;
    uint64_t n = 0;
    for (int ev = event ? event : 1; ev < (event ? event + 1 : KS_LOCKDEP_EVENTS); ev++)
        n += __atomic_load_n(&counts[ev], __ATOMIC_RELAXED); /* a statistic */
    return n;
}

/* Under graph: empties the map; its edges go on *freed (through
 * next_out), freed by the caller after graph (see reaches). */
static void clear_map(struct map *m, struct edge **freed)
{
    if (!m->slots) /* under graph: a plain read */
        return;
    /* Every edge is in one map once (a linked edge is put there too); a
     * reader that finds a key without the lock only compares its edge
     * with NULL, and every dereference of an edge is made under graph. */
    for (uint32_t i = 0; i < MAP_SIZE; i++) {
        if (!__atomic_load_n(&m->slots[i].key, __ATOMIC_RELAXED)) /* under graph: a plain read */
            continue;
        __atomic_store_n(&m->slots[i].key, 0, __ATOMIC_RELAXED); /* readers then miss it: the slow path */
        struct edge *e = m->slots[i].e; /* under graph, which alone writes it */
        if (e != &said) {
            e->next_out = *freed;
            *freed = e;
        }
        __atomic_store_n(&m->slots[i].e, NULL, __ATOMIC_RELAXED); /* readers only compare it with NULL */
    }
    m->n = 0;
    __atomic_store_n(&m->full, 0, __ATOMIC_RELAXED); /* a switch */
}

void ks_lockdep_reset(void)
{
    int was_busy = me.busy;
    me.busy = 1;
    struct edge *freed = NULL;
    graph_lock();
    clear_map(&orders, &freed);
    clear_map(&pairs, &freed);
    struct ks_ld_class **t = __atomic_load_n(&ctab, __ATOMIC_RELAXED); /* under graph */
    for (uint32_t i = 0; t && i < CLASS_SIZE; i++)
        if (t[i])
            t[i]->out = NULL; /* the edges are freed with the maps */
    __atomic_store_n(&ordered_pairs, 0, __ATOMIC_RELAXED); /* a switch */
    graph_unlock();
    while (freed) {
        struct edge *next = freed->next_out;
        free(freed);
        freed = next;
    }
    me.busy = was_busy;
}

int ks_lock_nest(const void *lock, unsigned subclass)
{
    if (!lock)
        return EINVAL;
    if (ks_lockrec_table())
        return ENOMEM;
    struct ks_lockrec *r = ks_lockrec_find(lock, 1, 0, NULL);
    if (!r)
        return ENOSPC;
    __atomic_store_n(&r->ld_sub, subclass, __ATOMIC_RELAXED); /* read by class_of after ld_gen, which moves next */
    ks_ld_changed(r);
    return 0;
}

/* ---- KSYNC_LOCKDEP: switched on before main ---- */

__attribute__((constructor)) static void lockdep_from_env(void)
{
    const char *v = getenv("KSYNC_LOCKDEP");
    if (!v || !*v)
        return;
    int mode;
    if (!strcasecmp(v, "abort") || !strcmp(v, "2"))
        mode = KS_LOCKDEP_ABORT;
    else if (!strcmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes"))
        mode = KS_LOCKDEP_ON;
    else {
        if (strcmp(v, "0") && strcasecmp(v, "off") && strcasecmp(v, "no"))
            fprintf(stderr, "ksync: KSYNC_LOCKDEP=%s: not 0, 1, 2 or abort; checking stays off\n", v);
        return;
    }
    if (ks_lockdep_set(mode) < 0) {
        fprintf(stderr, "ksync: KSYNC_LOCKDEP: no memory for the tables; checking stays off\n");
        return;
    }
    /* the watchdog: KSYNC_LOCKDEP_WATCHDOG=ms (off by default) */
    const char *wd = getenv("KSYNC_LOCKDEP_WATCHDOG");
    if (wd && *wd) {
        char *end;
        long ms = strtol(wd, &end, 10);
        if (*end || ms < 0 || ms > 3600000)
            fprintf(stderr, "ksync: KSYNC_LOCKDEP_WATCHDOG=%s: not a number of milliseconds; no watchdog\n", wd);
        else if (ms && ks_lockdep_watchdog((int)ms))
            fprintf(stderr, "ksync: KSYNC_LOCKDEP_WATCHDOG: cannot start its thread\n");
    }
}
