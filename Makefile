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

test: fmt-check vet ## the whole suite, against the local services
	scripts/install_test_tools.sh
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

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

fuzz: ## every fuzz target for FUZZTIME seconds each (go test already runs their seeds)
	scripts/fuzz.sh $(or $(FUZZTIME),10)

clean:
	rm -rf bin
