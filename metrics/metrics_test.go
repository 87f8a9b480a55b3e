package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/memstore"
	"github.com/hourglassmq/hourglass/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// workload is the handler of the "jobs" queue: what it does depends on the
// payload.
func workload(_ context.Context, d *engine.Delivery) error {
	switch string(d.Payload) {
	case "flaky": // fails its first attempt
		if d.Attempt == 1 {
			return errors.New("flaky")
		}
	case "bad": // fails every attempt: dead after MaxAttempts
		return errors.New("bad")
	case "reject": // dead at once
		return engine.Reject(errors.New("no such user"))
	case "panic": // panics on its first attempt
		if d.Attempt == 1 {
			panic("boom")
		}
	}
	return nil
}

// TestWorkloadMetrics runs a known workload through a real engine (memory
// store, FakeClock, local queues whose handler fails some messages) and
// checks every value /metrics reports, scraped over HTTP.
//
// The workload, all due at t0+10s on queue "jobs" (3 attempts, 1 s apart)
// unless said otherwise:
//
//	5 "ok"      delivered at the first attempt
//	3 "flaky"   retried once, then delivered
//	2 "bad"     retried twice, then dead-lettered (3 attempts)
//	1 "reject"  dead-lettered at the first attempt
//	1 "panic"   panics (a failed attempt), then delivered
//	1 on "expiring", deliver-by t0+10.1s: expired at t0+10.25s
//	1 due in an hour, cancelled
//
// The clock jumps to t0+10.25s (12 hand-offs 0.25 s late), then 1.5 s (6
// retries due 0.5 s before), then 1 s (2 retries due exactly then).
func TestWorkloadMetrics(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	col, err := metrics.New(reg, metrics.Options{})
	require.NoError(t, err)
	var userRetries, userOutcomes atomic.Int64
	clk := engine.NewFakeClock(t0)
	eng, err := engine.Open(ctx, engine.Options{
		Store: memstore.Options{}, Shards: 2, Clock: clk, Logger: quiet(),
		Events: metrics.Combine(col.Events(), engine.Events{
			Retry:    func(engine.RetryInfo) { userRetries.Add(1) },
			Outcomes: func(engine.OutcomeInfo) { userOutcomes.Add(1) },
		}),
		Queues: []engine.Queue{
			{Name: "jobs", Handler: workload, Retry: engine.RetryPolicy{MaxAttempts: 3, Delays: []time.Duration{time.Second}}},
			{Name: "expiring", Handler: workload},
		},
	})
	require.NoError(t, err)
	defer func() { require.NoError(t, eng.Close()) }()
	col.Watch(eng)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	due := t0.Add(10 * time.Second)
	var msgs []engine.Message
	for _, n := range []struct {
		payload string
		count   int
	}{{"ok", 5}, {"flaky", 3}, {"bad", 2}, {"reject", 1}, {"panic", 1}} {
		for range n.count {
			msgs = append(msgs, engine.Message{Dest: "local://jobs", Due: due, Payload: []byte(n.payload)})
		}
	}
	msgs = append(msgs,
		engine.Message{Dest: "local://expiring", Due: due, Expires: due.Add(100 * time.Millisecond), Payload: []byte("ok")},
		engine.Message{Dest: "local://jobs", Due: t0.Add(time.Hour), Payload: []byte("ok")})
	ids, err := eng.ScheduleBatch(ctx, msgs)
	require.NoError(t, err)
	require.NoError(t, eng.WaitIdle(ctx))

	// Before anything is due: 13 messages in RAM, the 14th (due in an
	// hour, beyond the window) in the store only.
	require.Equal(t, 13.0, sum(t, reg, "hourglass_pending_messages"))
	require.Equal(t, 14.0, sum(t, reg, "hourglass_store_pending_messages"))
	require.NoError(t, eng.Cancel(ctx, ids[len(ids)-1]))

	clk.Advance(10*time.Second + 250*time.Millisecond)
	require.NoError(t, eng.WaitIdle(ctx))
	clk.Advance(1500 * time.Millisecond)
	require.NoError(t, eng.WaitIdle(ctx))
	clk.Advance(time.Second)
	require.NoError(t, eng.WaitIdle(ctx))

	st := eng.Stats()
	require.EqualValues(t, 21, st.Fired, "20 attempts on jobs, 1 expiring")
	require.EqualValues(t, 8, userRetries.Load(), "the application's own listener heard every retry")
	require.Positive(t, userOutcomes.Load())

	require.NoError(t, testutil.ScrapeAndCompare(srv.URL, strings.NewReader(`
# HELP hourglass_messages_fired_total Messages handed to a transport or handler whose outcome was reported (delivered, retried, dead-lettered, expired or cancelled in flight), by destination label.
# TYPE hourglass_messages_fired_total counter
hourglass_messages_fired_total{dest="local://expiring"} 1
hourglass_messages_fired_total{dest="local://jobs"} 20
hourglass_messages_fired_total{dest="other"} 0
# HELP hourglass_messages_delivered_total Messages accepted by their transport or acked by their handler, by destination label.
# TYPE hourglass_messages_delivered_total counter
hourglass_messages_delivered_total{dest="local://expiring"} 0
hourglass_messages_delivered_total{dest="local://jobs"} 9
hourglass_messages_delivered_total{dest="other"} 0
# HELP hourglass_messages_retried_total Failed delivery attempts that will be retried, by destination label.
# TYPE hourglass_messages_retried_total counter
hourglass_messages_retried_total{dest="local://expiring"} 0
hourglass_messages_retried_total{dest="local://jobs"} 8
hourglass_messages_retried_total{dest="other"} 0
# HELP hourglass_messages_dead_lettered_total Messages moved to the dead letters, by destination label.
# TYPE hourglass_messages_dead_lettered_total counter
hourglass_messages_dead_lettered_total{dest="local://expiring"} 0
hourglass_messages_dead_lettered_total{dest="local://jobs"} 3
hourglass_messages_dead_lettered_total{dest="other"} 0
# HELP hourglass_messages_expired_total Messages dropped past their deliver-by time, by destination label.
# TYPE hourglass_messages_expired_total counter
hourglass_messages_expired_total{dest="local://expiring"} 1
hourglass_messages_expired_total{dest="local://jobs"} 0
hourglass_messages_expired_total{dest="other"} 0
# HELP hourglass_handler_panics_total Local handler calls that panicked (each also a failed attempt), by destination label.
# TYPE hourglass_handler_panics_total counter
hourglass_handler_panics_total{dest="local://expiring"} 0
hourglass_handler_panics_total{dest="local://jobs"} 1
hourglass_handler_panics_total{dest="other"} 0
# HELP hourglass_fire_lateness_seconds Hand-off time minus due time of messages handed to a transport or handler.
# TYPE hourglass_fire_lateness_seconds histogram
hourglass_fire_lateness_seconds_bucket{le="0.001"} 2
hourglass_fire_lateness_seconds_bucket{le="0.0025"} 2
hourglass_fire_lateness_seconds_bucket{le="0.005"} 2
hourglass_fire_lateness_seconds_bucket{le="0.01"} 2
hourglass_fire_lateness_seconds_bucket{le="0.025"} 2
hourglass_fire_lateness_seconds_bucket{le="0.05"} 2
hourglass_fire_lateness_seconds_bucket{le="0.1"} 2
hourglass_fire_lateness_seconds_bucket{le="0.25"} 14
hourglass_fire_lateness_seconds_bucket{le="0.5"} 20
hourglass_fire_lateness_seconds_bucket{le="1"} 20
hourglass_fire_lateness_seconds_bucket{le="2.5"} 20
hourglass_fire_lateness_seconds_bucket{le="5"} 20
hourglass_fire_lateness_seconds_bucket{le="10"} 20
hourglass_fire_lateness_seconds_bucket{le="30"} 20
hourglass_fire_lateness_seconds_bucket{le="60"} 20
hourglass_fire_lateness_seconds_bucket{le="300"} 20
hourglass_fire_lateness_seconds_bucket{le="900"} 20
hourglass_fire_lateness_seconds_bucket{le="3600"} 20
hourglass_fire_lateness_seconds_bucket{le="+Inf"} 20
hourglass_fire_lateness_seconds_sum 6
hourglass_fire_lateness_seconds_count 20
# HELP hourglass_messages_scheduled_total New messages stored by Schedule (idempotent repeats excluded), by destination label.
# TYPE hourglass_messages_scheduled_total counter
hourglass_messages_scheduled_total{dest="local://expiring"} 1
hourglass_messages_scheduled_total{dest="local://jobs"} 13
hourglass_messages_scheduled_total{dest="other"} 0
# HELP hourglass_messages_cancelled_total Messages removed by Cancel, by destination label.
# TYPE hourglass_messages_cancelled_total counter
hourglass_messages_cancelled_total{dest="local://expiring"} 0
hourglass_messages_cancelled_total{dest="local://jobs"} 1
hourglass_messages_cancelled_total{dest="other"} 0
# HELP hourglass_pending_messages Messages held in RAM (the loaded window), by shard.
# TYPE hourglass_pending_messages gauge
hourglass_pending_messages{shard="0"} 0
hourglass_pending_messages{shard="1"} 0
# HELP hourglass_store_pending_messages Messages pending in the store, in the window or not, by shard.
# TYPE hourglass_store_pending_messages gauge
hourglass_store_pending_messages{shard="0"} 0
hourglass_store_pending_messages{shard="1"} 0
# HELP hourglass_dead_letters Dead letters in the store.
# TYPE hourglass_dead_letters gauge
hourglass_dead_letters 3
# HELP hourglass_in_flight_messages Messages taken off a wheel whose outcome is not yet applied.
# TYPE hourglass_in_flight_messages gauge
hourglass_in_flight_messages 0
# HELP hourglass_store_info 1, labelled with the store's kind.
# TYPE hourglass_store_info gauge
hourglass_store_info{kind="memory"} 1
# HELP hourglass_store_disk_bytes The store's disk usage in bytes.
# TYPE hourglass_store_disk_bytes gauge
hourglass_store_disk_bytes 0
# HELP hourglass_store_syncs_total Durable (synced) store commits since it was opened.
# TYPE hourglass_store_syncs_total counter
hourglass_store_syncs_total 0
# HELP hourglass_shards_attached Shards running on this engine.
# TYPE hourglass_shards_attached gauge
hourglass_shards_attached 2
# HELP hourglass_recovery_done 1 once every attached shard has loaded its window after Open.
# TYPE hourglass_recovery_done gauge
hourglass_recovery_done 1
# HELP hourglass_store_failed 1 once the store has failed: the engine refuses work until it is reopened.
# TYPE hourglass_store_failed gauge
hourglass_store_failed 0
# HELP hourglass_messages_early_caught_total Messages a wheel released before their wall-clock due time (the clock stepped back) that were held back.
# TYPE hourglass_messages_early_caught_total counter
hourglass_messages_early_caught_total 0
`),
		"hourglass_messages_fired_total", "hourglass_messages_delivered_total", "hourglass_messages_retried_total",
		"hourglass_messages_dead_lettered_total", "hourglass_messages_expired_total", "hourglass_handler_panics_total",
		"hourglass_fire_lateness_seconds", "hourglass_messages_scheduled_total", "hourglass_messages_cancelled_total",
		"hourglass_pending_messages", "hourglass_store_pending_messages", "hourglass_dead_letters",
		"hourglass_in_flight_messages", "hourglass_store_info", "hourglass_store_disk_bytes", "hourglass_store_syncs_total",
		"hourglass_shards_attached", "hourglass_recovery_done", "hourglass_store_failed", "hourglass_messages_early_caught_total"))

	// The engine's own totals agree with the per-destination counters.
	require.EqualValues(t, st.Delivered, sum(t, reg, "hourglass_messages_delivered_total"))
	require.EqualValues(t, st.Retried, sum(t, reg, "hourglass_messages_retried_total"))
	require.EqualValues(t, st.DeadLettered, sum(t, reg, "hourglass_messages_dead_lettered_total"))
	require.EqualValues(t, st.Expired, sum(t, reg, "hourglass_messages_expired_total"))
	require.EqualValues(t, st.Fired, sum(t, reg, "hourglass_messages_fired_total"))
	require.EqualValues(t, st.Lateness.Count, 20)

	// Every metric passes Prometheus' own lint (names, units, help).
	problems, err := testutil.CollectAndLint(col)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// sum adds up every series of a metric.
func sum(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			}
		}
	}
	return total
}
