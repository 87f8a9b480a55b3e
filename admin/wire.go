package admin

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/store"
)

// The JSON shapes of the API. Times are RFC 3339 strings in UTC with
// nanoseconds ("2026-11-25T14:05:00.25Z"); IDs are the engine's 13-character
// text form; payloads are standard base64.

// headerJSON is one message header. A list (not an object) keeps order and
// repeated names, as the engine does.
type headerJSON struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// messageIn is one message to schedule. Give due or in (or neither: due
// now), not both.
type messageIn struct {
	Dest    string       `json:"dest"`
	Due     string       `json:"due,omitempty"`     // RFC 3339
	In      string       `json:"in,omitempty"`      // Go duration from now: "30s", "2h45m"
	Expires string       `json:"expires,omitempty"` // RFC 3339 deliver-by time
	Key     string       `json:"key,omitempty"`     // idempotency key
	Headers []headerJSON `json:"headers,omitempty"`
	Payload string       `json:"payload,omitempty"` // standard base64
}

func (m *messageIn) isZero() bool {
	return m.Dest == "" && m.Due == "" && m.In == "" && m.Expires == "" && m.Key == "" && m.Headers == nil && m.Payload == ""
}

// scheduleIn is the body of POST /api/v1/messages: one message, or
// {"messages": [...]} for a batch.
type scheduleIn struct {
	messageIn
	Messages []messageIn `json:"messages,omitempty"`
}

// messageFields are the JSON fields a schedule body may hold, for errors.
var messageFields = []string{"dest", "due", "in", "expires", "key", "headers", "payload", "messages"}

// messageOut describes one message (pending, in flight or dead).
type messageOut struct {
	ID       string       `json:"id"`
	State    string       `json:"state"` // "pending", "in-flight" or "dead"
	Dest     string       `json:"dest"`
	Due      string       `json:"due"`
	Expires  string       `json:"expires,omitempty"`
	Key      string       `json:"key,omitempty"`
	Headers  []headerJSON `json:"headers"`
	Attempts int          `json:"attempts"`
	// Native: held by its broker's scheduler (engine.Info.Native).
	Native bool `json:"native,omitempty"`
	// Reason is a dead letter's last error: why it died. The engine keeps
	// no error for pending messages.
	Reason      string `json:"reason,omitempty"`
	DeadAt      string `json:"dead_at,omitempty"`
	PayloadSize int    `json:"payload_size"`
	// Payload is only in GET /api/v1/messages/{id}, not in lists.
	Payload *string `json:"payload,omitempty"`
}

func timeJSON(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func headersOut(hs []engine.Header) []headerJSON {
	out := make([]headerJSON, len(hs))
	for i, h := range hs {
		out[i] = headerJSON{Key: h.Key, Value: h.Value}
	}
	return out
}

func messageOf(id engine.ID, state string, m *engine.Message, attempts int, withPayload bool) messageOut {
	out := messageOut{
		ID: id.String(), State: state, Dest: m.Dest, Due: timeJSON(m.Due), Expires: timeJSON(m.Expires),
		Key: m.Key, Headers: headersOut(m.Headers), Attempts: attempts, PayloadSize: len(m.Payload),
	}
	if withPayload {
		p := base64.StdEncoding.EncodeToString(m.Payload)
		out.Payload = &p
	}
	return out
}

func infoJSON(in *engine.Info, withPayload bool) messageOut {
	out := messageOf(in.ID, in.State.String(), &in.Message, in.Attempts, withPayload)
	out.Native, out.Reason = in.Native, in.Reason
	return out
}

func deadOut(d *engine.DeadLetter, withPayload bool) messageOut {
	out := messageOf(d.ID, engine.StateDead.String(), &d.Message, d.Attempts, withPayload)
	out.Reason, out.DeadAt = d.Reason, timeJSON(d.DeadAt)
	return out
}

// parseTime reads an RFC 3339 time within what the engine holds
// (store.MinTime to store.MaxTime), as the Go API checks it.
func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, invalid(field, fmt.Sprintf("%q is not an RFC 3339 time", s),
			"an RFC 3339 time such as 2026-11-25T14:05:00Z or 2026-11-25T15:05:00.250+01:00")
	}
	if t.Before(store.MinTime) || t.After(store.MaxTime) {
		return time.Time{}, invalid(field, fmt.Sprintf("%s is out of range", s), allowedTimes)
	}
	return t, nil
}

var allowedTimes = "a time from " + store.MinTime.Format(time.RFC3339) + " to " + store.MaxTime.Format(time.RFC3339)

// parseDue reads due or in (relative to now). Neither gives the zero time,
// which the engine reads as now.
func parseDue(prefix, due, in string, now time.Time) (time.Time, error) {
	switch {
	case due != "" && in != "":
		return time.Time{}, invalid(prefix+"due", "both due and in are set", "one of due (an RFC 3339 time) or in (a duration from now)")
	case due != "":
		// As in the Go API, a due time in the past (before 1970 too)
		// means now; only one past store.MaxTime is refused.
		t, err := time.Parse(time.RFC3339Nano, due)
		if err != nil || t.After(store.MaxTime) {
			return parseTime(prefix+"due", due)
		}
		return t, nil
	case in != "":
		d, err := time.ParseDuration(in)
		if err != nil {
			return time.Time{}, invalid(prefix+"in", fmt.Sprintf("%q is not a duration", in), "a Go duration such as 30s, 15m or 2h45m")
		}
		if d < 0 {
			return time.Time{}, invalid(prefix+"in", fmt.Sprintf("%s is negative", in), "a duration of 0s or more")
		}
		t := now.Add(d)
		if t.After(store.MaxTime) || t.Before(now) {
			return time.Time{}, invalid(prefix+"in", fmt.Sprintf("%s from now is out of range", in), "a time before "+store.MaxTime.Format(time.RFC3339))
		}
		return t, nil
	}
	return time.Time{}, nil
}

// toMessage converts and checks the parts the engine cannot see (time and
// base64 syntax); the engine validates the rest at ScheduleBatch.
func (m *messageIn) toMessage(prefix string, now time.Time) (engine.Message, error) {
	due, err := parseDue(prefix, m.Due, m.In, now)
	if err != nil {
		return engine.Message{}, err
	}
	out := engine.Message{Dest: m.Dest, Due: due, Key: m.Key}
	if m.Expires != "" {
		if out.Expires, err = parseTime(prefix+"expires", m.Expires); err != nil {
			return engine.Message{}, err
		}
	}
	if m.Payload != "" {
		if out.Payload, err = base64.StdEncoding.DecodeString(m.Payload); err != nil {
			return engine.Message{}, invalid(prefix+"payload", "not valid base64: "+err.Error(),
				"standard base64 (RFC 4648 section 4, with padding), or post the raw body with ?dest=...")
		}
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, engine.Header{Key: h.Key, Value: h.Value})
	}
	return out, nil
}

// Cursors are opaque to clients: "p.<due unix ns>.<id>" for pending pages
// and "d.<id>" for dead letters.
func pendingCursor(c engine.Cursor) string {
	if c.ID == 0 {
		return ""
	}
	return "p." + strconv.FormatInt(c.Due, 10) + "." + c.ID.String()
}

func deadCursor(id engine.ID) string {
	if id == 0 {
		return ""
	}
	return "d." + id.String()
}

func badCursor(s string) error {
	return invalid("cursor", fmt.Sprintf("%q is not a cursor of this list", s), "the next value of a previous page of the same list")
}

func parsePendingCursor(s string) (engine.Cursor, error) {
	if s == "" {
		return engine.Cursor{}, nil
	}
	rest, ok := strings.CutPrefix(s, "p.")
	dueS, idS, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return engine.Cursor{}, badCursor(s)
	}
	due, err := strconv.ParseInt(dueS, 10, 64)
	if err != nil {
		return engine.Cursor{}, badCursor(s)
	}
	id, err := engine.ParseID(idS)
	if err != nil {
		return engine.Cursor{}, badCursor(s)
	}
	return engine.Cursor{Due: due, ID: id}, nil
}

func parseDeadCursor(s string) (engine.ID, error) {
	if s == "" {
		return 0, nil
	}
	idS, ok := strings.CutPrefix(s, "d.")
	if !ok {
		return 0, badCursor(s)
	}
	id, err := engine.ParseID(idS)
	if err != nil {
		return 0, badCursor(s)
	}
	return id, nil
}

func parseID(field, s string) (engine.ID, error) {
	id, err := engine.ParseID(s)
	if err != nil || id == 0 {
		return 0, invalid(field, fmt.Sprintf("%q is not a message ID", s), "a 13-character ID as returned by schedule, such as 00000000001g2")
	}
	return id, nil
}
