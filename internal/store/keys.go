package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// APIKey is a stored key: never the secret, only its keyed hash.
type APIKey struct {
	ID         uuid.UUID
	Name       string
	Prefix     string
	Hash       []byte
	Owner      string
	Role       string
	Tier       string
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

const keyColumns = `id, name, prefix, key_hash, owner, role, tier, created_at, expires_at, last_used_at, revoked_at`

func scanKey(row pgx.Row) (APIKey, error) {
	var k APIKey
	err := row.Scan(&k.ID, &k.Name, &k.Prefix, &k.Hash, &k.Owner, &k.Role, &k.Tier, &k.CreatedAt, &k.ExpiresAt, &k.LastUsedAt, &k.RevokedAt)
	return k, err
}

// CreateKey stores a new key.
func (s *Store) CreateKey(ctx context.Context, k APIKey) (APIKey, error) {
	row := s.pool.QueryRow(ctx, `
		INSERT INTO api_keys (id, name, prefix, key_hash, owner, role, tier, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		RETURNING `+keyColumns,
		k.ID, k.Name, k.Prefix, k.Hash, k.Owner, k.Role, k.Tier, k.CreatedAt, k.ExpiresAt)
	out, err := scanKey(row)
	if err != nil {
		return APIKey{}, fmt.Errorf("create key: %w", wrap(err))
	}
	return out, nil
}

// KeyByHash finds a key by the keyed hash of its secret, revoked or not:
// the caller decides what a revoked or expired key means.
func (s *Store) KeyByHash(ctx context.Context, hash []byte) (APIKey, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE key_hash = $1`, hash))
	if err != nil {
		return APIKey{}, fmt.Errorf("key by hash: %w", wrap(err))
	}
	return k, nil
}

// GetKey returns a key within scope.
func (s *Store) GetKey(ctx context.Context, scope Scope, id uuid.UUID) (APIKey, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE id = $1 AND ($2 OR owner = $3)`, id, scope.all, scope.owner))
	if err != nil {
		return APIKey{}, fmt.Errorf("get key %s: %w", id, wrap(err))
	}
	return k, nil
}

// ListKeys returns up to limit keys within scope, newest first, with ids
// below before (uuid.Nil for the first page).
func (s *Store) ListKeys(ctx context.Context, scope Scope, before uuid.UUID, limit int) ([]APIKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE ($1 OR owner = $2) AND ($3 OR id < $4)
		ORDER BY id DESC LIMIT $5`, scope.all, scope.owner, before == uuid.Nil, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", wrap(err))
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (APIKey, error) { return scanKey(r) })
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", wrap(err))
	}
	return keys, nil
}

// RevokeKey marks a key revoked within scope. Revoking a revoked key keeps
// its first revocation time and succeeds.
func (s *Store) RevokeKey(ctx context.Context, scope Scope, id uuid.UUID, at time.Time) (APIKey, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $4)
		WHERE id = $1 AND ($2 OR owner = $3) RETURNING `+keyColumns, id, scope.all, scope.owner, at))
	if err != nil {
		return APIKey{}, fmt.Errorf("revoke key %s: %w", id, wrap(err))
	}
	return k, nil
}

// TouchKeys records when keys were last used, in one statement for many
// keys: the api coalesces uses instead of writing once per request.
func (s *Store) TouchKeys(ctx context.Context, used map[uuid.UUID]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, 0, len(used))
	times := make([]time.Time, 0, len(used))
	for id, at := range used {
		ids = append(ids, id)
		times = append(times, at)
	}
	_, err := s.pool.Exec(ctx, `UPDATE api_keys k SET last_used_at = u.at
		FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
		WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)`, ids, times)
	if err != nil {
		return fmt.Errorf("touch keys: %w", wrap(err))
	}
	return nil
}
