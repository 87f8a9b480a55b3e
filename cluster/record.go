package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hourglassmq/hourglass/store"
)

// The log format, record by record (drawn in doc.go). Every value starts
// with a version byte and a kind byte; a reader that meets a version it does
// not know fails the store rather than guess (a newer writer may mean
// something it cannot apply).

const formatVersion = 1

// Record keys: the first byte says what the record is about.
const (
	keyMessage = 'm' // 'm' + token(16): a message's state
	keyIdem    = 'k' // 'k' + idempotency key: a key held by a message of another partition
	keyOwner   = 'o' // 'o': who owns the partition
	keyRequest = 'q' // 'q' + request ID(16): a request to the owner; its tombstone is the answer
)

// Value kinds.
const (
	kindPending = 'P' // a pending message, complete
	kindDead    = 'D' // a dead letter, complete
	kindIdem    = 'K' // an idempotency key held by a message of another partition
	kindOwner   = 'O' // an ownership term
	kindRequest = 'R' // a request to the owner
)

// Tombstone kinds, in the tombstone's header (a tombstone has no value).
const (
	tombDone   = 'X' // a message left: delivered, cancelled, expired, purged
	tombIdem   = 'x' // a key held for another partition's message is free
	tombAnswer = 'A' // a request's answer
)

// headerTomb is the header name a tombstone carries its meaning in.
const headerTomb = "hg"

// origin flags of a message record.
const (
	// flagFeed: the owner's engine hears of this record through the feed
	// (appended, cascaded, replayed, or changed without its claim).
	flagFeed = 1 << 0
)

const tokenLen = 16

// errFormat marks a record this version cannot read.
var errFormat = errors.New("cluster: unreadable record")

// enc appends fields to a buffer.
type enc struct{ b []byte }

func (e *enc) u8(v byte)     { e.b = append(e.b, v) }
func (e *enc) u32(v uint32)  { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64)  { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) i64(v int64)   { e.u64(uint64(v)) }
func (e *enc) uvar(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) bytes(v []byte) {
	e.uvar(uint64(len(v)))
	e.b = append(e.b, v...)
}
func (e *enc) str(v string) {
	e.uvar(uint64(len(v)))
	e.b = append(e.b, v...)
}

// dec reads fields, bounding every length by what is left, and remembers
// the first error.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errFormat, what)
	}
}

func (d *dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(what + " is cut short")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u8(what string) byte {
	if v := d.take(1, what); v != nil {
		return v[0]
	}
	return 0
}

func (d *dec) u32(what string) uint32 {
	if v := d.take(4, what); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *dec) u64(what string) uint64 {
	if v := d.take(8, what); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *dec) i64(what string) int64 { return int64(d.u64(what)) }

func (d *dec) uvar(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what + " is not a varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) bytes(what string, limit int) []byte {
	n := d.uvar(what)
	if n > uint64(limit) {
		d.fail(fmt.Sprintf("%s of %d bytes is over the limit %d", what, n, limit))
		return nil
	}
	return d.take(int(n), what)
}

func (d *dec) str(what string, limit int) string { return string(d.bytes(what, limit)) }

// putMessage writes the body shared by pending and dead records.
func (e *enc) message(m *store.Message) {
	e.u64(uint64(m.ID))
	e.i64(m.Due)
	e.i64(m.Expires)
	e.u32(m.Attempt)
	e.str(m.Dest)
	e.str(m.Key)
	e.uvar(uint64(len(m.Headers)))
	for _, h := range m.Headers {
		e.str(h.Key)
		e.str(h.Value)
	}
	e.bytes(m.Payload)
}

func (d *dec) message(m *store.Message) {
	m.ID = store.ID(d.u64("id"))
	m.Due = d.i64("due")
	m.Expires = d.i64("expires")
	m.Attempt = d.u32("attempt")
	m.Dest = d.str("dest", store.MaxDestLen)
	m.Key = d.str("key", store.MaxKeyLen)
	n := d.uvar("header count")
	if n > store.MaxHeaders {
		d.fail("too many headers")
		return
	}
	if n > 0 {
		m.Headers = make([]store.Header, n)
		for i := range m.Headers {
			m.Headers[i].Key = d.str("header name", store.MaxHeaderLen)
			m.Headers[i].Value = d.str("header value", store.MaxHeaderLen)
		}
	}
	// A copy: the input may be Pebble's block memory, released when its
	// iterator moves on.
	m.Payload = append([]byte{}, d.bytes("payload", store.MaxPayloadLimit)...)
}

// msgValue is a decoded message record: pending, or dead with its reason.
type msgValue struct {
	kind   byte // kindPending or kindDead
	flags  byte
	m      store.Message
	reason string // dead
	deadAt int64  // dead
}

func encodeMsg(v *msgValue) []byte {
	e := enc{b: make([]byte, 0, 64+len(v.m.Dest)+len(v.m.Key)+len(v.m.Payload))}
	e.u8(formatVersion)
	e.u8(v.kind)
	e.u8(v.flags)
	e.message(&v.m)
	if v.kind == kindDead {
		e.str(v.reason)
		e.i64(v.deadAt)
	}
	return e.b
}

func decodeMsg(b []byte) (msgValue, error) {
	d := dec{b: b}
	var v msgValue
	if ver := d.u8("version"); d.err == nil && ver != formatVersion {
		return v, fmt.Errorf("%w: format version %d (this build reads %d; upgrade it)", errFormat, ver, formatVersion)
	}
	v.kind = d.u8("kind")
	if d.err == nil && v.kind != kindPending && v.kind != kindDead {
		return v, fmt.Errorf("%w: message kind %q", errFormat, v.kind)
	}
	v.flags = d.u8("flags")
	d.message(&v.m)
	if v.kind == kindDead {
		v.reason = d.str("reason", store.MaxReasonLen)
		v.deadAt = d.i64("dead at")
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return v, d.err
}

// tomb is a decoded tombstone header.
type tomb struct {
	kind   byte
	id     store.ID
	reason store.Reason // tombDone
	flags  byte         // tombDone
	answer []byte       // tombAnswer
}

func encodeTomb(t *tomb) []byte {
	e := enc{}
	e.u8(formatVersion)
	e.u8(t.kind)
	switch t.kind {
	case tombDone:
		e.u64(uint64(t.id))
		e.u8(byte(t.reason))
		e.u8(t.flags)
	case tombIdem:
		e.u64(uint64(t.id))
	case tombAnswer:
		e.b = append(e.b, t.answer...)
	}
	return e.b
}

func decodeTomb(b []byte) (tomb, error) {
	d := dec{b: b}
	var t tomb
	if ver := d.u8("version"); d.err == nil && ver != formatVersion {
		return t, fmt.Errorf("%w: format version %d (this build reads %d; upgrade it)", errFormat, ver, formatVersion)
	}
	t.kind = d.u8("kind")
	switch t.kind {
	case tombDone:
		t.id = store.ID(d.u64("id"))
		t.reason = store.Reason(d.u8("reason"))
		t.flags = d.u8("flags")
	case tombIdem:
		t.id = store.ID(d.u64("id"))
	case tombAnswer:
		t.answer = d.b
		d.b = nil
	default:
		if d.err == nil {
			return t, fmt.Errorf("%w: tombstone kind %q", errFormat, t.kind)
		}
	}
	return t, d.err
}

// ownerValue is one ownership term of a partition.
type ownerValue struct {
	epoch     uint64
	released  bool
	node      string
	appendTxn string // the node's transactional ID for appends, to fence
	at        int64
}

func encodeOwner(o *ownerValue) []byte {
	e := enc{}
	e.u8(formatVersion)
	e.u8(kindOwner)
	e.u64(o.epoch)
	if o.released {
		e.u8(1)
	} else {
		e.u8(0)
	}
	e.str(o.node)
	e.str(o.appendTxn)
	e.i64(o.at)
	return e.b
}

func decodeOwner(b []byte) (ownerValue, error) {
	d := dec{b: b}
	var o ownerValue
	if ver := d.u8("version"); d.err == nil && ver != formatVersion {
		return o, fmt.Errorf("%w: format version %d", errFormat, ver)
	}
	if k := d.u8("kind"); d.err == nil && k != kindOwner {
		return o, fmt.Errorf("%w: owner record of kind %q", errFormat, k)
	}
	o.epoch = d.u64("epoch")
	o.released = d.u8("released") == 1
	o.node = d.str("node", 1024)
	o.appendTxn = d.str("append txn", 1024)
	o.at = d.i64("at")
	return o, d.err
}

func encodeIdem(id store.ID) []byte {
	e := enc{}
	e.u8(formatVersion)
	e.u8(kindIdem)
	e.u64(uint64(id))
	return e.b
}

func decodeIdem(b []byte) (store.ID, error) {
	d := dec{b: b}
	if ver := d.u8("version"); d.err == nil && ver != formatVersion {
		return 0, fmt.Errorf("%w: format version %d", errFormat, ver)
	}
	if k := d.u8("kind"); d.err == nil && k != kindIdem {
		return 0, fmt.Errorf("%w: key record of kind %q", errFormat, k)
	}
	id := store.ID(d.u64("id"))
	return id, d.err
}

// valueKind returns a value's kind byte, or 0.
func valueKind(b []byte) byte {
	if len(b) < 2 {
		return 0
	}
	return b[1]
}
