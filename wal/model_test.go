package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

// model is the reference the store is checked against: what is pending, what
// is dead, and which idempotency keys are remembered.
type model struct {
	pending map[store.ID]store.Message
	dead    map[store.ID]store.DeadLetter
	keys    map[string]store.ID
}

func newModel() *model {
	return &model{pending: map[store.ID]store.Message{}, dead: map[store.ID]store.DeadLetter{}, keys: map[string]store.ID{}}
}

func (m *model) clone() *model {
	return &model{pending: maps.Clone(m.pending), dead: maps.Clone(m.dead), keys: maps.Clone(m.keys)}
}

// harness drives one store and the model with random operations. Every
// operation's results are checked against the model as it goes.
type harness struct {
	t      testing.TB
	r      *rand.Rand
	s      *Store
	m      *model
	shards int
	n      int
}

func (h *harness) pick(k int) []store.ID {
	ids := slices.Sorted(maps.Keys(h.m.pending))
	h.r.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	return ids[:min(k, len(ids))]
}

func (h *harness) newMsgs(k int) []store.Message {
	msgs := make([]store.Message, k)
	for i := range msgs {
		h.n++
		msgs[i] = randMsg(h.r, h.shards, h.n)
	}
	return msgs
}

// applyNew mirrors Append / Batch.New in the model and checks the results.
func (h *harness) applyNew(m *model, msgs []store.Message, res []store.Appended) {
	require.Len(h.t, res, len(msgs))
	for i, msg := range msgs {
		if msg.Key != "" {
			if id, ok := m.keys[msg.Key]; ok {
				require.Equal(h.t, store.Appended{ID: id, Existing: true}, res[i], "key %q", msg.Key)
				continue
			}
		}
		require.False(h.t, res[i].Existing, "message %d: key %q unknown to the model", i, msg.Key)
		id := res[i].ID
		require.Equal(h.t, msg.Shard, id.Shard())
		_, dup := m.pending[id]
		require.False(h.t, dup, "id %s handed out twice", id)
		msg.ID = id
		m.pending[id] = msg
		if msg.Key != "" {
			m.keys[msg.Key] = id
		}
	}
}

// op describes one operation for the crash test: run it against the store
// and return the model after it.
func (h *harness) step(ctx context.Context) (*model, error) {
	next := h.m.clone()
	switch k := h.r.IntN(10); {
	case k < 4 || len(h.m.pending) == 0:
		msgs := h.newMsgs(1 + h.r.IntN(20))
		res, err := h.s.Append(ctx, msgs)
		if err != nil {
			return nil, err
		}
		h.applyNew(next, msgs, res)
	case k < 8:
		var b store.Batch
		for _, id := range h.pick(1 + h.r.IntN(12)) {
			switch h.r.IntN(4) {
			case 0, 1:
				b.Done = append(b.Done, store.Done{ID: id, Reason: store.Reason(h.r.IntN(int(store.NumReasons)))})
				if key := next.pending[id].Key; key != "" {
					delete(next.keys, key)
				}
				delete(next.pending, id)
			case 2:
				u := store.Update{ID: id, Due: testNow.Add(time.Duration(h.r.IntN(int(3 * time.Hour)))).UnixNano(), Attempt: uint32(h.r.IntN(9))}
				b.Update = append(b.Update, u)
				msg := next.pending[id]
				msg.Due, msg.Attempt = u.Due, u.Attempt
				next.pending[id] = msg
			case 3:
				d := store.Dead{ID: id, Reason: fmt.Sprint("r", h.r.IntN(3)), Attempt: uint32(h.r.IntN(9))}
				b.Dead = append(b.Dead, d)
				msg := next.pending[id]
				msg.Attempt = d.Attempt
				next.dead[id] = store.DeadLetter{Message: msg, Reason: d.Reason, DeadAt: testNow.UnixNano()}
				delete(next.pending, id)
			}
		}
		if h.r.IntN(3) == 0 {
			b.New = h.newMsgs(1 + h.r.IntN(4))
		}
		res, err := h.s.Resolve(ctx, b)
		if err != nil {
			return nil, err
		}
		h.applyNew(next, b.New, res)
	case k == 8 && len(h.m.dead) > 0:
		ids := slices.Sorted(maps.Keys(h.m.dead))[:1+h.r.IntN(min(3, len(h.m.dead)))]
		due := testNow.Add(time.Duration(h.r.IntN(int(2 * time.Hour)))).UnixNano()
		for _, id := range ids {
			msg := next.dead[id].Message
			msg.Due, msg.Attempt = due, 0
			next.pending[id] = msg
			delete(next.dead, id)
		}
		if err := h.s.ReplayDead(ctx, ids, due); err != nil {
			return nil, err
		}
		for _, id := range ids {
			got, err := h.s.Get(ctx, id)
			require.NoError(h.t, err)
			sameMessage(h.t, next.pending[id], got)
		}
	case k == 9 && len(h.m.dead) > 0:
		ids := slices.Sorted(maps.Keys(h.m.dead))[:1]
		for _, id := range ids {
			if key := next.dead[id].Message.Key; key != "" {
				delete(next.keys, key)
			}
			delete(next.dead, id)
		}
		if _, err := h.s.PurgeDead(ctx, ids); err != nil {
			return nil, err
		}
	default:
		// A resolve of something no longer pending must fail and write nothing.
		gone := store.MakeID(0, 1<<slotBits|5) // never pending in the model
		if _, ok := h.m.pending[gone]; ok {
			return next, nil
		}
		_, err := h.s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: gone}}, New: h.newMsgs(1)})
		var np *store.NotPendingError
		require.ErrorAs(h.t, err, &np)
	}
	h.m = next
	return next, nil
}

// storeState reads everything pending and dead out of a store.
func storeState(t testing.TB, s *Store) *model {
	t.Helper()
	got, err := readState(s)
	require.NoError(t, err)
	return got
}

// readState reads everything pending and dead out of a store, checking scan
// order and that no message comes twice.
func readState(s *Store) (*model, error) {
	ctx := context.Background()
	got := newModel()
	for shard := 0; shard < s.Shards(); shard++ {
		var c store.Position
		var prev *store.Message
		for {
			page, next, err := s.Scan(ctx, store.ScanQuery{Shard: shard, From: math.MinInt64, To: math.MaxInt64, Limit: 50, After: c})
			if err != nil {
				return nil, err
			}
			for i := range page {
				if prev != nil && cmpDueID(*prev, page[i]) >= 0 {
					return nil, fmt.Errorf("scan order: %s after %s", page[i].ID, prev.ID)
				}
				prev = &page[i]
				if _, dup := got.pending[page[i].ID]; dup {
					return nil, fmt.Errorf("scan returned %s twice", page[i].ID)
				}
				got.pending[page[i].ID] = page[i]
			}
			c = next.Next
			if next.Done {
				break
			}
		}
	}
	var after store.ID
	for {
		dl, next, err := s.ListDead(ctx, store.DeadQuery{After: after, Limit: 7})
		if err != nil {
			return nil, err
		}
		for _, d := range dl {
			got.dead[d.Message.ID] = d
		}
		if next == 0 {
			break
		}
		after = next
	}
	return got, nil
}

// requireCheck runs the full invariant check (Check's key walk) on an open
// store and fails on any problem.
func requireCheck(t testing.TB, s *Store) {
	t.Helper()
	rep, err := s.check(context.Background())
	require.NoError(t, err, "check:\n%s", rep)
}

func normalize(m *model) *model {
	out := newModel()
	for id, msg := range m.pending {
		msg.ID, msg.Shard = id, id.Shard()
		if len(msg.Headers) == 0 {
			msg.Headers = nil
		}
		if len(msg.Payload) == 0 {
			msg.Payload = nil
		}
		out.pending[id] = msg
	}
	for id, d := range m.dead {
		d.Message.ID, d.Message.Shard = id, id.Shard()
		if len(d.Message.Headers) == 0 {
			d.Message.Headers = nil
		}
		if len(d.Message.Payload) == 0 {
			d.Message.Payload = nil
		}
		out.dead[id] = d
	}
	return out
}

func equalState(a, b *model) bool {
	if len(a.pending) != len(b.pending) || len(a.dead) != len(b.dead) {
		return false
	}
	for id, m := range a.pending {
		o, ok := b.pending[id]
		if !ok || !sameContent(id, m, o) {
			return false
		}
	}
	for id, d := range a.dead {
		o, ok := b.dead[id]
		if !ok || d.Reason != o.Reason || d.DeadAt != o.DeadAt || !sameContent(id, d.Message, o.Message) {
			return false
		}
	}
	return true
}

// sameContent compares what the store keeps of message id (as normalize
// does: the ID and shard come from id, empty and nil slices are equal).
func sameContent(id store.ID, a, b store.Message) bool {
	return a.Due == b.Due && a.Expires == b.Expires && a.Attempt == b.Attempt &&
		a.Dest == b.Dest && a.Key == b.Key && slices.Equal(a.Headers, b.Headers) &&
		bytes.Equal(a.Payload, b.Payload) && (a.ID == 0 || a.ID == id) && (b.ID == 0 || b.ID == id)
}

func requireState(t testing.TB, want *model, s *Store) {
	t.Helper()
	got := storeState(t, s)
	require.Equal(t, normalize(want).pending, normalize(got).pending)
	require.Equal(t, normalize(want).dead, normalize(got).dead)
	// Counters agree with the contents.
	st := s.Stats()
	perShard := make([]int64, s.Shards())
	for id := range want.pending {
		perShard[id.Shard()]++
	}
	require.Equal(t, perShard, st.Pending)
	require.Equal(t, int64(len(want.dead)), st.Dead)
	// Each Get agrees with Scan.
	for id, msg := range got.pending {
		g, err := s.Get(context.Background(), id)
		require.NoError(t, err)
		sameMessage(t, msg, g)
	}
}

// requireReclaimed checks that exactly the blocks with a pending slot are
// stored: a block whose slots were all resolved is gone.
func requireReclaimed(t testing.TB, s *Store) {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagBlock}, UpperBound: []byte{tagBlock + 1}})
	require.NoError(t, err)
	keys := 0
	for ok := it.First(); ok; ok = it.Next() {
		keys++
		if it.Key()[10] == kindSummary {
			sum, err := decodeSummary(it.Value())
			require.NoError(t, err)
			require.Positive(t, sum.live, "an empty block was kept")
		}
	}
	require.NoError(t, it.Close())
	require.Equal(t, 2*s.blockCount(), keys)
}

// TestModel runs random operations against the store and the model, checking
// state, counters and reclaim after each, and across a reopen.
func TestModel(t *testing.T) {
	sd := seed(t)
	steps := 300
	if *flagLong {
		steps = 3000
	}
	ctx := context.Background()
	fs := vfs.NewMem()
	opts := testOptions(fs, 3)
	opts.Horizon = time.Minute
	h := &harness{t: t, r: rand.New(rand.NewPCG(sd, 1)), s: openTest(t, opts), m: newModel(), shards: 3}
	for i := 0; i < steps; i++ {
		_, err := h.step(ctx)
		require.NoError(t, err)
		if i%25 == 0 || i == steps-1 {
			requireState(t, h.m, h.s)
			requireReclaimed(t, h.s)
			requireCheck(t, h.s)
		}
		if i%100 == 99 {
			require.NoError(t, h.s.Close())
			opts.Shards = 0
			h.s = openTest(t, opts)
			requireState(t, h.m, h.s)
			requireCheck(t, h.s)
		}
	}
	// Drain everything: every block must be dropped.
	for len(h.m.pending) > 0 {
		var b store.Batch
		for _, id := range h.pick(100) {
			b.Done = append(b.Done, store.Done{ID: id})
			delete(h.m.pending, id)
		}
		_, err := h.s.Resolve(ctx, b)
		require.NoError(t, err)
	}
	requireState(t, h.m, h.s)
	requireReclaimed(t, h.s)
	require.Zero(t, h.s.blockCount())
	require.NoError(t, h.s.Close())
}

// TestConcurrentCallers hammers the writer from many goroutines: every
// caller's messages come back with distinct IDs and the counts add up.
func TestConcurrentCallers(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, testOptions(vfs.NewMem(), 4))
	defer s.Close()
	const callers, calls, per = 16, 20, 10
	errc := make(chan error, callers)
	idc := make(chan []store.ID, callers)
	for c := 0; c < callers; c++ {
		go func(c int) {
			var got []store.ID
			for i := 0; i < calls; i++ {
				msgs := make([]store.Message, per)
				for j := range msgs {
					msgs[j] = msgAt((c+j)%4, time.Duration(j)*time.Second, "c")
				}
				res, err := s.Append(ctx, msgs)
				if err != nil {
					errc <- err
					return
				}
				for _, r := range res {
					got = append(got, r.ID)
				}
				if i%4 == 0 {
					if _, err := s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: res[0].ID}}}); err != nil {
						errc <- err
						return
					}
				}
			}
			errc <- nil
			idc <- got
		}(c)
	}
	seen := map[store.ID]bool{}
	for c := 0; c < callers; c++ {
		require.NoError(t, <-errc)
	}
	for c := 0; c < callers; c++ {
		for _, id := range <-idc {
			require.False(t, seen[id])
			seen[id] = true
		}
	}
	st := s.Stats()
	require.Equal(t, int64(callers*calls*per-callers*calls/4), st.PendingTotal)
	require.Greater(t, st.Records, uint64(0))
	require.False(t, errors.Is(s.Err(), ErrFailed))
}
