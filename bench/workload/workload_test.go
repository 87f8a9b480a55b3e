package workload

import (
	"testing"
	"time"
)

func TestRecorderCounts(t *testing.T) {
	const n = 1000
	due := time.Unix(100, 0)
	r := NewRecorder(n)
	p := make([]byte, PayloadSize)
	for i := range n - 1 {
		Encode(p, uint64(i), due)
		if err := r.Deliver(p, due.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	Encode(p, 0, due)
	_ = r.Deliver(p, due.Add(-time.Second)) // a duplicate, early
	if err := r.Deliver(p[:3], due); err == nil {
		t.Fatal("short payload accepted")
	}
	res := r.Result()
	if res.Fired != n-1 || res.Lost != 1 || res.Early != 1 || res.Duplicates != 1 || res.Foreign != 1 {
		t.Fatalf("counts: %+v", res)
	}
	if res.Max != 998*time.Millisecond {
		t.Fatalf("max %v", res.Max)
	}
	if d := res.P50 - 499*time.Millisecond; d < -35*time.Millisecond || d > 0 {
		t.Fatalf("p50 %v", res.P50)
	}
	select {
	case <-r.Done():
		t.Fatal("done before every sequence fired")
	default:
	}
}

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 15, 16, 17, 31, 32, 1000, 1 << 40, 1<<63 - 1} {
		b := bucketOf(v)
		lo := bucketLow(b)
		if lo > v || (v >= subBuckets && float64(v-lo) > float64(v)/subBuckets) {
			t.Fatalf("v=%d bucket %d low %d", v, b, lo)
		}
	}
}

func TestProduceCovers(t *testing.T) {
	seen := make([]int, 10007)
	var mu = make(chan struct{}, 1)
	err := Produce(len(seen), 3, 100, func(lo, hi int) error {
		mu <- struct{}{}
		for i := lo; i < hi; i++ {
			seen[i]++
		}
		<-mu
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("seq %d handed out %d times", i, c)
		}
	}
}
