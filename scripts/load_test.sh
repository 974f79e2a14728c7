#!/usr/bin/env bash
# Load-test a running WasmWiz platform with the Go load generator
# (cmd/loadgen): /health/live, POST /api/wasm/execute, or both, printing
# throughput, errors by HTTP status, error code and execution status, and
# latency percentiles (p50, p90, p99, p99.9, max).
#
#   scripts/load_test.sh [-u URL] [-c CONCURRENCY] [-n REQUESTS] [-d SECONDS]
#                        [-k KEY] [-m MODULE_ID] [-i INPUT] [-r RATE]
#                        [-t health|execute|all] [-w WARMUP_SECONDS] [-j] [-o DIR]
#
#   -u  base URL of the api                         (default http://127.0.0.1:8080)
#   -c  concurrency: callers (closed loop), or most requests in flight (open loop)   (default 10)
#   -n  requests per target; with -d, whichever comes first
#   -d  seconds per target                          (default 10 when -n is not given)
#   -k  API key (or set WASMWIZ_API_KEY); passed to the generator in its
#       environment, never on a command line
#   -m  module id to execute                        (needed by -t execute)
#   -i  stdin text of each execution                (default empty)
#   -r  open loop at RATE requests/s: latency counts from each request's
#       intended send time, so queueing is not hidden (default closed loop)
#   -t  health, execute, or all (default: all with -m, health without)
#   -w  seconds of unmeasured warm-up before each target (default 1)
#   -j  print JSON instead of text
#   -o  also write each target's JSON result to DIR/<target>.json
#
# The generator is $LOADGEN when set, else built from ./cmd/loadgen into a
# temporary directory.
#
# Example:
#   key=$(./bin/api keys create --name load --role user --tier pro)
#   id=$(curl -s -H "Authorization: Bearer $key" -F file=@testdata/hello.wasm \
#          http://127.0.0.1:8080/api/wasm/upload | jq -r .id)
#   scripts/load_test.sh -k "$key" -m "$id" -c 32 -d 10
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

url=http://127.0.0.1:8080 conc=10 requests="" seconds="" module="" input="" rate="" target="" warm=1 json="" outdir=""
key=${WASMWIZ_API_KEY:-}
while getopts "u:c:n:d:k:m:i:r:t:w:jo:h" opt; do
  case $opt in
    u) url=$OPTARG ;;
    c) conc=$OPTARG ;;
    n) requests=$OPTARG ;;
    d) seconds=$OPTARG ;;
    k) key=$OPTARG ;;
    m) module=$OPTARG ;;
    i) input=$OPTARG ;;
    r) rate=$OPTARG ;;
    t) target=$OPTARG ;;
    w) warm=$OPTARG ;;
    j) json=1 ;;
    o) outdir=$OPTARG ;;
    h) usage 0 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "load_test: unexpected argument $1" >&2; usage; }

if [ -z "$target" ]; then
  if [ -n "$module" ]; then target=all; else target=health; fi
fi
case $target in
  health) targets=(health) ;;
  execute) targets=(execute) ;;
  all) targets=(health execute) ;;
  *) echo "load_test: -t $target: want health, execute or all" >&2; exit 2 ;;
esac
if [[ " ${targets[*]} " == *" execute "* && -z "$module" ]]; then
  echo "load_test: executing needs -m MODULE_ID (upload a module first; see -h)" >&2
  exit 2
fi

loadgen=${LOADGEN:-}
if [ -z "$loadgen" ]; then
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/wasmwiz-loadgen.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  go build -o "$tmp/loadgen" ./cmd/loadgen
  loadgen=$tmp/loadgen
fi
[ -z "$outdir" ] || mkdir -p "$outdir"

args=(-u "$url" -c "$conc" -warmup "${warm}s")
[ -z "$requests" ] || args+=(-n "$requests")
[ -z "$seconds" ] || args+=(-d "$seconds")
[ -z "$rate" ] || args+=(-r "$rate")
[ -z "$json" ] || args+=(-json)

for t in "${targets[@]}"; do
  targs=("${args[@]}" -t "$t")
  [ "$t" != execute ] || targs+=(-m "$module" -i "$input")
  [ -z "$outdir" ] || targs+=(-json-out "$outdir/$t.json")
  WASMWIZ_API_KEY=$key "$loadgen" "${targs[@]}"
done
