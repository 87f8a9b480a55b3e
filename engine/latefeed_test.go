package engine

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hourglassmq/hourglass/store"
	"github.com/hourglassmq/hourglass/wal"
	"github.com/stretchr/testify/require"
)

// lateFeedOpener opens a durable store with two gates a test arms: the
// next Scan waits at one (the shard's loader is held before it takes its
// snapshot), and the next Feed at the other (a store that has committed a
// message, so a Scan sees it, but has not fed it yet: the store contract
// allows it, "a Scan may see a commit before its change is fed").
type lateFeedOpener struct {
	inner                    wal.Options
	scanArmed, feedArmed     atomic.Bool
	scanHeld, feedHeld       chan struct{} // closed when the armed call waits
	scanRelease, feedRelease chan struct{} // closed: let it go
}

func newLateFeedOpener(inner wal.Options) *lateFeedOpener {
	return &lateFeedOpener{inner: inner, scanHeld: make(chan struct{}), feedHeld: make(chan struct{}),
		scanRelease: make(chan struct{}), feedRelease: make(chan struct{})}
}

func (o *lateFeedOpener) OpenStore(ctx context.Context, env store.Env) (store.Store, error) {
	st, err := o.inner.OpenStore(ctx, env)
	if err != nil {
		return nil, err
	}
	return &lateFeedStore{Store: st, o: o}, nil
}

type lateFeedStore struct {
	store.Store
	o *lateFeedOpener
}

func (s *lateFeedStore) Start(ctx context.Context, owner store.Owner) error {
	return s.Store.Start(ctx, &lateFeedOwner{Owner: owner, o: s.o})
}

func (s *lateFeedStore) Scan(ctx context.Context, q store.ScanQuery) ([]store.Message, store.Page, error) {
	if s.o.scanArmed.CompareAndSwap(true, false) {
		close(s.o.scanHeld)
		select {
		case <-s.o.scanRelease:
		case <-time.After(safety):
		}
	}
	return s.Store.Scan(ctx, q)
}

type lateFeedOwner struct {
	store.Owner
	o *lateFeedOpener
}

func (w *lateFeedOwner) Feed(shard int, c store.Change) {
	if w.o.feedArmed.CompareAndSwap(true, false) {
		close(w.o.feedHeld)
		select {
		case <-w.o.feedRelease:
		case <-time.After(safety):
		}
	}
	w.Owner.Feed(shard, c)
}

const feedGateChildEnv = "HOURGLASS_ENGINE_FEEDGATE_CHILD"

// TestLateFeedAfterScanIsNotHeldTwice: a durable store commits M; the
// shard's loader scans M into RAM before M's feed arrives; another feed is
// taken in between; then M's feed arrives. The shard must see that M is in
// RAM already, not place a second copy (one delivery per message per
// process life). Found by the invariant checks in TestCrashRecovery's
// children ("in slot N not found by ID"). The scenario runs in a child
// process because the duplicate trips a panic in the shard's invariant
// check, which would take the whole test binary down.
func TestLateFeedAfterScanIsNotHeldTwice(t *testing.T) {
	if os.Getenv(feedGateChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLateFeedAfterScanIsNotHeldTwice$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), feedGateChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			lines := strings.Split(string(out), "\n")
			for i, l := range lines {
				if strings.HasPrefix(l, "panic:") || strings.Contains(l, "Error:") || strings.Contains(l, "Messages:") {
					t.Errorf("child: %s", strings.Join(lines[i:min(len(lines), i+3)], " | "))
				}
			}
			t.Fatalf("the scenario failed in the child (%v)", err)
		}
		return
	}
	var mu sync.Mutex
	count := map[string]int{}
	h := newHarness(t, "durable", Options{Shards: 1, Queues: []Queue{{Name: "q", Handler: func(_ context.Context, d *Delivery) error {
		mu.Lock()
		count[string(d.Payload)]++
		mu.Unlock()
		return nil
	}}}})
	require.NoError(t, h.e.Close())
	g := newLateFeedOpener(wal.Options{Dir: "store", FS: h.fs})
	releaseScan := sync.OnceFunc(func() { close(g.scanRelease) })
	releaseFeed := sync.OnceFunc(func() { close(g.feedRelease) })
	t.Cleanup(releaseScan)
	t.Cleanup(releaseFeed)
	h.opts.Store = g
	h.open()
	// N beyond the window, fed normally: the loader knows the store holds
	// something out there and scans when the window reaches it.
	h.schedule("local://q", 2*time.Minute, "N")
	h.settle()
	g.scanArmed.Store(true)
	h.clk.Advance(time.Minute) // the loader wakes to page the next minute in...
	recv(t, g.scanHeld, "the loader's scan")
	// ...and, before its snapshot, X is committed and fed (its change
	// waits in the shard's inbox), then M is committed but not yet fed.
	h.schedule("local://q", 30*time.Second, "X")
	g.feedArmed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := h.e.ScheduleIn(bg, 30*time.Second, Message{Dest: "local://q", Payload: []byte("M")})
		done <- err
	}()
	recv(t, g.feedHeld, "M committed, its feed held")
	releaseScan() // the scan sees X and M and places both
	h.settle()    // the shard takes X's change from its inbox
	releaseFeed() // M's change arrives: M is in RAM already
	require.NoError(t, recv(t, done, "M's Schedule"))
	h.settle()
	h.advance(2 * time.Minute)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]int{"X": 1, "M": 1, "N": 1}, count, "each message delivered once")
}
