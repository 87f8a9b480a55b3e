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
	// 999 first deliveries 0, 1, …, 998 ms late: the nearest-rank p50 is the
	// 500th, 499 ms, reported at most 1/64 above.
	if d := res.P50 - 499*time.Millisecond; d < 0 || d > 499*time.Millisecond/64 {
		t.Fatalf("p50 %v", res.P50)
	}
	select {
	case <-r.Done():
		t.Fatal("done before every sequence fired")
	default:
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
