package deploy

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// The helm that checks the chart: built from the Go module proxy at a pinned
// version and kept in the user's cache directory, so it costs one build per
// machine (minutes on 2 cores) and nothing after. CI can pay the build ahead
// of `go test` with the same command the test runs (see deploy/README.md).
const (
	helmVersion = "v3.22.0"
	helmModule  = "helm.sh/helm/v3/cmd/helm@" + helmVersion
	// kubeVersion is what `helm template` and `helm lint` render for; helm
	// built outside its Makefile would otherwise assume v1.20.
	kubeVersion = "1.31.0"
	chartDir    = "helm/wasmwiz"
	release     = "wasmwiz"
	namespace   = "wasmwiz"
)

// helmBinary returns the pinned helm, installing it with `go install` the
// first time.
func helmBinary(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("no user cache directory to keep helm in: %v (set HOME or XDG_CACHE_HOME)", err)
	}
	bin := filepath.Join(cache, "wasmwiz-deploy-test", "helm-"+helmVersion)
	helm := filepath.Join(bin, "helm")
	// Already built: its embedded module version says which helm it is. This
	// skips the go command, which would ask the module proxy about
	// deprecations even with everything cached, and so works offline.
	if info, err := buildinfo.ReadFile(helm); err == nil && info.Main.Path == "helm.sh/helm/v3" && info.Main.Version == helmVersion {
		return helm
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", helmModule)
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOWORK=off")
	cmd.Dir = t.TempDir() // outside this module: its go.mod must not steer helm's build
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s failed after %s: %v\n%s\n"+
			"The deploy tests build helm from the Go module proxy (about 4 minutes the first time on 2 cores). "+
			"Run `GOBIN=%s go install %s` by hand to see why.", helmModule, time.Since(start).Round(time.Second), err, out, bin, helmModule)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Logf("built helm %s in %s (once per machine)", helmVersion, d.Round(time.Second))
	}
	return helm
}

type helmRunner struct {
	bin  string
	home string
}

// run runs helm with its state directories in a temporary place, so the
// user's repositories and plugins play no part.
func (h helmRunner) run(args ...string) (stdout string, err error) {
	cmd := exec.Command(h.bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
	)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

func (h helmRunner) template(args ...string) (string, error) {
	return h.run(append([]string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, args...)...)
}

func annotations(o object) map[string]string { return objectMeta(o.Obj).Annotations }

func TestHelmChart(t *testing.T) {
	h := helmRunner{bin: helmBinary(t), home: t.TempDir()}

	t.Run("lint", func(t *testing.T) {
		for _, values := range []string{"", "ci/full-values.yaml"} {
			args := []string{"lint", chartDir, "--strict", "--kube-version", kubeVersion, "--namespace", namespace}
			if values != "" {
				args = append(args, "--values", filepath.Join(chartDir, values))
			}
			if out, err := h.run(args...); err != nil {
				t.Errorf("lint with values %q: %v", values, err)
			} else if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Errorf("lint with values %q:\n%s", values, out)
			}
		}
	})

	t.Run("default values", func(t *testing.T) {
		out, err := h.template()
		if err != nil {
			t.Fatal(err)
		}
		s := set{objs: decodeManifests(t, "helm template (defaults)", []byte(out))}
		want := map[string]int{"ConfigMap": 1, "Secret": 1, "Deployment": 2, "Service": 2, "Job": 1, "PodDisruptionBudget": 2}
		if got := kinds(s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("kinds = %v; want %v", got, want)
		}
		checkInstall(t, s)

		// The migration hook needs the ConfigMap and the Secret, so they must
		// be hooks made before it.
		for _, kind := range []string{"ConfigMap", "Secret"} {
			for _, o := range s.all(kind) {
				a := annotations(o)
				if !strings.Contains(a["helm.sh/hook"], "pre-install") || !strings.Contains(a["helm.sh/hook"], "pre-upgrade") || a["helm.sh/hook-weight"] != "-10" {
					t.Errorf("%s %s: hook annotations %v; want pre-install,pre-upgrade before the migration Job", kind, o.Name, a)
				}
			}
		}
		job := s.all("Job")[0]
		if a := annotations(job); a["helm.sh/hook"] != "pre-install,pre-upgrade" || a["helm.sh/hook-weight"] != "0" {
			t.Errorf("migration Job hook annotations %v; want pre-install,pre-upgrade with weight 0", a)
		}
		if env := s.env(t, "Job", job.Obj.(*batchv1.Job).Spec.Template.Spec.Containers[0]); !strings.HasPrefix(env["DATABASE_URL"], "secret:") {
			t.Errorf("migration Job DATABASE_URL = %q; want a secret reference", env["DATABASE_URL"])
		}
		sec := s.all("Secret")[0].Obj.(*corev1.Secret)
		if n := len(sec.StringData["API_SALT"]); n < 16 {
			t.Errorf("generated API_SALT has %d characters; want >= 16", n)
		}
		if n := len(sec.StringData["JWT_SECRET"]); n < 32 {
			t.Errorf("generated JWT_SECRET has %d characters; want >= 32", n)
		}
		if annotations(s.all("Secret")[0])["helm.sh/resource-policy"] != "keep" {
			t.Errorf("the Secret holding API_SALT must survive uninstall (helm.sh/resource-policy: keep)")
		}
		// Computed from the defaults: 2 x (128 MiB + 160 MiB) + 128 MiB + 128 MiB.
		c := container(t, s.deployment(t, "worker"), "worker")
		for name, q := range map[string]corev1.ResourceList{"limits": c.Resources.Limits, "requests": c.Resources.Requests} {
			if got := q[corev1.ResourceMemory]; got.String() != "832Mi" {
				t.Errorf("computed worker memory %s = %s; want 832Mi", name, got.String())
			}
		}
		// goMemLimitPercent 90, in whole MiB.
		if env := s.env(t, "worker", c); env["GOMEMLIMIT"] != "748MiB" {
			t.Errorf("worker GOMEMLIMIT = %q; want 748MiB, 90%% of 832Mi", env["GOMEMLIMIT"])
		}
		if env := s.env(t, "api", container(t, s.deployment(t, "api"), "api")); env["GOMEMLIMIT"] != "691MiB" {
			t.Errorf("api GOMEMLIMIT = %q; want 691MiB, 90%% of 768Mi", env["GOMEMLIMIT"])
		}
		if r := s.deployment(t, "worker").Spec.Replicas; r == nil || *r < 2 {
			t.Errorf("worker replicas = %v; want at least 2", r)
		}
	})

	t.Run("full values", func(t *testing.T) {
		out, err := h.template("--values", filepath.Join(chartDir, "ci/full-values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		s := set{objs: decodeManifests(t, "helm template (full)", []byte(out)), existingSecret: "wasmwiz-secrets"}
		want := map[string]int{"ConfigMap": 1, "Deployment": 2, "Service": 2, "Job": 1, "PodDisruptionBudget": 2,
			"HorizontalPodAutoscaler": 2, "Ingress": 1, "ServiceMonitor": 2, "NetworkPolicy": 3}
		if got := kinds(s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("kinds = %v; want %v (no Secret: existingSecret is set)", got, want)
		}
		checkInstall(t, s)
		checkNetworkPolicies(t, s, 4222, 5432, 6379)

		worker := s.deployment(t, "worker")
		c := container(t, worker, "worker")
		env := s.env(t, "worker", c)
		if env["DATABASE_URL"] != "secret:wasmwiz-secrets/WORKER_DATABASE_URL" {
			t.Errorf("worker DATABASE_URL = %q; want the existing Secret's WORKER_DATABASE_URL", env["DATABASE_URL"])
		}
		if env["MODULE_CACHE_BYTES"] != "268435456" || env["WORKER_CONCURRENCY"] != "4" {
			t.Errorf("ConfigMap MODULE_CACHE_BYTES=%q WORKER_CONCURRENCY=%q; want 268435456 and 4 (numbers must not print as floats)",
				env["MODULE_CACHE_BYTES"], env["WORKER_CONCURRENCY"])
		}
		// Left out of the values, the memory is computed: 4 x (256 MiB + 160 MiB) + 256 MiB + 128 MiB.
		wantMem := int64(4*(256+160)+256+128) << 20
		for name, q := range map[string]corev1.ResourceList{"limits": c.Resources.Limits, "requests": c.Resources.Requests} {
			if got := q[corev1.ResourceMemory]; got.Value() != wantMem {
				t.Errorf("computed worker memory %s = %s; want %d MiB", name, got.String(), wantMem>>20)
			}
		}
		if env["GOMEMLIMIT"] != "1740MiB" {
			t.Errorf("worker GOMEMLIMIT = %q; want 1740MiB, goMemLimitPercent 85 of 2048 MiB", env["GOMEMLIMIT"])
		}
		if c.Image != "ghcr.io/wasmwiz/wasmwiz-worker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
			t.Errorf("worker image %s; want the digest", c.Image)
		}
		for _, o := range s.all("Deployment") {
			if o.Obj.(*appsv1.Deployment).Spec.Replicas != nil {
				t.Errorf("Deployment %s sets replicas while autoscaled", o.Name)
			}
		}
		ing := s.all("Ingress")[0]
		if a := annotations(ing); a["cert-manager.io/cluster-issuer"] == "" {
			t.Errorf("Ingress annotations %v lost", a)
		}
	})

	t.Run("refuses", func(t *testing.T) {
		tests := []struct {
			name string
			args []string
			want string
		}{
			{"worker memory below the floor", []string{"--set", "worker.resources.limits.memory=768Mi"}, "below the 832 MiB the workers need"},
			{"floor follows concurrency", []string{"--set", "worker.resources.limits.memory=1Gi", "--set", "config.WORKER_CONCURRENCY=8"}, "below the 2560 MiB the workers need"},
			{"floor follows the execution overhead", []string{"--set", "worker.resources.limits.memory=832Mi", "--set", "worker.executionOverhead=200Mi"}, "below the 912 MiB the workers need"},
			{"api memory below the floor", []string{"--set", "api.resources.limits.memory=512Mi"}, "below the 640 MiB the api needs"},
			{"api without a memory limit", []string{"--set", "api.resources.limits=null"}, "api.resources.limits.memory is required"},
			{"GOMEMLIMIT at the whole limit", []string{"--set", "goMemLimitPercent=100"}, "goMemLimitPercent"},
			{"misspelt config name", []string{"--set", "config.MEMORY_LIMT=1"}, "MEMORY_LIMT"},
			{"chart-owned config name", []string{"--set", "config.SERVER_PORT=9000"}, "SERVER_PORT"},
			{"misspelt top-level key", []string{"--set", "workers.replicas=3"}, "workers"},
			{"short API salt", []string{"--set", "secrets.apiSalt=short"}, "at least 16 characters"},
			{"short JWT secret", []string{"--set", "secrets.jwtSecret=short"}, "at least 32 characters"},
			{"autoscaling bounds", []string{"--set", "worker.autoscaling.enabled=true", "--set", "worker.autoscaling.minReplicas=5", "--set", "worker.autoscaling.maxReplicas=2"}, "exceeds maxReplicas"},
			{"bad size", []string{"--set", "config.MEMORY_LIMIT=lots"}, "size \"lots\""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := h.template(tt.args...)
				if err == nil {
					t.Fatalf("helm template %v rendered; want an error containing %q", tt.args, tt.want)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("helm template %v: %v\nwant an error containing %q", tt.args, err, tt.want)
				}
			})
		}
	})

	t.Run("explicit worker memory", func(t *testing.T) {
		out, err := h.template("--set", "worker.resources.limits.memory=2Gi")
		if err != nil {
			t.Fatal(err)
		}
		s := set{objs: decodeManifests(t, "helm template (explicit memory)", []byte(out))}
		c := container(t, s.deployment(t, "worker"), "worker")
		for name, q := range map[string]corev1.ResourceList{"limits": c.Resources.Limits, "requests": c.Resources.Requests} {
			if got := q[corev1.ResourceMemory]; got.String() != "2Gi" {
				t.Errorf("worker memory %s = %s; want the 2Gi given", name, got.String())
			}
		}
		if env := s.env(t, "worker", c); env["GOMEMLIMIT"] != "1843MiB" {
			t.Errorf("worker GOMEMLIMIT = %q; want 1843MiB, 90%% of the 2Gi given", env["GOMEMLIMIT"])
		}
	})

	// The chart's api floor is the programs': the validation budget of
	// internal/runner and 256 MiB.
	t.Run("api floor", func(t *testing.T) {
		at := fmt.Sprintf("api.resources.limits.memory=%dMi", apiMemoryFloor>>20)
		if _, err := h.template("--set", at); err != nil {
			t.Errorf("helm template with the api at its floor: %v", err)
		}
		below := fmt.Sprintf("api.resources.limits.memory=%dMi", apiMemoryFloor>>20-1)
		if _, err := h.template("--set", below); err == nil {
			t.Errorf("helm template with the api 1 MiB below its floor (%d MiB) rendered; want an error", apiMemoryFloor>>20)
		}
	})

	t.Run("no GOMEMLIMIT", func(t *testing.T) {
		out, err := h.template("--set", "goMemLimitPercent=0")
		if err != nil {
			t.Fatal(err)
		}
		s := set{objs: decodeManifests(t, "helm template (goMemLimitPercent 0)", []byte(out))}
		for _, name := range []string{"api", "worker"} {
			if _, ok := s.env(t, name, container(t, s.deployment(t, name), name))["GOMEMLIMIT"]; ok {
				t.Errorf("%s sets GOMEMLIMIT with goMemLimitPercent 0; want it unset", name)
			}
		}
	})

	t.Run("NOTES", func(t *testing.T) {
		// helm lint renders NOTES.txt; this checks what it tells the operator.
		notes := string(readFile(t, "deploy/helm/wasmwiz/templates/NOTES.txt"))
		for _, want := range []string{"/usr/local/bin/api keys create --name admin --role admin --tier pro", "rollout status", "worker.replicas"} {
			if !strings.Contains(notes, want) {
				t.Errorf("NOTES.txt does not mention %q", want)
			}
		}
	})
}
