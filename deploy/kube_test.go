package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/wasmwiz/wasmwiz/internal/runner"
)

// object is one decoded manifest.
type object struct {
	Source string // file, or file#n for the n-th document
	Kind   string
	Name   string
	Obj    any // pointer to the typed Kubernetes object
}

// newTyped maps apiVersion/kind to the Kubernetes type a manifest must decode
// into. A kind missing here fails the test: add it with its real type.
func newTyped(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "batch/v1/Job":
		return &batchv1.Job{}, true
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}, true
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, true
	}
	return nil, false
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// decodeManifests splits a multi-document YAML stream and decodes each
// document strictly: unknown or duplicate fields, wrong types and field names
// in the wrong case all fail, as with kubectl's strict field validation.
func decodeManifests(t *testing.T, source string, data []byte) []object {
	t.Helper()
	var out []object
	for i, doc := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		where := fmt.Sprintf("%s#%d", source, i)
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			t.Errorf("%s: not valid YAML: %v", where, err)
			continue
		}
		var tm metav1.TypeMeta
		if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		obj, ok := newTyped(tm.APIVersion, tm.Kind)
		if !ok {
			t.Errorf("%s: apiVersion %q kind %q is not a type this test knows; add it to newTyped", where, tm.APIVersion, tm.Kind)
			continue
		}
		strictErrs, err := kjson.UnmarshalStrict(js, obj)
		if err != nil {
			t.Errorf("%s: decode %s: %v", where, tm.Kind, err)
			continue
		}
		for _, e := range strictErrs {
			t.Errorf("%s: %s: %v", where, tm.Kind, e)
		}
		meta := objectMeta(obj)
		if meta.Name == "" {
			t.Errorf("%s: %s has no metadata.name", where, tm.Kind)
		}
		for _, msg := range validation.IsDNS1123Subdomain(meta.Name) {
			t.Errorf("%s: %s name %q: %s", where, tm.Kind, meta.Name, msg)
		}
		for k, v := range meta.Labels {
			for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s: %s label %s=%q: %s", where, tm.Kind, k, v, msg)
			}
		}
		out = append(out, object{Source: where, Kind: tm.Kind, Name: meta.Name, Obj: obj})
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func objectMeta(obj any) metav1.ObjectMeta {
	type metaHaver interface{ GetObjectMeta() metav1.Object }
	if m, ok := obj.(metaHaver); ok {
		o := m.GetObjectMeta()
		return metav1.ObjectMeta{Name: o.GetName(), Namespace: o.GetNamespace(), Labels: o.GetLabels(), Annotations: o.GetAnnotations()}
	}
	return metav1.ObjectMeta{}
}

// set is a decoded install: the plain manifests, or one helm render.
type set struct {
	objs []object
	// existingSecret names a Secret the install expects to exist already.
	existingSecret string
}

func (s set) all(kind string) []object {
	var out []object
	for _, o := range s.objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (s set) find(kind, name string) (object, bool) {
	for _, o := range s.objs {
		if o.Kind == kind && o.Name == name {
			return o, true
		}
	}
	return object{}, false
}

// deployment returns the Deployment whose pods carry component=name.
func (s set) deployment(t *testing.T, component string) *appsv1.Deployment {
	t.Helper()
	var found []*appsv1.Deployment
	for _, o := range s.all("Deployment") {
		d := o.Obj.(*appsv1.Deployment)
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("found %d Deployments with component=%s; want 1", len(found), component)
	}
	return found[0]
}

// checkInstall runs every assertion that holds for any WasmWiz install.
func checkInstall(t *testing.T, s set) {
	t.Helper()
	api := s.deployment(t, "api")
	worker := s.deployment(t, "worker")
	checkAPI(t, s, api)
	checkWorker(t, s, worker)
	for _, o := range s.all("Deployment") {
		d := o.Obj.(*appsv1.Deployment)
		checkPodSpec(t, o.Source+" "+o.Name, s, d.Spec.Template.Spec)
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: Deployment %s selector %v does not match its pod labels %v", o.Source, d.Name, d.Spec.Selector, d.Spec.Template.Labels)
		}
	}
	jobs := s.all("Job")
	if len(jobs) != 1 {
		t.Errorf("found %d Jobs; want the one migration Job", len(jobs))
	}
	for _, o := range jobs {
		j := o.Obj.(*batchv1.Job)
		spec := j.Spec.Template.Spec
		checkPodSpec(t, o.Source+" "+o.Name, s, spec)
		c := spec.Containers[0]
		if !slices.Equal(c.Args, []string{"migrate"}) && !slices.Equal(c.Command, []string{"/usr/local/bin/api", "migrate"}) {
			t.Errorf("%s: migration Job runs %q %q; want args [migrate] on the api image", o.Name, c.Command, c.Args)
		}
		if c.Image != api.Spec.Template.Spec.Containers[0].Image {
			t.Errorf("%s: migration Job image %s; want the api image %s", o.Name, c.Image, api.Spec.Template.Spec.Containers[0].Image)
		}
		if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
			t.Errorf("%s: restartPolicy %q", o.Name, spec.RestartPolicy)
		}
	}
	checkServices(t, s)
	checkAutoscalers(t, s)
	checkPDBs(t, s)
	checkIngresses(t, s)
	checkServiceMonitors(t, s)
	for _, o := range s.all("ConfigMap") {
		for k := range o.Obj.(*corev1.ConfigMap).Data {
			if !configNames()[k] {
				t.Errorf("%s: ConfigMap %s sets %s, which no program reads", o.Source, o.Name, k)
			}
		}
	}
}

// env is a container's effective environment: its ConfigMaps, then its own
// env entries (secret references read as "secret:NAME/KEY").
func (s set) env(t *testing.T, where string, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			o, ok := s.find("ConfigMap", from.ConfigMapRef.Name)
			if !ok {
				t.Errorf("%s: envFrom ConfigMap %s is not part of the install", where, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range o.Obj.(*corev1.ConfigMap).Data {
				env[k] = v
			}
		case from.SecretRef != nil:
			t.Errorf("%s: envFrom a whole Secret; reference the keys one by one so the names are checked", where)
		}
	}
	for _, e := range c.Env {
		if !configNames()[e.Name] && !runtimeNames[e.Name] {
			t.Errorf("%s: container %s sets %s, which no program reads", where, c.Name, e.Name)
		}
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s.checkSecretKey(t, where, ref.Name, ref.Key)
			env[e.Name] = "secret:" + ref.Name + "/" + ref.Key
		case e.ValueFrom != nil:
			env[e.Name] = "fieldRef"
		default:
			env[e.Name] = e.Value
		}
	}
	return env
}

func (s set) checkSecretKey(t *testing.T, where, name, key string) {
	t.Helper()
	if name == s.existingSecret && name != "" {
		return
	}
	o, ok := s.find("Secret", name)
	if !ok {
		t.Errorf("%s: Secret %s is referenced but not part of the install", where, name)
		return
	}
	sec := o.Obj.(*corev1.Secret)
	if _, ok := sec.StringData[key]; ok {
		return
	}
	if _, ok := sec.Data[key]; ok {
		return
	}
	t.Errorf("%s: Secret %s has no key %s", where, name, key)
}

func container(t *testing.T, d *appsv1.Deployment, name string) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("Deployment %s has no container %s", d.Name, name)
	return corev1.Container{}
}

func namedPort(c corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// checkProbe wants an HTTP GET of path on the container port called portName.
func checkProbe(t *testing.T, where, kind string, p *corev1.Probe, c corev1.Container, path, portName string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: %s probe missing or not httpGet", where, kind)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: %s probe path %s; want %s", where, kind, p.HTTPGet.Path, path)
	}
	want, ok := namedPort(c, portName)
	if !ok {
		t.Errorf("%s: container has no port named %s", where, portName)
		return
	}
	switch p.HTTPGet.Port.Type {
	case intstr.String:
		if p.HTTPGet.Port.StrVal != portName {
			t.Errorf("%s: %s probe port %s; want %s", where, kind, p.HTTPGet.Port.StrVal, portName)
		}
	default:
		if p.HTTPGet.Port.IntVal != want {
			t.Errorf("%s: %s probe port %d; want %d (%s)", where, kind, p.HTTPGet.Port.IntVal, want, portName)
		}
	}
}

func portFromEnv(t *testing.T, where string, env map[string]string, name string, def int32) int32 {
	t.Helper()
	v, ok := env[name]
	if !ok {
		return def
	}
	var n int32
	if _, err := fmt.Sscan(v, &n); err != nil {
		t.Errorf("%s: %s=%q is not a port", where, name, v)
	}
	return n
}

func checkAPI(t *testing.T, s set, d *appsv1.Deployment) {
	t.Helper()
	where := "Deployment " + d.Name
	c := container(t, d, "api")
	env := s.env(t, where, c)
	if env["SERVER_HOST"] != "0.0.0.0" {
		t.Errorf("%s: SERVER_HOST=%q; want 0.0.0.0 (the default 127.0.0.1 is unreachable from outside the pod)", where, env["SERVER_HOST"])
	}
	port := portFromEnv(t, where, env, "SERVER_PORT", defaultServerPort)
	if got, ok := namedPort(c, "http"); !ok || got != port {
		t.Errorf("%s: port http = %d; want SERVER_PORT %d", where, got, port)
	}
	checkProbe(t, where, "liveness", c.LivenessProbe, c, "/health/live", "http")
	checkProbe(t, where, "readiness", c.ReadinessProbe, c, "/health/ready", "http")
	if c.StartupProbe != nil {
		checkProbe(t, where, "startup", c.StartupProbe, c, "/health/live", "http")
	}
	for _, name := range []string{"DATABASE_URL", "REDIS_URL", "NATS_URL", "API_SALT", "JWT_SECRET"} {
		if !strings.HasPrefix(env[name], "secret:") {
			t.Errorf("%s: %s must come from a Secret, got %q", where, name, env[name])
		}
	}
	if env["ENVIRONMENT"] == "development" {
		t.Errorf("%s: ENVIRONMENT=development in a deployment", where)
	}
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Errorf("%s: no memory limit; want at least %d MiB", where, apiMemoryFloor>>20)
		return
	}
	if limit.Value() < apiMemoryFloor {
		t.Errorf("%s: memory limit %s < the validation budget (%d MiB) + 256 MiB = %d MiB",
			where, limit.String(), runner.DefaultValidationBudget>>20, apiMemoryFloor>>20)
	}
	checkGoMemLimit(t, where, env, limit.Value())
	checkShutdown(t, where, env, d.Spec.Template.Spec.TerminationGracePeriodSeconds)
}

// checkShutdown: the api must leave the Service before closing its
// listener (SHUTDOWN_DELAY, a few seconds) and then be given the time its
// longest execution needs (cmd/api shutdownTimeout: the longest tier time
// plus the 5 s grace plus 5 s) before Kubernetes kills it.
func checkShutdown(t *testing.T, where string, env map[string]string, grace *int64) {
	t.Helper()
	delay, err := time.ParseDuration(env["SHUTDOWN_DELAY"])
	if err != nil || delay < 3*time.Second {
		t.Errorf("%s: SHUTDOWN_DELAY=%q; want at least 3s so that endpoints are removed before the listener closes", where, env["SHUTDOWN_DELAY"])
	}
	longest := 30 * time.Second // MAX_TIME_PRO's default
	for _, name := range []string{"MAX_TIME_FREE", "MAX_TIME_BASIC", "MAX_TIME_PRO", "EXECUTION_TIMEOUT"} {
		if d, err := time.ParseDuration(env[name]); err == nil && d > longest {
			longest = d
		}
	}
	need := delay + longest + 10*time.Second
	if grace == nil || time.Duration(*grace)*time.Second < need {
		t.Errorf("%s: terminationGracePeriodSeconds %d < SHUTDOWN_DELAY + the longest execution + 10 s = %v", where, derefInt(grace), need)
	}
}

func checkWorker(t *testing.T, s set, d *appsv1.Deployment) {
	t.Helper()
	where := "Deployment " + d.Name
	c := container(t, d, "worker")
	env := s.env(t, where, c)
	port := portFromEnv(t, where, env, "METRICS_PORT", defaultMetricsPort)
	if got, ok := namedPort(c, "metrics"); !ok || got != port {
		t.Errorf("%s: port metrics = %d; want METRICS_PORT %d", where, got, port)
	}
	if len(c.Ports) != 1 {
		t.Errorf("%s: worker exposes %d ports; want only metrics", where, len(c.Ports))
	}
	checkProbe(t, where, "liveness", c.LivenessProbe, c, "/health/live", "metrics")
	checkProbe(t, where, "readiness", c.ReadinessProbe, c, "/health/ready", "metrics")
	if c.StartupProbe != nil {
		checkProbe(t, where, "startup", c.StartupProbe, c, "/health/live", "metrics")
	}
	if _, ok := env["REDIS_URL"]; ok {
		t.Errorf("%s: the worker gets REDIS_URL, which it does not need", where)
	}
	for _, name := range []string{"DATABASE_URL", "NATS_URL"} {
		if !strings.HasPrefix(env[name], "secret:") {
			t.Errorf("%s: %s must come from a Secret, got %q", where, name, env[name])
		}
	}
	// Least privilege: a worker runs strangers' code and must not hold what
	// forges keys or tokens.
	for _, name := range []string{"API_SALT", "JWT_SECRET"} {
		if _, ok := env[name]; ok {
			t.Errorf("%s: the worker gets %s, which it does not need", where, name)
		}
	}
	if dir := env["COMPILATION_CACHE_DIR"]; dir != "" && !mounted(c, dir) {
		t.Errorf("%s: COMPILATION_CACHE_DIR=%s is on the read-only root filesystem; mount a volume there", where, dir)
	}

	floor, err := workerMemoryFloor(env)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Errorf("%s: no memory limit; want at least %d MiB", where, floor>>20)
		return
	}
	if limit.Value() < floor {
		t.Errorf("%s: memory limit %s < WORKER_CONCURRENCY x (MEMORY_LIMIT + %d MiB) + MODULE_CACHE_BYTES + %d MiB = %d MiB",
			where, limit.String(), executionOverhead>>20, runtimeOverhead>>20, floor>>20)
	}
	checkGoMemLimit(t, where, env, limit.Value())
	if req, ok := c.Resources.Requests[corev1.ResourceMemory]; ok && req.Cmp(limit) != 0 {
		t.Logf("%s: memory request %s differs from limit %s; the pod can be OOM-killed under node pressure", where, req.String(), limit.String())
	}
}

func mounted(c corev1.Container, dir string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			return true
		}
	}
	return false
}

// checkPodSpec wants the restricted Pod Security Standard and more: non-root,
// no privilege escalation, read-only root filesystem, all capabilities
// dropped, RuntimeDefault seccomp, no service account token, limits set.
func checkPodSpec(t *testing.T, where string, s set, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false: the programs never call the Kubernetes API", where)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: uses host namespaces", where)
	}
	if len(spec.Containers) == 0 {
		t.Errorf("%s: no containers", where)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		cw := where + " container " + c.Name
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil {
			nonRoot = psc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			t.Errorf("%s: runAsNonRoot is not true", cw)
		}
		uid := sc.RunAsUser
		if uid == nil {
			uid = psc.RunAsUser
		}
		if uid != nil && *uid == 0 {
			t.Errorf("%s: runs as uid 0", cw)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", cw)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", cw)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", cw)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: capabilities do not drop ALL", cw)
		} else if len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: adds capabilities %v", cw, sc.Capabilities.Add)
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: seccompProfile is not RuntimeDefault", cw)
		}
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			t.Errorf("%s: no memory limit", cw)
		}
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Errorf("%s: no CPU request", cw)
		}
		if strings.HasSuffix(c.Image, ":latest") || !strings.ContainsAny(c.Image, ":@") {
			t.Errorf("%s: image %q is not pinned to a tag or digest", cw, c.Image)
		}
		for _, m := range c.VolumeMounts {
			if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
				t.Errorf("%s: mounts volume %s that the pod does not declare", cw, m.Name)
			}
		}
		s.env(t, cw, c) // env names and secret references
	}
}

func selects(selector map[string]string, podLabels map[string]string) bool {
	return len(selector) > 0 && labels.SelectorFromSet(selector).Matches(labels.Set(podLabels))
}

func (s set) podsSelectedBy(selector map[string]string) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, o := range s.all("Deployment") {
		d := o.Obj.(*appsv1.Deployment)
		if selects(selector, d.Spec.Template.Labels) {
			out = append(out, d)
		}
	}
	return out
}

func checkServices(t *testing.T, s set) {
	t.Helper()
	for _, o := range s.all("Service") {
		svc := o.Obj.(*corev1.Service)
		ds := s.podsSelectedBy(svc.Spec.Selector)
		if len(ds) != 1 {
			t.Errorf("%s: Service %s selects %d Deployments; want 1", o.Source, svc.Name, len(ds))
			continue
		}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			found := false
			for _, c := range ds[0].Spec.Template.Spec.Containers {
				for _, cp := range c.Ports {
					if (target.Type == intstr.String && cp.Name == target.StrVal) || (target.Type == intstr.Int && cp.ContainerPort == target.IntVal) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("%s: Service %s port %s targets %s, which Deployment %s does not expose", o.Source, svc.Name, p.Name, target.String(), ds[0].Name)
			}
		}
	}
}

func checkAutoscalers(t *testing.T, s set) {
	t.Helper()
	for _, o := range s.all("HorizontalPodAutoscaler") {
		h := o.Obj.(*autoscalingv2.HorizontalPodAutoscaler)
		d, ok := s.find("Deployment", h.Spec.ScaleTargetRef.Name)
		if !ok || h.Spec.ScaleTargetRef.Kind != "Deployment" {
			t.Errorf("%s: HPA %s targets %s %s, which is not part of the install", o.Source, h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
			continue
		}
		if d.Obj.(*appsv1.Deployment).Spec.Replicas != nil {
			t.Errorf("%s: Deployment %s sets replicas although HPA %s owns them; every apply would fight the HPA", o.Source, d.Name, h.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			t.Errorf("%s: HPA %s replicas %v..%d", o.Source, h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
	}
}

func checkPDBs(t *testing.T, s set) {
	t.Helper()
	for _, o := range s.all("PodDisruptionBudget") {
		p := o.Obj.(*policyv1.PodDisruptionBudget)
		if p.Spec.Selector == nil || len(s.podsSelectedBy(p.Spec.Selector.MatchLabels)) != 1 {
			t.Errorf("%s: PDB %s does not select exactly one Deployment", o.Source, p.Name)
		}
	}
}

func checkIngresses(t *testing.T, s set) {
	t.Helper()
	for _, o := range s.all("Ingress") {
		ing := o.Obj.(*networkingv1.Ingress)
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				if b == nil {
					t.Errorf("%s: Ingress path %s has no service backend", o.Source, p.Path)
					continue
				}
				svc, ok := s.find("Service", b.Name)
				if !ok {
					t.Errorf("%s: Ingress backend Service %s is not part of the install", o.Source, b.Name)
					continue
				}
				if !servicePortExists(svc.Obj.(*corev1.Service), b.Port.Name, b.Port.Number) {
					t.Errorf("%s: Ingress backend port %q/%d not on Service %s", o.Source, b.Port.Name, b.Port.Number, b.Name)
				}
				if sel := svc.Obj.(*corev1.Service).Spec.Selector; sel["app.kubernetes.io/component"] != "api" {
					t.Errorf("%s: Ingress routes to %s, which is not the api", o.Source, b.Name)
				}
			}
		}
	}
}

func servicePortExists(svc *corev1.Service, name string, number int32) bool {
	for _, p := range svc.Spec.Ports {
		if (name != "" && p.Name == name) || (number != 0 && p.Port == number) {
			return true
		}
	}
	return false
}

func checkServiceMonitors(t *testing.T, s set) {
	t.Helper()
	for _, o := range s.all("ServiceMonitor") {
		sm := o.Obj.(*monitoringv1.ServiceMonitor)
		var svcs []*corev1.Service
		for _, so := range s.all("Service") {
			svc := so.Obj.(*corev1.Service)
			if selects(sm.Spec.Selector.MatchLabels, svc.Labels) {
				svcs = append(svcs, svc)
			}
		}
		if len(svcs) == 0 {
			t.Errorf("%s: ServiceMonitor %s selects no Service", o.Source, sm.Name)
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Path != "/metrics" {
				t.Errorf("%s: ServiceMonitor %s scrapes %q; want /metrics", o.Source, sm.Name, ep.Path)
			}
			for _, svc := range svcs {
				if !servicePortExists(svc, ep.Port, 0) {
					t.Errorf("%s: ServiceMonitor %s port %q not on Service %s", o.Source, sm.Name, ep.Port, svc.Name)
				}
			}
		}
	}
}

// portKey is "5432/TCP".
type portKey string

func policyPorts(ports []networkingv1.NetworkPolicyPort) []portKey {
	var out []portKey
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		port := "any"
		if p.Port != nil {
			port = p.Port.String()
		}
		out = append(out, portKey(port+"/"+string(proto)))
	}
	if len(ports) == 0 {
		out = append(out, "any/any")
	}
	return out
}

// checkNetworkPolicies wants: workers reach only DNS, NATS and PostgreSQL, and
// are reached only on their metrics port from named scrapers; the api reaches
// only DNS, NATS, PostgreSQL and Redis.
func checkNetworkPolicies(t *testing.T, s set, natsPort, pgPort, redisPort int) {
	t.Helper()
	dns := []portKey{"53/UDP", "53/TCP"}
	tcp := func(p int) portKey { return portKey(fmt.Sprintf("%d/TCP", p)) }
	tests := []struct {
		component    string
		ingressPorts []portKey
		ingressFrom  bool // every ingress rule must name its peers
		egressPorts  []portKey
	}{
		{"worker", []portKey{tcp(int(metricsPortOf(t, s)))}, true, append(slices.Clone(dns), tcp(natsPort), tcp(pgPort))},
		{"api", []portKey{tcp(int(apiPortOf(t, s)))}, false, append(slices.Clone(dns), tcp(natsPort), tcp(pgPort), tcp(redisPort))},
	}
	for _, tt := range tests {
		t.Run("NetworkPolicy "+tt.component, func(t *testing.T) {
			d := s.deployment(t, tt.component)
			var pols []*networkingv1.NetworkPolicy
			for _, o := range s.all("NetworkPolicy") {
				np := o.Obj.(*networkingv1.NetworkPolicy)
				sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
				if err != nil {
					t.Fatalf("NetworkPolicy %s: %v", np.Name, err)
				}
				if !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
					pols = append(pols, np)
				}
			}
			if len(pols) != 1 {
				t.Fatalf("%d NetworkPolicies select the %s pods; want 1", len(pols), tt.component)
			}
			np := pols[0]
			if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
				t.Errorf("%s: policyTypes %v; want Ingress and Egress", np.Name, np.Spec.PolicyTypes)
			}
			var in, out []portKey
			for _, r := range np.Spec.Ingress {
				in = append(in, policyPorts(r.Ports)...)
				if tt.ingressFrom && len(r.From) == 0 {
					t.Errorf("%s: an ingress rule admits every peer; name the metrics scrapers", np.Name)
				}
			}
			for _, r := range np.Spec.Egress {
				out = append(out, policyPorts(r.Ports)...)
			}
			if got, want := sortedSet(in), sortedSet(tt.ingressPorts); !slices.Equal(got, want) {
				t.Errorf("%s: ingress ports %v; want exactly %v", np.Name, got, want)
			}
			if got, want := sortedSet(out), sortedSet(tt.egressPorts); !slices.Equal(got, want) {
				t.Errorf("%s: egress ports %v; want exactly %v", np.Name, got, want)
			}
		})
	}
}

func sortedSet(ps []portKey) []portKey {
	out := slices.Clone(ps)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return slices.Compact(out)
}

func metricsPortOf(t *testing.T, s set) int32 {
	t.Helper()
	p, _ := namedPort(container(t, s.deployment(t, "worker"), "worker"), "metrics")
	return p
}

func apiPortOf(t *testing.T, s set) int32 {
	t.Helper()
	p, _ := namedPort(container(t, s.deployment(t, "api"), "api"), "http")
	return p
}

func kinds(s set) map[string]int {
	n := map[string]int{}
	for _, o := range s.objs {
		n[o.Kind]++
	}
	return n
}

func TestPlainManifests(t *testing.T) {
	// examples/ sits out of `kubectl apply -f deploy/k8s/`, so its template
	// Secret never overwrites the real one; it is checked with the rest.
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s (%v)", err)
	}
	examples, _ := filepath.Glob(filepath.Join("k8s", "examples", "*.yaml"))
	if len(examples) == 0 {
		t.Fatalf("no Secret template in deploy/k8s/examples")
	}
	files = append(files, examples...)
	var s set
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s.objs = append(s.objs, decodeManifests(t, f, b)...)
	}
	for _, o := range s.objs {
		if ns := objectMeta(o.Obj).Namespace; o.Kind != "Namespace" && ns != "wasmwiz" {
			t.Errorf("%s: %s %s in namespace %q; want wasmwiz", o.Source, o.Kind, o.Name, ns)
		}
	}
	want := map[string]int{"Namespace": 1, "ConfigMap": 1, "Secret": 1, "Deployment": 2, "Service": 2,
		"Job": 1, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 2, "NetworkPolicy": 3}
	if got := kinds(s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kinds = %v; want %v", got, want)
	}
	checkInstall(t, s)
	checkNetworkPolicies(t, s, 4222, 5432, 6379)

	hpa, ok := s.find("HorizontalPodAutoscaler", "wasmwiz-worker")
	if !ok || hpa.Obj.(*autoscalingv2.HorizontalPodAutoscaler).Spec.ScaleTargetRef.Name != "wasmwiz-worker" {
		t.Errorf("no HPA scaling the workers")
	}
	sec, _ := s.find("Secret", "wasmwiz")
	for k, v := range sec.Obj.(*corev1.Secret).StringData {
		if !strings.Contains(v, "CHANGE_ME") && !strings.Contains(v, "example.internal") {
			t.Errorf("k8s/examples/secret.yaml %s=%q looks like a real value; keep placeholders", k, v)
		}
	}
}

func derefInt(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
