package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

const issuer = "wasmwiz"

// claims are a token's: the key it was issued for (sub) and what that key
// carries, so that a token needs no database read to know its tier.
type claims struct {
	Owner string `json:"owner"`
	Role  string `json:"role"`
	Tier  string `json:"tier"`
	jwt.RegisteredClaims
}

// Tokens issues and checks HS256 JWTs.
type Tokens struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// NewTokens returns a token issuer with a secret and a lifetime.
func NewTokens(secret []byte, ttl time.Duration) *Tokens {
	return &Tokens{secret: secret, ttl: ttl, now: time.Now}
}

// Issue signs a token for a key's principal.
func (t *Tokens) Issue(p Principal) (token string, expires time.Time, err error) {
	now := t.now()
	expires = now.Add(t.ttl).Truncate(time.Second)
	c := claims{
		Owner: p.Owner, Role: p.Role, Tier: p.Tier,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   p.KeyID.String(),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(expires),
			ID:        uuid.NewString(),
		},
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(t.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return token, expires, nil
}

// ErrBadToken covers every reason a token is refused; the reason is
// wrapped for logs, never shown to clients.
var ErrBadToken = errors.New("invalid token")

// Parse checks a token's signature, algorithm (HS256 only: "none" and every
// other algorithm are refused), issuer and expiry, and returns its principal.
// Whether the key behind it is still valid is the caller's to check.
//
// Each segment must be canonical base64url: lax decoding ignores the unused
// low bits of the last character, so one signed token would have several
// spellings that all verify, and a token's string could not serve as its
// identity (in a cache or a deny list).
func (t *Tokens) Parse(token string) (Principal, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.secret, nil },
		jwt.WithStrictDecoding(),
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(issuer),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	id, err := uuid.Parse(c.Subject)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: subject is not a key id", ErrBadToken)
	}
	return Principal{KeyID: id, Owner: c.Owner, Role: c.Role, Tier: c.Tier, Method: MethodToken}, nil
}
