package web

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// deriveKey makes a key for one purpose out of JWT_SECRET, so that a CSRF
// token, a sealed cookie and a JWT never share a key.
func deriveKey(secret, purpose string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key) // 32 bytes: AES-256
	if err != nil {
		panic(fmt.Sprintf("web: AES key: %v", err)) // a SHA-256 sum is always a valid key
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(fmt.Sprintf("web: GCM: %v", err))
	}
	return aead
}

var (
	errCrossOrigin = &problem{Status: http.StatusForbidden, Title: "Form refused",
		Message: "This form was sent from another site. For your safety, forms are accepted from this site's own pages only."}
	errBadCSRF = &problem{Status: http.StatusForbidden, Title: "Form refused",
		Message: "This form's security token is missing or out of date, or your browser did not send its cookie. " +
			"Go back, reload the page and send the form again; pages of this site need cookies."}
)

// browserSecretLen is the random part of the CSRF cookie.
const browserSecretLen = 32

func newBrowserSecret() string {
	b := make([]byte, browserSecretLen)
	rand.Read(b) // never fails (crypto/rand panics rather than return an error)
	return base64.RawURLEncoding.EncodeToString(b)
}

// browserSecret returns the CSRF cookie's value, or "" when there is no
// well-formed one.
func (h *Handler) browserSecret(r *http.Request) string {
	c, err := r.Cookie(h.cookies.csrf)
	if err != nil {
		return ""
	}
	if b, err := base64.RawURLEncoding.DecodeString(c.Value); err != nil || len(b) != browserSecretLen {
		return ""
	}
	return c.Value
}

func (h *Handler) tokenFor(secret string) string {
	m := hmac.New(sha256.New, h.csrfKey)
	m.Write([]byte(secret))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfToken returns the token for this browser's forms, giving the browser
// its secret first if it has none. The cookie lives as long as the browser
// session; sign-in and sign-out replace it.
func (h *Handler) csrfToken(w http.ResponseWriter, r *http.Request) string {
	secret := h.browserSecret(r)
	if secret == "" {
		return h.newCSRFCookie(w)
	}
	return h.tokenFor(secret)
}

// csrfFromCookie is csrfToken for a request known to carry the cookie.
func (h *Handler) csrfFromCookie(r *http.Request) string {
	if secret := h.browserSecret(r); secret != "" {
		return h.tokenFor(secret)
	}
	return ""
}

// newCSRFCookie gives the browser a new secret and returns its token.
func (h *Handler) newCSRFCookie(w http.ResponseWriter) string {
	secret := newBrowserSecret()
	h.setCookie(w, h.cookies.csrf, secret, time.Time{})
	return h.tokenFor(secret)
}

// validCSRF checks the form's token against the browser's secret in
// constant time.
func (h *Handler) validCSRF(r *http.Request) bool {
	secret := h.browserSecret(r)
	sent := r.PostFormValue("csrf")
	if secret == "" || sent == "" {
		return false
	}
	return hmac.Equal([]byte(sent), []byte(h.tokenFor(secret)))
}

// newKeyFlash carries a just-created key from the POST that made it to
// the page that shows it once (post/redirect/get), sealed with AES-GCM and
// bound to the browser's CSRF secret.
type newKeyFlash struct {
	Key    string    `json:"key"`
	ID     string    `json:"id"`
	Name   string    `json:"name"`
	Prefix string    `json:"prefix"`
	At     time.Time `json:"at"`
}

// flashTTL is how long the sealed key may wait for its page.
const flashTTL = time.Minute

func (h *Handler) sealFlash(r *http.Request, f newKeyFlash) (string, error) {
	plain, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("seal flash: %w", err)
	}
	nonce := make([]byte, h.flash.NonceSize())
	rand.Read(nonce)
	sealed := h.flash.Seal(nonce, nonce, plain, []byte(h.browserSecret(r)))
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

var errFlash = errors.New("no valid flash")

func (h *Handler) openFlash(r *http.Request, value string) (newKeyFlash, error) {
	b, err := base64.RawURLEncoding.DecodeString(value)
	n := h.flash.NonceSize()
	if err != nil || len(b) < n {
		return newKeyFlash{}, errFlash
	}
	plain, err := h.flash.Open(nil, b[:n], b[n:], []byte(h.browserSecret(r)))
	if err != nil {
		return newKeyFlash{}, errFlash
	}
	var f newKeyFlash
	if err := json.Unmarshal(plain, &f); err != nil {
		return newKeyFlash{}, errFlash
	}
	if age := h.now().Sub(f.At); age < 0 || age > flashTTL {
		return newKeyFlash{}, errFlash
	}
	return f, nil
}
