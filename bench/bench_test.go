package bench

import (
	"context"
	"flag"
	"runtime"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/bench/workload"
)

var (
	flagN         = flag.Int("bench.n", 1_000_000, "messages per BenchmarkScheduleFire run")
	flagWindow    = flag.Duration("bench.window", 10*time.Second, "dues are uniform over this window")
	flagLead      = flag.Duration("bench.lead", 2*time.Second, "delay from the start of scheduling to the first due time")
	flagProducers = flag.Int("bench.producers", runtime.GOMAXPROCS(0), "goroutines scheduling")
	flagBatch     = flag.Int("bench.batch", 1000, "messages per ScheduleBatch call")
	flagTimeout   = flag.Duration("bench.timeout", time.Minute, "wait after the last due time before counting the rest lost")
)

func config() workload.Config {
	return workload.Config{
		N: *flagN, Producers: *flagProducers, Batch: *flagBatch,
		Window: *flagWindow, Lead: *flagLead, Timeout: *flagTimeout, Seed: 1,
	}
}

// BenchmarkScheduleFire is the end-to-end comparison: memory and durable
// Hourglass against time.AfterFunc in the same run. One iteration is one
// whole workload, so run it with the default -benchtime (one iteration per
// sub-benchmark once the workload takes over a second).
func BenchmarkScheduleFire(b *testing.B) {
	cases := []struct {
		name string
		sys  func(b *testing.B) workload.System
	}{
		{"memory", func(*testing.B) workload.System { return &workload.Hourglass{} }},
		{"durable", func(b *testing.B) workload.System { return &workload.Hourglass{Dir: b.TempDir()} }},
		{"afterfunc", func(*testing.B) workload.System { return &workload.AfterFunc{} }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			cfg := config()
			var rep workload.Report
			for b.Loop() {
				rep = workload.Run(context.Background(), c.sys(b), cfg)
				if rep.Err != nil {
					b.Fatal(rep.Err)
				}
				if rep.TimedOut {
					b.Errorf("%s: timed out with %d of %d fired", rep.System, rep.Fired, rep.N)
				}
				if err := rep.Check(); err != nil {
					b.Error(err)
				}
			}
			b.ReportMetric(rep.SchedulesPerS, "schedules/s")
			b.ReportMetric(rep.FiresPerS, "fires/s")
			b.ReportMetric(ms(rep.P50), "p50-late-ms")
			b.ReportMetric(ms(rep.P99), "p99-late-ms")
			b.ReportMetric(ms(rep.Max), "max-late-ms")
			b.ReportMetric(float64(rep.Early), "early")
			b.ReportMetric(float64(rep.Lost), "lost")
			b.ReportMetric(float64(rep.Overdue), "overdue")
			b.ReportMetric(rep.BytesPerMsg, "heap-B/pending")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
