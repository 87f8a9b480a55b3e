package wal

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

func TestAppendGetScanResolve(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewMem()
	s := openTest(t, testOptions(fs, 4))
	msgs := []store.Message{
		msgAt(0, 3*time.Second, "a"),
		msgAt(0, 1*time.Second, "b"),
		msgAt(1, 2*time.Second, "c"),
		msgAt(0, 2*time.Hour, "far"),
	}
	res, err := s.Append(ctx, msgs)
	require.NoError(t, err)
	require.Len(t, res, 4)
	for i, r := range res {
		require.False(t, r.Existing)
		require.Equal(t, msgs[i].Shard, r.ID.Shard())
		got, err := s.Get(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, r.ID, got.ID)
		want := msgs[i]
		want.Shard = r.ID.Shard()
		sameMessage(t, want, got)
	}
	page, cur, err := s.Scan(ctx, store.ScanQuery{Shard: 0, From: math.MinInt64, To: math.MaxInt64})
	require.NoError(t, err)
	require.True(t, cur.Done)
	require.Equal(t, []store.ID{res[1].ID, res[0].ID, res[3].ID}, ids(page))

	// Resolve: b delivered, a retried an hour later, c dead-lettered, plus a cascade.
	newRes, err := s.Resolve(ctx, store.Batch{
		Done:   []store.Done{{ID: res[1].ID, Reason: store.Delivered}},
		Update: []store.Update{{ID: res[0].ID, Due: testNow.Add(time.Hour).UnixNano(), Attempt: 1}},
		Dead:   []store.Dead{{ID: res[2].ID, Reason: "boom", Attempt: 5}},
		New:    []store.Message{msgAt(1, time.Second, "cascade")},
	})
	require.NoError(t, err)
	require.Len(t, newRes, 1)
	_, err = s.Get(ctx, res[1].ID)
	require.ErrorIs(t, err, ErrNotFound)
	got, err := s.Get(ctx, res[0].ID)
	require.NoError(t, err)
	require.Equal(t, uint32(1), got.Attempt)
	require.Equal(t, testNow.Add(time.Hour).UnixNano(), got.Due)
	d, err := s.GetDead(ctx, res[2].ID)
	require.NoError(t, err)
	require.Equal(t, "boom", d.Reason)
	require.Equal(t, uint32(5), d.Message.Attempt)

	// Resolving a message that is gone fails the whole batch, naming it.
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: res[1].ID}, {ID: res[0].ID}}})
	var np *store.NotPendingError
	require.ErrorAs(t, err, &np)
	require.Equal(t, []store.ID{res[1].ID}, np.IDs)
	_, err = s.Get(ctx, res[0].ID)
	require.NoError(t, err, "a rejected batch must write nothing")

	st := s.Stats()
	require.Equal(t, int64(3), st.PendingTotal)
	require.Equal(t, int64(1), st.Dead)

	// Reopen: everything is still there.
	require.NoError(t, s.Close())
	opts := testOptions(fs, 0)
	s = openTest(t, opts)
	defer s.Close()
	require.Equal(t, int64(3), s.Stats().PendingTotal)
	got, err = s.Get(ctx, res[0].ID)
	require.NoError(t, err)
	require.Equal(t, uint32(1), got.Attempt)
	page, _, err = s.Scan(ctx, store.ScanQuery{Shard: 0, From: math.MinInt64, To: math.MaxInt64})
	require.NoError(t, err)
	require.Equal(t, []store.ID{res[0].ID, res[3].ID}, ids(page))

	// Dead letters: list, replay, purge.
	dl, next, err := s.ListDead(ctx, store.DeadQuery{})
	require.NoError(t, err)
	require.Zero(t, next)
	require.Len(t, dl, 1)
	require.NoError(t, s.ReplayDead(ctx, []store.ID{res[2].ID}, testNow.UnixNano()))
	replayed, err := s.Get(ctx, res[2].ID)
	require.NoError(t, err)
	require.Zero(t, replayed.Attempt)
	_, err = s.GetDead(ctx, res[2].ID)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.PurgeDead(ctx, []store.ID{res[2].ID})
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.Resolve(ctx, store.Batch{Dead: []store.Dead{{ID: res[2].ID, Reason: "again"}}})
	require.NoError(t, err)
	n, err := s.PurgeAllDead(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, int64(0), s.Stats().Dead)
}

func ids(ms []store.Message) []store.ID {
	out := make([]store.ID, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestIdempotencyKey(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, testOptions(vfs.NewMem(), 2))
	defer s.Close()
	a := msgAt(0, time.Second, "a")
	a.Key = "order-1"
	far := msgAt(1, 3*time.Hour, "far")
	far.Key = "order-2"
	res, err := s.Append(ctx, []store.Message{a, a, far})
	require.NoError(t, err)
	require.False(t, res[0].Existing)
	require.Equal(t, store.Appended{ID: res[0].ID, Existing: true}, res[1])
	again, err := s.Append(ctx, []store.Message{far, a})
	require.NoError(t, err)
	require.Equal(t, []store.Appended{{ID: res[2].ID, Existing: true}, {ID: res[0].ID, Existing: true}}, again)
	// Dead letters keep their key; delivered messages release it.
	_, err = s.Resolve(ctx, store.Batch{Dead: []store.Dead{{ID: res[2].ID, Reason: "x"}}, Done: []store.Done{{ID: res[0].ID}}})
	require.NoError(t, err)
	again, err = s.Append(ctx, []store.Message{far, a})
	require.NoError(t, err)
	require.Equal(t, store.Appended{ID: res[2].ID, Existing: true}, again[0])
	require.False(t, again[1].Existing)
	require.NotEqual(t, res[0].ID, again[1].ID)
	// Purging a dead letter releases its key.
	_, err = s.PurgeDead(ctx, []store.ID{res[2].ID})
	require.NoError(t, err)
	again, err = s.Append(ctx, []store.Message{far})
	require.NoError(t, err)
	require.False(t, again[0].Existing)
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, testOptions(vfs.NewMem(), 2))
	defer s.Close()
	big := make([]byte, DefaultMaxPayload+1)
	cases := map[string]store.Message{
		"shard":   {Shard: 2},
		"neg":     {Shard: -1},
		"id set":  {ID: 5},
		"payload": {Payload: big},
		"dest":    {Dest: string(make([]byte, store.MaxDestLen+1))},
		"key":     {Key: string(make([]byte, store.MaxKeyLen+1))},
		"headers": {Headers: make([]store.Header, store.MaxHeaders+1)},
		"expires": {Expires: -1},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := s.Append(ctx, []store.Message{msgAt(0, 0, "ok"), m})
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
	require.Zero(t, s.Stats().PendingTotal, "rejected calls write nothing")
	_, err := s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: store.MakeID(3, 1<<16)}}})
	require.ErrorIs(t, err, ErrNotFound, "an ID of a shard the store lacks names nothing, as in the memory store")
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: store.MakeID(0, 1<<16), Reason: 9}}})
	require.ErrorIs(t, err, ErrInvalid)
	res, err := s.Append(ctx, []store.Message{msgAt(0, 0, "x")})
	require.NoError(t, err)
	_, err = s.Resolve(ctx, store.Batch{Done: []store.Done{{ID: res[0].ID}}, Update: []store.Update{{ID: res[0].ID}}})
	require.ErrorIs(t, err, ErrInvalid)
}

func TestOptionsValidate(t *testing.T) {
	bad := []Options{
		{},
		{Dir: "x", Shards: 257},
		{Dir: "x", Shards: -1},
		{Dir: "x", MaxBatch: maxBatchLimit + 1},
		{Dir: "x", MaxBatchDelay: 2 * time.Second},
		{Dir: "x", MaxPayload: -1},
		{Dir: "x", CacheSize: -1},
	}
	for _, o := range bad {
		require.ErrorIs(t, o.Validate(), ErrInvalid, "%+v", o)
	}
	require.NoError(t, Options{Dir: "x"}.Validate())
}

func TestShardsMismatchAndNew(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewMem()
	_, err := Open(ctx, testOptions(fs, 0))
	require.ErrorIs(t, err, ErrInvalid)
	s := openTest(t, testOptions(fs, 4))
	require.True(t, s.Recovery().Created)
	require.NoError(t, s.Close())
	_, err = Open(ctx, testOptions(fs, 8))
	require.ErrorIs(t, err, ErrInvalid)
	require.Contains(t, err.Error(), "created with 4 shards")
	s = openTest(t, testOptions(fs, 0))
	require.Equal(t, 4, s.Shards())
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Close(), ErrClosed)
	_, err = s.Append(ctx, []store.Message{msgAt(0, 0, "x")})
	require.ErrorIs(t, err, ErrClosed)
}

func TestIDText(t *testing.T) {
	for _, id := range []store.ID{1, store.MakeID(255, store.LocalMask), store.MakeID(3, 12345)} {
		got, err := store.ParseID(id.String())
		require.NoError(t, err)
		require.Equal(t, id, got)
	}
	for _, s := range []string{"", "xyz", "0000000000000!", "zzzzzzzzzzzzz", "vvvvvvvvvvvvv"} {
		_, err := store.ParseID(s)
		require.Error(t, err, s)
	}
	require.Less(t, store.MakeID(0, 5).String(), store.MakeID(1, 0).String())
}

func TestScanPaging(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, testOptions(vfs.NewMem(), 1))
	defer s.Close()
	var want []store.ID
	for round := 0; round < 5; round++ {
		var msgs []store.Message
		for i := 0; i < 40; i++ {
			d := time.Duration((i*7+round*13)%50) * time.Second
			if i%5 == 0 {
				d += 2 * time.Hour // far
			}
			msgs = append(msgs, msgAt(0, d, "p"))
		}
		_, err := s.Append(ctx, msgs)
		require.NoError(t, err)
	}
	all, _, err := s.Scan(ctx, store.ScanQuery{From: math.MinInt64, To: math.MaxInt64, Limit: 1 << 16})
	require.NoError(t, err)
	require.Len(t, all, 200)
	for i := 1; i < len(all); i++ {
		require.Negative(t, cmpDueID(all[i-1], all[i]))
	}
	want = ids(all)
	var got []store.ID
	var c store.Position
	for {
		page, next, err := s.Scan(ctx, store.ScanQuery{From: math.MinInt64, To: math.MaxInt64, Limit: 7, After: c})
		require.NoError(t, err)
		got = append(got, ids(page)...)
		c = next.Next
		if next.Done {
			break
		}
	}
	require.Equal(t, want, got)
	// A window.
	from, to := testNow.Add(10*time.Second).UnixNano(), testNow.Add(20*time.Second).UnixNano()
	win, _, err := s.Scan(ctx, store.ScanQuery{From: from, To: to})
	require.NoError(t, err)
	for _, m := range win {
		require.True(t, m.Due >= from && m.Due < to)
	}
	require.NotEmpty(t, win)
}

func TestContextCancelled(t *testing.T) {
	s := openTest(t, testOptions(vfs.NewMem(), 1))
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Get(ctx, store.MakeID(0, 1<<16))
	require.True(t, errors.Is(err, context.Canceled))
}

func TestCancelledAppendWritesNothing(t *testing.T) {
	s := openTest(t, testOptions(vfs.NewMem(), 1))
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Append(ctx, []store.Message{msgAt(0, 0, "x")})
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.Resolve(ctx, store.Batch{New: []store.Message{msgAt(0, 0, "x")}})
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, s.Stats().PendingTotal)
	require.NoError(t, s.Err())
}
