/* src/alloc.c - the library's one allocation helper. */
#include "internal.h"

#include <stdlib.h>

void *ks_alloc_lines(size_t bytes)
{
    /* aligned_alloc wants a size that is a multiple of the alignment */
    size_t rounded = (bytes + KS_CACHELINE - 1) & ~(size_t)(KS_CACHELINE - 1);
    return rounded < bytes ? NULL : aligned_alloc(KS_CACHELINE, rounded);
}
