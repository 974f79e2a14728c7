// Command loadgen drives a running WasmWiz platform and prints throughput,
// error counts and latency percentiles, as text or JSON. main only wires;
// internal/loadgen does the work. scripts/load_test.sh and scripts/bench.sh
// run it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/wasmwiz/wasmwiz/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, context.Canceled):
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	opts, err := loadgen.ParseArgs(args, getenv, stderr)
	if err != nil {
		return err
	}
	if opts.CPUProfile != "" {
		f, err := os.Create(opts.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// An interrupted run still prints what it measured.
	res, runErr := loadgen.Run(ctx, opts.Config)
	if res == nil {
		return runErr
	}
	if opts.JSONOut != "" {
		f, err := os.Create(opts.JSONOut)
		if err != nil {
			return err
		}
		if err := loadgen.WriteJSON(f, res); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if opts.JSON {
		err = loadgen.WriteJSON(stdout, res)
	} else {
		err = loadgen.WriteText(stdout, res)
	}
	return errors.Join(runErr, err)
}
