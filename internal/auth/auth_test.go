package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/testenv"
)

var (
	testSalt   = []byte("0123456789abcdef-salt")
	testSecret = []byte("jwt-secret-jwt-secret-jwt-secret-!!")
)

func newService(t *testing.T, st *store.Store, dev bool) *Service {
	t.Helper()
	s := NewService(st, Options{Salt: testSalt, JWTSecret: testSecret, JWTTTL: time.Minute, Development: dev})
	s.SetFanout(true)
	return s
}

func TestKeyFormat(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		k := NewKey()
		if err := CheckKeyFormat(k); err != nil || len(k) != len(keyScheme)+keySecretLen {
			t.Fatalf("NewKey() = %q, CheckKeyFormat = %v; want a valid key", k, err)
		}
		if seen[k] {
			t.Fatalf("NewKey repeated %q", k)
		}
		seen[k] = true
	}
	bad := []string{"", "wwz_", "wwz_short", "xyz_" + strings.Repeat("a", 40), "wwz_" + strings.Repeat("a", 31),
		"wwz_" + strings.Repeat("a", 129), "wwz_" + strings.Repeat("a", 39) + "-", "wwz_" + strings.Repeat("é", 20),
		"WWZ_" + strings.Repeat("a", 40), "wwz_" + strings.Repeat("a", 39) + "\x00"}
	for _, k := range bad {
		if CheckKeyFormat(k) == nil {
			t.Errorf("CheckKeyFormat(%q) = nil; want ErrMalformedKey", k)
		}
	}
}

func TestHashKey(t *testing.T) {
	k := NewKey()
	h1, h2 := HashKey(testSalt, k), HashKey([]byte("another-salt-value"), k)
	if bytes.Equal(h1, h2) {
		t.Errorf("hash does not depend on the salt")
	}
	if !HashEqual(h1, HashKey(testSalt, k)) || HashEqual(h1, h2) {
		t.Errorf("HashEqual wrong")
	}
	if bytes.Contains(h1, []byte(k)) || len(h1) != 32 {
		t.Errorf("hash %x: want 32 bytes of HMAC-SHA256, not the key", h1)
	}
}

func TestAuthenticate(t *testing.T) {
	st, _ := testenv.Store(t)
	s := newService(t, st, false)
	ctx := context.Background()
	k, secret, err := s.Bootstrap(ctx, NewKeyRequest{Name: "admin", Owner: "acme", Role: RoleAdmin, Tier: "pro"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Prefix != secret[:12] || bytes.Contains(k.Hash, []byte(secret)) {
		t.Errorf("stored key %+v; want prefix and hash only", k)
	}

	p, err := s.Authenticate(ctx, "Bearer "+secret, "")
	if err != nil || p.KeyID != k.ID || p.Owner != "acme" || p.Role != RoleAdmin || p.Tier != "pro" || p.Method != MethodKey {
		t.Fatalf("Authenticate(bearer key) = %+v, %v", p, err)
	}
	if p, err := s.Authenticate(ctx, "", secret); err != nil || p.KeyID != k.ID {
		t.Errorf("Authenticate(X-API-Key) = %+v, %v", p, err)
	}
	if _, err := s.Authenticate(ctx, "bearer "+secret, ""); err != nil {
		t.Errorf("scheme is case-insensitive; got %v", err)
	}

	refused := map[string][2]string{
		"none":            {"", ""},
		"basic scheme":    {"Basic dXNlcjpwYXNz", ""},
		"no space":        {"Bearer", ""},
		"malformed key":   {"Bearer wwz_tooshort", ""},
		"unknown key":     {"Bearer " + NewKey(), ""},
		"garbage":         {"Bearer \x00\x01", ""},
		"huge header":     {"Bearer " + strings.Repeat("A", 60000), ""},
		"jwt in api key":  {"", "a.b.c"},
		"random 3 dots":   {"Bearer a.b.c", ""},
		"other key salt":  {"Bearer " + secret[:len(secret)-1] + "Z", ""},
		"empty api key":   {"", " "},
		"only whitespace": {"Bearer    ", ""},
	}
	for name, h := range refused {
		if _, err := s.Authenticate(ctx, h[0], h[1]); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authenticate(%s) = %v; want ErrUnauthenticated", name, err)
		}
	}

	t.Run("expired", func(t *testing.T) {
		days := 1
		_, sec, err := s.CreateKey(ctx, p, NewKeyRequest{Name: "short-lived", ExpiresInDays: &days})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, "Bearer "+sec, ""); err != nil {
			t.Fatalf("fresh key refused: %v", err)
		}
		s.now = func() time.Time { return time.Now().Add(25 * time.Hour) }
		defer func() { s.now = time.Now }()
		if _, err := s.Authenticate(ctx, "Bearer "+sec, ""); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("expired key = %v; want ErrUnauthenticated", err)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		uk, sec, err := s.CreateKey(ctx, p, NewKeyRequest{Name: "doomed"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, "Bearer "+sec, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RevokeKey(ctx, p, uk.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, "Bearer "+sec, ""); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("revoked key = %v; want ErrUnauthenticated", err)
		}
	})

	t.Run("last used is coalesced and written", func(t *testing.T) {
		if err := s.FlushUsage(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetKey(ctx, store.AllOwners(), k.ID)
		if err != nil || got.LastUsedAt == nil {
			t.Errorf("last_used_at = %v, %v; want set after use and flush", got.LastUsedAt, err)
		}
	})
}

func TestDevelopmentPrincipal(t *testing.T) {
	st, _ := testenv.Store(t)
	s := newService(t, st, true)
	p, err := s.Authenticate(context.Background(), "", "")
	if err != nil || p != Development() {
		t.Errorf("Authenticate(no credentials, development) = %+v, %v; want the development principal", p, err)
	}
	if _, err := s.Authenticate(context.Background(), "Bearer "+NewKey(), ""); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("credentials sent in development are still checked; got %v", err)
	}
}

func TestTokens(t *testing.T) {
	st, _ := testenv.Store(t)
	s := newService(t, st, false)
	ctx := context.Background()
	k, secret, err := s.Bootstrap(ctx, NewKeyRequest{Name: "admin", Owner: "acme", Role: RoleAdmin, Tier: "pro"})
	if err != nil {
		t.Fatal(err)
	}
	keyP, _ := s.Authenticate(ctx, "Bearer "+secret, "")
	token, expires, err := s.IssueToken(keyP)
	if err != nil || time.Until(expires) > time.Minute || time.Until(expires) < 50*time.Second {
		t.Fatalf("IssueToken = %v, expires %v", err, expires)
	}
	p, err := s.Authenticate(ctx, "Bearer "+token, "")
	if err != nil || p.KeyID != k.ID || p.Method != MethodToken || p.Owner != "acme" {
		t.Fatalf("Authenticate(token) = %+v, %v", p, err)
	}
	if _, _, err := s.IssueToken(p); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("IssueToken from a token = %v; want ErrUnauthenticated", err)
	}
	if _, _, err := s.RefreshToken(keyP); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("RefreshToken from a key = %v; want ErrUnauthenticated", err)
	}
	if _, _, err := s.RefreshToken(p); err != nil {
		t.Errorf("RefreshToken from a token = %v", err)
	}

	sign := func(method jwt.SigningMethod, key any, mutate func(*claims)) string {
		c := claims{Owner: "acme", Role: RoleAdmin, Tier: "pro", RegisteredClaims: jwt.RegisteredClaims{
			Issuer: issuer, Subject: k.ID.String(), ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute)),
		}}
		if mutate != nil {
			mutate(&c)
		}
		tok, err := jwt.NewWithClaims(method, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	parts := strings.Split(token, ".")
	bad := map[string]string{
		"alg none":        sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil),
		"HS512":           sign(jwt.SigningMethodHS512, testSecret, nil),
		"RS256":           sign(jwt.SigningMethodRS256, rsaKey, nil),
		"other secret":    sign(jwt.SigningMethodHS256, []byte("not-the-secret-not-the-secret-!!"), nil),
		"expired":         sign(jwt.SigningMethodHS256, testSecret, func(c *claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Second)) }),
		"no exp":          sign(jwt.SigningMethodHS256, testSecret, func(c *claims) { c.ExpiresAt = nil }),
		"wrong issuer":    sign(jwt.SigningMethodHS256, testSecret, func(c *claims) { c.Issuer = "evil" }),
		"unknown key":     sign(jwt.SigningMethodHS256, testSecret, func(c *claims) { c.Subject = uuid.NewString() }),
		"bad subject":     sign(jwt.SigningMethodHS256, testSecret, func(c *claims) { c.Subject = "admin" }),
		"tampered claims": parts[0] + "." + strings.TrimRight(jwtSegment(`{"owner":"other","role":"admin","tier":"pro","iss":"wasmwiz","sub":"`+k.ID.String()+`","exp":9999999999}`), "=") + "." + parts[2],
		"truncated sig":   token[:len(token)-4],
	}
	for name, tok := range bad {
		if _, err := s.Authenticate(ctx, "Bearer "+tok, ""); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authenticate(%s token) = %v; want ErrUnauthenticated", name, err)
		}
	}

	// A token outlives nothing: revoking its key refuses it.
	if _, err := s.RevokeKey(ctx, keyP, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, "Bearer "+token, ""); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("token of a revoked key = %v; want ErrUnauthenticated", err)
	}
}

func jwtSegment(s string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

func TestCreateKeyPrivileges(t *testing.T) {
	st, _ := testenv.Store(t)
	s := newService(t, st, false)
	ctx := context.Background()
	admin := Principal{KeyID: uuid.New(), Owner: "root", Role: RoleAdmin, Tier: "pro", Method: MethodKey}
	basicUser := Principal{KeyID: uuid.New(), Owner: "alice", Role: RoleUser, Tier: "basic", Method: MethodKey}
	days := func(n int) *int { return &n }

	tests := []struct {
		name    string
		by      Principal
		req     NewKeyRequest
		wantErr error
		want    store.APIKey // owner, role, tier checked when no error
	}{
		{"user defaults", basicUser, NewKeyRequest{Name: "k"}, nil, store.APIKey{Owner: "alice", Role: RoleUser, Tier: "basic"}},
		{"user lower tier", basicUser, NewKeyRequest{Name: "k", Tier: "free"}, nil, store.APIKey{Owner: "alice", Role: RoleUser, Tier: "free"}},
		{"user same owner explicit", basicUser, NewKeyRequest{Name: "k", Owner: "alice"}, nil, store.APIKey{Owner: "alice", Role: RoleUser, Tier: "basic"}},
		{"user other owner", basicUser, NewKeyRequest{Name: "k", Owner: "bob"}, ErrForbidden, store.APIKey{}},
		{"user admin role", basicUser, NewKeyRequest{Name: "k", Role: RoleAdmin}, ErrForbidden, store.APIKey{}},
		{"user higher tier", basicUser, NewKeyRequest{Name: "k", Tier: "pro"}, ErrForbidden, store.APIKey{}},
		{"admin anything", admin, NewKeyRequest{Name: "k", Owner: "bob", Role: RoleAdmin, Tier: "free"}, nil, store.APIKey{Owner: "bob", Role: RoleAdmin, Tier: "free"}},
		{"no name", admin, NewKeyRequest{}, &ValidationError{}, store.APIKey{}},
		{"long name", admin, NewKeyRequest{Name: strings.Repeat("n", 129)}, &ValidationError{}, store.APIKey{}},
		{"bad tier", admin, NewKeyRequest{Name: "k", Tier: "gold"}, &ValidationError{}, store.APIKey{}},
		{"bad role", admin, NewKeyRequest{Name: "k", Role: "root"}, &ValidationError{}, store.APIKey{}},
		{"bad owner", admin, NewKeyRequest{Name: "k", Owner: "a b'; DROP TABLE api_keys;--"}, &ValidationError{}, store.APIKey{}},
		{"bad expiry", admin, NewKeyRequest{Name: "k", ExpiresInDays: days(0)}, &ValidationError{}, store.APIKey{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, secret, err := s.CreateKey(ctx, tt.by, tt.req)
			var ve *ValidationError
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("CreateKey = %v; want success", err)
			case errors.As(tt.wantErr, &ve):
				if !errors.As(err, &ve) {
					t.Fatalf("CreateKey = %v; want a ValidationError", err)
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("CreateKey = %v; want %v", err, tt.wantErr)
				}
				return
			}
			if k.Owner != tt.want.Owner || k.Role != tt.want.Role || k.Tier != tt.want.Tier || CheckKeyFormat(secret) != nil {
				t.Errorf("CreateKey = %s/%s/%s; want %s/%s/%s", k.Owner, k.Role, k.Tier, tt.want.Owner, tt.want.Role, tt.want.Tier)
			}
		})
	}

	// Tenancy of list and revoke.
	bobKey, _, err := s.CreateKey(ctx, admin, NewKeyRequest{Name: "bob's", Owner: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.ListKeys(ctx, basicUser, uuid.Nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Owner != "alice" {
			t.Errorf("user listed a key of %q", k.Owner)
		}
	}
	if _, err := s.RevokeKey(ctx, basicUser, bobKey.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("user revoking another owner's key = %v; want ErrNotFound", err)
	}
}

// Two services on one database stand for two api replicas.
func TestRevocationReachesOtherReplica(t *testing.T) {
	st, _ := testenv.Store(t)
	ctx := context.Background()
	a, b := newService(t, st, false), newService(t, st, false)
	b.onRevoke = a.Evict // the broadcast, in one process
	_, secret, err := a.Bootstrap(ctx, NewKeyRequest{Name: "k", Owner: "o", Role: RoleAdmin, Tier: "pro"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(ctx, "Bearer "+secret, "") // cached on a
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.RevokeKey(ctx, p, p.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, "Bearer "+secret, ""); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("replica a after b revoked = %v; want ErrUnauthenticated at once", err)
	}

	// Without the broadcast, an unsure cache still lets go within unsureTTL.
	c := newService(t, st, false)
	c.SetFanout(false)
	_, secret2, _ := a.Bootstrap(ctx, NewKeyRequest{Name: "k2", Owner: "o", Role: RoleAdmin, Tier: "pro"})
	p2, err := c.Authenticate(ctx, "Bearer "+secret2, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeKey(ctx, p2, p2.KeyID); err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return time.Now().Add(unsureTTL) }
	if _, err := c.Authenticate(ctx, "Bearer "+secret2, ""); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("replica without broadcast after %v = %v; want ErrUnauthenticated", unsureTTL, err)
	}
}

// downStore is a KeyStore that can fail like an unreachable database.
type downStore struct {
	KeyStore
	down bool
}

func (d *downStore) KeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	if d.down {
		return store.APIKey{}, fmt.Errorf("key by hash: %w", store.ErrUnavailable)
	}
	return d.KeyStore.KeyByHash(ctx, hash)
}

func (d *downStore) GetKey(ctx context.Context, scope store.Scope, id uuid.UUID) (store.APIKey, error) {
	if d.down {
		return store.APIKey{}, fmt.Errorf("get key: %w", store.ErrUnavailable)
	}
	return d.KeyStore.GetKey(ctx, scope, id)
}

// While PostgreSQL is unreachable a cached key still authenticates past
// its TTL, up to staleMax, but only while revocation broadcasts are
// received; a key never cached is the store's error.
func TestStaleKeysWhileUnavailable(t *testing.T) {
	st, _ := testenv.Store(t)
	ds := &downStore{KeyStore: st}
	s := NewService(ds, Options{Salt: testSalt, JWTSecret: testSecret, JWTTTL: time.Hour})
	s.SetFanout(true)
	ctx := context.Background()
	k, secret, err := s.Bootstrap(ctx, NewKeyRequest{Name: "admin", Owner: "acme", Role: RoleAdmin, Tier: "pro"})
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := s.tokens.Issue(Principal{KeyID: k.ID, Owner: k.Owner, Role: k.Role, Tier: k.Tier})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, "Bearer "+secret, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, "Bearer "+token, ""); err != nil {
		t.Fatal(err)
	}
	_, other, err := s.Bootstrap(ctx, NewKeyRequest{Name: "never-used", Owner: "acme", Role: RoleUser, Tier: "free"})
	if err != nil {
		t.Fatal(err)
	}

	ds.down = true
	start := time.Now()
	s.now = func() time.Time { return start.Add(cacheTTL + time.Second) }
	if p, err := s.Authenticate(ctx, "Bearer "+secret, ""); err != nil || p.KeyID != k.ID {
		t.Errorf("cached key, stale, database down = %+v, %v; want it to authenticate", p, err)
	}
	if p, err := s.Authenticate(ctx, "Bearer "+token, ""); err != nil || p.KeyID != k.ID {
		t.Errorf("token of a cached key, stale, database down = %+v, %v; want it to authenticate", p, err)
	}
	if _, err := s.Authenticate(ctx, "Bearer "+other, ""); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("uncached key, database down = %v; want ErrUnavailable", err)
	}
	s.now = func() time.Time { return start.Add(staleMax + time.Second) }
	if _, err := s.Authenticate(ctx, "Bearer "+secret, ""); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("entry older than staleMax, database down = %v; want ErrUnavailable", err)
	}

	// Without the broadcast a stale entry could hide a revocation.
	s.now = time.Now
	ds.down = false
	if _, err := s.Authenticate(ctx, "Bearer "+secret, ""); err != nil {
		t.Fatal(err)
	}
	s.fanout.Store(false)
	ds.down = true
	s.now = func() time.Time { return time.Now().Add(unsureTTL + time.Second) }
	if _, err := s.Authenticate(ctx, "Bearer "+secret, ""); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("stale entry without revocation broadcasts = %v; want ErrUnavailable", err)
	}
}
