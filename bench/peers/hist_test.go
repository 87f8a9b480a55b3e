package main

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hourglassmq/hourglass/internal/hist"
)

// BenchmarkRecord compares, in one run, the cost of recording one latency
// in Hourglass's histogram (internal/hist: atomic buckets, 64 sub-buckets
// per power of two) with HdrHistogram's Go port at 2 significant digits
// (128 sub-buckets per power of two), alone and behind the mutex it needs
// when several goroutines record, as all of Hourglass's users do. The
// "parallel" cases record from GOMAXPROCS goroutines at once.
//
//	cd bench/peers && go test -c -o /tmp/peers.test .
//	for i in $(seq 20); do /tmp/peers.test -test.run '^$' -test.bench Record -test.benchtime 300ms; done >/tmp/rec.txt
//	go run golang.org/x/perf/cmd/benchstat@latest /tmp/rec.txt
//
// Interleaving the cases run by run lets them share the machine's noise.
// The result chose internal/hist; its package doc gives the figures.
func BenchmarkRecord(b *testing.B) {
	vals := latencies()
	b.Run("hourglass", func(b *testing.B) {
		var h hist.Histogram
		i := 0
		for b.Loop() {
			h.Record(vals[i&(len(vals)-1)])
			i++
		}
	})
	b.Run("hdr", func(b *testing.B) {
		h := newHDR()
		i := 0
		for b.Loop() {
			_ = h.RecordValue(int64(vals[i&(len(vals)-1)]))
			i++
		}
	})
	b.Run("hdr-mutex", func(b *testing.B) {
		h := newHDR()
		var mu sync.Mutex
		i := 0
		for b.Loop() {
			mu.Lock()
			_ = h.RecordValue(int64(vals[i&(len(vals)-1)]))
			mu.Unlock()
			i++
		}
	})
	b.Run("hourglass-parallel", func(b *testing.B) {
		var h hist.Histogram
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				h.Record(vals[i&(len(vals)-1)])
				i++
			}
		})
	})
	b.Run("hdr-mutex-parallel", func(b *testing.B) {
		h := newHDR()
		var mu sync.Mutex
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				mu.Lock()
				_ = h.RecordValue(int64(vals[i&(len(vals)-1)]))
				mu.Unlock()
				i++
			}
		})
	})
}

// newHDR returns an HdrHistogram covering 1 ns to 1 h at 2 significant
// digits, finer than internal/hist's 1/64.
func newHDR() *hdrhistogram.Histogram { return hdrhistogram.New(1, int64(time.Hour), 2) }

// latencies returns 4096 latencies, exponential with a 2 ms mean.
func latencies() []time.Duration {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 4096)
	for i := range vals {
		vals[i] = time.Duration(rng.ExpFloat64() * 2e6)
	}
	return vals
}
