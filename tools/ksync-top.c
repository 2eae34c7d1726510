/* tools/ksync-top.c - the live view of a running process's lock statistics
 * (docs/lockstat.md, "The live view").
 *
 *   ksync-top [-b] [-d SECONDS] [-n COUNT] [-r ROWS] PID
 *
 * The process publishes its table by class in the shared-memory object
 * KS_LOCKSTAT_PAGE_PREFIX "<pid>" (include/ksync/lockstat.h) when it runs
 * with lock statistics on: KSYNC_LOCKSTAT=1, `ksync-run --stat`, or
 * ks_lockstat_publish().  ksync-top maps it read-only and prints it every
 * SECONDS (default 1), with the rate of acquisitions and contended
 * acquisitions since the previous look; it never writes to the process or
 * stops it.  -b: plain output (no screen clearing), as when the output is
 * not a terminal; -n: stop after COUNT looks; -r: at most ROWS classes
 * (default 20).  Exit status: 0, 1 when the page cannot be read (no such
 * process, statistics not on, a page of another layout), 2 for bad usage.
 *
 * The page is read as a seqlock reader: copy, then keep the copy only if
 * the count was even and the same before and after.  A page whose fields
 * are out of range (a corrupt or foreign object) is refused, not followed.
 */
#include <ksync/lockstat.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: ksync-top [-b] [-d SECONDS] [-n COUNT] [-r ROWS] PID\n");
    exit(2);
}

/* A consistent copy of the page, or -1 after many tries (a publisher that
 * died in the middle of a write leaves the count odd for good). */
static int snapshot(const struct ks_lockstat_page *pg, struct ks_lockstat_page *out)
{
    for (int tries = 0; tries < 200; tries++) {
        /* acquire: pairs with the publisher's release of the even count */
        uint32_t s0 = __atomic_load_n(&pg->seq, __ATOMIC_ACQUIRE);
        if (!(s0 & 1)) {
            memcpy(out, (const void *)pg, sizeof *out); /* may be torn: checked below */
            /* the copy before the second look at the count (ThreadSanitizer
             * knows no fence: a build for it reads the count seq_cst) */
#ifndef __SANITIZE_THREAD__
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
#endif
            if (__atomic_load_n(&pg->seq, __ATOMIC_RELAXED) == s0)
                return 0;
        }
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return -1;
}

static int valid(struct ks_lockstat_page *p, pid_t pid)
{
    if (p->magic != KS_LOCKSTAT_PAGE_MAGIC || p->version != KS_LOCKSTAT_PAGE_VERSION ||
        p->rows_max != KS_LOCKSTAT_PAGE_ROWS || p->rows > KS_LOCKSTAT_PAGE_ROWS || p->pid != pid || p->mode > 2)
        return 0;
    p->prog[sizeof p->prog - 1] = 0;
    for (uint32_t k = 0; k < p->rows; k++)
        p->row[k].cls[sizeof p->row[k].cls - 1] = 0;
    return 1;
}

static void fmt_ns(char *b, size_t len, uint64_t ns)
{
    if (ns < 10000)
        snprintf(b, len, "%llu ns", (unsigned long long)ns);
    else if (ns < 10000000)
        snprintf(b, len, "%.1f us", (double)ns / 1e3);
    else if (ns < 10000000000ull)
        snprintf(b, len, "%.1f ms", (double)ns / 1e6);
    else
        snprintf(b, len, "%.1f s", (double)ns / 1e9);
}

static void fmt_rate(char *b, size_t len, double r)
{
    if (r < 0)
        snprintf(b, len, "-");
    else if (r < 10000)
        snprintf(b, len, "%.0f", r);
    else if (r < 10000000)
        snprintf(b, len, "%.1fk", r / 1e3);
    else
        snprintf(b, len, "%.1fM", r / 1e6);
}

/* The previous look's row of the same class, for the rates. */
static const struct ks_lockstat_row *before(const struct ks_lockstat_page *prev, const struct ks_lockstat_row *r)
{
    for (uint32_t k = 0; prev && k < prev->rows; k++)
        if (strcmp(prev->row[k].cls, r->cls) == 0 && prev->row[k].kind == r->kind)
            return &prev->row[k];
    return NULL;
}

static void show(const struct ks_lockstat_page *p, const struct ks_lockstat_page *prev, unsigned maxrows, int alive)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double age = ((double)now.tv_sec * 1e9 + (double)now.tv_nsec - (double)p->updated_ns) / 1e9;
    double dt = prev ? (double)(p->updated_ns - prev->updated_ns) / 1e9 : 0;
    printf("ksync-top: pid %d (%s)%s, mode %s: %u lock(s) in %u class(es); updated %.1f s ago, every %.1f s\n",
           (int)p->pid, p->prog, alive ? "" : " [exited]",
           p->mode == 2 ? "all" : p->mode == 1 ? "contention" : "off", p->locks, p->classes, age < 0 ? 0 : age,
           (double)p->interval_ns / 1e9);
    printf("%-40s %-5s %5s %12s %9s %12s %9s %10s %10s %10s\n", "class (name or site)", "kind", "locks", "acquired",
           "acq/s", "contended", "cont/s", "wait", "wait max", "hold avg");
    for (uint32_t k = 0; k < p->rows && k < maxrows; k++) {
        const struct ks_lockstat_row *r = &p->row[k];
        const struct ks_lockstat_row *b = before(prev, r);
        char ar[16], cr[16], w[16], wm[16], ha[16];
        fmt_rate(ar, sizeof ar, b && dt > 0 && r->acquisitions >= b->acquisitions
                                    ? (double)(r->acquisitions - b->acquisitions) / dt
                                    : -1);
        fmt_rate(cr, sizeof cr, b && dt > 0 && r->contended >= b->contended
                                    ? (double)(r->contended - b->contended) / dt
                                    : -1);
        fmt_ns(w, sizeof w, r->wait_ns);
        fmt_ns(wm, sizeof wm, r->wait_max_ns);
        if (r->holds)
            fmt_ns(ha, sizeof ha, r->hold_ns / r->holds);
        else
            snprintf(ha, sizeof ha, "-"); /* none timed (a semaphore has no holder) */
        printf("%-40.40s %-5s %5u %12llu %9s %12llu %9s %10s %10s %10s\n", r->cls, ks_lockstat_kind_name(r->kind), r->locks,
               (unsigned long long)r->acquisitions, ar, (unsigned long long)r->contended, cr, w, wm, ha);
    }
    if (p->classes > p->rows || p->rows > maxrows)
        printf("(%u more class(es) not shown)\n",
               p->classes - (p->rows < maxrows ? p->rows : maxrows));
}

int main(int argc, char **argv)
{
    double delay = 1.0;
    long count = -1;
    unsigned maxrows = 20;
    int batch = !isatty(1);
    int opt;
    while ((opt = getopt(argc, argv, "bd:n:r:h")) != -1) {
        char *end;
        switch (opt) {
        case 'b':
            batch = 1;
            break;
        case 'd':
            delay = strtod(optarg, &end);
            if (*end || !(delay >= 0.01 && delay <= 3600))
                usage();
            break;
        case 'n':
            count = strtol(optarg, &end, 10);
            if (*end || count < 1)
                usage();
            break;
        case 'r':
            maxrows = (unsigned)strtoul(optarg, &end, 10);
            if (*end || maxrows < 1 || maxrows > KS_LOCKSTAT_PAGE_ROWS)
                usage();
            break;
        default:
            usage();
        }
    }
    if (optind != argc - 1)
        usage();
    char *end;
    long pid = strtol(argv[optind], &end, 10);
    if (*end || pid <= 0 || pid > 0x7fffffff)
        usage();

    char name[64];
    snprintf(name, sizeof name, KS_LOCKSTAT_PAGE_PREFIX "%ld", pid);
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr,
                "ksync-top: no live view for pid %ld (%s): is it running with lock statistics on "
                "(KSYNC_LOCKSTAT=1, ksync-run --stat)?\n",
                pid, strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(struct ks_lockstat_page)) {
        fprintf(stderr, "ksync-top: /dev/shm%s is not a ksync lock statistics page (size %lld)\n", name,
                (long long)st.st_size);
        close(fd);
        return 1;
    }
    const struct ks_lockstat_page *pg = mmap(NULL, sizeof *pg, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (pg == MAP_FAILED) {
        fprintf(stderr, "ksync-top: mmap: %s\n", strerror(errno));
        return 1;
    }
    struct ks_lockstat_page *cur = malloc(sizeof *cur), *prev = malloc(sizeof *prev);
    if (!cur || !prev) {
        fprintf(stderr, "ksync-top: no memory\n");
        free(cur);
        free(prev);
        return 1;
    }
    int have_prev = 0, status = 0;
    for (long n = 0; count < 0 || n < count; n++) {
        if (n)
            nanosleep(&(struct timespec){(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)}, NULL);
        if (snapshot(pg, cur) != 0) {
            fprintf(stderr, "ksync-top: the page of pid %ld stays in the middle of an update\n", pid);
            status = 1;
            break;
        }
        if (!valid(cur, (pid_t)pid)) {
            fprintf(stderr, "ksync-top: /dev/shm%s is not a page of this version for pid %ld\n", name, pid);
            status = 1;
            break;
        }
        int alive = kill((pid_t)pid, 0) == 0 || errno == EPERM;
        if (!batch)
            fputs("\033[H\033[2J", stdout);
        else if (n)
            putchar('\n');
        show(cur, have_prev ? prev : NULL, maxrows, alive);
        fflush(stdout);
        struct ks_lockstat_page *t = prev;
        prev = cur;
        cur = t;
        have_prev = 1;
        if (!alive)
            break;
    }
    free(cur);
    free(prev);
    munmap((void *)pg, sizeof *pg);
    return status;
}
