package engine

import (
	"context"
	"errors"
	"flag"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// BenchmarkHeapPerPending measures the heap a message costs while it waits
// in the window: n messages of a 100-byte payload are scheduled on a
// durable store, due within the window, and the live heap after a GC is
// compared with the engine's before. The payload's own bytes are reported
// apart (payload-B/pending); B/pending excludes them.
func BenchmarkHeapPerPending(b *testing.B) {
	const n = 1_000_000
	const payload = 100
	for b.Loop() {
		ctx := context.Background()
		e, err := Open(ctx, Options{Dir: b.TempDir(), Window: 2 * time.Hour, Logger: quietLogger(),
			Queues: []Queue{{Name: "q", Handler: func(context.Context, *Delivery) error { return nil }}}})
		if err != nil {
			b.Fatal(err)
		}
		base := liveHeap()
		msgs := make([]Message, 1000)
		for i := 0; i < n; i += len(msgs) {
			for k := range msgs {
				msgs[k] = Message{Dest: "local://q", Due: time.Now().Add(time.Hour + time.Duration(i+k)*time.Microsecond), Payload: make([]byte, payload)}
			}
			if _, err := e.ScheduleBatch(ctx, msgs); err != nil {
				b.Fatal(err)
			}
		}
		if err := e.WaitIdle(ctx); err != nil {
			b.Fatal(err)
		}
		if got := e.Stats().PendingTotal; got != n {
			b.Fatalf("%d in RAM, want %d", got, n)
		}
		clear(msgs)
		heap := liveHeap() - base
		b.ReportMetric(float64(heap)/n-payload, "B/pending")
		b.ReportMetric(payload, "payload-B/pending")
		_ = e.Close()
	}
}

// liveHeap returns the live heap after a full GC.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

var flagFarN = flag.Int("engine.bench.far.n", 20_000_000, "BenchmarkFarFutureRSS: messages scheduled beyond the window")

// BenchmarkFarFutureRSS schedules -engine.bench.far.n messages (default
// 20M, 100-byte random payloads) due one to two days ahead on a durable store with
// the default one-minute window, so all of them stay on disk, from 8
// producers in batches of 1024. It reports the process's peak RSS
// (VmHWM), the live heap per message, the store's size on disk and the
// schedule rate: far-future messages must cost no RAM per message. Linux
// only (it reads /proc/self/status). Run with -benchtime=1x.
func BenchmarkFarFutureRSS(b *testing.B) {
	n := *flagFarN
	const payload, producers, batch = 100, 8, 1024
	if _, err := peakRSS(); err != nil {
		b.Skip("no /proc/self/status:", err)
	}
	for b.Loop() {
		ctx := context.Background()
		dir := b.TempDir()
		e, err := Open(ctx, Options{Dir: dir, Logger: quietLogger(),
			Queues: []Queue{{Name: "q", Handler: func(context.Context, *Delivery) error { return nil }}}})
		if err != nil {
			b.Fatal(err)
		}
		base := liveHeap()
		start := time.Now()
		var g errgroup.Group
		for p := range producers {
			g.Go(func() error {
				msgs := make([]Message, batch)
				// Random payloads, fresh per batch, so the store cannot
				// compress them away.
				body := make([]byte, batch*payload)
				r := rand.NewChaCha8([32]byte{byte(p)})
				for i := p * batch; i < n; i += producers * batch {
					k := min(batch, n-i)
					_, _ = r.Read(body)
					for j := range k {
						due := start.Add(24*time.Hour + time.Duration(i+j)*time.Millisecond*4)
						msgs[j] = Message{Dest: "local://q", Due: due, Payload: body[j*payload : (j+1)*payload]}
					}
					if _, err := e.ScheduleBatch(ctx, msgs[:k]); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		if err := e.WaitIdle(ctx); err != nil {
			b.Fatal(err)
		}
		if got := e.Stats().PendingTotal; got != 0 {
			b.Fatalf("%d messages in RAM, want 0 (all are beyond the window)", got)
		}
		heap := liveHeap() - base
		rss, err := peakRSS()
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(heap)/float64(n), "heap-B/msg")
		b.ReportMetric(float64(dirSize(b, dir))/float64(n), "disk-B/msg")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "schedules/s")
	}
}

// peakRSS reads the process's peak resident set size (VmHWM) in bytes.
func peakRSS() (int64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

// dirSize sums the sizes of the files under dir.
func dirSize(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
