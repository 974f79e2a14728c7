#!/usr/bin/env bash
# Runs every fuzz target of the module, one after another, for FUZZTIME each.
#
#   scripts/fuzz.sh            # the short pass of `make test`: 1000 inputs a target
#   scripts/fuzz.sh 5000x      # more inputs a target
#   scripts/fuzz.sh 600        # a long run: ten minutes a target (600s works too)
#
# The targets are found, not listed: every `func FuzzXxx` in a _test.go file.
# `go test` (and so `make test`) already runs each target's seeds: the f.Add
# calls and the corpus committed under <package>/testdata/fuzz/<Target>/. A
# failing input is written there and fails the run: commit it with the fix,
# so that it stays a regression test.
#
# A pass counted in inputs (Nx) is what CI runs. A pass counted in time
# once failed under load with no input written: Go's fuzzer races the end of
# -fuzztime against its workers, and a worker starved of CPU when the time
# is up makes the target fail with "context deadline exceeded" and nothing to
# reproduce (golang/go#51484). A count has no deadline to race. The pass is
# also made not to depend on the machine: one fuzzing worker (-parallel 1:
# on a busy machine several only starve one another), and a private, empty
# fuzz cache, so that it starts from the committed corpus alone rather than
# from whatever earlier runs left in $(go env GOCACHE)/fuzz. A pass counted
# in time keeps Go's cache, so that long runs build on one another, and
# there that bare deadline failure is reported but does not fail the run.
#
# A worker that dies without a reproducer (Go's "fuzzing process hung or
# terminated unexpectedly" with nothing written to testdata/fuzz: the OOM
# killer, or one input past Go's 10 s limit) is reported as such, with the
# worker's output, and fails the run.
set -euo pipefail

fuzztime="${1:-1000x}"
case "$fuzztime" in
*[!0-9]*) ;;
'') ;;
*) fuzztime="${fuzztime}s" ;; # plain seconds, as before
esac
if ! [[ "$fuzztime" =~ ^[1-9][0-9]*(x|s|m)$ ]]; then
	echo "usage: $0 [Nx | N | Ns | Nm]   (inputs or time per target; default 1000x)" >&2
	exit 2
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# package target, for every fuzz target of the module
mapfile -t targets < <(
	grep -rH --include='*_test.go' --exclude-dir=.git '^func Fuzz[A-Z0-9_][A-Za-z0-9_]*(' . |
		sed -E 's#^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#./\1 \2#' | sort -u
)
if ((${#targets[@]} == 0)); then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
gocache="$(go env GOCACHE)"

started=$SECONDS
failed=()
built=""
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	bin="$work/bin/${pkg//\//_}.test"
	if [[ "$built" != "$pkg" ]]; then
		# One instrumented test binary per package, run once per target.
		echo "== building $pkg for fuzzing"
		if ! go test -c -fuzz . -o "$bin" "$pkg"; then
			failed+=("$pkg(build)")
			continue
		fi
		built="$pkg"
		# Where go test would keep the package's fuzz cache, or a private one.
		cachedir="$gocache/fuzz/$(go list -f '{{.ImportPath}}' "$pkg")"
		if [[ "$fuzztime" == *x ]]; then
			cachedir="$work/cache/${pkg//\//_}"
		fi
	fi
	corpus="$pkg/testdata/fuzz/$name"
	before="$(ls "$corpus" 2>/dev/null | sort || true)"
	log="$work/$name.log"
	echo "== $name ($pkg), $fuzztime"
	# Run as go test runs it, in the package's directory (the corpus is
	# read from and written to testdata/fuzz there). -test.run '^$': only
	# the target, not the package's other tests (some need the services).
	# -test.timeout: a hung pass fails with its goroutines' stacks instead
	# of holding CI until its own limit.
	if (cd "$pkg" && "$bin" -test.run '^$' -test.fuzz "^${name}\$" -test.fuzztime "$fuzztime" \
		-test.parallel "${FUZZ_PARALLEL:-1}" -test.timeout "${FUZZ_TIMEOUT:-10m}" -test.fuzzcachedir "$cachedir") >"$log" 2>&1; then
		tail -n 2 "$log"
		continue
	fi
	new="$(comm -13 <(echo "$before") <(ls "$corpus" 2>/dev/null | sort || true))"
	if [[ "$fuzztime" != *x && -z "$new" ]] && grep -q '^    context deadline exceeded$' "$log" &&
		! grep -q 'Failing input written\|panic\|hung or terminated' "$log"; then
		tail -n 4 "$log"
		echo "fuzz: $name: Go's fuzzer ran out its time with a worker busy (golang/go#51484); nothing to reproduce, not a failure" >&2
		continue
	fi
	cat "$log"
	failed+=("$name")
	if [[ -n "$new" ]]; then
		echo "fuzz: $name failed; the input is in $corpus/: $new" >&2
	elif grep -q 'hung or terminated unexpectedly\|terminated by unexpected signal' "$log"; then
		echo "fuzz: $name: the fuzzing worker died and left no input to reproduce it" \
			"(killed for memory, or one input ran past Go's 10 s limit); see the output above" >&2
	fi
done

echo "fuzz: ${#targets[@]} targets, $fuzztime each, in $((SECONDS - started))s"
if ((${#failed[@]})); then
	echo "fuzzing found failures in: ${failed[*]}" >&2
	exit 1
fi
