// Package migrations holds the database schema as ordered SQL files,
// embedded in the binaries so that `api migrate` needs nothing on disk.
package migrations

import "embed"

// FS holds the goose migrations, applied in file-name order.
//
//go:embed *.sql
var FS embed.FS
