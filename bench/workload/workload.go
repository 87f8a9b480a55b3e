// Package workload is the shared workload of the Hourglass comparison
// benchmarks: N messages due uniformly over a window, scheduled by C
// producers, each payload carrying its sequence number and due time so the
// receiver alone can measure lateness and count lost, early and duplicated
// deliveries.
//
// The same code drives the in-module benchmarks (package bench) and the
// peer comparison (the nested module bench/peers), so every system in a
// table is measured with one definition of "late", "lost" and "early".
//
//	payload: | seq (8 B, LE) | due (8 B, LE, Unix ns) |
package workload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hourglassmq/hourglass/internal/hist"
)

// PayloadSize is the size of an encoded payload.
const PayloadSize = 16

// ErrShortPayload reports a payload too short to hold a sequence number and
// a due time.
var ErrShortPayload = errors.New("workload: short payload")

// Encode writes seq and due into p[:PayloadSize].
func Encode(p []byte, seq uint64, due time.Time) {
	binary.LittleEndian.PutUint64(p[0:8], seq)
	binary.LittleEndian.PutUint64(p[8:16], uint64(due.UnixNano()))
}

// Decode reads what Encode wrote.
func Decode(p []byte) (seq uint64, dueNs int64, err error) {
	if len(p) < PayloadSize {
		return 0, 0, fmt.Errorf("%w: %d bytes", ErrShortPayload, len(p))
	}
	return binary.LittleEndian.Uint64(p[0:8]), int64(binary.LittleEndian.Uint64(p[8:16])), nil
}

// Dues returns n due times uniform over [start, start+window), in a random
// order fixed by seed (producers schedule them in that order, so the systems
// see out-of-order due times as in production).
func Dues(n int, start time.Time, window time.Duration, seed uint64) []time.Time {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]time.Time, n)
	for i := range out {
		out[i] = start.Add(time.Duration(r.Int64N(max(1, int64(window)))))
	}
	return out
}

// Produce calls do from producers goroutines with consecutive batches of at
// most batch sequence numbers [lo, hi) until n are handed out, and returns
// the first error. It stops handing out batches after an error.
func Produce(n, producers, batch int, do func(lo, hi int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	var failed atomic.Bool
	for range max(1, producers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				lo := int(next.Add(int64(batch)) - int64(batch))
				if lo >= n {
					return
				}
				if err := do(lo, min(n, lo+batch)); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// Recorder counts deliveries per sequence number and keeps a histogram of
// lateness (receive time minus due time). Its methods are safe for
// concurrent use.
type Recorder struct {
	n       int
	seen    []atomic.Uint32 // deliveries per sequence number
	submit  []atomic.Int64  // Unix ns each sequence number was handed to the system
	fired   atomic.Int64    // first deliveries
	dups    atomic.Int64
	early   atomic.Int64
	foreign atomic.Int64   // undecodable or out-of-range payloads
	overdue atomic.Int64   // delivered messages submitted after their due time
	late    hist.Histogram // signed: an early delivery counts below zero
	done    chan struct{}
	last    atomic.Int64 // Unix ns of the last first delivery
}

// NewRecorder returns a recorder for sequence numbers [0, n).
func NewRecorder(n int) *Recorder {
	return &Recorder{n: n, seen: make([]atomic.Uint32, n), submit: make([]atomic.Int64, n), done: make(chan struct{})}
}

// Submit records that sequence numbers [lo, hi) are handed to the system at
// at. Lateness is counted from the later of due and submit time, so a
// message scheduled after its due time (the producers fell behind) is
// charged only the system's own delay; Result.Overdue counts them.
func (r *Recorder) Submit(lo, hi int, at time.Time) {
	ns := at.UnixNano()
	for i := lo; i < hi; i++ {
		r.submit[i].Store(ns)
	}
}

// Deliver records one delivery of payload p received at now. It returns
// an error for a payload this run did not send.
func (r *Recorder) Deliver(p []byte, now time.Time) error {
	seq, due, err := Decode(p)
	if err != nil {
		r.foreign.Add(1)
		return err
	}
	return r.DeliverSeq(seq, due, now)
}

// DeliverSeq records one delivery of seq due at dueNs received at now.
func (r *Recorder) DeliverSeq(seq uint64, dueNs int64, now time.Time) error {
	if seq >= uint64(r.n) {
		r.foreign.Add(1)
		return fmt.Errorf("workload: sequence %d out of range [0, %d)", seq, r.n)
	}
	nowNs := now.UnixNano()
	if nowNs < dueNs {
		r.early.Add(1)
	}
	if r.seen[seq].Add(1) > 1 {
		r.dups.Add(1)
		return nil
	}
	from := dueNs
	if sub := r.submit[seq].Load(); sub > dueNs {
		from = sub
		r.overdue.Add(1)
	}
	late := nowNs - from
	r.late.Record(time.Duration(late))
	r.last.Store(nowNs)
	if r.fired.Add(1) == int64(r.n) {
		close(r.done)
	}
	return nil
}

// Done is closed when every sequence number has been delivered once.
func (r *Recorder) Done() <-chan struct{} { return r.done }

// Fired is the number of distinct sequence numbers delivered so far.
func (r *Recorder) Fired() int64 { return r.fired.Load() }

// Result is a recorder's summary.
type Result struct {
	N, Fired, Lost, Early, Duplicates, Foreign int64
	// Overdue counts fired messages submitted after their due time.
	Overdue int64
	// P50, P99 and Max are lateness percentiles over first deliveries,
	// counted from the later of due and submit time; negative means early.
	// They come from internal/hist, as the engine's and the load
	// generator's do: nearest rank, never below the exact value and at
	// most 1/64 of its magnitude above it; Max is exact.
	P50, P99, Max time.Duration
	// Last is the wall time of the last first delivery (zero if none).
	Last time.Time
}

// Result summarises what has been recorded so far.
func (r *Recorder) Result() Result {
	res := Result{
		N: int64(r.n), Fired: r.fired.Load(), Early: r.early.Load(),
		Duplicates: r.dups.Load(), Foreign: r.foreign.Load(), Overdue: r.overdue.Load(),
	}
	res.Lost = res.N - res.Fired
	late := r.late.Summary()
	res.P50, res.P99, res.Max = late.P50, late.P99, late.Max
	if l := r.last.Load(); l != 0 {
		res.Last = time.Unix(0, l)
	}
	return res
}
