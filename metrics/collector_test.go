package metrics_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/metrics"
)

func TestDestinationLabel(t *testing.T) {
	for _, tc := range []struct{ dest, label string }{
		{"local://emails", "local://emails"},
		{"https://hooks.example.com/orders/7?x=1", "https://hooks.example.com"},
		{"https://user:secret@Hooks.Example.com:8443/orders", "https://hooks.example.com:8443"},
		{"http://10.0.0.1:9000#frag", "http://10.0.0.1:9000"},
		{"nats://orders.eu.created", "nats://orders"},
		{"jetstream://orders.eu.created", "jetstream://orders"},
		{"nats://single", "nats://single"},
		{"kafka://Orders", "kafka://Orders"},
		{"HTTPS://a.example/x", "https://a.example"},
		{"custom://a/b", "custom://a"},
		{"no-scheme", "other"},
		{"://x", "other"},
		{"kafka://" + strings.Repeat("t", 300), "kafka://" + strings.Repeat("t", 248)},
		{"local://" + strings.Repeat("é", 200), "local://" + strings.Repeat("é", 124)},
		{"local://x" + strings.Repeat("é", 200), "local://x" + strings.Repeat("é", 123)},
		{"kafka://bad\xffutf8", "kafka://bad\uFFFDutf8"},
	} {
		require.Equal(t, tc.label, metrics.DestinationLabel(tc.dest), tc.dest)
	}
}

// TestDestinationCap: past MaxDestinations distinct labels, every new one
// counts under "other"; labels already seen keep their own series.
func TestDestinationCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	col, err := metrics.New(reg, metrics.Options{MaxDestinations: 2})
	require.NoError(t, err)
	ev := col.Events()
	for i := range 5 {
		ev.Outcomes(engine.OutcomeInfo{Dest: fmt.Sprintf("https://h%d.example/x", i), Delivered: 1, Lateness: []time.Duration{0}})
	}
	ev.Outcomes(engine.OutcomeInfo{Dest: "https://h0.example/y", Delivered: 1, Lateness: []time.Duration{0}})
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP hourglass_messages_delivered_total Messages accepted by their transport or acked by their handler, by destination label.
# TYPE hourglass_messages_delivered_total counter
hourglass_messages_delivered_total{dest="https://h0.example"} 2
hourglass_messages_delivered_total{dest="https://h1.example"} 1
hourglass_messages_delivered_total{dest="other"} 3
`), "hourglass_messages_delivered_total"))
}

// TestOutcomeLateness: every lateness the engine reports is observed (it
// reports one per message handed off, none for expired or native ones).
func TestOutcomeLateness(t *testing.T) {
	reg := prometheus.NewRegistry()
	col, err := metrics.New(reg, metrics.Options{LatenessBuckets: []float64{1}})
	require.NoError(t, err)
	ev := col.Events()
	ev.Outcomes(engine.OutcomeInfo{Dest: "local://q", Delivered: 1, Retried: 1, Dead: 1, Gone: 1,
		Lateness: []time.Duration{time.Second / 2, time.Second / 2, 2 * time.Second, 0}})
	ev.Outcomes(engine.OutcomeInfo{Dest: "local://q", Delivered: 1, Expired: 1, Lateness: []time.Duration{time.Second}})
	ev.Outcomes(engine.OutcomeInfo{Dest: "local://q", Delivered: 1, Native: 1, Lateness: []time.Duration{time.Second}})
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP hourglass_fire_lateness_seconds Hand-off time minus due time of messages handed to a transport or handler.
# TYPE hourglass_fire_lateness_seconds histogram
hourglass_fire_lateness_seconds_bucket{le="1"} 5
hourglass_fire_lateness_seconds_bucket{le="+Inf"} 6
hourglass_fire_lateness_seconds_sum 5
hourglass_fire_lateness_seconds_count 6
# HELP hourglass_messages_fired_total Messages handed to a transport or handler whose outcome was reported (delivered, retried, dead-lettered, expired or cancelled in flight), by destination label.
# TYPE hourglass_messages_fired_total counter
hourglass_messages_fired_total{dest="local://q"} 7
hourglass_messages_fired_total{dest="other"} 0
`), "hourglass_fire_lateness_seconds", "hourglass_messages_fired_total"))
}

// TestStoreEvents: failure, write stalls, shards and recovery.
func TestStoreEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	col, err := metrics.New(reg, metrics.Options{})
	require.NoError(t, err)
	ev := col.Events()
	ev.ShardAttached(0)
	ev.ShardAttached(1)
	ev.ShardDetached(0)
	ev.WriteStall(engine.WriteStallInfo{Begin: true, Reason: "memtable"})
	ev.WriteStall(engine.WriteStallInfo{Begin: false})
	ev.WriteStall(engine.WriteStallInfo{Begin: true, Reason: "l0"})
	ev.StoreFailed(errors.New("disk on fire"))
	ev.RecoveryDone(engine.RecoveryStats{})
	ev.HandlerPanic(engine.PanicInfo{Dest: "local://q"})
	for name, want := range map[string]float64{
		"hourglass_shards_attached": 1, "hourglass_store_write_stalled": 1, "hourglass_store_write_stalls_total": 2,
		"hourglass_store_failed": 1, "hourglass_recovery_done": 1,
	} {
		require.Equal(t, want, sum(t, reg, name), name)
	}
	require.Equal(t, 1.0, sum(t, reg, "hourglass_handler_panics_total"))
}

func TestNewNeedsARegisterer(t *testing.T) {
	_, err := metrics.New(nil, metrics.Options{})
	require.ErrorContains(t, err, "nil Registerer")
	_, err = metrics.New(prometheus.NewRegistry(), metrics.Options{MaxDestinations: -1})
	require.Error(t, err)
	reg := prometheus.NewRegistry()
	_, err = metrics.New(reg, metrics.Options{})
	require.NoError(t, err)
	_, err = metrics.New(reg, metrics.Options{})
	require.Error(t, err, "a second collector on the same registry clashes")
}

// TestCombine: every listener hears every event, in order; fields no one
// sets stay nil.
func TestCombine(t *testing.T) {
	var got []string
	a := engine.Events{
		Retry:      func(r engine.RetryInfo) { got = append(got, "a retry "+r.Dest) },
		DeadLetter: func(engine.DeadLetterInfo) { got = append(got, "a dead") },
	}
	b := engine.Events{
		Retry:       func(r engine.RetryInfo) { got = append(got, "b retry "+r.Dest) },
		StoreFailed: func(error) { got = append(got, "b failed") },
	}
	c := metrics.Combine(a, engine.Events{}, b)
	c.Retry(engine.RetryInfo{Dest: "local://q"})
	c.DeadLetter(engine.DeadLetterInfo{})
	c.StoreFailed(nil)
	require.Equal(t, []string{"a retry local://q", "b retry local://q", "a dead", "b failed"}, got)
	require.Nil(t, c.Outcomes)
	require.Nil(t, c.ShardAttached)
	require.Nil(t, metrics.Combine().Retry)
}

// TestDocumented: every metric the Collector describes is named in the
// package doc's list and in docs/operations.md.
func TestDocumented(t *testing.T) {
	pkgDoc, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	ops, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	require.NoError(t, err)
	col, err := metrics.New(prometheus.NewRegistry(), metrics.Options{})
	require.NoError(t, err)
	ch := make(chan *prometheus.Desc, 100)
	col.Describe(ch)
	close(ch)
	name := regexp.MustCompile(`fqName: "([a-z_0-9]+)"`)
	n := 0
	for d := range ch {
		m := name.FindStringSubmatch(d.String())
		require.NotNil(t, m, d.String())
		n++
		require.True(t, regexp.MustCompile(`\b`+m[1]+`\b`).Match(pkgDoc), "the package doc names %s", m[1])
		require.True(t, regexp.MustCompile("`"+m[1]+"[`{]").Match(ops), "docs/operations.md names %s", m[1])
	}
	require.Equal(t, 39, n)
}

// statsSource is a Source whose Stats are fixed.
type statsSource engine.Stats

func (s statsSource) Stats() engine.Stats { return engine.Stats(s) }

// TestPushBackAndEvictionCounters: the push-back and eviction counters
// carry the engine's Stats as they are at the scrape.
func TestPushBackAndEvictionCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := metrics.New(reg, metrics.Options{})
	require.NoError(t, err)
	c.Watch(statsSource{PushBacks: 3, PushBackWait: 1500 * time.Millisecond, Evicted: 7})
	require.Equal(t, 3.0, sum(t, reg, "hourglass_schedule_push_backs_total"))
	require.Equal(t, 1.5, sum(t, reg, "hourglass_schedule_push_back_wait_seconds_total"))
	require.Equal(t, 7.0, sum(t, reg, "hourglass_window_evicted_messages_total"))
	c.Watch(statsSource{PushBacks: 4, PushBackWait: 2 * time.Second, Evicted: 7})
	require.Equal(t, 4.0, sum(t, reg, "hourglass_schedule_push_backs_total"))
	require.Equal(t, 2.0, sum(t, reg, "hourglass_schedule_push_back_wait_seconds_total"))
}
