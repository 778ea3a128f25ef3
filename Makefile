# Thin wrapper: dependencies, build, run, test. CMake does the real work.
BUILD   ?= build
JOBS    ?= $(shell nproc)
CONFIG  ?= examples/tocsin.yaml
CMAKE_FLAGS ?= -G Ninja -DCMAKE_BUILD_TYPE=Release

.PHONY: all deps build run test fuzz bench bench-delivery clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) > $(BUILD).cmake.log 2>&1 || (cat $(BUILD).cmake.log; exit 1)
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/app/tocsin run -c $(CONFIG)

# Unit, golden and integration tests (real Kafka protocol via the embedded
# broker and kcat), then a short libFuzzer run of the decoder.
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=15

FUZZ_SECONDS ?= 60
fuzz: deps
	@cmake -S . -B $(BUILD)-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
	  -DTOCSIN_FUZZ=ON -DTOCSIN_BUILD_TESTS=OFF -DTOCSIN_BUILD_BENCH=OFF > $(BUILD)-fuzz.cmake.log 2>&1 || (cat $(BUILD)-fuzz.cmake.log; exit 1)
	@cmake --build $(BUILD)-fuzz -j $(JOBS) --target fuzz_decoder fuzz_rules
	@bash tests/fuzz/run.sh $(BUILD)-fuzz $(FUZZ_SECONDS)

bench: build
	@bash bench/e2e.sh $(BUILD)

# Must-reach SMS delivery through a real Kannel (bench/README.md, "must_reach").
bench-delivery: build
	@bash bench/must_reach.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-fuzz $(BUILD).cmake.log $(BUILD)-fuzz.cmake.log
