#!/usr/bin/env bash
# The soak run (issue 9): two api replicas behind a round-robin balancer and
# three workers on a NATS, PostgreSQL and Redis of the run's own (the
# machine's services are never touched), under a steady open-loop load of
# executions (hello, cpu, echo, now and then a 1.5 MiB echo), while faults
# are injected on a schedule: a worker SIGKILLed, a worker drained with
# SIGTERM, NATS restarted, Redis and PostgreSQL stopped for 10 s, an api
# replica stopped with SIGTERM and started again. It prints, per fault
# window and overall, the answers by status and error code and the latency
# percentiles, writes them as JSON, and fails unless every request was
# answered, no process grew, every execution was recorded, every answer
# was a correct result or a documented error, and every fault was
# survived. The test is internal/e2e/soak_test.go (build tag soak).
#
#   scripts/soak.sh [-d DURATION] [-r RATE] [-f FAULT_EVERY] [-F FAULTS]
#                   [-o REPORT.json] [-t TIMEOUT] [-- more go test flags]
#
#   -d  length of the steady state: a quiet window, the faults, a final
#       quiet window (default 3m; at least three fault windows)
#   -r  execute requests per second (default 100)
#   -f  length of a fault window: the fault, then recovery and quiet
#       (default 20s; six faults make a cycle)
#   -F  the faults to cycle through, comma-separated, in order (default
#       worker-kill,worker-term,nats,redis,postgres,api; e.g. -F nats)
#   -o  the JSON report (default: a new file in $TMPDIR, named in the log)
#   -t  go test's -timeout (default 60m)
#
# Needs the packages redis-server, nats-server and postgresql installed (the
# binaries, not running services: the run starts its own; as root it runs
# PostgreSQL as the user postgres), and, like every e2e test, the machine's
# NATS and Redis answering (scripts/services.sh), which it otherwise leaves
# alone.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
duration=3m rate=100 every=20s faults="" report="" timeout=60m
while [ $# -gt 0 ]; do
  case $1 in
    -d) duration=${2:?-d needs a duration}; shift 2 ;;
    -r) rate=${2:?-r needs a rate}; shift 2 ;;
    -f) every=${2:?-f needs a duration}; shift 2 ;;
    -F) faults=${2:?-F needs fault names}; shift 2 ;;
    -o) report=${2:?-o needs a file}; shift 2 ;;
    -t) timeout=${2:?-t needs a duration}; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done

cmd=(go test -tags soak -run '^TestSoak$' -count=1 -v -timeout "$timeout" "$@" ./internal/e2e/
  -args "-soak.duration=$duration" "-soak.rate=$rate" "-soak.fault-every=$every")
if [ -n "$faults" ]; then
  cmd+=("-soak.faults=$faults")
fi
if [ -n "$report" ]; then
  cmd+=("-soak.report=$report")
fi
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
