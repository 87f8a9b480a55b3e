//go:build !invariants

package wheel

// invariantsOn reports whether this build checks invariants.
const invariantsOn = false

// checkAfterOp is free without the invariants build tag.
func (w *Wheel) checkAfterOp() {}

// invariantState holds nothing without the invariants build tag.
//
//lint:ignore U1000 used by the invariants build
type invariantState struct{}
