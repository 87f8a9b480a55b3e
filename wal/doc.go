// Package wal is Hourglass's durable message store: every accepted message is
// on disk, synced, before its caller hears "yes", and a restart finds every
// pending message again. It is built on Pebble (v2, format pinned to
// PebbleFormat, values of 1 KiB and more separated into blob files) and does
// all file I/O through one vfs.FS,
// so tests crash it (vfs.NewCrashableMem) and inject faults (vfs/errorfs).
//
// # Basics
//
// Open a Store, Append messages (the store assigns each an ID whose top 8
// bits are its shard), Scan a shard's due window into RAM, and Resolve
// outcomes (Done, Update, Dead, plus New cascaded messages) in atomic batches.
// Dead letters have their own keyspace: ListDead, GetDead, ReplayDead,
// PurgeDead, PurgeAllDead.
//
// # Sync and ack contract
//
//   - Append and Resolve return nil only after the Pebble batch holding the
//     whole call was committed with Sync. One writer goroutine per store
//     group-commits concurrent callers: it takes whatever is queued, waits at
//     most Options.MaxBatchDelay for more, caps the group at Options.MaxBatch
//     records, and answers every caller in the group only after the sync. A
//     caller is never told "yes" for a write that a crash can lose.
//   - Each call is all-or-nothing: invalid input (ErrInvalid) or an ID that is
//     not pending (*NotPendingError, errors.Is ErrNotFound) rejects the call
//     and writes nothing of it; other callers in the same group are not
//     affected.
//   - A resolve that was not yet synced when the process died is simply not
//     there after restart: the message is still pending and will be delivered
//     again (a duplicate, never a loss).
//   - Sticky failure: a failed commit; Pebble calling its logger's Fatalf
//     (which it does on WAL write/sync errors instead of returning them, and
//     after which its commit pipeline cannot be trusted); a failed flush or
//     an ENOSPC in Pebble's background work (which Pebble retries forever
//     while writes stall); or damage found by a read, by the writer's own
//     reads (idempotency keys, dead letters, moved messages) or by the
//     background verification after Open (see below): each records
//     a failure wrapping ErrFailed and the cause (errors.Is finds ENOSPC).
//     From then on every call, reads included, returns it until the store is
//     opened again; the store never reports a false success. Err returns it
//     and says what to do; store.Events.Failed is called once; and the
//     store releases Pebble and its directory by itself, in the background
//     (Close on a failed store writes no clean-close record).
//   - If ctx ends, or the store fails, while a call waits, the call returns
//     at once with ctx's error or the failure (and says when Pebble stalls
//     writes); if the writer had already taken the request it may still
//     become durable (the error says so), so retry with an idempotency key.
//     Pebble's write stalls are reported through store.Events.WriteStall.
//
// # Open, Close and damage
//
// Close flushes Pebble's memtable, closes Pebble and writes HOURGLASS-CLOSED,
// synced last: the counts the store holds and the size and CRC-32C of every
// Pebble file. A store closed cleanly reopens exactly as it was, or Open
// refuses it: after a clean close there is no torn tail, so any difference is
// damage.
//
// Open refuses, before anything in the directory is written, with a
// *DamageError that names the file, says what is wrong and what to do, and
// wraps ErrCorrupt (ErrInvalid for a non-empty directory that holds no store,
// ErrLocked for a store another process has open):
//
//   - a directory holding Pebble's files but not a complete store (no
//     format-version or manifest marker, or no MANIFEST where the marker
//     points), on which Pebble's own Open would create a new store and
//     delete the old files; a creation that crashed before any data is
//     finished instead;
//   - after a clean close, any file missing, added or resized since, any
//     file but an sstable changed since, or a last sequence, block count or
//     per-shard block pending count that differs from the record (Open counts
//     the blocks itself);
//   - after a crash (no clean-close record), a log record that is unreadable
//     although a later record says it was synced; a MANIFEST edit that is
//     unreadable although a later one follows, or a MANIFEST whose edits
//     and the logs Pebble would replay skip sequence numbers (synced edits
//     lost with the writes they flushed; walscan.go);
//   - a meta record, summary or resolve-log record that does not decode or
//     breaks an invariant, and whatever Pebble itself finds damaged.
//
// What reads everything runs in the background once Open has returned, so
// a big store starts serving (and the engine firing) at once: after a clean
// close the CRC of every sstable against the record, and a count of the
// time keyspace's messages per shard and of the dead letters (one key each,
// which Open takes from the record instead), after a crash every key of the
// recovered state, decoded and checked. Damage found there, or by any
// read before it (Pebble checks every block checksum it reads, and a packed
// block's CRC is checked on every read), fails the store as below with a
// *DamageError (errors.Is ErrCorrupt): no call ever answers from damaged
// bytes. The caller learns of it from Err, from the next call (every call
// returns the failure), and once from store.Events.Failed; the engine makes
// it sticky in Engine.Err, reports it through its Events.StoreFailed and the
// admin handler's health check, and refuses further work. Pebble runs no
// compaction until Open has decided (gate.go), so damage only a compaction
// would meet fails the open store later, never a refused Open after Pebble
// wrote. Close waits for the background verification, so a clean-close
// record never vouches for files nobody verified.
//
// It does so by reading the listing and the record first, then opening
// Pebble read-only (which writes nothing) and recovering there; only then
// does it remove the record and open Pebble read-write. On a full disk the
// read-write open's flush of the recovered log fails with ENOSPC, and Open
// returns at once saying so; Pebble keeps trying in the background, holding
// the directory, and a later Open waits for it within its ctx.
//
// After a crash a torn log tail is tolerated as before: every synced,
// acknowledged write survives, and unsynced ones may vanish. What cannot be
// told from a torn tail is tolerated too, and then the store opens with the
// exact state of an earlier acknowledged point: the newest log truncated or
// deleted, or its last record damaged; likewise a MANIFEST that lost its
// newest edits after a crash, when they lost nothing or only writes made
// between the previous flush's log rotation and its edit (the one case the
// sequence-number check cannot see).
//
// Check verifies a closed store offline (the hourglass check command): every
// file, key, record and invariant, reported as a list of problems.
//
// # Layout: packed blocks plus a time-ordered keyspace
//
// Each group commit gets one sequence number. The messages of the group that
// are due within Options.Horizon of now are packed, per shard, into one block
// record keyed (shard, seq): one Pebble key for up to 32768 messages instead
// of one per message. Their IDs are (shard, seq, slot). Beside each block, a
// small summary record holds the live bitmap. A resolve does not rewrite it:
// each group commit that clears slots appends one clear record per shard to
// the resolve log, keyed (shard, seq), a few bytes per slot; the writer keeps
// every live bitmap in RAM, and a checkpoint rewrites the summaries the log
// amends and range-deletes the log, in the same batch, once the log passes
// the larger of 1 MiB and those summaries' size (and at Close). Readers
// (Open, Scan, Get, Check) merge the log into the summaries they read; see
// clearlog.go. No message ever gets a tombstone of its own: when a shard's
// watermark (the oldest block with a live slot) advances, one range deletion
// from the old watermark to the new one removes
// every block below it (which also lets Pebble drop whole sstables with
// delete-only compactions); a block emptied out of order, above the watermark,
// gets two point deletes. Block iterators start at the watermark, so they
// never walk what was deleted.
//
// Pebble separates values of 1 KiB and more (the packed blocks, nearly all
// of the store's bytes) into blob files when it flushes its memtable: its
// compactions then rewrite the small keys, summaries and references, never
// the blocks, and a blob file is deleted whole once no sstable refers to it
// (see valueSeparation in pebble.go for the measured reason).
//
// Messages due beyond the horizon, and messages moved by Update or replayed
// from the dead letters, live in a time-ordered keyspace (shard, due, id) with
// an (id -> due, key) index, so Scan pages them in by range and an ID still
// finds its message after it moved.
//
// Keys (first byte is the keyspace tag; integers big-endian; due is stored
// with its sign bit flipped so negative times sort first):
//
//	01 'v'                              -> meta record
//	01 's'                              -> u64 last group-commit sequence
//	02 shard:u8 seq:u64 00              -> block summary
//	02 shard:u8 seq:u64 01              -> block record
//	03 shard:u8 due:u64 id:u64          -> message record
//	04 id:u64                           -> index record
//	05 key bytes                        -> id:u64 (idempotency key)
//	06 id:u64                           -> dead record
//	07 shard:u8 seq:u64                 -> clear record (resolve log)
//
// Records (uvarint/varint are Go's encoding/binary varints; str is a uvarint
// length then that many bytes; u32le little-endian):
//
//	meta:     +------+-----------+-----------+
//	          | hgwl | version   | shards    |
//	          | 4 B  | u32le     | u32le     |
//	          +------+-----------+-----------+
//
//	message:  +-----+---------+---------+------+-----+----------+---------------+---------+
//	          | due | expires | attempt | dest | key | nheaders | (name, value) | payload |
//	          | var | var     | uvarint | str  | str | uvarint  | str, str  ... | str     |
//	          +-----+---------+---------+------+-----+----------+---------------+---------+
//
//	block:    +---------+--------------------------+-------------------+-------+--------+
//	          | version | entry 0 | entry 1 | ...    | end[0] ... end[n-1] | n   | crc32c |
//	          | u8      | message records          | u32le each        | u32le | u32le  |
//	          +---------+--------------------------+-------------------+-------+--------+
//	          slot i = entries[end[i-1]:end[i]] (end[-1] = 0), offsets count from
//	          the first entry byte; the CRC (Castagnoli) covers all bytes before it.
//
//	summary:  +---------+---------+--------+--------+---------+-------------+-------------+
//	          | version | n       | minDue | maxDue | live    | live bitmap | keyed bitmap|
//	          | u8      | uvarint | var    | var    | uvarint | ceil(n/8) B | ceil(n/8) B |
//	          +---------+---------+--------+--------+---------+-------------+-------------+
//	          bit i = byte i/8, bit i%8; live must equal the bitmap's popcount.
//
//	clear:    +---------+---------+-----------------------------------------+--------+
//	          | version | nblocks | nblocks × (seq Δ, nslots, nslots × slot Δ)| crc32c |
//	          | u8      | uvarint | uvarint each                            | u32le  |
//	          +---------+---------+-----------------------------------------+--------+
//	          blocks ascend by seq (first Δ from 0), slots ascend within a
//	          block (first absolute); every block's seq is below the record's.
//	          A checkpoint rewrites the summaries the log amends; a clear of a
//	          slot not live in its summary, or one that empties a stored block,
//	          is damage.
//
//	index:    | version u8 | due var | key str |
//	dead:     | version u8 | deadAt var | reason str | message record |
//
// Every decoder bounds every length by the bytes left, never panics, and
// returns a *CorruptionError (errors.Is ErrCorrupt) naming the record kind and
// offset.
//
// # Idempotency keys
//
// A message's optional Key maps to its ID while the message is pending or
// dead-lettered: appending the same key again returns the existing ID with
// Existing set and writes nothing. The key is forgotten (deleted in the same
// batch) when the message is resolved Done or its dead letter is purged;
// after that the key may be used again.
//
// # Versioning
//
// FormatVersion (2) is stored in the meta record and as the first byte of
// every value record. Open refuses a meta version outside 1..FormatVersion
// with ErrUnsupportedVersion, naming the versions. Any change to a key or
// record layout bumps FormatVersion and adds a golden store under testdata,
// checked by TestGoldenFixture: testdata/golden-v1 (written before the
// clean-close record) and testdata/golden-v2 (with a resolve log, as after a
// crash) both open as after a crash. Version 2 added the resolve log and
// changed nothing else, so this build reads version-1 records, and Open
// migrates a version-1 store by rewriting its meta record before its first
// write: a version-1 build, which would ignore the log and bring resolved
// messages back, then refuses it.
// The clean-close record carries its own version byte. Pebble's own format
// is pinned to PebbleFormat: Open refuses a store whose format marker is
// outside olderPebbleFormat..PebbleFormat with ErrUnsupportedVersion, and
// upgrades a store in that range (written before value separation, or
// caught by a crash while being upgraded) to PebbleFormat once the
// read-only validation passed: Pebble rewrites its format marker and no
// data. It never ratchets further. TestOlderPebbleFormatIsUpgraded upgrades
// golden-v1 (as after a crash) and testdata/golden-v2-closed-f20 (golden-v2
// closed cleanly by the last build at olderPebbleFormat).
//
// # Caveats
//
//   - Scan over packed blocks reads every live block of the shard whose
//     due range overlaps the query; keep Horizon no larger than the engine's
//     in-RAM window, so blocks are read only on recovery.
//   - Time-keyspace messages (far future, retried, replayed) cost a point
//     tombstone each when resolved; they are the minority by design.
//   - Scan and Get read their shard's resolve log (at most the larger of
//     1 MiB and the summaries it amends, over all shards) on every call.
//   - PurgeAllDead is one atomic commit: its size is bounded by memory.
//   - Open after a clean close reads every file but the sstables before it
//     returns, and the sstables (and the time keyspace's index keys, to
//     count them) in the background; after a crash it reads
//     the unflushed logs once to check them against the MANIFEST, replays
//     them twice (read-only, then read-write) and reads every key in the
//     background. Close waits for that, flushes the memtable and reads every
//     file.
//   - A store closed cleanly and then opened by an older build (which
//     leaves HOURGLASS-CLOSED stale) is refused as damaged; delete
//     HOURGLASS-CLOSED to open it as after a crash.
package wal
