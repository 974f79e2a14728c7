package loadgen

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// KeyVariable is the environment variable the API key may come from, so
// that it need not appear in a process listing.
const KeyVariable = "WASMWIZ_API_KEY"

// Targets the generator knows.
const (
	TargetHealth  = "health"  // GET /health/live
	TargetExecute = "execute" // POST /api/wasm/execute
)

// Options are the command line of cmd/loadgen.
type Options struct {
	Config  Config
	JSON    bool   // JSON instead of text on stdout
	JSONOut string // a file that receives the JSON as well
	// CPUProfile is a file for the generator's own CPU profile: on a
	// shared machine its cost is part of what is measured.
	CPUProfile string
}

const usageText = `usage: loadgen [flags]

Drives a WasmWiz platform and prints throughput, error counts and latency
percentiles. Closed loop by default (-c callers, each sending when its last
request answered); open loop with -r (a fixed arrival rate; latency counts
from each request's intended send time). Runs for -n requests or -d time,
whichever comes first (default -d 10s). The API key comes from -k or from
$` + KeyVariable + `.

flags:
`

// ParseArgs reads the command line. flag.ErrHelp means -h was asked.
func ParseArgs(args []string, getenv func(string) string, stderr io.Writer) (Options, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	base := fs.String("u", "http://127.0.0.1:8080", "base URL of the api")
	target := fs.String("t", TargetHealth, "target: health (GET /health/live) or execute (POST /api/wasm/execute)")
	key := fs.String("k", "", "API key sent as Authorization: Bearer (default $"+KeyVariable+")")
	module := fs.String("m", "", "module id to execute (-t execute)")
	input := fs.String("i", "", "stdin text of each execution (-t execute)")
	conc := fs.Int("c", 10, "closed loop: callers; open loop: most requests in flight")
	n := fs.Int64("n", 0, "stop after this many requests (0: no limit)")
	dur := fs.String("d", "", "stop sending after this long: a Go duration or seconds (default 10s without -n)")
	rate := fs.Float64("r", 0, "open loop: requests per second (0: closed loop)")
	warm := fs.Duration("warmup", 0, "closed-loop warm-up, not measured, before the run")
	timeout := fs.Duration("timeout", DefaultTimeout, "per-request timeout")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	jsonOut := fs.String("json-out", "", "also write the JSON result to this file")
	cpuProfile := fs.String("cpuprofile", "", "write the generator's own CPU profile to this file")
	client := fs.String("client", "lean", "HTTP client: lean (one connection per caller, least CPU; plain http) or std (net/http)")
	if err := fs.Parse(args); err != nil {
		return Options{}, err
	}
	if fs.NArg() > 0 {
		return Options{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	var d time.Duration
	if *dur != "" {
		var err error
		if d, err = parseSeconds(*dur); err != nil {
			return Options{}, fmt.Errorf("-d %q: %w", *dur, err)
		}
	} else if *n == 0 {
		d = 10 * time.Second
	}
	if *key == "" {
		*key = getenv(KeyVariable)
	}
	req, err := buildRequest(*base, *target, *key, *module, *input)
	if err != nil {
		return Options{}, err
	}
	cfg := Config{
		Request: req, Concurrency: *conc, Rate: *rate, Requests: *n, Duration: d,
		Warmup: *warm, Timeout: *timeout,
	}
	switch *client {
	case "lean":
	case "std":
		cfg.Client = NewClient(*conc)
	default:
		return Options{}, fmt.Errorf("-client %q: want lean or std", *client)
	}
	if err := cfg.validate(); err != nil {
		return Options{}, err
	}
	return Options{Config: cfg, JSON: *asJSON, JSONOut: *jsonOut, CPUProfile: *cpuProfile}, nil
}

// parseSeconds reads "10" as ten seconds, and anything else as a Go duration.
func parseSeconds(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f <= 0 {
			return 0, errors.New("want a positive duration")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("want seconds or a Go duration such as 30s")
	}
	if d <= 0 {
		return 0, errors.New("want a positive duration")
	}
	return d, nil
}

// buildRequest makes the request one target sends.
func buildRequest(base, target, key, module, input string) (Request, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Request{}, fmt.Errorf("-u %q: want a URL such as http://127.0.0.1:8080", base)
	}
	root := strings.TrimRight(base, "/")
	h := http.Header{}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	switch target {
	case TargetHealth:
		return Request{Method: http.MethodGet, URL: root + "/health/live", Header: h}, nil
	case TargetExecute:
		if module == "" {
			return Request{}, errors.New("-t execute needs -m MODULE_ID")
		}
		body, err := json.Marshal(struct {
			ModuleID string `json:"module_id"`
			Input    string `json:"input"`
		}{module, input})
		if err != nil {
			return Request{}, fmt.Errorf("encode execute body: %w", err)
		}
		h.Set("Content-Type", "application/json")
		return Request{Method: http.MethodPost, URL: root + "/api/wasm/execute", Header: h, Body: body}, nil
	}
	return Request{}, fmt.Errorf("-t %q: want %s or %s", target, TargetHealth, TargetExecute)
}
