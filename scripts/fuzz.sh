#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10), one after another.
#
#   scripts/fuzz.sh          # a short pass, about a minute and a half
#   scripts/fuzz.sh 600      # a longer run: ten minutes a target
#
# `go test` (and so `make test`) already runs each target's seeds: the
# f.Add calls and the corpus committed under <package>/testdata/fuzz/.
# Fuzzing adds new inputs to Go's cache ($(go env GOCACHE)/fuzz); a failing
# input is written to <package>/testdata/fuzz/<Target>/ and fails the run.
# Commit it with the fix so that it stays a regression test.
set -euo pipefail

seconds="${1:-10}"
case "$seconds" in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# package target
targets=(
	"./internal/runner FuzzValidate"
	"./internal/protocol FuzzDecodeRequest"
	"./internal/protocol FuzzDecodeReply"
	"./internal/httpapi FuzzDecodeExecuteRequest"
	"./internal/httpapi FuzzReadMultipart"
	"./internal/auth FuzzCheckKeyFormat"
	"./internal/auth FuzzParseToken"
)

failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "== $name ($pkg), ${seconds}s"
	# -run '^$': only the target, not the package's other tests (some need
	# the services); -parallel bounds workers on small CI machines.
	if ! go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "${seconds}s" -parallel "${FUZZ_PARALLEL:-2}"; then
		failed+=("$name")
	fi
done

if ((${#failed[@]})); then
	echo "fuzzing found failures in: ${failed[*]}" >&2
	exit 1
fi
echo "all ${#targets[@]} targets fuzzed ${seconds}s each without a failure"
