package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wal"
)

// t0 is "now" for the offline commands under test.
var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// fixture is a closed store with known contents.
type fixture struct {
	dir string
	// IDs by name: overdue, soon, later, nats, far, long (pending);
	// deadEmail, deadHook (dead letters).
	ids map[string]store.ID
}

// longText is a UTF-8 payload longer than the preview, of 2-byte runes,
// placed so the preview's 1024-byte cut falls inside a rune.
var longText = "x" + strings.Repeat("é", 800)

// newFixture writes a 2-shard store through the store contract, the way an
// engine would, and closes it cleanly.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	ctx := context.Background()
	s, err := wal.Open(ctx, wal.Options{Dir: dir, Shards: 2, Now: func() time.Time { return t0 }, Logger: quietLog()})
	require.NoError(t, err)
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	msgs := []store.Message{
		{Shard: 0, Due: at(-time.Minute), Dest: "local://emails", Key: "k-overdue", Payload: []byte("hello")},
		{Shard: 1, Due: at(30 * time.Second), Dest: "https://hooks.example.com/orders", Headers: []store.Header{{Key: "Content-Type", Value: "application/json"}}, Payload: []byte(`{"order":7}`)},
		{Shard: 0, Due: at(2 * time.Hour), Dest: "https://hooks.example.com/orders", Payload: []byte{0xff, 0x00, 0x01}},
		{Shard: 1, Due: at(3 * 24 * time.Hour), Expires: at(4 * 24 * time.Hour), Dest: "nats://billing.invoices", Payload: []byte("inv-1")},
		{Shard: 0, Due: at(60 * 24 * time.Hour), Dest: "local://emails", Payload: []byte("far")},
		{Shard: 1, Due: at(10 * 24 * time.Hour), Dest: "local://reports", Payload: []byte(longText)},
		{Shard: 0, Due: at(-2 * time.Hour), Dest: "local://emails", Key: "k-dead", Payload: []byte("boom")},
		{Shard: 1, Due: at(-time.Hour), Dest: "https://hooks.example.com/gone", Payload: []byte("{}")},
	}
	res, err := s.Append(ctx, msgs)
	require.NoError(t, err)
	names := []string{"overdue", "soon", "later", "nats", "far", "long", "deadEmail", "deadHook"}
	f := &fixture{dir: dir, ids: map[string]store.ID{}}
	for i, r := range res {
		f.ids[names[i]] = r.ID
	}
	_, err = s.Resolve(ctx, store.Batch{Dead: []store.Dead{
		{ID: f.ids["deadEmail"], Reason: "gave up after 8 attempts: boom", Attempt: 8},
		{ID: f.ids["deadHook"], Reason: "410 Gone", Attempt: 1},
	}})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	return f
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// hg runs hourglass in-process with the clock at t0 and returns the exit
// status and outputs.
func hg(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	e, out, errs := testEnv(nil)
	e.now = func() time.Time { return t0 }
	status := run(e, args)
	return status, out.String(), errs.String()
}

// lines decodes JSON lines.
func lines(t *testing.T, out string) []messageJSON {
	t.Helper()
	var got []messageJSON
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m messageJSON
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "%s", sc.Text())
		got = append(got, m)
	}
	return got
}

func idsOf(ms []messageJSON) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func (f *fixture) idStrings(names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = f.ids[n].String()
	}
	return out
}

func TestOfflineHelpAndUsage(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
		out    string
	}{
		{[]string{"-h"}, 0, "inspect  print what a stopped engine's store holds"},
		{[]string{"inspect", "-h"}, 0, "usage: hourglass inspect [flags]"},
		{[]string{"check", "-h"}, 0, "exits 1 when there is any"},
		{[]string{"list", "-h"}, 0, `"payload_text" is a preview`},
		{[]string{"get", "-h"}, 0, "hourglass get [flags] -key KEY"},
		{[]string{"dump", "-h"}, 0, `"payload" is standard base64 of`},
		{[]string{"dlq", "-h"}, 0, "replay   move dead letters back to pending"},
		{[]string{"dlq", "list", "-h"}, 0, "A running engine holds the store's lock"},
		{[]string{"dlq", "replay", "-h"}, 0, "-at time"},
		{[]string{"dlq", "purge", "-h"}, 0, "frees their idempotency keys"},
		{[]string{"dlq"}, 2, "name a dlq command"},
		{[]string{"dlq", "bury"}, 2, `unknown dlq command "bury"`},
		{[]string{"dlq", "purge", "-dir", "x"}, 2, "give dead-letter IDs, or -all"},
		{[]string{"dlq", "purge", "-dir", "x", "-all", "0000000000002"}, 2, "give dead-letter IDs, or -all, not both"},
		{[]string{"dlq", "replay", "-dir", "x", "-dest", "local://", "0000000000002"}, 2, "-dest goes with -all"},
		{[]string{"dlq", "replay", "-dir", "x", "-at", "noon", "-all"}, 2, `-at "noon"`},
		{[]string{"dlq", "replay", "-dir", "x", "-in", "-1h", "-all"}, 2, `-in "-1h"`},
		{[]string{"get", "-dir", "x"}, 2, "give message IDs, or -key"},
		{[]string{"get", "-dir", "x", "nope"}, 2, `id "nope"`},
		{[]string{"list", "-dir", "x", "-from", "noon"}, 2, `-from "noon"`},
		{[]string{"list", "-dir", "x", "-from", "1h", "-to", "-1h"}, 2, "-to is before -from"},
		{[]string{"list", "-dir", "x", "-limit", "-1"}, 2, "-limit -1 is negative"},
		{[]string{"list", "-dir", "x", "-log-format", "xml"}, 2, `-log-format "xml"`},
		{[]string{"inspect", "extra"}, 2, `unexpected arguments ["extra"]`},
	} {
		status, out, errs := hg(t, tc.args...)
		require.Equal(t, tc.status, status, "%q: %s%s", tc.args, out, errs)
		require.Contains(t, out+errs, tc.out, "%q", tc.args)
	}
}

// TestOfflineNoStore: a missing or empty directory is refused, and no
// store is created in it.
func TestOfflineNoStore(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing")
	empty := t.TempDir()
	for _, cmd := range [][]string{{"inspect"}, {"list"}, {"dump"}, {"dlq", "list"}, {"get", "0000000000002"}} {
		status, _, errs := hg(t, withDir(cmd, missing)...)
		require.Equal(t, 1, status, "%q", cmd)
		require.Contains(t, errs, "no store at "+missing+": the directory does not exist")
		status, _, errs = hg(t, withDir(cmd, empty)...)
		require.Equal(t, 1, status, "%q", cmd)
		require.Contains(t, errs, "no store at "+empty+": the directory is empty")
	}
	_, err := os.Stat(missing)
	require.ErrorIs(t, err, os.ErrNotExist)
	entries, err := os.ReadDir(empty)
	require.NoError(t, err)
	require.Empty(t, entries)

	status, _, errs := hg(t, "check", "-dir", missing)
	require.Equal(t, 1, status)
	require.Contains(t, errs, "no such directory")
}

func TestOfflineInspect(t *testing.T) {
	f := newFixture(t)
	status, out, errs := hg(t, "inspect", "-dir", f.dir)
	require.Equal(t, 0, status, errs)
	for _, want := range []string{
		"store         " + f.dir + "\n",
		"format        hourglass wal format 2, pebble format ",
		"shards        2\n",
		"last close    clean (files and counts checked against the clean-close record)\n",
		"pending       6 (",
		"dead letters  2\n",
		"  0      3        1\n",
		"  1      3        1\n",
		"due, as of 2026-01-01T12:00:00Z\n",
		"  overdue       1\n",
		"  next minute   1\n",
		"  next hour     0\n",
		"  next day      1\n",
		"  next 7 days   1\n",
		"  next 30 days  1\n",
		"  later         1\n",
		"  local://emails                    2        1\n",
		"  https://hooks.example.com/orders  2        0\n",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, "WARNING")

	status, out, errs = hg(t, "inspect", "-dir", f.dir, "-json", "-top", "2")
	require.Equal(t, 0, status, errs)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Positive(t, rep.DiskBytes)
	rep.DiskBytes = 0
	require.Positive(t, rep.PebbleFormat)
	rep.PebbleFormat = 0
	require.Equal(t, 6, int(rep.BlockPending+rep.TimedPending))
	rep.BlockPending, rep.TimedPending, rep.Blocks = 0, 0, 0
	require.Equal(t, inspectReport{
		Dir: f.dir, FormatVersion: wal.FormatVersion, Shards: 2, CleanClose: true, Pending: 6, Dead: 2, ScannedPending: 6, ScannedDead: 2,
		PerShard: []shardSize{{0, 3, 1}, {1, 3, 1}},
		AsOf:     "2026-01-01T12:00:00Z",
		Due: []dueCount{{"overdue", 1}, {"next minute", 1}, {"next hour", 0}, {"next day", 1},
			{"next 7 days", 1}, {"next 30 days", 1}, {"later", 1}},
		Destinations: []destinationRow{
			{"local://emails", 2, 1},
			{"https://hooks.example.com/orders", 2, 0},
		},
		OtherDestinations: 3, OtherPending: 2, OtherDead: 1,
	}, rep)
}

func TestOfflineListGetDump(t *testing.T) {
	f := newFixture(t)
	status, out, errs := hg(t, "list", "-dir", f.dir)
	require.Equal(t, 0, status, errs)
	all := lines(t, out)
	require.Equal(t, f.idStrings("overdue", "soon", "later", "nats", "long", "far"), idsOf(all), "due order across shards")

	soon := all[1]
	require.Equal(t, messageJSON{
		ID: f.ids["soon"].String(), State: "pending", Shard: 1, Dest: "https://hooks.example.com/orders",
		Due: "2026-01-01T12:00:30Z", Headers: []headerJSON{{"Content-Type", "application/json"}},
		PayloadSize: 11, Payload: base64.StdEncoding.EncodeToString([]byte(`{"order":7}`)), PayloadText: ptr(`{"order":7}`),
	}, soon)
	require.Equal(t, "k-overdue", all[0].Key)
	require.Equal(t, "2026-01-05T12:00:00Z", all[3].Expires)
	binary := all[2]
	require.Nil(t, binary.PayloadText, "no text preview of a payload that is not UTF-8")
	require.Equal(t, "/wAB", binary.Payload)
	long := all[4]
	require.Equal(t, len(longText), long.PayloadSize)
	require.Equal(t, 1023, len(*long.PayloadText), "cut before the rune that crosses 1024 bytes")
	require.True(t, utf8.ValidString(*long.PayloadText))
	require.True(t, strings.HasPrefix(longText, *long.PayloadText))
	raw, err := base64.StdEncoding.DecodeString(long.Payload)
	require.NoError(t, err)
	require.Equal(t, longText, string(raw), "payload holds all of it")

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-dest", "https://"}, []string{"soon", "later"}},
		{[]string{"-dest", "local://emails"}, []string{"overdue", "far"}},
		{[]string{"-from", "0s", "-to", "24h"}, []string{"soon", "later"}},
		{[]string{"-from", "2026-01-01T14:00:00Z"}, []string{"later", "nats", "long", "far"}},
		{[]string{"-to", "2026-01-01T14:00:00Z"}, []string{"overdue", "soon"}},
		{[]string{"-limit", "2"}, []string{"overdue", "soon"}},
		{[]string{"-limit", "0", "-dest", "local://"}, []string{"overdue", "long", "far"}},
		{[]string{"-dest", "kafka://"}, []string{}},
	} {
		status, out, errs := hg(t, append([]string{"list", "-dir", f.dir}, tc.args...)...)
		require.Equal(t, 0, status, errs)
		require.Equal(t, f.idStrings(tc.want...), idsOf(lines(t, out)), "%q", tc.args)
	}

	status, out, errs = hg(t, "get", "-dir", f.dir, f.ids["soon"].String(), f.ids["deadEmail"].String())
	require.Equal(t, 0, status, errs)
	got := lines(t, out)
	require.Equal(t, soon, got[0])
	require.Equal(t, messageJSON{
		ID: f.ids["deadEmail"].String(), State: "dead", Shard: 0, Dest: "local://emails", Due: "2026-01-01T10:00:00Z",
		Key: "k-dead", Headers: []headerJSON{}, Attempts: 8, Reason: "gave up after 8 attempts: boom", DeadAt: "2026-01-01T12:00:00Z",
		PayloadSize: 4, Payload: "Ym9vbQ==", PayloadText: ptr("boom"),
	}, got[1])

	status, out, _ = hg(t, "get", "-dir", f.dir, "-key", "k-dead")
	require.Equal(t, 0, status)
	require.Equal(t, f.idStrings("deadEmail"), idsOf(lines(t, out)))
	status, _, errs = hg(t, "get", "-dir", f.dir, "-key", "k-none")
	require.Equal(t, 1, status)
	require.Contains(t, errs, `no message has the key "k-none"`)

	// A missing ID: the others are printed, the missing one is reported,
	// and the status is 1.
	missing := store.MakeID(1, 12345).String()
	status, out, errs = hg(t, "get", "-dir", f.dir, missing, f.ids["far"].String())
	require.Equal(t, 1, status)
	require.Equal(t, f.idStrings("far"), idsOf(lines(t, out)))
	require.Contains(t, errs, "not found (neither pending nor dead; delivered, cancelled, purged or never stored): "+missing)

	status, out, errs = hg(t, "dump", "-dir", f.dir)
	require.Equal(t, 0, status, errs)
	dump := lines(t, out)
	require.Equal(t, append(f.idStrings("overdue", "soon", "later", "nats", "long", "far"), sortedIDs(f.ids["deadEmail"], f.ids["deadHook"])...), idsOf(dump))
	for i, m := range dump {
		require.Equal(t, map[bool]string{true: "pending", false: "dead"}[i < 6], m.State)
	}
}

// withDir puts "-dir dir" after the command (and a dlq command's verb).
func withDir(cmd []string, dir string) []string {
	n := 1
	if cmd[0] == "dlq" {
		n = 2
	}
	return append(append(append([]string{}, cmd[:n]...), "-dir", dir), cmd[n:]...)
}

func ptr(s string) *string { return &s }

func sortedIDs(a, b store.ID) []string {
	if b < a {
		a, b = b, a
	}
	return []string{a.String(), b.String()}
}

// TestOfflineDLQ: list, replay (by ID, all or nothing; by prefix) and
// purge, and an engine started afterwards delivers what was replayed.
func TestOfflineDLQ(t *testing.T) {
	f := newFixture(t)
	status, out, errs := hg(t, "dlq", "list", "-dir", f.dir)
	require.Equal(t, 0, status, errs)
	require.Equal(t, sortedIDs(f.ids["deadEmail"], f.ids["deadHook"]), idsOf(lines(t, out)))
	status, out, _ = hg(t, "dlq", "list", "-dir", f.dir, "-dest", "https://")
	require.Equal(t, 0, status)
	require.Equal(t, f.idStrings("deadHook"), idsOf(lines(t, out)))
	status, out, _ = hg(t, "dlq", "list", "-dir", f.dir, "-limit", "1")
	require.Equal(t, 0, status)
	require.Len(t, lines(t, out), 1)

	// All or nothing: a pending ID beside a dead one changes neither.
	status, _, errs = hg(t, "dlq", "replay", "-dir", f.dir, f.ids["deadEmail"].String(), f.ids["soon"].String())
	require.Equal(t, 1, status)
	require.Contains(t, errs, f.ids["soon"].String())
	status, out, _ = hg(t, "dlq", "list", "-dir", f.dir)
	require.Equal(t, 0, status)
	require.Len(t, lines(t, out), 2)

	status, out, errs = hg(t, "dlq", "replay", "-dir", f.dir, f.ids["deadEmail"].String())
	require.Equal(t, 0, status, errs)
	require.Equal(t, "replayed 1 dead letter, due 2026-01-01T12:00:00Z\n", out)
	status, out, _ = hg(t, "get", "-dir", f.dir, f.ids["deadEmail"].String())
	require.Equal(t, 0, status)
	got := lines(t, out)[0]
	require.Equal(t, "pending", got.State)
	require.Equal(t, uint32(0), got.Attempts, "attempts reset")
	require.Equal(t, "2026-01-01T12:00:00Z", got.Due)
	require.Equal(t, "k-dead", got.Key, "the key came along")

	// The engine, started on the store, delivers the replayed message.
	delivered := make(chan engine.ID, 8)
	clk := engine.NewFakeClock(t0)
	eng, err := engine.Open(context.Background(), engine.Options{
		Dir: f.dir, Clock: clk, Logger: quietLog(),
		Queues: []engine.Queue{
			{Name: "emails", Handler: func(_ context.Context, d *engine.Delivery) error { delivered <- d.ID; return nil }},
			{Name: "reports", Handler: func(context.Context, *engine.Delivery) error { return nil }},
		},
	})
	require.NoError(t, err)
	require.NoError(t, eng.WaitIdle(context.Background()))
	require.NoError(t, eng.Close())
	close(delivered)
	var ids []engine.ID
	for id := range delivered {
		ids = append(ids, id)
	}
	require.ElementsMatch(t, []engine.ID{f.ids["overdue"], f.ids["deadEmail"]}, ids, "the overdue message and the replayed one")

	status, out, errs = hg(t, "dlq", "replay", "-dir", f.dir, "-all", "-dest", "https://", "-in", "1h")
	require.Equal(t, 0, status, errs)
	require.Equal(t, "replayed 1 dead letter, due 2026-01-01T13:00:00Z\n", out)
	status, out, _ = hg(t, "list", "-dir", f.dir, "-dest", "https://hooks.example.com/gone")
	require.Equal(t, 0, status)
	require.Equal(t, f.idStrings("deadHook"), idsOf(lines(t, out)))
	require.Equal(t, "2026-01-01T13:00:00Z", lines(t, out)[0].Due)

	status, out, _ = hg(t, "dlq", "purge", "-dir", f.dir, "-all")
	require.Equal(t, 0, status)
	require.Equal(t, "purged 0 dead letters\n", out)
}

func TestOfflinePurge(t *testing.T) {
	f := newFixture(t)
	status, out, errs := hg(t, "dlq", "purge", "-dir", f.dir, "-all", "-dest", "local://")
	require.Equal(t, 0, status, errs)
	require.Equal(t, "purged 1 dead letter\n", out)
	status, _, _ = hg(t, "get", "-dir", f.dir, "-key", "k-dead")
	require.Equal(t, 1, status, "the key is free")
	status, _, errs = hg(t, "dlq", "purge", "-dir", f.dir, f.ids["far"].String())
	require.Equal(t, 1, status, "a pending message is not a dead letter")
	require.Contains(t, errs, f.ids["far"].String())
	status, out, _ = hg(t, "dlq", "purge", "-dir", f.dir, f.ids["deadHook"].String())
	require.Equal(t, 0, status)
	require.Equal(t, "purged 1 dead letter\n", out)
	status, out, _ = hg(t, "dlq", "list", "-dir", f.dir)
	require.Equal(t, 0, status)
	require.Empty(t, out)
	status, out, _ = hg(t, "inspect", "-dir", f.dir, "-json")
	require.Equal(t, 0, status)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, int64(6), rep.Pending, "no pending message changed")
	require.Zero(t, rep.Dead)
}

func TestOfflineCheck(t *testing.T) {
	f := newFixture(t)
	status, out, errs := hg(t, "check", "-dir", f.dir)
	require.Equal(t, 0, status, errs)
	require.Contains(t, out, "store "+f.dir+": 2 shards, last sequence ")
	require.Contains(t, out, ", closed cleanly: yes\npending 6 [3 3] (")
	require.Contains(t, out, "2 dead letters, 2 idempotency keys\n")
	require.True(t, strings.HasSuffix(out, "no problems\n"), out)

	// Damage one byte in the middle of a table file.
	tables, err := filepath.Glob(filepath.Join(f.dir, "*.sst"))
	require.NoError(t, err)
	require.NotEmpty(t, tables)
	b, err := os.ReadFile(tables[0])
	require.NoError(t, err)
	b[len(b)/2] ^= 0xff
	require.NoError(t, os.WriteFile(tables[0], b, 0o644))

	status, out, errs = hg(t, "check", "-dir", f.dir)
	require.Equal(t, 1, status)
	require.Contains(t, out, "problem: files: ")
	require.Contains(t, out, filepath.Base(tables[0])+": changed since the clean close")
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n")[1:] {
		require.True(t, strings.HasPrefix(l, "pending ") || strings.HasPrefix(l, "problem: "), "one problem a line: %q", l)
	}
	require.Contains(t, errs, "hourglass check: wal: store "+f.dir+": check found ")
	require.Contains(t, errs, "restore the directory from a backup")

	// The other commands refuse the damaged store as Open does.
	status, _, errs = hg(t, "inspect", "-dir", f.dir)
	require.Equal(t, 1, status)
	require.Contains(t, errs, filepath.Base(tables[0]))
}

// TestOfflineStoreInUse: while an engine runs on the store, every offline
// command refuses it and says why; after the engine stops they work.
func TestOfflineStoreInUse(t *testing.T) {
	f := newFixture(t)
	eng, err := engine.Open(context.Background(), engine.Options{
		Dir: f.dir, Clock: engine.NewFakeClock(t0), Logger: quietLog(),
		Queues: []engine.Queue{
			{Name: "emails", Handler: func(context.Context, *engine.Delivery) error { return nil }},
			{Name: "reports", Handler: func(context.Context, *engine.Delivery) error { return nil }},
		},
	})
	require.NoError(t, err)
	var once sync.Once
	closeEngine := func() { once.Do(func() { require.NoError(t, eng.Close()) }) }
	defer closeEngine()
	for _, args := range [][]string{
		{"inspect"}, {"check"}, {"list"}, {"dump"}, {"dlq", "list"}, {"dlq", "purge", "-all"},
		{"get", f.ids["far"].String()},
	} {
		full := withDir(args, f.dir)
		status, out, errs := hg(t, full...)
		require.Equal(t, 1, status, "%q", full)
		require.Empty(t, out)
		require.Contains(t, errs, f.dir+" is in use by a running engine (hourglass serve, or a service that embeds the engine)", "%q", full)
		require.Contains(t, errs, "stop it first")
	}
	closeEngine()
	status, out, errs := hg(t, "dlq", "list", "-dir", f.dir)
	require.Equal(t, 0, status, errs)
	require.Len(t, lines(t, out), 2, "the refused purge changed nothing")
}

// TestOperationsDocCommands: docs/operations.md describes every command.
func TestOperationsDocCommands(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	require.NoError(t, err)
	for _, c := range commands() {
		require.True(t, strings.Contains(string(doc), "`hourglass "+c.name), "docs/operations.md describes hourglass %s", c.name)
	}
	for _, sub := range []string{"list", "replay", "purge"} {
		require.True(t, strings.Contains(string(doc), "`hourglass dlq "+sub), "docs/operations.md describes hourglass dlq %s", sub)
	}
}
