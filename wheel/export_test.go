package wheel

import "math"

// Verify exposes the invariant checker to the external tests.
func (w *Wheel) Verify() error { return w.verify() }

// InvariantsOn tells tests whether the invariants build tag is on.
const InvariantsOn = invariantsOn

// Refs counts the refs held in slot arrays and the overdue list, dead or live.
func (w *Wheel) Refs() int {
	n := len(w.overdue)
	for _, b := range w.buckets {
		n += len(b)
	}
	return n
}

// AgeFreeEntries moves every free entry's generation to just below where it would be
// retired, so a test can watch retirement without 2^32 operations.
func (w *Wheel) AgeFreeEntries() {
	for _, i := range w.free {
		w.entries[i].gen = math.MaxUint32 - 1
	}
}
