package engine

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hourglassmq/hourglass/store"
)

// Cursor is a position in (due, ID) order for paging through List. The zero
// Cursor starts at the beginning.
type Cursor struct {
	Due int64 // unix nanoseconds
	ID  ID
}

// ListQuery selects pending messages.
type ListQuery struct {
	// From and To bound the due time: From <= due < To. Zero From means
	// the beginning of time; zero To means no upper bound. Bounds outside
	// the times Hourglass holds select what they would (nothing is due
	// there).
	From, To time.Time
	// Dest, when set, keeps only destinations starting with it.
	Dest string
	// After resumes a previous List (its returned cursor).
	After Cursor
	// Limit caps the page: 0 means DefaultListLimit; at most MaxListLimit.
	Limit int
}

// List page sizes.
const (
	DefaultListLimit = 100
	MaxListLimit     = 10000
	// MaxSummaryBuckets bounds Summary's bucket count.
	MaxSummaryBuckets = 100000
)

// DeadLetter is a message that exhausted its retries or was rejected.
type DeadLetter struct {
	ID       ID
	Message  Message
	Attempts int
	Reason   string
	DeadAt   time.Time
}

// List returns pending messages in due order (ties by ID), filtered by
// q, and the cursor of the next page (zero when there are no more). It
// reads the store, so it sees messages beyond the window.
func (e *Engine) List(ctx context.Context, q ListQuery) ([]Info, Cursor, error) {
	if err := e.enter(); err != nil {
		return nil, Cursor{}, err
	}
	defer e.leave()
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return nil, Cursor{}, invalidf("list: Limit = %d; want 0 (default %d) or 1..%d", q.Limit, DefaultListLimit, MaxListLimit)
	}
	from, to := boundOf(q.From, 0), boundOf(q.To, math.MaxInt64)
	after := store.Position{Due: q.After.Due, ID: q.After.ID}
	var all []store.Message
	for i := range e.shards {
		sq := store.ScanQuery{Shard: i, From: from, To: to, After: after, Limit: 1024}
		for got := 0; got <= limit; { // one more than a page: is there a next?
			page, p, err := e.st.Scan(ctx, sq)
			if err != nil {
				return nil, Cursor{}, fmt.Errorf("engine: list: %w", e.storeErr(err))
			}
			for k := range page {
				if strings.HasPrefix(page[k].Dest, q.Dest) {
					all = append(all, page[k])
					got++
				}
			}
			if p.Done {
				break
			}
			sq.After = p.Next
		}
	}
	slices.SortFunc(all, func(a, b store.Message) int {
		if store.PositionOf(&a).Less(store.PositionOf(&b)) {
			return -1
		}
		return 1
	})
	var next Cursor
	if len(all) > limit {
		all = all[:limit]
		next = Cursor{Due: all[limit-1].Due, ID: all[limit-1].ID}
	}
	out := make([]Info, len(all))
	for i := range all {
		out[i] = infoOf(&all[i], StatePending)
	}
	return out, next, nil
}

// Summary counts pending messages by destination and by due-time bucket.
type Summary struct {
	Total  int64
	ByDest map[string]int64
	// Buckets[i] counts messages due in [Start+i*Bucket, Start+(i+1)*Bucket);
	// overdue messages count in bucket 0, later ones in the last.
	Start   time.Time
	Bucket  time.Duration
	Buckets []int64
}

// Summary pages through every pending message (a diagnostic: it reads them
// all) and counts them by destination and by due bucket of width bucket
// (default 1 minute) starting now, over n buckets (default 60, at most
// MaxSummaryBuckets; later ones count in the last).
func (e *Engine) Summary(ctx context.Context, bucket time.Duration, n int) (Summary, error) {
	switch {
	case bucket < 0:
		return Summary{}, invalidf("summary: bucket %v is negative; want 0 (default 1m) or positive", bucket)
	case n < 0 || n > MaxSummaryBuckets:
		return Summary{}, invalidf("summary: %d buckets; want 0 (default 60) or 1..%d", n, MaxSummaryBuckets)
	}
	if bucket == 0 {
		bucket = time.Minute
	}
	if n == 0 {
		n = 60
	}
	now := e.clock.Now()
	sum := Summary{ByDest: map[string]int64{}, Start: now, Bucket: bucket, Buckets: make([]int64, n)}
	q := ListQuery{Limit: MaxListLimit}
	for {
		page, next, err := e.List(ctx, q)
		if err != nil {
			return Summary{}, err
		}
		for _, in := range page {
			sum.Total++
			sum.ByDest[in.Message.Dest]++
			b := int64(max(0, in.Message.Due.Sub(now)) / bucket)
			sum.Buckets[min(b, int64(n-1))]++
		}
		if next.ID == 0 {
			return sum, nil
		}
		q.After = next
	}
}

// DeadLetters pages through dead letters in ID order; pass the returned ID
// as after for the next page (0 when there are no more). limit defaults to
// 100, at most store.MaxDeadLimit.
func (e *Engine) DeadLetters(ctx context.Context, after ID, limit int) ([]DeadLetter, ID, error) {
	if err := e.enter(); err != nil {
		return nil, 0, err
	}
	defer e.leave()
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > store.MaxDeadLimit:
		return nil, 0, invalidf("dead letters: limit = %d; want 0 (default %d) or 1..%d", limit, DefaultListLimit, store.MaxDeadLimit)
	}
	ds, next, err := e.st.ListDead(ctx, store.DeadQuery{After: after, Limit: limit})
	if err != nil {
		return nil, 0, fmt.Errorf("engine: dead letters: %w", e.storeErr(err))
	}
	out := make([]DeadLetter, len(ds))
	for i := range ds {
		d := &ds[i]
		out[i] = DeadLetter{ID: d.Message.ID, Message: fromStore(&d.Message), Attempts: int(d.Message.Attempt),
			Reason: d.Reason, DeadAt: time.Unix(0, d.DeadAt)}
	}
	return out, next, nil
}

// ReplayDead moves dead letters back to pending, due at due (zero or past:
// now), with their attempt count reset and the same IDs. All-or-nothing:
// if one ID is not a dead letter nothing happens and the error wraps
// ErrNotFound.
func (e *Engine) ReplayDead(ctx context.Context, ids []ID, due time.Time) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	dueNs, err := dueOf("ReplayDead due", due, e.clock.Now().UnixNano())
	if err != nil {
		return err
	}
	if len(ids) > store.MaxCallMessages {
		return invalidf("replay: %d ids, more than %d in one call", len(ids), store.MaxCallMessages)
	}
	if err := e.st.ReplayDead(ctx, ids, dueNs); err != nil {
		return fmt.Errorf("engine: replay: %w", e.storeErr(err))
	}
	return nil
}

// PurgeDead deletes the named dead letters (nil ids: all of them) and
// returns how many it deleted. All-or-nothing like ReplayDead.
func (e *Engine) PurgeDead(ctx context.Context, ids []ID) (int, error) {
	if err := e.enter(); err != nil {
		return 0, err
	}
	defer e.leave()
	var n int
	var err error
	switch {
	case ids == nil:
		n, err = e.st.PurgeAllDead(ctx)
	case len(ids) > store.MaxCallMessages:
		return 0, invalidf("purge: %d ids, more than %d in one call", len(ids), store.MaxCallMessages)
	default:
		n, err = e.st.PurgeDead(ctx, ids)
	}
	if err != nil {
		return 0, fmt.Errorf("engine: purge: %w", e.storeErr(err))
	}
	return n, nil
}
