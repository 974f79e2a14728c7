# WasmWiz. `make run` runs the platform; `make test` runs every test.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
PKGS     := ./...

.PHONY: all build run test vet fmt-check testdata bench fuzz clean

all: build

build: ## static binaries into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/api ./cmd/api
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/worker ./cmd/worker

run: ## the platform on this machine: services, migrations, a worker and the api
	scripts/run.sh

test: fmt-check vet ## the whole suite, against the local services (started if need be), then a short fuzz pass
	scripts/services.sh
	scripts/install_test_tools.sh
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	scripts/fuzz.sh $(FUZZ_SHORT)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

testdata: ## rebuild testdata/*.wasm from their sources (needs wabt's wat2wasm)
	testdata/build.sh

bench: ## micro-benchmarks; figures go to BENCHMARKS.md
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./internal/runner/ ./internal/worker/

.PHONY: bench-platform
bench-platform: ## the whole platform under load (api, workers, services; ~2 min); BENCH_ARGS="-soak 300" for the memory check
	scripts/bench.sh $(BENCH_ARGS)

# The fuzz pass of `make test`: inputs per target, the same on any machine.
FUZZ_SHORT ?= 1000x

fuzz: ## every fuzz target for FUZZTIME each: seconds (default 10) or Nx inputs (go test already runs their seeds)
	scripts/fuzz.sh $(or $(FUZZTIME),10)

.PHONY: soak
soak: ## the soak run with faults on a schedule (minutes; SOAK_ARGS="-d 10m -r 50")
	scripts/soak.sh $(SOAK_ARGS)

clean:
	rm -rf bin
