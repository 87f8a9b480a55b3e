package main

// The offline commands (inspect, check, list, get, dump, dlq) work on a
// store directory while no engine runs on it. They open the store with
// wal.Open, through the store contract only, and never start an engine, so
// nothing fires while they look. A running engine holds the store's lock:
// Open (and wal.Check) refuse its directory with wal.ErrLocked, and the
// commands say so.
//
// Opening is not read-only: wal.Open recovers the store (after a crash it
// replays and flushes Pebble's log) and Close writes a new clean-close
// record, as a start and a stop of serve would. No message changes unless
// the command says it changes it (dlq replay, dlq purge).

import (
	"container/heap"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wal"
)

// storeArgs are the flags every offline command shares.
type storeArgs struct {
	dir       string
	logFormat string
	logLevel  string
}

func (a *storeArgs) bind(fs *flag.FlagSet) {
	fs.StringVar(&a.dir, "dir", "", "the store `directory` (default <data dir>/store, serve's default)")
	fs.StringVar(&a.logFormat, "log-format", "text", "log format of the store's messages (standard error): text or json")
	fs.StringVar(&a.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
}

func (a *storeArgs) validate() error {
	switch {
	case !slices.Contains([]string{"text", "json"}, a.logFormat):
		return usageError{fmt.Errorf("-log-format %q: want text or json", a.logFormat)}
	case !slices.Contains([]string{"debug", "info", "warn", "error"}, a.logLevel):
		return usageError{fmt.Errorf("-log-level %q: want debug, info, warn or error", a.logLevel)}
	}
	return nil
}

// storeDir returns -dir, or serve's default store directory.
func (a *storeArgs) storeDir(env *env) (string, error) {
	if a.dir != "" {
		return a.dir, nil
	}
	d, err := dataDir(env.getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "store"), nil
}

func (a *storeArgs) logger(env *env) *slog.Logger {
	return newLogger(Config{LogFormat: a.logFormat, LogLevel: a.logLevel}, env.stderr)
}

// offlineHelp is the paragraph every offline command's -h ends with.
const offlineHelp = `The store must not be in use: stop the engine first (hourglass serve, or the
service that embeds it). A running engine holds the store's lock, and the
command refuses its directory. Opening recovers the store as a start of serve
would, and closing writes a clean-close record; no message changes unless the
command says so. Flags go before arguments.
`

// payloadHelp says how payloads are printed, for -h.
const payloadHelp = `Each message is one JSON object on a line: id, state ("pending" or "dead"),
shard, dest, due (RFC 3339, UTC), expires, key, headers (as stored, including
the engine's own Hourglass- headers), attempts, for dead letters reason and
dead_at, payload_size, and the payload twice: "payload" is standard base64 of
the whole payload; "payload_text" is a preview of it as text (at most the
first 1024 bytes, cut at a character boundary), present only when the payload
is valid UTF-8.
`

// parseFlags parses args into fs, mapping -h to flag.ErrHelp and other
// mistakes to a usageError, and checks a's flags when a is not nil.
func parseFlags(fs *flag.FlagSet, args []string, env *env, a *storeArgs) error {
	fs.SetOutput(env.stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if a != nil {
		return a.validate()
	}
	return nil
}

// setUsage gives fs a usage text: the synopsis and description, then the
// flags.
func setUsage(fs *flag.FlagSet, text string) {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), text)
		fmt.Fprintf(fs.Output(), "\nflags:\n")
		fs.PrintDefaults()
	}
}

// errInUse is the refusal of a store that a running engine holds.
func errInUse(dir string, err error) error {
	return fmt.Errorf("%s is in use by a running engine (hourglass serve, or a service that embeds the engine); "+
		"the offline commands work on a stopped engine's store: stop it first, or use the running server's API: %w", dir, err)
}

// openStore opens the store in a's directory. It refuses a directory that
// does not exist or is empty, where wal.Open would create a new store.
func openStore(ctx context.Context, env *env, a *storeArgs) (*wal.Store, string, error) {
	dir, err := a.storeDir(env)
	if err != nil {
		return nil, "", err
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, "", fmt.Errorf("no store at %s: the directory does not exist (-dir names the store directory)", dir)
	case err != nil:
		return nil, "", err
	case len(entries) == 0:
		return nil, "", fmt.Errorf("no store at %s: the directory is empty (-dir names the store directory)", dir)
	}
	s, err := wal.Open(ctx, wal.Options{Dir: dir, Logger: a.logger(env), Now: env.clock})
	if errors.Is(err, wal.ErrLocked) {
		return nil, "", errInUse(dir, err)
	}
	return s, dir, err
}

// withStore opens the store, runs f on it and closes it.
func withStore(ctx context.Context, env *env, a *storeArgs, f func(s *wal.Store, dir string) error) error {
	s, dir, err := openStore(ctx, env, a)
	if err != nil {
		return err
	}
	err = f(s, dir)
	if cerr := s.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close the store: %w", cerr))
	}
	return err
}

// The JSON lines of list, get, dump and dlq list.

type headerJSON struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type messageJSON struct {
	ID          string       `json:"id"`
	State       string       `json:"state"`
	Shard       int          `json:"shard"`
	Dest        string       `json:"dest"`
	Due         string       `json:"due"`
	Expires     string       `json:"expires,omitempty"`
	Key         string       `json:"key,omitempty"`
	Headers     []headerJSON `json:"headers"`
	Attempts    uint32       `json:"attempts"`
	Reason      string       `json:"reason,omitempty"`
	DeadAt      string       `json:"dead_at,omitempty"`
	PayloadSize int          `json:"payload_size"`
	Payload     string       `json:"payload"`
	PayloadText *string      `json:"payload_text,omitempty"`
}

// previewLen bounds payload_text.
const previewLen = 1024

func timeText(ns int64) string {
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

func messageOut(m *store.Message, state string) messageJSON {
	out := messageJSON{
		ID: m.ID.String(), State: state, Shard: m.Shard, Dest: m.Dest, Due: timeText(m.Due), Key: m.Key,
		Headers: make([]headerJSON, len(m.Headers)), Attempts: m.Attempt,
		PayloadSize: len(m.Payload), Payload: base64.StdEncoding.EncodeToString(m.Payload),
	}
	if m.Expires != 0 {
		out.Expires = timeText(m.Expires)
	}
	for i, h := range m.Headers {
		out.Headers[i] = headerJSON{Key: h.Key, Value: h.Value}
	}
	if utf8.Valid(m.Payload) {
		p := m.Payload
		if len(p) > previewLen {
			cut := previewLen
			for cut > 0 && !utf8.RuneStart(p[cut]) {
				cut--
			}
			p = p[:cut]
		}
		s := string(p)
		out.PayloadText = &s
	}
	return out
}

func deadOut(d *store.DeadLetter) messageJSON {
	out := messageOut(&d.Message, "dead")
	out.Reason, out.DeadAt = d.Reason, timeText(d.DeadAt)
	return out
}

// jsonLines writes one JSON value a line.
type jsonLines struct{ enc *json.Encoder }

func newJSONLines(w io.Writer) jsonLines {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return jsonLines{enc}
}

func (j jsonLines) write(v any) error { return j.enc.Encode(v) }

// parseWhen reads a time flag: RFC 3339, or a Go duration from now ("-1h",
// "30m").
func parseWhen(flagName, s string, now time.Time) (int64, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		if t.Before(store.MinTime) || t.After(store.MaxTime) {
			return 0, usageError{fmt.Errorf("-%s %s: outside %s to %s", flagName, s, store.MinTime.Format(time.RFC3339), store.MaxTime.Format(time.RFC3339))}
		}
		return t.UnixNano(), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usageError{fmt.Errorf("-%s %q: want an RFC 3339 time (2026-11-25T14:05:00Z) or a duration from now (-1h, 30m)", flagName, s)}
	}
	return min(max(now.Add(d).UnixNano(), 0), store.MaxDue), nil
}

// timeRange is the -from and -to flags of list and dlq list.
type timeRange struct{ from, to string }

func (r *timeRange) bind(fs *flag.FlagSet, what string) {
	fs.StringVar(&r.from, "from", "", "only "+what+" due at or after this `time` (RFC 3339, or a duration from now: -1h)")
	fs.StringVar(&r.to, "to", "", "only "+what+" due before this `time` (RFC 3339, or a duration from now: 2h)")
}

// bounds returns [from, to) in unix nanoseconds.
func (r *timeRange) bounds(now time.Time) (from, to int64, err error) {
	from, to = 0, store.MaxDue+1
	if r.from != "" {
		if from, err = parseWhen("from", r.from, now); err != nil {
			return 0, 0, err
		}
	}
	if r.to != "" {
		if to, err = parseWhen("to", r.to, now); err != nil {
			return 0, 0, err
		}
	}
	if to < from {
		return 0, 0, usageError{errors.New("-to is before -from")}
	}
	return from, to, nil
}

// eachPending calls f for every pending message with due in [from, to), in
// (due, ID) order across all shards, until f returns false or an error.
// Memory is one page of messages per shard.
func eachPending(ctx context.Context, st store.Store, from, to int64, f func(m *store.Message) (bool, error)) error {
	h := &cursorHeap{}
	for shard := range st.Shards() {
		c := &shardCursor{shard: shard}
		if err := c.fill(ctx, st, from, to); err != nil {
			return err
		}
		if c.more() {
			*h = append(*h, c)
		}
	}
	heap.Init(h)
	for h.Len() > 0 {
		c := (*h)[0]
		ok, err := f(&c.buf[c.i])
		if err != nil || !ok {
			return err
		}
		c.i++
		if c.i == len(c.buf) {
			if err := c.fill(ctx, st, from, to); err != nil {
				return err
			}
		}
		if c.more() {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	return nil
}

// pageSize is the messages each Scan of the offline commands returns.
const pageSize = 1024

// shardCursor pages through one shard's pending messages.
type shardCursor struct {
	shard int
	buf   []store.Message
	i     int
	after store.Position
	done  bool
}

func (c *shardCursor) more() bool { return c.i < len(c.buf) }

func (c *shardCursor) fill(ctx context.Context, st store.Store, from, to int64) error {
	c.buf, c.i = nil, 0
	if c.done {
		return nil
	}
	msgs, page, err := st.Scan(ctx, store.ScanQuery{Shard: c.shard, From: from, To: to, After: c.after, Limit: pageSize})
	if err != nil {
		return err
	}
	c.buf, c.after, c.done = msgs, page.Next, page.Done
	return nil
}

type cursorHeap []*shardCursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	return store.PositionOf(&h[i].buf[h[i].i]).Less(store.PositionOf(&h[j].buf[h[j].i]))
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*shardCursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// eachDead calls f for every dead letter, in ID order, until f returns
// false or an error.
func eachDead(ctx context.Context, st store.Store, f func(d *store.DeadLetter) (bool, error)) error {
	var after store.ID
	for {
		page, next, err := st.ListDead(ctx, store.DeadQuery{After: after, Limit: pageSize})
		if err != nil {
			return err
		}
		for i := range page {
			if ok, err := f(&page[i]); err != nil || !ok {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		after = next
	}
}

// limitReached reports whether n results fill -limit (0: no limit).
func limitReached(limit, n int) bool { return limit > 0 && n >= limit }

// plural returns "1 thing" or "n things".
func plural(n int64, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %ss", n, one)
}
