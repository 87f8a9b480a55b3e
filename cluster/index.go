package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hourglassmq/hourglass/store"
)

// The local index is one Pebble database per node holding, for every
// partition, what the node applied from the log and the offset it applied
// up to, written in the same batch (the Kafka Streams state-store pattern):
//
//	'A' p                  → meta: next offset, pending, dead, last apply (wall ns), owner term
//	'M' p id               → state (1 pending, 2 dead), due, token
//	'D' p due id           → token, pending message record      (Scan pages these)
//	'X' p id               → token, dead-letter record          (ListDead pages these)
//	'K' p key              → id: keys of partition p (hash(key) % P)
//	'Q' p request-id       → request record not yet answered
//
// p is one byte (P ≤ 256), numbers are big-endian so keys sort like them.
// Nothing here is synced: the log is the truth, and the offset in the same
// batch makes a lost tail harmless (it is applied again).

const (
	ixMeta    = 'A'
	ixMsg     = 'M'
	ixDue     = 'D'
	ixDead    = 'X'
	ixKey     = 'K'
	ixRequest = 'Q'
)

const (
	statePending = 1
	stateDead    = 2
)

func ixPrefix(kind byte, p int) []byte { return []byte{kind, byte(p)} }

func ixMetaKey(p int) []byte { return ixPrefix(ixMeta, p) }

func ixMsgKey(id store.ID) []byte {
	return binary.BigEndian.AppendUint64(ixPrefix(ixMsg, id.Shard()), uint64(id))
}

func ixDueKey(p int, due int64, id store.ID) []byte {
	k := binary.BigEndian.AppendUint64(ixPrefix(ixDue, p), uint64(due))
	return binary.BigEndian.AppendUint64(k, uint64(id))
}

func ixDeadKey(id store.ID) []byte {
	return binary.BigEndian.AppendUint64(ixPrefix(ixDead, id.Shard()), uint64(id))
}

func ixKeyKey(p int, key string) []byte { return append(ixPrefix(ixKey, p), key...) }

func ixRequestKey(p int, reqID []byte) []byte { return append(ixPrefix(ixRequest, p), reqID...) }

// prefixEnd returns the first key after every key with prefix b.
func prefixEnd(b []byte) []byte {
	end := append([]byte(nil), b...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// meta is a partition's applied state, kept in its 'A' key.
type meta struct {
	next      int64 // the next offset to apply
	pending   int64
	dead      int64
	lastApply int64 // wall ns of the last batch applied
	owner     ownerValue
}

func encodeMeta(m *meta) []byte {
	e := enc{}
	e.u8(formatVersion)
	e.i64(m.next)
	e.i64(m.pending)
	e.i64(m.dead)
	e.i64(m.lastApply)
	e.bytes(encodeOwner(&m.owner))
	return e.b
}

func decodeMeta(b []byte) (meta, error) {
	d := dec{b: b}
	var m meta
	if ver := d.u8("version"); d.err == nil && ver != formatVersion {
		return m, fmt.Errorf("%w: index format version %d (this build reads %d)", errFormat, ver, formatVersion)
	}
	m.next = d.i64("next")
	m.pending = d.i64("pending")
	m.dead = d.i64("dead")
	m.lastApply = d.i64("last apply")
	ob := d.bytes("owner", 4096)
	if d.err != nil {
		return m, d.err
	}
	o, err := decodeOwner(ob)
	m.owner = o
	return m, err
}

// msgEntry is an 'M' value.
type msgEntry struct {
	state byte
	due   int64
	token [tokenLen]byte
}

func encodeMsgEntry(e *msgEntry) []byte {
	b := make([]byte, 0, 1+8+tokenLen)
	b = append(b, e.state)
	b = binary.BigEndian.AppendUint64(b, uint64(e.due))
	return append(b, e.token[:]...)
}

func decodeMsgEntry(b []byte) (msgEntry, error) {
	var e msgEntry
	if len(b) != 1+8+tokenLen {
		return e, fmt.Errorf("%w: index entry of %d bytes", errFormat, len(b))
	}
	e.state = b[0]
	e.due = int64(binary.BigEndian.Uint64(b[1:9]))
	copy(e.token[:], b[9:])
	return e, nil
}

// get copies the value of key, reporting whether it exists.
func get(r pebble.Reader, key []byte) ([]byte, bool, error) {
	v, c, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	_ = c.Close()
	return out, true, nil
}

// lookupMsg returns the state of id: its entry, and its record (pending or
// dead), or ok=false when the index holds nothing for it.
func lookupMsg(r pebble.Reader, id store.ID) (e msgEntry, v msgValue, ok bool, err error) {
	b, found, err := get(r, ixMsgKey(id))
	if err != nil || !found {
		return e, v, false, err
	}
	if e, err = decodeMsgEntry(b); err != nil {
		return e, v, false, err
	}
	var rec []byte
	switch e.state {
	case statePending:
		rec, found, err = get(r, ixDueKey(id.Shard(), e.due, id))
	case stateDead:
		rec, found, err = get(r, ixDeadKey(id))
	default:
		return e, v, false, fmt.Errorf("%w: index state %d of %s", errFormat, e.state, id)
	}
	if err != nil {
		return e, v, false, err
	}
	if !found || len(rec) < tokenLen {
		return e, v, false, fmt.Errorf("%w: index entry of %s has no record", errFormat, id)
	}
	v, err = decodeMsg(rec[tokenLen:])
	if err != nil {
		return e, v, false, err
	}
	v.m.ID = id
	v.m.Shard = id.Shard()
	return e, v, true, nil
}

// indexValue is what 'D' and 'X' hold: the token, then the record.
func indexValue(token [tokenLen]byte, v *msgValue) []byte {
	return append(token[:], encodeMsg(v)...)
}
