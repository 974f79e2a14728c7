package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// decodeJSON reads one JSON object of at most limit bytes into v, refusing
// unknown fields (naming them), wrong types (naming the field) and trailing
// data.
func decodeJSON(r *http.Request, limit int64, v any) error {
	if r.Header.Get("Content-Type") != "" {
		if mediaType(r) != "application/json" {
			return newError(http.StatusUnsupportedMediaType, "unsupported_media_type",
				"send application/json")
		}
	}
	body := http.MaxBytesReader(nil, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonError(err)
		}
		return newError(http.StatusBadRequest, "invalid_json", "the body holds more than one JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var (
		syntax    *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		maxBytes  *http.MaxBytesError
		unknownPf = "json: unknown field "
	)
	switch {
	case errors.As(err, &maxBytes):
		return newError(http.StatusRequestEntityTooLarge, "request_too_large",
			"request body is larger than %d bytes", maxBytes.Limit)
	case errors.As(err, &syntax):
		return newError(http.StatusBadRequest, "invalid_json", "invalid JSON at byte %d", syntax.Offset)
	case errors.Is(err, io.EOF):
		return newError(http.StatusBadRequest, "invalid_json", "the body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return newError(http.StatusBadRequest, "invalid_json", "the JSON body ends too early")
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return invalidRequest("the body must be a JSON object")
		}
		return invalidRequest("field %q must be of type %s", typeErr.Field, jsonType(typeErr.Type.Kind().String()))
	case strings.HasPrefix(err.Error(), unknownPf):
		// The name is the client's, up to the body's limit: echo a prefix.
		name := strings.TrimPrefix(err.Error(), unknownPf)
		if unq, err := strconv.Unquote(name); err == nil {
			name = unq
		}
		return invalidRequest("unknown field %q", truncate(name, 64))
	}
	return newError(http.StatusBadRequest, "invalid_json", "invalid JSON")
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	case "bool":
		return "boolean"
	}
	return "number"
}

// validName checks a display name: 1–128 printable characters of valid UTF-8.
func validName(s string) error {
	n := utf8.RuneCountInString(s)
	if !utf8.ValidString(s) || n < 1 || n > 128 {
		return fmt.Errorf("must be 1 to 128 characters of UTF-8")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("must hold printable characters only")
		}
	}
	return nil
}
