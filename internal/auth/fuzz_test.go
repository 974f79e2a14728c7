package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// keyForm is the API key format of API.md, written independently of
// CheckKeyFormat's loop.
var keyForm = regexp.MustCompile(`^wwz_[0-9A-Za-z]{32,128}$`)

// FuzzCheckKeyFormat: CheckKeyFormat accepts exactly the strings of the
// documented form, and everything it accepts can be hashed and shown.
func FuzzCheckKeyFormat(f *testing.F) {
	for _, seed := range []string{
		NewKey(), "", "wwz_", "wwz_" + strings.Repeat("a", 31), "wwz_" + strings.Repeat("a", 32),
		"wwz_" + strings.Repeat("Z", 128), "wwz_" + strings.Repeat("9", 129), "WWZ_" + strings.Repeat("a", 40),
		"wwz_" + strings.Repeat("a", 39) + "\x00", "wwz_" + strings.Repeat("é", 20), " wwz_" + strings.Repeat("a", 40),
		"wwz_" + strings.Repeat("a", 39) + "\n", "wwz_" + strings.Repeat("a", 20) + "-" + strings.Repeat("a", 20),
	} {
		f.Add(seed)
	}
	salt := []byte("fuzz-salt-0123456789")
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckKeyFormat(s)
		if want := keyForm.MatchString(s); (err == nil) != want {
			t.Fatalf("CheckKeyFormat(%q) = %v; want accepted %v", s, err, want)
		}
		if err != nil {
			return
		}
		if h := HashKey(salt, s); len(h) != sha256.Size || !HashEqual(h, HashKey(salt, s)) {
			t.Fatalf("HashKey(%q) = %x; want 32 stable bytes", s, h)
		}
		if p := DisplayPrefix(s); len(p) != displayPrefixLen || !strings.HasPrefix(s, p) {
			t.Fatalf("DisplayPrefix(%q) = %q; want its first %d characters", s, p, displayPrefixLen)
		}
	})
}

// FuzzParseToken: Parse never panics, and what it accepts is an HS256
// token that the secret signed, unexpired, of this issuer, for a key id.
func FuzzParseToken(f *testing.F) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	secret := []byte("fuzz-jwt-secret-0123456789abcdef")
	tokens := &Tokens{secret: secret, ttl: 15 * time.Minute, now: func() time.Time { return now }}
	p := Principal{KeyID: uuid.MustParse("0192f0c1-7a8b-7cde-8f01-23456789abcd"), Owner: "alice", Role: RoleUser, Tier: "free"}

	good, _, err := tokens.Issue(p)
	if err != nil {
		f.Fatalf("Issue: %v", err)
	}
	expired, _, _ := (&Tokens{secret: secret, ttl: time.Minute, now: func() time.Time { return now.Add(-time.Hour) }}).Issue(p)
	otherSecret, _, _ := (&Tokens{secret: []byte("another-secret"), ttl: time.Hour, now: tokens.now}).Issue(p)
	sign := func(method jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, _ := jwt.NewWithClaims(method, c).SignedString(key)
		return s
	}
	valid := jwt.MapClaims{"iss": issuer, "sub": p.KeyID.String(), "exp": now.Add(time.Hour).Unix()}
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid)
	hs512 := sign(jwt.SigningMethodHS512, secret, valid)
	noExp := sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"iss": issuer, "sub": p.KeyID.String()})
	badSub := sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"iss": issuer, "sub": "'; DROP TABLE api_keys; --", "exp": now.Add(time.Hour).Unix()})
	otherIss := sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"iss": "evil", "sub": p.KeyID.String(), "exp": now.Add(time.Hour).Unix()})
	parts := strings.Split(good, ".")
	for _, seed := range []string{
		good, expired, otherSecret, none, hs512, noExp, badSub, otherIss,
		parts[0] + "." + parts[1] + ".", parts[0] + ".." + parts[2], "..", "", "a.b.c", good + ".",
		strings.Repeat("A", 4096) + "." + parts[1] + "." + parts[2],
		malleate(good),
		base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","crit":["x"]}`)) + "." + parts[1] + "." + parts[2],
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		got, err := tokens.Parse(token)
		if err != nil {
			return
		}
		seg := strings.Split(token, ".")
		if len(seg) != 3 {
			t.Fatalf("Parse accepted %q of %d segments", token, len(seg))
		}
		// Strict: every accepted segment is the one canonical spelling of
		// its bytes.
		b64 := base64.RawURLEncoding.Strict()
		var header struct{ Alg string }
		if b, err := b64.DecodeString(seg[0]); err != nil || json.Unmarshal(b, &header) != nil || header.Alg != "HS256" {
			t.Fatalf("Parse accepted %q with header alg %q; want HS256 only", token, header.Alg)
		}
		sig, err := b64.DecodeString(seg[2])
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(seg[0] + "." + seg[1]))
		if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
			t.Fatalf("Parse accepted %q, which the secret did not sign in that spelling", token)
		}
		var c struct {
			Iss string      `json:"iss"`
			Sub string      `json:"sub"`
			Exp json.Number `json:"exp"` // golang-jwt also takes a number in a string
		}
		if b, err := b64.DecodeString(seg[1]); err != nil || json.Unmarshal(b, &c) != nil {
			t.Fatalf("Parse accepted %q with unreadable claims", token)
		}
		exp, err := c.Exp.Float64()
		if err != nil || c.Iss != issuer || exp <= float64(now.Unix()) || got.KeyID == uuid.Nil || got.Method != MethodToken {
			t.Fatalf("Parse accepted %q: iss %q, exp %q (now %d), key %v; want %q, unexpired, a key id",
				token, c.Iss, c.Exp, now.Unix(), got.KeyID, issuer)
		}
	})
}

// malleate respells token's signature: the last character of a 32-byte
// signature in base64url carries two unused bits, and setting one gives a
// string that lax decoders read as the same signature.
func malleate(token string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, token[len(token)-1])
	return token[:len(token)-1] + string(alphabet[last^1])
}

// TestTokensRefuseMalleatedSignature: a token whose signature is spelt
// differently but decodes (laxly) to the same bytes is refused.
func TestTokensRefuseMalleatedSignature(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tokens := &Tokens{secret: []byte("malleate-jwt-secret-0123456789ab"), ttl: time.Hour, now: func() time.Time { return now }}
	good, _, err := tokens.Issue(Principal{KeyID: uuid.New(), Owner: "alice", Role: RoleUser, Tier: "free"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Parse(good); err != nil {
		t.Fatalf("Parse(issued token) = %v; want accepted", err)
	}
	bad := malleate(good)
	sig := func(tok string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(tok[strings.LastIndexByte(tok, '.')+1:])
		if err != nil {
			t.Fatalf("lax decoding of %q: %v", tok, err)
		}
		return b
	}
	if bad == good || !hmac.Equal(sig(bad), sig(good)) {
		t.Fatalf("malleate(%q) = %q; want another spelling of the same signature", good, bad)
	}
	if _, err := tokens.Parse(bad); !errors.Is(err, ErrBadToken) {
		t.Errorf("Parse(token with a respelt signature) = %v; want ErrBadToken", err)
	}
}
