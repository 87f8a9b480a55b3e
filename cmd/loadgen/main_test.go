package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/internal/hist"
)

// TestMain runs a -crash child when the test binary is started as one.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		cfg, err := parseFlags(os.Args[1:])
		if err == nil {
			_, err = run(context.Background(), cfg, io.Discard)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func short(t *testing.T, extra ...string) (*report, config) {
	t.Helper()
	args := append([]string{"-duration", "1s", "-producers", "8", "-delay", "uniform:0s-300ms", "-quiet",
		"-json", filepath.Join(t.TempDir(), "r.json")}, extra...)
	cfg, err := parseFlags(args)
	require.NoError(t, err)
	rep, err := run(context.Background(), cfg, io.Discard)
	require.NoError(t, err)
	return rep, cfg
}

func checkClean(t *testing.T, rep *report) {
	t.Helper()
	require.Positive(t, rep.Acknowledged)
	require.Zero(t, rep.Lost, "lost")
	require.Zero(t, rep.Early, "early")
	require.Equal(t, rep.Acknowledged, rep.Delivered)
}

// TestProfilesAreWritten: -cpuprofile and -memprofile leave gzipped pprof
// profiles, and -trace a runtime execution trace.
func TestProfilesAreWritten(t *testing.T) {
	dir := t.TempDir()
	cpu, mem, tr := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "mem.prof"), filepath.Join(dir, "t.out")
	rep, _ := short(t, "-mem", "-n", "2000", "-cpuprofile", cpu, "-memprofile", mem, "-trace", tr)
	checkClean(t, rep)
	for _, p := range []string{cpu, mem} {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.Greater(t, len(b), 2, p)
		require.Equal(t, []byte{0x1f, 0x8b}, b[:2], "%s is not a gzipped pprof profile", p)
	}
	b, err := os.ReadFile(tr)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(b, []byte("go 1.")), "the trace starts with its Go version header")
	require.Greater(t, len(b), 1000)
}

func TestMemoryRun(t *testing.T) {
	rep, _ := short(t, "-mem")
	checkClean(t, rep)
	require.Zero(t, rep.StoreBytes)
}

func TestDurableRunWritesTheJSONContract(t *testing.T) {
	rep, cfg := short(t, "-n", "20000")
	checkClean(t, rep)
	require.LessOrEqual(t, rep.Acknowledged, int64(20000))
	require.Positive(t, rep.StoreBytes)

	b, err := os.ReadFile(cfg.JSON)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b, &doc))
	for _, k := range []string{"scheduled", "acknowledged", "delivered", "lost", "early", "duplicates", "expired",
		"schedule_rate", "fire_rate", "ack_latency_ms", "lateness_ms", "peak_pending", "rss_peak_bytes",
		"heap_bytes_per_pending", "store_bytes", "config"} {
		require.Contains(t, doc, k)
	}
	require.Equal(t, []string{"p50", "p99", "p999"}, keys(doc["ack_latency_ms"]))
	require.Equal(t, []string{"max", "p50", "p99", "p999"}, keys(doc["lateness_ms"]))
	require.NotContains(t, doc, "recovery", "recovery is reported by -crash and -replay only")
}

// TestFindRateReportsTheSustainableRate runs a tiny search: every step is
// reported, the rate found is one that passed, and the JSON carries it.
func TestFindRateReportsTheSustainableRate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "r.json")
	cfg, err := parseFlags([]string{"-find-rate", "-mem", "-rate", "1000", "-max-rate", "4000", "-step", "300ms",
		"-duration", "500ms", "-producers", "4", "-delay", "uniform:0s-100ms", "-json", out})
	require.NoError(t, err)
	rep, err := run(context.Background(), cfg, io.Discard)
	require.NoError(t, err)
	require.Zero(t, rep.Lost)
	require.Zero(t, rep.Early)
	require.GreaterOrEqual(t, len(rep.Steps), 2)
	require.NotNil(t, rep.SustainableRate)
	if *rep.SustainableRate > 0 {
		passed := false
		for _, s := range rep.Steps {
			passed = passed || (s.Pass && s.Rate == *rep.SustainableRate && s.Seconds == 0.5)
		}
		require.True(t, passed, "the sustainable rate is one a confirming run passed: %+v", rep.Steps)
	}
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b, &doc))
	require.Contains(t, doc, "steps")
	require.Contains(t, doc, "sustainable_rate")
}

func keys(v any) []string {
	var out []string
	for k := range v.(map[string]any) {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestReplayFiresWhatAKeptStoreHolds(t *testing.T) {
	dir := t.TempDir()
	// A run that stops before its messages are due leaves them in the store.
	cfg, err := parseFlags([]string{"-producers", "2", "-delay", "fixed:1500ms", "-quiet", "-dir", dir, "-n", "4096"})
	require.NoError(t, err)
	s := newSession(cfg)
	require.NoError(t, s.open(context.Background(), dir))
	require.NoError(t, s.produce(context.Background(), time.Now().Add(time.Minute)))
	s.close()
	acked := s.tr.acked.Load()
	require.Equal(t, int64(4096), acked)

	cfgR, err := parseFlags([]string{"-replay", dir, "-quiet"})
	require.NoError(t, err)
	rep, err := run(context.Background(), cfgR, io.Discard)
	require.NoError(t, err)
	require.Equal(t, acked, rep.Delivered, "every message the first run acknowledged fires after the replay")
	require.Zero(t, rep.Early)
	require.NotNil(t, rep.Recovery)
	require.LessOrEqual(t, rep.Recovery.Recovered, acked)
	require.Positive(t, rep.Recovery.Recovered)
}

func TestCrashModeLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	cfg, err := parseFlags([]string{"-crash", "3", "-producers", "4", "-delay", "uniform:0s-500ms", "-quiet", "-seed", "42"})
	require.NoError(t, err)
	rep, err := run(context.Background(), cfg, io.Discard)
	require.NoError(t, err)
	require.Positive(t, rep.Acknowledged)
	require.Zero(t, rep.Lost, "lost")
	require.Zero(t, rep.Early, "early")
	require.NotNil(t, rep.Recovery)
}

func TestFlagsSayWhatIsWrong(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-duration", "0s"}, "-duration 0s: must be positive"},
		{[]string{"-delay", "soon"}, `-delay "soon": use fixed:D, uniform:D1-D2 or exp:MEAN`},
		{[]string{"-delay", "uniform:5s-1s"}, "uniform:D1-D2"},
		{[]string{"-payload", "8"}, "-payload 8: allowed 16..1048576 bytes"},
		{[]string{"-producers", "0"}, "-producers 0: allowed 1..100000"},
		{[]string{"-mem", "-dir", "/tmp/x"}, "-mem has no store"},
		{[]string{"-target", "carrier-pigeon"}, `-target "carrier-pigeon": allowed local, http, nats, kafka`},
		{[]string{"-target", "http", "-target-url", "http://x"}, "-target-url goes with -target nats or kafka"},
		{[]string{"-crash", "2", "-target", "nats"}, "-crash checks deliveries logged by the child's local queue"},
		{[]string{"-shards", "300"}, "-shards 300: allowed 0 (default) or 1..256"},
		{[]string{"-dispatchers", "5000"}, "-dispatchers 5000: allowed 0 (default) or 1..4096"},
		{[]string{"-procs", "-2"}, "-procs -2: allowed 0 (default) or 1..1024"},
		{[]string{"-memtable", "-1"}, "-memtable -1: allowed 0 (the store's default) or 1..4096 MiB"},
		{[]string{"-mem", "-memtable", "128"}, "-memtable sizes the durable store's memtable"},
		{[]string{"stray"}, `unexpected argument "stray"`},
		{[]string{"-target", "https://hooks.example.com/x"}, "a real server can be named for nats:// or kafka://"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseFlags(tc.args)
			require.ErrorContains(t, err, tc.msg)
		})
	}
}

func TestDelaysStayInTheirRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for spec, bounds := range map[string][2]time.Duration{
		"fixed:5s":       {5 * time.Second, 5 * time.Second},
		"uniform:1s-10s": {time.Second, 10 * time.Second},
		"uniform:0s-0s":  {0, 0},
		"exp:2s":         {0, time.Duration(math.MaxInt64)},
	} {
		d, err := parseDelay(spec)
		require.NoError(t, err, spec)
		for range 1000 {
			v := d.sample(rng)
			require.GreaterOrEqual(t, v, bounds[0], spec)
			require.LessOrEqual(t, v, bounds[1], spec)
		}
	}
}

// TestReportQuantilesAreTight checks the report's millisecond figures
// against the exact quantiles of what was recorded: never below, within
// internal/hist's relative error above, the maximum exact.
func TestReportQuantilesAreTight(t *testing.T) {
	var h hist.Histogram
	rng := rand.New(rand.NewPCG(3, 4))
	vals := make([]time.Duration, 100_000)
	for i := range vals {
		vals[i] = time.Duration(rng.ExpFloat64() * float64(5*time.Millisecond))
		h.Record(vals[i])
	}
	slices.Sort(vals)
	got := latenessMs(&h)
	for _, c := range []struct {
		q   float64
		got float64
	}{{0.5, got.P50}, {0.99, got.P99}, {0.999, got.P999}} {
		exact := ms(vals[int(math.Round(c.q*float64(len(vals))))-1]) // nearest rank: q·n is whole here
		require.GreaterOrEqual(t, c.got, exact, "q%v never underestimates", c.q)
		require.LessOrEqual(t, c.got, exact*(1+hist.RelativeError), "q%v within the bucket width", c.q)
	}
	require.Equal(t, ms(vals[len(vals)-1]), got.Max, "the maximum is exact")
	require.Equal(t, quantiles{P50: got.P50, P99: got.P99, P999: got.P999}, quantilesMs(&h))
}

func TestTransportTargets(t *testing.T) {
	for _, target := range []string{"http", "nats", "kafka"} {
		t.Run(target, func(t *testing.T) {
			rep, _ := short(t, "-mem", "-target", target, "-n", "3000")
			checkClean(t, rep)
		})
	}
}

func TestTargetURLShorthand(t *testing.T) {
	cfg, err := parseFlags([]string{"-target", "nats://127.0.0.1:4222"})
	require.NoError(t, err)
	require.Equal(t, "nats", cfg.Target)
	require.Equal(t, "nats://127.0.0.1:4222", cfg.TargetURL)
	cfg, err = parseFlags([]string{"-target", "kafka://127.0.0.1:9092"})
	require.NoError(t, err)
	require.Equal(t, "kafka", cfg.Target)
	require.Equal(t, "127.0.0.1:9092", cfg.TargetURL)
}

// TestFindRateRetriesAMarginalShortStepOnce drives the search with scripted
// steps: a short step that reached its rate but missed the lateness bound
// by less than retryMargin× is run again (once per search), a clear failure
// is not, and the confirming run is never repeated.
func TestFindRateRetriesAMarginalShortStepOnce(t *testing.T) {
	cfg := config{Rate: 100, MaxRate: 800, Step: time.Second, Duration: 3 * time.Second}
	type call struct {
		rate float64
		long bool
	}
	run := func(verdicts map[call][]float64) ([]call, float64) {
		var calls []call
		_, found, err := search(cfg, func(rate float64, d time.Duration) (*report, bool, error) {
			c := call{rate, d == cfg.Duration}
			calls = append(calls, c)
			p99 := 1.0 // passes unless scripted
			if v := verdicts[c]; len(v) > 0 {
				p99, verdicts[c] = v[0], v[1:]
			}
			rep := &report{ScheduleRate: rate}
			rep.LatenessMs.P99 = p99
			return rep, sustains(rate, rep), nil
		})
		require.NoError(t, err)
		return calls, found
	}

	// 200/s misses the bound marginally, then passes on its second run;
	// 400/s fails clearly (no retry); 800/s is past the search's range.
	calls, found := run(map[call][]float64{{200, false}: {12, 1}, {400, false}: {50}, {300, false}: {50}, {250, false}: {50}, {225, false}: {50}})
	require.Equal(t, []call{{100, false}, {200, false}, {200, false}, {400, false}, {300, false}, {250, false}, {225, false}, {200, true}}, calls)
	require.Equal(t, 200.0, found)

	// Only the first marginal failure is retried (150/s fails at once), and
	// a confirming run that fails marginally is not repeated: the search
	// steps down 15 % instead.
	calls, found = run(map[call][]float64{{200, false}: {12, 12}, {150, false}: {12}, {138, true}: {12}})
	require.Equal(t, []call{{100, false}, {200, false}, {200, false}, {150, false}, {125, false}, {138, false}, {138, true}, {117, true}}, calls)
	require.Equal(t, 117.0, found)
}
