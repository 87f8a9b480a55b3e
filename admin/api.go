package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hourglassmq/hourglass/engine"
)

// infoOut is GET /api/v1/info: what this dashboard may do.
type infoOut struct {
	// ReadOnly: writes are refused for this request (Options.ReadOnly or
	// WithReadOnly).
	ReadOnly       bool    `json:"read_only"`
	Mode           string  `json:"mode"` // the store: "pebble" (durable) or "memory"
	Shards         int     `json:"shards"`
	RefreshSeconds float64 `json:"refresh_seconds"`
	MaxBatch       int     `json:"max_batch"`
	MaxBody        int64   `json:"max_body"`
}

func (h *Handler) info(r *http.Request) (int, any, error) {
	st := h.eng.Stats()
	var out infoOut
	out.ReadOnly = h.readOnly(r)
	out.Mode = st.Store.Kind
	out.Shards = len(st.Pending)
	out.RefreshSeconds = h.opts.RefreshInterval.Seconds()
	out.MaxBatch, out.MaxBody = h.opts.MaxBatch, h.opts.MaxBody
	return http.StatusOK, out, nil
}

// health is liveness: 200 unless the store has failed (a sticky failure:
// the engine refuses all work until it is reopened).
func (h *Handler) health(*http.Request) (int, any, error) {
	if err := h.eng.Err(); err != nil {
		return http.StatusServiceUnavailable, map[string]string{"status": "failing", "error": err.Error()}, nil
	}
	return http.StatusOK, map[string]string{"status": "ok"}, nil
}

// ready is readiness: healthy, and in durable mode every shard has loaded
// its first window from the store (recovery done).
func (h *Handler) ready(*http.Request) (int, any, error) {
	if err := h.eng.Err(); err != nil {
		return http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": err.Error()}, nil
	}
	st := h.eng.Stats()
	if st.Recovery.FullLoad == 0 {
		return http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "recovering: loading the first window from the store"}, nil
	}
	return http.StatusOK, map[string]any{"ready": true}, nil
}

// statsOut is GET /api/v1/stats: the engine's counters, live.
type statsOut struct {
	Mode   string `json:"mode"`
	Shards int    `json:"shards"`
	// PendingInRAM is per shard: in durable mode only the loaded window.
	PendingInRAM  []int64    `json:"pending_in_ram"`
	StorePending  int64      `json:"store_pending"`
	InFlight      int64      `json:"in_flight"`
	Counters      countersJS `json:"counters"`
	Rates         *ratesOut  `json:"rates"`
	Lateness      latencyJS  `json:"lateness"`
	DuplicatesEst int64      `json:"duplicates_estimate"`
	Recovery      recoveryJS `json:"recovery"`
	Store         *storeJS   `json:"store"`
}

type countersJS struct {
	Scheduled       uint64 `json:"scheduled"`
	Fired           uint64 `json:"fired"`
	Delivered       uint64 `json:"delivered"`
	Retried         uint64 `json:"retried"`
	DeadLettered    uint64 `json:"dead_lettered"`
	Cancelled       uint64 `json:"cancelled"`
	Expired         uint64 `json:"expired"`
	NativeScheduled uint64 `json:"native_scheduled"`
	NativeFired     uint64 `json:"native_fired"`
	EarlyCaught     uint64 `json:"early_caught"`
	Loaded          uint64 `json:"loaded"`
	Evicted         uint64 `json:"evicted"`
	// PushBacks counts Schedule calls paced because delivery fell behind;
	// PushBackWait is their total wait.
	PushBacks    uint64  `json:"push_backs"`
	PushBackWait float64 `json:"push_back_wait_seconds"`
}

// latencyJS holds durations in seconds.
type latencyJS struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_seconds"`
	P90   float64 `json:"p90_seconds,omitempty"`
	P99   float64 `json:"p99_seconds"`
	Max   float64 `json:"max_seconds"`
}

type recoveryJS struct {
	StoreSeconds     float64 `json:"store_seconds"`
	PendingAtOpen    int64   `json:"pending_at_open"`
	FirstFireSeconds float64 `json:"first_fire_seconds"`
	FullLoadSeconds  float64 `json:"full_load_seconds"`
	// Ready: in durable mode, every shard has loaded its first window.
	Ready bool `json:"ready"`
}

type storeJS struct {
	DiskBytes uint64    `json:"disk_bytes"`
	Pending   int64     `json:"pending"`
	Dead      int64     `json:"dead"`
	Batches   uint64    `json:"batches"`
	Records   uint64    `json:"records"`
	Sync      latencyJS `json:"sync"`
}

// statsJSON is the one place that reads engine.Stats' layout.
func statsJSON(st engine.Stats) statsOut {
	out := statsOut{
		Shards: len(st.Pending), PendingInRAM: st.Pending, StorePending: st.StorePending,
		InFlight: st.InFlight, DuplicatesEst: st.DuplicatesEstimate,
		Counters: countersJS{
			Scheduled: st.Scheduled, Fired: st.Fired, Delivered: st.Delivered, Retried: st.Retried,
			DeadLettered: st.DeadLettered, Cancelled: st.Cancelled, Expired: st.Expired,
			NativeScheduled: st.NativeScheduled, NativeFired: st.NativeFired, EarlyCaught: st.EarlyCaught, Loaded: st.Loaded,
			Evicted: st.Evicted, PushBacks: st.PushBacks, PushBackWait: st.PushBackWait.Seconds(),
		},
		Lateness: latencyJS{Count: st.Lateness.Count, P50: st.Lateness.P50.Seconds(), P90: st.Lateness.P90.Seconds(),
			P99: st.Lateness.P99.Seconds(), Max: st.Lateness.Max.Seconds()},
		Recovery: recoveryJS{StoreSeconds: st.Recovery.Store.Seconds(), PendingAtOpen: st.Recovery.Pending,
			FirstFireSeconds: st.Recovery.FirstFire.Seconds(), FullLoadSeconds: st.Recovery.FullLoad.Seconds(),
			Ready: st.Recovery.FullLoad > 0},
	}
	s := st.Store
	out.Mode = s.Kind
	out.Store = &storeJS{DiskBytes: s.DiskBytes, Pending: s.PendingTotal, Dead: s.Dead, Batches: s.Commits, Records: s.Records,
		Sync: latencyJS{Count: s.Sync.Count, P50: s.Sync.P50.Seconds(), P99: s.Sync.P99.Seconds(), Max: s.Sync.Max.Seconds()}}
	return out
}

func (h *Handler) stats(*http.Request) (int, any, error) {
	st := h.eng.Stats()
	out := statsJSON(st)
	out.Rates = h.ov.rates(st)
	return http.StatusOK, out, nil
}

func (h *Handler) summary(*http.Request) (int, any, error) {
	return http.StatusOK, h.ov.view(), nil
}

// checkQuery refuses query parameters outside allowed, so a typo is an
// error rather than a filter silently not applied.
func checkQuery(q url.Values, allowed ...string) error {
	for k := range q {
		if !slices.Contains(allowed, k) {
			return invalid(k, "unknown query parameter", allowed...)
		}
	}
	return nil
}

func queryLimit(q url.Values, max int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return min(50, max), nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, invalid("limit", fmt.Sprintf("%q is not a page size", s), fmt.Sprintf("an integer from 1 to %d", max))
	}
	return n, nil
}

func queryRange(q url.Values) (from, to time.Time, err error) {
	if s := q.Get("from"); s != "" {
		if from, err = parseTime("from", s); err != nil {
			return
		}
	}
	if s := q.Get("to"); s != "" {
		if to, err = parseTime("to", s); err != nil {
			return
		}
	}
	if !from.IsZero() && !to.IsZero() && !to.After(from) {
		err = invalid("to", "is not after from", "a to time later than from")
	}
	return
}

// listOut is GET /api/v1/messages and GET /api/v1/dead.
type listOut struct {
	Messages []messageOut `json:"messages"`
	// Next is the cursor of the next page; empty on the last page.
	Next string `json:"next"`
}

// list: GET /api/v1/messages?state=pending|dead&dest=PREFIX&from=T&to=T&limit=N&cursor=C,
// or ?key=K alone.
func (h *Handler) list(r *http.Request) (int, any, error) {
	q := r.URL.Query()
	if err := checkQuery(q, "state", "dest", "from", "to", "limit", "cursor", "key"); err != nil {
		return 0, nil, err
	}
	if q.Has("key") {
		return h.byKey(r, q)
	}
	switch st := q.Get("state"); st {
	case "", "pending":
		return h.listPending(r, q)
	case "dead":
		return h.listDead(r, q)
	default:
		return 0, nil, invalid("state", fmt.Sprintf("%q cannot be listed", st), "pending", "dead")
	}
}

func (h *Handler) byKey(r *http.Request, q url.Values) (int, any, error) {
	if len(q) > 1 {
		return 0, nil, invalid("key", "a key search takes no other parameter", "key alone")
	}
	out := listOut{Messages: []messageOut{}}
	in, err := h.eng.GetByKey(r.Context(), q.Get("key"))
	if errors.Is(err, engine.ErrNotFound) {
		return http.StatusOK, out, nil
	}
	if err != nil {
		return 0, nil, err
	}
	out.Messages = append(out.Messages, infoJSON(&in, false))
	return http.StatusOK, out, nil
}

func (h *Handler) listPending(r *http.Request, q url.Values) (int, any, error) {
	limit, err := queryLimit(q, 1000)
	if err != nil {
		return 0, nil, err
	}
	from, to, err := queryRange(q)
	if err != nil {
		return 0, nil, err
	}
	after, err := parsePendingCursor(q.Get("cursor"))
	if err != nil {
		return 0, nil, err
	}
	page, next, err := h.eng.List(r.Context(), engine.ListQuery{From: from, To: to, Dest: q.Get("dest"), After: after, Limit: limit})
	if err != nil {
		return 0, nil, err
	}
	out := listOut{Messages: make([]messageOut, len(page)), Next: pendingCursor(next)}
	for i := range page {
		out.Messages[i] = infoJSON(&page[i], false)
	}
	return http.StatusOK, out, nil
}

// deadScanFactor bounds the dead letters one filtered page examines, as a
// multiple of its limit; the cursor then resumes where it stopped.
const deadScanFactor = 20

func (h *Handler) listDead(r *http.Request, q url.Values) (int, any, error) {
	limit, err := queryLimit(q, 1000)
	if err != nil {
		return 0, nil, err
	}
	from, to, err := queryRange(q)
	if err != nil {
		return 0, nil, err
	}
	after, err := parseDeadCursor(q.Get("cursor"))
	if err != nil {
		return 0, nil, err
	}
	dest := q.Get("dest")
	match := func(d *engine.DeadLetter) bool {
		m := &d.Message
		return strings.HasPrefix(m.Dest, dest) && (from.IsZero() || !m.Due.Before(from)) && (to.IsZero() || m.Due.Before(to))
	}
	out := listOut{Messages: []messageOut{}}
	for examined := 0; ; {
		page, next, err := h.eng.DeadLetters(r.Context(), after, limit)
		if err != nil {
			return 0, nil, err
		}
		for i := range page {
			examined++
			after = page[i].ID
			if match(&page[i]) {
				out.Messages = append(out.Messages, deadOut(&page[i], false))
				if len(out.Messages) == limit {
					if i < len(page)-1 || next != 0 {
						out.Next = deadCursor(after)
					}
					return http.StatusOK, out, nil
				}
			}
		}
		if next == 0 {
			return http.StatusOK, out, nil
		}
		if examined >= deadScanFactor*limit {
			out.Next = deadCursor(after)
			return http.StatusOK, out, nil
		}
		after = next
	}
}

// dead: GET /api/v1/dead, the dead letters (same as ?state=dead).
func (h *Handler) dead(r *http.Request) (int, any, error) {
	q := r.URL.Query()
	if err := checkQuery(q, "dest", "from", "to", "limit", "cursor"); err != nil {
		return 0, nil, err
	}
	return h.listDead(r, q)
}

func (h *Handler) get(r *http.Request) (int, any, error) {
	id, err := parseID("id", r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	in, err := h.eng.Get(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	out := infoJSON(&in, true)
	if in.State == engine.StateDead {
		// Info has no death time; the dead letter list does, and the first
		// entry after id-1 is id itself.
		if ds, _, err := h.eng.DeadLetters(r.Context(), id-1, 1); err == nil && len(ds) == 1 && ds[0].ID == id {
			out.DeadAt = timeJSON(ds[0].DeadAt)
		}
	}
	return http.StatusOK, out, nil
}

// decodeJSON reads one JSON object into v, strictly: unknown fields,
// trailing data and other media types are errors that name what is allowed.
func decodeJSON(r *http.Request, v any, fields []string) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return newAPIError(http.StatusUnsupportedMediaType, "unsupported_media_type",
				fmt.Sprintf("Content-Type %q: a JSON body is expected", ct), "application/json")
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			err = errEmptyBody
		}
		return fromDecode(err, fields)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return fromDecode(err, fields)
		}
		return &apiError{http.StatusBadRequest, errorOut{Code: "invalid_json", Error: "trailing data after the JSON object"}}
	}
	return nil
}

// rawParams are the query parameters of a raw-body schedule.
var rawParams = []string{"dest", "due", "in", "expires", "key", "header"}

// schedule: POST /api/v1/messages. Either a JSON body (one message, or
// {"messages": [...]}), or, when the query names dest, the raw body as the
// payload with the other fields in the query (header=Name:value, repeated)
// and the request's Content-Type kept as a message header.
func (h *Handler) schedule(r *http.Request) (int, any, error) {
	q := r.URL.Query()
	var msgs []engine.Message
	batch := false
	now := h.opts.Now()
	if q.Has("dest") {
		if err := checkQuery(q, rawParams...); err != nil {
			return 0, nil, err
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return 0, nil, fromDecode(err, nil)
		}
		in := messageIn{Dest: q.Get("dest"), Due: q.Get("due"), In: q.Get("in"), Expires: q.Get("expires"), Key: q.Get("key")}
		for _, hv := range q["header"] {
			k, v, ok := strings.Cut(hv, ":")
			if !ok {
				return 0, nil, invalid("header", fmt.Sprintf("%q has no colon", hv), "Name: value")
			}
			in.Headers = append(in.Headers, headerJSON{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v)})
		}
		if ct := r.Header.Get("Content-Type"); ct != "" && !slices.ContainsFunc(in.Headers, func(h headerJSON) bool {
			return strings.EqualFold(h.Key, "Content-Type")
		}) {
			in.Headers = append(in.Headers, headerJSON{Key: "Content-Type", Value: ct})
		}
		m, err := in.toMessage("", now)
		if err != nil {
			return 0, nil, err
		}
		m.Payload = body
		msgs = []engine.Message{m}
	} else {
		if len(q) > 0 {
			return 0, nil, invalid("", "query parameters are only for a raw-body schedule, which needs ?dest=", rawParams...)
		}
		var in scheduleIn
		if err := decodeJSON(r, &in, messageFields); err != nil {
			return 0, nil, err
		}
		switch {
		case in.Messages == nil:
			m, err := in.messageIn.toMessage("", now)
			if err != nil {
				return 0, nil, err
			}
			msgs = []engine.Message{m}
		case !in.messageIn.isZero():
			return 0, nil, invalid("messages", "both a message and a messages batch are given", "one message, or {\"messages\": [...]}")
		case len(in.Messages) == 0:
			return 0, nil, invalid("messages", "the batch is empty", "1 or more messages")
		case len(in.Messages) > h.opts.MaxBatch:
			return 0, nil, newAPIError(http.StatusRequestEntityTooLarge, "too_large",
				fmt.Sprintf("messages: a batch of %d messages is more than %d", len(in.Messages), h.opts.MaxBatch),
				fmt.Sprintf("at most %d messages per call", h.opts.MaxBatch))
		default:
			batch = true
			msgs = make([]engine.Message, len(in.Messages))
			for i := range in.Messages {
				m, err := in.Messages[i].toMessage(fmt.Sprintf("messages[%d].", i), now)
				if err != nil {
					return 0, nil, err
				}
				msgs[i] = m
			}
		}
	}
	ids, err := h.eng.ScheduleBatch(r.Context(), msgs)
	var dup *engine.DuplicateError
	if errors.As(err, &dup) {
		// Idempotency keys already known: those places hold the existing
		// IDs; everything else was scheduled.
		status := http.StatusCreated
		if len(dup.Index) == len(ids) {
			status = http.StatusOK // nothing new
		}
		if !batch {
			return status, map[string]any{"id": ids[0].String(), "duplicate": true}, nil
		}
		return status, map[string]any{"ids": idStrings(ids), "duplicates": dup.Index}, nil
	}
	if err != nil {
		ae := fromEngine(err)
		for _, id := range ids {
			if id != 0 {
				ae.body.IDs = append(ae.body.IDs, id.String())
			}
		}
		return 0, nil, ae
	}
	if !batch {
		return http.StatusCreated, map[string]string{"id": ids[0].String()}, nil
	}
	return http.StatusCreated, map[string][]string{"ids": idStrings(ids)}, nil
}

func idStrings(ids []engine.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func (h *Handler) cancel(r *http.Request) (int, any, error) {
	id, err := parseID("id", r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	if err := h.eng.Cancel(r.Context(), id); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"id": id.String(), "cancelled": true}, nil
}

// dueIn is the body of reschedule and replay: when, as due or in.
type dueIn struct {
	Due string `json:"due,omitempty"`
	In  string `json:"in,omitempty"`
}

func (h *Handler) reschedule(r *http.Request) (int, any, error) {
	id, err := parseID("id", r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	var in dueIn
	if err := decodeJSON(r, &in, []string{"due", "in"}); err != nil {
		return 0, nil, err
	}
	if in.Due == "" && in.In == "" {
		return 0, nil, invalid("due", "no new time given", `{"due": "<RFC 3339 time>"}`, `{"in": "<duration>"} ({"in": "0s"} runs it now)`)
	}
	due, err := parseDue("", in.Due, in.In, h.opts.Now())
	if err != nil {
		return 0, nil, err
	}
	if err := h.eng.Reschedule(r.Context(), id, due); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]string{"id": id.String(), "due": timeJSON(due)}, nil
}

// idsIn is the body of replay and purge.
type idsIn struct {
	IDs []string `json:"ids"`
	Due string   `json:"due,omitempty"` // replay only
	In  string   `json:"in,omitempty"`  // replay only
	All bool     `json:"all,omitempty"` // purge only: every dead letter
}

func (h *Handler) parseIDs(ids []string) ([]engine.ID, error) {
	if len(ids) > h.opts.MaxBatch {
		return nil, newAPIError(http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("ids: %d IDs are more than %d", len(ids), h.opts.MaxBatch), fmt.Sprintf("at most %d IDs per call", h.opts.MaxBatch))
	}
	out := make([]engine.ID, len(ids))
	for i, s := range ids {
		id, err := parseID(fmt.Sprintf("ids[%d]", i), s)
		if err != nil {
			return nil, err
		}
		out[i] = id
	}
	return out, nil
}

// replay: POST /api/v1/dead/replay {"ids": [...], "due" or "in"}: all or
// nothing; due defaults to now.
func (h *Handler) replay(r *http.Request) (int, any, error) {
	var in idsIn
	if err := decodeJSON(r, &in, []string{"ids", "due", "in"}); err != nil {
		return 0, nil, err
	}
	if in.All {
		return 0, nil, invalid("all", "replay takes IDs", "ids")
	}
	if len(in.IDs) == 0 {
		return 0, nil, invalid("ids", "no IDs given", "1 or more dead-letter IDs")
	}
	ids, err := h.parseIDs(in.IDs)
	if err != nil {
		return 0, nil, err
	}
	due, err := parseDue("", in.Due, in.In, h.opts.Now())
	if err != nil {
		return 0, nil, err
	}
	if err := h.eng.ReplayDead(r.Context(), ids, due); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]int{"replayed": len(ids)}, nil
}

// purge: POST /api/v1/dead/purge {"ids": [...]} or {"all": true}. An empty
// list is an error, never "all".
func (h *Handler) purge(r *http.Request) (int, any, error) {
	var in idsIn
	if err := decodeJSON(r, &in, []string{"ids", "all"}); err != nil {
		return 0, nil, err
	}
	if in.Due != "" || in.In != "" {
		return 0, nil, invalid("due", "purge takes no time", "ids", "all")
	}
	var ids []engine.ID
	switch {
	case in.All && len(in.IDs) > 0:
		return 0, nil, invalid("all", "both all and ids are given", "ids", "all")
	case in.All:
		ids = nil // the engine's "every dead letter"
	case len(in.IDs) == 0:
		return 0, nil, invalid("ids", "no IDs given", "1 or more dead-letter IDs", `{"all": true} for every dead letter`)
	default:
		var err error
		if ids, err = h.parseIDs(in.IDs); err != nil {
			return 0, nil, err
		}
	}
	n, err := h.eng.PurgeDead(r.Context(), ids)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]int{"purged": n}, nil
}
