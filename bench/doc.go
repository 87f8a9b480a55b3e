// Package bench gathers Hourglass's end-to-end comparison benchmarks so that
//
//	go test -run '^$' -bench . ./bench/...
//
// runs the comparison set. BenchmarkScheduleFire schedules N messages (1M by
// default, -bench.n to change) due uniformly over a window through the
// engine's public API (ScheduleBatch into a local queue), waits until every
// one has fired, and reports schedules/s, fires/s, lateness percentiles
// (receive time minus the later of due and submit time), Go heap per
// pending message, and the counts of lost and early deliveries, which must
// be zero; the afterfunc sub-benchmark does the same work with one
// time.AfterFunc per message as the same-run baseline. The workload itself
// (payload format, due times, producers, recorder) is package
// bench/workload, shared with bench/peers.
//
// The peers (asynq on Redis, River on PostgreSQL) live in the nested module
// bench/peers so their dependencies stay out of the main module; see
// bench/peers/run.sh. The package has no tests of its own: nothing here runs
// under a plain go test.
package bench
