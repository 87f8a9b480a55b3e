package wal

import "time"

// Recovery reports what Open found.
type Recovery struct {
	Duration time.Duration
	// Blocks is the number of packed blocks that still hold pending messages.
	Blocks int
	// BlockPending and TimedPending count pending messages packed in blocks
	// and in the time-ordered keyspace.
	BlockPending, TimedPending int64
	// DeadLetters is the number of dead letters.
	DeadLetters int64
	// Created is true when Open created a new store.
	Created bool
	// CleanClose is true when the store had been closed cleanly, and Open
	// checked its files and blocks against the clean-close record (the
	// sstables' CRCs, and the counts of TimedPending and DeadLetters, which
	// Open took from the record, in the background). False means Open recovered as after
	// a crash (and reads every key in the background to check them).
	CleanClose bool
}
