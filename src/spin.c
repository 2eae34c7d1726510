/* src/spin.c - when spinning can help.
 *
 * A spin-wait only pays if the thread it waits for can run meanwhile.  With
 * one usable CPU (taskset, a container's cpuset) every spin round takes the
 * CPU that thread needs, so the primitives skip spinning; a barrier of more
 * parties than usable CPUs likewise.
 *
 * Which mask: the machine's online count is wrong under `taskset -c 0` (a
 * 2-party barrier then ran at a tenth of pthread_barrier's rate), and the
 * calling thread's own mask is wrong for a thread pinned to one CPU whose
 * partner runs on another (a pinned ping-pong then slept on every hand-off:
 * 1.0x glibc instead of 55-95x).  What matters is where the *other* threads
 * may run, which ksync approximates by the process's mask: that of its main
 * thread (tid == pid), which taskset and cpusets set and per-thread pinning
 * leaves alone.  If the main thread has exited, the caller's own mask is
 * used.  The mask can change, so each thread re-reads it every
 * KS_CPU_REFRESH calls; the syscall costs well under a microsecond and is
 * only made from slow paths.
 */
#include "internal.h"

#include <sched.h>
#include <unistd.h>

#define KS_CPU_REFRESH 256

static KS_TLS int tls_cpus;
static KS_TLS unsigned tls_calls;

int ks_usable_cpus(void)
{
    if (KS_UNLIKELY(tls_cpus == 0 || ++tls_calls % KS_CPU_REFRESH == 0)) {
        cpu_set_t set;
        int n = 0;
        if (sched_getaffinity(getpid(), sizeof set, &set) == 0 ||
            sched_getaffinity(0, sizeof set, &set) == 0)
            n = CPU_COUNT(&set);
        tls_cpus = n > 0 ? n : 1;
    }
    return tls_cpus;
}
