#!/usr/bin/env bash
# Rebuilds every test module in testdata/ (run by `make testdata`).
# Needs wat2wasm (Debian/Ubuntu package: wabt) and Go. The .wasm files are
# committed, so tests never need these tools.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

command -v wat2wasm >/dev/null || { echo "wat2wasm not found: apt-get install -y wabt" >&2; exit 1; }

for wat in "$here"/*.wat; do
	wat2wasm "$wat" -o "${wat%.wat}.wasm"
done

# truncated.wasm: a valid header and the first bytes of hello.wasm's body.
head -c 24 "$here/hello.wasm" >"$here/truncated.wasm"

# garbage.wasm: 512 pseudo-random bytes, the same on every rebuild.
for i in $(seq 1 16); do
	printf 'wasmwiz garbage %d' "$i" | sha256sum | cut -c1-64
done | xxd -r -p >"$here/garbage.wasm"

# many_funcs.wasm: 20,000 functions, encoded by generated.go (too big for .wat).
(cd "$root" && go run ./testdata/gen -funcs 20000 -o testdata/many_funcs.wasm)

# goprog.wasm: a real Go program (about 2 MB), built without debug info so
# that rebuilds with the same Go version give the same bytes.
(cd "$root" && GOOS=wasip1 GOARCH=wasm go build -trimpath -ldflags='-s -w' -o testdata/goprog.wasm ./testdata/goprog && chmod 644 testdata/goprog.wasm)

ls -l "$here"/*.wasm
