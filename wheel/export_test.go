package wheel

// Verify exposes the invariant checker to the external tests.
func (w *Wheel) Verify() error { return w.verify() }

// InvariantsOn tells tests whether the invariants build tag is on.
const InvariantsOn = invariantsOn
