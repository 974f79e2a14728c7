package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

type instruction struct {
	Cmd  string // upper case: FROM, RUN, COPY...
	Args string
	Line int
}

type stage struct {
	Base, Name string
	Ins        []instruction
}

// parseDockerfile reads instructions, joining continuation lines and
// dropping comments as BuildKit does. It is enough for the checks below,
// not a general parser.
func parseDockerfile(t *testing.T, rel string) (global []instruction, stages []stage) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, rel)))
	var cur strings.Builder
	start, n := 0, 0
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := stage{}
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.Name = f[i+1]
					i++
				case st.Base == "":
					st.Base = f[i]
				}
			}
			stages = append(stages, st)
			return
		}
		if len(stages) == 0 {
			global = append(global, in)
		} else {
			stages[len(stages)-1].Ins = append(stages[len(stages)-1].Ins, in)
		}
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\"))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return global, stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.Ins {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// envOf reads ENV instructions in KEY=VALUE form.
func (s stage) envOf(t *testing.T, file string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, in := range s.all("ENV") {
		for _, kv := range strings.Fields(in.Args) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Errorf("%s:%d: ENV %s: use the KEY=VALUE form", file, in.Line, in.Args)
				continue
			}
			env[k] = v
		}
	}
	return env
}

func execForm(t *testing.T, file string, in instruction, args string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil || len(argv) == 0 {
		t.Errorf("%s:%d: %s %s: want the exec (JSON) form: distroless has no shell", file, in.Line, in.Cmd, args)
	}
	return argv
}

var goDirective = regexp.MustCompile(`(?m)^go ([0-9.]+)\s*$`)

func TestDockerfiles(t *testing.T) {
	goVersion := goDirective.FindSubmatch(readFile(t, "go.mod"))
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	tests := []struct {
		file, binary, pkg, portVar string
		port                       string
	}{
		{"Dockerfile.api", "api", "./cmd/api", "SERVER_PORT", "8080"},
		{"Dockerfile.worker", "worker", "./cmd/worker", "METRICS_PORT", "9090"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			global, stages := parseDockerfile(t, tt.file)
			if len(stages) < 2 {
				t.Fatalf("%s has %d stages; want a build stage and a minimal final one", tt.file, len(stages))
			}
			var goArg string
			for _, in := range global {
				if k, v, _ := strings.Cut(in.Args, "="); in.Cmd == "ARG" && k == "GO_VERSION" {
					goArg = v
				}
			}
			if goArg != string(goVersion[1]) {
				t.Errorf("ARG GO_VERSION=%s; want go.mod's go %s", goArg, goVersion[1])
			}

			build := stages[0]
			if !strings.HasPrefix(build.Base, "golang:${GO_VERSION}") {
				t.Errorf("build stage FROM %s; want golang:${GO_VERSION}-…", build.Base)
			}
			var runs strings.Builder
			versionDeclared := false
			for _, in := range build.Ins {
				if in.Cmd == "ARG" && strings.HasPrefix(in.Args, "VERSION") {
					versionDeclared = true
				}
				if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") && !versionDeclared {
					t.Errorf("%s:%d: go build runs before ARG VERSION is declared in its stage", tt.file, in.Line)
				}
				if in.Cmd == "RUN" {
					runs.WriteString(in.Args + "\n")
				}
			}
			builds := regexp.MustCompile(`CGO_ENABLED=0 [^\n]*?go build -trimpath -ldflags "([^"]*)" -o (\S+) (\./\S+)`).FindAllStringSubmatch(runs.String(), -1)
			outputs := map[string]string{} // package -> output path
			for _, b := range builds {
				outputs[b[3]] = b[2]
				if !strings.HasPrefix(b[1], "-s -w") {
					t.Errorf("go build %s: ldflags %q; want -s -w first", b[3], b[1])
				}
				if b[3] == tt.pkg && !strings.Contains(b[1], "-X main.version=${VERSION}") {
					t.Errorf("go build %s: ldflags %q lack -X main.version=${VERSION}", b[3], b[1])
				}
				requireMainPackage(t, b[3])
			}
			for _, pkg := range []string{tt.pkg, "./deploy/healthcheck"} {
				if _, ok := outputs[pkg]; !ok {
					t.Errorf("no `CGO_ENABLED=0 … go build -trimpath -ldflags … -o OUT %s` in the build stage", pkg)
				}
			}

			final := stages[len(stages)-1]
			if !(strings.HasPrefix(final.Base, "gcr.io/distroless/static") && strings.HasSuffix(final.Base, ":nonroot")) && final.Base != "scratch" {
				t.Errorf("final stage FROM %s; want gcr.io/distroless/static…:nonroot or scratch", final.Base)
			}
			users := final.all("USER")
			if len(users) == 0 {
				t.Errorf("final stage sets no USER")
			} else if u := users[len(users)-1].Args; u == "0" || strings.HasPrefix(u, "0:") || u == "root" || u == "" {
				t.Errorf("final stage USER %q; want a non-root uid", u)
			}
			copied := map[string]string{} // destination -> source
			for _, in := range final.all("COPY") {
				f := strings.Fields(in.Args)
				copied[f[len(f)-1]] = f[len(f)-2]
			}
			if src := copied["/usr/local/bin/"+tt.binary]; src != outputs[tt.pkg] {
				t.Errorf("final stage copies %q to /usr/local/bin/%s; want the build output %q", src, tt.binary, outputs[tt.pkg])
			}
			if src := copied["/usr/local/bin/healthcheck"]; src != outputs["./deploy/healthcheck"] {
				t.Errorf("final stage copies %q to /usr/local/bin/healthcheck; want %q", src, outputs["./deploy/healthcheck"])
			}
			if eps := final.all("ENTRYPOINT"); len(eps) != 1 {
				t.Errorf("final stage has %d ENTRYPOINTs; want 1", len(eps))
			} else if argv := execForm(t, tt.file, eps[0], eps[0].Args); len(argv) > 0 && argv[0] != "/usr/local/bin/"+tt.binary {
				t.Errorf("ENTRYPOINT %v; want /usr/local/bin/%s", argv, tt.binary)
			}

			env := final.envOf(t, tt.file)
			for k := range env {
				if !configNames()[k] {
					t.Errorf("ENV %s is not a variable the programs read", k)
				}
			}
			if env[tt.portVar] != tt.port {
				t.Errorf("ENV %s=%q; want %s", tt.portVar, env[tt.portVar], tt.port)
			}
			if exp := final.all("EXPOSE"); len(exp) != 1 || exp[0].Args != tt.port {
				t.Errorf("EXPOSE %v; want exactly %s", exp, tt.port)
			}
			hcs := final.all("HEALTHCHECK")
			if len(hcs) != 1 {
				t.Fatalf("final stage has %d HEALTHCHECKs; want 1", len(hcs))
			}
			_, cmd, ok := strings.Cut(hcs[0].Args, "CMD ")
			if !ok {
				t.Fatalf("HEALTHCHECK %s has no CMD", hcs[0].Args)
			}
			argv := execForm(t, tt.file, hcs[0], strings.TrimSpace(cmd))
			if len(argv) != 2 || argv[0] != "/usr/local/bin/healthcheck" {
				t.Fatalf("HEALTHCHECK CMD %v; want [/usr/local/bin/healthcheck URL]", argv)
			}
			wantURL := "http://127.0.0.1:${" + tt.portVar + ":-" + tt.port + "}/health/live"
			if argv[1] != wantURL {
				t.Errorf("HEALTHCHECK probes %s; want %s", argv[1], wantURL)
			}

			switch tt.binary {
			case "api":
				if env["SERVER_HOST"] != "0.0.0.0" {
					t.Errorf("ENV SERVER_HOST=%q; want 0.0.0.0 (the program's default 127.0.0.1 is unreachable from outside the container)", env["SERVER_HOST"])
				}
			case "worker":
				dir := env["COMPILATION_CACHE_DIR"]
				if dir == "" {
					t.Errorf("ENV COMPILATION_CACHE_DIR unset; the image should point it at its cache directory")
				}
				found := false
				for _, in := range final.all("COPY") {
					if strings.Contains(in.Args, "--chown=65532:65532") && strings.HasSuffix(in.Args, " "+dir) {
						found = true
					}
				}
				if !found {
					t.Errorf("final stage does not create %s owned by 65532: a fresh volume mounted there would be root's", dir)
				}
			}
			for _, st := range stages {
				for _, in := range st.all("ARG") {
					if regexp.MustCompile(`(?i)secret|password|salt|token`).MatchString(in.Args) {
						t.Errorf("%s:%d: ARG %s: build args end up in the image history; never pass secrets", tt.file, in.Line, in.Args)
					}
				}
			}
		})
	}
}

func TestDockerignore(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	ignored := func(p string) bool {
		m, err := pm.MatchesOrParentMatches(p)
		if err != nil {
			t.Fatalf(".dockerignore against %s: %v", p, err)
		}
		return m
	}
	// Everything the build compiles or embeds must reach the builder.
	needed := []string{"go.mod", "go.sum", "deploy/healthcheck/main.go"}
	for _, dir := range []string{"cmd", "internal", "migrations"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if !d.IsDir() && !strings.HasSuffix(path, "_test.go") {
				rel, _ := filepath.Rel(repoRoot, path)
				needed = append(needed, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			t.Errorf("walk %s: %v", dir, err)
		}
	}
	for _, p := range needed {
		if ignored(p) {
			t.Errorf(".dockerignore excludes %s, which the build needs", p)
		}
	}
	for _, p := range []string{".git/HEAD", ".env", "deploy/.env", "backups/wasmwiz-20260101T000000Z.dump", "bin/api"} {
		if !ignored(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
}
