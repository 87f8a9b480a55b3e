package wal

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hourglassmq/hourglass/store"
)

// Options configures Open. The zero value of every field except Dir selects
// the documented default.
type Options struct {
	// Dir is the directory of the Pebble store. Required.
	Dir string
	// FS is the filesystem every file goes through. Default vfs.Default; tests
	// pass vfs.NewCrashableMem or an errorfs wrapper.
	FS vfs.FS
	// Shards is the number of shards, 1..256. It is fixed when the store is
	// created; reopening with a different non-zero value fails with an error
	// naming the stored value. 0 takes the stored value (and is an error for a
	// new store).
	Shards int
	// MaxBatch bounds the records (appended messages plus resolve outcomes) in
	// one group commit. Default 8192, at most 32768. A single call larger than
	// MaxBatch is committed alone.
	MaxBatch int
	// MaxBatchDelay bounds how long the writer waits for more callers once it
	// holds a request and the queue is empty. Default 100µs; negative means
	// never wait (commit whatever is queued).
	MaxBatchDelay time.Duration
	// MaxPayload bounds Message.Payload. Default 1 MiB, at most 64 MiB.
	MaxPayload int
	// Horizon splits new messages between the two layouts: a message due at
	// most Horizon after Now (at append time) is packed in its commit's block;
	// a later one goes to the time-ordered keyspace so Scan pages it in by
	// range. Default 10 minutes; it should not exceed the engine's in-RAM
	// window. Negative puts every message in the time-ordered keyspace (the
	// "simple" layout, kept for measurement).
	Horizon time.Duration
	// Now tells wall-clock time for the Horizon decision. Default time.Now;
	// tests inject a fixed clock.
	Now func() time.Time
	// Logger receives store and Pebble log lines. Default slog.Default().
	Logger *slog.Logger
	// CacheSize is Pebble's block cache in bytes. Default 64 MiB.
	CacheSize int64
	// MemTableSize is Pebble's memtable size in bytes. Default 64 MiB.
	MemTableSize uint64

	// Set by OpenStore: the shard count of a new store opened with
	// Shards 0, and the engine's event hooks.
	defaultShards int
	events        store.Events
	// checkpointBytes is the resolve log's minimum bound (clearlog.go);
	// tests lower it. Default defaultCheckpointBytes.
	checkpointBytes int
	// blobMinSize is the smallest value Pebble separates into a blob file
	// (valueSeparation); tests lower it so small stores hold blob files.
	// Default defaultBlobMinSize.
	blobMinSize int
}

// Defaults of the Options fields of the same names (see Options).
const (
	DefaultMaxBatch      = 8192                      // records per group commit
	DefaultMaxBatchDelay = 100 * time.Microsecond    // wait for more callers
	DefaultMaxPayload    = 1 << 20                   // bytes
	DefaultHorizon       = 10 * time.Minute          // packed vs time-ordered
	DefaultCacheSize     = 64 << 20                  // Pebble block cache bytes
	DefaultMemTableSize  = 64 << 20                  // Pebble memtable bytes
	maxBatchLimit        = 2 * store.MaxCallMessages // slot space of one group
)

// Validate explains every bad value; Open calls it.
func (o Options) Validate() error {
	switch {
	case o.Dir == "":
		return invalidf("options: Dir is empty; the store needs a directory")
	case o.Shards < 0 || o.Shards > store.MaxShards:
		return invalidf("options: Shards = %d; want 0 (use the stored value) or 1..%d", o.Shards, store.MaxShards)
	case o.MaxBatch < 0 || o.MaxBatch > maxBatchLimit:
		return invalidf("options: MaxBatch = %d; want 0 (default %d) or 1..%d", o.MaxBatch, DefaultMaxBatch, maxBatchLimit)
	case o.MaxBatchDelay > time.Second:
		return invalidf("options: MaxBatchDelay = %v; more than 1s would hold every caller that long", o.MaxBatchDelay)
	case o.MaxPayload < 0 || o.MaxPayload > 64<<20:
		return invalidf("options: MaxPayload = %d; want 0 (default %d) or 1..%d", o.MaxPayload, DefaultMaxPayload, 64<<20)
	case o.CacheSize < 0:
		return invalidf("options: CacheSize = %d is negative", o.CacheSize)
	}
	return nil
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxBatchDelay == 0 {
		o.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.Horizon == 0 {
		o.Horizon = DefaultHorizon
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.checkpointBytes == 0 {
		o.checkpointBytes = defaultCheckpointBytes
	}
	if o.blobMinSize == 0 {
		o.blobMinSize = defaultBlobMinSize
	}
	return o
}

// String prints the options with defaults applied, for logs.
func (o Options) String() string {
	d := o.withDefaults()
	return fmt.Sprintf("dir=%s shards=%d max_batch=%d max_batch_delay=%v max_payload=%d horizon=%v cache=%d memtable=%d",
		d.Dir, d.Shards, d.MaxBatch, d.MaxBatchDelay, d.MaxPayload, d.Horizon, d.CacheSize, d.MemTableSize)
}
