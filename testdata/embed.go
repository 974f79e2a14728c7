// Package testdata holds the WebAssembly modules that tests across the
// repository run: each .wat source beside its committed .wasm build, and a
// real Go program in goprog/. build.sh rebuilds them (`make testdata`).
package testdata

import (
	"embed"
	"fmt"
)

// FS holds every module build, named like "hello.wasm".
//
//go:embed *.wasm
var FS embed.FS

// Module returns the bytes of the module called name, with or without the
// ".wasm" suffix ("hello" or "hello.wasm"). It panics when there is no such
// module, which in a test is a typo to fix, not a case to handle.
func Module(name string) []byte {
	if len(name) < 5 || name[len(name)-5:] != ".wasm" {
		name += ".wasm"
	}
	b, err := FS.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("testdata: no module %q: %v", name, err))
	}
	return b
}

// Names lists the module builds, without their ".wasm" suffix, in
// directory order; fuzz targets seed their corpus with them.
func Names() []string {
	entries, err := FS.ReadDir(".")
	if err != nil {
		panic(fmt.Sprintf("testdata: read embedded modules: %v", err))
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		names = append(names, n[:len(n)-len(".wasm")])
	}
	return names
}
