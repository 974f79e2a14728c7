package httpapi

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"
)

// formField describes one multipart field a route accepts.
type formField struct {
	limit    int64
	tooLarge func() *Error
}

type formPart struct {
	data     []byte
	filename string
}

// multipartOverhead is room for part headers and boundaries on top of the
// sum of the fields' limits.
const multipartOverhead = 64 << 10

// readMultipart streams a multipart body, keeping at most each field's
// limit: an over-size part is refused while it is read, never buffered
// whole. Unknown and repeated fields are refused.
func readMultipart(r *http.Request, fields map[string]formField) (map[string]formPart, error) {
	total := int64(multipartOverhead)
	for _, f := range fields {
		total += f.limit
	}
	r.Body = http.MaxBytesReader(nil, r.Body, total)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, invalidRequest("malformed multipart body: %v", err)
	}
	parts := map[string]formPart{}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return parts, nil
		}
		if err != nil {
			return nil, multipartError(err)
		}
		name := p.FormName()
		f, ok := fields[name]
		if !ok {
			return nil, invalidRequest("unknown form field %q", name)
		}
		if _, dup := parts[name]; dup {
			return nil, invalidRequest("form field %q given twice", name)
		}
		data, err := readLimited(p, f.limit, f.tooLarge)
		if err != nil {
			return nil, multipartError(err)
		}
		parts[name] = formPart{data: data, filename: p.FileName()}
	}
}

func multipartError(err error) error {
	var apiErr *Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.As(err, &mbe):
		return newError(http.StatusRequestEntityTooLarge, "request_too_large", "request body is larger than %d bytes", mbe.Limit)
	}
	return invalidRequest("malformed multipart body")
}

// readLimited reads r whole unless it holds more than limit bytes, in which
// case it stops at limit+1 and returns tooLarge.
func readLimited(r io.Reader, limit int64, tooLarge func() *Error) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, tooLarge()
	}
	return buf.Bytes(), nil
}

// mediaType returns the request's media type, lower-cased, without parameters.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	// The usual bare types need no parsing, which allocates a map for the
	// parameters on every call.
	switch ct {
	case "application/json", "application/wasm":
		return ct
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return mt
}

// fileBaseName reduces a client-sent file name to its last element, so that
// a name like "../../etc/passwd" or "C:\x\y.wasm" is kept only as a label.
func fileBaseName(name string) string {
	name = path.Base(strings.ReplaceAll(name, `\`, "/"))
	if name == "." || name == "/" || name == ".." {
		return ""
	}
	return name
}

// uploadedModule is a module's bytes and the name it arrives under.
type uploadedModule struct {
	wasm []byte
	name string
}

// readModuleUpload reads POST /api/wasm/upload: multipart with `file` (or
// its synonym `wasm`) and an optional `name`, or a raw application/wasm
// body with ?name=.
func (s *Server) readModuleUpload(r *http.Request) (uploadedModule, error) {
	tooLarge := func() *Error {
		return newError(http.StatusRequestEntityTooLarge, "module_too_large",
			"module is larger than MAX_WASM_SIZE (%d bytes)", s.cfg.MaxWASMSize)
	}
	switch mediaType(r) {
	case "application/wasm":
		if r.ContentLength > s.cfg.MaxWASMSize {
			return uploadedModule{}, tooLarge()
		}
		wasm, err := readLimited(r.Body, s.cfg.MaxWASMSize, tooLarge)
		if err != nil {
			return uploadedModule{}, multipartError(err)
		}
		return uploadedModule{wasm: wasm, name: r.URL.Query().Get("name")}, nil
	case "multipart/form-data":
		nameField := formField{limit: 1024, tooLarge: func() *Error { return invalidRequest("field \"name\" is too long") }}
		fileField := formField{limit: s.cfg.MaxWASMSize, tooLarge: tooLarge}
		parts, err := readMultipart(r, map[string]formField{"file": fileField, "wasm": fileField, "name": nameField})
		if err != nil {
			return uploadedModule{}, err
		}
		file, err := moduleFilePart(parts)
		if err != nil {
			return uploadedModule{}, err
		}
		up := uploadedModule{wasm: file.data, name: string(parts["name"].data)}
		if _, given := parts["name"]; !given {
			up.name = fileBaseName(file.filename)
		}
		return up, nil
	case "":
		return uploadedModule{}, newError(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"send multipart/form-data with a field \"file\", or application/wasm")
	default:
		return uploadedModule{}, newError(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"content type %q is not accepted; send multipart/form-data or application/wasm", mediaType(r))
	}
}

// moduleFilePart returns the module file of a form: `file` or `wasm`.
func moduleFilePart(parts map[string]formPart) (formPart, error) {
	file, hasFile := parts["file"]
	wasm, hasWasm := parts["wasm"]
	switch {
	case hasFile && hasWasm:
		return formPart{}, invalidRequest("send the module in \"file\" or \"wasm\", not both")
	case hasWasm:
		return wasm, nil
	case !hasFile:
		return formPart{}, invalidRequest("missing form field \"file\" with the module")
	}
	return file, nil
}
