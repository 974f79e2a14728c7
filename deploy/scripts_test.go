package deploy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// script runs one of ../scripts with extra environment and no terminal on
// standard input.
func script(t *testing.T, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join(repoRoot, "scripts", name)}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(nil)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func parseEnvFile(t *testing.T, text string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("env file line %q is not KEY=VALUE", line)
			continue
		}
		vars[k] = v
	}
	return vars
}

func TestGenerateSecrets(t *testing.T) {
	t.Run("env file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), ".env")
		if _, stderr, err := script(t, nil, "generate_secrets.sh", "-o", path); err != nil {
			t.Fatalf("generate_secrets.sh -o %s: %v\n%s", path, err, stderr)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v; want 0600", path, st.Mode().Perm())
		}
		first, _ := os.ReadFile(path)
		vars := parseEnvFile(t, string(first))
		if keys := slices.Sorted(mapsKeys(vars)); !slices.Equal(keys, []string{"API_SALT", "JWT_SECRET", "POSTGRES_PASSWORD"}) {
			t.Errorf("env file keys %v; want API_SALT JWT_SECRET POSTGRES_PASSWORD", keys)
		}
		if len(vars["API_SALT"]) < 16 || len(vars["JWT_SECRET"]) < 32 || len(vars["POSTGRES_PASSWORD"]) < 32 {
			t.Errorf("secrets too short: salt %d, jwt %d, password %d characters", len(vars["API_SALT"]), len(vars["JWT_SECRET"]), len(vars["POSTGRES_PASSWORD"]))
		}

		// Everything docker-compose.yml demands with ${NAME:?…} must be there.
		for _, m := range regexp.MustCompile(`\$\{([A-Z_]+):\?`).FindAllStringSubmatch(string(readFile(t, "docker-compose.yml")), -1) {
			if vars[m[1]] == "" {
				t.Errorf("docker-compose.yml requires %s, which generate_secrets.sh does not write", m[1])
			}
		}

		if _, stderr, err := script(t, nil, "generate_secrets.sh", "-o", path); err == nil || !strings.Contains(stderr, "exists") {
			t.Errorf("second run over %s: err=%v stderr=%q; want a refusal to overwrite", path, err, stderr)
		}
		if again, _ := os.ReadFile(path); !bytes.Equal(again, first) {
			t.Errorf("a refused run changed %s", path)
		}
		if _, stderr, err := script(t, nil, "generate_secrets.sh", "-o", path, "--force"); err != nil {
			t.Fatalf("--force: %v\n%s", err, stderr)
		}
		second, _ := os.ReadFile(path)
		if parseEnvFile(t, string(second))["API_SALT"] == vars["API_SALT"] {
			t.Errorf("two runs gave the same API_SALT")
		}
	})

	t.Run("kubernetes secret", func(t *testing.T) {
		out, stderr, err := script(t, nil, "generate_secrets.sh", "--format", "k8s", "-n", "prod", "--name", "wasmwiz-secrets", "--db-host", "pg.internal")
		if err != nil {
			t.Fatalf("generate_secrets.sh --format k8s: %v\n%s", err, stderr)
		}
		objs := decodeManifests(t, "generate_secrets.sh --format k8s", []byte(out))
		if len(objs) != 1 || objs[0].Kind != "Secret" {
			t.Fatalf("got %d objects; want one Secret", len(objs))
		}
		sec := objs[0].Obj.(*corev1.Secret)
		if sec.Name != "wasmwiz-secrets" || sec.Namespace != "prod" {
			t.Errorf("Secret %s/%s; want prod/wasmwiz-secrets", sec.Namespace, sec.Name)
		}
		// The keys the plain manifests and the chart's defaults read.
		for _, k := range []string{"DATABASE_URL", "WORKER_DATABASE_URL", "REDIS_URL", "NATS_URL", "API_SALT", "JWT_SECRET"} {
			if sec.StringData[k] == "" {
				t.Errorf("Secret lacks %s", k)
			}
		}
		u, err := url.Parse(sec.StringData["DATABASE_URL"])
		if err != nil || u.Host != "pg.internal:5432" || u.User.Username() != "wasmwiz" {
			t.Errorf("DATABASE_URL %q; want wasmwiz@pg.internal:5432", sec.StringData["DATABASE_URL"])
		} else if pw, _ := u.User.Password(); pw != sec.StringData["POSTGRES_PASSWORD"] {
			t.Errorf("DATABASE_URL password differs from POSTGRES_PASSWORD")
		}
		if w, err := url.Parse(sec.StringData["WORKER_DATABASE_URL"]); err != nil || w.User.Username() != "wasmwiz_worker" {
			t.Errorf("WORKER_DATABASE_URL %q; want the wasmwiz_worker role", sec.StringData["WORKER_DATABASE_URL"])
		}
	})

	t.Run("bad format", func(t *testing.T) {
		if _, _, err := script(t, nil, "generate_secrets.sh", "--format", "xml"); err == nil {
			t.Errorf("--format xml succeeded")
		}
	})
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// adminURL is the PostgreSQL the backup test makes its scratch database in.
func adminURL() string {
	if u := os.Getenv("WASMWIZ_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

func psql(t *testing.T, dbURL, sql string) string {
	t.Helper()
	cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dbURL, "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// gooseUp returns the Up section of a goose SQL migration.
func gooseUp(sql string) string {
	_, up, ok := strings.Cut(sql, "-- +goose Up")
	if !ok {
		return sql
	}
	up, _, _ = strings.Cut(up, "-- +goose Down")
	return up
}

func TestBackupRestore(t *testing.T) {
	for _, tool := range []string{"psql", "pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the PostgreSQL client (apt-get install postgresql-client)", tool)
		}
	}
	admin := adminURL()
	if out, err := exec.Command("psql", "-X", "-d", admin, "-c", "SELECT 1").CombinedOutput(); err != nil {
		t.Fatalf("PostgreSQL not reachable at %s (set WASMWIZ_TEST_POSTGRES_URL, or start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start): %v\n%s", admin, err, out)
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	db := "wasmwiz_deploy_" + hex.EncodeToString(suffix)
	psql(t, admin, "CREATE DATABASE "+db)
	t.Cleanup(func() {
		if out, err := exec.Command("psql", "-X", "-d", admin, "-c", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)").CombinedOutput(); err != nil {
			t.Errorf("drop scratch database %s: %v\n%s", db, err, out)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + db
	dbURL := u.String()
	// The programs' DATABASE_URL may carry pgx-only parameters; the scripts drop them.
	q := u.Query()
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	appURL := u.String()

	migrations, _ := filepath.Glob(filepath.Join(repoRoot, "migrations", "*.sql"))
	if len(migrations) == 0 {
		t.Fatalf("no migrations/*.sql to build the schema from")
	}
	sort.Strings(migrations)
	for _, m := range migrations {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbURL)
		cmd.Stdin = strings.NewReader(gooseUp(string(b)))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apply %s: %v\n%s", m, err, out)
		}
	}
	const (
		keyID    = "01900000-0000-7000-8000-000000000001"
		moduleID = "01900000-0000-7000-8000-000000000002"
		blobHex  = "0061736d01000000" // "\0asm" version 1: the smallest module
	)
	sha := strings.Repeat("ab", 32)
	seed := fmt.Sprintf(`
		INSERT INTO api_keys (id, name, prefix, key_hash, owner, role, tier)
		VALUES ('%s', 'admin', 'ww_test', '\x0102030405', 'acme', 'admin', 'pro');
		INSERT INTO module_blobs (sha256, bytes, size_bytes) VALUES ('%s', '\x%s', 8);
		INSERT INTO modules (id, owner, name, sha256, size_bytes, exports, wasi)
		VALUES ('%s', 'acme', 'hello', '%s', 8, ARRAY['_start'], true);`, keyID, sha, blobHex, moduleID, sha)
	psql(t, dbURL, seed)
	snapshot := func() string {
		return psql(t, dbURL, `SELECT (SELECT string_agg(id || ':' || name || ':' || role || ':' || tier, ',') FROM api_keys)
			|| '|' || (SELECT string_agg(id || ':' || name || ':' || sha256, ',') FROM modules)
			|| '|' || (SELECT string_agg(encode(bytes, 'hex'), ',') FROM module_blobs)`)
	}
	want := snapshot()
	if !strings.Contains(want, keyID) || !strings.Contains(want, moduleID) || !strings.Contains(want, blobHex) {
		t.Fatalf("seed rows missing before the backup: %q", want)
	}

	dir := t.TempDir()
	// Older dumps for the rotation to prune; names sort by time.
	old := []string{"wasmwiz-20000101T000000Z.dump", "wasmwiz-20000102T000000Z.dump", "wasmwiz-20000103T000000Z.dump"}
	for _, name := range old {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"DATABASE_URL=" + appURL, "BACKUP_DIR=" + dir}
	out, stderr, err := script(t, env, "backup.sh", "-k", "2")
	if err != nil {
		t.Fatalf("backup.sh: %v\n%s", err, stderr)
	}
	dump := strings.TrimSpace(out)
	if filepath.Dir(dump) != dir || !regexp.MustCompile(`^wasmwiz-\d{8}T\d{6}Z\.dump$`).MatchString(filepath.Base(dump)) {
		t.Fatalf("backup.sh printed %q; want %s/wasmwiz-YYYYMMDDTHHMMSSZ.dump", dump, dir)
	}
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if wantLeft := []string{old[2], filepath.Base(dump)}; !slices.Equal(left, wantLeft) {
		t.Errorf("after backup.sh -k 2 the directory holds %v; want %v", left, wantLeft)
	}

	t.Run("restore latest after a wipe", func(t *testing.T) {
		psql(t, dbURL, "DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
		if n := psql(t, dbURL, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); n != "0" {
			t.Fatalf("wipe left %s tables", n)
		}
		if _, stderr, err := script(t, env, "restore.sh", "-y", "latest"); err != nil {
			t.Fatalf("restore.sh -y latest: %v\n%s", err, stderr)
		}
		if got := snapshot(); got != want {
			t.Errorf("after restore: %q; want %q", got, want)
		}
	})

	t.Run("restore FILE over newer rows", func(t *testing.T) {
		psql(t, dbURL, `INSERT INTO api_keys (id, name, prefix, key_hash, owner, role, tier)
			VALUES ('01900000-0000-7000-8000-0000000000ff', 'later', 'ww_late', '\xff', 'acme', 'user', 'free')`)
		if _, stderr, err := script(t, []string{"DATABASE_URL=" + appURL}, "restore.sh", "-y", dump); err != nil {
			t.Fatalf("restore.sh -y %s: %v\n%s", dump, err, stderr)
		}
		if got := snapshot(); got != want {
			t.Errorf("after restore: %q; want %q (the later key gone)", got, want)
		}
	})

	t.Run("restore refuses without -y", func(t *testing.T) {
		_, stderr, err := script(t, env, "restore.sh", "latest")
		if err == nil || !strings.Contains(stderr, "without -y") {
			t.Errorf("restore.sh latest with no terminal: err=%v stderr=%q; want a refusal", err, stderr)
		}
	})

	t.Run("restore of a file that is no dump", func(t *testing.T) {
		bad := filepath.Join(dir, old[2])
		_, stderr, err := script(t, env, "restore.sh", "-y", bad)
		if err == nil || !strings.Contains(stderr, "not a pg_dump") {
			t.Errorf("restore.sh -y %s: err=%v stderr=%q; want a refusal", bad, err, stderr)
		}
		if got := snapshot(); got != want {
			t.Errorf("a refused restore changed the database: %q", got)
		}
	})
}
