// Package storetest checks that an implementation of the store contract
// (package store) keeps it: run it from the implementation's tests.
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, storetest.Harness{Open: func(t *testing.T, shards int) store.Store { ... }})
//	}
//
// Every check goes through the store.Store interface only, with a recording
// store.Owner, so the same suite holds the memory store, the Pebble store
// and any later one (a Kafka-backed cluster store) to the same promises.
package storetest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/store"
)

// Harness opens the store under test.
type Harness struct {
	// Open returns a new, empty store with shards shards, not started.
	Open func(t *testing.T, shards int) store.Store
	// Reopen, when set, closes s and opens the same store again (not
	// started): a durable store must hold exactly what it held.
	Reopen func(t *testing.T, s store.Store) store.Store
	// MaxPayload is the payload bound the store was opened with (default
	// store.DefaultMaxPayload).
	MaxPayload int
}

// Run runs every check of the contract against h.
func Run(t *testing.T, h Harness) {
	if h.MaxPayload == 0 {
		h.MaxPayload = store.DefaultMaxPayload
	}
	t.Run("AppendGetLookup", func(t *testing.T) { testAppendGetLookup(t, h) })
	t.Run("FirstOfOneKeyWins", func(t *testing.T) { testFirstOfOneKeyWins(t, h) })
	t.Run("InvalidInputWritesNothing", func(t *testing.T) { testInvalid(t, h) })
	t.Run("ResolveIsAllOrNothing", func(t *testing.T) { testResolve(t, h) })
	t.Run("ScanOrderAndPaging", func(t *testing.T) { testScan(t, h) })
	t.Run("DeadLetters", func(t *testing.T) { testDead(t, h) })
	t.Run("FeedCarriesWhatBecamePending", func(t *testing.T) { testFeed(t, h) })
	t.Run("ClosedRefusesEverything", func(t *testing.T) { testClosed(t, h) })
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("Model/seed=%d", seed), func(t *testing.T) { testModel(t, h, seed) })
	}
}

// Owner records what a store tells its owner.
type Owner struct {
	mu       sync.Mutex
	attached map[int]bool
	fed      map[int][]store.Message
	removed  map[int][]store.ID
}

// NewOwner returns an empty recording owner.
func NewOwner() *Owner {
	return &Owner{attached: map[int]bool{}, fed: map[int][]store.Message{}, removed: map[int][]store.ID{}}
}

// Attach implements store.Owner.
func (o *Owner) Attach(shard int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.attached[shard] = true
}

// Detach implements store.Owner.
func (o *Owner) Detach(_ context.Context, shard int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.attached, shard)
}

// Claim implements store.Owner: nothing is ever in flight here.
func (o *Owner) Claim(context.Context, store.ID) (func(*store.Message), error) {
	return func(*store.Message) {}, nil
}

// Feed implements store.Owner.
func (o *Owner) Feed(shard int, c store.Change) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.fed[shard] = append(o.fed[shard], c.Added...)
	o.removed[shard] = append(o.removed[shard], c.Removed...)
}

// Take returns and forgets what was fed, all shards together.
func (o *Owner) Take() []store.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []store.Message
	for sh, ms := range o.fed {
		for _, m := range ms {
			if m.Shard != sh || m.ID.Shard() != sh {
				panic(fmt.Sprintf("storetest: message %s fed to shard %d", m.ID, sh))
			}
		}
		out = append(out, ms...)
	}
	clear(o.fed)
	return out
}

// Attached returns the attached shards, sorted.
func (o *Owner) Attached() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []int
	for sh := range o.attached {
		out = append(out, sh)
	}
	slices.Sort(out)
	return out
}

var ctx = context.Background()

// start opens a store and starts it with a recording owner.
func start(t *testing.T, h Harness, shards int) (store.Store, *Owner) {
	s := h.Open(t, shards)
	o := NewOwner()
	require.NoError(t, s.Start(ctx, o))
	return s, o
}

func msg(shard int, due int64, payload string) store.Message {
	return store.Message{Shard: shard, Due: due, Dest: "local://q", Payload: []byte(payload),
		Headers: []store.Header{{Key: "K", Value: payload}}}
}

// same checks that got is want as stored (ID set by the store).
func same(t *testing.T, want, got store.Message) {
	t.Helper()
	require.Equal(t, want.ID, got.ID)
	require.Equal(t, want.ID.Shard(), got.Shard)
	require.Equal(t, want.Due, got.Due)
	require.Equal(t, want.Expires, got.Expires)
	require.Equal(t, want.Attempt, got.Attempt)
	require.Equal(t, want.Dest, got.Dest)
	require.Equal(t, want.Key, got.Key)
	require.Equal(t, len(want.Headers), len(got.Headers))
	for i := range want.Headers {
		require.Equal(t, want.Headers[i], got.Headers[i])
	}
	require.Equal(t, string(want.Payload), string(got.Payload))
}

func testAppendGetLookup(t *testing.T, h Harness) {
	s, o := start(t, h, 4)
	defer s.Close()
	require.Equal(t, 4, s.Shards())
	require.Equal(t, []int{0, 1, 2, 3}, o.Attached(), "a single-process store attaches every shard at Start")
	var in []store.Message
	for i := range 40 {
		m := msg(i%4, int64(1000+i), fmt.Sprint(i))
		m.Expires = int64(5000 + i)
		if i%3 == 0 {
			m.Key = fmt.Sprintf("key-%d", i)
		}
		in = append(in, m)
	}
	// The same key twice in one call: the second is the first.
	dup := msg(1, 7, "dup")
	dup.Key = "key-0"
	in = append(in, dup)
	app, err := s.Append(ctx, in)
	require.NoError(t, err)
	require.Len(t, app, len(in))
	seen := map[store.ID]bool{}
	for i, a := range app[:40] {
		require.False(t, a.Existing)
		require.NotZero(t, a.ID)
		require.Equal(t, in[i].Shard, a.ID.Shard(), "an ID carries its shard")
		require.False(t, seen[a.ID], "IDs are unique")
		seen[a.ID] = true
		want := in[i]
		want.ID = a.ID
		got, err := s.Get(ctx, a.ID)
		require.NoError(t, err)
		same(t, want, got)
		if want.Key != "" {
			id, err := s.Lookup(ctx, want.Key)
			require.NoError(t, err)
			require.Equal(t, a.ID, id)
		}
	}
	require.True(t, app[40].Existing)
	require.Equal(t, app[0].ID, app[40].ID)
	again, err := s.Append(ctx, []store.Message{in[3]})
	require.NoError(t, err)
	require.Equal(t, store.Appended{ID: app[3].ID, Existing: true}, again[0])
	_, err = s.Lookup(ctx, "no such key")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.Get(ctx, store.MakeID(3, 12345))
	require.ErrorIs(t, err, store.ErrNotFound)
	require.EqualValues(t, 40, s.Stats().PendingTotal)
	require.Len(t, o.Take(), 40, "new messages are fed, existing keys are not")
}

// testFirstOfOneKeyWins: of two messages with one key in one call, on
// different shards, the first in the call is stored, whichever shard the
// store handles first; the same holds for a resolve's new messages.
func testFirstOfOneKeyWins(t *testing.T, h Harness) {
	s, _ := start(t, h, 2)
	defer s.Close()
	for _, shards := range [][2]int{{1, 0}, {0, 1}} {
		a, b := msg(shards[0], 5, "first"), msg(shards[1], 5, "second")
		a.Key, b.Key = fmt.Sprint("dup", shards), fmt.Sprint("dup", shards)
		out, err := s.Append(ctx, []store.Message{a, b})
		require.NoError(t, err)
		require.False(t, out[0].Existing)
		require.Equal(t, store.Appended{ID: out[0].ID, Existing: true}, out[1], "the second names the first's ID")
		got, err := s.Get(ctx, out[0].ID)
		require.NoError(t, err)
		require.Equal(t, "first", string(got.Payload))
	}
	parent, err := s.Append(ctx, []store.Message{msg(0, 1, "parent")})
	require.NoError(t, err)
	a, b := msg(1, 5, "first"), msg(0, 5, "second")
	a.Key, b.Key = "cascaded", "cascaded"
	out, err := s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: parent[0].ID}}, New: []store.Message{a, b}})
	require.NoError(t, err)
	require.Equal(t, store.Appended{ID: out[0].ID, Existing: true}, out[1])
	got, err := s.Get(ctx, out[0].ID)
	require.NoError(t, err)
	require.Equal(t, "first", string(got.Payload))
}

func testInvalid(t *testing.T, h Harness) {
	s, o := start(t, h, 2)
	defer s.Close()
	ok := msg(0, 1, "ok")
	long := strings.Repeat("x", store.MaxHeaderLen+1)
	for _, tc := range []struct {
		name string
		m    func(m *store.Message)
	}{
		{"ID set", func(m *store.Message) { m.ID = store.MakeID(0, 1) }},
		{"shard out of range", func(m *store.Message) { m.Shard = 2 }},
		{"negative shard", func(m *store.Message) { m.Shard = -1 }},
		{"negative due", func(m *store.Message) { m.Due = -1 }},
		{"due past MaxDue", func(m *store.Message) { m.Due = store.MaxDue + 1 }},
		{"negative expires", func(m *store.Message) { m.Expires = -1 }},
		{"expires past MaxDue", func(m *store.Message) { m.Expires = math.MaxInt64 }},
		{"empty dest", func(m *store.Message) { m.Dest = "" }},
		{"long dest", func(m *store.Message) { m.Dest = "local://" + strings.Repeat("q", store.MaxDestLen) }},
		{"long key", func(m *store.Message) { m.Key = strings.Repeat("k", store.MaxKeyLen+1) }},
		{"too many headers", func(m *store.Message) { m.Headers = make([]store.Header, store.MaxHeaders+1) }},
		{"long header value", func(m *store.Message) { m.Headers = []store.Header{{Key: "a", Value: long}} }},
		{"long header name", func(m *store.Message) { m.Headers = []store.Header{{Key: long}} }},
		{"payload too large", func(m *store.Message) { m.Payload = make([]byte, h.MaxPayload+1) }},
	} {
		bad := ok
		tc.m(&bad)
		// The invalid message is last: nothing before it may be written.
		_, err := s.Append(ctx, []store.Message{ok, bad})
		require.ErrorIs(t, err, store.ErrInvalid, tc.name)
		_, err = s.Resolve(ctx, store.Batch{New: []store.Message{ok, bad}})
		require.ErrorIs(t, err, store.ErrInvalid, tc.name)
	}
	_, err := s.Append(ctx, make([]store.Message, store.MaxCallMessages+1))
	require.ErrorIs(t, err, store.ErrInvalid)
	require.Zero(t, s.Stats().PendingTotal, "rejected calls write nothing")
	require.Empty(t, o.Take(), "and feed nothing")
	// Outcomes that cannot be applied.
	app, err := s.Append(ctx, []store.Message{ok})
	require.NoError(t, err)
	id := app[0].ID
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: id}}, Update: []store.Update{{ID: id, Due: 5}}})
	require.ErrorIs(t, err, store.ErrInvalid, "an ID twice in one batch")
	_, err = s.Resolve(ctx, store.Batch{Update: []store.Update{{ID: id, Due: store.MaxDue + 1}}})
	require.ErrorIs(t, err, store.ErrInvalid, "update past MaxDue")
	_, err = s.Resolve(ctx, store.Batch{Dead: []store.Dead{{ID: id, Reason: strings.Repeat("r", store.MaxReasonLen+1)}}})
	require.ErrorIs(t, err, store.ErrInvalid, "reason too long")
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: id, Reason: store.NumReasons}}})
	require.ErrorIs(t, err, store.ErrInvalid, "unknown reason")
	got, err := s.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, ok.Due, got.Due, "still pending, unchanged")
}

func testResolve(t *testing.T, h Harness) {
	s, o := start(t, h, 2)
	defer s.Close()
	in := []store.Message{msg(0, 10, "a"), msg(1, 20, "b"), msg(0, 30, "c"), msg(1, 40, "d")}
	in[0].Key, in[3].Key = "ka", "kd"
	app, err := s.Append(ctx, in)
	require.NoError(t, err)
	id := func(i int) store.ID { return app[i].ID }
	o.Take()
	gone := store.MakeID(1, 424242)
	// One ID not pending: nothing applies.
	_, err = s.Resolve(ctx, store.Batch{
		Done: []store.Done{{ID: id(0), Reason: store.Delivered}},
		Dead: []store.Dead{{ID: gone, Reason: "x"}},
		New:  []store.Message{msg(0, 50, "new")},
	})
	var npe *store.NotPendingError
	require.ErrorAs(t, err, &npe)
	require.Equal(t, []store.ID{gone}, npe.IDs)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.EqualValues(t, 4, s.Stats().PendingTotal)
	require.Empty(t, o.Take())
	// All of it.
	nm := msg(0, 60, "cascade")
	nm.Key = "ka" // free again once a is done, in the same batch
	res, err := s.Resolve(ctx, store.Batch{
		Done:   []store.Done{{ID: id(0), Reason: store.Delivered}},
		Update: []store.Update{{ID: id(1), Due: 99, Attempt: 3}},
		Dead:   []store.Dead{{ID: id(3), Reason: "gave up", Attempt: 8}},
		New:    []store.Message{nm},
	})
	require.NoError(t, err)
	require.Len(t, res, 1)
	fed := o.Take()
	require.Len(t, fed, 1)
	require.Equal(t, res[0].ID, fed[0].ID)
	_, err = s.Get(ctx, id(0))
	require.ErrorIs(t, err, store.ErrNotFound)
	upd, err := s.Get(ctx, id(1))
	require.NoError(t, err)
	require.EqualValues(t, 99, upd.Due)
	require.EqualValues(t, 3, upd.Attempt)
	require.Equal(t, "b", string(upd.Payload), "an update keeps the message")
	d, err := s.GetDead(ctx, id(3))
	require.NoError(t, err)
	require.Equal(t, "gave up", d.Reason)
	require.EqualValues(t, 8, d.Message.Attempt)
	k, err := s.Lookup(ctx, "kd")
	require.NoError(t, err)
	require.Equal(t, id(3), k, "a dead letter keeps its key")
	k, err = s.Lookup(ctx, "ka")
	require.NoError(t, err)
	require.Equal(t, res[0].ID, k, "a done message frees its key")
	st := s.Stats()
	require.EqualValues(t, 3, st.PendingTotal)
	require.EqualValues(t, 1, st.Dead)
	// Resolving what is already resolved fails and changes nothing.
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: id(0)}}})
	require.ErrorIs(t, err, store.ErrNotFound)
}

// scanAll pages through a shard's range with the given page size.
func scanAll(t *testing.T, s store.Store, shard int, from, to int64, limit int) []store.Message {
	t.Helper()
	var out []store.Message
	q := store.ScanQuery{Shard: shard, From: from, To: to, Limit: limit}
	for range 100000 {
		page, p, err := s.Scan(ctx, q)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), limit)
		out = append(out, page...)
		if p.Done {
			return out
		}
		require.NotEmpty(t, page, "a page that is not the last returns something")
		require.Equal(t, store.PositionOf(&page[len(page)-1]), p.Next)
		q.After = p.Next
	}
	t.Fatal("scan did not end")
	return nil
}

func testScan(t *testing.T, h Harness) {
	s, _ := start(t, h, 3)
	defer s.Close()
	r := rand.New(rand.NewPCG(1, 2))
	var in []store.Message
	for i := range 600 {
		in = append(in, msg(i%3, r.Int64N(200), fmt.Sprint(i))) // many ties
	}
	in = append(in, msg(0, store.MaxDue, "last"), msg(1, 0, "first"))
	app, err := s.Append(ctx, in)
	require.NoError(t, err)
	for i := range in {
		in[i].ID = app[i].ID
	}
	for shard := range 3 {
		for _, rg := range [][2]int64{{math.MinInt64, math.MaxInt64}, {0, 200}, {50, 51}, {100, 100}, {150, 40}, {199, math.MaxInt64}} {
			var want []store.Message
			for _, m := range in {
				if m.Shard == shard && m.Due >= rg[0] && m.Due < rg[1] {
					want = append(want, m)
				}
			}
			slices.SortFunc(want, func(a, b store.Message) int {
				if store.PositionOf(&a).Less(store.PositionOf(&b)) {
					return -1
				}
				return 1
			})
			for _, limit := range []int{1, 7, 1000} {
				got := scanAll(t, s, shard, rg[0], rg[1], limit)
				require.Len(t, got, len(want), "shard %d range %v limit %d", shard, rg, limit)
				for i := range want {
					same(t, want[i], got[i])
				}
			}
		}
	}
	_, _, err = s.Scan(ctx, store.ScanQuery{Shard: 3, To: 1})
	require.ErrorIs(t, err, store.ErrInvalid)
}

func testDead(t *testing.T, h Harness) {
	s, o := start(t, h, 2)
	defer s.Close()
	var in []store.Message
	for i := range 10 {
		m := msg(i%2, int64(i), fmt.Sprint(i))
		m.Key = fmt.Sprintf("k%d", i)
		in = append(in, m)
	}
	app, err := s.Append(ctx, in)
	require.NoError(t, err)
	var dead []store.Dead
	for _, a := range app {
		dead = append(dead, store.Dead{ID: a.ID, Reason: "r-" + a.ID.String(), Attempt: 2})
	}
	_, err = s.Resolve(ctx, store.Batch{Dead: dead})
	require.NoError(t, err)
	o.Take()
	var all []store.DeadLetter
	var after store.ID
	for {
		page, next, err := s.ListDead(ctx, store.DeadQuery{After: after, Limit: 3})
		require.NoError(t, err)
		all = append(all, page...)
		if next == 0 {
			break
		}
		after = next
	}
	require.Len(t, all, 10)
	require.True(t, slices.IsSortedFunc(all, func(a, b store.DeadLetter) int {
		return cmp.Compare(a.Message.ID, b.Message.ID)
	}), "dead letters page in ID order")
	page, next, err := s.ListDead(ctx, store.DeadQuery{After: all[4].Message.ID, Limit: 5})
	require.NoError(t, err)
	require.Len(t, page, 5)
	require.Zero(t, next, "an exactly full last page says no page follows")
	page, next, err = s.ListDead(ctx, store.DeadQuery{After: ^store.ID(0)})
	require.NoError(t, err)
	require.Empty(t, page, "nothing follows the largest ID; the cursor must not wrap")
	require.Zero(t, next)
	for _, id := range []store.ID{0, store.MakeID(2, 1), store.MakeID(store.MaxShards-1, 1)} {
		require.ErrorIs(t, s.ReplayDead(ctx, []store.ID{id}, 1), store.ErrNotFound, "id %s names nothing", id)
		_, err := s.PurgeDead(ctx, []store.ID{id})
		require.ErrorIs(t, err, store.ErrNotFound, "id %s names nothing", id)
		_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: id}}})
		require.ErrorIs(t, err, store.ErrNotFound, "id %s names nothing", id)
	}
	ids := []store.ID{app[0].ID, app[1].ID}
	// All or nothing.
	require.ErrorIs(t, s.ReplayDead(ctx, append(slices.Clone(ids), store.MakeID(0, 999)), 77), store.ErrNotFound)
	require.ErrorIs(t, s.ReplayDead(ctx, ids, store.MaxDue+1), store.ErrInvalid)
	require.Empty(t, o.Take())
	require.NoError(t, s.ReplayDead(ctx, ids, 77))
	fed := o.Take()
	require.Len(t, fed, 2, "replayed messages are fed")
	for _, id := range ids {
		m, err := s.Get(ctx, id)
		require.NoError(t, err, "a replayed dead letter keeps its ID")
		require.EqualValues(t, 77, m.Due)
		require.Zero(t, m.Attempt, "its attempts start over")
		_, err = s.GetDead(ctx, id)
		require.ErrorIs(t, err, store.ErrNotFound)
	}
	n, err := s.PurgeDead(ctx, []store.ID{app[2].ID, store.MakeID(1, 999)})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Zero(t, n)
	n, err = s.PurgeDead(ctx, []store.ID{app[2].ID})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = s.Lookup(ctx, "k2")
	require.ErrorIs(t, err, store.ErrNotFound, "a purged dead letter frees its key")
	n, err = s.PurgeAllDead(ctx)
	require.NoError(t, err)
	require.Equal(t, 7, n)
	require.Zero(t, s.Stats().Dead)
	require.EqualValues(t, 2, s.Stats().PendingTotal)
}

func testFeed(t *testing.T, h Harness) {
	s, o := start(t, h, 2)
	defer s.Close()
	app, err := s.Append(ctx, []store.Message{msg(0, 1, "a"), msg(1, 2, "b")})
	require.NoError(t, err)
	fed := o.Take()
	require.Len(t, fed, 2, "fed before Append returned")
	for _, m := range fed {
		got, err := s.Get(ctx, m.ID)
		require.NoError(t, err)
		same(t, got, m)
	}
	res, err := s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: app[0].ID}}, New: []store.Message{msg(1, 3, "c")}})
	require.NoError(t, err)
	fed = o.Take()
	require.Len(t, fed, 1)
	require.Equal(t, res[0].ID, fed[0].ID)
	require.Equal(t, "c", string(fed[0].Payload))
	require.Empty(t, o.Removed(), "a single-process store feeds no removals")
}

// Removed returns what was fed as removed, all shards together.
func (o *Owner) Removed() []store.ID {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []store.ID
	for _, ids := range o.removed {
		out = append(out, ids...)
	}
	return out
}

func testClosed(t *testing.T, h Harness) {
	s, _ := start(t, h, 1)
	app, err := s.Append(ctx, []store.Message{msg(0, 1, "a")})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Close(), store.ErrClosed)
	_, err = s.Append(ctx, []store.Message{msg(0, 1, "b")})
	require.ErrorIs(t, err, store.ErrClosed)
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: app[0].ID}}})
	require.ErrorIs(t, err, store.ErrClosed)
	_, err = s.Get(ctx, app[0].ID)
	require.ErrorIs(t, err, store.ErrClosed)
	_, _, err = s.Scan(ctx, store.ScanQuery{To: 10})
	require.ErrorIs(t, err, store.ErrClosed)
	_, err = s.Lookup(ctx, "x")
	require.ErrorIs(t, err, store.ErrClosed)
	_, _, err = s.ListDead(ctx, store.DeadQuery{})
	require.ErrorIs(t, err, store.ErrClosed)
}

// model is the reference: what a store must hold.
type model struct {
	pending map[store.ID]store.Message
	dead    map[store.ID]store.DeadLetter
	keys    map[string]store.ID
}

func (m *model) check(t *testing.T, s store.Store, shards int) {
	t.Helper()
	var got []store.Message
	for sh := range shards {
		got = append(got, scanAll(t, s, sh, 0, math.MaxInt64, 64)...)
	}
	require.Len(t, got, len(m.pending))
	for _, g := range got {
		w, ok := m.pending[g.ID]
		require.True(t, ok, "scan returned %s, which is not pending", g.ID)
		same(t, w, g)
	}
	dl, _, err := s.ListDead(ctx, store.DeadQuery{Limit: store.MaxDeadLimit})
	require.NoError(t, err)
	require.Len(t, dl, len(m.dead))
	for _, d := range dl {
		w, ok := m.dead[d.Message.ID]
		require.True(t, ok)
		same(t, w.Message, d.Message)
		require.Equal(t, w.Reason, d.Reason)
	}
	for k, id := range m.keys {
		got, err := s.Lookup(ctx, k)
		require.NoError(t, err, "key %q", k)
		require.Equal(t, id, got)
	}
	st := s.Stats()
	require.EqualValues(t, len(m.pending), st.PendingTotal)
	require.EqualValues(t, len(m.dead), st.Dead)
}

// testModel runs random operations against the store and a reference
// model, and checks that they agree (reopening a durable store now and
// then).
func testModel(t *testing.T, h Harness, seed uint64) {
	const shards = 3
	s, _ := start(t, h, shards)
	defer func() { _ = s.Close() }()
	r := rand.New(rand.NewPCG(seed, 11))
	m := &model{pending: map[store.ID]store.Message{}, dead: map[store.ID]store.DeadLetter{}, keys: map[string]store.ID{}}
	pick := func(from map[store.ID]store.Message) (store.ID, bool) {
		if len(from) == 0 {
			return 0, false
		}
		ids := make([]store.ID, 0, len(from))
		for id := range from {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids[r.IntN(len(ids))], true
	}
	newMsgs := func(n int) []store.Message {
		out := make([]store.Message, n)
		for i := range out {
			out[i] = msg(r.IntN(shards), r.Int64N(1000), fmt.Sprint(r.Uint32()))
			if r.IntN(3) == 0 {
				out[i].Key = fmt.Sprintf("k%d", r.IntN(30))
			}
		}
		return out
	}
	addNew := func(in []store.Message, app []store.Appended) {
		for i, a := range app {
			if a.Existing {
				require.Equal(t, m.keys[in[i].Key], a.ID, "an existing key names its message")
				continue
			}
			nm := in[i]
			nm.ID = a.ID
			m.pending[a.ID] = nm
			if nm.Key != "" {
				m.keys[nm.Key] = a.ID
			}
		}
	}
	for step := range 400 {
		switch k := r.IntN(10); {
		case k < 3:
			in := newMsgs(1 + r.IntN(5))
			app, err := s.Append(ctx, in)
			require.NoError(t, err)
			addNew(in, app)
		case k < 6:
			id, ok := pick(m.pending)
			if !ok {
				continue
			}
			var b store.Batch
			switch r.IntN(3) {
			case 0:
				b.Done = []store.Done{{ID: id, Reason: store.Delivered}}
				if key := m.pending[id].Key; key != "" {
					delete(m.keys, key)
				}
				delete(m.pending, id)
			case 1:
				u := m.pending[id]
				u.Due, u.Attempt = r.Int64N(1000), u.Attempt+1
				b.Update = []store.Update{{ID: id, Due: u.Due, Attempt: u.Attempt}}
				m.pending[id] = u
			default:
				d := m.pending[id]
				d.Attempt = 5
				b.Dead = []store.Dead{{ID: id, Reason: "dead " + id.String(), Attempt: 5}}
				m.dead[id] = store.DeadLetter{Message: d, Reason: "dead " + id.String()}
				delete(m.pending, id)
			}
			b.New = newMsgs(r.IntN(3))
			res, err := s.Resolve(ctx, b)
			require.NoError(t, err)
			addNew(b.New, res)
		case k < 7 && len(m.dead) > 0:
			var id store.ID
			for x := range m.dead {
				id = max(id, x)
			}
			due := r.Int64N(1000)
			require.NoError(t, s.ReplayDead(ctx, []store.ID{id}, due))
			pm := m.dead[id].Message
			pm.Due, pm.Attempt = due, 0
			m.pending[id] = pm
			delete(m.dead, id)
		case k < 8 && len(m.dead) > 0:
			var id store.ID
			for x := range m.dead {
				id = max(id, x)
			}
			_, err := s.PurgeDead(ctx, []store.ID{id})
			require.NoError(t, err)
			if key := m.dead[id].Message.Key; key != "" {
				delete(m.keys, key)
			}
			delete(m.dead, id)
		case k == 9 && h.Reopen != nil:
			s = h.Reopen(t, s)
			require.NoError(t, s.Start(ctx, NewOwner()))
		default:
			_, err := s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: store.MakeID(0, 1)}}})
			if !errors.Is(err, store.ErrNotFound) {
				require.NoError(t, err)
			}
		}
		if step%20 == 0 {
			m.check(t, s, shards)
		}
	}
	m.check(t, s, shards)
}
