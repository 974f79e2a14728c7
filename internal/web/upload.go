package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// modulesListed is how many of the latest modules the run form offers.
const modulesListed = 100

type uploadView struct {
	MaxWASM, MaxInput string
	Modules           []moduleOption
	// Module is the selected module's details.
	Module      *moduleView
	Uploaded    bool
	Selected    string
	Input       string
	Result      *resultView
	UploadError string
	RunError    string
}

type moduleOption struct {
	ID, Label string
	Selected  bool
}

type moduleView struct {
	ID, Name, Owner, SHA256, Size, Created, Exports string
	Runnable                                        bool
}

type resultView struct {
	Status, StatusClass, ExitCode string
	Stdout, Stderr                string
	StdoutBase64, StderrBase64    bool
	Truncated                     bool
	Error                         string
	Duration, MemoryPeak, Queue   string
	Worker, ExecutionID, ModuleID string
	StdoutEmpty, StderrEmpty      bool
}

func toModuleView(m apiModule) *moduleView {
	runnable := false
	for _, e := range m.Exports {
		if e == "_start" {
			runnable = true
		}
	}
	exports := strings.Join(m.Exports, ", ")
	if exports == "" {
		exports = "none"
	}
	return &moduleView{
		ID: m.ID, Name: m.Name, Owner: m.Owner, SHA256: m.SHA256, Size: humanBytes(m.SizeBytes),
		Created: humanTime(m.CreatedAt), Exports: exports, Runnable: runnable,
	}
}

func (h *Handler) uploadPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	v := uploadView{Selected: q.Get("module"), Uploaded: q.Has("uploaded")}
	return h.renderUpload(w, r, s, http.StatusOK, v)
}

// renderUpload shows the upload and run forms, the latest modules
// (GET /api/wasm/modules) and the selected one (GET /api/wasm/modules/{id}).
func (h *Handler) renderUpload(w http.ResponseWriter, r *http.Request, s *session, status int, v uploadView) error {
	v.MaxWASM, v.MaxInput = humanBytes(h.cfg.MaxWASMSize), humanBytes(h.cfg.MaxInputSize)
	var list apiModuleList
	if err := h.callAPI(r, s, http.MethodGet, "/api/wasm/modules?limit="+strconv.Itoa(modulesListed), "", nil, nil, &list); err != nil {
		return err
	}
	for _, m := range list.Modules {
		if m.ID == v.Selected {
			v.Module = toModuleView(m)
		}
	}
	if v.Selected != "" && v.Module == nil {
		// Older than the list, or not one of the caller's: ask for it.
		if _, err := uuid.Parse(v.Selected); err == nil {
			var m apiModule
			err := h.callAPI(r, s, http.MethodGet, "/api/wasm/modules/"+url.PathEscape(v.Selected), "", nil, nil, &m)
			var ae *apiError
			switch {
			case err == nil:
				v.Module = toModuleView(m)
			case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
				v.Uploaded = false
			default:
				return err
			}
		}
		if v.Module == nil {
			v.Selected = ""
		}
	}
	if v.Selected == "" && len(list.Modules) > 0 {
		v.Selected = list.Modules[0].ID
	}
	found := false
	for _, m := range list.Modules {
		opt := moduleOption{ID: m.ID, Label: m.Name + " · " + humanBytes(m.SizeBytes) + " · " + humanTime(m.CreatedAt), Selected: m.ID == v.Selected}
		if s.p.IsAdmin() {
			opt.Label = m.Owner + " / " + opt.Label
		}
		found = found || opt.Selected
		v.Modules = append(v.Modules, opt)
	}
	if !found && v.Module != nil {
		// Older than the list shows: offer it all the same.
		v.Modules = append([]moduleOption{{ID: v.Module.ID, Label: v.Module.Name, Selected: true}}, v.Modules...)
	}
	h.render(w, r, status, "upload", s, "Upload and run", v)
	return nil
}

// formErr reports whether err is a refusal the form should show beside
// itself (the request's fault), rather than a page of its own.
func formErr(err error) (*apiError, bool) {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusUnauthorized && ae.Status != http.StatusTooManyRequests {
		return ae, true
	}
	return nil, false
}

// upload stores a module through POST /api/wasm/upload, then shows it
// selected in the run form.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request, s *session) error {
	uploadError := func(status int, msg string) error {
		return h.renderUpload(w, r, s, status, uploadView{UploadError: msg})
	}
	file, header, err := r.FormFile("file")
	if err != nil {
		return uploadError(http.StatusBadRequest, "Choose a .wasm file to upload.")
	}
	defer file.Close()
	wasm, err := io.ReadAll(file)
	if err != nil {
		return err
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" {
		name = header.Filename
	}
	var m apiModule
	err = h.callAPI(r, s, http.MethodPost, "/api/wasm/upload?name="+url.QueryEscape(name), "application/wasm",
		bytes.NewReader(wasm), nil, &m)
	if ae, ok := formErr(err); ok {
		return uploadError(ae.Status, sentence(ae.Message))
	}
	if err != nil {
		return err
	}
	redirect(w, "/upload?uploaded=1&module="+url.QueryEscape(m.ID))
	return nil
}

type executeJSON struct {
	ModuleID string `json:"module_id"`
	Input    string `json:"input"`
}

// run executes a module through POST /api/wasm/execute and shows what it
// answered. Line breaks of the input are sent as "\n": browsers send a
// textarea's as "\r\n".
func (h *Handler) run(w http.ResponseWriter, r *http.Request, s *session) error {
	v := uploadView{
		Selected: r.PostFormValue("module_id"),
		Input:    strings.ReplaceAll(r.PostFormValue("input"), "\r\n", "\n"),
	}
	body, err := json.Marshal(executeJSON{ModuleID: v.Selected, Input: v.Input})
	if err != nil {
		return err
	}
	var res apiExecution
	err = h.callAPI(r, s, http.MethodPost, "/api/wasm/execute", "application/json", bytes.NewReader(body), nil, &res)
	var ae *apiError
	switch {
	case err == nil:
		v.Result = toResultView(res)
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized:
		// Anything the API refused, including no worker or a quota, is
		// shown beside the form, which keeps the input.
		msg := sentence(ae.Message)
		if ae.Code == "internal_error" {
			msg = internalMessage
		}
		if ae.RetryAfter != "" {
			w.Header().Set("Retry-After", ae.RetryAfter)
		}
		v.RunError = msg
		return h.renderUpload(w, r, s, ae.Status, v)
	default:
		return err
	}
	return h.renderUpload(w, r, s, http.StatusOK, v)
}

func toResultView(e apiExecution) *resultView {
	rv := &resultView{
		Status: e.Status, StatusClass: statusClass(e.Status), ExitCode: strconv.FormatUint(uint64(e.ExitCode), 10),
		Truncated: e.Truncated, Duration: humanMS(e.Usage.DurationMS), Queue: humanMS(e.Usage.QueueMS),
		MemoryPeak: humanBytes(int64(e.Usage.MemoryPeakBytes)), Worker: e.Worker, ExecutionID: e.ExecutionID, ModuleID: e.ModuleID,
	}
	switch {
	case e.Stdout != nil:
		rv.Stdout = *e.Stdout
	case e.StdoutBase64 != nil:
		rv.Stdout, rv.StdoutBase64 = *e.StdoutBase64, true
	}
	switch {
	case e.Stderr != nil:
		rv.Stderr = *e.Stderr
	case e.StderrBase64 != nil:
		rv.Stderr, rv.StderrBase64 = *e.StderrBase64, true
	}
	rv.StdoutEmpty, rv.StderrEmpty = rv.Stdout == "", rv.Stderr == ""
	if e.Error != nil {
		rv.Error = *e.Error
	}
	return rv
}
