#!/usr/bin/env bash
# The whole-platform benchmark (make bench-platform): builds api, worker and
# loadgen; starts the api and N workers on this machine against the local
# services (a fresh database, its own NATS subject prefix, 127.0.0.1 only);
# creates a pro key with limits raised for the run; uploads hello, cpu and
# goprog; and in one run measures
#   1. GET /health/live throughput (concurrency 32) and latency (concurrency 1),
#   2. execute hello at concurrency 1 and 32,
#   3. execute cpu (CPU-heavy) at concurrency 1 and 8,
#   4. execute goprog (2.6 MB Go-built module, stdin "hello") at concurrency 1 and 8,
#   5. the runner alone, in-process, on the same modules (the floor:
#      go test -bench 'RunHelloCached$|RunCPU|RunGoHello' ./internal/runner/),
#      and a bare NATS request-reply between two processes (scripts/natsrr),
#      the floor under hello c=1's trip to a worker and back,
# and prints each execute figure as a ratio to its floor and to /health/live;
# then the scale-out figure: cpu throughput with 1 worker and with 2 workers
# at WORKER_CONCURRENCY=1 each. Also reported: the CPU each process used per
# request, and PostgreSQL transactions per execute (a hot execute should
# make none; usage records are batched).
#
#   scripts/bench.sh [-d SECONDS] [-w WORKERS] [-soak SECONDS] [-sample SECONDS]
#                    [-profile DIR] [-steps REGEX] [-keep]
#
#   -d       seconds measured per step, each after 1 s of warm-up (default 5)
#   -w       workers for steps 1-4 (default 2)
#   -soak    also run hello at concurrency 32 for SECONDS, sampling the RSS of
#            the api and every worker from /proc/PID/status, and say whether
#            each worker's memory stayed flat (within 10%) after the first
#            fifth of the run (e.g. -soak 300 for the 5-minute check)
#   -sample  seconds between RSS samples (default 5)
#   -profile write CPU and allocation profiles of the api and each worker,
#            taken during the hello c=32 step through PPROF_ADDR (a 127.0.0.1
#            port of their own), and the binaries, into DIR:
#            go tool pprof -top DIR/api DIR/api.cpu
#   -steps   run only the steps whose names match REGEX (an extended regular
#            expression: health_c32 health_c1 hello_c1 hello_c32 cpu_c1 cpu_c8
#            goprog_c1 goprog_c8 scale), e.g. -steps hello for a quick look
#            at the execute path; the default runs them all
#   -keep    keep the work directory (logs, JSON results, RSS samples) and
#            the database (its executions table has every execution's
#            queue_ms and duration_ms, to see where latency was spent)
#
# Environment: WORKER_CONCURRENCY (workers of steps 1-4; default GOMAXPROCS),
# BENCH_API_GOMEMLIMIT (default 691MiB, as in deploy/k8s; "" for none),
# BENCH_API_GOMAXPROCS and BENCH_WORKER_GOMAXPROCS (default: Go's, the
# machine's cores or the cgroup's CPU limit; see BENCHMARKS.md for 1),
# BENCH_LOG_LEVEL (the programs' LOG_LEVEL, default info, logs go to files),
# BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432).
# The default run takes about two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
command_line="$0 $*"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
secs=5 nworkers=2 soak=0 sample=5 keep="" profdir="" steps=.
while [ $# -gt 0 ]; do
  case $1 in
    -d) secs=${2:?-d needs seconds}; shift 2 ;;
    -w) nworkers=${2:?-w needs a number}; shift 2 ;;
    -soak) soak=${2:?-soak needs seconds}; shift 2 ;;
    -sample) sample=${2:?-sample needs seconds}; shift 2 ;;
    -profile) profdir=${2:?-profile needs a directory}; shift 2 ;;
    -steps) steps=${2:?-steps needs a regular expression}; shift 2 ;;
    -keep) keep=1; shift ;;
    -h | -help | --help) usage 0 ;;
    *) echo "bench: unknown argument $1" >&2; usage ;;
  esac
done
for v in "$secs" "$nworkers" "$soak" "$sample"; do
  [[ $v =~ ^[0-9]+$ ]] || { echo "bench: $v: want a whole number" >&2; exit 2; }
done
if [ "$secs" -lt 1 ] || [ "$nworkers" -lt 1 ] || [ "$sample" -lt 1 ]; then
  echo "bench: -d, -w and -sample must be at least 1" >&2
  exit 2
fi

need() { command -v "$1" >/dev/null || { echo "bench: needs $1 ($2)" >&2; exit 2; }; }
need go "https://go.dev/dl"
need jq "apt-get install jq"
need curl "apt-get install curl"
need psql "apt-get install postgresql-client"

# ---------------------------------------------------------------- the machine
model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
[ -n "$model" ] || model=$(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)
product=$(cat /sys/class/dmi/id/product_name 2>/dev/null || true)
echo "# WasmWiz whole-platform benchmark"
echo "date:     $(date -u +%FT%TZ)"
echo "command:  $command_line"
echo "machine:  $(nproc) CPUs, ${model:-unknown}${product:+ ($product)}, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
echo "go:       $(go version | cut -d' ' -f3-)"
echo "commit:   $(git describe --always --dirty 2>/dev/null || echo unknown)"
echo "load avg: $(cut -d' ' -f1-3 /proc/loadavg) at start (1, 5, 15 min; the machine may be shared)"
echo

# ---------------------------------------------------------------- clean-up
work=$(mktemp -d "${TMPDIR:-/tmp}/wasmwiz-bench.XXXXXX")
mkdir -p "$work/bin" "$work/logs" "$work/results" "$work/cache"
pg_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
db=wasmwiz_bench_$$
api_pid="" lg_pid="" worker_pids=() db_created="" pprof_addrs=() api_pprof="" metrics_ports=()

stop_pids() { # SIGTERM, then SIGKILL after 15 s
  local p live
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 150); do
    live=""
    for p in "$@"; do kill -0 "$p" 2>/dev/null && live=1; done
    [ -n "$live" ] || break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [ -z "$lg_pid" ] || stop_pids "$lg_pid"
  stop_pids "${worker_pids[@]}" $api_pid
  [ -z "$db_created" ] || [ -n "$keep" ] || psql -q "$pg_url/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1
  if [ -n "$keep" ]; then echo "bench: kept $work and the database $db (DROP DATABASE when done)" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
ports_taken=" "
free_port() { # free_port VAR: a port nobody answers on 127.0.0.1, not handed out before
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    [[ $ports_taken == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      ports_taken+="$p "
      printf -v "$1" '%s' "$p"
      return
    fi
  done
  echo "bench: no free port" >&2
  exit 1
}

cpu_ticks() { # utime+stime of a process, in clock ticks; 0 when gone
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
clk_tck=$(getconf CLK_TCK)

machine_ticks() { # busy and steal ticks of all CPUs since boot
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat
}

pprof_addr() { # pprof_addr VAR: a 127.0.0.1 address for PPROF_ADDR, or "" when not profiling
  local port
  printf -v "$1" '%s' ""
  [ -z "$profdir" ] || { free_port port; printf -v "$1" '127.0.0.1:%s' "$port"; }
}

start_worker() { # id concurrency ("" for the default)
  local port pp
  free_port port
  pprof_addr pp
  env ${BENCH_WORKER_GOMAXPROCS:+GOMAXPROCS=$BENCH_WORKER_GOMAXPROCS} WORKER_ID="$1" METRICS_PORT="$port" \
    WORKER_CONCURRENCY="$2" PPROF_ADDR="$pp" "$work/bin/worker" >>"$work/logs/$1.log" 2>&1 &
  worker_pids+=($!)
  pprof_addrs+=("$pp")
  metrics_ports+=("$port")
}

stop_workers() {
  stop_pids "${worker_pids[@]}"
  worker_pids=() pprof_addrs=() metrics_ports=()
}

forwards() { # requests the workers passed on to the queue group, all workers together
  local port sum=0 n
  for port in "${metrics_ports[@]}"; do
    n=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^wasmwiz_worker_forwards_total / {print int($2)}')
    sum=$((sum + ${n:-0}))
  done
  echo "$sum"
}

wait_workers() { # until /health counts exactly N workers
  local n
  for _ in $(seq 1 150); do
    kill -0 "$api_pid" 2>/dev/null || { echo "bench: the api died; its log:" >&2; tail -20 "$work/logs/api.log" >&2; exit 1; }
    n=$(curl -s "$api/health" | jq -r '.checks.workers.count // 0' 2>/dev/null || echo 0)
    [ "$n" = "$1" ] && return 0
    sleep 0.2
  done
  echo "bench: /health counts ${n:-0} workers, want $1; worker logs in $work/logs" >&2
  tail -5 "$work"/logs/w*.log >&2 || true
  exit 1
}

# ---------------------------------------------------------------- build
echo "building api, worker and loadgen…" >&2
CGO_ENABLED=0 go build -trimpath -o "$work/bin/" ./cmd/api ./cmd/worker ./cmd/loadgen ./scripts/natsrr

# ---------------------------------------------------------------- 5. the floor
# Measured first, while the platform is not running.
echo "measuring the floor: the runner in-process…" >&2
floor_cmd="go test -run '^\$' -bench 'RunHelloCached\$|RunCPU|RunGoHello' -benchmem -count 1 ./internal/runner/"
declare -A floor=()
if eval "$floor_cmd" >"$work/results/floor.txt" 2>&1; then
  while read -r name ns; do floor[$name]=$ns; done < <(
    awk '/^BenchmarkRun(HelloCached|CPU|GoHello)(-[0-9]+)?[ \t]/ {
      n = $1; sub(/^BenchmarkRun/, "", n); sub(/-[0-9]+$/, "", n)
      for (i = 2; i < NF; i++) if ($(i+1) == "ns/op") print n, $i }' "$work/results/floor.txt")
else
  echo "bench: the floor benchmark failed (is internal/runner being edited?); ratios to the floor are left out:" >&2
  tail -5 "$work/results/floor.txt" >&2
fi
floor_hello=${floor[HelloCached]:-} floor_cpu=${floor[CPU]:-} floor_goprog=${floor[GoHello]:-}

# ---------------------------------------------------------------- the platform
scripts/services.sh
rand() { local s; s=$(head -c 96 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9'); echo "${s:0:$1}"; }
export ENVIRONMENT=production
export API_SALT JWT_SECRET
API_SALT=$(rand 32)
JWT_SECRET=$(rand 48)
export DATABASE_URL="$pg_url/$db?sslmode=disable"
export REDIS_URL=redis://127.0.0.1:6379/0 NATS_URL=nats://127.0.0.1:4222
export NATS_SUBJECT_PREFIX="bench_$$_$RANDOM"
export SERVER_HOST=127.0.0.1
free_port SERVER_PORT
export SERVER_PORT
export LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
export COMPILATION_CACHE_DIR=$work/cache
# Limits raised for the run: the pro tier would stop it at 1,000/min.
export RATE_LIMIT_PRO=1000000000 DAILY_QUOTA_PRO=1000000000
api=http://127.0.0.1:$SERVER_PORT
main_conc=${WORKER_CONCURRENCY:-}
unset WORKER_CONCURRENCY WORKER_ID METRICS_PORT PPROF_ADDR

db_created=1
"$work/bin/api" migrate --create-database >"$work/logs/migrate.log" 2>&1 ||
  { echo "bench: migrate failed:" >&2; cat "$work/logs/migrate.log" >&2; exit 1; }
key=$("$work/bin/api" keys create --name bench --role user --tier pro --owner bench 2>>"$work/logs/migrate.log")
umask 077
printf 'Authorization: Bearer %s\n' "$key" >"$work/auth"
export WASMWIZ_API_KEY=$key # for loadgen: never on a command line

for i in $(seq 1 "$nworkers"); do start_worker "w$i" "$main_conc"; done
pprof_addr api_pprof
# The api runs as the deployment files run it: GOMEMLIMIT at 90% of its
# 768Mi limit.
env ${BENCH_API_GOMAXPROCS:+GOMAXPROCS=$BENCH_API_GOMAXPROCS} GOMEMLIMIT="${BENCH_API_GOMEMLIMIT-691MiB}" \
  PPROF_ADDR="$api_pprof" "$work/bin/api" >>"$work/logs/api.log" 2>&1 &
api_pid=$!
wait_workers "$nworkers"

declare -A module=()
for m in hello cpu goprog; do
  module[$m]=$(curl -sS -H @"$work/auth" -F "file=@testdata/$m.wasm" "$api/api/wasm/upload" | jq -r '.id // empty')
  [ -n "${module[$m]}" ] || { echo "bench: upload of $m failed" >&2; exit 1; }
done
# One execute of each, checked, before anything is measured.
check_output() { # module input want-stdout
  local got
  got=$(curl -sS -H @"$work/auth" -H 'Content-Type: application/json' \
    -d "$(jq -nc --arg m "${module[$1]}" --arg i "$2" '{module_id: $m, input: $i}')" "$api/api/wasm/execute" |
    jq -r '"\(.status) \(.stdout)"')
  [ "$got" = "ok $3" ] || { echo "bench: execute $1 = $got; want ok $3" >&2; exit 1; }
}
check_output hello "" "hello, world"
check_output cpu "" "2147403606448073"
check_output goprog "hello" "hello from Go on WASI"

# ---------------------------------------------------------------- measuring
nats_pid=$(pgrep -x nats-server | head -1 || true)
redis_pid=$(pgrep -x redis-server | head -1 || true)
declare -A res=() # name -> "rps p50 p99 p999 max bad requests"
declare -A cpu_line=() others=() # per step: CPU use, and cores busy with other work

# profile NAME ADDR: CPU and allocation profiles over the step, in the background.
profile() {
  local s=$((secs > 1 ? secs - 1 : 1))
  curl -sf -o "$profdir/$1.cpu" "http://$2/debug/pprof/profile?seconds=$s" &
  prof_pids+=($!)
  curl -sf -o "$profdir/$1.allocs" "http://$2/debug/pprof/allocs?seconds=$s" &
  prof_pids+=($!)
}

# measure NAME LOADGEN-ARGS…: 1 s of warm-up, then -d seconds measured,
# with the CPU each process spent.
measure() {
  local name=$1
  shift
  [[ $name =~ $steps ]] || return 0
  "$work/bin/loadgen" -u "$api" -d 1 "$@" >/dev/null 2>&1 || true
  prof_pids=()
  if [ -n "$profdir" ] && [ "$name" = hello_c32 ]; then
    mkdir -p "$profdir"
    cp "$work/bin/api" "$work/bin/worker" "$profdir/"
    profile api "$api_pprof"
    local k
    for k in "${!pprof_addrs[@]}"; do profile "w$((k + 1))" "${pprof_addrs[$k]}"; done
  fi
  local -A before=()
  local p t0 t1 busy0 steal0 busy1 steal1
  for p in $api_pid "${worker_pids[@]}" $nats_pid $redis_pid; do before[$p]=$(cpu_ticks "$p"); done
  read -r busy0 steal0 <<<"$(machine_ticks)"
  local fwd0=0
  [ "${2:-}" != execute ] || fwd0=$(forwards)
  t0=$(date +%s.%N)
  local TIMEFORMAT='%U %S'
  { time "$work/bin/loadgen" -u "$api" -d "$secs" -json-out "$work/results/$name.json" "$@" >"$work/results/$name.txt" 2>&1; } 2>"$work/results/$name.time" ||
    { echo "bench: loadgen failed in step $name:" >&2; cat "$work/results/$name.txt" >&2; exit 1; }
  t1=$(date +%s.%N)
  read -r busy1 steal1 <<<"$(machine_ticks)"
  local api_t=0 wrk_t=0 nats_t=0 redis_t=0
  api_t=$(($(cpu_ticks "$api_pid") - before[$api_pid]))
  for p in "${worker_pids[@]}"; do wrk_t=$((wrk_t + $(cpu_ticks "$p") - before[$p])); done
  [ -z "$nats_pid" ] || nats_t=$(($(cpu_ticks "$nats_pid") - before[$nats_pid]))
  [ -z "$redis_pid" ] || redis_t=$(($(cpu_ticks "$redis_pid") - before[$redis_pid]))
  res[$name]=$(jq -r '[.throughput_rps, .latency_ms.p50, .latency_ms.p99, .latency_ms.p99_9, .latency_ms.max,
      (.failed + ([.by_exec_status | to_entries[] | select(.key != "ok") | .value] | add // 0)), .requests] | @tsv' \
    "$work/results/$name.json")
  read -r _ _ _ _ _ _ n <<<"${res[$name]}"
  IFS=$'\t' read -r "cpu_line[$name]" "others[$name]" < <(awk -v tck="$clk_tck" -v el="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" -v n="$n" \
    -v a="$api_t" -v w="$wrk_t" -v na="$nats_t" -v r="$redis_t" -v lg="$(awk '{print $1 + $2}' "$work/results/$name.time")" \
    -v busy="$((busy1 - busy0))" -v steal="$((steal1 - steal0))" '
    function row(label, sec) { return sprintf("%s %.2f cores %.0f µs/req", label, sec / el, n ? sec / n * 1e6 : 0) }
    BEGIN { ours = (a + w + na + r) / tck + lg; all = busy / tck
      printf "%s | %s | %s | %s | %s || machine busy %.2f cores, others %.2f, steal %.2f\t%.2f\n", row("api", a / tck), row("workers", w / tck),
        row("loadgen", lg), row("nats*", na / tck), row("redis*", r / tck), all / el, (all - ours) / el, steal / tck / el, (all - ours) / el }')
  sed 's/^/    /' "$work/results/$name.txt"
  echo "    cpu: ${cpu_line[$name]}"
  [ "${2:-}" != execute ] || awk -v f="$(($(forwards) - fwd0))" -v n="$n" \
    'BEGIN { printf "    forwards: %d (%.2f per request; a busy worker passing a request on to the queue group)\n", f, n ? f / n : 0 }'
  if [ ${#prof_pids[@]} -gt 0 ]; then
    wait "${prof_pids[@]}" || echo "bench: profiling failed (does this build read PPROF_ADDR?)" >&2
    echo "    profiles of this step: $profdir (go tool pprof -top $profdir/api $profdir/api.cpu)"
  fi
}

ex_hello=(-t execute -m "${module[hello]}")
ex_cpu=(-t execute -m "${module[cpu]}")
ex_goprog=(-t execute -m "${module[goprog]}" -i hello)

echo "## steps 1-4: api + $nworkers worker(s), WORKER_CONCURRENCY=${main_conc:-default (GOMAXPROCS)}, $secs s each after 1 s of warm-up"
echo "   (cpu: share of the machine's cores and CPU time per request; * = shared services, other users' load included)"
pg_stat() { psql -At "$pg_url/postgres" -c "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_returned FROM pg_stat_database WHERE datname = '$db'" 2>/dev/null | tr '|' ' '; }
executes() { curl -s "$api/metrics" | awk '/^wasmwiz_http_requests_total\{/ && /wasm\/execute/ {s += $NF} END {printf "%d\n", s}'; }
sleep 11 # PostgreSQL publishes a backend's statistics within 10 s of its last transaction
read -r pg_x0 pg_ins0 pg_upd0 pg_ret0 <<<"$(pg_stat)"
ex0=$(executes)

echo "### 1. GET /health/live"
measure health_c32 -t health -c 32
measure health_c1 -t health -c 1
echo "### 2. execute hello"
measure hello_c1 "${ex_hello[@]}" -c 1
# The floor under hello c=1's NATS legs: a bare request-reply between two
# processes on this machine, with nothing of ours in it.
if [[ hello_c1 =~ $steps ]]; then
  "$work/bin/natsrr" -url "$NATS_URL" -subject "$NATS_SUBJECT_PREFIX.natsrr" -serve >>"$work/logs/natsrr.log" 2>&1 &
  natsrr_pid=$!
  natsrr_line=$("$work/bin/natsrr" -url "$NATS_URL" -subject "$NATS_SUBJECT_PREFIX.natsrr" -n 5000 2>&1) || natsrr_line="natsrr failed: $natsrr_line"
  kill "$natsrr_pid" 2>/dev/null || true
  wait "$natsrr_pid" 2>/dev/null || true
  echo "    $natsrr_line"
fi
measure hello_c32 "${ex_hello[@]}" -c 32
echo "### 3. execute cpu"
measure cpu_c1 "${ex_cpu[@]}" -c 1
measure cpu_c8 "${ex_cpu[@]}" -c 8
echo "### 4. execute goprog (stdin \"hello\")"
measure goprog_c1 "${ex_goprog[@]}" -c 1
measure goprog_c8 "${ex_goprog[@]}" -c 8

# ---------------------------------------------------------------- soak
if [ "$soak" -gt 0 ]; then
  echo
  echo "## soak: hello at concurrency 32 for $soak s, RSS every $sample s"
  "$work/bin/loadgen" -u "$api" "${ex_hello[@]}" -c 32 -d "$soak" -json-out "$work/results/soak.json" >"$work/results/soak.txt" 2>&1 &
  lg_pid=$!
  start=$(date +%s)
  printf 't_s' >"$work/rss.tsv"
  printf '\tapi' >>"$work/rss.tsv"
  for i in $(seq 1 ${#worker_pids[@]}); do printf '\tw%s' "$i" >>"$work/rss.tsv"; done
  echo >>"$work/rss.tsv"
  while kill -0 "$lg_pid" 2>/dev/null; do
    line="$(($(date +%s) - start))"
    for p in $api_pid "${worker_pids[@]}"; do
      line+=$'\t'"$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
    done
    echo "$line" >>"$work/rss.tsv"
    sleep "$sample"
  done
  wait "$lg_pid" || true
  lg_pid=""
  sed 's/^/    /' "$work/results/soak.txt"
  echo "    RSS in MiB (baseline: the first sample after the first fifth of the run)"
  awk -F'\t' -v skip="$((soak / 5))" '
    NR == 1 { for (i = 2; i <= NF; i++) name[i] = $i; n = NF; next }
    { last_t = $1; for (i = 2; i <= n; i++) { first[i] = first[i] ? first[i] : $i; lastv[i] = $i }
      if ($1 >= skip) { for (i = 2; i <= n; i++) {
        if (!(i in base)) base[i] = $i
        lo[i] = (i in lo && lo[i] < $i) ? lo[i] : $i; hi[i] = hi[i] > $i ? hi[i] : $i } } }
    END { for (i = 2; i <= n; i++) {
      if (!(i in base)) { printf "    %-4s too few samples\n", name[i]; continue }
      spread = (hi[i] - lo[i]) / base[i] * 100
      printf "    %-4s start %.1f, baseline %.1f, min %.1f, max %.1f, last %.1f (at %d s): spread %.1f%% of baseline, last %+.1f%%%s\n",
        name[i], first[i] / 1024, base[i] / 1024, lo[i] / 1024, hi[i] / 1024, lastv[i] / 1024, last_t, spread,
        (lastv[i] - base[i]) / base[i] * 100, name[i] == "api" ? "" : (spread <= 10 ? "  flat (within 10%)" : "  NOT flat") } }' \
    "$work/rss.tsv"
fi

# ---------------------------------------------------------------- database
sleep 11
read -r pg_x1 pg_ins1 pg_upd1 pg_ret1 <<<"$(pg_stat)"
ex1=$(executes)

# ---------------------------------------------------------------- scale-out
if [[ scale =~ $steps ]]; then
echo
echo "## scale-out: execute cpu at concurrency 4, WORKER_CONCURRENCY=1"
stop_workers
start_worker s1 1
wait_workers 1
echo "### 1 worker"
measure scale_1w "${ex_cpu[@]}" -c 4
start_worker s2 1
wait_workers 2
echo "### 2 workers"
measure scale_2w "${ex_cpu[@]}" -c 4
fi

# ---------------------------------------------------------------- summary
ncpu=$(nproc)
echo
echo "## summary"
echo
echo "floor: $floor_cmd"
echo "       hello ${floor_hello:-n/a} ns/op, cpu ${floor_cpu:-n/a} ns/op, goprog ${floor_goprog:-n/a} ns/op (one goroutine)"
echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${natsrr_line:-}" ] || echo "floor of hello c=1's NATS legs: $natsrr_line"
echo
health_rps="" health1_p50="" # no ratio to /health/live when its steps were left out
[ -z "${res[health_c32]:-}" ] || read -r health_rps _ <<<"${res[health_c32]}"
[ -z "${res[health_c1]:-}" ] || read -r _ health1_p50 _ <<<"${res[health_c1]}"
printf '| %-22s | %9s | %8s | %8s | %8s | %8s | %6s | %-34s | %-20s | %6s |\n' \
  step req/s "p50 ms" "p99 ms" "p99.9 ms" "max ms" errors "vs floor (runner in-process)" "vs /health/live" others
printf '|%s|\n' "------------------------|-----------|----------|----------|----------|----------|--------|------------------------------------|----------------------|--------"
row() { # label name floor_ns concurrency
  local rps p50 p99 p999 mx bad n vs_floor vs_health
  [ -n "${res[$2]:-}" ] || return 0
  read -r rps p50 p99 p999 mx bad n <<<"${res[$2]}"
  if [ "$4" = 1 ]; then
    vs_floor=$([ -n "$3" ] && awk -v p="$p50" -v f="$3" 'BEGIN { printf "p50 %.1fx, +%.3f ms", p / (f / 1e6), p - f / 1e6 }' || echo n/a)
    vs_health=$([ -n "$health1_p50" ] && awk -v p="$p50" -v h="$health1_p50" 'BEGIN { printf "p50 %.1fx", p / h }' || echo n/a)
  else
    vs_floor=$([ -n "$3" ] && awk -v r="$rps" -v f="$3" -v c="$ncpu" 'BEGIN { printf "req/s %.2f of %d cores x runner", r / (c * 1e9 / f), c }' || echo n/a)
    vs_health=$([ -n "$health_rps" ] && awk -v r="$rps" -v h="$health_rps" 'BEGIN { printf "req/s %.3fx", r / h }' || echo n/a)
  fi
  [ -n "$3" ] || vs_floor=n/a
  printf '| %-22s | %9.1f | %8.3f | %8.3f | %8.3f | %8.3f | %6d | %-34s | %-20s | %6.2f |\n' "$1" "$rps" "$p50" "$p99" "$p999" "$mx" "$bad" "$vs_floor" "$vs_health" "${others[$2]}"
}
row "health/live c=32" health_c32 "" 32
row "health/live c=1" health_c1 "" 1
row "hello c=1" hello_c1 "$floor_hello" 1
row "hello c=32" hello_c32 "$floor_hello" 32
row "cpu c=1" cpu_c1 "$floor_cpu" 1
row "cpu c=8" cpu_c8 "$floor_cpu" 8
row "goprog c=1" goprog_c1 "$floor_goprog" 1
row "goprog c=8" goprog_c8 "$floor_goprog" 8
row "cpu, 1 worker x1, c=4" scale_1w "$floor_cpu" 4
row "cpu, 2 workers x1, c=4" scale_2w "$floor_cpu" 4
echo
read -r s1 _ <<<"${res[scale_1w]:-}"
read -r s2 _ <<<"${res[scale_2w]:-}"
[ -z "$s1" ] || [ -z "$s2" ] || awk -v a="$s1" -v b="$s2" -v f="${floor_cpu:-0}" 'BEGIN {
  printf "scale-out: cpu %.1f req/s with 1 worker, %.1f with 2: x%.2f", a, b, b / a
  if (f > 0) printf " (runner floor %.1f ops/s per core)", 1e9 / f
  print "" }'
if [ -n "$pg_x0" ] && [ -n "$pg_x1" ]; then
  awk -v x="$((pg_x1 - pg_x0))" -v ins="$((pg_ins1 - pg_ins0))" -v upd="$((pg_upd1 - pg_upd0))" -v ret="$((pg_ret1 - pg_ret0))" -v n="$((ex1 - ex0))" 'BEGIN {
    printf "postgresql: %d transactions, %d rows inserted, %d updated, %d returned for %d executes (steps 1-4%s, warm-ups included): %.4f transactions per execute\n",
      x, ins, upd, ret, n, "'"$([ "$soak" -gt 0 ] && echo ' and soak')"'", n ? x / n : 0 }'
fi
echo "(errors: failed requests plus executions whose status was not ok; vs floor at c=1: platform p50 over the runner's ns/op;"
echo " at c>1: platform req/s over nproc x the runner's single-goroutine ops/s; others: cores busy with work other than"
echo " api, workers, loadgen, nats and redis during the step: a busy machine's figures are lower bounds)"
