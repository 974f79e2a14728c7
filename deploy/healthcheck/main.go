// Command healthcheck probes one HTTP health endpoint for container health
// checks. The distroless images carry no shell, curl or wget, so both images
// ship this small static binary beside their program. It stands alone: it
// imports nothing of WasmWiz.
//
//	healthcheck [-timeout 3s] URL
//
// URL may name environment variables as ${NAME} or ${NAME:-default}, so the
// image's HEALTHCHECK follows SERVER_PORT or METRICS_PORT when an operator
// changes them. Exit status: 0 for a 2xx answer, 1 for any other answer or
// no answer, 2 for bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: healthcheck [-timeout 3s] URL")
		return 2
	}
	url := expand(fs.Arg(0), getenv)
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		fmt.Fprintf(stderr, "healthcheck: %q is not an http(s) URL\n", url)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := probe(ctx, url); err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	return 0
}

func probe(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	// Drain a little so the server sees a clean close; the body is not needed.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errors.New(url + " answered " + resp.Status)
	}
	return nil
}

// expand replaces ${NAME} and ${NAME:-default}; an unset or empty NAME takes
// the default. Docker runs exec-form HEALTHCHECKs without a shell, so this is
// the only place the variables get expanded.
func expand(s string, getenv func(string) string) string {
	return os.Expand(s, func(v string) string {
		name, def, hasDef := strings.Cut(v, ":-")
		if val := getenv(name); val != "" || !hasDef {
			return val
		}
		return def
	})
}
