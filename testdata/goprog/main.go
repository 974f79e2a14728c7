//go:build wasip1

// Command goprog is a real Go program built for WASI preview 1, the kind of
// module users upload (about 2 MB). It reads all of stdin, then:
//
//   - "hello": prints a greeting;
//   - "oom": allocates and keeps memory until the Go runtime runs out of it;
//   - anything else: echoes stdin back upper-cased.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -o testdata/goprog.wasm ./testdata/goprog
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "read stdin:", err)
		os.Exit(1)
	}
	switch string(bytes.TrimSpace(in)) {
	case "hello":
		fmt.Println("hello from Go on WASI")
	case "oom":
		var hoard [][]byte
		for {
			chunk := make([]byte, 1<<20)
			for i := 0; i < len(chunk); i += 4096 { // touch every page, cheaply
				chunk[i] = byte(i)
			}
			hoard = append(hoard, chunk)
			if len(hoard) == -1 { // keeps hoard alive from the compiler's point of view
				fmt.Println(len(hoard))
			}
		}
	default:
		os.Stdout.Write(bytes.ToUpper(in))
	}
}
