package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hourglassmq/hourglass/internal/hist"
)

// childLogs is a crash child's record of what it was told and what it did,
// written with one unbuffered write per record so that a SIGKILL loses
// nothing already written (the page cache survives the process). An ack is
// logged after Schedule returned success; a delivery before the handler
// returns, so a crash in between means a redelivery, never a missed one.
type childLogs struct {
	mu         sync.Mutex
	acks, dels *os.File
}

// childEnv marks a child process of -crash; the tests' TestMain looks for it
// to run the child in the test binary.
const childEnv = "HOURGLASS_LOADGEN_CHILD"

const (
	ackRecord = 16 // seq, due
	delRecord = 24 // seq, due, delivered at
)

// openChildLogs opens child's own pair of logs: a record torn by a kill can
// only be the last of its file, where checkLogs drops it.
func openChildLogs(dir string, child uint64) (*childLogs, error) {
	open := func(kind string) (*os.File, error) {
		return os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s.%04d.log", kind, child)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	}
	acks, err := open("acks")
	if err != nil {
		return nil, err
	}
	dels, err := open("deliveries")
	if err != nil {
		acks.Close()
		return nil, err
	}
	return &childLogs{acks: acks, dels: dels}, nil
}

func (l *childLogs) acked(seq uint64, due int64) error {
	var b [ackRecord]byte
	binary.LittleEndian.PutUint64(b[0:], seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(due))
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.acks.Write(b[:])
	return err
}

func (l *childLogs) delivered(seq uint64, due, at int64) error {
	var b [delRecord]byte
	binary.LittleEndian.PutUint64(b[0:], seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(due))
	binary.LittleEndian.PutUint64(b[16:], uint64(at))
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.dels.Write(b[:])
	return err
}

func (l *childLogs) close() error {
	return errors.Join(l.acks.Close(), l.dels.Close())
}

// runChild is the engine process of -crash: it schedules until killed, or,
// with -produce=false, fires everything pending and exits cleanly, leaving
// its recovery figures in recovery.json.
func runChild(ctx context.Context, cfg config) error {
	logs, err := openChildLogs(cfg.logs, cfg.seqLo>>childBits)
	if err != nil {
		return fmt.Errorf("child logs: %w", err)
	}
	defer logs.close()
	s := newSession(cfg)
	s.logs = logs
	s.seqLo = cfg.seqLo
	s.cfg.N = 1<<childBits - 1 // stay inside this child's sequence range
	if err := s.open(ctx, cfg.Dir); err != nil {
		return err
	}
	if cfg.produce {
		err := s.produce(ctx, time.Now().Add(time.Hour))
		s.close()
		return err
	}
	last := time.Now()
	deadline := time.Now().Add(cfg.delay.maxDelay + time.Minute)
	for ctx.Err() == nil {
		if time.Now().After(deadline) {
			s.close()
			return fmt.Errorf("final run: messages still pending %v after open; the parent will count them lost", time.Since(deadline.Add(-cfg.delay.maxDelay-time.Minute)).Round(time.Second))
		}
		st := s.eng.Stats()
		if !cfg.Quiet && time.Since(last) >= time.Second {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "final run: %d delivered, %d pending in the store, %d in flight\n", s.tr.delivered.Load(), st.StorePending, st.InFlight)
		}
		if st.StorePending == 0 && st.InFlight == 0 {
			rec := recovery{
				FirstFireMs: ms(st.Recovery.FirstFire),
				FullMs:      ms(st.Recovery.FullLoad),
				Recovered:   st.Recovery.Pending,
			}
			b, _ := json.Marshal(rec)
			if err := os.WriteFile(filepath.Join(cfg.logs, "recovery.json"), b, 0o644); err != nil {
				return err
			}
			err := s.eng.Shutdown(ctx)
			s.tgt.close()
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.close()
	return ctx.Err()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runCrash starts the engine as a child process, kills it with SIGKILL at
// random moments cfg.Crash times, restarts it on the same store each time,
// finally lets a child fire everything left, and checks the children's logs:
// every acknowledged message delivered, none early.
func runCrash(ctx context.Context, cfg config, out io.Writer) (*report, error) {
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "hourglass-crash-store-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	logs, err := os.MkdirTemp("", "hourglass-crash-logs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(logs)
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 7))
	child := func(i int, produce bool) *exec.Cmd {
		args := []string{"-child", "-logs", logs, "-dir", dir, "-produce=" + strconv.FormatBool(produce),
			"-seqlo", strconv.FormatUint(uint64(i+1)<<childBits, 10),
			"-seed", strconv.FormatUint(cfg.Seed+uint64(i)+1, 10), "-parallelism", strconv.Itoa(cfg.Parallelism),
			"-producers", strconv.Itoa(cfg.Producers), "-batch", strconv.Itoa(cfg.Batch),
			"-delay", cfg.Delay, "-payload", strconv.Itoa(cfg.Payload), "-shards", strconv.Itoa(cfg.Shards),
			"-tick", cfg.Tick.String(), "-window", cfg.Window.String(), "-memtable", strconv.Itoa(cfg.MemTableMiB), "-rate", strconv.FormatFloat(cfg.Rate, 'f', -1, 64),
			"-quiet=" + strconv.FormatBool(cfg.Quiet)}
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Env = append(os.Environ(), childEnv+"=1")
		cmd.Stderr = os.Stderr
		return cmd
	}
	start := time.Now()
	var produced time.Duration
	for i := range cfg.Crash {
		cmd := child(i, true)
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start child: %w", err)
		}
		life := 50*time.Millisecond + time.Duration(rng.Int64N(int64(1950*time.Millisecond)))
		select {
		case <-time.After(life):
		case <-ctx.Done():
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		werr := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			return nil, fmt.Errorf("child %d ended before it was killed: %v", i+1, werr)
		}
		produced += life
		if !cfg.Quiet {
			fmt.Fprintf(out, "crash %3d/%d: SIGKILL after %v\n", i+1, cfg.Crash, life.Round(time.Millisecond))
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	final := child(cfg.Crash, false)
	if err := final.Run(); err != nil {
		return nil, fmt.Errorf("final child (fire what is left): %w", err)
	}
	if !cfg.Quiet {
		fmt.Fprintf(out, "final run fired everything pending; checking the logs (%v in all)\n", time.Since(start).Round(time.Millisecond))
	}
	rep, err := checkLogs(logs)
	if err != nil {
		return nil, err
	}
	if produced > 0 {
		rep.ScheduleRate = float64(rep.Acknowledged) / produced.Seconds()
	}
	b, err := os.ReadFile(filepath.Join(logs, "recovery.json"))
	if err != nil {
		return nil, fmt.Errorf("final child's recovery figures: %w", err)
	}
	rep.Recovery = &recovery{}
	if err := json.Unmarshal(b, rep.Recovery); err != nil {
		return nil, fmt.Errorf("final child's recovery figures: %w", err)
	}
	return rep, nil
}

// checkLogs replays the children's logs into a tracker and builds the report.
func checkLogs(dir string) (*report, error) {
	tr := &tracker{}
	var late hist.Histogram // delivery time minus due time, early as 0
	read := func(kind string, size int, fn func(b []byte)) error {
		files, err := filepath.Glob(filepath.Join(dir, kind+".*.log"))
		if err != nil {
			return err
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("read %s: %w", f, err)
			}
			b = b[:len(b)/size*size] // a record cut by a kill is the file's last
			for ; len(b) > 0; b = b[size:] {
				fn(b[:size])
			}
		}
		return nil
	}
	if err := read("acks", ackRecord, func(b []byte) {
		tr.ack(binary.LittleEndian.Uint64(b))
	}); err != nil {
		return nil, err
	}
	var first, last int64
	if err := read("deliveries", delRecord, func(b []byte) {
		seq := binary.LittleEndian.Uint64(b)
		due := int64(binary.LittleEndian.Uint64(b[8:]))
		at := int64(binary.LittleEndian.Uint64(b[16:]))
		tr.deliver(seq, due, at)
		late.Record(max(time.Duration(at-due), 0))
		if first == 0 || at < first {
			first = at
		}
		last = max(last, at)
	}); err != nil {
		return nil, err
	}
	lost, unexpected := tr.settle()
	rep := &report{
		Scheduled:    tr.acked.Load(),
		Acknowledged: tr.acked.Load(),
		Delivered:    tr.delivered.Load(),
		Lost:         lost,
		Early:        tr.early.Load(),
		Duplicates:   tr.duplicates.Load(),
		RSSPeakBytes: rssPeak(),
		unexpected:   unexpected,
	}
	if last > first {
		rep.FireRate = float64(rep.Delivered+rep.Duplicates) / time.Duration(last-first).Seconds()
	}
	rep.LatenessMs = latenessMs(&late)
	return rep, nil
}

// runReplay opens an existing store, fires what is pending and reports the
// recovery. Without the acknowledgements of the run that left the store it
// cannot count lost messages; it does count early ones.
func runReplay(ctx context.Context, cfg config, out io.Writer) (*report, error) {
	if _, err := os.Stat(cfg.Replay); err != nil {
		return nil, fmt.Errorf("-replay %s: %w", cfg.Replay, err)
	}
	s := newSession(cfg)
	if err := s.open(ctx, cfg.Replay); err != nil {
		return nil, err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for ctx.Err() == nil {
		st := s.eng.Stats()
		if st.StorePending == 0 && st.InFlight == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-poll.C:
		case <-tick.C:
			s.sample()
			s.progress(out, "replay", 0)
		}
	}
	st := s.eng.Stats()
	rep := s.finish(ctx, 0)
	rep.Recovery = &recovery{FirstFireMs: ms(st.Recovery.FirstFire), FullMs: ms(st.Recovery.FullLoad), Recovered: st.Recovery.Pending}
	return rep, ctx.Err()
}
