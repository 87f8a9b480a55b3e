package engine

import (
	"strings"
	"sync/atomic"
)

// dest is one destination string: its local queue (if local://), retry
// policy and in-flight limit. Shared by shards and dispatchers; immutable
// after creation except the atomics. Entries are reference counted by the
// ready queues and batches that hold them, and the registry drops idle ones
// (sweep), so a stream of distinct destinations leaves nothing behind.
type dest struct {
	name     string
	scheme   string
	local    string // queue name for local://
	limit    atomic.Int64
	inflight atomic.Int64
	retry    atomic.Pointer[RetryPolicy]
	refs     atomic.Int64  // ready queues and batches holding it
	pb       *pushGate     // paces its producers while a ready queue for it lags
	outcomes atomic.Uint64 // messages whose outcome a shard applied
}

// acquire takes one in-flight slot if the limit allows.
func (d *dest) acquire() bool {
	if d.inflight.Add(1) > d.limit.Load() {
		d.inflight.Add(-1)
		return false
	}
	return true
}

func (d *dest) releaseSlot() { d.inflight.Add(-1) }

// hold returns the dest for name with one reference taken, creating it on
// first use. Drop the reference with release.
func (e *Engine) hold(name string) *dest {
	e.destMu.RLock()
	d := e.dests[name]
	if d != nil {
		d.refs.Add(1) // under the read lock: sweep (write lock) sees it
	}
	e.destMu.RUnlock()
	if d != nil {
		return d
	}
	e.destMu.Lock()
	defer e.destMu.Unlock()
	if d = e.dests[name]; d == nil {
		d = &dest{name: name}
		d.pb = newGate(d.outcomes.Load, &e.pb.destsBehind)
		if i := strings.Index(name, "://"); i > 0 {
			d.scheme = strings.ToLower(name[:i])
			if d.scheme == "local" {
				d.local = name[i+3:]
			}
		}
		e.configureDest(d)
		e.dests[name] = d
		e.sweepDests()
	}
	d.refs.Add(1)
	return d
}

// release drops a reference taken by hold.
func (e *Engine) release(d *dest) { d.refs.Add(-1) }

// sweepDests drops idle destinations once the registry has doubled since
// the last sweep, so its cost per new destination stays constant. Callers
// hold destMu (write).
func (e *Engine) sweepDests() {
	if len(e.dests) < max(1024, 2*e.destsAfterSweep) {
		return
	}
	for name, d := range e.dests {
		if d.refs.Load() == 0 {
			delete(e.dests, name)
		}
	}
	e.destsAfterSweep = len(e.dests)
}

// configureDest sets d's policy and limit from the options and queues.
// Callers hold destMu (write).
func (e *Engine) configureDest(d *dest) {
	limit := e.opts.MaxInFlight
	pol := e.opts.Retry
	best := -1
	for _, o := range e.opts.Destinations {
		if strings.HasPrefix(d.name, canonicalDest(o.Prefix)) && len(o.Prefix) > best {
			best = len(o.Prefix)
			if !o.Retry.isZero() {
				pol = o.Retry.withDefaults()
			}
			if o.MaxInFlight > 0 {
				limit = o.MaxInFlight
			}
		}
	}
	if d.local != "" {
		if q := e.queueFor(d.local); q != nil {
			limit = q.Parallelism
			if !q.Retry.isZero() {
				pol = q.Retry.withDefaults()
			}
		}
	}
	d.limit.Store(int64(limit))
	d.retry.Store(&pol)
}

// localQueue returns the queue name of a local:// destination, or "".
// canonicalDest spells dest's scheme in lower case (URL schemes are case
// insensitive), so that every spelling of one destination shares its shard,
// its state and, for an ordered queue, its one batch in flight. It returns
// dest itself when it is already canonical.
func canonicalDest(dest string) string {
	i := strings.Index(dest, "://")
	if i <= 0 || strings.ToLower(dest[:i]) == dest[:i] {
		return dest
	}
	return strings.ToLower(dest[:i]) + dest[i:]
}

func localQueue(dest string) string {
	if i := strings.Index(dest, "://"); i > 0 && strings.EqualFold(dest[:i], "local") {
		return dest[i+3:]
	}
	return ""
}
