#!/usr/bin/env bash
# Run the platform on this machine: the local services, migrations, one
# worker and the api, on defaults that need no configuration. Ctrl-C stops
# both programs gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
mkdir -p bin
go build -o bin/api ./cmd/api
go build -o bin/worker ./cmd/worker

./bin/api migrate
key=$(./bin/api keys create --name "dev admin $(date -u +%FT%TZ)" --role admin --tier pro --owner dev 2>/dev/null)

./bin/worker &
worker=$!
trap 'kill -TERM $worker 2>/dev/null || true; wait $worker 2>/dev/null || true' EXIT

cat >&2 <<MSG

  WasmWiz: api on http://${SERVER_HOST:-127.0.0.1}:${SERVER_PORT:-8080}, one worker (pid $worker)
  Admin API key (shown once): $key
  Try:  curl -H "Authorization: Bearer $key" -F file=@testdata/hello.wasm http://127.0.0.1:${SERVER_PORT:-8080}/api/wasm/upload

MSG
./bin/api
