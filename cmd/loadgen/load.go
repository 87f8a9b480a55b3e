package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/hourglassmq/hourglass/engine"
	"github.com/hourglassmq/hourglass/internal/hist"
	"github.com/hourglassmq/hourglass/wal"
)

// queueName is the local queue every loadgen message goes to.
const queueName = "loadgen"

// session is one engine with its producers, its handler and the figures
// they gather.
type session struct {
	cfg    config
	eng    *engine.Engine
	tgt    *target
	tr     *tracker
	logs   *childLogs     // set in a -crash child
	seqLo  uint64         // first sequence number this session hands out
	ack    hist.Histogram // ScheduleBatch latency, per message
	late   hist.Histogram // delivery time minus due time, early as 0
	start  time.Time
	sched  atomic.Int64 // ScheduleBatch attempts, in messages
	maxDue atomic.Int64 // latest due time acknowledged, unix ns

	firstFire, lastFire atomic.Int64 // unix ns of the first and last delivery

	peakPending  int64
	heapBase     uint64
	heapPerEntry float64
	storeBytes   int64
}

func newSession(cfg config) *session {
	return &session{cfg: cfg, tr: &tracker{}}
}

// open starts the engine on dir ("" = memory mode) with the loadgen queue.
func (s *session) open(ctx context.Context, dir string) error {
	runtime.GC()
	s.heapBase = liveHeap()
	tgt, err := startTarget(ctx, s.cfg, s.receive)
	if err != nil {
		return err
	}
	opts := engine.Options{
		Dir:         dir,
		Shards:      s.cfg.Shards,
		Dispatchers: s.cfg.Dispatchers,
		Tick:        s.cfg.Tick,
		Window:      s.cfg.Window,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Queues:      []engine.Queue{{Name: queueName, Handler: s.handle, Parallelism: s.cfg.Parallelism}},
		Transports:  tgt.reg,
	}
	if s.cfg.MemTableMiB > 0 && dir != "" {
		opts.Dir, opts.Store = "", wal.Options{Dir: dir, MemTableSize: uint64(s.cfg.MemTableMiB) << 20}
	}
	eng, err := engine.Open(ctx, opts)
	if err != nil {
		tgt.close()
		return fmt.Errorf("open engine: %w", err)
	}
	s.tgt = tgt
	s.eng = eng
	s.start = time.Now()
	return nil
}

// close stops the engine at once (in-flight deliveries are cancelled) and
// the target.
func (s *session) close() {
	if err := s.eng.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: close:", err)
	}
	s.tgt.close()
}

// handle is the local queue's handler.
func (s *session) handle(_ context.Context, d *engine.Delivery) error {
	return s.check(d.Payload)
}

// receive is the transport receivers' callback; they have nobody to tell
// of a bad payload but the count of unexpected messages.
func (s *session) receive(payload []byte) {
	if s.check(payload) != nil {
		s.tr.unexpected.Add(1)
	}
}

// check records one delivery of the message whose payload this is.
func (s *session) check(payload []byte) error {
	now := time.Now().UnixNano()
	seq, due, ok := decodePayload(payload)
	if !ok {
		return fmt.Errorf("loadgen: payload of %d bytes is not one of ours", len(payload))
	}
	if s.logs != nil {
		// Logged before the ack: a crash in between redelivers, never loses.
		if err := s.logs.delivered(seq, due, now); err != nil {
			return err
		}
	}
	s.late.Record(max(time.Duration(now-due), 0))
	s.tr.deliver(seq, due, now)
	s.firstFire.CompareAndSwap(0, now)
	s.lastFire.Store(now)
	return nil
}

// produce runs the producers until until, n messages, or ctx ends.
func (s *session) produce(ctx context.Context, until time.Time) error {
	return s.runProducers(ctx, until, s.tgt.dest, func(ctx context.Context, _ int, msgs []engine.Message) (bool, error) {
		_, err := s.eng.ScheduleBatch(ctx, msgs)
		return err == nil, err
	})
}

// runProducers runs s.cfg.Producers goroutines until until, n messages, or
// ctx ends. Each builds batches of messages to dest (payloads carry their
// sequence number and due time), paced to -rate, and hands them to send
// with its producer number; send reports whether the batch was
// acknowledged (false with no error: not acknowledged, and not a failure of
// the run, as when a cluster node is killed under the call).
func (s *session) runProducers(ctx context.Context, until time.Time, dest string,
	send func(ctx context.Context, producer int, msgs []engine.Message) (bool, error)) error {
	var next, claimed atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for p := range s.cfg.Producers {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(s.cfg.Seed, uint64(p)))
			msgs := make([]engine.Message, s.cfg.Batch)
			buf := make([]byte, s.cfg.Batch*s.cfg.Payload)
			var perProducer time.Duration // pacing interval per message
			if s.cfg.Rate > 0 {
				perProducer = time.Duration(float64(time.Second) * float64(s.cfg.Producers) / s.cfg.Rate)
			}
			pace := time.Now()
			for ctx.Err() == nil && time.Now().Before(until) {
				k := int64(s.cfg.Batch)
				if s.cfg.N > 0 {
					if c := claimed.Add(k); c > s.cfg.N {
						k -= c - s.cfg.N
						if k <= 0 {
							return nil
						}
					}
				}
				if perProducer > 0 {
					pace = pace.Add(time.Duration(k) * perProducer)
					if d := time.Until(pace); d > 0 {
						time.Sleep(d)
					}
				}
				seq0 := s.seqLo + uint64(next.Add(k)-k)
				now := time.Now()
				for i := range k {
					// The producer's one buffer, rewritten every batch: the
					// engine copies the payloads before ScheduleBatch returns.
					pl := buf[int(i)*s.cfg.Payload : int(i+1)*s.cfg.Payload : int(i+1)*s.cfg.Payload]
					due := now.Add(s.cfg.delay.sample(rng))
					encodePayload(pl, seq0+uint64(i), due)
					msgs[i] = engine.Message{Dest: dest, Due: due, Payload: pl}
				}
				t0 := time.Now()
				if perProducer > 0 && pace.Before(t0) {
					// Paced: latency counts from when the batch should have
					// gone, so a stall that delays the next send shows.
					t0 = pace
				}
				acked, err := send(ctx, p, msgs[:k])
				lat := time.Since(t0)
				s.sched.Add(k)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("schedule: %w", err)
				}
				if !acked {
					continue
				}
				s.ack.RecordN(lat, uint64(k))
				for i := range k {
					seq := seq0 + uint64(i)
					s.tr.ack(seq)
					due := msgs[i].Due.UnixNano()
					if s.logs != nil {
						if err := s.logs.acked(seq, due); err != nil {
							return err
						}
					}
					for m := s.maxDue.Load(); due > m && !s.maxDue.CompareAndSwap(m, due); m = s.maxDue.Load() {
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// rates fills in the report's rates and latency quantiles: schedules over
// the producers' schedSecs, fires from the first to the last delivery.
func (s *session) rates(rep *report, schedSecs float64) {
	if schedSecs > 0 {
		rep.ScheduleRate = float64(rep.Acknowledged) / schedSecs
	}
	if f, l := s.firstFire.Load(), s.lastFire.Load(); l > f {
		rep.FireRate = float64(rep.Delivered+rep.Duplicates) / time.Duration(l-f).Seconds()
	}
	rep.AckLatencyMs = quantilesMs(&s.ack)
	rep.LatenessMs = latenessMs(&s.late)
}

// sample takes the once-a-second figures: peak pending, heap per pending
// entry at the peak, store size.
func (s *session) sample() engine.Stats {
	st := s.eng.Stats()
	pending := s.tr.acked.Load() - s.tr.delivered.Load()
	if pending > s.peakPending {
		s.peakPending = pending
		if live := liveHeap(); pending > 0 && live > s.heapBase {
			s.heapPerEntry = float64(live-s.heapBase) / float64(pending)
		}
	}
	s.storeBytes = max(s.storeBytes, int64(st.Store.DiskBytes))
	return st
}

// progress prints one line about where the run is.
func (s *session) progress(out io.Writer, phase string, eta time.Duration) {
	if s.cfg.Quiet {
		return
	}
	el := time.Since(s.start).Seconds()
	fmt.Fprintf(out, "%5.1fs %-8s scheduled %10d (%7.0f/s)  fired %10d (%7.0f/s)  pending %9d  p99 lateness %6.1fms  eta %v\n",
		el, phase, s.tr.acked.Load(), float64(s.tr.acked.Load())/el, s.tr.delivered.Load(), float64(s.tr.delivered.Load())/el,
		s.tr.acked.Load()-s.tr.delivered.Load(), ms(s.late.Snapshot().Quantile(0.99)), eta.Round(time.Second))
}

// drain waits until every acknowledged message was delivered, or until the
// latest due time plus grace has passed.
func (s *session) drain(ctx context.Context, out io.Writer, grace time.Duration) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		left := s.tr.acked.Load() - s.tr.delivered.Load()
		deadline := time.Unix(0, s.maxDue.Load()).Add(grace)
		if left <= 0 || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		case <-tick.C:
			s.sample()
			s.progress(out, "firing", max(0, time.Until(time.Unix(0, s.maxDue.Load()))))
		}
	}
}

// runLoad is the default mode: schedule for -duration, wait for every
// message to fire, report.
func runLoad(ctx context.Context, cfg config, out io.Writer) (*report, error) {
	dir := ""
	if !cfg.Mem {
		dir = cfg.Dir
		if dir == "" {
			tmp, err := os.MkdirTemp("", "hourglass-loadgen-")
			if err != nil {
				return nil, fmt.Errorf("store directory: %w", err)
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
	}
	s := newSession(cfg)
	if err := s.open(ctx, dir); err != nil {
		return nil, err
	}
	mode := "durable store in " + dir
	if dir == "" {
		mode = "in memory (nothing survives a restart)"
	}
	if !cfg.Quiet {
		fmt.Fprintf(out, "hourglass loadgen: %s, %d producers × batch %d, delay %s, payload %d B, seed %d, GOMAXPROCS %d\n",
			mode, cfg.Producers, cfg.Batch, cfg.Delay, cfg.Payload, cfg.Seed, runtime.GOMAXPROCS(0))
	}
	until := s.start.Add(cfg.Duration)
	prodErr := make(chan error, 1)
	go func() { prodErr <- s.produce(ctx, until) }()
	tick := time.NewTicker(time.Second)
	var err error
producing:
	for {
		select {
		case err = <-prodErr:
			break producing
		case <-tick.C:
			s.sample()
			s.progress(out, "schedule", max(0, time.Until(until))+cfg.delay.maxDelay)
		}
	}
	tick.Stop()
	schedSecs := time.Since(s.start).Seconds()
	if err == nil {
		s.drain(ctx, out, 30*time.Second)
	}
	if ctx.Err() != nil {
		// Messages not yet due are not lost; an interrupted run has no verdict.
		s.close()
		return nil, fmt.Errorf("interrupted after %.1fs, before every message was due: no verdict", time.Since(s.start).Seconds())
	}
	rep := s.finish(ctx, schedSecs)
	if err != nil {
		return rep, err
	}
	return rep, nil
}

// finish shuts the engine down and builds the report.
func (s *session) finish(ctx context.Context, schedSecs float64) *report {
	st := s.sample()
	shut, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.eng.Shutdown(shut); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: shutdown:", err)
	}
	s.tgt.close()
	lost, _ := s.tr.settle()
	rep := &report{
		Scheduled:           s.sched.Load(),
		Acknowledged:        s.tr.acked.Load(),
		Delivered:           s.tr.delivered.Load(),
		Lost:                lost,
		Early:               s.tr.early.Load(),
		Duplicates:          s.tr.duplicates.Load(),
		Expired:             int64(st.Expired),
		PeakPending:         s.peakPending,
		RSSPeakBytes:        rssPeak(),
		HeapBytesPerPending: s.heapPerEntry,
		StoreBytes:          s.storeBytes,
		PushBacks:           int64(st.PushBacks),
		PushBackWaitMs:      ms(st.PushBackWait),
		unexpected:          s.tr.unexpected.Load(),
	}
	s.rates(rep, schedSecs)
	return rep
}

// liveHeap returns the heap the last garbage collection found live: unlike
// HeapAlloc it leaves out garbage not yet collected, and reading it does
// not stop the world.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
