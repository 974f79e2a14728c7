package deploy

import (
	"context"
	"encoding/json"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/wasmwiz/wasmwiz/internal/runner"
)

// The subset of the Compose specification these files may use. Decoding is
// strict: a key outside it (a typo such as `depends-on`, or a feature the
// tests do not know) fails, so extend the types deliberately.
type composeFile struct {
	Name       string                     `json:"name"`
	XEnv       map[string]string          `json:"x-wasmwiz-env,omitempty"`
	XHardening map[string]any             `json:"x-hardening,omitempty"` // merged into services, checked there
	Services   map[string]composeService  `json:"services"`
	Volumes    map[string]*composeVolume  `json:"volumes,omitempty"`
	Networks   map[string]*composeNetwork `json:"networks,omitempty"`
}

type composeVolume struct {
	Driver   string `json:"driver,omitempty"`
	External bool   `json:"external,omitempty"`
}

type composeNetwork struct {
	Driver   string `json:"driver,omitempty"`
	Internal bool   `json:"internal,omitempty"`
}

type composeService struct {
	Image           string                       `json:"image,omitempty"`
	Build           *composeBuild                `json:"build,omitempty"`
	Command         []string                     `json:"command,omitempty"`
	Entrypoint      []string                     `json:"entrypoint,omitempty"`
	Environment     map[string]string            `json:"environment,omitempty"`
	Ports           []string                     `json:"ports,omitempty"`
	Volumes         []string                     `json:"volumes,omitempty"`
	Tmpfs           []string                     `json:"tmpfs,omitempty"`
	Healthcheck     *composeHealthcheck          `json:"healthcheck,omitempty"`
	DependsOn       map[string]composeDependency `json:"depends_on,omitempty"`
	Deploy          *composeDeploy               `json:"deploy,omitempty"`
	ReadOnly        bool                         `json:"read_only,omitempty"`
	User            string                       `json:"user,omitempty"`
	CapDrop         []string                     `json:"cap_drop,omitempty"`
	SecurityOpt     []string                     `json:"security_opt,omitempty"`
	Restart         string                       `json:"restart,omitempty"`
	Profiles        []string                     `json:"profiles,omitempty"`
	StopGracePeriod string                       `json:"stop_grace_period,omitempty"`
}

type composeBuild struct {
	Context    string            `json:"context"`
	Dockerfile string            `json:"dockerfile"`
	Args       map[string]string `json:"args,omitempty"`
}

type composeHealthcheck struct {
	Test        []string `json:"test"`
	Interval    string   `json:"interval,omitempty"`
	Timeout     string   `json:"timeout,omitempty"`
	StartPeriod string   `json:"start_period,omitempty"`
	Retries     int      `json:"retries,omitempty"`
}

type composeDependency struct {
	Condition string `json:"condition"`
}

type composeDeploy struct {
	Replicas  *int              `json:"replicas,omitempty"`
	Resources *composeResources `json:"resources,omitempty"`
}

type composeResources struct {
	Limits       *composeLimits `json:"limits,omitempty"`
	Reservations *composeLimits `json:"reservations,omitempty"`
}

type composeLimits struct {
	Memory string `json:"memory,omitempty"`
	CPUs   string `json:"cpus,omitempty"`
}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate does what Compose does with ${NAME}, ${NAME:-default} and
// ${NAME:?message}, reading NAME from vars (the .env file). It returns the
// names that were required and missing.
func interpolate(s string, vars map[string]string) (string, []string) {
	var missing []string
	out := interpolation.ReplaceAllStringFunc(s, func(m string) string {
		p := interpolation.FindStringSubmatch(m)
		v, ok := vars[p[1]]
		switch p[2] {
		case ":-", "-":
			if v == "" {
				return p[3]
			}
		case ":?", "?":
			if v == "" {
				missing = append(missing, p[1])
			}
		default:
			if !ok {
				missing = append(missing, p[1])
			}
		}
		return v
	})
	return out, missing
}

// loadCompose decodes a compose file strictly after interpolating its
// strings with vars, as `docker compose config` would (Compose interpolates
// after parsing YAML, so a value stays a string whatever it expands to).
func loadCompose(t *testing.T, rel string, vars map[string]string) composeFile {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict(readFile(t, rel))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	var tree any
	if err := json.Unmarshal(js, &tree); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	var missing []string
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case string:
			out, miss := interpolate(v, vars)
			missing = append(missing, miss...)
			return out
		case map[string]any:
			for k, e := range v {
				v[k] = walk(e)
			}
		case []any:
			for i, e := range v {
				v[i] = walk(e)
			}
		}
		return v
	}
	tree = walk(tree)
	if len(missing) > 0 {
		t.Errorf("%s needs %v, which the .env from scripts/generate_secrets.sh does not provide", rel, slices.Compact(slices.Sorted(slices.Values(missing))))
	}
	if js, err = json.Marshal(tree); err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	strict, err := kjson.UnmarshalStrict(js, &cf)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	for _, e := range strict {
		t.Errorf("%s: %v", rel, e)
	}
	return cf
}

// healthURL finds the URL a healthcheck probes and its port.
func healthURL(t *testing.T, where string, hc *composeHealthcheck) (*url.URL, int) {
	t.Helper()
	if hc == nil || len(hc.Test) < 2 || hc.Test[0] != "CMD" {
		t.Errorf("%s: healthcheck %v; want [CMD /usr/local/bin/healthcheck URL]", where, hc)
		return nil, 0
	}
	if hc.Test[1] != "/usr/local/bin/healthcheck" {
		t.Errorf("%s: healthcheck runs %s; the image ships /usr/local/bin/healthcheck", where, hc.Test[1])
	}
	u, err := url.Parse(hc.Test[len(hc.Test)-1])
	if err != nil {
		t.Errorf("%s: healthcheck URL: %v", where, err)
		return nil, 0
	}
	port, _ := strconv.Atoi(u.Port())
	return u, port
}

func TestDockerCompose(t *testing.T) {
	vars := map[string]string{"POSTGRES_PASSWORD": "p", "API_SALT": strings.Repeat("s", 16), "JWT_SECRET": strings.Repeat("j", 32)}
	cf := loadCompose(t, "docker-compose.yml", vars)

	for _, name := range []string{"postgres", "redis", "nats", "migrate", "api", "worker"} {
		if _, ok := cf.Services[name]; !ok {
			t.Fatalf("docker-compose.yml has no %s service", name)
		}
	}
	svc := cf.Services
	images := map[string]string{"postgres": "postgres:15", "redis": "redis:7", "nats": "nats:2"}
	for name, prefix := range images {
		if !strings.HasPrefix(svc[name].Image, prefix) {
			t.Errorf("%s image %s; want %s…", name, svc[name].Image, prefix)
		}
	}
	if !slices.Contains(svc["nats"].Command, "--jetstream") && !slices.Contains(svc["nats"].Command, "-js") {
		t.Errorf("nats command %v does not enable JetStream", svc["nats"].Command)
	}

	// Every service WasmWiz runs: built from the right Dockerfile, hardened,
	// reading only real configuration names.
	wasmwiz := map[string]string{"migrate": "Dockerfile.api", "api": "Dockerfile.api", "worker": "Dockerfile.worker"}
	for name, dockerfile := range wasmwiz {
		s := svc[name]
		if s.Build == nil || s.Build.Dockerfile != dockerfile || s.Build.Context != "." {
			t.Errorf("%s: build %+v; want context . and %s", name, s.Build, dockerfile)
		}
		if s.Build != nil {
			if _, ok := s.Build.Args["VERSION"]; !ok {
				t.Errorf("%s: build args lack VERSION", name)
			}
		}
		if !s.ReadOnly || s.User == "" || strings.HasPrefix(s.User, "0") || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: want read_only, a non-root user, cap_drop [ALL] and no-new-privileges; got read_only=%v user=%q cap_drop=%v security_opt=%v",
				name, s.ReadOnly, s.User, s.CapDrop, s.SecurityOpt)
		}
		for k := range s.Environment {
			if !configNames()[k] && !runtimeNames[k] {
				t.Errorf("%s: environment %s is not a variable the programs read", name, k)
			}
		}
		if s.Environment["ENVIRONMENT"] == "development" {
			t.Errorf("%s: ENVIRONMENT=development", name)
		}
		for _, k := range []string{"API_SALT", "JWT_SECRET"} {
			// The api refuses to start without them outside development; the
			// worker must not hold them.
			if got := s.Environment[k]; (name == "worker") != (got == "") {
				t.Errorf("%s: %s = %q; want it set for the api and the migration, absent for the worker", name, k, got)
			}
		}
		if u, err := url.Parse(s.Environment["DATABASE_URL"]); err != nil || u.Host != "postgres:5432" {
			t.Errorf("%s: DATABASE_URL %q does not point at the postgres service", name, s.Environment["DATABASE_URL"])
		}
	}
	if svc["migrate"].Image != svc["api"].Image {
		t.Errorf("migrate image %s; want the api's %s", svc["migrate"].Image, svc["api"].Image)
	}
	if !slices.Equal(svc["migrate"].Command, []string{"migrate"}) || svc["migrate"].Restart != "no" {
		t.Errorf("migrate: command %v restart %q; want [migrate] and \"no\"", svc["migrate"].Command, svc["migrate"].Restart)
	}

	// Start order: healthy dependencies, then migrations, then the programs.
	wantDeps := map[string]map[string]string{
		"migrate": {"postgres": "service_healthy"},
		"api":     {"migrate": "service_completed_successfully", "redis": "service_healthy", "nats": "service_healthy"},
		"worker":  {"migrate": "service_completed_successfully", "nats": "service_healthy"},
	}
	for name, deps := range wantDeps {
		for dep, cond := range deps {
			if got := svc[name].DependsOn[dep].Condition; got != cond {
				t.Errorf("%s depends_on %s: condition %q; want %q", name, dep, got, cond)
			}
		}
	}
	for name, s := range svc {
		for dep, d := range s.DependsOn {
			target, ok := svc[dep]
			if !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
			}
			if d.Condition == "service_healthy" && target.Healthcheck == nil {
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := cf.Volumes[src]; !ok {
					t.Errorf("%s mounts volume %s, which is not declared", name, src)
				}
			}
		}
	}

	api := svc["api"]
	if api.Environment["SERVER_HOST"] != "0.0.0.0" {
		t.Errorf("api SERVER_HOST=%q; want 0.0.0.0", api.Environment["SERVER_HOST"])
	}
	apiPort := api.Environment["SERVER_PORT"]
	if len(api.Ports) != 1 || !strings.HasSuffix(api.Ports[0], ":"+apiPort) {
		t.Errorf("api ports %v; want one mapping to SERVER_PORT %s", api.Ports, apiPort)
	}
	if u, port := healthURL(t, "api", api.Healthcheck); u != nil && (strconv.Itoa(port) != apiPort || !strings.HasPrefix(u.Path, "/health/")) {
		t.Errorf("api healthcheck probes %s; want /health/… on SERVER_PORT %s", u, apiPort)
	}

	worker := svc["worker"]
	if len(worker.Ports) != 0 {
		t.Errorf("worker publishes %v; nothing outside may reach a worker", worker.Ports)
	}
	if u, port := healthURL(t, "worker", worker.Healthcheck); u != nil && (strconv.Itoa(port) != worker.Environment["METRICS_PORT"] || !strings.HasPrefix(u.Path, "/health/")) {
		t.Errorf("worker healthcheck probes %s; want /health/… on METRICS_PORT %s", u, worker.Environment["METRICS_PORT"])
	}
	if dir := worker.Environment["COMPILATION_CACHE_DIR"]; dir == "" || !slices.ContainsFunc(worker.Volumes, func(v string) bool { return strings.Contains(v, ":"+dir) }) {
		t.Errorf("worker COMPILATION_CACHE_DIR=%q is not on a volume; the root filesystem is read-only", dir)
	}
	if worker.Deploy == nil || worker.Deploy.Replicas == nil || *worker.Deploy.Replicas < 2 {
		t.Errorf("worker deploy.replicas must be above one")
	}
	if worker.Deploy == nil || worker.Deploy.Resources == nil || worker.Deploy.Resources.Limits == nil {
		t.Fatalf("worker has no memory limit")
	}
	floor, err := workerMemoryFloor(worker.Environment)
	if err != nil {
		t.Fatalf("worker: %v", err)
	}
	limit, err := parseSize(worker.Deploy.Resources.Limits.Memory)
	if err != nil {
		t.Fatalf("worker memory limit: %v", err)
	}
	if limit < floor {
		t.Errorf("worker memory limit %s < WORKER_CONCURRENCY x (MEMORY_LIMIT + %d MiB) + MODULE_CACHE_BYTES + %d MiB = %d MiB",
			worker.Deploy.Resources.Limits.Memory, executionOverhead>>20, runtimeOverhead>>20, floor>>20)
	}
	checkGoMemLimit(t, "compose worker", worker.Environment, limit)
	if api.Deploy == nil || api.Deploy.Resources == nil || api.Deploy.Resources.Limits == nil || api.Deploy.Resources.Limits.Memory == "" {
		t.Errorf("api has no memory limit; want at least %d MiB, with GOMEMLIMIT", apiMemoryFloor>>20)
	} else if limit, err := parseSize(api.Deploy.Resources.Limits.Memory); err != nil {
		t.Errorf("api memory limit: %v", err)
	} else {
		if limit < apiMemoryFloor {
			t.Errorf("api memory limit %s < the validation budget (%d MiB) + 256 MiB = %d MiB",
				api.Deploy.Resources.Limits.Memory, runner.DefaultValidationBudget>>20, apiMemoryFloor>>20)
		}
		checkGoMemLimit(t, "compose api", api.Environment, limit)
	}

	backup := svc["backup"]
	if !slices.Contains(backup.Profiles, "ops") || !slices.Equal(backup.Entrypoint, []string{"/scripts/backup.sh"}) {
		t.Errorf("backup service: profiles %v entrypoint %v; want the ops profile running /scripts/backup.sh", backup.Profiles, backup.Entrypoint)
	}
	if !strings.HasPrefix(backup.Image, "postgres:15") {
		t.Errorf("backup image %s; pg_dump must match the server's major version 15", backup.Image)
	}
}

func TestDockerComposeDev(t *testing.T) {
	cf := loadCompose(t, "docker-compose.dev.yml", nil)
	for _, name := range []string{"postgres", "redis", "nats"} {
		s, ok := cf.Services[name]
		if !ok {
			t.Fatalf("docker-compose.dev.yml has no %s service", name)
		}
		if s.Healthcheck == nil {
			t.Errorf("%s has no healthcheck", name)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond localhost; the dev services have no passwords", name, p)
			}
		}
	}
	// The programs' defaults must reach these services with no configuration.
	want := map[string]string{"postgres": "127.0.0.1:5432:5432", "redis": "127.0.0.1:6379:6379", "nats": "127.0.0.1:4222:4222"}
	for name, port := range want {
		if !slices.Contains(cf.Services[name].Ports, port) {
			t.Errorf("%s ports %v; want %s", name, cf.Services[name].Ports, port)
		}
	}
	pg := cf.Services["postgres"].Environment
	if pg["POSTGRES_DB"] != "wasmwiz" || pg["POSTGRES_USER"] != "postgres" {
		t.Errorf("dev postgres %v; want database wasmwiz for user postgres, as the default DATABASE_URL expects", pg)
	}
}

func TestInterpolate(t *testing.T) {
	vars := map[string]string{"SET": "v", "EMPTY": ""}
	tests := []struct {
		in, want string
		missing  int
	}{
		{"${SET}", "v", 0},
		{"${SET:-d}", "v", 0},
		{"${EMPTY:-d}", "d", 0},
		{"${UNSET:-d}", "d", 0},
		{"${UNSET:?msg}", "", 1},
		{"${UNSET}", "", 1},
		{"a${SET}b${SET:?x}c", "avbvc", 0},
	}
	for _, tt := range tests {
		got, missing := interpolate(tt.in, vars)
		if got != tt.want || len(missing) != tt.missing {
			t.Errorf("interpolate(%q) = %q, %v; want %q with %d missing", tt.in, got, missing, tt.want, tt.missing)
		}
	}
}

// TestComposeSpec loads the compose files with compose-go, the loader of
// `docker compose` itself, which validates them against the Compose
// specification's JSON schema and checks that references are consistent.
func TestComposeSpec(t *testing.T) {
	env := []string{"POSTGRES_PASSWORD=p", "API_SALT=" + strings.Repeat("s", 16), "JWT_SECRET=" + strings.Repeat("j", 32)}
	for _, file := range []string{"docker-compose.yml", "docker-compose.dev.yml"} {
		t.Run(file, func(t *testing.T) {
			opts, err := cli.NewProjectOptions([]string{filepath.Join(repoRoot, file)},
				cli.WithWorkingDirectory(repoRoot),
				cli.WithEnv(env), // and not this machine's environment or a .env file
				cli.WithProfiles([]string{"ops"}),
				cli.WithConsistency(true),
			)
			if err != nil {
				t.Fatal(err)
			}
			p, err := opts.LoadProject(context.Background())
			if err != nil {
				t.Fatalf("compose-go rejects %s: %v", file, err)
			}
			if file != "docker-compose.yml" {
				return
			}
			w, err := p.GetService("worker")
			if err != nil {
				t.Fatal(err)
			}
			if w.Deploy == nil || w.Deploy.Replicas == nil || *w.Deploy.Replicas < 2 {
				t.Errorf("compose-go reads worker deploy.replicas %v; want 2 or more", w.Deploy)
			}
			if _, err := p.GetService("backup"); err != nil {
				t.Errorf("the ops profile lacks the backup service: %v", err)
			}
		})
	}
}
