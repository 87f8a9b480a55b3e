package wal

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// The compaction gate.
//
// A refused Open leaves the directory as it found it. Open checks before
// Pebble opens the directory read-write whatever decides that (see open.go),
// but the sstables' own bytes are verified in the background once Open has
// returned (verify.go). Pebble's read-write open schedules compactions at once
// (a store with several level-0 files compacts them), and a compaction that
// reads a damaged sstable fails the store: if that happened before Open
// returned, Open would refuse after Pebble had written. So Pebble runs its
// compactions through this scheduler, which grants none until Open has
// decided (open calls release); damage a compaction meets after that fails
// an open store, as any read's does. Flushes do not read sstables and are
// not held.
//
// Otherwise it is Pebble's ConcurrencyLimitScheduler: it grants up to the
// DB's allowed concurrency, when the DB asks (TrySchedule) and from a
// granter goroutine that runs every 100 ms, when a compaction ends, and when
// the gate opens.
type compactionGate struct {
	db   pebble.DBForCompaction // set by Register, before any other call
	poke chan struct{}
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	held    bool // no grant until release
	running int  // compactions granted and not done
	stopped bool // unregistered
}

var _ pebble.CompactionScheduler = (*compactionGate)(nil)

// newCompactionGate returns a gate that holds compactions until release.
func newCompactionGate() *compactionGate {
	return &compactionGate{held: true, poke: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// release lets compactions run from now on.
func (g *compactionGate) release() {
	g.mu.Lock()
	g.held = false
	g.mu.Unlock()
	g.kick()
}

func (g *compactionGate) kick() {
	select {
	case g.poke <- struct{}{}:
	default:
	}
}

// Register implements pebble.CompactionScheduler.
func (g *compactionGate) Register(_ int, db pebble.DBForCompaction) {
	g.db = db
	go g.granter()
}

// Unregister implements pebble.CompactionScheduler: no call into the DB
// happens once it returns.
func (g *compactionGate) Unregister() {
	close(g.quit)
	<-g.done
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}

// TrySchedule implements pebble.CompactionScheduler (the DB calls it with
// its mutex held).
func (g *compactionGate) TrySchedule() (bool, pebble.CompactionGrantHandle) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held || g.stopped || g.running >= g.db.GetAllowedWithoutPermission() {
		return false, nil
	}
	g.running++
	return true, g
}

// UpdateGetAllowedWithoutPermission implements pebble.CompactionScheduler.
func (g *compactionGate) UpdateGetAllowedWithoutPermission() { g.kick() }

// Started, MeasureCPU and CumulativeStats implement
// pebble.CompactionGrantHandle; the gate does not pace compactions.
func (g *compactionGate) Started()                                          {}
func (g *compactionGate) MeasureCPU(pebble.CompactionGoroutineKind)         {}
func (g *compactionGate) CumulativeStats(pebble.CompactionGrantHandleStats) {}

// Done implements pebble.CompactionGrantHandle.
func (g *compactionGate) Done() {
	g.mu.Lock()
	g.running--
	g.mu.Unlock()
	g.kick()
}

// granter grants waiting compactions; it alone calls Schedule, so grants
// are serialized as in Pebble's own scheduler.
func (g *compactionGate) granter() {
	defer close(g.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-g.quit:
			return
		case <-tick.C:
		case <-g.poke:
		}
		g.grant()
	}
}

func (g *compactionGate) grant() {
	for {
		g.mu.Lock()
		ok := !g.held && !g.stopped && g.running < g.db.GetAllowedWithoutPermission()
		g.mu.Unlock()
		if !ok {
			return
		}
		// GetWaitingCompaction only when a grant is possible, so no picked
		// compaction is wasted (as Pebble's scheduler does).
		if waiting, _ := g.db.GetWaitingCompaction(); !waiting {
			return
		}
		if !g.db.Schedule(g) {
			return
		}
		g.mu.Lock()
		g.running++
		g.mu.Unlock()
	}
}
