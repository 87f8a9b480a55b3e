package wal

import (
	"encoding/base32"
	"encoding/binary"
	"fmt"
)

// ID is a message's durable identity, stable across reschedules, retries and
// dead-lettering. The top 8 bits hold the shard (so at most 256 shards); the
// low 56 bits are assigned by the store. The store packs them as
//
//	bits 63..56  shard
//	bits 55..16  group-commit sequence (40 bits)
//	bits 15..0   slot within that commit's shard block (0..32767 packed in
//	             the block, 32768..65535 kept in the time-ordered keyspace)
//
// Callers must treat the low 56 bits as opaque: only Shard is meaningful to them.
// The zero ID is never assigned by the store.
type ID uint64

// MaxShards is the largest number of shards an ID can address.
const MaxShards = 256

const localMask = 1<<56 - 1

// MakeID builds an ID from a shard and a 56-bit local number. It is used by the
// store and by the engine's in-memory mode, which keeps its own counter. It
// panics if shard is outside [0, MaxShards) or local does not fit in 56 bits,
// both programming errors.
func MakeID(shard int, local uint64) ID {
	if shard < 0 || shard >= MaxShards {
		panic(fmt.Sprintf("wal: MakeID: shard %d outside [0, %d)", shard, MaxShards))
	}
	if local > localMask {
		panic(fmt.Sprintf("wal: MakeID: local %#x does not fit in 56 bits", local))
	}
	return ID(uint64(shard)<<56 | local)
}

// Shard returns the shard the message belongs to.
func (id ID) Shard() int { return int(uint64(id) >> 56) }

// local returns the store-assigned low 56 bits.
func (id ID) local() uint64 { return uint64(id) & localMask }

// idEncoding is lowercase base32hex without padding: URL-safe and sorts in
// the same order as the numbers it encodes.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// String returns the compact URL-safe text form of id: 13 characters of
// lowercase base32hex, which sort like the IDs themselves. ParseID reverses it.
func (id ID) String() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(id))
	return idEncoding.EncodeToString(b[:])
}

// ParseID parses the text form produced by ID.String.
func ParseID(s string) (ID, error) {
	if len(s) != 13 {
		return 0, fmt.Errorf("wal: parse id %q: want 13 base32hex characters, got %d", s, len(s))
	}
	var b [8]byte
	n, err := idEncoding.Decode(b[:], []byte(s))
	if err != nil || n != 8 {
		return 0, fmt.Errorf("wal: parse id %q: not base32hex (0-9, a-v)", s)
	}
	id := ID(binary.BigEndian.Uint64(b[:]))
	if id.String() != s {
		// The last character carries one spare bit that must be zero.
		return 0, fmt.Errorf("wal: parse id %q: not in canonical form", s)
	}
	return id, nil
}

// Slot layout inside the 56 store-assigned bits.
const (
	slotBits    = 16
	seqBits     = 40
	maxSeq      = 1<<seqBits - 1
	farSlotBase = 1 << 15 // slots >= this never live in a block
	maxSlots    = farSlotBase
)

// makeStoreID packs (shard, seq, slot) into an ID.
func makeStoreID(shard int, seq uint64, slot int) ID {
	return MakeID(shard, seq<<slotBits|uint64(slot))
}

// seq returns the group-commit sequence encoded in a store-assigned ID.
func (id ID) seq() uint64 { return id.local() >> slotBits }

// slot returns the slot encoded in a store-assigned ID.
func (id ID) slot() int { return int(uint64(id) & (1<<slotBits - 1)) }

// blockRef names the block an ID's slot would live in: shard and sequence.
func (id ID) blockRef() uint64 { return uint64(id) >> slotBits }
