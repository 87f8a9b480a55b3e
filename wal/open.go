package wal

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Open opens or creates the store in opts.Dir and recovers its state.
//
// Pebble's own Open writes before it can tell whether a store is damaged: it
// replays and flushes the log, deletes files it thinks obsolete, and without
// a manifest marker creates a new database over the old one. So Open goes in
// steps, and refuses a damaged store (with a *DamageError that wraps
// ErrCorrupt and says which file and what to do) before anything in the
// directory is written:
//
//  1. It reads the directory listing: an empty directory gets a new store; a
//     non-empty one without a store, or a store missing its markers or
//     MANIFEST, is refused (see dirState.plan).
//  2. It locks the directory (ErrLocked if another process holds it).
//  3. If the store was closed cleanly it checks every file against the
//     clean-close record (clean.go): names and sizes, and the CRC of every
//     file but the sstables, which it opens for the background (6).
//     After a crash it checks the newest log's tail (walscan.go).
//  4. It opens Pebble read-only, which writes nothing, and recovers: reads
//     the meta record, the block summaries and the resolve log. After a
//     crash it counts the index and the dead letters; after a clean close
//     it takes those counts from the record, and the blocks it counted must
//     match the record's.
//  5. Only then it removes the clean-close record and opens Pebble
//     read-write. This open replays the log again and flushes it; on a full
//     disk Pebble retries that flush forever, so Open returns when ctx ends
//     or the disk is found full, and leaves Pebble to finish in the
//     background.
//  6. Once the store is open it verifies the rest in the background
//     (verify.go): the sstables' CRCs and the counts Open took from the
//     record after a clean close, every key after a crash. Damage found
//     there fails the store.
//
// Recovery reads the per-block summaries and the time-keyspace index, not
// the messages of the time keyspace; Recovery() reports what it found.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", opts.Dir, err)
	}
	start := time.Now()
	s := newStore(opts)
	if err := waitZombie(ctx, opts.FS, opts.Dir); err != nil {
		return nil, err
	}
	st, err := readDir(opts.FS, opts.Dir)
	if err != nil {
		return nil, err
	}
	if _, err := st.plan(); err != nil {
		return nil, err
	}
	if !st.exists {
		if err := opts.FS.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("wal: open %s: create directory: %w", opts.Dir, err)
		}
	}
	lock, err := pebble.LockDirectory(opts.Dir, opts.FS)
	if err != nil {
		return nil, &DamageError{Dir: opts.Dir, File: "LOCK", Reason: "another process (or another open Store in this process) has this store open",
			Advice: "close it first: a store has one owner at a time", Err: err, kind: ErrLocked}
	}
	// release unlocks the directory. When Open refuses the store before
	// Pebble opened it read-write, it also removes the LOCK file it created,
	// leaving the directory as it found it.
	var once sync.Once
	release := func() {
		once.Do(func() {
			_ = lock.Close()
			if !st.lock && !s.wrote {
				_ = opts.FS.Remove(opts.FS.PathJoin(opts.Dir, "LOCK"))
			}
		})
	}
	s.lock = lock
	if err := s.open(ctx, release); err != nil {
		if s.db != nil {
			closePebble(s.db)
			s.db = nil
		}
		if !s.abandoned {
			release() // else the abandoned Pebble releases it when done
		}
		return nil, err
	}
	s.recovery.Duration = time.Since(start)
	s.log.Info("wal: opened", "shards", s.shards, "blocks", s.recovery.Blocks,
		"pending", s.recovery.BlockPending+s.recovery.TimedPending, "dead", s.recovery.DeadLetters,
		"clean", s.recovery.CleanClose, "took", s.recovery.Duration)
	return s, nil
}

// open runs steps 3 to 5 of Open with the directory locked. release unlocks
// it; open calls it itself only when it leaves Pebble to finish in the
// background.
func (s *Store) open(ctx context.Context, release func()) error {
	dir, fs := s.opts.Dir, s.opts.FS
	// List again under the lock: the first listing was taken before it.
	st, err := readDir(fs, dir)
	if err != nil {
		return err
	}
	plan, err := st.plan()
	if err != nil {
		return err
	}
	cache := pebble.NewCache(s.opts.CacheSize)
	defer cache.Unref()
	var ro *recovered
	job := &verifyJob{}
	defer func() {
		if job != nil {
			job.close() // not handed to the background
		}
	}()
	if plan == planExisting {
		var rec *cleanRecord
		if st.closed {
			if rec, err = readCleanRecord(fs, dir); err != nil {
				return err
			}
			if job.tables, err = rec.verifyFiles(fs, st, true); err != nil {
				return err
			}
		} else {
			if err := checkLogTail(fs, dir); err != nil {
				return openError(s.opts.FS, dir, "check the log", err)
			}
			if err := checkManifest(fs, dir, st.manifest); err != nil {
				return openError(s.opts.FS, dir, "check the MANIFEST", err)
			}
		}
		if ro, err = s.recoverReadOnly(ctx, cache, rec, release); err != nil {
			return err
		}
		if st.closed {
			// From here on Pebble changes the files the record describes.
			if err := removeCleanRecord(fs, dir); err != nil {
				return fmt.Errorf("wal: open %s: remove %s: %w", dir, cleanCloseFile, err)
			}
		}
	}
	s.wrote = true // Pebble may write from here on
	po := s.pebbleOptions(cache, s.lock, false)
	// No compaction runs until Open has decided (gate.go), so a refused
	// Open has written no more than the read-write open itself.
	gate := newCompactionGate()
	po.Experimental.CompactionScheduler = gate
	db, err := s.openPebble(ctx, po, release)
	if err != nil {
		return openError(s.opts.FS, dir, "pebble", err)
	}
	s.db = db
	if fv := db.FormatMajorVersion(); fv != PebbleFormat {
		return fmt.Errorf("%w: pebble format %d, this build pins %d", ErrUnsupportedVersion, fv, PebbleFormat)
	}
	if ro == nil || !ro.found {
		// A new store, or one whose creation stopped before its meta record:
		// there is nothing to validate read-only.
		lastSeq, _, err := s.loadMeta(true)
		if err != nil {
			return err
		}
		if _, err := s.recover(ctx, lastSeq, nil); err != nil {
			return err
		}
	} else {
		// The read-write open replayed the same files as the read-only one;
		// the state recovered there stands. Check the one number that every
		// commit writes.
		seq, err := readSeq(db)
		if err != nil {
			return openError(s.opts.FS, dir, "read sequence", err)
		}
		if seq != ro.lastSeq {
			return &DamageError{Dir: dir, Reason: fmt.Sprintf("the read-write open found last sequence %d, the read-only one %d", seq, ro.lastSeq),
				Advice: "another process may have written the directory during Open; open it again"}
		}
	}
	if ro != nil && ro.found {
		// The background reads the recovered state from before the first
		// write: after a crash every key, after a clean close the keys
		// Open took the record's word for.
		job.snap, job.last, job.counts = db.NewSnapshot(), ro.lastSeq, ro.counts
	}
	if err := s.migrate(); err != nil {
		return openError(s.opts.FS, dir, "migrate", err)
	}
	if err := s.markOpened(); err != nil {
		return err
	}
	gate.release()
	if job.snap != nil || len(job.tables) > 0 {
		s.startVerify(job)
		job = nil
	}
	return nil
}

// migrate brings a store of an older format version to FormatVersion before
// the writer starts. Version 1 differs only in lacking the resolve log, so
// rewriting the meta record (synced) is the whole migration; from then on a
// build that reads only version 1, and would ignore the log, refuses it.
func (s *Store) migrate() error {
	if s.metaVersion == FormatVersion {
		return nil
	}
	if err := s.db.Set(keyMeta, encodeMeta(s.shards), pebble.Sync); err != nil {
		return err
	}
	s.log.Info("wal: migrated the store's format", "from", s.metaVersion, "to", FormatVersion)
	s.metaVersion = FormatVersion
	return s.Err()
}

// recovered is what the read-only step of Open found.
type recovered struct {
	found   bool // the store has its meta record
	lastSeq uint64
	// After a clean close, the counts Open took from the record, for the
	// background to count; nil after a crash.
	counts *cleanCounts
}

// recoverReadOnly opens Pebble read-only, recovers the store's state into s
// and checks its blocks against the clean-close record when there is one.
// Read-only Pebble writes nothing to the directory.
func (s *Store) recoverReadOnly(ctx context.Context, cache *pebble.Cache, rec *cleanRecord, release func()) (*recovered, error) {
	dir := s.opts.Dir
	po := s.pebbleOptions(cache, s.lock, true)
	db, err := s.openPebble(ctx, po, release)
	if err != nil {
		return nil, openError(s.opts.FS, dir, "pebble read-only", err)
	}
	s.db = db
	defer func() {
		closePebble(db)
		s.db = nil
	}()
	if err := checkBlobFiles(ctx, s.fs, dir, db); err != nil {
		return nil, err
	}
	lastSeq, found, err := s.loadMeta(false)
	if err != nil {
		return nil, err
	}
	if !found {
		if rec != nil {
			return nil, &DamageError{Dir: dir, Reason: "the store has no meta record, but it was closed cleanly with one", Advice: cleanAdvice}
		}
		return &recovered{}, nil
	}
	timed, err := s.recover(ctx, lastSeq, rec)
	if err != nil {
		return nil, err
	}
	s.recovery.CleanClose = rec != nil
	// After a crash there is no record of what the store held: every key
	// is read in the background once Open returns (verify.go).
	if err := s.Err(); err != nil {
		return nil, err
	}
	ro := &recovered{found: true, lastSeq: lastSeq}
	if rec != nil {
		ro.counts = &cleanCounts{timed: timed, dead: s.dead}
	}
	return ro, nil
}
