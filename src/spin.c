/* src/spin.c - when spinning can help.
 *
 * A spin-wait only pays if the thread it waits for can run meanwhile.  With
 * one usable CPU (an affinity mask, taskset, a container's cpuset) every spin
 * round takes the CPU that thread needs, so the primitives skip spinning;
 * a barrier of more parties than usable CPUs likewise.  The count is the
 * calling thread's affinity mask (sched_getaffinity), not the machine's
 * online CPUs: helper-measured on this machine, a 2-party barrier under
 * `taskset -c 0` ran at a tenth of pthread_barrier's rate when it counted
 * online CPUs.  The mask can change, so each thread re-reads it every
 * KS_CPU_REFRESH calls; the syscall costs well under a microsecond and is
 * only made from slow paths.
 */
#include "internal.h"

#include <sched.h>

#define KS_CPU_REFRESH 256

static _Thread_local int tls_cpus;
static _Thread_local unsigned tls_calls;

int ks_usable_cpus(void)
{
    if (KS_UNLIKELY(tls_cpus == 0 || ++tls_calls % KS_CPU_REFRESH == 0)) {
        cpu_set_t set;
        int n = 0;
        if (sched_getaffinity(0, sizeof set, &set) == 0)
            n = CPU_COUNT(&set);
        tls_cpus = n > 0 ? n : 1;
    }
    return tls_cpus;
}
