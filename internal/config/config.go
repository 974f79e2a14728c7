// Package config reads and validates the environment of both programs. It
// is the bottom of the dependency graph: it imports nothing of this module.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/google/uuid"
)

// Environments.
const (
	Development = "development"
	Staging     = "staging"
	Production  = "production"
)

// Tier names, lowest first.
const (
	TierFree  = "free"
	TierBasic = "basic"
	TierPro   = "pro"
)

// Tiers lists the tier names from lowest to highest; a tier's rank is its index.
var Tiers = []string{TierFree, TierBasic, TierPro}

// TierRank returns the rank of a tier (higher is more), or -1 for an unknown one.
func TierRank(tier string) int {
	for i, t := range Tiers {
		if t == tier {
			return i
		}
	}
	return -1
}

// Tier holds one tier's limits (API.md, "Rate limits").
type Tier struct {
	RequestsPerMinute int
	DailyQuota        int
	MaxMemory         int64
	MaxTime           time.Duration
}

// Config is the whole environment of the api and the worker. Byte sizes
// accept a plain number of bytes or a suffix: 10MiB, 512KiB, 1GiB, 10MB.
type Config struct {
	Environment string     `env:"ENVIRONMENT" envDefault:"development"`
	LogLevel    slog.Level `env:"LOG_LEVEL" envDefault:"info"`

	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/wasmwiz?sslmode=disable"`
	RedisURL    string `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	NATSURL     string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	// NATSSubjectPrefix lets two installs share one NATS server.
	NATSSubjectPrefix string `env:"NATS_SUBJECT_PREFIX" envDefault:"wasmwiz"`

	APISalt   string        `env:"API_SALT"`
	JWTSecret string        `env:"JWT_SECRET"`
	JWTTTL    time.Duration `env:"JWT_TTL" envDefault:"15m"`

	// ServerHost defaults to loopback: development disables authentication,
	// so the default must not expose an admin principal to the network.
	ServerHost string `env:"SERVER_HOST" envDefault:"127.0.0.1"`
	ServerPort int    `env:"SERVER_PORT" envDefault:"8080"`

	MaxWASMSize      int64         `env:"MAX_WASM_SIZE" envDefault:"10MiB"`
	MaxInputSize     int64         `env:"MAX_INPUT_SIZE" envDefault:"1MiB"`
	MaxOutputSize    int64         `env:"MAX_OUTPUT_SIZE" envDefault:"1MiB"`
	ExecutionTimeout time.Duration `env:"EXECUTION_TIMEOUT" envDefault:"5s"`
	MemoryLimit      int64         `env:"MEMORY_LIMIT" envDefault:"128MiB"`
	// AdhocModuleTTL is how long a module sent with an execute request (and
	// not kept) stays before the retention job removes it.
	AdhocModuleTTL time.Duration `env:"ADHOC_MODULE_TTL" envDefault:"1h"`
	UsageRetention time.Duration `env:"USAGE_RETENTION" envDefault:"720h"`

	WorkerID            string `env:"WORKER_ID"`
	WorkerConcurrency   int    `env:"WORKER_CONCURRENCY"`
	ModuleCacheBytes    int64  `env:"MODULE_CACHE_BYTES" envDefault:"256MiB"`
	CompilationCacheDir string `env:"COMPILATION_CACHE_DIR"`
	MetricsPort         int    `env:"METRICS_PORT" envDefault:"9090"`
	// PprofAddr, when set (e.g. 127.0.0.1:6060), serves Go's profiles there.
	PprofAddr string `env:"PPROF_ADDR"`
	// ShutdownDelay is how long the api keeps accepting, not ready, after
	// SIGTERM before it closes its listener: the time a load balancer needs
	// to stop sending it connections.
	ShutdownDelay time.Duration `env:"SHUTDOWN_DELAY" envDefault:"0s"`

	RateLimitFree  int `env:"RATE_LIMIT_FREE" envDefault:"10"`
	RateLimitBasic int `env:"RATE_LIMIT_BASIC" envDefault:"100"`
	RateLimitPro   int `env:"RATE_LIMIT_PRO" envDefault:"1000"`

	DailyQuotaFree  int `env:"DAILY_QUOTA_FREE" envDefault:"500"`
	DailyQuotaBasic int `env:"DAILY_QUOTA_BASIC" envDefault:"10000"`
	DailyQuotaPro   int `env:"DAILY_QUOTA_PRO" envDefault:"50000"`

	MaxMemoryFree  int64 `env:"MAX_MEMORY_FREE" envDefault:"128MiB"`
	MaxMemoryBasic int64 `env:"MAX_MEMORY_BASIC" envDefault:"256MiB"`
	MaxMemoryPro   int64 `env:"MAX_MEMORY_PRO" envDefault:"512MiB"`

	MaxTimeFree  time.Duration `env:"MAX_TIME_FREE" envDefault:"5s"`
	MaxTimeBasic time.Duration `env:"MAX_TIME_BASIC" envDefault:"10s"`
	MaxTimePro   time.Duration `env:"MAX_TIME_PRO" envDefault:"30s"`
}

// Minimum secret lengths outside development.
const (
	minSaltLen      = 16
	minJWTSecretLen = 32
)

// Development-only secrets, so that a machine with no configuration runs.
// They are refused outside development.
const (
	devSalt      = "wasmwiz-development-salt-not-secret"
	devJWTSecret = "wasmwiz-development-jwt-secret-not-secret-at-all"
)

// Load reads the environment through getenv and reports every problem at
// once, each naming its variable.
func Load(getenv func(string) string) (Config, error) {
	var cfg Config
	environ := make(map[string]string)
	for _, name := range Variables() {
		if v := getenv(name); v != "" {
			environ[name] = v
		}
	}
	err := env.ParseWithOptions(&cfg, env.Options{
		Environment: environ,
		FuncMap: map[reflect.Type]env.ParserFunc{
			reflect.TypeFor[int64](): func(v string) (any, error) { return ParseBytes(v) },
		},
	})
	var problems []string
	if err != nil {
		problems = append(problems, describe(err)...)
	}
	problems = append(problems, cfg.validate()...)
	if len(problems) > 0 {
		return Config{}, &Error{Problems: problems}
	}
	cfg.applyDefaults()
	return cfg, nil
}

// RequireSecrets checks the api's secrets: outside development API_SALT
// and JWT_SECRET must be set and long enough. Only the api calls it; the
// worker never sees them, so a compromised worker cannot forge keys or tokens.
func (c Config) RequireSecrets() error {
	var p []string
	if c.Environment != Development {
		if len(c.APISalt) < minSaltLen {
			p = append(p, fmt.Sprintf("API_SALT: required outside development, at least %d characters", minSaltLen))
		}
		if len(c.JWTSecret) < minJWTSecretLen {
			p = append(p, fmt.Sprintf("JWT_SECRET: required outside development, at least %d characters", minJWTSecretLen))
		}
	}
	if len(p) > 0 {
		return &Error{Problems: p}
	}
	return nil
}

// Error lists every configuration problem found.
type Error struct{ Problems []string }

func (e *Error) Error() string {
	return "invalid configuration: " + strings.Join(e.Problems, "; ")
}

// Variables returns the names of every variable Config reads.
func Variables() []string {
	t := reflect.TypeFor[Config]()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("env"); name != "" {
			names = append(names, name)
		}
	}
	return names
}

// describe rewrites the library's errors, which name Go fields, into lines
// naming the environment variable and the value expected.
func describe(err error) []string {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []string{err.Error()}
	}
	t := reflect.TypeFor[Config]()
	var out []string
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			f, _ := t.FieldByName(pe.Name)
			out = append(out, fmt.Sprintf("%s: %v", f.Tag.Get("env"), expected(pe)))
			continue
		}
		out = append(out, e.Error())
	}
	return out
}

func expected(pe env.ParseError) string {
	switch pe.Type {
	case reflect.TypeFor[time.Duration]():
		return "want a Go duration such as 5s or 1m30s"
	case reflect.TypeFor[int64]():
		return "want a size in bytes such as 1048576 or 1MiB"
	case reflect.TypeFor[int]():
		return "want a whole number"
	case reflect.TypeFor[slog.Level]():
		return "want debug, info, warn or error"
	}
	return pe.Err.Error()
}

func (c *Config) validate() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	switch c.Environment {
	case Development, Staging, Production:
	default:
		add("ENVIRONMENT: want development, staging or production, got %q", c.Environment)
	}
	checkURL := func(name, value string, schemes ...string) {
		u, err := url.Parse(value)
		if err != nil || u.Host == "" {
			add("%s: want a URL such as %s://host:port", name, schemes[0])
			return
		}
		for _, s := range schemes {
			if u.Scheme == s {
				return
			}
		}
		add("%s: scheme %q, want one of %s", name, u.Scheme, strings.Join(schemes, ", "))
	}
	checkURL("DATABASE_URL", c.DatabaseURL, "postgres", "postgresql")
	checkURL("REDIS_URL", c.RedisURL, "redis", "rediss")
	checkURL("NATS_URL", c.NATSURL, "nats", "tls", "ws", "wss")

	if !validSubjectToken(c.NATSSubjectPrefix) {
		add("NATS_SUBJECT_PREFIX: want letters, digits, - or _ (got %q)", c.NATSSubjectPrefix)
	}
	port := func(name string, v int) {
		if v < 1 || v > 65535 {
			add("%s: want a port from 1 to 65535, got %d", name, v)
		}
	}
	port("SERVER_PORT", c.ServerPort)
	port("METRICS_PORT", c.MetricsPort)

	positive := func(name string, v int64) {
		if v <= 0 {
			add("%s: must be positive", name)
		}
	}
	positiveDur := func(name string, v time.Duration) {
		if v <= 0 {
			add("%s: must be positive", name)
		}
	}
	positive("MAX_WASM_SIZE", c.MaxWASMSize)
	positive("MAX_INPUT_SIZE", c.MaxInputSize)
	positive("MAX_OUTPUT_SIZE", c.MaxOutputSize)
	positive("MODULE_CACHE_BYTES", c.ModuleCacheBytes)
	positiveDur("EXECUTION_TIMEOUT", c.ExecutionTimeout)
	positiveDur("JWT_TTL", c.JWTTTL)
	positiveDur("ADHOC_MODULE_TTL", c.AdhocModuleTTL)
	positiveDur("USAGE_RETENTION", c.UsageRetention)
	if c.ShutdownDelay < 0 || c.ShutdownDelay > 5*time.Minute {
		add("SHUTDOWN_DELAY: want from 0s to 5m, got %s", c.ShutdownDelay)
	}

	// Linear memory is counted in 64 KiB pages with at most 65536 of them.
	const page, maxMemory = 65536, 65536 * 65536
	memory := func(name string, v int64) {
		if v < page || v > maxMemory {
			add("%s: want from 64KiB to 4GiB, got %d", name, v)
		}
	}
	memory("MEMORY_LIMIT", c.MemoryLimit)
	memory("MAX_MEMORY_FREE", c.MaxMemoryFree)
	memory("MAX_MEMORY_BASIC", c.MaxMemoryBasic)
	memory("MAX_MEMORY_PRO", c.MaxMemoryPro)
	for name, v := range map[string]time.Duration{
		"MAX_TIME_FREE": c.MaxTimeFree, "MAX_TIME_BASIC": c.MaxTimeBasic, "MAX_TIME_PRO": c.MaxTimePro,
	} {
		positiveDur(name, v)
	}
	for name, v := range map[string]int{
		"RATE_LIMIT_FREE": c.RateLimitFree, "RATE_LIMIT_BASIC": c.RateLimitBasic, "RATE_LIMIT_PRO": c.RateLimitPro,
		"DAILY_QUOTA_FREE": c.DailyQuotaFree, "DAILY_QUOTA_BASIC": c.DailyQuotaBasic, "DAILY_QUOTA_PRO": c.DailyQuotaPro,
	} {
		if v < 1 {
			add("%s: must be at least 1", name)
		}
	}
	if c.WorkerConcurrency < 0 {
		add("WORKER_CONCURRENCY: must be positive")
	}
	if len(c.WorkerID) > 128 {
		add("WORKER_ID: at most 128 characters")
	}
	return p
}

func validSubjectToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *Config) applyDefaults() {
	if c.Environment == Development {
		if c.APISalt == "" {
			c.APISalt = devSalt
		}
		if c.JWTSecret == "" {
			c.JWTSecret = devJWTSecret
		}
	}
	if c.WorkerConcurrency == 0 {
		c.WorkerConcurrency = runtime.GOMAXPROCS(0)
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "worker"
		}
		c.WorkerID = host + "-" + uuid.NewString()[:8]
	}
}

// IsDevelopment reports whether authentication may fall back to the
// development principal and migrations run on start.
func (c Config) IsDevelopment() bool { return c.Environment == Development }

// Tier returns the limits of a tier; an unknown tier gets the lowest.
func (c Config) Tier(name string) Tier {
	switch name {
	case TierPro:
		return Tier{c.RateLimitPro, c.DailyQuotaPro, c.MaxMemoryPro, c.MaxTimePro}
	case TierBasic:
		return Tier{c.RateLimitBasic, c.DailyQuotaBasic, c.MaxMemoryBasic, c.MaxTimeBasic}
	default:
		return Tier{c.RateLimitFree, c.DailyQuotaFree, c.MaxMemoryFree, c.MaxTimeFree}
	}
}

// ListenAddr is the api's listen address.
func (c Config) ListenAddr() string { return c.ServerHost + ":" + strconv.Itoa(c.ServerPort) }

// LogValue masks secrets so the effective configuration can be logged at start-up.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("environment", c.Environment),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("database_url", redactURL(c.DatabaseURL)),
		slog.String("redis_url", redactURL(c.RedisURL)),
		slog.String("nats_url", redactURL(c.NATSURL)),
		slog.String("nats_subject_prefix", c.NATSSubjectPrefix),
		slog.String("api_salt", mask(c.APISalt)),
		slog.String("jwt_secret", mask(c.JWTSecret)),
		slog.Duration("jwt_ttl", c.JWTTTL),
		slog.String("listen", c.ListenAddr()),
		slog.Int64("max_wasm_size", c.MaxWASMSize),
		slog.Int64("max_input_size", c.MaxInputSize),
		slog.Int64("max_output_size", c.MaxOutputSize),
		slog.Duration("execution_timeout", c.ExecutionTimeout),
		slog.Int64("memory_limit", c.MemoryLimit),
		slog.String("worker_id", c.WorkerID),
		slog.Int("worker_concurrency", c.WorkerConcurrency),
		slog.Int64("module_cache_bytes", c.ModuleCacheBytes),
		slog.String("compilation_cache_dir", c.CompilationCacheDir),
		slog.Int("metrics_port", c.MetricsPort),
		slog.Duration("shutdown_delay", c.ShutdownDelay),
	)
}

func mask(secret string) string {
	if secret == "" {
		return ""
	}
	return "***"
}

// redactURL hides a URL's password; an unparsable URL is hidden whole, since
// it may hold one.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "***"
	}
	return u.Redacted()
}

// ParseBytes reads a byte size: a whole number of bytes, or a number with a
// unit (B, KB, MB, GB in powers of 1000; KiB, MiB, GiB in powers of 1024).
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i:])
	}
	mult, ok := map[string]float64{
		"": 1, "B": 1,
		"KB": 1e3, "MB": 1e6, "GB": 1e9,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
	}[unit]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	if unit == "" || unit == "B" {
		return strconv.ParseInt(num, 10, 64)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, err
	}
	v := f * mult
	if v > math.MaxInt64 || v < 0 {
		return 0, fmt.Errorf("size %q out of range", s)
	}
	return int64(v), nil
}
