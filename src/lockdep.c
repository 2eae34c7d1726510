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
 *  - the lock registry (src/lockreg.h): a lock's record caches its class;
 *  - classes: found by key (name, else site; kind; subclass) in an
 *    open-addressing table; each holds its outgoing orders (edges);
 *  - an edge map from a 64-bit key to the edge that was recorded for it:
 *    class pairs, and for two locks of one class, a hash of the two
 *    addresses.  It is read without a lock (a key is published with
 *    release after its edge is complete), so an order that is already
 *    known costs one hash probe per held lock and no shared write;
 *  - per thread, the stack of held locks (grown on demand: no limit).
 * New edges, new classes and the cycle search take `graph`, one mutex.
 *
 * Same class: locks made at one init site (an array of accounts) share a
 * class, and a class graph cannot tell "x then y" from "y then x" among
 * them.  The kernel reports any such nesting unless annotated.  Here two
 * locks of one class are checked as a pair of locks: taking y while
 * holding x records (x, y) and reports if (y, x) was recorded.  That
 * catches the classic transfer inversion and stays silent for locks taken
 * in address order (ks_mutex_lock2) or along a tree, without annotation;
 * what it misses is a longer cycle among locks of one class (x -> y -> z ->
 * x), and a pair whose addresses were reused by other locks of the class.
 *
 * An inverted edge is recorded in the map (it is reported once) but not in
 * the graph, so the graph stays acyclic and every report names a cycle
 * that ends in the edge being added.
 *
 * Re-entry: the thread that is inside this file (`busy`) is not checked
 * again, whatever it calls (malloc, backtrace, the handler, `graph` itself:
 * a ks_mutex whose own slow path calls in here).
 */
#include "lockreg.h"

#include <ksync/lockdep.h>
#include <ksync/mutex.h>
#include <ksync/rmutex.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <unistd.h>

#define FRAMES 16
#define CLASS_BITS 14 /* 16384 classes */
#define CLASS_SIZE (1u << CLASS_BITS)
#define EDGE_BITS 17 /* 131072 edges and pairs */
#define EDGE_SIZE (1u << EDGE_BITS)

KS_HIDDEN int ks_ld_on_;
static int abort_after;        /* relaxed: KS_LOCKDEP_ABORT */
static uint64_t counts[KS_LOCKDEP_EVENTS]; /* relaxed: statistics */
static ks_lockdep_handler_fn *handler; /* relaxed pair with handler_arg: see ks_lockdep_handler */
static void *handler_arg;
static int full_said;          /* relaxed: a table-full note was printed */
static int edges_full;         /* relaxed: the edge map is full; no new order is recorded */

struct edge {
    struct ks_ld_class *from, *to;
    const void *from_lock, *to_lock;   /* the locks of the first sighting */
    const void *from_site, *to_site;   /* where each was taken then */
    int tid;
    char thread[16];
    int nframes;
    void *frames[FRAMES];              /* the stack of the acquisition of `to` */
};

struct ks_ld_class {
    uint32_t id; /* 1.. */
    const char *name;
    const void *site;        /* the init site, or NULL for a lock of its own */
    const void *lock;        /* a lock never initialised: the class is the lock */
    const void *first;       /* ... and where it was first taken, for reports */
    unsigned kind, sub;
    /* under `graph` */
    struct edge **out;
    uint32_t nout, cap;
    uint32_t seen;          /* the search that last visited it */
    struct edge *via;       /* the edge that search came in by */
};

static ks_mutex_t graph = {0u, 0u};
static struct ks_ld_class **ctab;    /* acquire/release: class table, published once */
static uint32_t nclasses;            /* under graph */
struct slot {
    uint64_t key;   /* acquire/release: published after e */
    struct edge *e; /* relaxed: ordered by the key; dereferenced under graph only */
};
static struct slot *etab; /* acquire/release: published once, before ctab */
static uint32_t nedges;              /* under graph */
static uint32_t search_mark;         /* under graph */

/* ---- a thread's held locks ---- */

struct held {
    const void *lock;
    struct ks_ld_class *cls;
    const void *site;
    int trylock;
};

static KS_TLS struct {
    struct held *h;
    unsigned n, cap;
    int busy;
    int armed;    /* the exit hook */
    uint64_t gen; /* the process image the list belongs to (ks_process_gen) */
} me;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static int tid(void)
{
    return (int)(ks_thread_id() >> 32);
}

/* ---- classes ---- */

static uint64_t class_hash(const char *name, const void *site, unsigned kind, unsigned sub)
{
    uint64_t h = 1469598103934665603ull;
    if (name)
        for (const char *p = name; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ull;
    else
        h ^= mix((uint64_t)(uintptr_t)site);
    return mix(h ^ ((uint64_t)kind << 40) ^ ((uint64_t)sub << 48));
}

static int class_is(const struct ks_ld_class *c, const char *name, const void *site, const void *lock,
                    unsigned kind, unsigned sub)
{
    if (c->kind != kind || c->sub != sub)
        return 0;
    if (name || c->name)
        return name && c->name && strcmp(name, c->name) == 0;
    return c->site == site && c->lock == lock;
}

static void say_full(const char *what)
{
    if (!__atomic_exchange_n(&full_said, 1, __ATOMIC_RELAXED))
        fprintf(stderr, "ksync lockdep: the %s table is full: new orders are no longer checked\n", what);
}

/* The class of the lock of record r: the record's cache, else found or
 * made (under graph).  NULL when the tables are full or memory is out. */
static struct ks_ld_class *class_of(struct ks_lockrec *r)
{
    /* acquire: pairs with the release store below (the class is complete)
     * and with the NULL stores of ks_ls_init and ks_lock_name */
    struct ks_ld_class *c = __atomic_load_n(&r->ld_class, __ATOMIC_ACQUIRE);
    if (KS_LIKELY(c))
        return c;
    const char *name = __atomic_load_n(&r->name, __ATOMIC_ACQUIRE); /* pairs with ks_lock_name */
    const void *site = __atomic_load_n(&r->site, __ATOMIC_RELAXED); /* informative */
    unsigned kind = __atomic_load_n(&r->kind, __ATOMIC_RELAXED);
    unsigned sub = __atomic_load_n(&r->ld_sub, __ATOMIC_RELAXED);
    /* A lock that was never initialised (KS_MUTEX_INIT, PTHREAD_MUTEX_INITIALIZER,
     * zeroed memory) is a class of its own, as the kernel's static locks:
     * two such locks first taken at the same line (both sides of a
     * ks_mutex_lock2) must not share a class, or the address order of
     * lock2 would look like two opposite orders (relaxed: as `site`). */
    const void *first = NULL, *lock = NULL;
    if (!name && !__atomic_load_n(&r->inited, __ATOMIC_RELAXED)) {
        first = site;
        site = NULL;
        lock = r->lock;
    }
    struct ks_ld_class **t = __atomic_load_n(&ctab, __ATOMIC_ACQUIRE); /* pairs with ks_lockdep_set */
    if (!t)
        return NULL;
    uint64_t h = class_hash(name, lock ? lock : site, kind, sub);
    ks_mutex_lock(&graph);
    for (uint32_t n = 0, i = (uint32_t)h & (CLASS_SIZE - 1); n < CLASS_SIZE; n++, i = (i + 1) & (CLASS_SIZE - 1)) {
        struct ks_ld_class *x = t[i];
        if (x && class_is(x, name, site, lock, kind, sub)) {
            c = x;
            break;
        }
        if (!x) {
            if (nclasses + 1 >= CLASS_SIZE / 2 || !(x = calloc(1, sizeof *x)))
                break;
            x->id = ++nclasses;
            x->name = name; /* names are never freed (src/lockstat.c) */
            x->site = site;
            x->lock = lock;
            x->first = first;
            x->kind = kind;
            x->sub = sub;
            t[i] = x; /* read only under graph */
            c = x;
            break;
        }
    }
    ks_mutex_unlock(&graph);
    if (!c) {
        say_full("class");
        return NULL;
    }
    /* release: the class's fields before the pointer (pairs with the acquire
     * above); a rename or re-init racing with this may be overwritten: the
     * next lookup after it finds the same class, a statistic's precision */
    __atomic_store_n(&r->ld_class, c, __ATOMIC_RELEASE);
    return c;
}

/* ---- the edge map ---- */

static uint64_t class_key(const struct ks_ld_class *a, const struct ks_ld_class *b)
{
    return ((uint64_t)a->id << 32 | b->id) & ~(1ull << 63); /* ids < 2^14: never 0 */
}

static uint64_t pair_key(const void *x, const void *y)
{
    uint64_t k = mix((uint64_t)(uintptr_t)x * 0x9e3779b97f4a7c15ull ^ mix((uint64_t)(uintptr_t)y));
    return k | (1ull << 63); /* apart from the class keys, and never 0 */
}

static struct edge *edge_find(uint64_t key)
{
    /* acquire: pairs with the release in make_tables (the zeroed map) */
    struct slot *etab_ = __atomic_load_n(&etab, __ATOMIC_ACQUIRE);
    if (!etab_)
        return NULL;
    for (uint32_t n = 0, i = (uint32_t)mix(key) & (EDGE_SIZE - 1); n < EDGE_SIZE; n++, i = (i + 1) & (EDGE_SIZE - 1)) {
        /* acquire: pairs with the release in edge_put (the edge is complete) */
        uint64_t k = __atomic_load_n(&etab_[i].key, __ATOMIC_ACQUIRE);
        if (k == key)
            return __atomic_load_n(&etab_[i].e, __ATOMIC_RELAXED); /* ordered by the key's acquire */
        if (!k)
            return NULL;
    }
    return NULL;
}

/* Under graph, with room checked (nedges below EDGE_SIZE / 2). */
static void edge_put(uint64_t key, struct edge *e)
{
    for (uint32_t i = (uint32_t)mix(key) & (EDGE_SIZE - 1);; i = (i + 1) & (EDGE_SIZE - 1))
        if (!__atomic_load_n(&etab[i].key, __ATOMIC_RELAXED)) { /* only writers under graph store keys */
            __atomic_store_n(&etab[i].e, e, __ATOMIC_RELAXED); /* published by the key's release */
            __atomic_store_n(&etab[i].key, key, __ATOMIC_RELEASE); /* pairs with edge_find */
            nedges++;
            return;
        }
}

/* Under graph: is there a path from `from` to `to` in the graph?  If so,
 * each class on it has `via` set to the edge it was reached by. */
static int reaches(struct ks_ld_class *from, struct ks_ld_class *to)
{
    uint32_t mark = ++search_mark;
    size_t cap = 64, n = 0;
    struct ks_ld_class **todo = malloc(cap * sizeof *todo);
    if (!todo)
        return 0;
    from->seen = mark;
    from->via = NULL;
    todo[n++] = from;
    int found = 0;
    while (n && !found) {
        struct ks_ld_class *c = todo[--n];
        for (uint32_t k = 0; k < c->nout; k++) {
            struct ks_ld_class *d = c->out[k]->to;
            if (d->seen == mark)
                continue;
            d->seen = mark;
            d->via = c->out[k];
            if (d == to) {
                found = 1;
                break;
            }
            if (n == cap) {
                struct ks_ld_class **more = realloc(todo, 2 * cap * sizeof *todo);
                if (!more)
                    break;
                todo = more;
                cap *= 2;
            }
            todo[n++] = d;
        }
    }
    free(todo);
    return found;
}

/* Under graph: e into its source's list. */
static int link_edge(struct edge *e)
{
    struct ks_ld_class *c = e->from;
    if (c->nout == c->cap) {
        uint32_t cap = c->cap ? 2 * c->cap : 4;
        struct edge **out = realloc(c->out, cap * sizeof *out);
        if (!out)
            return -1;
        c->out = out;
        c->cap = cap;
    }
    c->out[c->nout++] = e;
    return 0;
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
        fprintf(f, "      %s", me.h[i].trylock ? "(trylock) " : "");
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

static FILE *out_file;        /* KSYNC_LOCKDEP_FILE, or NULL for stderr */

/* Ends the report begun into *bufp and hands it over. */
static void deliver(int ev, FILE *f, char **bufp)
{
    if (!f)
        return;
    fclose(f); /* sets *bufp */
    char *buf = *bufp;
    if (!buf)
        return;
    __atomic_fetch_add(&counts[ev], 1, __ATOMIC_RELAXED); /* a statistic */
    /* relaxed: a handler and its argument are set before the locks they
     * watch are used (ks_lockdep_handler's contract) */
    ks_lockdep_handler_fn *fn = __atomic_load_n(&handler, __ATOMIC_RELAXED);
    void *arg = __atomic_load_n(&handler_arg, __ATOMIC_RELAXED);
    if (fn) {
        fn(ev, buf, arg);
    } else {
        FILE *o = out_file ? out_file : stderr;
        fputs(buf, o);
        fflush(o);
    }
    free(buf);
    if (__atomic_load_n(&abort_after, __ATOMIC_RELAXED)) {
        fputs("ksync lockdep: KSYNC_LOCKDEP=abort: aborting\n", stderr);
        abort();
    }
}

/* ---- the checks ---- */

/* The list of a thread that is now in a new process image (a child made by
 * fork(), _Fork() or a raw clone: src/thread.c's generation tells them
 * all): the forking thread keeps its private locks (their copies are held
 * by it), but a KS_SHARED mutex is the same object in both processes, held
 * by the parent's thread, not by this one. */
static void new_image(uint64_t gen)
{
    me.gen = gen;
    unsigned k = 0;
    for (unsigned i = 0; i < me.n; i++) {
        const ks_mutex_t *m = me.h[i].lock;
        if (me.h[i].cls && me.h[i].cls->kind == KS_LOCK_MUTEX && (m->flags & KS_SHARED))
            continue;
        me.h[k++] = me.h[i];
    }
    me.n = k;
}

/* Enters the checker: 0 if this thread is already inside it. */
static int enter(void)
{
    if (me.busy)
        return 0;
    me.busy = 1;
    uint64_t g = ks_process_gen();
    if (KS_UNLIKELY(g != me.gen))
        new_image(g);
    return 1;
}
/* 1 the first time `ev` happens at `site` (the misuse reports are made once
 * per call site: a loop that repeats one misuse makes one report).  Kept in
 * the edge map under a key of its own; 1 too when the map is full. */
static struct edge said;

static int first_at(int ev, const void *site)
{
    uint64_t key = mix((uint64_t)(uintptr_t)site ^ ((uint64_t)ev << 56) ^ 0x5bd1e995ull) | (1ull << 63) | 1;
    if (edge_find(key))
        return 0;
    int first = 1;
    ks_mutex_lock(&graph);
    if (edge_find(key))
        first = 0;
    else if (etab && nedges + 1 < EDGE_SIZE / 2) /* etab: under graph, a plain read */
        edge_put(key, &said); /* any non-NULL edge: edge_find's "found" */
    ks_mutex_unlock(&graph);
    return first;
}

static int push(const void *lock, struct ks_ld_class *c, const void *site, int trylock)
{
    if (me.n == me.cap) {
        unsigned cap = me.cap ? 2 * me.cap : 16;
        struct held *h = realloc(me.h, cap * sizeof *h);
        if (!h)
            return -1;
        me.h = h;
        me.cap = cap;
    }
    me.h[me.n++] = (struct held){lock, c, site, trylock};
    return 0;
}

static int find_held(const void *lock)
{
    for (unsigned i = me.n; i-- > 0;)
        if (me.h[i].lock == lock)
            return (int)i;
    return -1;
}

static struct edge *new_edge(const struct held *h, struct ks_ld_class *to, const void *lock, const void *site,
                             void **frames, int nframes)
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
    fprintf(f, ",\n      taking %p at:\n", e->to_lock);
    stack(f, e->frames, e->nframes, e->to_site);
}

/* The order h -> (lock, c) is new (not in the map): record it, or report
 * the cycle it closes.  Frames: this acquisition's stack, taken once. */
static void add_order(const struct held *h, struct ks_ld_class *c, const void *lock, const void *site,
                      void **frames, int *nframes)
{
    if (*nframes < 0)
        *nframes = backtrace(frames, FRAMES);
    int same = h->cls == c;
    uint64_t key = same ? pair_key(h->lock, lock) : class_key(h->cls, c);
    struct edge *e = new_edge(h, c, lock, site, frames, *nframes);
    if (!e)
        return;
    FILE *f = NULL;
    char *buf = NULL;
    size_t len = 0;
    ks_mutex_lock(&graph);
    /* another thread recorded it meanwhile, or there is no room left: the
     * map half full keeps its probes short (a full map stops checking new
     * orders for good, as the kernel's lockdep does when out of entries) */
    if (edge_find(key) || nedges + 1 >= EDGE_SIZE / 2) {
        if (!edge_find(key)) {
            __atomic_store_n(&edges_full, 1, __ATOMIC_RELAXED); /* a switch */
            say_full("order");
        }
        ks_mutex_unlock(&graph);
        free(e);
        return;
    }
    struct edge *back = NULL; /* the first edge of the path back, if any */
    if (same)
        back = edge_find(pair_key(lock, h->lock));
    else if (reaches(c, h->cls))
        back = h->cls->via; /* walked back from h->cls to c below */
    if (back) {
        f = begin(KS_LOCKDEP_CYCLE, &buf, &len);
        if (f) {
            fprintf(f, "    it holds ");
            lock_text(f, h->lock, h->cls);
            fprintf(f, ", taken at ");
            frame(f, h->site);
            fprintf(f, ",\n    and is about to wait for ");
            lock_text(f, lock, c);
            fprintf(f, " at:\n");
            stack(f, frames, *nframes, site);
            if (same) {
                fprintf(f, "    the two locks are of one class; the opposite order was seen:\n");
                edge_text(f, back);
                fprintf(f, "    a thread in the first order and one in the second can wait for each other forever.\n");
            } else {
                /* the path c -> ... -> h->cls, in order: collect it from the end */
                unsigned n = 0;
                for (struct ks_ld_class *x = h->cls; x != c && x->via; x = x->via->from)
                    n++;
                fprintf(f, "    the opposite order, %u step(s) from ", n);
                class_text(f, c);
                fprintf(f, " to ");
                class_text(f, h->cls);
                fprintf(f, ", was seen before:\n");
                struct edge **path = malloc((n ? n : 1) * sizeof *path);
                unsigned k = n;
                for (struct ks_ld_class *x = h->cls; path && x != c && x->via; x = x->via->from)
                    path[--k] = x->via;
                for (unsigned i = 0; path && i < n; i++)
                    edge_text(f, path[i]);
                fprintf(f, "    cycle: ");
                class_text(f, h->cls);
                fprintf(f, " -> ");
                class_text(f, c);
                for (unsigned i = 0; path && i < n; i++) {
                    fprintf(f, " -> ");
                    class_text(f, path[i]->to);
                }
                free(path);
                fprintf(f, "\n    threads that take these orders at the same time can wait for each other forever.\n");
            }
            held_text(f);
        }
        /* in the map (reported once), not in the graph (it stays acyclic) */
        edge_put(key, e);
    } else if (same || link_edge(e) == 0) {
        edge_put(key, e);
    } else {
        free(e); /* no memory for the list: the order is checked again next time */
    }
    ks_mutex_unlock(&graph);
    deliver(KS_LOCKDEP_CYCLE, f, &buf);
}

static void thread_exit(void);

void ks_ld_forget(const void *lock)
{
    if (!enter())
        return;
    int i = find_held(lock);
    if (i >= 0) {
        memmove(&me.h[i], &me.h[i + 1], (me.n - (unsigned)i - 1) * sizeof *me.h);
        me.n--;
    }
    me.busy = 0;
}

/* The lock `lock` of record r is about to be waited for (not a trylock):
 * recursion and order checks. */
void ks_ld_lock(const void *lock, unsigned kind, const void *site)
{
    if (!enter())
        return;
    struct ks_lockrec *r = ks_lockrec_find(lock, 1, kind, site);
    struct ks_ld_class *c = r ? class_of(r) : NULL;
    int i = find_held(lock);
    {
        if (i >= 0 && first_at(KS_LOCKDEP_RECURSION, site)) {
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
                fprintf(f, "    a ks_mutex is not recursive: this thread would wait for itself forever "
                           "(use ks_rmutex).\n");
                held_text(f);
            }
            deliver(KS_LOCKDEP_RECURSION, f, &buf);
        } else if (i < 0 && c && !__atomic_load_n(&edges_full, __ATOMIC_RELAXED)) { /* a switch */
            void *frames[FRAMES];
            int nframes = -1;
            /* me.h stays as it is meanwhile: nothing is pushed while busy */
            for (unsigned k = 0; k < me.n; k++) {
                const struct held *h = &me.h[k];
                if (!h->cls)
                    continue;
                uint64_t key = h->cls == c ? pair_key(h->lock, lock) : class_key(h->cls, c);
                if (KS_LIKELY(edge_find(key) != NULL))
                    continue;
                add_order(h, c, lock, site, frames, &nframes);
            }
        }
    }
    me.busy = 0;
}

/* The lock is now held by this thread. */
void ks_ld_locked(const void *lock, unsigned kind, const void *site, int trylock)
{
    if (!enter())
        return;
    struct ks_lockrec *r = ks_lockrec_find(lock, 1, kind, site);
    struct ks_ld_class *c = r ? class_of(r) : NULL;
    if (!me.armed && ks_thread_at_exit(KS_EXIT_LOCKDEP, thread_exit) == 0)
        me.armed = 1;
    if (push(lock, c, site, trylock) == 0 && r)
        __atomic_store_n(&r->ld_holder, tid(), __ATOMIC_RELAXED); /* informative: who took it */
    me.busy = 0;
}

/* The caller is about to release `lock`; `locked`: the word says it is held. */
void ks_ld_unlock(const void *lock, int locked, const void *site)
{
    if (!enter())
        return;
    int i = find_held(lock);
    struct ks_lockrec *r = ks_lockrec_find(lock, 0, 0, NULL);
    if (i >= 0) {
        memmove(&me.h[i], &me.h[i + 1], (me.n - (unsigned)i - 1) * sizeof *me.h);
        me.n--;
        if (r)
            __atomic_store_n(&r->ld_holder, 0, __ATOMIC_RELAXED);
    } else if (!locked || r) {
        /* Not ours.  Report it if the mutex is not locked at all, or if
         * lockdep saw another thread take it (a lock taken before checking
         * was on is not known: silent). */
        int holder = r ? __atomic_load_n(&r->ld_holder, __ATOMIC_RELAXED) : 0;
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
            if (ev == KS_LOCKDEP_NOT_HELD && r)
                __atomic_store_n(&r->ld_holder, 0, __ATOMIC_RELAXED);
            deliver(ev, f, &buf);
        }
    }
    me.busy = 0;
}

/* `lock` is being destroyed; `locked`: its word says it is held. */
void ks_ld_destroy(const void *lock, int locked, const void *site)
{
    if (!enter())
        return;
    int i = find_held(lock);
    if ((i < 0 && !locked) || !first_at(KS_LOCKDEP_DESTROY_HELD, site)) {
        me.busy = 0;
        return;
    }
    struct ks_lockrec *r = ks_lockrec_find(lock, 0, 0, NULL);
    int holder = i >= 0 ? tid() : r ? __atomic_load_n(&r->ld_holder, __ATOMIC_RELAXED) : 0;
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
        } else if (holder)
            fprintf(f, ", which thread %d holds", holder);
        else
            fprintf(f, ", which is locked");
        fprintf(f, ", at:\n");
        stack(f, fr, n, site);
    }
    deliver(KS_LOCKDEP_DESTROY_HELD, f, &buf);
    me.busy = 0;
}

static void thread_exit(void)
{
    me.armed = 0;
    if (me.n && !me.busy && __atomic_load_n(&ks_ld_on_, __ATOMIC_RELAXED)) {
        me.busy = 1;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = begin(KS_LOCKDEP_EXIT_HELD, &buf, &len);
        if (f) {
            held_text(f);
            fprintf(f, "    nobody can unlock them: a thread that waits for one waits forever.\n");
        }
        deliver(KS_LOCKDEP_EXIT_HELD, f, &buf);
        me.busy = 0;
    }
    free(me.h);
    me.h = NULL;
    me.n = me.cap = 0;
}

/* ---- switches ---- */

static void fork_prepare(void)
{
    ks_mutex_lock(&graph);
}

static void fork_release(void)
{
    ks_mutex_unlock(&graph);
}

static void fork_child(void)
{
    ks_mutex_unlock(&graph);
}

static int make_tables(void)
{
    static int atfork_done;
    if (ks_lockrec_table())
        return ENOMEM;
    ks_mutex_lock(&graph);
    int e = 0;
    if (!etab) { /* under graph: a plain read */
        struct slot *t = calloc(EDGE_SIZE, sizeof *t);
        if (t)
            __atomic_store_n(&etab, t, __ATOMIC_RELEASE); /* pairs with edge_find */
        else
            e = ENOMEM;
    }
    if (!e && !__atomic_load_n(&ctab, __ATOMIC_RELAXED)) { /* under graph */
        struct ks_ld_class **t = calloc(CLASS_SIZE, sizeof *t);
        if (t)
            __atomic_store_n(&ctab, t, __ATOMIC_RELEASE); /* pairs with class_of */
        else
            e = ENOMEM;
    }
    ks_mutex_unlock(&graph);
    if (!e && !__atomic_exchange_n(&atfork_done, 1, __ATOMIC_RELAXED)) {
        /* a fork child must not inherit `graph` held by a thread it does
         * not have; backtrace() loads its unwinder now, not inside a lock */
        pthread_atfork(fork_prepare, fork_release, fork_child);
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
    int e = mode != KS_LOCKDEP_OFF ? make_tables() : 0;
    me.busy = was_busy;
    if (e)
        return -e;
    int old = __atomic_load_n(&abort_after, __ATOMIC_RELAXED) ? KS_LOCKDEP_ABORT : 0;
    __atomic_store_n(&abort_after, mode == KS_LOCKDEP_ABORT, __ATOMIC_RELAXED); /* a switch */
    if (mode != KS_LOCKDEP_OFF) /* relaxed: switches (src/internal.h) */
        __atomic_fetch_or(&ks_trace_all_, KS_TRACE_LOCKDEP, __ATOMIC_RELAXED);
    else
        __atomic_fetch_and(&ks_trace_all_, ~KS_TRACE_LOCKDEP, __ATOMIC_RELAXED);
    int on = __atomic_exchange_n(&ks_ld_on_, mode != KS_LOCKDEP_OFF, __ATOMIC_RELAXED); /* a switch */
    return on ? (old ? old : KS_LOCKDEP_ON) : KS_LOCKDEP_OFF;
}

int ks_lockdep_mode(void)
{
    if (!__atomic_load_n(&ks_ld_on_, __ATOMIC_RELAXED))
        return KS_LOCKDEP_OFF;
    return __atomic_load_n(&abort_after, __ATOMIC_RELAXED) ? KS_LOCKDEP_ABORT : KS_LOCKDEP_ON;
}

void ks_lockdep_handler(ks_lockdep_handler_fn *fn, void *arg)
{
    /* relaxed: set before the locks it watches are used (the header) */
    __atomic_store_n(&handler_arg, arg, __ATOMIC_RELAXED);
    __atomic_store_n(&handler, fn, __ATOMIC_RELAXED);
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

void ks_lockdep_reset(void)
{
    int was_busy = me.busy;
    me.busy = 1;
    ks_mutex_lock(&graph);
    if (!etab) { /* never on: nothing recorded (under graph: a plain read) */
        ks_mutex_unlock(&graph);
        me.busy = was_busy;
        return;
    }
    /* Every edge is in the map once (a linked edge is put there too); a
     * reader that finds a key without the lock only compares its edge
     * with NULL, and every dereference of an edge is made under graph. */
    for (uint32_t i = 0; i < EDGE_SIZE; i++) {
        if (!__atomic_load_n(&etab[i].key, __ATOMIC_RELAXED)) /* under graph: a plain read */
            continue;
        __atomic_store_n(&etab[i].key, 0, __ATOMIC_RELAXED); /* readers then miss it: the slow path */
        struct edge *e = etab[i].e; /* under graph, which alone writes it */
        if (e != &said)
            free(e);
        __atomic_store_n(&etab[i].e, NULL, __ATOMIC_RELAXED); /* readers only compare it with NULL */
    }
    nedges = 0;
    struct ks_ld_class **t = __atomic_load_n(&ctab, __ATOMIC_RELAXED); /* under graph */
    for (uint32_t i = 0; t && i < CLASS_SIZE; i++)
        if (t[i])
            t[i]->nout = 0;
    __atomic_store_n(&edges_full, 0, __ATOMIC_RELAXED); /* a switch */
    ks_mutex_unlock(&graph);
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
    __atomic_store_n(&r->ld_sub, subclass, __ATOMIC_RELAXED); /* read by class_of after the acquire below */
    /* release: the subclass before the class is looked up again (pairs
     * with the acquire in class_of) */
    __atomic_store_n(&r->ld_class, NULL, __ATOMIC_RELEASE);
    return 0;
}

/* ---- KSYNC_LOCKDEP: switched on before main ---- */

__attribute__((constructor)) static void lockdep_from_env(void)
{
    const char *v = getenv("KSYNC_LOCKDEP");
    if (!v || !*v)
        return;
    int mode;
    if (!strcasecmp(v, "abort"))
        mode = KS_LOCKDEP_ABORT;
    else if (!strcmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes"))
        mode = KS_LOCKDEP_ON;
    else {
        if (strcmp(v, "0") && strcasecmp(v, "off") && strcasecmp(v, "no"))
            fprintf(stderr, "ksync: KSYNC_LOCKDEP=%s: not 0, 1 or abort; checking stays off\n", v);
        return;
    }
    const char *path = getenv("KSYNC_LOCKDEP_FILE");
    if (path && *path) {
        out_file = fopen(path, "a");
        if (!out_file)
            fprintf(stderr, "ksync: KSYNC_LOCKDEP_FILE=%s: cannot open it; reports go to stderr\n", path);
    }
    if (ks_lockdep_set(mode) < 0)
        fprintf(stderr, "ksync: KSYNC_LOCKDEP: no memory for the tables; checking stays off\n");
}
