// Command loadgen drives an embedded Hourglass engine with scheduled messages
// and checks every one of them: it is the project's demonstration and the
// proof of its numbers.
//
// With no flags it runs for about 20 seconds on a durable store in a
// temporary directory, scheduling messages due 0.1–5 s ahead into a local
// queue, printing a progress line each second and a report at the end:
//
//	go run ./cmd/loadgen
//
// Every message carries its sequence number and due time in its payload, so
// the report can say how many acknowledged messages were lost, how many came
// early and how many twice. The exit status is 1 when any was lost or early.
//
// Modes: -mem (no store), -find-rate (search for the highest rate the engine
// sustains with p99 lateness at most 10 ms, reported as sustainable_rate),
// -replay DIR (open a store left by an earlier run,
// fire what is pending, report the recovery) and -crash N (run the engine in
// a child process, SIGKILL it N times at random moments, restart it on the
// same store, and check the child's log of acknowledged schedules against
// its deliveries), -cluster N (N engine nodes on cluster stores over an
// in-process Kafka, or kafka://host:port; the report adds "nodes", each
// with "node", "fires", "partitions" and "killed", and with -kill-node AT
// "failover_ms").
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"syscall"

	"github.com/hourglassmq/hourglass/internal/procs"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	cfg.Procs = procs.Set(cfg.Procs, os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if rep != nil && (rep.Lost != 0 || rep.Early != 0) {
		os.Exit(1)
	}
}

// run executes the mode cfg selects, prints the report to out and writes
// the JSON file if asked.
func run(ctx context.Context, cfg config, out io.Writer) (*report, error) {
	var (
		rep *report
		err error
	)
	for _, c := range []struct {
		path, what string
		start      func(io.Writer) error
		stop       func()
	}{
		{cfg.CPUProfile, "cpu profile", pprof.StartCPUProfile, pprof.StopCPUProfile},
		{cfg.Trace, "trace", trace.Start, trace.Stop},
	} {
		if c.path == "" {
			continue
		}
		f, err := os.Create(c.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.what, err)
		}
		defer f.Close()
		if err := c.start(f); err != nil {
			return nil, fmt.Errorf("%s: %w", c.what, err)
		}
		defer c.stop()
	}
	switch {
	case cfg.child:
		return nil, runChild(ctx, cfg)
	case cfg.Cluster != "":
		rep, err = runCluster(ctx, cfg, out)
	case cfg.Crash > 0:
		rep, err = runCrash(ctx, cfg, out)
	case cfg.Replay != "":
		rep, err = runReplay(ctx, cfg, out)
	case cfg.FindRate:
		rep, err = runFindRate(ctx, cfg, out)
	default:
		rep, err = runLoad(ctx, cfg, out)
	}
	if err != nil {
		return nil, err
	}
	if cfg.MemProfile != "" {
		if err := writeAllocs(cfg.MemProfile); err != nil {
			return nil, err
		}
	}
	rep.Config = cfg
	rep.print(out)
	if cfg.JSON != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode report: %w", err)
		}
		if err := os.WriteFile(cfg.JSON, append(b, '\n'), 0o644); err != nil {
			return nil, fmt.Errorf("write report: %w", err)
		}
	}
	return rep, nil
}

// writeAllocs writes the allocation profile of the whole run (every
// allocation since the process started, sampled) to path.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("memory profile: %w", err)
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("memory profile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("memory profile: %w", err)
	}
	return nil
}
