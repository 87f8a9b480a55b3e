package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hourglassmq/hourglass/store"
)

// FormatVersion is the on-disk format this build writes. Bump it (and keep a
// golden fixture of the old one in testdata) on any change to a key or record
// layout; see doc.go. Version 2 added the resolve log (tagClear); its other
// records are laid out as in version 1, which this build still reads (Open
// migrates a version-1 store by rewriting its meta record).
const FormatVersion = 2

// oldestFormatVersion is the oldest format this build reads.
const oldestFormatVersion = 1

// knownVersion reports whether v is a record version this build reads.
func knownVersion(v byte) bool { return v >= oldestFormatVersion && v <= FormatVersion }

// Keyspace tags: the first byte of every key.
const (
	tagMeta  = 0x01 // tagMeta "v" -> meta record; tagMeta "s" -> last sequence
	tagBlock = 0x02 // tagBlock shard seq kind -> summary (kind 0) or block (kind 1)
	tagTime  = 0x03 // tagTime shard due id -> message record
	tagIndex = 0x04 // tagIndex id -> index record (where a time-keyspace message is)
	tagKey   = 0x05 // tagKey key -> id (idempotency)
	tagDead  = 0x06 // tagDead id -> dead record
	tagClear = 0x07 // tagClear shard seq -> clear record (the resolve log)
)

const (
	kindSummary = 0x00
	kindBlock   = 0x01
)

var (
	keyMeta = []byte{tagMeta, 'v'}
	keySeq  = []byte{tagMeta, 's'}
)

var metaMagic = [4]byte{'h', 'g', 'w', 'l'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func blockKey(shard int, seq uint64, kind byte) []byte {
	k := make([]byte, 11)
	k[0] = tagBlock
	k[1] = byte(shard)
	binary.BigEndian.PutUint64(k[2:], seq)
	k[10] = kind
	return k
}

// orderedDue maps an int64 to a uint64 that sorts the same way big-endian.
func orderedDue(due int64) uint64 { return uint64(due) ^ (1 << 63) }

func timeKey(shard int, due int64, id store.ID) []byte {
	k := make([]byte, 18)
	k[0] = tagTime
	k[1] = byte(shard)
	binary.BigEndian.PutUint64(k[2:], orderedDue(due))
	binary.BigEndian.PutUint64(k[10:], uint64(id))
	return k
}

func decodeTimeKey(k []byte) (due int64, id store.ID, ok bool) {
	if len(k) != 18 || k[0] != tagTime {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(k[2:]) ^ (1 << 63)), store.ID(binary.BigEndian.Uint64(k[10:])), true
}

func idKey(tag byte, id store.ID) []byte {
	k := make([]byte, 9)
	k[0] = tag
	binary.BigEndian.PutUint64(k[1:], uint64(id))
	return k
}

func idemKey(key string) []byte {
	k := make([]byte, 1+len(key))
	k[0] = tagKey
	copy(k[1:], key)
	return k
}

// reader decodes with every length bounded by the bytes left. The first
// failure sticks; callers check err once at the end.
type reader struct {
	what   string
	b      []byte
	off    int
	err    error
	intern map[string]string // optional, see decodeMessageInterned
}

func (r *reader) fail(reason string) {
	if r.err == nil {
		r.err = &CorruptionError{What: r.what, Offset: r.off, Reason: reason}
	}
}

func (r *reader) byte1() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("truncated")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	r.off += n
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.off += n
	return v
}

// count reads a uvarint that must be at most max.
func (r *reader) count(max int) int {
	v := r.uvarint()
	if r.err == nil && v > uint64(max) {
		r.fail("count too large")
		return 0
	}
	return int(v)
}

func (r *reader) bytes(max int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(r.b)-r.off) {
		r.fail("length exceeds record")
		return nil
	}
	b := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return b
}

func (r *reader) fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b)-r.off {
		r.fail("truncated")
		return nil
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b
}

func (r *reader) done() error {
	if r.err == nil && r.off != len(r.b) {
		r.fail("trailing bytes")
	}
	return r.err
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// appendMessage encodes the message record (everything but the ID, which the
// key or slot carries):
//
//	varint due | varint expires | uvarint attempt | str dest | str key |
//	uvarint nheaders | nheaders × (str name, str value) | str payload
//
// where str is a uvarint length followed by that many bytes.
func appendMessage(b []byte, m *store.Message) []byte {
	b = binary.AppendVarint(b, m.Due)
	b = binary.AppendVarint(b, m.Expires)
	b = binary.AppendUvarint(b, uint64(m.Attempt))
	b = appendString(b, m.Dest)
	b = appendString(b, m.Key)
	b = binary.AppendUvarint(b, uint64(len(m.Headers)))
	for _, h := range m.Headers {
		b = appendString(b, h.Key)
		b = appendString(b, h.Value)
	}
	return appendBytes(b, m.Payload)
}

// decodeMessage decodes a message record into a fresh Message that owns its
// bytes (nothing aliases buf).
func decodeMessage(buf []byte) (store.Message, error) {
	return decodeMessageInterned(buf, nil)
}

// decodeMessageInterned is decodeMessage sharing Dest strings through intern
// (when not nil): a scan sees few distinct destinations, so this saves one
// allocation per message. intern holds at most 1024 entries.
func decodeMessageInterned(buf []byte, intern map[string]string) (store.Message, error) {
	r := reader{what: "message", b: buf, intern: intern}
	m := r.message()
	if err := r.done(); err != nil {
		return store.Message{}, err
	}
	return m, nil
}

func (r *reader) message() store.Message {
	var m store.Message
	m.Due = r.varint()
	m.Expires = r.varint()
	att := r.uvarint()
	if r.err == nil && att > math.MaxUint32 {
		r.fail("attempt overflows uint32")
	}
	m.Attempt = uint32(att)
	if d := r.bytes(store.MaxDestLen); r.intern == nil {
		m.Dest = string(d)
	} else if v, ok := r.intern[string(d)]; ok {
		m.Dest = v
	} else {
		m.Dest = string(d)
		if len(r.intern) < 1024 {
			r.intern[m.Dest] = m.Dest
		}
	}
	m.Key = string(r.bytes(store.MaxKeyLen))
	nh := r.count(store.MaxHeaders)
	if r.err == nil && nh > 0 {
		m.Headers = make([]store.Header, nh)
		for i := range m.Headers {
			m.Headers[i].Key = string(r.bytes(store.MaxHeaderLen))
			m.Headers[i].Value = string(r.bytes(store.MaxHeaderLen))
		}
	}
	if p := r.bytes(math.MaxInt32); len(p) > 0 {
		m.Payload = append([]byte(nil), p...)
	}
	if r.err != nil {
		return store.Message{}
	}
	return m
}

// messageDue reads only the due time of an encoded message record.
func messageDue(buf []byte) (int64, bool) {
	v, n := binary.Varint(buf)
	return v, n > 0
}

// Block record, the value of tagBlock|shard|seq|kindBlock: the messages one
// group commit packed for one shard.
//
//	u8 version | entries | n × u32le end offset | u32le n | u32le crc32c
//
// Entry i (slot i) is entries[end[i-1]:end[i]], a message record; offsets
// count from the first entry byte. The trailer comes last so the writer
// encodes entries straight into the final buffer. The CRC covers every byte
// before it.
type blockBuilder struct {
	msgs   []*store.Message // borrowed from callers until the group is encoded
	size   int              // sum of the messages' encoded sizes
	minDue int64
	maxDue int64
	keyed  []uint64
}

const blockTrailer = 8

func (bb *blockBuilder) add(m *store.Message) int {
	slot := len(bb.msgs)
	if slot == 0 {
		bb.minDue, bb.maxDue = m.Due, m.Due
	}
	bb.minDue = min(bb.minDue, m.Due)
	bb.maxDue = max(bb.maxDue, m.Due)
	if m.Key != "" {
		for len(bb.keyed) <= slot/64 {
			bb.keyed = append(bb.keyed, 0)
		}
		bb.keyed[slot/64] |= 1 << (slot % 64)
	}
	bb.msgs = append(bb.msgs, m)
	bb.size += messageSize(m)
	return slot
}

// encodedLen is the exact length of the block record.
func (bb *blockBuilder) encodedLen() int { return 1 + bb.size + 4*len(bb.msgs) + blockTrailer }

// appendTo appends the block record to dst.
func (bb *blockBuilder) appendTo(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, FormatVersion)
	first := len(dst)
	// The end offsets go after the entries; remember them in the space they
	// will occupy once the entries are written.
	ends := make([]uint32, len(bb.msgs))
	for i, m := range bb.msgs {
		dst = appendMessage(dst, m)
		ends[i] = uint32(len(dst) - first)
	}
	for _, e := range ends {
		dst = binary.LittleEndian.AppendUint32(dst, e)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(bb.msgs)))
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func (bb *blockBuilder) encode() []byte {
	return bb.appendTo(make([]byte, 0, bb.encodedLen()))
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func varintLen(x int64) int {
	ux := uint64(x) << 1
	if x < 0 {
		ux = ^ux
	}
	return uvarintLen(ux)
}

func strLen(n int) int { return uvarintLen(uint64(n)) + n }

// messageSize is the exact length appendMessage produces for m.
func messageSize(m *store.Message) int {
	n := varintLen(m.Due) + varintLen(m.Expires) + uvarintLen(uint64(m.Attempt)) +
		strLen(len(m.Dest)) + strLen(len(m.Key)) + uvarintLen(uint64(len(m.Headers))) + strLen(len(m.Payload))
	for _, h := range m.Headers {
		n += strLen(len(h.Key)) + strLen(len(h.Value))
	}
	return n
}

// blockView is a decoded block header; entries alias the record's bytes.
type blockView struct {
	n       int
	ends    []byte
	entries []byte
}

func decodeBlock(buf []byte) (blockView, error) {
	r := reader{what: "block", b: buf}
	if len(buf) < 1+blockTrailer {
		r.fail("shorter than its trailer")
		return blockView{}, r.err
	}
	body := buf[:len(buf)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(buf[len(buf)-4:]) {
		r.off = len(body)
		r.fail("checksum mismatch")
		return blockView{}, r.err
	}
	if !knownVersion(buf[0]) {
		r.fail("unknown block version")
		return blockView{}, r.err
	}
	n := binary.LittleEndian.Uint32(buf[len(buf)-8:])
	r.off = len(buf) - 8
	if n > maxSlots || int(n)*4 > len(buf)-1-blockTrailer {
		r.fail("slot count does not fit the record")
		return blockView{}, r.err
	}
	endsStart := len(buf) - blockTrailer - 4*int(n)
	ends := buf[endsStart : len(buf)-blockTrailer]
	entries := buf[1:endsStart]
	prev := uint32(0)
	for i := 0; i < int(n); i++ {
		e := binary.LittleEndian.Uint32(ends[4*i:])
		if e < prev || e > uint32(len(entries)) {
			r.off = endsStart + 4*i
			r.fail("entry offsets out of order or past the end")
			return blockView{}, r.err
		}
		prev = e
	}
	if prev != uint32(len(entries)) {
		r.off = endsStart
		r.fail("entries do not fill the block")
		return blockView{}, r.err
	}
	return blockView{n: int(n), ends: ends, entries: entries}, nil
}

// entry returns slot i's message record bytes. i must be < v.n.
func (v blockView) entry(i int) []byte {
	start := uint32(0)
	if i > 0 {
		start = binary.LittleEndian.Uint32(v.ends[4*(i-1):])
	}
	return v.entries[start:binary.LittleEndian.Uint32(v.ends[4*i:])]
}

// Summary record, the value of tagBlock|shard|seq|kindSummary, written with
// the block and rewritten at each checkpoint of the resolve log (clearlog.go)
// while the block has slots cleared since the last one:
//
//	u8 version | uvarint n | varint minDue | varint maxDue | uvarint live |
//	ceil(n/8) bytes live bitmap | ceil(n/8) bytes keyed bitmap
//
// Bit i (byte i/8, bit i%8) of the live bitmap is set while slot i is pending
// in the block; the keyed bitmap marks slots whose message has an
// idempotency key (so resolving them must also drop the key).
type summary struct {
	n      int
	minDue int64
	maxDue int64
	live   int
	bits   []uint64 // live bitmap
	keyed  []uint64 // nil when no slot has a key
}

func (s *summary) isLive(slot int) bool {
	return slot < s.n && s.bits[slot/64]&(1<<(slot%64)) != 0
}

func (s *summary) isKeyed(slot int) bool {
	return slot/64 < len(s.keyed) && s.keyed[slot/64]&(1<<(slot%64)) != 0
}

func (s *summary) clear(slot int) {
	s.bits[slot/64] &^= 1 << (slot % 64)
	s.live--
}

func appendBitmap(b []byte, words []uint64, n int) []byte {
	for i := 0; i < (n+7)/8; i++ {
		var w uint64
		if i/8 < len(words) {
			w = words[i/8]
		}
		b = append(b, byte(w>>(8*(i%8))))
	}
	return b
}

func (s *summary) encode() []byte {
	b := make([]byte, 0, 32+2*(s.n+7)/8)
	b = append(b, FormatVersion)
	b = binary.AppendUvarint(b, uint64(s.n))
	b = binary.AppendVarint(b, s.minDue)
	b = binary.AppendVarint(b, s.maxDue)
	b = binary.AppendUvarint(b, uint64(s.live))
	b = appendBitmap(b, s.bits, s.n)
	return appendBitmap(b, s.keyed, s.n)
}

func readBitmap(r *reader, n int) []uint64 {
	raw := r.fixed((n + 7) / 8)
	if r.err != nil {
		return nil
	}
	words := make([]uint64, (n+63)/64)
	for i, c := range raw {
		words[i/8] |= uint64(c) << (8 * (i % 8))
	}
	if n%64 != 0 && len(words) > 0 && words[len(words)-1]>>(n%64) != 0 {
		r.fail("bitmap bits set past slot count")
	}
	return words
}

func decodeSummary(buf []byte) (summary, error) {
	r := reader{what: "summary", b: buf}
	if v := r.byte1(); r.err == nil && !knownVersion(v) {
		r.fail("unknown summary version")
	}
	var s summary
	s.n = r.count(maxSlots)
	s.minDue = r.varint()
	s.maxDue = r.varint()
	s.live = r.count(maxSlots)
	s.bits = readBitmap(&r, s.n)
	s.keyed = readBitmap(&r, s.n)
	if err := r.done(); err != nil {
		return summary{}, err
	}
	pop := 0
	for _, w := range s.bits {
		pop += bits.OnesCount64(w)
	}
	if pop != s.live {
		r.fail("live count disagrees with bitmap")
		return summary{}, r.err
	}
	if s.minDue > s.maxDue {
		r.fail("minDue after maxDue")
		return summary{}, r.err
	}
	return s, nil
}

// Index record, the value of tagIndex|id: where a message in the time-ordered
// keyspace lives, and its idempotency key.
//
//	u8 version | varint due | str key
type indexEntry struct {
	due int64
	key string
}

func (e indexEntry) encode() []byte {
	b := make([]byte, 0, 12+len(e.key))
	b = append(b, FormatVersion)
	b = binary.AppendVarint(b, e.due)
	return appendString(b, e.key)
}

func decodeIndex(buf []byte) (indexEntry, error) {
	r := reader{what: "index", b: buf}
	if v := r.byte1(); r.err == nil && !knownVersion(v) {
		r.fail("unknown index version")
	}
	var e indexEntry
	e.due = r.varint()
	e.key = string(r.bytes(store.MaxKeyLen))
	if err := r.done(); err != nil {
		return indexEntry{}, err
	}
	return e, nil
}

// Dead record, the value of tagDead|id:
//
//	u8 version | varint deadAt | str reason | message record
func encodeDead(d *store.DeadLetter) []byte {
	b := make([]byte, 0, 64+len(d.Reason)+len(d.Message.Payload))
	b = append(b, FormatVersion)
	b = binary.AppendVarint(b, d.DeadAt)
	b = appendString(b, d.Reason)
	return appendMessage(b, &d.Message)
}

func decodeDead(buf []byte) (store.DeadLetter, error) {
	r := reader{what: "dead", b: buf}
	if v := r.byte1(); r.err == nil && !knownVersion(v) {
		r.fail("unknown dead-letter version")
	}
	var d store.DeadLetter
	d.DeadAt = r.varint()
	d.Reason = string(r.bytes(store.MaxReasonLen))
	d.Message = r.message()
	if err := r.done(); err != nil {
		return store.DeadLetter{}, err
	}
	return d, nil
}

// Meta record, the value of tagMeta "v", written once when the store is
// created:
//
//	4 bytes magic "hgwl" | u32le format version | u32le shards
func encodeMeta(shards int) []byte {
	b := append([]byte(nil), metaMagic[:]...)
	b = binary.LittleEndian.AppendUint32(b, FormatVersion)
	return binary.LittleEndian.AppendUint32(b, uint32(shards))
}

// decodeMeta returns the stored version and shard count. It does not judge
// the version; Open does.
func decodeMeta(buf []byte) (version, shards int, err error) {
	r := reader{what: "meta", b: buf}
	if m := r.fixed(4); r.err == nil && [4]byte(m) != metaMagic {
		r.off = 0
		r.fail("bad magic; not an hourglass store")
	}
	v := r.fixed(4)
	s := r.fixed(4)
	if err := r.done(); err != nil {
		return 0, 0, err
	}
	version = int(binary.LittleEndian.Uint32(v))
	shards = int(binary.LittleEndian.Uint32(s))
	if version >= oldestFormatVersion && version <= FormatVersion && (shards < 1 || shards > store.MaxShards) {
		r.fail("shard count out of range")
		return 0, 0, r.err
	}
	return version, shards, nil
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// decodeKeyIndex decodes an idempotency-key record: the ID it names.
func decodeKeyIndex(buf []byte) (store.ID, error) {
	if len(buf) != 8 {
		return 0, &CorruptionError{What: "key index", Reason: fmt.Sprintf("want 8 bytes, have %d", len(buf))}
	}
	return store.ID(binary.BigEndian.Uint64(buf)), nil
}

// readSeq reads the last group-commit sequence r holds.
func readSeq(r pebble.Reader) (uint64, error) {
	v, closer, err := r.Get(keySeq)
	if err != nil {
		return 0, fmt.Errorf("read sequence: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, &CorruptionError{What: "sequence", Reason: fmt.Sprintf("want 8 bytes, have %d", len(v))}
	}
	return binary.BigEndian.Uint64(v), nil
}
