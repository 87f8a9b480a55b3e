package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hourglassmq/hourglass/bench/workload"
)

// options are the command's flags.
type options struct {
	cfg        workload.Config
	systems    string
	redisAddr  string
	pgURL      string
	riverWork  int
	riverCool  time.Duration
	asynqConc  int
	asynqCheck time.Duration
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.IntVar(&o.cfg.N, "n", 100_000, "messages per system")
	fs.DurationVar(&o.cfg.Window, "window", 10*time.Second, "dues are uniform over this window")
	fs.DurationVar(&o.cfg.Lead, "lead", 2*time.Second, "delay from the start of scheduling to the first due time")
	fs.IntVar(&o.cfg.Producers, "producers", 4, "goroutines scheduling")
	fs.IntVar(&o.cfg.Batch, "batch", 1000, "messages per batch call (asynq has none: one call per message)")
	fs.DurationVar(&o.cfg.Timeout, "timeout", 30*time.Second, "per system: wait this long after the last due time, then count the rest lost")
	fs.Uint64Var(&o.cfg.Seed, "seed", 1, "seed of the due times")
	fs.StringVar(&o.systems, "systems", "asynq,river,hourglass-durable,hourglass-memory,afterfunc", "comma-separated systems to run, in order")
	fs.StringVar(&o.redisAddr, "redis", "127.0.0.1:56379", "Redis address (asynq)")
	fs.StringVar(&o.pgURL, "pg", "postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable", "PostgreSQL URL (River)")
	fs.IntVar(&o.riverWork, "river-workers", 100, "River MaxWorkers (River's default is 100)")
	fs.DurationVar(&o.riverCool, "river-cooldown", 0, "River FetchCooldown (0 = River's default)")
	fs.IntVar(&o.asynqConc, "asynq-concurrency", 0, "asynq Concurrency (0 = asynq's default, NumCPU)")
	fs.DurationVar(&o.asynqCheck, "asynq-check", 0, "asynq DelayedTaskCheckInterval (0 = asynq's default)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.cfg.N <= 0 || o.cfg.Producers <= 0 || o.cfg.Batch <= 0 || o.cfg.Window <= 0 {
		return o, errors.New("peers: -n, -producers, -batch and -window must be positive")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// newSystem returns the named system.
func newSystem(name string, o options, tmp string) (workload.System, error) {
	switch name {
	case "asynq":
		return &asynqSystem{addr: o.redisAddr, concurrency: o.asynqConc, check: o.asynqCheck}, nil
	case "river":
		return &riverSystem{url: o.pgURL, workers: o.riverWork, cooldown: o.riverCool}, nil
	case "hourglass-durable":
		return &workload.Hourglass{Dir: tmp}, nil
	case "hourglass-memory":
		return &workload.Hourglass{}, nil
	case "afterfunc":
		return &workload.AfterFunc{}, nil
	}
	return nil, fmt.Errorf("peers: unknown system %q", name)
}

func run(ctx context.Context, o options, out, log io.Writer) error {
	names := strings.Split(o.systems, ",")
	for _, name := range names { // fail on a typo before any run
		if _, err := newSystem(strings.TrimSpace(name), o, ""); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "workload: n=%d window=%s lead=%s producers=%d batch=%d timeout=%s GOMAXPROCS=%d %s\n",
		o.cfg.N, o.cfg.Window, o.cfg.Lead, o.cfg.Producers, o.cfg.Batch, o.cfg.Timeout, runtime.GOMAXPROCS(0), runtime.Version())
	var reps []workload.Report
	var errs []error
	for _, name := range names {
		name = strings.TrimSpace(name)
		tmp, err := os.MkdirTemp("", "hourglass-peers-*")
		if err != nil {
			return fmt.Errorf("peers: temp dir: %w", err)
		}
		sys, _ := newSystem(name, o, tmp)
		fmt.Fprintf(log, "running %s ...\n", sys.Name())
		rep := workload.Run(ctx, sys, o.cfg)
		if err := os.RemoveAll(tmp); err != nil {
			errs = append(errs, fmt.Errorf("peers: remove %s: %w", tmp, err))
		}
		reps = append(reps, rep)
		if rep.Err != nil {
			errs = append(errs, rep.Err)
			fmt.Fprintf(log, "%s: %v\n", sys.Name(), rep.Err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err := printTable(out, reps); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// printTable writes the comparison as a Markdown table.
func printTable(w io.Writer, reps []workload.Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| system\t fired/N\t schedules/s\t fires/s\t late p50\t late p99\t late max\t B/pending\t lost\t early\t note\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, r := range reps {
		var notes []string
		if r.TimedOut {
			notes = append(notes, "timeout")
		}
		if r.Duplicates > 0 {
			notes = append(notes, fmt.Sprintf("%d dup", r.Duplicates))
		}
		if r.Overdue > 0 {
			notes = append(notes, fmt.Sprintf("%d overdue at submit", r.Overdue))
		}
		if r.Err != nil {
			notes = append(notes, "error")
		}
		fmt.Fprintf(tw, "| %s\t %d/%d\t %s\t %s\t %s\t %s\t %s\t %s\t %d\t %d\t %s\t\n",
			r.System, r.Fired, r.N, rate(r.SchedulesPerS), rate(r.FiresPerS),
			dur(r.P50), dur(r.P99), dur(r.Max), bytesPer(r.BytesPerMsg), r.Lost, r.Early, strings.Join(notes, ", "))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("peers: write table: %w", err)
	}
	return nil
}

func rate(v float64) string {
	switch {
	case math.IsNaN(v) || v == 0:
		return "—"
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func dur(d time.Duration) string {
	switch a := max(d, -d); {
	case a >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case a >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f µs", float64(d)/1e3)
}

func bytesPer(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.0f B", v)
}
