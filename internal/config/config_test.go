package config

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(mapEnv(nil))
	if err != nil {
		t.Fatalf("Load(empty) error = %v; want defaults to work with no configuration", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Environment", cfg.Environment, Development},
		{"ServerPort", cfg.ServerPort, 8080},
		{"ServerHost", cfg.ServerHost, "127.0.0.1"},
		{"MaxWASMSize", cfg.MaxWASMSize, int64(10 << 20)},
		{"MaxInputSize", cfg.MaxInputSize, int64(1 << 20)},
		{"MaxOutputSize", cfg.MaxOutputSize, int64(1 << 20)},
		{"ExecutionTimeout", cfg.ExecutionTimeout, 5 * time.Second},
		{"MemoryLimit", cfg.MemoryLimit, int64(128 << 20)},
		{"NATSSubjectPrefix", cfg.NATSSubjectPrefix, "wasmwiz"},
		{"LogLevel", cfg.LogLevel, slog.LevelInfo},
		{"JWTTTL", cfg.JWTTTL, 15 * time.Minute},
		{"Tier(free)", cfg.Tier(TierFree), Tier{10, 500, 128 << 20, 5 * time.Second}},
		{"Tier(basic)", cfg.Tier(TierBasic), Tier{100, 10000, 256 << 20, 10 * time.Second}},
		{"Tier(pro)", cfg.Tier(TierPro), Tier{1000, 50000, 512 << 20, 30 * time.Second}},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}
	if cfg.APISalt == "" || cfg.JWTSecret == "" {
		t.Errorf("development secrets are empty; want development defaults")
	}
	if cfg.WorkerConcurrency < 1 || cfg.WorkerID == "" {
		t.Errorf("WorkerConcurrency = %d, WorkerID = %q; want defaults", cfg.WorkerConcurrency, cfg.WorkerID)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // substrings that must all appear
	}{
		{"bad port", map[string]string{"SERVER_PORT": "eighty"}, []string{"SERVER_PORT"}},
		{"port out of range", map[string]string{"SERVER_PORT": "70000"}, []string{"SERVER_PORT"}},
		{"bad duration", map[string]string{"EXECUTION_TIMEOUT": "5"}, []string{"EXECUTION_TIMEOUT", "duration"}},
		{"bad size", map[string]string{"MAX_WASM_SIZE": "ten"}, []string{"MAX_WASM_SIZE"}},
		{"bad unit", map[string]string{"MAX_INPUT_SIZE": "3 parsecs"}, []string{"MAX_INPUT_SIZE"}},
		{"negative size", map[string]string{"MAX_OUTPUT_SIZE": "0"}, []string{"MAX_OUTPUT_SIZE"}},
		{"bad environment", map[string]string{"ENVIRONMENT": "prod"}, []string{"ENVIRONMENT"}},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, []string{"LOG_LEVEL"}},
		{"bad database scheme", map[string]string{"DATABASE_URL": "mysql://x/y"}, []string{"DATABASE_URL"}},
		{"bad prefix", map[string]string{"NATS_SUBJECT_PREFIX": "a.b"}, []string{"NATS_SUBJECT_PREFIX"}},
		{"memory too small", map[string]string{"MEMORY_LIMIT": "1000"}, []string{"MEMORY_LIMIT"}},
		{"tier time", map[string]string{"MAX_TIME_PRO": "-1s"}, []string{"MAX_TIME_PRO"}},
		{"tier rate", map[string]string{"RATE_LIMIT_FREE": "0"}, []string{"RATE_LIMIT_FREE"}},
		{"negative shutdown delay", map[string]string{"SHUTDOWN_DELAY": "-1s"}, []string{"SHUTDOWN_DELAY"}},
		{"shutdown delay too long", map[string]string{"SHUTDOWN_DELAY": "1h"}, []string{"SHUTDOWN_DELAY"}},
		{"all at once", map[string]string{"SERVER_PORT": "x", "MEMORY_LIMIT": "1", "REDIS_URL": "http://h:1"}, []string{"SERVER_PORT", "MEMORY_LIMIT", "REDIS_URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(mapEnv(tt.env))
			if err == nil {
				t.Fatalf("Load(%v) = nil error; want one naming %v", tt.env, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load(%v) error = %q; want it to mention %q", tt.env, err, w)
				}
			}
		})
	}
}

func TestRequireSecrets(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"production needs both", map[string]string{"ENVIRONMENT": "production"}, []string{"API_SALT", "JWT_SECRET"}},
		{"short salt", map[string]string{"ENVIRONMENT": "staging", "API_SALT": "short", "JWT_SECRET": strings.Repeat("x", 32)}, []string{"API_SALT"}},
		{"short jwt secret", map[string]string{"ENVIRONMENT": "staging", "API_SALT": strings.Repeat("s", 16), "JWT_SECRET": "short"}, []string{"JWT_SECRET"}},
		{"development has defaults", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(mapEnv(tt.env))
			if err != nil {
				t.Fatalf("Load = %v; secrets are checked by RequireSecrets, not Load (the worker does without them)", err)
			}
			err = cfg.RequireSecrets()
			if (err != nil) != (len(tt.want) > 0) {
				t.Fatalf("RequireSecrets = %v; want an error naming %v", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("RequireSecrets = %q; want it to name %s", err, w)
				}
			}
		})
	}
}

func TestLoadProductionWithSecrets(t *testing.T) {
	env := map[string]string{
		"ENVIRONMENT":  "production",
		"API_SALT":     "0123456789abcdef",
		"JWT_SECRET":   strings.Repeat("s", 32),
		"MEMORY_LIMIT": "64MiB", "MAX_TIME_FREE": "2s", "DAILY_QUOTA_BASIC": "7",
	}
	cfg, err := Load(mapEnv(env))
	if err != nil {
		t.Fatalf("Load(production) error = %v", err)
	}
	if cfg.MemoryLimit != 64<<20 || cfg.Tier(TierFree).MaxTime != 2*time.Second || cfg.Tier(TierBasic).DailyQuota != 7 {
		t.Errorf("overrides not applied: %+v", cfg)
	}
	if cfg.APISalt != env["API_SALT"] {
		t.Errorf("APISalt replaced by a default outside development")
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	cfg, err := Load(mapEnv(map[string]string{
		"DATABASE_URL": "postgres://u:hunter2hunter2@db:5432/w",
		"API_SALT":     "salt-very-secret-value",
		"JWT_SECRET":   "jwt-very-secret-value-jwt-very-secret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", cfg)
	for _, secret := range []string{"hunter2hunter2", "salt-very-secret-value", "jwt-very-secret-value"} {
		if strings.Contains(b.String(), secret) {
			t.Errorf("logged config contains secret %q: %s", secret, b.String())
		}
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"1048576", 1 << 20, false},
		{"1MiB", 1 << 20, false},
		{"10 MiB", 10 << 20, false},
		{"1.5KiB", 1536, false},
		{"2GB", 2e9, false},
		{"512B", 512, false},
		{"", 0, true},
		{"MiB", 0, true},
		{"1XB", 0, true},
		{"-5", 0, true},
		{"99999999999999999999GiB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestTierRank(t *testing.T) {
	if !(TierRank(TierFree) < TierRank(TierBasic) && TierRank(TierBasic) < TierRank(TierPro)) {
		t.Errorf("tier ranks out of order")
	}
	if TierRank("gold") != -1 {
		t.Errorf("TierRank(gold) = %d; want -1", TierRank("gold"))
	}
}
