package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Module is a tenant's named reference to stored WebAssembly bytes.
type Module struct {
	ID        uuid.UUID
	Owner     string
	Name      string
	SHA256    string
	SizeBytes int64
	Exports   []string
	WASI      bool
	CreatedAt time.Time
	// ExpiresAt is set on ad-hoc modules, which are not listed and are
	// removed by the retention job.
	ExpiresAt *time.Time
}

const moduleColumns = `id, owner, name, sha256, size_bytes, exports, wasi, created_at, expires_at`

func scanModule(row pgx.Row) (Module, error) {
	var m Module
	err := row.Scan(&m.ID, &m.Owner, &m.Name, &m.SHA256, &m.SizeBytes, &m.Exports, &m.WASI, &m.CreatedAt, &m.ExpiresAt)
	return m, err
}

// CreateModule stores a module and, unless a blob with the same SHA-256
// exists, its bytes. m.ID and m.CreatedAt are set by the caller.
func (s *Store) CreateModule(ctx context.Context, m Module, wasm []byte) (Module, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return Module{}, fmt.Errorf("create module: %w", wrap(err))
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	// DO UPDATE rather than DO NOTHING: it locks the blob row, so a
	// concurrent DeleteModule of the last module sharing these bytes cannot
	// remove the blob between this statement and the module's insert.
	exists := false
	err = tx.QueryRow(ctx, `
		INSERT INTO module_blobs (sha256, bytes, size_bytes) VALUES ($1, $2, $3)
		ON CONFLICT (sha256) DO UPDATE SET sha256 = EXCLUDED.sha256
		RETURNING xmax <> 0`, m.SHA256, wasm, len(wasm)).Scan(&exists)
	if err != nil {
		return Module{}, fmt.Errorf("store module bytes: %w", wrap(err))
	}
	row := tx.QueryRow(ctx, `
		INSERT INTO modules (id, owner, name, sha256, size_bytes, exports, wasi, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		RETURNING `+moduleColumns,
		m.ID, m.Owner, m.Name, m.SHA256, int64(len(wasm)), m.Exports, m.WASI, m.CreatedAt, m.ExpiresAt)
	out, err := scanModule(row)
	if err != nil {
		return Module{}, fmt.Errorf("insert module: %w", wrap(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return Module{}, fmt.Errorf("commit module: %w", wrap(err))
	}
	return out, nil
}

// GetModule returns one module, ad-hoc ones included, within scope.
func (s *Store) GetModule(ctx context.Context, scope Scope, id uuid.UUID) (Module, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+moduleColumns+` FROM modules
		WHERE id = $1 AND ($2 OR owner = $3)`, id, scope.all, scope.owner)
	m, err := scanModule(row)
	if err != nil {
		return Module{}, fmt.Errorf("get module %s: %w", id, wrap(err))
	}
	return m, nil
}

// ListModules returns up to limit kept modules within scope, newest first,
// with ids below before (uuid.Nil for the first page). UUIDv7 ids sort by
// creation time, so the id alone is a stable keyset cursor.
func (s *Store) ListModules(ctx context.Context, scope Scope, before uuid.UUID, limit int) ([]Module, error) {
	var rows pgx.Rows
	var err error
	first := before == uuid.Nil
	// Two statements rather than one with OR: each matches a partial index
	// exactly, so a page is an index range scan whatever the table's size.
	if scope.all {
		rows, err = s.pool.Query(ctx, `SELECT `+moduleColumns+` FROM modules
			WHERE expires_at IS NULL AND ($1 OR id < $2)
			ORDER BY id DESC LIMIT $3`, first, before, limit)
	} else {
		rows, err = s.pool.Query(ctx, `SELECT `+moduleColumns+` FROM modules
			WHERE owner = $1 AND expires_at IS NULL AND ($2 OR id < $3)
			ORDER BY id DESC LIMIT $4`, scope.owner, first, before, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list modules: %w", wrap(err))
	}
	mods, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Module, error) { return scanModule(r) })
	if err != nil {
		return nil, fmt.Errorf("list modules: %w", wrap(err))
	}
	return mods, nil
}

// DeleteModule removes a module within scope, and its bytes when no other
// module shares them.
func (s *Store) DeleteModule(ctx context.Context, scope Scope, id uuid.UUID) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("delete module: %w", wrap(err))
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	var sha string
	err = tx.QueryRow(ctx, `DELETE FROM modules WHERE id = $1 AND ($2 OR owner = $3) RETURNING sha256`,
		id, scope.all, scope.owner).Scan(&sha)
	if err != nil {
		return fmt.Errorf("delete module %s: %w", id, wrap(err))
	}
	if err := deleteOrphanBlob(ctx, tx, sha); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit delete of module %s: %w", id, wrap(err))
	}
	return nil
}

// deleteOrphanBlob locks the blob row first, so that it serialises with
// CreateModule's upsert of the same bytes; the check for other modules then
// runs in a fresh snapshot that sees any module committed meanwhile.
func deleteOrphanBlob(ctx context.Context, tx pgx.Tx, sha string) error {
	if _, err := tx.Exec(ctx, `SELECT 1 FROM module_blobs WHERE sha256 = $1 FOR UPDATE`, sha); err != nil {
		return fmt.Errorf("lock module bytes: %w", wrap(err))
	}
	_, err := tx.Exec(ctx, `DELETE FROM module_blobs WHERE sha256 = $1
		AND NOT EXISTS (SELECT 1 FROM modules WHERE sha256 = $1)`, sha)
	if err != nil {
		return fmt.Errorf("delete module bytes: %w", wrap(err))
	}
	return nil
}

// BlobBytes returns the bytes stored under a SHA-256 (hex).
func (s *Store) BlobBytes(ctx context.Context, sha256Hex string) ([]byte, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT bytes FROM module_blobs WHERE sha256 = $1`, sha256Hex).Scan(&b)
	if err != nil {
		return nil, fmt.Errorf("module bytes %s: %w", sha256Hex, wrap(err))
	}
	return b, nil
}

// BlobCount reports how many distinct blobs are stored; tests use it to
// check deduplication.
func (s *Store) BlobCount(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM module_blobs`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count blobs: %w", wrap(err))
	}
	return n, nil
}
