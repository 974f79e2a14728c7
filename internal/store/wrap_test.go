package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestWrapPostgresErrors pins how driver errors become the store's: what
// means "PostgreSQL cannot be reached" is ErrUnavailable (503 and a retry
// upstream), what is about the statement is not.
func TestWrapPostgresErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want error // nil: neither of the store's errors
	}{
		{"no rows", pgx.ErrNoRows, ErrNotFound},
		{"unique violation", &pgconn.PgError{Code: "23505", ConstraintName: "modules_pkey"}, ErrConflict},
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, ErrUnavailable},
		{"server crashed", &pgconn.PgError{Code: "57P02"}, ErrUnavailable},
		{"server starting up", &pgconn.PgError{Code: "57P03"}, ErrUnavailable},
		{"connection failure", &pgconn.PgError{Code: "08006"}, ErrUnavailable},
		{"connection cut", fmt.Errorf("failed to receive message: %w", io.ErrUnexpectedEOF), ErrUnavailable},
		{"connection reset", fmt.Errorf("write: %w", syscall.ECONNRESET), ErrUnavailable},
		{"undefined table", &pgconn.PgError{Code: "42P01"}, nil},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, nil},
		{"caller's deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), nil},
		{"caller gone", fmt.Errorf("query: %w", context.Canceled), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := wrap(tt.err)
			for _, e := range []error{ErrNotFound, ErrConflict, ErrUnavailable} {
				if errors.Is(got, e) != (e == tt.want) {
					t.Errorf("wrap(%v) = %v; errors.Is(%v) = %v, want %v", tt.err, got, e, errors.Is(got, e), e == tt.want)
				}
			}
			if !errors.Is(got, tt.err) && tt.want != ErrNotFound && tt.want != ErrConflict {
				t.Errorf("wrap(%v) = %v; want the cause kept", tt.err, got)
			}
		})
	}
}
