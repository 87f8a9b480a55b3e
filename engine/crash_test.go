package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The crash test runs this test binary again as a child process (selected by
// crashChildEnv, see TestMain). The child opens a durable engine on the
// parent's directory, schedules under load and reports on stdout:
//
//	A <payload>                 about to schedule it
//	S <payload>                 Schedule returned success (it is durable)
//	D <payload> <attempt> <due> <now>   the handler ran (before its ack)
//
// The parent SIGKILLs it at random moments, restarts it on the same
// directory (every other time first killing a child that only recovers,
// 1-150 ms after it starts), and finally lets a child drain everything. The
// window is shorter than the due times, so messages also go through the
// store's time-ordered keyspace. SIGKILL keeps the page cache: this proves
// recovery and at-least-once, not the sync (TestCrashPointsLoseNothing-
// Acknowledged does). Then, in Jepsen's
// words: lost (acked, never delivered) = 0, unexpected (delivered, never
// attempted) = 0, early (handler ran before due) = 0; duplicates are counted
// and may only come from a crash (never twice within one child's life).

const (
	crashChildEnv = "HOURGLASS_ENGINE_CRASH_CHILD"
	crashDirEnv   = "HOURGLASS_ENGINE_CRASH_DIR"
	crashRoundEnv = "HOURGLASS_ENGINE_CRASH_ROUND"
)

func crashChild() {
	dir := os.Getenv(crashDirEnv)
	round := os.Getenv(crashRoundEnv)
	drain := os.Getenv(crashChildEnv) == "drain"
	var outMu sync.Mutex
	out := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...) + "\n"
		outMu.Lock()
		_, _ = os.Stdout.WriteString(line)
		outMu.Unlock()
	}
	handler := func(ctx context.Context, d *Delivery) error {
		p := string(d.Payload)
		out("D %s %d %d %d", p, d.Attempt, d.Due.UnixNano(), time.Now().UnixNano())
		if strings.HasSuffix(p, "c") && !strings.HasPrefix(p, "casc-") {
			// Cascade: committed atomically with this message's ack.
			if err := d.ScheduleIn(20*time.Millisecond, Message{Dest: "local://crash", Payload: []byte("casc-" + p)}); err != nil {
				return err
			}
		}
		return nil
	}
	e, err := Open(context.Background(), Options{
		Dir:    dir,
		Shards: 2,
		Window: 100 * time.Millisecond, // shorter than the dues: the time-ordered keyspace is used
		Logger: quietLogger(),
		Queues: []Queue{{Name: "crash", Handler: handler, Parallelism: 4}},
		Retry:  RetryPolicy{MaxAttempts: -1, Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	out("R %s %d %d", round, e.Stats().Recovery.Pending, 0)
	if os.Getenv(crashChildEnv) == "recover" {
		select {} // fire what is due until killed
	}
	if drain {
		// Everything is due by now; give it two minutes at most, so a
		// stuck engine fails the test instead of running on.
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			if st := e.Stats(); st.StorePending == 0 && st.InFlight == 0 {
				_ = e.Shutdown(context.Background())
				out("E")
				os.Exit(0)
			}
		}
		st := e.Stats()
		fmt.Fprintf(os.Stderr, "child drain: still %d pending in the store, %d in flight, %d in RAM, lag %v after 2 minutes\n",
			st.StorePending, st.InFlight, st.PendingTotal, st.LoaderLag)
		os.Exit(4)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				batch := make([]Message, 20)
				now := time.Now()
				for k := range batch {
					p := fmt.Sprintf("r%s-g%d-%d-%d", round, g, i, k)
					if k%5 == 0 {
						p += "c"
					}
					out("A %s", p)
					batch[k] = Message{Dest: "local://crash", Payload: []byte(p),
						Due: now.Add(time.Duration(rand.IntN(300)) * time.Millisecond)}
				}
				if _, err := e.ScheduleBatch(context.Background(), batch); err != nil {
					fmt.Fprintln(os.Stderr, "child schedule:", err)
					os.Exit(3)
				}
				for k := range batch {
					out("S %s", batch[k].Payload)
				}
			}
		}()
	}
	wg.Wait()
}

type crashLog struct {
	attempted map[string]bool
	acked     map[string]bool
	delivered map[string]int
	early     int
	dupSame   int // delivered twice within one child life
}

func runCrashChild(t *testing.T, dir string, round int, mode string, killAfter time.Duration, log *crashLog) {
	t.Helper()
	// The child dies with the test: no child outlives a failed or timed-out
	// parent.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+mode, crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var timer *time.Timer
	if killAfter > 0 {
		timer = time.AfterFunc(killAfter, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "A":
			log.attempted[f[1]] = true
		case "S":
			log.acked[f[1]] = true
		case "D":
			if len(f) != 5 {
				continue // torn last line of a killed child
			}
			due, _ := strconv.ParseInt(f[3], 10, 64)
			now, _ := strconv.ParseInt(f[4], 10, 64)
			if now < due {
				log.early++
			}
			if seen[f[1]] {
				log.dupSame++
			}
			seen[f[1]] = true
			log.delivered[f[1]]++
		}
	}
	err = cmd.Wait()
	if killAfter == 0 {
		require.NoError(t, err, "drain child failed")
		return
	}
	// Only our SIGKILL may end a child: one that died by itself (a panic,
	// an invariant check, a failed write) is a bug, not a crash to recover.
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		ws, ok := exit.Sys().(syscall.WaitStatus)
		require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL,
			"%s child (round %d) died by itself, not by the test's SIGKILL: %v", mode, round, err)
	} else {
		require.NoError(t, err, "%s child (round %d)", mode, round)
	}
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-runs the binary; skipped with -short")
	}
	rng := rand.New(rand.NewPCG(uint64(seed(t)), 1))
	dir := t.TempDir()
	log := &crashLog{attempted: map[string]bool{}, acked: map[string]bool{}, delivered: map[string]int{}}
	rounds := 8
	for r := range rounds {
		kill := time.Duration(300+rng.IntN(900)) * time.Millisecond
		runCrashChild(t, dir, r, "load", kill, log)
		if r%2 == 1 {
			// Killed again while recovering: 0-150 ms after start.
			runCrashChild(t, dir, r, "recover", time.Duration(1+rng.IntN(150))*time.Millisecond, log)
		}
	}
	runCrashChild(t, dir, rounds, "drain", 0, log)

	lost, unexpected, dups := 0, 0, 0
	for p := range log.acked {
		if log.delivered[p] == 0 {
			lost++
			if lost < 5 {
				t.Logf("lost %s", p)
			}
		}
	}
	cascades := 0
	for p, n := range log.delivered {
		orig := strings.TrimPrefix(p, "casc-")
		if orig != p {
			cascades++
			if log.delivered[orig] == 0 {
				unexpected++
			}
		} else if !log.attempted[p] {
			unexpected++
		}
		dups += n - 1
	}
	t.Logf("rounds %d: attempted %d, acked %d, delivered %d distinct (%d cascades), duplicates %d, lost %d, unexpected %d, early %d",
		rounds, len(log.attempted), len(log.acked), len(log.delivered), cascades, dups, lost, unexpected, log.early)
	require.NotZero(t, len(log.acked))
	require.Zero(t, lost, "lost")
	require.Zero(t, unexpected, "unexpected")
	require.Zero(t, log.early, "early")
	require.Zero(t, log.dupSame, "duplicate deliveries within one process life (not caused by a crash)")
}
