package engine

import (
	"sort"
	"sync"
	"time"
)

// Clock is the engine's only source of time. Now must carry a monotonic
// reading when it can (time.Now does): the engine measures intervals as
// Now().Sub(origin), which uses the monotonic clock, and tells time with
// Now().UnixNano(), the wall clock. Due times are wall-clock; the wheels run
// on the monotonic difference (see the package doc).
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is the subset of *time.Timer the engine uses.
type Timer interface {
	// C is the channel the time is delivered on.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was active.
	Stop() bool
	// Reset re-arms the timer to fire d from now.
	Reset(d time.Duration)
}

// MonoClock is optionally implemented by a Clock whose monotonic time is
// kept apart from its wall time (FakeClock, to test wall-clock steps). When
// a Clock does not implement it, the engine uses Now().Sub(origin).
type MonoClock interface {
	// NowMono returns the current time and the monotonic time since an
	// arbitrary fixed origin, read together: a reading of both is never
	// torn by a concurrent change of the clock.
	NowMono() (time.Time, time.Duration)
}

// RealClock is the system clock: time.Now and time.NewTimer.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Stop() bool            { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }

// FakeClock is a Clock for tests. Time stands still until Advance moves it
// (wall and monotonic time together) or StepWall steps the wall clock alone;
// timers whose deadline the monotonic time reaches fire then, in deadline
// order. It implements MonoClock, so the engine's wheels run on its
// monotonic time and a wall-clock step can be tested.
type FakeClock struct {
	mu     sync.Mutex // guards now, mono and timers
	now    time.Time
	mono   time.Duration
	timers []*fakeTimer
}

// NewFakeClock returns a FakeClock reading start.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start.Round(0)}
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Mono returns the fake monotonic time: the sum of every Advance.
func (c *FakeClock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// NowMono returns the fake time and monotonic time together (MonoClock).
func (c *FakeClock) NowMono() (time.Time, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now, c.mono
}

// Advance moves wall and monotonic time forward by d (d >= 0) and fires
// every timer that is due.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.mono += max(0, d)
	c.setLocked(c.now.Add(d))
}

// StepWall moves only the wall clock by d (either way), as an NTP step does;
// monotonic time and timers are unaffected.
func (c *FakeClock) StepWall(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *FakeClock) setLocked(t time.Time) {
	c.now = t
	type fire struct {
		when time.Duration
		c    chan time.Time
	}
	var due []fire
	keep := c.timers[:0]
	for _, ft := range c.timers {
		if ft.when <= c.mono {
			due = append(due, fire{ft.when, ft.c})
		} else {
			keep = append(keep, ft)
		}
	}
	clear(c.timers[len(keep):])
	c.timers = keep
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].when < due[j].when })
	for _, f := range due {
		select {
		case f.c <- t:
		default:
		}
	}
}

// NewTimer returns a timer driven by Advance.
func (c *FakeClock) NewTimer(d time.Duration) Timer {
	ft := &fakeTimer{clock: c, c: make(chan time.Time, 1)}
	ft.Reset(d)
	return ft
}

type fakeTimer struct {
	clock *FakeClock
	c     chan time.Time
	when  time.Duration // on the monotonic timeline
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ft := range c.timers {
		if ft == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}

func (t *fakeTimer) Reset(d time.Duration) {
	t.Stop()
	c := t.clock
	c.mu.Lock()
	t.when = c.mono + d
	if d <= 0 {
		now := c.now
		c.mu.Unlock()
		select {
		case t.c <- now:
		default:
		}
		return
	}
	c.timers = append(c.timers, t)
	c.mu.Unlock()
}
