/* src/arch.c - the arch layer's one variable: the word every full fence of
 * a ThreadSanitizer build touches (ksync/arch.h explains why).  Defined in
 * every build, so that an application built with TSan may link a library
 * built without it. */
#include "internal.h"

uint32_t ks_arch_fence_word;
