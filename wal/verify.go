package wal

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Background verification.
//
// Open used to read everything before it returned: after a clean close the
// CRC of every file, after a crash every key. With ten million messages that
// is seconds before the first overdue message can fire. Now Open does the
// checks that are cheap and decide whether Pebble may open the directory at
// all (the listing, the markers, the clean-close record with every file's
// name and size, the CRC of every file but the sstables, the log's tail, the
// meta record, the summaries and the resolve log, and the blocks against the
// clean-close record), and verifies the rest after it returned, while the
// store serves calls:
//
//   - after a clean close, the CRC of every sstable the record lists, read
//     through handles opened before Pebble opened the directory read-write
//     (sstables are never written in place, and an open handle keeps a file
//     that a compaction deletes); then the count of the time keyspace's
//     messages per shard and of the dead letters, which Open took from the
//     record (a snapshot taken before the first write): one key each, ten
//     million keys take a second, which Open no longer waits for;
//   - after a crash, every key of the state Open recovered (a snapshot taken
//     before the first write), decoded and checked as Check does without its
//     cross-keyspace maps.
//
// Damage found this way fails the store (sticky, ErrFailed wrapping a
// *DamageError, so errors.Is finds ErrCorrupt), as corrupt data found by any
// read does. Until then every read checks what it reads: Pebble verifies the
// checksum of every block it reads from an sstable and of every log record,
// and a packed block's own CRC is checked on every read, so no call answers
// from damaged bytes. Close waits for the verification to end: a clean-close
// record must never vouch for files nobody verified.

// verifyJob is what Open leaves for the background.
type verifyJob struct {
	tables []heldFile       // after a clean close: the sstables to CRC
	snap   *pebble.Snapshot // the state Open recovered, before the first write
	last   uint64           // the last sequence at Open
	counts *cleanCounts     // after a clean close: what snap must hold
}

// cleanCounts is what a store closed cleanly holds by its record, beyond
// the blocks Open counted itself.
type cleanCounts struct {
	timed []int64 // time-keyspace messages per shard
	dead  int64
}

// heldFile is a file of the clean-close record, held open.
type heldFile struct {
	sum fileSum
	f   vfs.File
}

// close releases what the job holds (when it does not run, or when it ends).
func (j *verifyJob) close() {
	for _, h := range j.tables {
		_ = h.f.Close()
	}
	j.tables = nil
	if j.snap != nil {
		_ = j.snap.Close()
		j.snap = nil
	}
}

// startVerify runs j in the background. Close and the release of a failed
// store cancel and wait for it (stopVerify).
func (s *Store) startVerify(j *verifyJob) {
	ctx, cancel := context.WithCancel(context.Background())
	s.verifyCancel = cancel
	go func() {
		defer close(s.verified)
		defer j.close()
		start := time.Now()
		err := s.verify(ctx, j)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			s.fail(err)
		default:
			s.log.Info("wal: verified", "took", time.Since(start))
		}
	}()
}

// waitVerify waits for the background verification, if any, to end.
func (s *Store) waitVerify() {
	if s.verifyCancel != nil {
		<-s.verified
	}
}

// stopVerify cancels the background verification, if any, and waits for it.
func (s *Store) stopVerify() {
	if s.verifyCancel != nil {
		s.verifyCancel()
		<-s.verified
	}
}

func (s *Store) verify(ctx context.Context, j *verifyJob) error {
	dir := s.opts.Dir
	if j.snap != nil && j.counts == nil {
		rep := &CheckReport{Dir: dir}
		if err := verifyKeys(ctx, j.snap, s.shards, j.last, false, rep); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &DamageError{Dir: dir, Reason: "verifying the store after a crash, reading failed", Advice: "restore the directory from a backup", Err: explainPebble(s.opts.FS, dir, err)}
		}
		if len(rep.Problems) > 0 {
			return &DamageError{Dir: dir, Reason: fmt.Sprintf("verifying the store after a crash found %d inconsistencies; first: %s", len(rep.Problems)+rep.Omitted, rep.Problems[0]),
				Advice: "run wal.Check (hourglass check) for the full list, and restore the directory from a backup"}
		}
	}
	buf := make([]byte, 256<<10)
	for _, h := range j.tables {
		crc, err := sumOpen(ctx, h.f, buf)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("wal: store %s: verify %s: %w", dir, h.sum.name, err)
		}
		if crc != h.sum.crc {
			return &DamageError{Dir: dir, File: h.sum.name, Reason: fmt.Sprintf("changed since the clean close (CRC-32C %08x, recorded %08x)", crc, h.sum.crc),
				Advice: "restore the directory from a backup"}
		}
	}
	if j.counts != nil {
		return s.verifyCounts(ctx, j)
	}
	return nil
}

// verifyCounts counts, after a clean close, the time keyspace's messages per
// shard and the dead letters that Open took from the record.
func (s *Store) verifyCounts(ctx context.Context, j *verifyJob) error {
	dir := s.opts.Dir
	fail := func(err error) error {
		if ctx.Err() != nil {
			return nil
		}
		return &DamageError{Dir: dir, Reason: "verifying the store after a clean close, counting its keys failed", Advice: "restore the directory from a backup", Err: explainPebble(s.opts.FS, dir, err)}
	}
	timed, err := countIndex(ctx, j.snap, s.shards, j.last)
	if err != nil {
		return fail(err)
	}
	dead, err := countKeys(ctx, j.snap, tagDead, nil)
	if err != nil {
		return fail(err)
	}
	if !slices.Equal(timed, j.counts.timed) || dead != j.counts.dead {
		return &DamageError{Dir: dir, Reason: fmt.Sprintf("the store holds %v messages per shard in its time keyspace and %d dead letters, but was closed cleanly with %v and %d",
			timed, dead, j.counts.timed, j.counts.dead), Advice: "restore the directory from a backup"}
	}
	return nil
}

// sumOpen returns the CRC-32C of an open file, from its start.
func sumOpen(ctx context.Context, f vfs.File, buf []byte) (uint32, error) {
	var crc uint32
	for off := int64(0); ; {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, err := f.ReadAt(buf, off)
		crc = crc32.Update(crc, castagnoli, buf[:n])
		off += int64(n)
		if err == io.EOF {
			return crc, nil
		}
		if err != nil {
			return 0, err
		}
	}
}
