package admin

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Defaults for the zero Options.
const (
	// DefaultRefreshInterval: how often the overview's counts are
	// recomputed while watched. Each pass reads every pending message.
	DefaultRefreshInterval = 10 * time.Second
	// DefaultMaxBody bounds a request body: a batch of a few large payloads
	// in base64 fits, a runaway upload does not.
	DefaultMaxBody = 8 << 20
	// DefaultMaxBatch bounds the messages of one schedule call and the IDs
	// of one replay or purge.
	DefaultMaxBatch = 1000
)

// Options configure a Handler. The zero value works; each default is named.
type Options struct {
	// ReadOnly refuses every write (schedule, cancel, reschedule, replay,
	// purge) with 403 and hides the dashboard's actions. An embedding
	// service can also make single requests read-only: WithReadOnly.
	// Default false.
	ReadOnly bool
	// RefreshInterval is how often the overview's counts are recomputed
	// while the dashboard is watched, and how often Stats is sampled for
	// rates. Default DefaultRefreshInterval.
	RefreshInterval time.Duration
	// MaxBody bounds a request body in bytes; larger ones get 413.
	// Default DefaultMaxBody.
	MaxBody int64
	// MaxBatch bounds the messages in one schedule call and the IDs in
	// one replay or purge; more get 413. Default DefaultMaxBatch.
	MaxBatch int
	// Now is the clock that "in" durations count from; it should be the
	// engine's clock. Default time.Now.
	Now func() time.Time
	// Logger receives one line per failed call (5xx). Default
	// slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

//go:embed ui
var uiFiles embed.FS

// Handler serves the JSON API under api/v1/ and the dashboard at its root.
// Mount it under a prefix with http.StripPrefix, behind the service's own
// authentication:
//
//	h := admin.New(eng, admin.Options{})
//	defer h.Close()
//	mux.Handle("/hourglass/", http.StripPrefix("/hourglass", auth(h)))
//
// The dashboard's pages use relative URLs, so any prefix works. Close stops
// the background refresher.
type Handler struct {
	eng  Engine
	opts Options
	mux  *http.ServeMux
	cop  *http.CrossOriginProtection
	ov   *overview

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a Handler for eng and starts its background refresher (see
// Options.RefreshInterval); Close stops it.
func New(eng Engine, opts Options) *Handler {
	opts.setDefaults()
	h := &Handler{
		eng:  eng,
		opts: opts,
		mux:  http.NewServeMux(),
		cop:  http.NewCrossOriginProtection(),
		ov:   newOverview(eng, opts.RefreshInterval),
		done: make(chan struct{}),
	}
	h.routes()
	ctx, stop := context.WithCancel(context.Background())
	h.stop = stop
	go func() {
		defer close(h.done)
		h.ov.run(ctx)
	}()
	return h
}

// Close stops the background refresher and waits for it (a pass in
// progress is cancelled). The handler keeps serving; the overview's counts
// are no longer refreshed. Close is idempotent.
func (h *Handler) Close() {
	h.closeOnce.Do(func() {
		h.stop()
		<-h.done
	})
}

// Refresh recomputes the overview's counts now and waits for them. The
// background loop does this on its own; Refresh is for tests and for a
// service that wants fresh counts at a moment of its choosing.
func (h *Handler) Refresh(ctx context.Context) {
	h.ov.sample()
	h.ov.refresh(ctx)
}

type readOnlyKey struct{}

// WithReadOnly marks a request's context read-only: the handler refuses its
// writes with 403 and tells the dashboard to hide its actions. An
// authentication middleware calls it for users who may look but not touch:
//
//	r = r.WithContext(admin.WithReadOnly(r.Context()))
func WithReadOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, readOnlyKey{}, true)
}

func (h *Handler) readOnly(r *http.Request) bool {
	return h.opts.ReadOnly || r.Context().Value(readOnlyKey{}) != nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) routes() {
	m := h.mux
	m.HandleFunc("GET /api/v1/info", h.api(h.info))
	m.HandleFunc("GET /api/v1/health", h.api(h.health))
	m.HandleFunc("GET /api/v1/ready", h.api(h.ready))
	m.HandleFunc("GET /api/v1/stats", h.api(h.stats))
	m.HandleFunc("GET /api/v1/summary", h.api(h.summary))
	m.HandleFunc("GET /api/v1/messages", h.api(h.list))
	m.HandleFunc("POST /api/v1/messages", h.write(h.schedule))
	m.HandleFunc("GET /api/v1/messages/{id}", h.api(h.get))
	m.HandleFunc("DELETE /api/v1/messages/{id}", h.write(h.cancel))
	m.HandleFunc("POST /api/v1/messages/{id}/reschedule", h.write(h.reschedule))
	m.HandleFunc("GET /api/v1/dead", h.api(h.dead))
	m.HandleFunc("POST /api/v1/dead/replay", h.write(h.replay))
	m.HandleFunc("POST /api/v1/dead/purge", h.write(h.purge))
	m.HandleFunc("/api/", h.api(func(r *http.Request) (int, any, error) {
		return 0, nil, newAPIError(http.StatusNotFound, "not_found", "no API call "+r.Method+" "+r.URL.Path, apiCalls...)
	}))
	ui, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(ui)
	m.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
}

// apiCalls lists the API for the 404 answer.
var apiCalls = []string{
	"GET api/v1/info", "GET api/v1/health", "GET api/v1/ready", "GET api/v1/stats", "GET api/v1/summary",
	"GET api/v1/messages", "POST api/v1/messages", "GET api/v1/messages/{id}", "DELETE api/v1/messages/{id}",
	"POST api/v1/messages/{id}/reschedule", "GET api/v1/dead", "POST api/v1/dead/replay", "POST api/v1/dead/purge",
}

// apiFunc is one call: it returns a status and a body to encode as JSON, or
// an error (an *apiError, or an engine error mapped by fromEngine).
type apiFunc func(r *http.Request) (int, any, error)

func (h *Handler) api(f apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		status, body, err := f(r)
		if err != nil {
			ae := fromEngine(err)
			if ae.status >= 500 {
				h.opts.Logger.Warn("admin: call failed", "method", r.Method, "path", r.URL.Path, "status", ae.status, "err", err)
			}
			if ae.status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			writeJSON(w, ae.status, ae.body)
			return
		}
		writeJSON(w, status, body)
	}
}

// write guards a call that changes state: refused in read-only mode and
// for cross-origin browser requests (CSRF, when the embedding service
// authenticates with cookies), and its body bounded by MaxBody. The checks
// run before the body is read, so a refused call stores nothing.
func (h *Handler) write(f apiFunc) http.HandlerFunc {
	guarded := h.api(func(r *http.Request) (int, any, error) {
		if h.readOnly(r) {
			return 0, nil, newAPIError(http.StatusForbidden, "forbidden", "read-only: this dashboard or token may not change messages")
		}
		if err := h.cop.Check(r); err != nil {
			return 0, nil, newAPIError(http.StatusForbidden, "forbidden", "cross-origin request refused: "+err.Error())
		}
		return f(r)
	})
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBody)
		guarded(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(body) // the client may have gone; nothing to do about it
}
