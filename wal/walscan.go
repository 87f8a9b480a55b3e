package wal

import (
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
