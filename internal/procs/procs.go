// Package procs sets GOMAXPROCS for Hourglass's commands: one processor
// more than the runtime's default, for Pebble's background work.
package procs

import "runtime"

// Set sets GOMAXPROCS and returns the value in effect: n if n > 0; else,
// unless the GOMAXPROCS environment variable (read through getenv) already
// chose, one more than the runtime's default.
//
// The extra processor is for Pebble: it flushes each memtable, and runs
// each compaction, on one goroutine that keeps its processor for 100 ms or
// more. On a 2-core machine that is half of what the engine has; with a
// third processor the operating system time-slices that goroutine's thread
// with the engine's instead. Measured on 2 cores at a paced 200k/s: p99
// lateness 4.5-4.7 ms against 10.8-13.2 ms (docs/tuning.md). It is the
// process's setting, so commands make it in main; the engine does not.
func Set(n int, getenv func(string) string) int {
	switch {
	case n > 0:
		runtime.GOMAXPROCS(n)
	case getenv("GOMAXPROCS") == "":
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	}
	return runtime.GOMAXPROCS(0)
}
