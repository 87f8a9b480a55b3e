package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/hourglassmq/hourglass/bench/workload"
)

// benchArgs is the River job: the workload payload (JSON base64).
type benchArgs struct {
	P []byte `json:"p"`
}

// Kind implements river.JobArgs.
func (benchArgs) Kind() string { return "bench" }

// benchWorker records each job's payload.
type benchWorker struct {
	river.WorkerDefaults[benchArgs]
	rec *workload.Recorder
}

// Work implements river.Worker.
func (w *benchWorker) Work(_ context.Context, job *river.Job[benchArgs]) error {
	_ = w.rec.Deliver(job.Args.P, time.Now())
	return nil
}

// riverSystem is River on PostgreSQL through pgx v5: InsertMany with
// ScheduledAt, one client working the default queue.
type riverSystem struct {
	url      string
	workers  int
	cooldown time.Duration

	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
}

func (r *riverSystem) Name() string {
	if r.workers != 100 || r.cooldown != 0 {
		return fmt.Sprintf("River + PostgreSQL (%d workers, cooldown %s)", r.workers, r.cooldown)
	}
	return "River + PostgreSQL"
}

func (r *riverSystem) Open(ctx context.Context, rec *workload.Recorder) error {
	pool, err := pgxpool.New(ctx, r.url)
	if err != nil {
		return fmt.Errorf("pgx pool %s: %w", r.url, err)
	}
	r.pool = pool
	quiet := slog.New(slog.DiscardHandler)
	mig, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: quiet})
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}
	if _, err := pool.Exec(ctx, "TRUNCATE river_job"); err != nil {
		return fmt.Errorf("truncate river_job: %w", err)
	}
	if _, err := pool.Exec(ctx, "VACUUM FULL river_job"); err != nil {
		return fmt.Errorf("vacuum river_job: %w", err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &benchWorker{rec: rec})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: r.workers}},
		Workers:       workers,
		FetchCooldown: r.cooldown,
		Logger:        quiet,
	})
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}
	if err := client.Start(ctx); err != nil {
		return fmt.Errorf("river start: %w", err)
	}
	r.client = client
	return nil
}

func (r *riverSystem) Schedule(ctx context.Context, lo int, dues []time.Time) error {
	params := make([]river.InsertManyParams, len(dues))
	for i, due := range dues {
		p := make([]byte, workload.PayloadSize)
		workload.Encode(p, uint64(lo+i), due)
		params[i] = river.InsertManyParams{Args: benchArgs{P: p}, InsertOpts: &river.InsertOpts{ScheduledAt: due}}
	}
	if _, err := r.client.InsertMany(ctx, params); err != nil {
		return fmt.Errorf("river insert many at %d: %w", lo, err)
	}
	return nil
}

// Usage is river_job's total relation size (heap, indexes, TOAST).
func (r *riverSystem) Usage(ctx context.Context) (int64, error) {
	var n int64
	if err := r.pool.QueryRow(ctx, "SELECT pg_total_relation_size('river_job')").Scan(&n); err != nil {
		return 0, fmt.Errorf("river_job size: %w", err)
	}
	return n, nil
}

func (r *riverSystem) Close(ctx context.Context) error {
	var err error
	if r.client != nil {
		if err = r.client.Stop(ctx); err != nil {
			err = fmt.Errorf("river stop: %w", err)
		}
	}
	if r.pool != nil {
		r.pool.Close()
	}
	return err
}
