// Command peers runs the Hourglass comparison workload — N messages due
// uniformly over a window, C producers, each payload carrying its sequence
// number and due time — against asynq on Redis, River on PostgreSQL,
// Hourglass (durable and in memory) and time.AfterFunc in one run, and
// prints one table: schedules/s, fires/s, lateness p50/p99/max, memory per
// pending message, lost and early.
//
// It is a nested module so the peers' client libraries stay out of the main
// module. CI vets and builds it but does not run it. run.sh installs and
// starts Redis and PostgreSQL on loopback, runs this program and stops
// them:
//
//	bench/peers/run.sh -n 100000 -window 10s -producers 4
//
// Each system's wait for deliveries ends Timeout after its last due time;
// a system that cannot keep up is reported with what it reached (lost
// counts the messages not delivered by then, "timeout" marks the row).
//
// hist_test.go's BenchmarkRecord compares the cost of recording a latency
// in Hourglass's histogram (internal/hist) with HdrHistogram's Go port; it
// is why the project keeps its own.
package main
