//go:build invariants

package engine

// invariants turns on the shards' self-checks (tests build with -tags
// invariants).
const invariants = true
