package engine

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/hourglassmq/hourglass/memstore"
	"github.com/hourglassmq/hourglass/store"
)

// eventLog records every event the engine reports.
type eventLog struct {
	mu        sync.Mutex
	scheduled map[string]int
	cancelled []CancelledInfo
	outcomes  []OutcomeInfo
	retries   []RetryInfo
	dead      []DeadLetterInfo
	panics    []PanicInfo
	expired   []ExpiredInfo
	failed    []error
	stalls    []WriteStallInfo
	attached  []int
	detached  []int
	recovered []RecoveryStats
}

func (l *eventLog) events() Events {
	lock := func(f func()) { l.mu.Lock(); defer l.mu.Unlock(); f() }
	return Events{
		Scheduled: func(s ScheduledInfo) {
			lock(func() {
				for d, n := range s.ByDest {
					l.scheduled[d] += n
				}
			})
		},
		Cancelled: func(c CancelledInfo) { lock(func() { l.cancelled = append(l.cancelled, c) }) },
		Outcomes: func(o OutcomeInfo) {
			o.Lateness = append([]time.Duration(nil), o.Lateness...)
			lock(func() { l.outcomes = append(l.outcomes, o) })
		},
		Retry:         func(r RetryInfo) { lock(func() { l.retries = append(l.retries, r) }) },
		DeadLetter:    func(d DeadLetterInfo) { lock(func() { l.dead = append(l.dead, d) }) },
		HandlerPanic:  func(p PanicInfo) { lock(func() { l.panics = append(l.panics, p) }) },
		Expired:       func(x ExpiredInfo) { lock(func() { l.expired = append(l.expired, x) }) },
		StoreFailed:   func(err error) { lock(func() { l.failed = append(l.failed, err) }) },
		WriteStall:    func(w WriteStallInfo) { lock(func() { l.stalls = append(l.stalls, w) }) },
		ShardAttached: func(i int) { lock(func() { l.attached = append(l.attached, i) }) },
		ShardDetached: func(i int) { lock(func() { l.detached = append(l.detached, i) }) },
		RecoveryDone:  func(r RecoveryStats) { lock(func() { l.recovered = append(l.recovered, r) }) },
	}
}

// eventsOpener opens a memory store whose events the test can fire.
type eventsOpener struct{ env *store.Env }

func (o eventsOpener) OpenStore(ctx context.Context, env store.Env) (store.Store, error) {
	*o.env = env
	return memOpener{}.OpenStore(ctx, env)
}

type memOpener struct{}

func (memOpener) OpenStore(ctx context.Context, env store.Env) (store.Store, error) {
	return memstore.Options{}.OpenStore(ctx, env)
}

// TestEventsReportWhatHappens: every kind of event arrives, with what it
// says (a dead letter's reason, a panic's stack, a message's lateness),
// and dead letters and panics are logged at Warn.
func TestEventsReportWhatHappens(t *testing.T) {
	l := &eventLog{scheduled: map[string]int{}}
	var env store.Env
	var logs bytes.Buffer
	h := newHarness(t, "memory", Options{Shards: 2, Events: l.events(), Store: eventsOpener{&env},
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Retry:  RetryPolicy{MaxAttempts: 2, Delays: []time.Duration{time.Second}}})
	require.NoError(t, h.e.Register(Queue{Name: "q", Handler: h.record(func(ctx context.Context, d *Delivery) error {
		switch string(d.Payload) {
		case "fails":
			return errors.New("down")
		case "panics":
			panic("boom")
		}
		return nil
	})}))
	for _, p := range []string{"ok", "fails", "panics"} {
		h.schedule("local://q", time.Second, p)
	}
	cancel := h.schedule("local://q", time.Minute, "cancelled")
	_, err := h.e.Schedule(bg, Message{Dest: "local://q", Due: t0.Add(time.Second), Expires: t0.Add(time.Second + time.Millisecond), Payload: []byte("expires")})
	require.NoError(t, err)
	require.NoError(t, h.e.Cancel(bg, cancel))
	h.advance(2 * time.Second) // the expiring one fires late: expired
	h.advance(time.Second)     // the retries, which die
	env.Events.WriteStall(true, "memtable full")
	env.Events.WriteStall(false, "")
	env.Events.Failed(errors.New("disk on fire"))
	require.Error(t, h.e.Err())
	require.NoError(t, h.e.Close())
	h.e = nil

	l.mu.Lock()
	defer l.mu.Unlock()
	require.Equal(t, map[string]int{"local://q": 5}, l.scheduled)
	require.Equal(t, []CancelledInfo{{ID: cancel, Dest: "local://q"}}, l.cancelled)
	require.ElementsMatch(t, []int{0, 1}, l.attached)
	require.ElementsMatch(t, []int{0, 1}, l.detached)
	require.Len(t, l.recovered, 1)
	require.Len(t, l.retries, 2)
	for _, r := range l.retries {
		require.Equal(t, 1, r.Attempt)
		require.True(t, t0.Add(3*time.Second).Equal(r.Next), "the next attempt is due a second after the first failed (at 2s): %v", r.Next)
	}
	require.Len(t, l.dead, 2)
	for _, d := range l.dead {
		require.Contains(t, d.Reason, "gave up after 2 attempts")
		require.Equal(t, 2, d.Attempts)
	}
	require.Len(t, l.panics, 2, "both attempts of the panicking message")
	require.Equal(t, "boom", l.panics[0].Value)
	require.Contains(t, string(l.panics[0].Stack), "events_test.go", "the stack names the handler")
	require.Len(t, l.expired, 1)
	require.True(t, t0.Add(time.Second+time.Millisecond).Equal(l.expired[0].Expires))
	handed, exp := 0, 0
	for _, o := range l.outcomes {
		handed += len(o.Lateness)
		exp += o.Expired
		for _, late := range o.Lateness {
			require.GreaterOrEqual(t, late, time.Duration(0))
		}
	}
	require.Equal(t, 5, handed, "a lateness for each message handed to the handler (3, then 2 retries)")
	require.Equal(t, 1, exp)
	require.Equal(t, []WriteStallInfo{{Begin: true, Reason: "memtable full"}, {Begin: false}}, l.stalls)
	require.Len(t, l.failed, 1)
	require.Contains(t, logs.String(), "dead-lettered")
	require.Contains(t, logs.String(), "handler panicked")
	require.Equal(t, 2, strings.Count(logs.String(), "engine: dead-lettered"))
}
