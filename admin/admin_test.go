package admin_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/admin"
	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// sink is a transport for scheme "test": it refuses targets containing
// "forbidden" at validation, rejects (dead-letters) targets containing
// "reject", and delivers the rest, reporting each ID it saw on got.
type sink struct{ got chan string }

func (s *sink) Validate(d transport.Destination) error {
	if strings.Contains(d.Target, "forbidden") {
		return &transport.DestinationError{Dest: d.Raw, Err: transport.ErrBadDestination,
			Reason: "the target is forbidden", Allowed: []string{"test://ok/...", "test://reject/..."}}
	}
	return nil
}

func (s *sink) Send(ctx context.Context, batch []transport.Envelope, out []transport.Outcome) {
	for i := range batch {
		if strings.Contains(batch[i].Dest, "reject") {
			out[i] = transport.Reject(errors.New("receiver said no"))
		} else {
			out[i] = transport.Delivered()
		}
		s.got <- batch[i].ID
	}
}

func (s *sink) Close() error { return nil }

// fixture is a memory engine on a fake clock behind the handler on an
// httptest server.
type fixture struct {
	t     *testing.T
	clock *engine.FakeClock
	eng   *engine.Engine
	h     *admin.Handler
	srv   *httptest.Server
	sink  *sink
}

func newFixture(t *testing.T, opts admin.Options, wrap ...func(admin.Engine) admin.Engine) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: engine.NewFakeClock(t0), sink: &sink{got: make(chan string, 100)}}
	reg := transport.NewRegistry()
	require.NoError(t, reg.Register(f.sink, "test"))
	var err error
	f.eng, err = engine.Open(context.Background(), engine.Options{
		Clock: f.clock, Transports: reg, Shards: 2, MaxPayload: 1024,
		Logger: slog.New(slog.DiscardHandler),
		Retry:  engine.RetryPolicy{MaxAttempts: 1},
	})
	require.NoError(t, err)
	opts.Now = f.clock.Now
	var eng admin.Engine = f.eng
	for _, w := range wrap {
		eng = w(eng)
	}
	f.h = admin.New(eng, opts)
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(func() {
		f.srv.Close()
		f.h.Close()
		require.NoError(t, f.eng.Close())
		require.NoError(t, reg.Close())
	})
	return f
}

// call makes a request and decodes a JSON answer into a map.
func (f *fixture) call(method, path, body string, hdr ...string) (int, map[string]any) {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+"/api/v1/"+path, rd)
	require.NoError(f.t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	require.Equal(f.t, "application/json; charset=utf-8", resp.Header.Get("Content-Type"), "%s %s: %s", method, path, raw)
	var out map[string]any
	require.NoError(f.t, json.Unmarshal(raw, &out), "%s", raw)
	return resp.StatusCode, out
}

// schedule posts one message and returns its ID.
func (f *fixture) schedule(body string) string {
	f.t.Helper()
	st, out := f.call("POST", "messages", body)
	require.Equal(f.t, http.StatusCreated, st, "%v", out)
	return out["id"].(string)
}

// nothingStored checks that no message was ever scheduled: none pending,
// none dead, and the engine's counter at zero.
func (f *fixture) nothingStored() {
	f.t.Helper()
	ctx := context.Background()
	page, _, err := f.eng.List(ctx, engine.ListQuery{})
	require.NoError(f.t, err)
	require.Empty(f.t, page, "pending messages")
	dead, _, err := f.eng.DeadLetters(ctx, 0, 10)
	require.NoError(f.t, err)
	require.Empty(f.t, dead, "dead letters")
	require.Zero(f.t, f.eng.Stats().Scheduled, "Stats.Scheduled")
}

// delivered waits for the sink to see n messages and returns their IDs.
func (f *fixture) delivered(n int) []string {
	f.t.Helper()
	var ids []string
	for range n {
		select {
		case id := <-f.sink.got:
			ids = append(ids, id)
		case <-time.After(10 * time.Second):
			f.t.Fatalf("the sink saw %d of %d messages", len(ids), n)
		}
	}
	return ids
}

func TestScheduleGetCancel(t *testing.T) {
	f := newFixture(t, admin.Options{})
	payload := base64.StdEncoding.EncodeToString([]byte(`{"order":7}`))
	id := f.schedule(`{"dest":"test://ok/orders","in":"90s","key":"order-7","expires":"2026-11-26T00:00:00Z",
		"headers":[{"key":"X-Tenant","value":"a"},{"key":"X-Tenant","value":"b"}],"payload":"` + payload + `"}`)

	st, m := f.call("GET", "messages/"+id, "")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, id, m["id"])
	require.Equal(t, "pending", m["state"])
	require.Equal(t, "test://ok/orders", m["dest"])
	require.Equal(t, "2026-11-25T12:01:30Z", m["due"])
	require.Equal(t, "2026-11-26T00:00:00Z", m["expires"])
	require.Equal(t, "order-7", m["key"])
	require.Equal(t, payload, m["payload"])
	require.EqualValues(t, 11, m["payload_size"])
	require.EqualValues(t, 0, m["attempts"])
	require.Equal(t, []any{map[string]any{"key": "X-Tenant", "value": "a"}, map[string]any{"key": "X-Tenant", "value": "b"}}, m["headers"])

	st, out := f.call("DELETE", "messages/"+id, "")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, map[string]any{"id": id, "cancelled": true}, out)
	st, out = f.call("GET", "messages/"+id, "")
	require.Equal(t, http.StatusNotFound, st)
	require.Equal(t, "not_found", out["code"])
	st, _ = f.call("DELETE", "messages/"+id, "")
	require.Equal(t, http.StatusNotFound, st)
	require.EqualValues(t, 1, f.eng.Stats().Cancelled)
}

func TestScheduleBatchAndList(t *testing.T) {
	f := newFixture(t, admin.Options{})
	st, out := f.call("POST", "messages", `{"messages":[
		{"dest":"test://ok/a","in":"5m"},
		{"dest":"test://ok/b","in":"1m"},
		{"dest":"test://ok/a","due":"2026-11-25T12:03:00Z"},
		{"dest":"test://other/c","in":"2h"},
		{"dest":"test://ok/a","in":"4m"}]}`)
	require.Equal(t, http.StatusCreated, st, "%v", out)
	ids := out["ids"].([]any)
	require.Len(t, ids, 5)

	// Every page in due order, two at a time, through the cursor.
	var seen []any
	cursor := ""
	for range 4 {
		st, page := f.call("GET", "messages?limit=2&cursor="+cursor, "")
		require.Equal(t, http.StatusOK, st, "%v", page)
		for _, m := range page["messages"].([]any) {
			seen = append(seen, m.(map[string]any)["id"])
			require.NotContains(t, m, "payload", "lists carry no payloads")
		}
		cursor = page["next"].(string)
		if cursor == "" {
			break
		}
	}
	require.Equal(t, []any{ids[1], ids[2], ids[4], ids[0], ids[3]}, seen)

	// Destination prefix and due range.
	st, page := f.call("GET", "messages?dest=test://ok/a&from=2026-11-25T12:03:30Z&to=2026-11-25T13:00:00Z", "")
	require.Equal(t, http.StatusOK, st)
	got := page["messages"].([]any)
	require.Len(t, got, 2)
	require.Equal(t, ids[4], got[0].(map[string]any)["id"])
	require.Equal(t, ids[0], got[1].(map[string]any)["id"])
	require.Equal(t, "", page["next"])

	for _, bad := range []string{"cursor=xyz", "cursor=d.0000000000002", "limit=0", "limit=1001", "state=flying",
		"from=yesterday", "from=2026-11-25T13:00:00Z&to=2026-11-25T12:00:00Z", "colour=blue", "key=k&dest=x"} {
		st, out := f.call("GET", "messages?"+bad, "")
		require.Equal(t, http.StatusBadRequest, st, "%s: %v", bad, out)
		require.Equal(t, "invalid", out["code"], bad)
	}
}

func TestScheduleRawBody(t *testing.T) {
	f := newFixture(t, admin.Options{})
	req, err := http.NewRequest("POST", f.srv.URL+"/api/v1/messages?dest=test://ok/raw&in=1h&key=k1&header=X-Trace:+abc", bytes.NewReader([]byte{0, 1, 2, 0xff}))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := f.srv.Client().Do(req)
	require.NoError(t, err)
	var out map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%v", out)

	id, err := engine.ParseID(out["id"])
	require.NoError(t, err)
	in, err := f.eng.Get(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2, 0xff}, in.Message.Payload)
	require.Equal(t, "k1", in.Message.Key)
	require.Equal(t, t0.Add(time.Hour), in.Message.Due.UTC())
	require.Equal(t, []engine.Header{{Key: "X-Trace", Value: "abc"}, {Key: "Content-Type", Value: "application/octet-stream"}}, in.Message.Headers)
}

func TestRescheduleAndRunNow(t *testing.T) {
	f := newFixture(t, admin.Options{})
	id := f.schedule(`{"dest":"test://ok/x","in":"1h"}`)

	st, out := f.call("POST", "messages/"+id+"/reschedule", `{"due":"2026-11-25T15:00:00Z"}`)
	require.Equal(t, http.StatusOK, st, "%v", out)
	require.Equal(t, "2026-11-25T15:00:00Z", out["due"])
	_, m := f.call("GET", "messages/"+id, "")
	require.Equal(t, "2026-11-25T15:00:00Z", m["due"])

	for _, bad := range []string{`{}`, `{"due":"soon"}`, `{"in":"-1s"}`, `{"in":"1s","due":"2026-11-25T15:00:00Z"}`, `{"at":"x"}`} {
		st, out := f.call("POST", "messages/"+id+"/reschedule", bad)
		require.Equal(t, http.StatusBadRequest, st, "%s: %v", bad, out)
	}
	_, m = f.call("GET", "messages/"+id, "")
	require.Equal(t, "2026-11-25T15:00:00Z", m["due"], "a refused reschedule changed nothing")

	st, out = f.call("POST", "messages/"+id+"/reschedule", `{"in":"0s"}`)
	require.Equal(t, http.StatusOK, st, "%v", out)
	require.Equal(t, "2026-11-25T12:00:00Z", out["due"])
	f.clock.Advance(10 * time.Millisecond)
	require.Equal(t, []string{id}, f.delivered(1), "run now delivers it")
	// The sink saw it; its Delivered outcome may not be committed yet (then
	// a reschedule is refused as in flight).
	require.NoError(t, f.eng.WaitIdle(context.Background()))

	st, out = f.call("POST", "messages/0000000000000/reschedule", `{"in":"1s"}`)
	require.Equal(t, http.StatusBadRequest, st, "%v", out)
	st, _ = f.call("POST", "messages/"+id+"/reschedule", `{"in":"1s"}`)
	require.Equal(t, http.StatusNotFound, st, "delivered: gone")
}

func TestDeadLetters(t *testing.T) {
	f := newFixture(t, admin.Options{})
	st, out := f.call("POST", "messages", `{"messages":[{"dest":"test://reject/1"},{"dest":"test://reject/2"},{"dest":"test://reject/3"}]}`)
	require.Equal(t, http.StatusCreated, st, "%v", out)
	f.clock.Advance(10 * time.Millisecond)
	f.delivered(3)
	var dead []any
	require.Eventually(t, func() bool {
		_, page := f.call("GET", "dead", "")
		dead = page["messages"].([]any)
		return len(dead) == 3
	}, 10*time.Second, 5*time.Millisecond)
	d0 := dead[0].(map[string]any)
	id0 := d0["id"].(string)
	require.Equal(t, "dead", d0["state"])
	require.Contains(t, d0["reason"], "receiver said no")
	require.NotEmpty(t, d0["dead_at"])

	_, m := f.call("GET", "messages/"+id0, "")
	require.Equal(t, "dead", m["state"])
	require.EqualValues(t, 1, m["attempts"])
	require.Equal(t, d0["dead_at"], m["dead_at"])
	require.Contains(t, m["reason"], "receiver said no")

	// The same list through ?state=dead, with a destination filter and paging.
	_, page := f.call("GET", "messages?state=dead&dest=test://reject/2", "")
	require.Len(t, page["messages"], 1)
	_, page = f.call("GET", "dead?limit=2", "")
	require.Len(t, page["messages"], 2)
	_, page2 := f.call("GET", "dead?limit=2&cursor="+page["next"].(string), "")
	require.Len(t, page2["messages"], 1)
	require.Equal(t, "", page2["next"])

	// Replay one an hour from now: pending again, attempts reset.
	st, out = f.call("POST", "dead/replay", `{"ids":["`+id0+`"],"in":"1h"}`)
	require.Equal(t, http.StatusOK, st, "%v", out)
	require.EqualValues(t, 1, out["replayed"])
	_, m = f.call("GET", "messages/"+id0, "")
	require.Equal(t, "pending", m["state"])
	require.Equal(t, "2026-11-25T13:00:00.01Z", m["due"])

	// Replay is all or nothing.
	id1 := dead[1].(map[string]any)["id"].(string)
	st, out = f.call("POST", "dead/replay", `{"ids":["`+id1+`","`+id0+`"]}`)
	require.Equal(t, http.StatusNotFound, st, "%v", out)
	_, m = f.call("GET", "messages/"+id1, "")
	require.Equal(t, "dead", m["state"])

	for _, bad := range []string{`{}`, `{"ids":[]}`, `{"ids":["nope"]}`, `{"all":true}`} {
		st, out := f.call("POST", "dead/replay", bad)
		require.Equal(t, http.StatusBadRequest, st, "%s: %v", bad, out)
	}
	for _, bad := range []string{`{}`, `{"ids":[]}`, `{"ids":["` + id1 + `"],"all":true}`, `{"ids":["` + id1 + `"],"in":"1s"}`} {
		st, out := f.call("POST", "dead/purge", bad)
		require.Equal(t, http.StatusBadRequest, st, "%s: %v", bad, out)
	}
	_, page = f.call("GET", "dead", "")
	require.Len(t, page["messages"], 2, "refused purges deleted nothing")

	st, out = f.call("POST", "dead/purge", `{"ids":["`+id1+`"]}`)
	require.Equal(t, http.StatusOK, st, "%v", out)
	require.EqualValues(t, 1, out["purged"])
	st, out = f.call("POST", "dead/purge", `{"all":true}`)
	require.Equal(t, http.StatusOK, st, "%v", out)
	require.EqualValues(t, 1, out["purged"])
	_, page = f.call("GET", "dead", "")
	require.Empty(t, page["messages"])
}

func TestSummaryAndStats(t *testing.T) {
	f := newFixture(t, admin.Options{RefreshInterval: time.Hour})
	st, out := f.call("POST", "messages", `{"messages":[
		{"dest":"test://ok/a","in":"30s"},
		{"dest":"test://ok/a","in":"5m30s"},
		{"dest":"test://ok/b","in":"3h"},
		{"dest":"test://ok/b","in":"48h"}]}`)
	require.Equal(t, http.StatusCreated, st, "%v", out)

	// Before the first pass: no counts yet, never a scan in the request.
	_, s := f.call("GET", "summary", "")
	require.EqualValues(t, 3600, s["refresh_seconds"])

	f.h.Refresh(context.Background())
	_, s = f.call("GET", "summary", "")
	require.Equal(t, "2026-11-25T12:00:00Z", s["as_of"])
	require.EqualValues(t, 4, s["pending"])
	require.EqualValues(t, 1, s["later"])
	require.EqualValues(t, 0, s["dead"])
	require.Equal(t, []any{map[string]any{"dest": "test://ok/a", "count": 2.0}, map[string]any{"dest": "test://ok/b", "count": 2.0}}, s["by_dest"])
	hour := s["next_hour"].(map[string]any)
	require.EqualValues(t, 60, hour["bucket_seconds"])
	counts := hour["counts"].([]any)
	require.Len(t, counts, 60)
	require.EqualValues(t, 1, counts[0])
	require.EqualValues(t, 1, counts[5])
	day := s["next_day"].(map[string]any)["counts"].([]any)
	require.Len(t, day, 24)
	require.EqualValues(t, 2, day[0])
	require.EqualValues(t, 1, day[3])

	st, stats := f.call("GET", "stats", "")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "memory", stats["mode"])
	require.EqualValues(t, 2, stats["shards"])
	require.EqualValues(t, 4, stats["counters"].(map[string]any)["scheduled"])
	for _, k := range []string{"evicted", "push_backs", "push_back_wait_seconds"} {
		require.EqualValues(t, 0, stats["counters"].(map[string]any)[k], k)
	}
	require.NotNil(t, stats["rates"], "Refresh took a sample")
	require.EqualValues(t, 4, stats["store"].(map[string]any)["pending"], "the memory store reports too")
	require.Equal(t, true, stats["recovery"].(map[string]any)["ready"])
}

func TestInfoHealthReady(t *testing.T) {
	f := newFixture(t, admin.Options{MaxBatch: 7})
	st, info := f.call("GET", "info", "")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, false, info["read_only"])
	require.EqualValues(t, 7, info["max_batch"])
	st, out := f.call("GET", "health", "")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "ok", out["status"])
	st, out = f.call("GET", "ready", "")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, true, out["ready"])
	st, out = f.call("GET", "nothing/here", "")
	require.Equal(t, http.StatusNotFound, st)
	require.Contains(t, out["allowed"], "GET api/v1/summary")
}

func TestKeySearch(t *testing.T) {
	f := newFixture(t, admin.Options{})
	id := f.schedule(`{"dest":"test://ok/a","in":"1m","key":"order-9"}`)
	st, out := f.call("GET", "messages?key=order-9", "")
	require.Equal(t, http.StatusOK, st)
	require.Len(t, out["messages"], 1)
	require.Equal(t, id, out["messages"].([]any)[0].(map[string]any)["id"])
	_, out = f.call("GET", "messages?key=order-10", "")
	require.Empty(t, out["messages"])
}

// TestScheduleDuplicateKey: a key already scheduled answers with the
// existing ID, marked duplicate, and schedules nothing new.
func TestScheduleDuplicateKey(t *testing.T) {
	f := newFixture(t, admin.Options{})
	id := f.schedule(`{"dest":"test://ok/a","in":"1m","key":"order-9"}`)
	st, out := f.call("POST", "messages", `{"dest":"test://ok/a","in":"2m","key":"order-9"}`)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, id, out["id"])
	require.Equal(t, true, out["duplicate"])
	st, out = f.call("POST", "messages", `{"messages":[{"dest":"test://ok/a","key":"order-9"},{"dest":"test://ok/a","key":"order-10"}]}`)
	require.Equal(t, http.StatusCreated, st)
	require.Equal(t, id, out["ids"].([]any)[0])
	require.Equal(t, []any{float64(0)}, out["duplicates"])
	require.EqualValues(t, 2, f.eng.Stats().Scheduled)
}

// TestPastDueMeansNow: as in the Go API, a due time in the past, before
// 1970 too, schedules the message for now.
func TestPastDueMeansNow(t *testing.T) {
	f := newFixture(t, admin.Options{})
	for _, due := range []string{"2001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:01Z"} {
		st, out := f.call("POST", "messages", `{"dest":"test://ok/a","due":"`+due+`"}`)
		require.Equal(t, http.StatusCreated, st, "%s: %v", due, out)
	}
	require.EqualValues(t, 3, f.eng.Stats().Scheduled)
}

// TestRefusedStoresNothing: each bad request gets its 4xx, a JSON body that
// says what is wrong (and, where it can, what is allowed), and leaves the
// engine untouched.
func TestRefusedStoresNothing(t *testing.T) {
	big := base64.StdEncoding.EncodeToString(make([]byte, 2000))
	for _, tc := range []struct {
		name, query, ctype, body string
		status                   int
		code, says               string
		allowed                  string // one entry of "allowed", if any
	}{
		{"malformed JSON", "", "", `{"dest":`, 400, "invalid_json", "malformed JSON", ""},
		{"syntax error", "", "", `{"dest" "x"}`, 400, "invalid_json", "malformed JSON at byte", ""},
		{"trailing data", "", "", `{"dest":"test://ok/a"} {}`, 400, "invalid_json", "trailing data", ""},
		{"unknown field", "", "", `{"dest":"test://ok/a","when":"now"}`, 400, "invalid_json", `unknown field "when"`, "due"},
		{"wrong type", "", "", `{"dest":7}`, 400, "invalid_json", "dest: JSON number where string is expected", ""},
		{"empty body", "", "", ``, 400, "invalid_json", "empty body", ""},
		{"not JSON", "", "text/plain", `hello`, 415, "unsupported_media_type", "a JSON body is expected", "application/json"},
		{"oversize body", "", "", `{"dest":"test://ok/a","payload":"` + big + `"}`, 413, "too_large", "larger than 2048 bytes", ""},
		{"batch too large", "", "", `{"messages":[{"dest":"test://ok/a"},{"dest":"test://ok/a"},{"dest":"test://ok/a"},{"dest":"test://ok/a"}]}`, 413, "too_large", "more than 3", ""},
		{"empty batch", "", "", `{"messages":[]}`, 400, "invalid", "batch is empty", ""},
		{"message and batch", "", "", `{"dest":"test://ok/a","messages":[{"dest":"test://ok/a"}]}`, 400, "invalid", "both a message and a messages batch", ""},
		{"bad due", "", "", `{"dest":"test://ok/a","due":"tomorrow"}`, 400, "invalid", `due: "tomorrow" is not an RFC 3339 time`, "an RFC 3339 time such as 2026-11-25T14:05:00Z or 2026-11-25T15:05:00.250+01:00"},
		{"due out of range", "", "", `{"dest":"test://ok/a","due":"3000-01-01T00:00:00Z"}`, 400, "invalid", "out of range", "a time from 1970-01-01T00:00:00Z to 2262-01-01T00:00:00Z"},
		{"due past the store's last time", "", "", `{"dest":"test://ok/a","due":"2262-03-01T00:00:00Z"}`, 400, "invalid", "out of range", "a time from 1970-01-01T00:00:00Z to 2262-01-01T00:00:00Z"},
		{"bad in", "", "", `{"dest":"test://ok/a","in":"soon"}`, 400, "invalid", `in: "soon" is not a duration`, "a Go duration such as 30s, 15m or 2h45m"},
		{"negative in", "", "", `{"dest":"test://ok/a","in":"-5s"}`, 400, "invalid", "negative", ""},
		{"due and in", "", "", `{"dest":"test://ok/a","in":"5s","due":"2026-11-25T12:00:00Z"}`, 400, "invalid", "both due and in", ""},
		{"bad expires", "", "", `{"dest":"test://ok/a","expires":"never"}`, 400, "invalid", "expires", ""},
		{"bad base64", "", "", `{"dest":"test://ok/a","payload":"!!!"}`, 400, "invalid", "payload: not valid base64", ""},
		{"no dest", "", "", `{"in":"5s"}`, 400, "invalid", "message has no Dest", ""},
		{"unknown scheme", "", "", `{"dest":"carrier-pigeon://loft/7"}`, 400, "invalid", `no transport serves "carrier-pigeon"`, "test://"},
		{"refused by the transport", "", "", `{"dest":"test://forbidden/x"}`, 400, "invalid", "the target is forbidden", "test://ok/..."},
		{"local queue", "", "", `{"dest":"local://emails"}`, 400, "invalid", "unknown local queue", ""},
		{"bad header", "", "", `{"dest":"test://ok/a","headers":[{"key":"Bad Name","value":"x"}]}`, 400, "invalid", "header", ""},
		{"payload over MaxPayload", "", "", `{"dest":"test://ok/a","payload":"` + base64.StdEncoding.EncodeToString(make([]byte, 1025)) + `"}`, 400, "invalid", "more than MaxPayload 1024", ""},
		{"one bad message in a batch", "", "", `{"messages":[{"dest":"test://ok/a"},{"dest":"nope://x"}]}`, 400, "invalid", "message 1", ""},
		{"one bad time in a batch", "", "", `{"messages":[{"dest":"test://ok/a"},{"dest":"test://ok/a","due":"x"}]}`, 400, "invalid", "messages[1].due", ""},
		{"query in JSON mode", "?in=5s", "", `{"dest":"test://ok/a"}`, 400, "invalid", "only for a raw-body schedule", "dest"},
		{"raw: unknown parameter", "?dest=test://ok/a&when=now", "text/plain", `x`, 400, "invalid", "unknown query parameter", "header"},
		{"raw: header without colon", "?dest=test://ok/a&header=X-A", "text/plain", `x`, 400, "invalid", "has no colon", ""},
		{"raw: bad time", "?dest=test://ok/a&due=later", "text/plain", `x`, 400, "invalid", "not an RFC 3339 time", ""},
		{"raw: unknown destination", "?dest=nope://x", "text/plain", `x`, 400, "invalid", "no transport serves", ""},
		{"raw: oversize", "?dest=test://ok/a", "text/plain", strings.Repeat("x", 3000), 413, "too_large", "larger than 2048 bytes", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, admin.Options{MaxBody: 2048, MaxBatch: 3})
			req, err := http.NewRequest("POST", f.srv.URL+"/api/v1/messages"+tc.query, strings.NewReader(tc.body))
			require.NoError(t, err)
			ct := tc.ctype
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
			resp, err := f.srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			var out struct {
				Error   string   `json:"error"`
				Code    string   `json:"code"`
				Allowed []string `json:"allowed"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
			require.Equal(t, tc.status, resp.StatusCode, "%+v", out)
			require.Equal(t, tc.code, out.Code, "%+v", out)
			require.Contains(t, out.Error, tc.says)
			if tc.allowed != "" {
				require.Contains(t, out.Allowed, tc.allowed)
			}
			f.nothingStored()
		})
	}
}

func TestBadIDs(t *testing.T) {
	f := newFixture(t, admin.Options{})
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "messages/short", ""},
		{"DELETE", "messages/zzzzzzzzzzzzz", ""},
		{"POST", "messages/%20/reschedule", `{"in":"1s"}`},
	} {
		st, out := f.call(tc.method, tc.path, tc.body)
		require.Equal(t, http.StatusBadRequest, st, "%s %s: %v", tc.method, tc.path, out)
		require.Equal(t, "id", out["field"])
	}
	st, _ := f.call("GET", "messages/0000000000002", "")
	require.Equal(t, http.StatusNotFound, st)
}

// readOnlyMiddleware marks every request read-only, as an embedding
// service's auth middleware does for users who may only look.
func readOnlyMiddleware(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(admin.WithReadOnly(r.Context())))
	})
}

func TestReadOnly(t *testing.T) {
	writes := []struct{ method, path, body string }{
		{"POST", "messages", `{"dest":"test://ok/a","in":"1m"}`},
		{"POST", "messages?dest=test://ok/a", `raw`},
		{"DELETE", "messages/0000000000002", ""},
		{"POST", "messages/0000000000002/reschedule", `{"in":"1s"}`},
		{"POST", "dead/replay", `{"ids":["0000000000002"]}`},
		{"POST", "dead/purge", `{"all":true}`},
	}
	check := func(t *testing.T, f *fixture) {
		_, info := f.call("GET", "info", "")
		require.Equal(t, true, info["read_only"])
		for _, w := range writes {
			st, out := f.call(w.method, w.path, w.body)
			require.Equal(t, http.StatusForbidden, st, "%s %s", w.method, w.path)
			require.Equal(t, "forbidden", out["code"])
			require.Contains(t, out["error"], "read-only")
		}
		st, _ := f.call("GET", "messages", "")
		require.Equal(t, http.StatusOK, st, "reads still work")
		f.nothingStored()
	}
	t.Run("option", func(t *testing.T) { check(t, newFixture(t, admin.Options{ReadOnly: true})) })
	t.Run("per request", func(t *testing.T) {
		f := newFixture(t, admin.Options{})
		f.srv.Config.Handler = readOnlyMiddleware(f.h)
		check(t, f)
	})
}

func TestCrossOriginWriteRefused(t *testing.T) {
	f := newFixture(t, admin.Options{})
	st, out := f.call("POST", "messages", `{"dest":"test://ok/a","in":"1m"}`, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, http.StatusForbidden, st, "%v", out)
	require.Contains(t, out["error"], "cross-origin")
	f.nothingStored()
	st, _ = f.call("POST", "messages", `{"dest":"test://ok/a","in":"1m"}`, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusCreated, st)
}

func TestMountedUnderPrefix(t *testing.T) {
	f := newFixture(t, admin.Options{})
	mux := http.NewServeMux()
	mux.Handle("/ops/hourglass/", http.StripPrefix("/ops/hourglass", f.h))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(path string) (*http.Response, string) {
		resp, err := srv.Client().Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}
	resp, body := get("/ops/hourglass/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `<script src="app.js" defer></script>`, "relative asset URLs")
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	resp, body = get("/ops/hourglass/app.js")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "javascript")
	require.Contains(t, body, "fetch('api/v1/'", "the API is addressed relative to the page")
	resp, _ = get("/ops/hourglass/style.css")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, body = get("/ops/hourglass/api/v1/health")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"status":"ok"}`, body)
}

// TestConcurrentCalls runs calls of every kind at once under the race
// detector.
func TestConcurrentCalls(t *testing.T) {
	f := newFixture(t, admin.Options{RefreshInterval: time.Millisecond})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				id := f.schedule(fmt.Sprintf(`{"dest":"test://ok/%d","in":"%dm"}`, i, j+1))
				f.call("GET", "summary", "")
				f.call("GET", "stats", "")
				f.call("GET", "messages?limit=5", "")
				if j%2 == 0 {
					st, _ := f.call("DELETE", "messages/"+id, "")
					require.Equal(t, http.StatusOK, st)
				}
			}
		})
	}
	wg.Wait()
	f.h.Refresh(context.Background())
	_, s := f.call("GET", "summary", "")
	require.EqualValues(t, 40, s["pending"])
}
