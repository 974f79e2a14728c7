package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
)

// An API key is "wwz_" and keySecretLen random base62 characters: about
// 238 bits, far past guessing.
const (
	keyScheme    = "wwz_"
	keySecretLen = 40
	// A key's display prefix: the scheme and the first characters of the
	// secret, enough to tell keys apart in a list, too few to matter.
	displayPrefixLen = len(keyScheme) + 8
	// Accepted lengths when parsing, so that a longer key format can come later.
	minSecretLen = 32
	maxSecretLen = 128
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// ErrMalformedKey means the string cannot be an API key.
var ErrMalformedKey = errors.New("malformed API key")

// NewKey returns a fresh random API key.
func NewKey() string {
	var b strings.Builder
	b.Grow(len(keyScheme) + keySecretLen)
	b.WriteString(keyScheme)
	// Rejection sampling keeps every character equally likely: bytes of
	// 248 and above would favour the first characters of the alphabet.
	buf := make([]byte, keySecretLen*2)
	for n := 0; n < keySecretLen; {
		rand.Read(buf) // never fails (crypto/rand panics rather than return an error)
		for _, c := range buf {
			if c >= 248 {
				continue
			}
			b.WriteByte(base62[c%62])
			if n++; n == keySecretLen {
				break
			}
		}
	}
	return b.String()
}

// CheckKeyFormat reports whether s has the form of an API key, without
// telling a caller what exactly is wrong.
func CheckKeyFormat(s string) error {
	secret, ok := strings.CutPrefix(s, keyScheme)
	if !ok || len(secret) < minSecretLen || len(secret) > maxSecretLen {
		return ErrMalformedKey
	}
	for i := 0; i < len(secret); i++ {
		c := secret[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return ErrMalformedKey
		}
	}
	return nil
}

// HashKey is the keyed hash stored for a key: HMAC-SHA256 with API_SALT,
// so that a leaked table cannot be checked against guesses without the salt.
func HashKey(salt []byte, key string) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(key))
	return m.Sum(nil)
}

// HashEqual compares two hashes in constant time.
func HashEqual(a, b []byte) bool { return hmac.Equal(a, b) }

// DisplayPrefix is the part of a key shown in lists.
func DisplayPrefix(key string) string { return key[:min(displayPrefixLen, len(key))] }
