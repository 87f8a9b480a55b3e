package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The clean-close record.
//
// After a crash the store cannot tell a torn log tail (writes that were never
// synced, which it must tolerate) from damage to the log, and Pebble reads
// both the same way: it stops at the first bad record. After a clean Close
// there is no torn tail, so any difference is damage, and the store must
// notice it instead of opening with acknowledged messages missing.
//
// So Close, after flushing Pebble's memtable and closing Pebble, writes
// HOURGLASS-CLOSED, synced last (written to a temporary name, synced,
// renamed, directory synced): the counts recovery will find (last group
// sequence, pending messages per shard, dead letters, blocks) and the size and
// CRC-32C of every Pebble file in the directory. Open reads it before Pebble
// opens anything: a missing, added, resized or changed file, or a last
// sequence or blocks that differ after the read-only recovery, refuse the
// store with a *DamageError naming the file; the CRCs of the sstables, and
// the counts of the time keyspace and the dead letters (which Open takes
// from the record), are checked in the background after Open returns
// (verify.go), and a mismatch there fails the store. Open removes the record (and syncs the directory) before Pebble
// opens read-write and changes the files. Without the record the store opens
// as after a crash, and checks its keys as it recovers.
//
// Verifying the checksums reads every file once, at disk speed; Open leaves
// the sstables' (nearly all the bytes) to the background.
//
//	+-------+---------+---------+--------+-----------------+---------+---------+
//	| hgcc  | version | lastSeq | shards | pending[shards] | dead    | blocks  |
//	| 4 B   | u8      | u64le   | uvarint| uvarint each    | uvarint | uvarint |
//	+-------+---------+---------+--------+-----------------+---------+---------+
//	| nfiles  | nfiles × (name str, size uvarint, crc32c u32le) | crc32c u32le   |
//	+---------+-----------------------------------------------+----------------+
//
// The last CRC covers every byte before it.

var cleanMagic = [4]byte{'h', 'g', 'c', 'c'}

const cleanVersion = 1

// cleanRecord is the content of HOURGLASS-CLOSED.
type cleanRecord struct {
	lastSeq uint64
	pending []int64 // per shard
	dead    int64
	blocks  int64
	files   []fileSum // sorted by name
}

// fileSum is one file's size and CRC-32C (Castagnoli).
type fileSum struct {
	name string
	size int64
	crc  uint32
}

func (r *cleanRecord) encode() []byte {
	b := append([]byte(nil), cleanMagic[:]...)
	b = append(b, cleanVersion)
	b = binary.LittleEndian.AppendUint64(b, r.lastSeq)
	b = binary.AppendUvarint(b, uint64(len(r.pending)))
	for _, p := range r.pending {
		b = binary.AppendUvarint(b, uint64(p))
	}
	b = binary.AppendUvarint(b, uint64(r.dead))
	b = binary.AppendUvarint(b, uint64(r.blocks))
	b = binary.AppendUvarint(b, uint64(len(r.files)))
	for _, f := range r.files {
		b = appendString(b, f.name)
		b = binary.AppendUvarint(b, uint64(f.size))
		b = binary.LittleEndian.AppendUint32(b, f.crc)
	}
	return binary.LittleEndian.AppendUint32(b, crc32c(b))
}

func decodeCleanRecord(buf []byte) (*cleanRecord, error) {
	r := reader{what: "clean-close", b: buf}
	if len(buf) < 4 || crc32c(buf[:len(buf)-4]) != binary.LittleEndian.Uint32(buf[len(buf)-4:]) {
		r.fail("checksum mismatch")
		return nil, r.err
	}
	r.b = buf[:len(buf)-4]
	if m := r.fixed(4); r.err == nil && [4]byte(m) != cleanMagic {
		r.fail("bad magic")
	}
	if v := r.byte1(); r.err == nil && v != cleanVersion {
		r.fail(fmt.Sprintf("unknown version %d", v))
	}
	rec := &cleanRecord{}
	if s := r.fixed(8); r.err == nil {
		rec.lastSeq = binary.LittleEndian.Uint64(s)
	}
	rec.pending = make([]int64, r.count(256))
	for i := range rec.pending {
		rec.pending[i] = int64(r.count(1 << 62))
	}
	rec.dead = int64(r.count(1 << 62))
	rec.blocks = int64(r.count(1 << 62))
	n := r.count(len(buf))
	for i := 0; i < n && r.err == nil; i++ {
		var f fileSum
		f.name = string(r.bytes(1024))
		f.size = int64(r.count(1 << 62))
		if c := r.fixed(4); r.err == nil {
			f.crc = binary.LittleEndian.Uint32(c)
		}
		rec.files = append(rec.files, f)
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return rec, nil
}

// recordedKind reports whether a file of this kind is listed in the clean
// record: every Pebble file except LOCK, which Pebble recreates and which
// holds nothing.
func recordedKind(k fileKind) bool {
	switch k {
	case fileManifest, fileOptions, fileLog, fileTable, fileBlob, fileTemp, fileMarker, fileCurrent:
		return true
	}
	return false
}

// sumFile returns the size and CRC-32C of a file.
func sumFile(fs vfs.FS, p string, buf []byte) (int64, uint32, error) {
	f, err := fs.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var crc uint32
	var n int64
	for {
		k, err := f.Read(buf)
		crc = crc32.Update(crc, castagnoli, buf[:k])
		n += int64(k)
		if err == io.EOF {
			return n, crc, nil
		}
		if err != nil {
			return n, crc, err
		}
	}
}

// writeCleanRecord sums every recorded file of dir and writes the record,
// synced, as the last thing Close does.
func writeCleanRecord(fs vfs.FS, dir string, rec *cleanRecord) error {
	// Every earlier change of the directory (Pebble's last file deletions)
	// is made durable first: a crash that keeps the record must not bring
	// back a file the record does not list.
	if err := syncDir(fs, dir); err != nil {
		return err
	}
	st, err := readDir(fs, dir)
	if err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	for _, n := range st.names {
		if k, _ := classify(n); !recordedKind(k) {
			continue
		}
		size, crc, err := sumFile(fs, fs.PathJoin(dir, n), buf)
		if err != nil {
			return fmt.Errorf("checksum %s: %w", n, err)
		}
		rec.files = append(rec.files, fileSum{name: n, size: size, crc: crc})
	}
	tmp := fs.PathJoin(dir, cleanCloseFile+".tmp")
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	_, err = f.Write(rec.encode())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, fs.PathJoin(dir, cleanCloseFile))
	}
	if err == nil {
		err = syncDir(fs, dir)
	}
	return err
}

// removeCleanRecord deletes the record, synced, before Pebble opens the store
// read-write (and so changes the files the record describes).
func removeCleanRecord(fs vfs.FS, dir string) error {
	if err := fs.Remove(fs.PathJoin(dir, cleanCloseFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(fs, dir)
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// readCleanRecord reads and decodes HOURGLASS-CLOSED.
func readCleanRecord(fs vfs.FS, dir string) (*cleanRecord, error) {
	f, err := fs.Open(fs.PathJoin(dir, cleanCloseFile))
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: read %s: %w", dir, cleanCloseFile, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: read %s: %w", dir, cleanCloseFile, err)
	}
	rec, err := decodeCleanRecord(b)
	if err != nil {
		return nil, &DamageError{Dir: dir, File: cleanCloseFile, Reason: "the clean-close record is damaged",
			Advice: cleanAdvice, Err: err}
	}
	return rec, nil
}

// cleanAdvice is what to do about a store damaged after a clean close.
const cleanAdvice = "the store was closed cleanly, so this is damage (or a change by another tool) since then: " +
	"restore the directory from a backup; to open it anyway as after a crash " +
	"(Pebble recovers what it can read, and acknowledged messages may be missing), delete " + cleanCloseFile

// verifyFiles checks every file of the record against the directory, and
// that no Pebble file appeared since: names and sizes, and the CRC of every
// file. With deferTables the sstables (and blob files), which hold nearly
// all the bytes and are never written in place, are opened and returned
// for the background verification instead (verify.go).
func (r *cleanRecord) verifyFiles(fs vfs.FS, st *dirState, deferTables bool) (held []heldFile, err error) {
	damaged := func(file, reason string) error {
		return &DamageError{Dir: st.dir, File: file, Reason: reason, Advice: cleanAdvice}
	}
	defer func() {
		if err != nil {
			for _, h := range held {
				_ = h.f.Close()
			}
			held = nil
		}
	}()
	buf := make([]byte, 256<<10)
	for _, f := range r.files {
		size, ok := st.sizes[f.name]
		if !ok {
			return held, damaged(f.name, "missing since the clean close")
		}
		if size != f.size {
			return held, damaged(f.name, fmt.Sprintf("%d bytes, but %d at the clean close", size, f.size))
		}
		if k, _ := classify(f.name); deferTables && (k == fileTable || k == fileBlob) {
			h, err := fs.Open(fs.PathJoin(st.dir, f.name))
			if err != nil {
				return held, fmt.Errorf("wal: open %s: read %s: %w", st.dir, f.name, err)
			}
			held = append(held, heldFile{sum: f, f: h})
			continue
		}
		_, crc, err := sumFile(fs, fs.PathJoin(st.dir, f.name), buf)
		if err != nil {
			return held, fmt.Errorf("wal: open %s: read %s: %w", st.dir, f.name, err)
		}
		if crc != f.crc {
			return held, damaged(f.name, fmt.Sprintf("changed since the clean close (CRC-32C %08x, recorded %08x)", crc, f.crc))
		}
	}
	for _, n := range st.names {
		if k, _ := classify(n); recordedKind(k) {
			if _, ok := slices.BinarySearchFunc(r.files, n, func(f fileSum, n string) int {
				return strings.Compare(f.name, n)
			}); !ok {
				return held, damaged(n, "appeared since the clean close")
			}
		}
	}
	return held, nil
}

// timedCounts checks what Open's recovery counted (the last sequence, and
// the blocks and their pending messages per shard) against the record, and
// returns the number of time-keyspace messages per shard the record implies:
// what it says is pending, less what the blocks hold. The background
// verification counts those (verify.go), and the dead letters.
func (r *cleanRecord) timedCounts(dir string, lastSeq uint64, blockPending []int64, blocks int64) ([]int64, error) {
	var diff string
	timed := make([]int64, len(blockPending))
	switch {
	case r.lastSeq != lastSeq:
		diff = fmt.Sprintf("last sequence %d, recorded %d", lastSeq, r.lastSeq)
	case len(r.pending) != len(blockPending):
		diff = fmt.Sprintf("%d shards, recorded %d", len(blockPending), len(r.pending))
	case r.blocks != blocks:
		diff = fmt.Sprintf("%d blocks, recorded %d", blocks, r.blocks)
	default:
		for shard, p := range r.pending {
			if timed[shard] = p - blockPending[shard]; timed[shard] < 0 {
				diff = fmt.Sprintf("shard %d holds %d pending messages in blocks, recorded %d pending in all", shard, blockPending[shard], p)
				break
			}
		}
		if diff == "" {
			return timed, nil
		}
	}
	return nil, &DamageError{Dir: dir, Reason: "recovery found a different store than the one closed cleanly: " + diff, Advice: cleanAdvice}
}

// verifyCounts checks what Check counted against the record.
func (r *cleanRecord) verifyCounts(dir string, lastSeq uint64, pending []int64, dead, blocks int64) error {
	var diff string
	switch {
	case r.lastSeq != lastSeq:
		diff = fmt.Sprintf("last sequence %d, recorded %d", lastSeq, r.lastSeq)
	case !slices.Equal(r.pending, pending):
		diff = fmt.Sprintf("pending per shard %v, recorded %v", pending, r.pending)
	case r.dead != dead:
		diff = fmt.Sprintf("%d dead letters, recorded %d", dead, r.dead)
	case r.blocks != blocks:
		diff = fmt.Sprintf("%d blocks, recorded %d", blocks, r.blocks)
	default:
		return nil
	}
	return &DamageError{Dir: dir, Reason: "recovery found a different store than the one closed cleanly: " + diff, Advice: cleanAdvice}
}
