// Command gen writes the test modules that are encoded in Go rather than
// kept as .wat sources (see ../generated.go). build.sh runs it for the
// committed builds; measurements may run it with other sizes:
//
//	go run ./testdata/gen -funcs 20000 -o testdata/many_funcs.wasm
//	go run ./testdata/gen -long 1000000 -o /tmp/long.wasm
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/wasmwiz/wasmwiz/testdata"
)

func main() {
	funcs := flag.Int("funcs", 20000, "ManyFuncs: functions besides _start")
	long := flag.Int("long", 0, "LongFunction instead: additions in its one function")
	out := flag.String("o", "", "output file (required)")
	flag.Parse()
	if *out == "" || *funcs < 1 || *long < 0 {
		fmt.Fprintln(os.Stderr, "usage: gen [-funcs N | -long OPS] -o FILE")
		os.Exit(2)
	}
	wasm := testdata.ManyFuncs(*funcs)
	if *long > 0 {
		wasm = testdata.LongFunction(*long)
	}
	if err := os.WriteFile(*out, wasm, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
