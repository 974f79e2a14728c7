// Package auth knows who is calling: API keys, tokens and the principals
// they stand for. It sits below httpapi and above store and config.
package auth

import (
	"github.com/google/uuid"

	"github.com/wasmwiz/wasmwiz/internal/config"
)

// Roles.
const (
	RoleAdmin = "admin"
	RoleUser  = "user"
)

// Principal is the caller of a request: the key it authenticated with (or
// none, in development) and the tenant, role and tier that key carries.
type Principal struct {
	KeyID  uuid.UUID
	Owner  string
	Role   string
	Tier   string
	Method Method
}

// Method says how a principal proved itself.
type Method string

// Methods.
const (
	MethodKey         Method = "key"
	MethodToken       Method = "token"
	MethodDevelopment Method = "development"
)

// IsAdmin reports whether the principal sees every owner's data.
func (p Principal) IsAdmin() bool { return p.Role == RoleAdmin }

// Development is the principal of requests without credentials when
// ENVIRONMENT=development (API.md, "Authentication").
func Development() Principal {
	return Principal{Owner: "dev", Role: RoleAdmin, Tier: config.TierPro, Method: MethodDevelopment}
}
