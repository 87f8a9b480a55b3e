package store

import (
	"encoding/base32"
	"encoding/binary"
	"fmt"
)

// ID is a message's identity and cancel handle, stable across reschedules,
// retries and dead-lettering. The top 8 bits hold the shard (so at most
// MaxShards shards); the low 56 bits are assigned by the store and are
// opaque to everyone else. The zero ID is never assigned.
type ID uint64

// MaxShards is the largest number of shards an ID can address.
const MaxShards = 256

// LocalMask selects the store-assigned low 56 bits of an ID.
const LocalMask = 1<<56 - 1

// MakeID builds an ID from a shard and a 56-bit local number. It panics if
// shard is outside [0, MaxShards) or local does not fit in 56 bits: both are
// programming errors of a store.
func MakeID(shard int, local uint64) ID {
	if shard < 0 || shard >= MaxShards {
		panic(fmt.Sprintf("store: MakeID: shard %d outside [0, %d)", shard, MaxShards))
	}
	if local > LocalMask {
		panic(fmt.Sprintf("store: MakeID: local %#x does not fit in 56 bits", local))
	}
	return ID(uint64(shard)<<56 | local)
}

// Shard returns the shard the message belongs to.
func (id ID) Shard() int { return int(uint64(id) >> 56) }

// Local returns the store-assigned low 56 bits.
func (id ID) Local() uint64 { return uint64(id) & LocalMask }

// idEncoding is lowercase base32hex without padding: URL-safe, and it sorts
// in the same order as the numbers it encodes.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// String returns the compact URL-safe text form of id: 13 characters of
// lowercase base32hex, which sort like the IDs themselves. ParseID reverses
// it.
func (id ID) String() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(id))
	return idEncoding.EncodeToString(b[:])
}

// ParseID parses the text form produced by ID.String. The zero ID, which no
// store assigns, is refused too.
func ParseID(s string) (ID, error) {
	if len(s) != 13 {
		return 0, fmt.Errorf("%w: id %q: want 13 base32hex characters (0-9, a-v), got %d characters", ErrInvalid, s, len(s))
	}
	var b [8]byte
	n, err := idEncoding.Decode(b[:], []byte(s))
	if err != nil || n != 8 {
		return 0, fmt.Errorf("%w: id %q: not base32hex (0-9, a-v)", ErrInvalid, s)
	}
	id := ID(binary.BigEndian.Uint64(b[:]))
	if id.String() != s {
		// The last character carries one spare bit that must be zero.
		return 0, fmt.Errorf("%w: id %q: not in canonical form", ErrInvalid, s)
	}
	if id == 0 {
		return 0, fmt.Errorf("%w: id %q: the zero ID names no message", ErrInvalid, s)
	}
	return id, nil
}
