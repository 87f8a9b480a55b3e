package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
	pebblewal "github.com/cockroachdb/pebble/v2/wal"
)

// After a crash Pebble replays the newest write-ahead log up to its first bad
// record and takes the rest for a torn tail: writes that were in flight and
// never synced. Its log format (PebbleFormat's WAL sync chunks) lets it tell
// a torn tail from damage: every chunk header records how far the log had
// been synced when the chunk was written, so a readable chunk past the bad
// record that vouches for a synced offset beyond it proves the bad record was
// synced, and is damage. But Pebble looks for such a chunk only from the next
// 32 KiB block on, so damage in the log's last block (where, on a lightly
// loaded store, every record since the last flush lives) reads as a torn
// tail and silently drops acknowledged writes.
//
// checkLogTail applies Pebble's rule to the whole rest of the file: it reads
// the newest log as Pebble's replay does, and where the replay stops early it
// searches every later offset for a valid chunk of this log that vouches for
// a synced offset past the stop. Damage that no later chunk vouches for (a
// truncated log, a deleted log, damage to the last synced records) cannot be
// told from a torn tail by anyone, and stays tolerated.

// Wire format of a WAL sync chunk (pebble/record): the header is
//
//	crc32c u32le | length u16le | type u8 | log number u32le | synced offset u64le
//
// followed by length payload bytes; the checksum covers type through payload
// and is masked like LevelDB's. Chunks never cross a 32 KiB block.
const (
	chunkBlock      = 32 << 10
	chunkHeader     = 19
	chunkTypeFirst  = 9 // walSyncFullChunkEncoding
	chunkTypeLast   = 12
	crcMaskConstant = 0xa282ead8
)

// checkLogTail checks the newest log of dir (see above). It returns a
// *DamageError naming the log when a synced record is unreadable.
func checkLogTail(fs vfs.FS, dir string) error {
	logs, err := pebblewal.Scan(pebblewal.Dir{FS: fs, Dirname: dir})
	if err != nil || len(logs) == 0 {
		return err
	}
	last := logs[len(logs)-1]
	if last.NumSegments() != 1 {
		return nil // failover logs: not written by this store
	}
	rr := last.OpenForRead()
	defer rr.Close()
	var stop int64
	for {
		_, off, err := rr.NextRecord()
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if !errors.Is(err, record.ErrUnexpectedEOF) {
			return nil // Pebble's own replay reports it
		}
		stop = off.Physical
		break
	}
	_, path := last.SegmentLocation(0)
	f, err := fs.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	if at, synced, ok := vouchedPast(b, uint32(last.Num), stop); ok {
		return &DamageError{Dir: dir, File: fs.PathBase(path),
			Reason: fmt.Sprintf("the log is unreadable from offset %d, but a record at offset %d says it was synced up to offset %d: records that were synced (and acknowledged) are damaged", stop, at, synced),
			Advice: "restore the directory from a backup"}
	}
	return nil
}

// vouchedPast searches b after stop for a valid chunk of log num whose synced
// offset lies past stop.
func vouchedPast(b []byte, num uint32, stop int64) (at, synced int64, ok bool) {
	for p := int(stop) + 1; p+chunkHeader <= len(b); p++ {
		t := b[p+6]
		if t < chunkTypeFirst || t > chunkTypeLast || binary.LittleEndian.Uint32(b[p+7:]) != num {
			continue
		}
		n := int(binary.LittleEndian.Uint16(b[p+4:]))
		end := p + chunkHeader + n
		if end > len(b) || p/chunkBlock != (end-1)/chunkBlock {
			continue
		}
		c := crc32.Checksum(b[p+6:end], castagnoli)
		if uint32(c>>15|c<<17)+crcMaskConstant != binary.LittleEndian.Uint32(b[p:]) {
			continue
		}
		if s := int64(binary.LittleEndian.Uint64(b[p+11:])); s > stop {
			return int64(p), s, true
		}
	}
	return 0, 0, false
}

// Pebble reads the MANIFEST (the list of its files, one version edit per
// record) the same way, up to its first unreadable record anywhere in the
// file, and takes the rest for a torn tail; it then replays the write-ahead
// logs from the oldest one the edits it read call unflushed. A MANIFEST that
// lost synced edits (a damaged record, or the file cut short) therefore
// silently loses what they flushed: the sstables they added are ignored, the
// logs those sstables were flushed from were deleted once the edit was
// synced, so their writes are gone, and the newer logs replay over the older
// state, a state no caller was ever told of. (Found by the damage catalogue,
// 2026-12-01, -wal.seed=1796108265704645683: a flipped byte in the fourth of
// six edits dropped two flushes, and cutting the file there did the same.
// Format version 1 refused those stores only because a summary rewritten in
// a later log happened to name a block the lost flush held; with the resolve
// log nothing later needs to.)
//
// checkManifest refuses it before Pebble opens the directory, in two ways:
//
//   - A readable chunk after the record Pebble stops at: Pebble writes a
//     MANIFEST record only after the previous one was synced, so the bad
//     record was synced, and is damage, not a torn tail.
//   - A gap in Pebble's sequence numbers: an edit that records a flush
//     (it names a new oldest unflushed log) also records the last sequence
//     number Pebble had assigned when it was written, which is at or above
//     every batch of the logs it flushed; every later batch is in the logs
//     from the oldest unflushed one on, and batches take consecutive
//     sequence numbers across logs. So the logs Pebble would replay must
//     start at or below the next number (at least SeqNumStart, 10) and
//     continue one another without a hole; a hole means a lost edit flushed
//     those batches from logs that are gone. This also covers a MANIFEST
//     cut short or damaged in its last record, which no later chunk vouches
//     for.
//
// Not found: a lost edit that flushed only batches written between the
// previous flush's rotation of the log and its edit (then at or below the
// number that edit recorded), or that lost nothing (its log still there, or
// a compaction, whose inputs Pebble finds, or misses and refuses).

// Wire format of a MANIFEST chunk (pebble/record, LevelDB's):
//
//	crc32c u32le | length u16le | type u8
//
// followed by length payload bytes, types 1 to 4 (full, first, middle,
// last); checksummed like a WAL chunk, and never crossing a 32 KiB block.
//
// A version edit is a list of tagged fields; Pebble's VersionEdit.Encode
// writes, each when set and in this order, the comparer name (tag 1, a
// string), the oldest unflushed log (2), an obsolete previous log (9), the
// next file number (3), removed (106, one uvarint) and created (105, two)
// backing tables, and the last sequence number (4), then the tables. A
// write batch (a log record) starts with its sequence number, u64le, and
// its count of sequence numbers, u32le.
const (
	manifestChunkHeader = 7
	pebbleSeqNumStart   = 10
)

// checkManifest checks the MANIFEST name of dir against itself and the
// logs (see above). It returns a *DamageError naming it when synced edits
// are lost.
func checkManifest(fs vfs.FS, dir, name string) error {
	f, err := fs.Open(fs.PathJoin(dir, name))
	if err != nil {
		return err
	}
	b, err := io.ReadAll(f)
	_ = f.Close()
	if err != nil {
		return err
	}
	rr := record.NewReader(bytes.NewReader(b), 0)
	// flushedSeq is the last sequence number recorded by the newest edit
	// that set the oldest unflushed log (a flush): every batch before that
	// log is at or below it.
	var minLog, lastSeq, flushedSeq uint64
	known := true // every edit's fields before its tables were understood
	for {
		off := rr.Offset()
		r, err := rr.Next()
		var ve []byte
		if err == nil {
			if ve, err = io.ReadAll(r); err == nil {
				prevMin := minLog
				known = known && editLogAndSeq(ve, &minLog, &lastSeq)
				if minLog != prevMin {
					flushedSeq = lastSeq
				}
				continue
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if !record.IsInvalidRecord(err) {
			return nil // Pebble's own open reports it
		}
		if at, ok := manifestChunkPast(b, off); ok {
			return &DamageError{Dir: dir, File: name,
				Reason: fmt.Sprintf("the MANIFEST is unreadable from offset %d, but a record at offset %d follows, so the edits from there on were synced: Pebble would drop them, and with them acknowledged writes", off, at),
				Advice: "restore the directory from a backup"}
		}
		break
	}
	if !known {
		return nil
	}
	logs, err := pebblewal.Scan(pebblewal.Dir{FS: fs, Dirname: dir})
	if err != nil {
		return nil // Pebble's own open reports it
	}
	next := max(flushedSeq+1, pebbleSeqNumStart)
	for _, l := range logs {
		if uint64(l.Num) < minLog || l.NumSegments() != 1 {
			continue
		}
		first, end, ok := logSeqs(l)
		if !ok {
			return nil // Pebble's own open reports it
		}
		if first == 0 {
			continue // an empty log
		}
		if first > next {
			_, path := l.SegmentLocation(0)
			return &DamageError{Dir: dir, File: name,
				Reason: fmt.Sprintf("the MANIFEST and the logs Pebble would replay skip sequence numbers %d to %d: log %s starts at %d, so the MANIFEST lost the edits that flushed them, and the logs that held them are gone", next, first-1, fs.PathBase(path), first),
				Advice: "restore the directory from a backup"}
		}
		next = max(next, end)
	}
	return nil
}

// logSeqs returns the sequence number of the first batch in log l (0 when
// it holds none) and the one after its last batch's. It returns false when
// a record other than a torn tail does not read.
func logSeqs(l pebblewal.LogicalLog) (first, end uint64, ok bool) {
	rr := l.OpenForRead()
	defer rr.Close()
	var h [12]byte
	for {
		r, _, err := rr.NextRecord()
		if err != nil {
			return first, end, errors.Is(err, io.EOF) || errors.Is(err, record.ErrUnexpectedEOF)
		}
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return first, end, false
		}
		seq, n := binary.LittleEndian.Uint64(h[:]), uint64(binary.LittleEndian.Uint32(h[8:]))
		if first == 0 {
			first = seq
		}
		end = seq + n
	}
}

// editLogAndSeq updates minLog and lastSeq with what version edit ve sets
// (see above). It returns false when a field it does not know comes before
// where the last sequence number would be.
func editLogAndSeq(ve []byte, minLog, lastSeq *uint64) bool {
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(ve)
		if n <= 0 {
			return 0, false
		}
		ve = ve[n:]
		return v, true
	}
	for len(ve) > 0 {
		tag, ok := uv()
		if !ok {
			return false
		}
		switch tag {
		case 1: // comparer name
			n, ok := uv()
			if !ok || n > uint64(len(ve)) {
				return false
			}
			ve = ve[n:]
		case 2, 9, 3, 106: // oldest unflushed log, previous log, next file, removed backing
			v, ok := uv()
			if !ok {
				return false
			}
			if tag == 2 && v != 0 {
				*minLog = v
			}
		case 105: // created backing table: file number, size
			if _, ok := uv(); !ok {
				return false
			}
			if _, ok := uv(); !ok {
				return false
			}
		case 4: // last sequence number
			v, ok := uv()
			if ok && v != 0 {
				*lastSeq = v
			}
			return ok
		default: // the tables: this edit sets no sequence number
			return tag == 5 || tag == 6 || tag == 7 || tag >= 100 && tag <= 104 || tag == 107 || tag == 108
		}
	}
	return true
}

// manifestChunkPast searches b after stop for a valid MANIFEST chunk.
func manifestChunkPast(b []byte, stop int64) (at int64, ok bool) {
	for p := int(stop) + 1; p+manifestChunkHeader <= len(b); p++ {
		t := b[p+6]
		if t < 1 || t > 4 {
			continue
		}
		n := int(binary.LittleEndian.Uint16(b[p+4:]))
		end := p + manifestChunkHeader + n
		if n == 0 || end > len(b) || p/chunkBlock != (end-1)/chunkBlock {
			continue
		}
		c := crc32.Checksum(b[p+6:end], castagnoli)
		if uint32(c>>15|c<<17)+crcMaskConstant != binary.LittleEndian.Uint32(b[p:]) {
			continue
		}
		return int64(p), true
	}
	return 0, false
}
