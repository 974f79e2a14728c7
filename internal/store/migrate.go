package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/wasmwiz/wasmwiz/migrations"
)

// Migrate applies every pending migration. A PostgreSQL advisory lock held
// for the whole run makes it safe from several processes at once: the
// others wait, then find nothing left to do.
func Migrate(ctx context.Context, url string) (applied int, err error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return 0, errors.New("parse DATABASE_URL: invalid connection string")
	}
	boundConnect(&cfg.Config)
	db := stdlib.OpenDB(*cfg)
	defer db.Close()

	// Poll for the lock every second for up to five minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return 0, fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return 0, fmt.Errorf("load migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return len(results), fmt.Errorf("apply migrations: %w", wrap(err))
	}
	return len(results), nil
}

// EnsureDatabase creates the database named in url if it does not exist,
// connecting to the server's `postgres` database to do so. Development only:
// production databases are provisioned by their operators.
func EnsureDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return errors.New("parse DATABASE_URL: invalid connection string")
	}
	boundConnect(&cfg.Config)
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to create database: %w", wrap(err))
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database: %w", wrap(err))
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // created meanwhile by another process
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database: %w", wrap(err))
	}
	return nil
}
