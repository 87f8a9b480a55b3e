package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hourglassmq/hourglass/wal"
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
	// the beginning of time; zero To means no upper bound.
	From, To time.Time
	// Dest, when set, keeps only destinations starting with it.
	Dest string
	// After resumes a previous List (its returned cursor).
	After Cursor
	// Limit caps the page. Default 100, at most 10000.
	Limit int
}

func (q *ListQuery) bounds() (from, to int64) {
	from, to = 0, 1<<62
	if !q.From.IsZero() {
		from = q.From.UnixNano()
	}
	if !q.To.IsZero() {
		to = q.To.UnixNano()
	}
	return from, to
}

func (q *ListQuery) match(m *wal.Message) bool {
	from, to := q.bounds()
	if m.Due < from || m.Due >= to {
		return false
	}
	if q.Dest != "" && !strings.HasPrefix(m.Dest, q.Dest) {
		return false
	}
	c := q.After
	if c.ID != 0 && (m.Due < c.Due || (m.Due == c.Due && m.ID <= c.ID)) {
		return false
	}
	return true
}

func cmpMsg(a, b wal.Message) int {
	switch {
	case a.Due != b.Due:
		if a.Due < b.Due {
			return -1
		}
		return 1
	case a.ID < b.ID:
		return -1
	case a.ID > b.ID:
		return 1
	}
	return 0
}

// List returns pending messages in due order (ties by ID), filtered by
// q, and the cursor of the next page (zero when there are no more). In
// durable mode it reads the store, so it sees messages beyond the window.
func (e *Engine) List(ctx context.Context, q ListQuery) ([]Info, Cursor, error) {
	if err := e.enter(); err != nil {
		return nil, Cursor{}, err
	}
	defer e.leave()
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 10000)
	var all []wal.Message
	if e.store == nil {
		for _, s := range e.shards {
			r := e.ask(s, cmd{kind: cmdList, list: &q})
			all = append(all, r.msgs...)
		}
	} else {
		from, to := q.bounds()
		if q.After.ID != 0 {
			from = max(from, q.After.Due)
		}
		for i := range e.shards {
			var cur wal.Cursor
			got := 0
			for got < limit {
				page, c, err := e.store.Scan(ctx, wal.ScanQuery{Shard: i, From: from, To: to, After: cur, Limit: 1024})
				if err != nil {
					return nil, Cursor{}, fmt.Errorf("engine: list: %w", err)
				}
				for k := range page {
					if q.match(&page[k]) {
						all = append(all, page[k])
						got++
					}
				}
				if c.End() {
					break
				}
				cur = c
			}
		}
	}
	slices.SortFunc(all, cmpMsg)
	var next Cursor
	if len(all) > limit {
		all = all[:limit]
		last := all[limit-1]
		next = Cursor{Due: last.Due, ID: last.ID}
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
	// overdue messages count in bucket 0.
	Start   time.Time
	Bucket  time.Duration
	Buckets []int64
}

// Summary pages through every pending message (a diagnostic: it reads them
// all) and counts them by destination and by due bucket of width bucket
// (default 1 minute) starting now, over n buckets (default 60; later ones
// count in the last).
func (e *Engine) Summary(ctx context.Context, bucket time.Duration, n int) (Summary, error) {
	if bucket <= 0 {
		bucket = time.Minute
	}
	if n <= 0 {
		n = 60
	}
	now := e.clock.Now()
	sum := Summary{ByDest: map[string]int64{}, Start: now, Bucket: bucket, Buckets: make([]int64, n)}
	q := ListQuery{Limit: 10000}
	for {
		page, next, err := e.List(ctx, q)
		if err != nil {
			return Summary{}, err
		}
		for _, in := range page {
			sum.Total++
			sum.ByDest[in.Message.Dest]++
			b := int(max(0, in.Message.Due.Sub(now)) / bucket)
			sum.Buckets[min(b, n-1)]++
		}
		if next.ID == 0 {
			return sum, nil
		}
		q.After = next
	}
}

// DeadLetters pages through dead letters in ID order; pass the returned ID
// as after for the next page (0 when there are no more). limit defaults to
// 100.
func (e *Engine) DeadLetters(ctx context.Context, after ID, limit int) ([]DeadLetter, ID, error) {
	if err := e.enter(); err != nil {
		return nil, 0, err
	}
	defer e.leave()
	if limit <= 0 {
		limit = 100
	}
	if e.store == nil {
		e.deadMu.Lock()
		var out []DeadLetter
		for id, d := range e.dead {
			if id > after {
				out = append(out, d)
			}
		}
		e.deadMu.Unlock()
		slices.SortFunc(out, func(a, b DeadLetter) int {
			if a.ID < b.ID {
				return -1
			}
			return 1
		})
		var next ID
		if len(out) > limit {
			out = out[:limit]
			next = out[limit-1].ID
		}
		return out, next, nil
	}
	ds, next, err := e.store.ListDead(ctx, wal.DeadQuery{After: after, Limit: limit})
	if err != nil {
		return nil, 0, fmt.Errorf("engine: dead letters: %w", err)
	}
	out := make([]DeadLetter, len(ds))
	for i := range ds {
		d := &ds[i]
		out[i] = DeadLetter{ID: d.Message.ID, Message: fromWal(&d.Message), Attempts: int(d.Message.Attempt),
			Reason: d.Reason, DeadAt: time.Unix(0, d.DeadAt)}
	}
	return out, next, nil
}

// ReplayDead moves dead letters back to pending, due at due (zero = now),
// with their attempt count reset and the same IDs. All-or-nothing: if one
// ID is not a dead letter nothing happens and the error wraps ErrNotFound.
func (e *Engine) ReplayDead(ctx context.Context, ids []ID, due time.Time) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	dueNs := e.clock.Now().UnixNano()
	if !due.IsZero() {
		dueNs = due.UnixNano()
	}
	if e.store == nil {
		e.deadMu.Lock()
		for _, id := range ids {
			if _, ok := e.dead[id]; !ok {
				e.deadMu.Unlock()
				return fmt.Errorf("engine: replay %s: %w", id, ErrNotFound)
			}
		}
		per := make([][]wal.Message, len(e.shards))
		for _, id := range ids {
			d := e.dead[id]
			delete(e.dead, id)
			m := d.Message
			wm := wal.Message{ID: id, Shard: id.Shard(), Due: dueNs, Dest: m.Dest, Key: m.Key,
				Headers: toWalHeaders(m.Headers), Payload: m.Payload}
			if !m.Expires.IsZero() {
				wm.Expires = m.Expires.UnixNano()
			}
			per[id.Shard()] = append(per[id.Shard()], wm)
		}
		e.deadMu.Unlock()
		for i, p := range per {
			if len(p) > 0 {
				ch := replyPool.Get().(chan reply)
				e.postShard(i, p, ch)
				<-ch
				replyPool.Put(ch)
			}
		}
		return nil
	}
	msgs, err := e.store.ReplayDead(ctx, ids, dueNs)
	if err != nil {
		if errors.Is(err, wal.ErrNotFound) {
			return fmt.Errorf("engine: replay: %w: %w", ErrNotFound, err)
		}
		return fmt.Errorf("engine: replay: %w", err)
	}
	e.postInserts(msgs)
	return nil
}

// PurgeDead deletes the named dead letters (nil ids: all of them) and
// returns how many it deleted.
func (e *Engine) PurgeDead(ctx context.Context, ids []ID) (int, error) {
	if err := e.enter(); err != nil {
		return 0, err
	}
	defer e.leave()
	if e.store == nil {
		e.deadMu.Lock()
		var gone []DeadLetter
		if ids == nil {
			for _, d := range e.dead {
				gone = append(gone, d)
			}
		} else {
			for _, id := range ids {
				if d, ok := e.dead[id]; ok {
					gone = append(gone, d)
				}
			}
		}
		for _, d := range gone {
			delete(e.dead, d.ID)
		}
		e.deadMu.Unlock()
		for _, d := range gone {
			e.forgetKey(wal.Message{ID: d.ID, Key: d.Message.Key})
		}
		return len(gone), nil
	}
	var n int
	var err error
	if ids == nil {
		n, err = e.store.PurgeAllDead(ctx)
	} else {
		n, err = e.store.PurgeDead(ctx, ids)
	}
	if err != nil {
		return 0, fmt.Errorf("engine: purge: %w", err)
	}
	return n, nil
}
