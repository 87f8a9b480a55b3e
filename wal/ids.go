package wal

import "github.com/hourglassmq/hourglass/store"

// The store assigns the 56 local bits of an ID (store.ID) as
//
//	bits 55..16  group-commit sequence (40 bits)
//	bits 15..0   slot within that commit's shard block (0..32767 packed in
//	             the block, 32768..65535 kept in the time-ordered keyspace)
//
// so an ID locates its message without an index lookup for packed messages.
const (
	slotBits    = 16
	seqBits     = 40
	maxSeq      = 1<<seqBits - 1
	farSlotBase = 1 << 15 // slots >= this never live in a block
	maxSlots    = farSlotBase
)

// makeStoreID packs (shard, seq, slot) into an ID.
func makeStoreID(shard int, seq uint64, slot int) store.ID {
	return store.MakeID(shard, seq<<slotBits|uint64(slot))
}

// idSeq returns the group-commit sequence encoded in a store-assigned ID.
func idSeq(id store.ID) uint64 { return id.Local() >> slotBits }

// idSlot returns the slot encoded in a store-assigned ID.
func idSlot(id store.ID) int { return int(uint64(id) & (1<<slotBits - 1)) }

// blockRef names the block an ID's slot would live in: shard and sequence.
func blockRef(id store.ID) uint64 { return uint64(id) >> slotBits }
