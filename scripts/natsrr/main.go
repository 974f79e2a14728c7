// Command natsrr measures a bare NATS request-reply between two processes:
// the floor under an execute's trip from the api to a worker and back, on
// the machine it runs on. scripts/bench.sh runs it beside the hello c=1 step.
//
//	go run ./scripts/natsrr -serve &          # the responder, in a process of its own
//	go run ./scripts/natsrr -n 5000           # the requester: prints p50, p90, p99
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	url := flag.String("url", nats.DefaultURL, "NATS server")
	subject := flag.String("subject", "natsrr.echo", "subject the responder answers")
	serve := flag.Bool("serve", false, "answer requests until SIGTERM or SIGINT")
	n := flag.Int("n", 5000, "requests measured, one at a time, after 500 of warm-up")
	size := flag.Int("size", 300, "request bytes (about an execute request's envelope)")
	flag.Parse()
	if err := run(*url, *subject, *serve, *n, *size); err != nil {
		fmt.Fprintln(os.Stderr, "natsrr:", err)
		os.Exit(1)
	}
}

func run(url, subject string, serve bool, n, size int) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	if serve {
		if _, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			return err
		}
		if err := nc.Flush(); err != nil {
			return err
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		return nil
	}
	if n < 1 {
		return fmt.Errorf("-n %d: want at least 1", n)
	}
	payload := bytes.Repeat([]byte{'x'}, size)
	// A responder started a moment ago may not have subscribed yet.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := nc.Request(subject, payload, 2*time.Second)
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			break
		}
	}
	took := make([]time.Duration, 0, n)
	for i := range n + 500 {
		start := time.Now()
		m, err := nc.Request(subject, payload, 2*time.Second)
		if err != nil {
			return fmt.Errorf("request %d: %w (is a responder running on %s?)", i, err, subject)
		}
		if !bytes.Equal(m.Data, payload) {
			return fmt.Errorf("request %d: the reply is not the request", i)
		}
		if i >= 500 {
			took = append(took, time.Since(start))
		}
	}
	slices.Sort(took)
	at := func(q float64) float64 { return float64(took[int(q*float64(len(took)-1))]) / 1e6 }
	fmt.Printf("nats request-reply between two processes: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms (%d requests)\n",
		at(0.5), at(0.9), at(0.99), len(took))
	return nil
}
