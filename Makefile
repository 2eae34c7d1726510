# ksync - one Makefile.  `make help` lists the targets.
#
# Variables a user may set:
#   ARCH=generic                  the plain-C11 arch layer instead of this CPU's
#                                 (include/ksync/arch.h picks by compiler macros;
#                                 ARCH=generic only defines KS_ARCH_GENERIC)
#   CC, CXX, BUILD (output dir, default build), PREFIX, DESTDIR
#   STRESS_ARGS="..."             extra arguments for `make stress`
#   BENCH_ARGS="..."              extra arguments for `make bench`
#   SAN=address,undefined|thread  (used by `make asan` / `make tsan`)

CC      ?= gcc
CXX     ?= g++
BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
# libksync.so.1: the rwlock's reader bias changed what the inline functions
# of include/ksync/rwlock.h expect of the library (an old binary's inline
# writer would skip the revocation).  The drop-in layer's ABI is the POSIX
# one, unchanged.  1.1: symbols added (the scoped guards' report, ks_robust).
# 1.2: symbols added (ks_channel).  1.3: symbols added (ks_robust_rwlock);
# ks_queue_side_t gained any_seq in its padding (no field an inline
# function reads moved; a process-shared queue needs both sides on 1.3).
# 1.4: the mutex's lock-statistics mark (KS_MUTEX_TRACED) and its symbols.
# 1.5: the rwlock's mark (KS_RWLOCK_TRACED, a bit of its bias word that the
# inline functions test; an old binary's inline rwlock unlock does not, so
# KS_LOCKSTAT_ALL needs every rwlock user built with 1.5 headers), and
# symbols added (ks_sem_trywait_slow, ks_rwlock_rdlock_debug_).  Nothing
# changes for old binaries while lock statistics are not in ALL mode.
VERSION := 1.5.0
SOVER   := 1
DROPIN_VERSION := 0.1.0
DROPIN_SOVER := 0

HOST_ARCH := $(shell uname -m)
ifeq ($(origin ARCH),undefined)
  ifneq ($(filter $(HOST_ARCH),x86_64 aarch64),)
    ARCH := $(HOST_ARCH)
  else
    ARCH := generic
  endif
endif
# TSan sees C11 atomics, not inline asm: a TSan build uses the generic arch layer.
ifneq ($(findstring thread,$(SAN)),)
  ARCH := generic
endif

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
SANFLAGS := $(if $(SAN),-fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer,)
CPPFLAGS += -D_GNU_SOURCE -Iinclude
CFLAGS  ?= -O2 -g
ARCH_DEF := $(if $(filter generic,$(ARCH)),-DKS_ARCH_GENERIC,)
CPPFLAGS += $(ARCH_DEF)
# -fexceptions: pthread_cleanup_push then runs its handler on any unwinding
# (a C++ exception thrown by a ks_once function, as glibc's own build).
# -fasynchronous-unwind-tables: a cancellable wait (src/futex.c) can be
# unwound from any of its instructions by asynchronous cancellation (the
# default on x86-64; said for every target).
# KS_NO_ANNOTATIONS: the library tells race detectors nothing itself; the inline
# functions a program compiles do (include/ksync/annotate.h, docs/annotate.md)
LIB_CFLAGS := -std=c11 $(WARN) -DKS_NO_ANNOTATIONS -fPIC -fvisibility=hidden -fexceptions -fasynchronous-unwind-tables -Isrc $(SANFLAGS)
# Applications (tests, stress, bench) see only include/: the white-box tests
# below are the only ones given src/.
APP_CFLAGS := -std=c11 $(WARN) $(SANFLAGS)
WHITEBOX := test_futex test_spin test_lockstat_debug
LDLIBS  += -lpthread

LIB_SRCS := $(filter-out src/debug_yield.c,$(wildcard src/*.c))
LIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)
YLIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/yobj/%.o) $(BUILD)/yobj/debug_yield.o
HEADERS  := include/ksync.h $(wildcard include/ksync/*.h)
CXX_HEADERS := include/ksync.hpp
CXXWARN  := -Wall -Wextra -Werror
ARCH_HEADERS := $(wildcard arch/*/ks_arch.h)

STATIC   := $(BUILD)/libksync.a
YSTATIC  := $(BUILD)/libksync-yield.a
SHARED   := $(BUILD)/libksync.so.$(VERSION)

TEST_C   := $(wildcard tests/*.c)
# tests/hpp_noexceptions.cc is a program of its own (built with
# -fno-exceptions, which Criterion cannot be), run by tests/test_hpp.cc.
TEST_CXX := $(filter-out tests/hpp_noexceptions.cc,$(wildcard tests/*.cc))
HPP_NOEXC_BIN := $(BUILD)/tests/hpp-noexceptions
# tests/test_hpp.cc is compiled twice, as C++17 (suite hpp17) and as C++20
# (suite hpp20, object test_hpp20.o): ksync.hpp must build under both.
TEST_OBJS := $(TEST_C:tests/%.c=$(BUILD)/tests/%.o) $(TEST_CXX:tests/%.cc=$(BUILD)/tests/%.o) \
             $(BUILD)/tests/test_hpp20.o
TEST_BIN := $(BUILD)/tests/ksync-tests

# examples/: the course's C writer (python/reader.py is its reader, docs/python.md),
# and the course's deadlock as a plain pthread program (docs/lockdep.md)
EXAMPLES := $(BUILD)/examples/shm_writer $(BUILD)/examples/bank_abba

STRESS_COMMON := stress/harness.c
# stress/ref_*.c: reference implementations, compiled into both programs (ref_cache.c
# serves S13 and bench section 10, ref_queue.c S10-S14 only; ref_barrier.h is header-only)
REF_SRCS    := $(wildcard stress/ref_*.c)
STRESS_SRCS := $(STRESS_COMMON) stress/main.c $(wildcard stress/s_*.c) $(REF_SRCS)
BENCH_SRCS  := stress/bench_main.c stress/bench.c $(wildcard stress/b_*.c) $(REF_SRCS)
# section 1's C++ rows (std::lock_guard on ks::mutex and std::mutex): one C++
# object, linked with libstdc++
BENCH_CXX_OBJ := $(BUILD)/stress/b_hpp.o
STRESS_BIN  := $(BUILD)/stress/ksync-stress
BENCH_BIN   := $(BUILD)/stress/ksync-bench
REF_LIBS    ?= -lck -lurcu -lurcu-cds
REF_INC     ?=

.PHONY: dropin check-dropin all help deps test run-tests stress bench asan tsan check-aarch64 model install clean check-exports docs-check plots docs
all: $(STATIC) $(BUILD)/libksync.so $(EXAMPLES) $(BUILD)/ksync-top

help:
	@sed -n 's/^## //p' Makefile
## make                 build/libksync.a and build/libksync.so (SONAME libksync.so.1), build/examples/{shm_writer,bank_abba}
## make test            install missing packages (as root), build and run the Criterion tests
## make run-tests       run the Criterion tests without the package check (TEST_ARGS="--filter cond/*")
## make stress          the stress scenarios on short defaults (S1-S22), then again with yield
##                      injection (STRESS_ARGS="..." for both), then the process scenarios S21
##                      and S22 asked for 64 parties (they run 31: a channel holds 32 attachments)
## make bench           throughput/latency against glibc, Concurrency Kit and liburcu, callgrind counts
##                      (BENCH_ARGS="--only cache"); every repetition also to build/bench.csv
## make plots           SVG plots of the last make bench (build/bench.csv) into docs/plots/ (gnuplot)
## make asan            the Criterion tests under AddressSanitizer+UBSan (build/asan)
## make tsan            the stress scenarios and self-test under ThreadSanitizer (build/tsan), then
##                      tools/check-annotate.sh (TSan, Helgrind and DRD on tests/annotate/guarded.c)
## make check-aarch64   cross-build for AArch64 and run the self-test and stress runner under qemu-aarch64,
##                      then the stress runner again with the AArch64 drop-in layer preloaded
## make model           spin models of the futex protocols: each passes, each BUG_ variant fails (docs/model.md)
## make dropin          build/libksync-pthread.so and build/ksync-run (docs/dropin.md)
## make check-dropin    the drop-in tests on glibc and preloaded, then real Debian programs preloaded
## make check-exports   check that libksync.so exports ks_* symbols only
## make docs            render docs/pictures/ (state graphs with graphviz, race timelines with mscgen) to SVG
## make docs-check      fail if README.md or docs/ cite a test, file, make target, option, commit or page that does
##                      not exist, or a page or picture cannot be reached from README.md
## make deps            install the packages the build, tests and references need (tools/deps.sh)
## make install         PREFIX=/usr/local DESTDIR= : headers (arch/ included), libraries (libksync-pthread too),
##                      pkg-config file, bin/ksync-run, bin/ksync-top, man pages (man/: man ks_mutex)
## make clean           remove build/
## variables: ARCH=generic (plain-C11 arch layer), CC, CXX, BUILD, PREFIX, DESTDIR, SAN

# ---- library ----------------------------------------------------------------
$(BUILD)/obj/%.o: src/%.c $(HEADERS) $(ARCH_HEADERS) $(wildcard src/*.h) | $(BUILD)/obj
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) $(CFLAGS) -c $< -o $@
$(BUILD)/yobj/%.o: src/%.c $(HEADERS) $(ARCH_HEADERS) $(wildcard src/*.h) | $(BUILD)/yobj
	$(CC) $(CPPFLAGS) -DKS_DEBUG_YIELD $(LIB_CFLAGS) $(CFLAGS) -c $< -o $@

$(STATIC): $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^
$(YSTATIC): $(YLIB_OBJS)
	rm -f $@ && ar rcs $@ $^
$(SHARED): $(LIB_OBJS)
	$(CC) -shared -Wl,-soname,libksync.so.$(SOVER) -Wl,--no-undefined $(SANFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/libksync.so: $(SHARED)
	ln -sf libksync.so.$(VERSION) $(BUILD)/libksync.so.$(SOVER)
	ln -sf libksync.so.$(VERSION) $@

$(BUILD)/obj $(BUILD)/yobj $(BUILD)/tests $(BUILD)/stress $(BUILD)/examples:
	mkdir -p $@

# a plain pthread program: no ksync header, no ksync library (ksync-run brings it)
$(BUILD)/examples/bank_abba: examples/bank_abba.c | $(BUILD)/examples
	$(CC) -D_GNU_SOURCE $(APP_CFLAGS) $(CFLAGS) -o $@ $< -lpthread
$(BUILD)/examples/%: examples/%.c $(wildcard examples/*.h) $(HEADERS) $(ARCH_HEADERS) $(STATIC) | $(BUILD)/examples
	$(CC) $(CPPFLAGS) $(APP_CFLAGS) $(CFLAGS) -o $@ $< $(STATIC) $(LDLIBS)

# Only ks_* symbols may leave the shared library.
check-exports: $(BUILD)/libksync.so
	@bad=$$(nm -D --defined-only $(SHARED) | awk '{print $$3}' | grep -v '^ks_' || true); \
	if [ -n "$$bad" ]; then echo "exported non-ks_ symbols: $$bad"; exit 1; fi; \
	echo "exports: $$(nm -D --defined-only $(SHARED) | grep -c ' T ks_') ks_* functions, nothing else"

# ---- dependencies -------------------------------------------------------------
deps:
	@sh tools/deps.sh base

# ---- tests ------------------------------------------------------------------
$(BUILD)/tests/%.o: tests/%.c $(HEADERS) $(ARCH_HEADERS) $(wildcard tests/*.h) | $(BUILD)/tests
	$(CC) $(CPPFLAGS) $(TEST_DEFS) $(APP_CFLAGS) $(if $(filter $(WHITEBOX),$*),-Isrc,) $(CFLAGS) -c $< -o $@
# tests/test_python.c runs python3 on python/ with this build's libksync.so and
# writer; under ASan, python3 needs the ASan runtime preloaded to load the library.
$(BUILD)/tests/test_python.o: TEST_DEFS := -DKT_REPO='"$(CURDIR)"' -DKT_LIB='"$(abspath $(BUILD))/libksync.so.$(SOVER)"' \
    -DKT_WRITER='"$(abspath $(BUILD))/examples/shm_writer"' \
    $(if $(findstring address,$(SAN)),-DKT_ASAN_RT='"$(shell $(CC) -print-file-name=libasan.so)"',)
$(BUILD)/tests/test_python.o: examples/course.h
# tests/test_lockstat.c runs this build's ksync-top on its own process
$(BUILD)/tests/test_lockstat.o: TEST_DEFS := -DKT_TOP='"$(abspath $(BUILD))/ksync-top"'
$(BUILD)/tests/test_hpp.o $(BUILD)/tests/test_hpp20.o: HPP_DEFS := -DKT_HPP_NOEXC_BIN='"$(HPP_NOEXC_BIN)"'
$(BUILD)/tests/%.o: tests/%.cc $(HEADERS) $(CXX_HEADERS) $(ARCH_HEADERS) | $(BUILD)/tests
	$(CXX) $(CPPFLAGS) $(HPP_DEFS) -std=c++17 $(CXXWARN) $(SANFLAGS) $(CFLAGS) -c $< -o $@
$(BUILD)/tests/test_hpp20.o: tests/test_hpp.cc $(HEADERS) $(CXX_HEADERS) $(ARCH_HEADERS) | $(BUILD)/tests
	$(CXX) $(CPPFLAGS) $(HPP_DEFS) -std=c++20 -DKS_HPP_SUITE=hpp20 $(CXXWARN) $(SANFLAGS) $(CFLAGS) -c $< -o $@
$(HPP_NOEXC_BIN): tests/hpp_noexceptions.cc $(HEADERS) $(CXX_HEADERS) $(ARCH_HEADERS) $(STATIC) | $(BUILD)/tests
	$(CXX) $(CPPFLAGS) -std=c++17 -fno-exceptions $(CXXWARN) $(SANFLAGS) $(CFLAGS) -o $@ $< $(STATIC) $(LDLIBS)
$(TEST_BIN): $(TEST_OBJS) $(STATIC) $(HPP_NOEXC_BIN) $(BUILD)/libksync.so $(EXAMPLES) $(BUILD)/ksync-top
	$(CXX) $(SANFLAGS) -o $@ $(TEST_OBJS) $(STATIC) -lcriterion $(LDLIBS) $(TEST_WRAP)

# tests/test_robust_rwlock.c steps into the robust rwlock's call of ks_robust's
# lock to make an interleaving happen, tests/test_channel.c kills a child at
# one futex wake inside ks_channel_open, and tests/test_lockstat.c guards the
# library's calloc with a ks_mutex (the wrappers forward every other call).
TEST_WRAP := -Wl,--wrap=ks_robust_timedlock -Wl,--wrap=ks_robust_trylock -Wl,--wrap=ks_futex_wake \
             -Wl,--wrap=calloc

run-tests: $(TEST_BIN)
	$(TEST_BIN) $(TEST_ARGS)

test: deps
	@$(MAKE) --no-print-directory all check-exports docs-check run-tests

docs-check:
	python3 tools/docs-check.py

# allocator_may_return_null: the allocation-failure tests ask for 16 TiB and
# expect ENOMEM, where ASan would otherwise abort the process.
asan: deps
	@ASAN_OPTIONS=allocator_may_return_null=1:$(ASAN_OPTIONS) $(MAKE) --no-print-directory BUILD=build/asan SAN=address,undefined run-tests
# Criterion 2.4.1 cannot start under ThreadSanitizer (its boxfort arena wants
# address ranges TSan reserves: Snaipe/Criterion#274, open since 2018), so the
# TSan job runs the programs that drive every primitive from many threads: the
# stress scenarios (ksync side only: the references' inline-asm atomics are
# invisible to TSan) and the self-test.
tsan: deps
	@$(MAKE) --no-print-directory BUILD=build/tsan SAN=thread build/tsan/stress/ksync-stress build/tsan/stress/ksync-selftest
	TSAN_OPTIONS=halt_on_error=1 build/tsan/stress/ksync-selftest
	TSAN_OPTIONS=halt_on_error=1:die_after_fork=0 build/tsan/stress/ksync-stress --scenario all --impl ksync --iters 20000 --yield 20
	@# a TSan-built program against the uninstrumented library: the annotations (docs/annotate.md)
	@$(MAKE) --no-print-directory $(STATIC)
	sh tools/check-annotate.sh $(BUILD)

# ---- stress and bench -----------------------------------------------------------
$(STRESS_BIN): $(STRESS_SRCS) $(wildcard stress/*.h) $(YSTATIC) | $(BUILD)/stress
	$(CC) $(CPPFLAGS) -DKS_DEBUG_YIELD $(APP_CFLAGS) $(CFLAGS) -Istress $(REF_INC) -o $@ $(STRESS_SRCS) $(YSTATIC) $(REF_LIBS) $(LDLIBS) -lm $(SANFLAGS)
$(BENCH_CXX_OBJ): stress/b_hpp.cc stress/b_hpp.h $(HEADERS) $(CXX_HEADERS) $(ARCH_HEADERS) | $(BUILD)/stress
	$(CXX) $(CPPFLAGS) -std=c++17 $(CXXWARN) $(CFLAGS) -Istress -c $< -o $@
$(BENCH_BIN): $(BENCH_SRCS) $(BENCH_CXX_OBJ) $(wildcard stress/*.h) $(STATIC) | $(BUILD)/stress
	$(CC) $(CPPFLAGS) $(APP_CFLAGS) $(CFLAGS) -Istress $(REF_INC) -o $@ $(BENCH_SRCS) $(BENCH_CXX_OBJ) $(STATIC) $(REF_LIBS) $(LDLIBS) -lstdc++ -lm

stress: deps
	@$(MAKE) --no-print-directory $(STRESS_BIN)
	$(STRESS_BIN) --scenario all $(STRESS_ARGS)
	$(STRESS_BIN) --scenario all --yield 20 $(STRESS_ARGS)
	$(STRESS_BIN) --scenario S21,S22 --threads 64 --iters 300

bench: deps
	@$(MAKE) --no-print-directory $(BENCH_BIN)
	$(BENCH_BIN) --csv $(BUILD)/bench.csv $(BENCH_ARGS)

# docs/pictures/*.svg from their .dot (graphviz) and .msc (mscgen) sources
docs:
	@sh tools/deps.sh docs
	sh tools/pictures.sh

# docs/plots/*.svg from the last `make bench` (docs/bench.md, "Plots")
plots:
	@sh tools/deps.sh plots
	sh tools/plots.sh $(BUILD)/bench.csv docs/plots

# ---- drop-in pthread layer (docs/dropin.md) ------------------------------------
# build/libksync-pthread.so: pthread_mutex/cond/rwlock/barrier/spin/once and
# sem_* on ksync, for LD_PRELOAD (build/ksync-run -- prog args).  Its copy of
# the library comes from libksync.a with every ks_* symbol kept inside
# (--exclude-libs); only the POSIX names leave it.  On x86-64 a version
# script adds glibc's two pthread_cond_* versions (src/dropin/x86_64.map).
comma := ,
DROPIN_SRCS := $(wildcard src/dropin/*.c)
DROPIN_OBJS := $(DROPIN_SRCS:src/dropin/%.c=$(BUILD)/dobj/%.o)
DROPIN_SO   := $(BUILD)/libksync-pthread.so.$(DROPIN_VERSION)
DROPIN_MAP  := $(if $(findstring x86_64,$(shell $(CC) -dumpmachine)),src/dropin/x86_64.map,)
DROPIN_LDMAP := $(if $(DROPIN_MAP),-Wl$(comma)--version-script=$(DROPIN_MAP),)
DROPIN_TEST_BIN := $(BUILD)/tests/dropin-tests
DROPIN_BENCH := $(BUILD)/stress/dropin-bench

$(BUILD)/dobj:
	mkdir -p $@
$(BUILD)/dobj/%.o: src/dropin/%.c $(wildcard src/dropin/*.h) $(HEADERS) src/internal.h | $(BUILD)/dobj
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) -fno-strict-aliasing $(CFLAGS) -c $< -o $@
$(DROPIN_SO): $(DROPIN_OBJS) $(STATIC) $(DROPIN_MAP)
	$(CC) -shared -Wl,-soname,libksync-pthread.so.$(DROPIN_SOVER) -Wl,--no-undefined -Wl,--exclude-libs,ALL \
	    $(DROPIN_LDMAP) $(SANFLAGS) -o $@ $(DROPIN_OBJS) $(STATIC) -ldl $(LDLIBS)
$(BUILD)/libksync-pthread.so: $(DROPIN_SO)
	ln -sf libksync-pthread.so.$(DROPIN_VERSION) $(BUILD)/libksync-pthread.so.$(DROPIN_SOVER)
	ln -sf libksync-pthread.so.$(DROPIN_VERSION) $@
$(BUILD)/ksync-run: tools/ksync-run.in
	sed -e 's|@LIBDIR@|$(abspath $(BUILD))|' $< > $@ && chmod 755 $@
# ksync-top PID: the live view of a process's lock statistics (docs/lockstat.md)
$(BUILD)/ksync-top: tools/ksync-top.c include/ksync/lockstat.h include/ksync/common.h | $(BUILD)/obj
	$(CC) $(CPPFLAGS) $(APP_CFLAGS) $(CFLAGS) -o $@ $<
dropin: $(BUILD)/libksync-pthread.so $(BUILD)/ksync-run $(BUILD)/ksync-top

# The drop-in tests and bench are plain pthread programs: they never see
# ksync's headers or library, so the same binary runs on glibc and preloaded.
$(DROPIN_TEST_BIN): $(wildcard tests/dropin/*.c) $(wildcard tests/dropin/*.h) | $(BUILD)/tests
	$(CC) -D_GNU_SOURCE $(APP_CFLAGS) $(CFLAGS) -o $@ $(filter %.c,$^) -lcriterion -lpthread -ldl -lrt
$(DROPIN_BENCH): stress/dropin_bench.c | $(BUILD)/stress
	$(CC) -D_GNU_SOURCE $(APP_CFLAGS) $(CFLAGS) -o $@ $< -lpthread

check-dropin: deps
	@sh tools/deps.sh dropin
	@$(MAKE) --no-print-directory dropin $(DROPIN_TEST_BIN) $(DROPIN_BENCH) $(STRESS_BIN) $(TEST_BIN) $(BUILD)/examples/bank_abba $(BUILD)/ksync-top
	$(DROPIN_TEST_BIN) $(TEST_ARGS)
	KSYNC_DROPIN_EXPECT=1 $(BUILD)/ksync-run -- $(DROPIN_TEST_BIN) $(TEST_ARGS)
	sh tools/check-lockdep.sh $(BUILD)
	sh tools/check-top.sh $(BUILD)
	sh tools/check-stat-rwsem.sh $(BUILD)
	sh tools/dropin-own.sh $(BUILD)
	sh tools/check-dropin.sh $(BUILD)

# ---- Promela models (spin) ------------------------------------------------------
# Needs no ksync build: spin -a, cc pan.c and pan per check, under build/model.
model:
	@sh tools/deps.sh model
	sh tests/model/run.sh build/model

# ---- AArch64 under qemu-user ------------------------------------------------------
AARCH64_CC := aarch64-linux-gnu-gcc
AARCH64_CK := $(CURDIR)/build/aarch64/deps
check-aarch64:
	@sh tools/deps.sh aarch64 $(AARCH64_CK)
	@$(MAKE) --no-print-directory CC=$(AARCH64_CC) ARCH=aarch64 BUILD=build/aarch64 \
	    REF_INC="-isystem $(AARCH64_CK)/usr/include" \
	    REF_LIBS="$(AARCH64_CK)/usr/lib/aarch64-linux-gnu/libck.a -lurcu -lurcu-cds" \
	    build/aarch64/stress/ksync-stress build/aarch64/stress/ksync-selftest build/aarch64/libksync-pthread.so
	qemu-aarch64 -L / build/aarch64/stress/ksync-selftest
	qemu-aarch64 -L / build/aarch64/stress/ksync-stress --scenario all --threads 4 --iters 20000 --yield 20
	# the drop-in layer on AArch64 (its layout asserts hold at compile time): the
	# stress runner's pthread references and threads on it
	qemu-aarch64 -L / -E LD_PRELOAD=$(CURDIR)/build/aarch64/libksync-pthread.so.0 \
	    build/aarch64/stress/ksync-stress --scenario all --threads 4 --iters 2000

$(BUILD)/stress/ksync-selftest: stress/selftest.c $(STATIC) | $(BUILD)/stress
	$(CC) $(CPPFLAGS) $(APP_CFLAGS) $(CFLAGS) -o $@ $< $(STATIC) $(LDLIBS) $(SANFLAGS)

# ---- install ------------------------------------------------------------------
install: all dropin
	install -d $(DESTDIR)$(PREFIX)/include/ksync $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/ksync.h $(CXX_HEADERS) $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(filter-out include/ksync.h,$(HEADERS)) $(DESTDIR)$(PREFIX)/include/ksync/
	for a in $(ARCH_HEADERS); do install -D -m 644 $$a $(DESTDIR)$(PREFIX)/include/ksync/$$a; done
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libksync.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libksync.so.$(SOVER)
	ln -sf libksync.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libksync.so
	install -m 755 $(DROPIN_SO) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libksync-pthread.so.$(DROPIN_VERSION) $(DESTDIR)$(PREFIX)/lib/libksync-pthread.so.$(DROPIN_SOVER)
	ln -sf libksync-pthread.so.$(DROPIN_VERSION) $(DESTDIR)$(PREFIX)/lib/libksync-pthread.so
	sed -e 's|@LIBDIR@|$(PREFIX)/lib|' tools/ksync-run.in > $(DESTDIR)$(PREFIX)/bin/ksync-run
	chmod 755 $(DESTDIR)$(PREFIX)/bin/ksync-run
	install -m 755 $(BUILD)/ksync-top $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' tools/ksync.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ksync.pc
	install -d $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man3
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 $(wildcard man/*.3) $(DESTDIR)$(PREFIX)/share/man/man3/
	sh tools/man-links.sh $(DESTDIR)$(PREFIX)/share/man/man3 $(wildcard man/*.3)

clean:
	rm -rf build
