package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/hourglassmq/hourglass/bench/workload"
)

// asynqSystem is asynq on Redis: one Enqueue per message (asynq has no
// batch enqueue) with ProcessAt, one server with the default queue.
type asynqSystem struct {
	addr        string
	concurrency int           // 0: asynq's default
	check       time.Duration // DelayedTaskCheckInterval; 0: asynq's default

	rdb    *redis.Client
	client *asynq.Client
	srv    *asynq.Server
}

const asynqTask = "bench"

func (a *asynqSystem) Name() string {
	if a.concurrency != 0 || a.check != 0 {
		return fmt.Sprintf("asynq + Redis (concurrency %d, check %s)", a.concurrency, a.check)
	}
	return "asynq + Redis"
}

func (a *asynqSystem) Open(ctx context.Context, rec *workload.Recorder) error {
	a.rdb = redis.NewClient(&redis.Options{Addr: a.addr})
	if err := a.rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("redis flushall at %s: %w", a.addr, err)
	}
	a.client = asynq.NewClientFromRedisClient(a.rdb)
	a.srv = asynq.NewServerFromRedisClient(a.rdb, asynq.Config{
		Concurrency:              a.concurrency,
		DelayedTaskCheckInterval: a.check,
		LogLevel:                 asynq.ErrorLevel,
	})
	h := asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error {
		_ = rec.Deliver(t.Payload(), time.Now())
		return nil
	})
	if err := a.srv.Start(h); err != nil {
		return fmt.Errorf("asynq server start: %w", err)
	}
	return nil
}

func (a *asynqSystem) Schedule(ctx context.Context, lo int, dues []time.Time) error {
	for i, due := range dues {
		p := make([]byte, workload.PayloadSize)
		workload.Encode(p, uint64(lo+i), due)
		if _, err := a.client.EnqueueContext(ctx, asynq.NewTask(asynqTask, p), asynq.ProcessAt(due)); err != nil {
			return fmt.Errorf("asynq enqueue %d: %w", lo+i, err)
		}
	}
	return nil
}

// Usage is Redis's used_memory.
func (a *asynqSystem) Usage(ctx context.Context) (int64, error) {
	info, err := a.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("redis info: %w", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("redis used_memory %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("redis info: no used_memory")
}

func (a *asynqSystem) Close(context.Context) error {
	if a.srv != nil {
		a.srv.Shutdown()
	}
	var err error
	if a.client != nil {
		err = a.client.Close()
	}
	if a.rdb != nil {
		if cerr := a.rdb.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	if err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("asynq close: %w", err)
	}
	return nil
}
