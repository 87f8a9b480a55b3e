package admin

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/hourglassmq/hourglass/engine"
)

// The overview's counts come from Engine.Summary, which reads every pending
// message: far too dear for each page view. So a goroutine per Handler keeps
// them: it recomputes them every RefreshInterval while someone has asked for
// them in the last three intervals (an unwatched dashboard costs nothing),
// and at once when the first viewer arrives. Views read the cached copy. The
// same loop samples Stats (atomics, cheap) every interval, and the rates
// are the differences between the oldest and newest of the last samples.

// Summary geometry: one pass gives both histograms. Minute buckets over a
// day, plus one bucket for everything later.
const (
	summaryBucket  = time.Minute
	summaryBuckets = 24*60 + 1
	// rateSamples spans the rate window: 6 intervals (a minute by default).
	rateSamples = 7
	// maxDests bounds the destinations listed; the rest are summed.
	maxDests = 100
)

// summaryOut is GET /api/v1/summary.
type summaryOut struct {
	// AsOf is when the counts were taken; empty until the first pass ends.
	AsOf string `json:"as_of"`
	// Refreshing: a pass is running now.
	Refreshing bool `json:"refreshing"`
	// RefreshSeconds is the refresh interval while watched.
	RefreshSeconds float64 `json:"refresh_seconds"`
	// Error is the last pass's failure, if it failed.
	Error string `json:"error,omitempty"`
	// Pending counts every pending message (the store's, not only RAM's).
	Pending int64 `json:"pending"`
	// ByDest lists the destinations with the most pending messages, most
	// first; OtherDests more destinations hold OtherCount messages.
	ByDest     []destCount `json:"by_dest"`
	OtherDests int         `json:"other_dests"`
	OtherCount int64       `json:"other_count"`
	// NextHour has 60 one-minute buckets from AsOf, NextDay 24 one-hour
	// buckets; overdue messages count in the first bucket of each. Later
	// counts messages due more than a day ahead.
	NextHour histogramOut `json:"next_hour"`
	NextDay  histogramOut `json:"next_day"`
	Later    int64        `json:"later"`
	// Dead is the number of dead letters.
	Dead int64 `json:"dead"`
}

type destCount struct {
	Dest  string `json:"dest"`
	Count int64  `json:"count"`
}

type histogramOut struct {
	Start         string  `json:"start"`
	BucketSeconds int     `json:"bucket_seconds"`
	Counts        []int64 `json:"counts"`
}

// sample is one Stats reading for rates.
type sample struct {
	at time.Time // monotonic
	st engine.Stats
}

// overview is the cache and its refresher.
type overview struct {
	eng      Engine
	interval time.Duration
	kick     chan struct{}
	pass     sync.Mutex // serializes passes: one Summary at a time

	mu         sync.Mutex // guards the fields below
	cur        summaryOut
	have       bool
	refreshing bool
	lastView   time.Time
	samples    []sample
}

func newOverview(eng Engine, interval time.Duration) *overview {
	return &overview{eng: eng, interval: interval, kick: make(chan struct{}, 1)}
}

// run is the refresher loop; it returns when ctx ends.
func (o *overview) run(ctx context.Context) {
	t := time.NewTicker(o.interval)
	defer t.Stop()
	o.sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			o.sample()
			if o.watched() {
				o.refresh(ctx)
			}
		case <-o.kick:
			o.refresh(ctx)
		}
	}
}

func (o *overview) watched() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.lastView.IsZero() && time.Since(o.lastView) < 3*o.interval
}

func (o *overview) sample() {
	s := sample{at: time.Now(), st: o.eng.Stats()}
	o.mu.Lock()
	o.samples = append(o.samples, s)
	if len(o.samples) > rateSamples {
		o.samples = slices.Delete(o.samples, 0, len(o.samples)-rateSamples)
	}
	o.mu.Unlock()
}

// view returns the cached summary and notes the viewer; the first viewer
// starts a pass.
func (o *overview) view() summaryOut {
	o.mu.Lock()
	o.lastView = time.Now()
	out := o.cur
	out.Refreshing = o.refreshing
	out.RefreshSeconds = o.interval.Seconds()
	start := !o.have && !o.refreshing
	o.mu.Unlock()
	if start {
		select {
		case o.kick <- struct{}{}:
		default:
		}
	}
	return out
}

// refresh runs one Summary pass and replaces the cache.
func (o *overview) refresh(ctx context.Context) {
	o.pass.Lock()
	defer o.pass.Unlock()
	o.mu.Lock()
	o.refreshing = true
	o.mu.Unlock()
	out, err := o.compute(ctx)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refreshing = false
	if err != nil {
		o.cur.Error = err.Error()
		o.have = true
		return
	}
	o.cur, o.have = out, true
}

func (o *overview) compute(ctx context.Context) (summaryOut, error) {
	sum, err := o.eng.Summary(ctx, summaryBucket, summaryBuckets)
	if err != nil {
		return summaryOut{}, err
	}
	dead, err := o.deadCount(ctx)
	if err != nil {
		return summaryOut{}, err
	}
	out := summaryOut{AsOf: timeJSON(sum.Start), Pending: sum.Total, Dead: dead}
	for d, n := range sum.ByDest {
		out.ByDest = append(out.ByDest, destCount{d, n})
	}
	slices.SortFunc(out.ByDest, func(a, b destCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Dest, b.Dest))
	})
	if len(out.ByDest) > maxDests {
		for _, d := range out.ByDest[maxDests:] {
			out.OtherCount += d.Count
		}
		out.OtherDests = len(out.ByDest) - maxDests
		out.ByDest = out.ByDest[:maxDests]
	}
	if out.ByDest == nil {
		out.ByDest = []destCount{}
	}
	start := timeJSON(sum.Start)
	out.NextHour = histogramOut{Start: start, BucketSeconds: 60, Counts: make([]int64, 60)}
	out.NextDay = histogramOut{Start: start, BucketSeconds: 3600, Counts: make([]int64, 24)}
	for i, n := range sum.Buckets {
		switch {
		case i >= 24*60:
			out.Later += n
		default:
			if i < 60 {
				out.NextHour.Counts[i] = n
			}
			out.NextDay.Counts[i/60] += n
		}
	}
	return out, nil
}

// deadCount reads the store's dead-letter count.
func (o *overview) deadCount(context.Context) (int64, error) {
	return o.eng.Stats().Store.Dead, nil
}

// ratesOut are per-second rates over the sampled window.
type ratesOut struct {
	WindowSeconds float64 `json:"window_seconds"`
	Scheduled     float64 `json:"scheduled"`
	Fired         float64 `json:"fired"`
	Delivered     float64 `json:"delivered"`
	Retried       float64 `json:"retried"`
	DeadLettered  float64 `json:"dead_lettered"`
	Expired       float64 `json:"expired"`
}

// rates compares the oldest sample with now; nil before the first sample.
func (o *overview) rates(now engine.Stats) *ratesOut {
	o.mu.Lock()
	var first sample
	ok := len(o.samples) > 0
	if ok {
		first = o.samples[0]
	}
	o.mu.Unlock()
	if !ok {
		return nil
	}
	dt := time.Since(first.at).Seconds()
	if dt <= 0 {
		return nil
	}
	rate := func(a, b uint64) float64 {
		if b < a {
			return 0
		}
		return float64(b-a) / dt
	}
	f := &first.st
	return &ratesOut{
		WindowSeconds: dt,
		Scheduled:     rate(f.Scheduled, now.Scheduled),
		Fired:         rate(f.Fired, now.Fired),
		Delivered:     rate(f.Delivered, now.Delivered),
		Retried:       rate(f.Retried, now.Retried),
		DeadLettered:  rate(f.DeadLettered, now.DeadLettered),
		Expired:       rate(f.Expired, now.Expired),
	}
}
