package bench

import (
	"container/heap"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/wheel"
)

// BenchmarkWheelVsHeap inserts 100k entries due uniformly over one minute
// and pops them all by advancing in 1 ms steps, through the timing wheel and
// through a container/heap binary heap, the structure a user would write
// instead. It reports ns per entry (insert plus pop).
func BenchmarkWheelVsHeap(b *testing.B) {
	const n = 100_000
	const span = int64(time.Minute)
	const step = int64(time.Millisecond)
	r := rand.New(rand.NewPCG(1, 2))
	dues := make([]int64, n)
	for i := range dues {
		dues[i] = step + r.Int64N(span)
	}
	b.Run("wheel", func(b *testing.B) {
		var out []uint64
		for b.Loop() {
			w, err := wheel.New(wheel.Options{Capacity: n})
			if err != nil {
				b.Fatal(err)
			}
			for i, d := range dues {
				w.Insert(d, uint64(i))
			}
			got := 0
			for now := step; got < n; now += step {
				out = w.Advance(now, out[:0])
				got += len(out)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/entry")
	})
	b.Run("heap", func(b *testing.B) {
		for b.Loop() {
			h := make(dueHeap, 0, n)
			for _, d := range dues {
				heap.Push(&h, d)
			}
			for now := step; len(h) > 0; now += step {
				for len(h) > 0 && h[0] <= now {
					heap.Pop(&h)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/entry")
	})
}

// dueHeap is a min-heap of due times for container/heap.
type dueHeap []int64

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
