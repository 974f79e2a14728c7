// Package docs holds the documents the api serves. openapi.json, the
// OpenAPI 3 description of the whole HTTP API (docs/api.md in prose), is
// the one copy in the repository; the api serves it at /openapi.json and
// the end-to-end tests check real responses against it.
package docs

import _ "embed"

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI document, JSON. The caller must not modify it.
func OpenAPI() []byte { return openAPI }
