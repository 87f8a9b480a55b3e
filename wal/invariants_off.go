//go:build !invariants

package wal

// invariants turns on expensive consistency checks; set by the invariants
// build tag, which CI uses for tests.
const invariants = false
