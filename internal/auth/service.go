package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/config"
	"github.com/wasmwiz/wasmwiz/internal/store"
)

var (
	// ErrUnauthenticated covers missing, malformed, unknown, expired and
	// revoked credentials alike: the client learns nothing more.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the principal may not do what it asked.
	ErrForbidden = errors.New("forbidden")
)

// ValidationError names a request field and its problem.
type ValidationError struct{ Field, Problem string }

func (e *ValidationError) Error() string { return e.Field + " " + e.Problem }

// KeyStore is what the service needs of the store.
type KeyStore interface {
	CreateKey(ctx context.Context, k store.APIKey) (store.APIKey, error)
	KeyByHash(ctx context.Context, hash []byte) (store.APIKey, error)
	GetKey(ctx context.Context, scope store.Scope, id uuid.UUID) (store.APIKey, error)
	ListKeys(ctx context.Context, scope store.Scope, before uuid.UUID, limit int) ([]store.APIKey, error)
	RevokeKey(ctx context.Context, scope store.Scope, id uuid.UUID, at time.Time) (store.APIKey, error)
	TouchKeys(ctx context.Context, used map[uuid.UUID]time.Time) error
}

// Options configure the service.
type Options struct {
	Salt        []byte
	JWTSecret   []byte
	JWTTTL      time.Duration
	Development bool
	// OnRevoke is called after a key is revoked here, to tell the other api
	// replicas (they call Evict).
	OnRevoke func(id uuid.UUID)
}

// Cache lifetimes. While revocations arrive by broadcast an entry may live
// cacheTTL; when the broadcast is not known to work, entries older than
// unsureTTL are looked up again, so a revocation still takes effect on
// every replica within API.md's 5 seconds.
const (
	cacheTTL    = 30 * time.Second
	unsureTTL   = 4 * time.Second
	negativeTTL = 2 * time.Second
	// staleMax is how long a cached key still authenticates while
	// PostgreSQL is unreachable (store.ErrUnavailable), revocation
	// broadcasts being received: a key cannot be revoked without the
	// database, and a revocation made before the outage evicted the entry
	// by broadcast, so serving it cannot hide one. Executes of cached
	// modules by cached keys thus ride out a database outage.
	staleMax   = 10 * time.Minute
	maxCached  = 100_000
	touchEvery = 10 * time.Second
)

// Service authenticates requests and manages keys.
type Service struct {
	store    KeyStore
	salt     []byte
	tokens   *Tokens
	dev      bool
	onRevoke func(uuid.UUID)
	now      func() time.Time
	// lookupTimeout bounds each key lookup (store.LookupTimeout; tests
	// shorten it).
	lookupTimeout time.Duration
	outage        store.Outage

	fanout atomic.Bool // revocation broadcasts are being received

	// hashers holds HMACs keyed with salt, reset between uses: a fresh
	// one per request costs half a dozen allocations (HashKey).
	hashers sync.Pool

	mu       sync.Mutex
	byHash   map[string]cached
	byID     map[uuid.UUID]cached
	negative map[string]time.Time
	used     map[uuid.UUID]time.Time
}

type cached struct {
	key     store.APIKey
	fetched time.Time
}

// NewService returns the authentication service.
func NewService(st KeyStore, o Options) *Service {
	s := &Service{
		store: st, salt: o.Salt, tokens: NewTokens(o.JWTSecret, o.JWTTTL), dev: o.Development,
		onRevoke: o.OnRevoke, now: time.Now, lookupTimeout: store.LookupTimeout,
		byHash: map[string]cached{}, byID: map[uuid.UUID]cached{}, negative: map[string]time.Time{},
		used: map[uuid.UUID]time.Time{},
	}
	s.hashers.New = func() any { return hmac.New(sha256.New, s.salt) }
	return s
}

// hashKey is HashKey(s.salt, key) with a pooled HMAC.
func (s *Service) hashKey(key string) []byte {
	m := s.hashers.Get().(hash.Hash)
	m.Write([]byte(key))
	sum := m.Sum(make([]byte, 0, sha256.Size))
	m.Reset()
	s.hashers.Put(m)
	return sum
}

// SetFanout says whether revocation broadcasts are being received. On a
// change either way the cache is emptied: what was cached may have missed
// a revocation.
func (s *Service) SetFanout(ok bool) {
	s.fanout.Store(ok)
	s.mu.Lock()
	clear(s.byHash)
	clear(s.byID)
	s.mu.Unlock()
}

// Evict drops a key from the cache (a revocation elsewhere).
func (s *Service) Evict(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.byID[id]; ok {
		delete(s.byHash, string(c.key.Hash))
		delete(s.byID, id)
	}
}

// Authenticate turns the credentials of a request into a principal:
// authorization is the Authorization header, apiKey the X-API-Key header.
func (s *Service) Authenticate(ctx context.Context, authorization, apiKey string) (Principal, error) {
	cred := ""
	switch {
	case authorization != "":
		scheme, rest, ok := strings.Cut(authorization, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return Principal{}, fmt.Errorf("%w: not a bearer credential", ErrUnauthenticated)
		}
		cred = strings.TrimSpace(rest)
	case apiKey != "":
		cred = strings.TrimSpace(apiKey)
	case s.dev:
		return Development(), nil
	default:
		return Principal{}, fmt.Errorf("%w: no credentials", ErrUnauthenticated)
	}
	if strings.HasPrefix(cred, keyScheme) {
		return s.authenticateKey(ctx, cred)
	}
	if apiKey == "" && strings.Count(cred, ".") == 2 {
		return s.authenticateToken(ctx, cred)
	}
	return Principal{}, fmt.Errorf("%w: unrecognised credential", ErrUnauthenticated)
}

func (s *Service) authenticateKey(ctx context.Context, key string) (Principal, error) {
	if err := CheckKeyFormat(key); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	hash := s.hashKey(key)
	k, err := s.lookup(ctx, hash)
	if err != nil {
		return Principal{}, err
	}
	// The hash came from the store by equality; compare again in constant
	// time so that no code path's timing depends on the secret.
	if !HashEqual(k.Hash, hash) {
		return Principal{}, fmt.Errorf("%w: unknown key", ErrUnauthenticated)
	}
	if err := s.usable(k); err != nil {
		return Principal{}, err
	}
	s.touch(k.ID)
	return Principal{KeyID: k.ID, Owner: k.Owner, Role: k.Role, Tier: k.Tier, Method: MethodKey}, nil
}

func (s *Service) authenticateToken(ctx context.Context, token string) (Principal, error) {
	p, err := s.tokens.Parse(token)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	k, err := s.keyByID(ctx, p.KeyID)
	if err != nil {
		return Principal{}, err
	}
	if err := s.usable(k); err != nil {
		return Principal{}, err
	}
	s.touch(k.ID)
	// The key's current tier and role rule, not the token's copy.
	return Principal{KeyID: k.ID, Owner: k.Owner, Role: k.Role, Tier: k.Tier, Method: MethodToken}, nil
}

func (s *Service) usable(k store.APIKey) error {
	now := s.now()
	if k.RevokedAt != nil {
		return fmt.Errorf("%w: key %s revoked", ErrUnauthenticated, k.ID)
	}
	if k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
		return fmt.Errorf("%w: key %s expired", ErrUnauthenticated, k.ID)
	}
	return nil
}

func (s *Service) fresh(c cached) bool {
	age := s.now().Sub(c.fetched)
	if s.fanout.Load() {
		return age < cacheTTL
	}
	return age < unsureTTL
}

// usableStale says whether an expired cache entry may stand in for the
// store while the store is unreachable (see staleMax).
func (s *Service) usableStale(c cached) bool {
	return s.fanout.Load() && s.now().Sub(c.fetched) < staleMax
}

// lookup finds a key by hash through the cache.
func (s *Service) lookup(ctx context.Context, hash []byte) (store.APIKey, error) {
	s.mu.Lock()
	// string(hash) inside the index allocates nothing: the hot path.
	if c, ok := s.byHash[string(hash)]; ok && s.fresh(c) {
		s.mu.Unlock()
		return c.key, nil
	}
	h := string(hash)
	if at, ok := s.negative[h]; ok && s.now().Sub(at) < negativeTTL {
		s.mu.Unlock()
		return store.APIKey{}, fmt.Errorf("%w: unknown key", ErrUnauthenticated)
	}
	c, ok := s.byHash[h]
	s.mu.Unlock()
	if ok && s.usableStale(c) && s.outage.Skip(s.now(), s.lookupTimeout) {
		return c.key, nil
	}

	k, err := store.Within(ctx, s.lookupTimeout, func(ctx context.Context) (store.APIKey, error) {
		return s.store.KeyByHash(ctx, hash)
	})
	s.outage.Report(s.now(), err)
	if errors.Is(err, store.ErrUnavailable) {
		s.mu.Lock()
		c, ok := s.byHash[h]
		s.mu.Unlock()
		if ok && s.usableStale(c) {
			return c.key, nil
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		s.mu.Lock()
		if len(s.negative) >= maxCached {
			clear(s.negative)
		}
		s.negative[h] = s.now()
		s.mu.Unlock()
		return store.APIKey{}, fmt.Errorf("%w: unknown key", ErrUnauthenticated)
	}
	if err != nil {
		return store.APIKey{}, fmt.Errorf("look up key: %w", err)
	}
	s.remember(k)
	return k, nil
}

func (s *Service) keyByID(ctx context.Context, id uuid.UUID) (store.APIKey, error) {
	s.mu.Lock()
	c, ok := s.byID[id]
	s.mu.Unlock()
	if ok && s.fresh(c) {
		return c.key, nil
	}
	if ok && s.usableStale(c) && s.outage.Skip(s.now(), s.lookupTimeout) {
		return c.key, nil
	}
	k, err := store.Within(ctx, s.lookupTimeout, func(ctx context.Context) (store.APIKey, error) {
		return s.store.GetKey(ctx, store.AllOwners(), id)
	})
	s.outage.Report(s.now(), err)
	if errors.Is(err, store.ErrUnavailable) {
		s.mu.Lock()
		c, ok := s.byID[id]
		s.mu.Unlock()
		if ok && s.usableStale(c) {
			return c.key, nil
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.APIKey{}, fmt.Errorf("%w: token of an unknown key", ErrUnauthenticated)
	}
	if err != nil {
		return store.APIKey{}, fmt.Errorf("look up key: %w", err)
	}
	s.remember(k)
	return k, nil
}

func (s *Service) remember(k store.APIKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= maxCached {
		// Rare and harmless: everything is looked up again.
		clear(s.byHash)
		clear(s.byID)
	}
	c := cached{key: k, fetched: s.now()}
	s.byHash[string(k.Hash)] = c
	s.byID[k.ID] = c
}

// touch notes a key's use; Run writes the uses in batches.
func (s *Service) touch(id uuid.UUID) {
	s.mu.Lock()
	s.used[id] = s.now()
	s.mu.Unlock()
}

// Run writes last-used times every few seconds until ctx ends, then once more.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(touchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return s.FlushUsage(fctx)
		case <-t.C:
			_ = s.FlushUsage(ctx) // kept for the next round on failure
		}
	}
}

// FlushUsage writes the noted last-used times now.
func (s *Service) FlushUsage(ctx context.Context) error {
	s.mu.Lock()
	used := s.used
	s.used = map[uuid.UUID]time.Time{}
	s.mu.Unlock()
	if err := s.store.TouchKeys(ctx, used); err != nil {
		s.mu.Lock()
		for id, at := range used {
			if cur, ok := s.used[id]; !ok || cur.Before(at) {
				s.used[id] = at
			}
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// NewKeyRequest asks for a key. Empty fields take the creator's defaults.
type NewKeyRequest struct {
	Name          string
	Tier          string
	Role          string
	Owner         string
	ExpiresInDays *int
}

var validOwner = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// CreateKey makes a key on behalf of by. A user key may create keys only
// for its own owner, with role user and a tier no higher than its own.
func (s *Service) CreateKey(ctx context.Context, by Principal, req NewKeyRequest) (store.APIKey, string, error) {
	if req.Owner == "" {
		req.Owner = by.Owner
	}
	if req.Tier == "" {
		req.Tier = by.Tier
	}
	if req.Role == "" {
		req.Role = RoleUser
	}
	if err := checkName(req.Name); err != nil {
		return store.APIKey{}, "", err
	}
	if !validOwner.MatchString(req.Owner) {
		return store.APIKey{}, "", &ValidationError{"owner", "must be 1 to 64 of A-Z a-z 0-9 . _ -"}
	}
	if req.Role != RoleAdmin && req.Role != RoleUser {
		return store.APIKey{}, "", &ValidationError{"role", "must be admin or user"}
	}
	if config.TierRank(req.Tier) < 0 {
		return store.APIKey{}, "", &ValidationError{"tier", "must be free, basic or pro"}
	}
	var expires *time.Time
	if req.ExpiresInDays != nil {
		if *req.ExpiresInDays < 1 || *req.ExpiresInDays > 3650 {
			return store.APIKey{}, "", &ValidationError{"expires_in_days", "must be from 1 to 3650"}
		}
		at := s.now().Add(time.Duration(*req.ExpiresInDays) * 24 * time.Hour).UTC()
		expires = &at
	}
	if !by.IsAdmin() {
		switch {
		case req.Owner != by.Owner:
			return store.APIKey{}, "", fmt.Errorf("%w: a user key cannot create keys of another owner", ErrForbidden)
		case req.Role != RoleUser:
			return store.APIKey{}, "", fmt.Errorf("%w: a user key cannot create admin keys", ErrForbidden)
		case config.TierRank(req.Tier) > config.TierRank(by.Tier):
			return store.APIKey{}, "", fmt.Errorf("%w: a key cannot create a key of a higher tier than its own", ErrForbidden)
		}
	}
	return s.createKey(ctx, req, expires)
}

// Bootstrap makes a key without a creator: the command line's first admin key.
func (s *Service) Bootstrap(ctx context.Context, req NewKeyRequest) (store.APIKey, string, error) {
	return s.CreateKey(ctx, Principal{Owner: req.Owner, Role: RoleAdmin, Tier: config.TierPro}, req)
}

func (s *Service) createKey(ctx context.Context, req NewKeyRequest, expires *time.Time) (store.APIKey, string, error) {
	secret := NewKey()
	k, err := s.store.CreateKey(ctx, store.APIKey{
		ID: uuid.Must(uuid.NewV7()), Name: req.Name, Prefix: DisplayPrefix(secret), Hash: HashKey(s.salt, secret),
		Owner: req.Owner, Role: req.Role, Tier: req.Tier, CreatedAt: s.now().UTC(), ExpiresAt: expires,
	})
	if err != nil {
		return store.APIKey{}, "", err
	}
	return k, secret, nil
}

func checkName(name string) error {
	n := utf8.RuneCountInString(name)
	if !utf8.ValidString(name) || n < 1 || n > 128 {
		return &ValidationError{"name", "must be 1 to 128 characters"}
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return &ValidationError{"name", "must hold printable characters only"}
		}
	}
	return nil
}

func scope(p Principal) store.Scope {
	if p.IsAdmin() {
		return store.AllOwners()
	}
	return store.Owner(p.Owner)
}

// ListKeys lists the keys by may see, newest first.
func (s *Service) ListKeys(ctx context.Context, by Principal, before uuid.UUID, limit int) ([]store.APIKey, error) {
	return s.store.ListKeys(ctx, scope(by), before, limit)
}

// RevokeKey revokes a key by may see; others' keys are store.ErrNotFound.
// The local cache forgets it at once and the other replicas are told.
func (s *Service) RevokeKey(ctx context.Context, by Principal, id uuid.UUID) (store.APIKey, error) {
	k, err := s.store.RevokeKey(ctx, scope(by), id, s.now().UTC())
	if err != nil {
		return store.APIKey{}, err
	}
	s.Evict(id)
	if s.onRevoke != nil {
		s.onRevoke(id)
	}
	return k, nil
}

// IssueToken signs a JWT for a principal that authenticated with an API key.
func (s *Service) IssueToken(p Principal) (string, time.Time, error) {
	if p.Method != MethodKey {
		return "", time.Time{}, fmt.Errorf("%w: a token is issued for an API key only", ErrUnauthenticated)
	}
	return s.tokens.Issue(p)
}

// RefreshToken signs a new JWT for a principal that authenticated with a
// valid, unexpired JWT.
func (s *Service) RefreshToken(p Principal) (string, time.Time, error) {
	if p.Method != MethodToken {
		return "", time.Time{}, fmt.Errorf("%w: refresh needs a valid token", ErrUnauthenticated)
	}
	return s.tokens.Issue(p)
}
