package httpapi

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wasmwiz/wasmwiz/internal/auth"
	"github.com/wasmwiz/wasmwiz/internal/runner"
	"github.com/wasmwiz/wasmwiz/internal/store"
	"github.com/wasmwiz/wasmwiz/internal/usage"
)

type moduleJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Owner     string    `json:"owner"`
	SHA256    string    `json:"sha256"`
	SizeBytes int64     `json:"size_bytes"`
	Exports   []string  `json:"exports"`
	WASI      bool      `json:"wasi"`
	CreatedAt time.Time `json:"created_at"`
}

func toModuleJSON(m store.Module) moduleJSON {
	exports := m.Exports
	if exports == nil {
		exports = []string{}
	}
	return moduleJSON{
		ID: m.ID.String(), Name: m.Name, Owner: m.Owner, SHA256: m.SHA256, SizeBytes: m.SizeBytes,
		Exports: exports, WASI: m.WASI, CreatedAt: m.CreatedAt.UTC(),
	}
}

func scopeOf(p auth.Principal) store.Scope {
	if p.IsAdmin() {
		return store.AllOwners()
	}
	return store.Owner(p.Owner)
}

// defaultModuleName is used when neither a name nor a usable file name came.
const defaultModuleName = "module.wasm"

func (s *Server) uploadModule(c echo.Context) error {
	p := principalOf(c)
	up, err := s.readModuleUpload(c.Request())
	if err != nil {
		return err
	}
	m, err := s.storeModule(c, p, up, nil)
	if err != nil {
		return err
	}
	s.auditModule(c, usage.ActionModuleUploaded, m)
	return c.JSON(http.StatusCreated, toModuleJSON(m))
}

// storeModule validates a module exactly as an upload is validated and
// stores it for p's owner; expires marks an ad-hoc module.
func (s *Server) storeModule(c echo.Context, p auth.Principal, up uploadedModule, expires *time.Time) (store.Module, error) {
	ctx := c.Request().Context()
	if len(up.wasm) == 0 {
		return store.Module{}, invalidRequest("the module file is empty")
	}
	name := up.name
	if name == "" {
		name = defaultModuleName
	}
	if err := validName(name); err != nil {
		return store.Module{}, invalidRequest("name %v", err)
	}
	info, err := s.validator.Validate(ctx, up.wasm)
	if err != nil {
		var invalid *runner.InvalidModuleError
		if errors.As(err, &invalid) {
			return store.Module{}, &Error{Status: http.StatusBadRequest, Code: "invalid_module", Message: invalid.Reason, Err: err}
		}
		return store.Module{}, err
	}
	sum := sha256.Sum256(up.wasm)
	m, err := s.store.CreateModule(ctx, store.Module{
		ID:        uuid.Must(uuid.NewV7()),
		Owner:     p.Owner,
		Name:      name,
		SHA256:    hex.EncodeToString(sum[:]),
		Exports:   info.Exports,
		WASI:      info.WASI,
		CreatedAt: time.Now().UTC(),
		ExpiresAt: expires,
	}, up.wasm)
	if err != nil {
		return store.Module{}, err
	}
	if expires == nil {
		s.log.InfoContext(ctx, "module uploaded", "module_id", m.ID, "owner", m.Owner, "sha256", m.SHA256, "size_bytes", m.SizeBytes)
	}
	return m, nil
}

type moduleListJSON struct {
	Modules    []moduleJSON `json:"modules"`
	NextCursor *string      `json:"next_cursor"`
}

const (
	defaultPageSize = 20
	maxPageSize     = 100
)

func (s *Server) listModules(c echo.Context) error {
	p := principalOf(c)
	limit, before, err := pageParams(c)
	if err != nil {
		return err
	}
	// One more than asked tells whether a next page exists without a
	// second query.
	mods, err := s.store.ListModules(c.Request().Context(), scopeOf(p), before, limit+1)
	if err != nil {
		return err
	}
	page, next := pageOf(mods, limit, func(m store.Module) uuid.UUID { return m.ID })
	out := moduleListJSON{Modules: make([]moduleJSON, 0, len(page)), NextCursor: next}
	for _, m := range page {
		out.Modules = append(out.Modules, toModuleJSON(m))
	}
	return c.JSON(http.StatusOK, out)
}

// pageParams reads ?limit= (1–100, default 20) and ?cursor=.
func pageParams(c echo.Context) (int, uuid.UUID, error) {
	limit := defaultPageSize
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return 0, uuid.Nil, invalidRequest("limit must be a whole number from 1 to %d", maxPageSize)
		}
		limit = n
	}
	before := uuid.Nil
	if v := c.QueryParam("cursor"); v != "" {
		id, err := decodeCursor(v)
		if err != nil {
			return 0, uuid.Nil, invalidRequest("cursor is not one this server gave")
		}
		before = id
	}
	return limit, before, nil
}

// pageOf cuts rows fetched with limit+1 to one page, and returns the cursor
// of the next page when the extra row shows there is one.
func pageOf[T any](rows []T, limit int, id func(T) uuid.UUID) ([]T, *string) {
	if len(rows) <= limit {
		return rows, nil
	}
	next := encodeCursor(id(rows[limit-1]))
	return rows[:limit], &next
}

// A cursor is the last id of a page, opaque to clients so that its form can
// change without breaking them.
func encodeCursor(id uuid.UUID) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

func decodeCursor(s string) (uuid.UUID, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return uuid.Nil, err
	}
	return uuid.FromBytes(b)
}

func (s *Server) getModule(c echo.Context) error {
	p := principalOf(c)
	id, err := moduleIDParam(c)
	if err != nil {
		return err
	}
	m, err := s.store.GetModule(c.Request().Context(), scopeOf(p), id)
	if err != nil {
		return moduleError(id, err)
	}
	return c.JSON(http.StatusOK, toModuleJSON(m))
}

func (s *Server) deleteModule(c echo.Context) error {
	p := principalOf(c)
	id, err := moduleIDParam(c)
	if err != nil {
		return err
	}
	if err := s.store.DeleteModule(c.Request().Context(), scopeOf(p), id); err != nil {
		return moduleError(id, err)
	}
	s.modules.evict(id)
	if s.onModuleDeleted != nil {
		s.onModuleDeleted(id)
	}
	s.auditModule(c, usage.ActionModuleDeleted, store.Module{ID: id})
	s.log.InfoContext(c.Request().Context(), "module deleted", "module_id", id, "owner", p.Owner)
	return c.NoContent(http.StatusNoContent)
}

func moduleIDParam(c echo.Context) (uuid.UUID, error) {
	return parseModuleID(c.Param("id"))
}

func parseModuleID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, invalidRequest("module id %q is not a UUID", truncate(s, 64))
	}
	return id, nil
}

// moduleError names a missing module: unknown and another owner's look the
// same, so that ids of other tenants cannot be probed.
func moduleError(id uuid.UUID, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &Error{Status: http.StatusNotFound, Code: "module_not_found", Message: "module " + id.String() + " not found", Err: err}
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
