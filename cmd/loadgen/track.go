package main

import (
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Each message's payload starts with its sequence number and due time, so a
// delivery can be checked without any lookup:
//
//	0        8           16                 payload size
//	+--------+-----------+------------------+
//	| seq    | due (ns)  | filler           |
//	+--------+-----------+------------------+
//	  little-endian uint64 / int64 unix nanoseconds
func encodePayload(buf []byte, seq uint64, due time.Time) {
	binary.LittleEndian.PutUint64(buf[0:8], seq)
	binary.LittleEndian.PutUint64(buf[8:16], uint64(due.UnixNano()))
}

func decodePayload(p []byte) (seq uint64, due int64, ok bool) {
	if len(p) < minPayload {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(p[0:8]), int64(binary.LittleEndian.Uint64(p[8:16])), true
}

// tracker counts, per sequence number, acknowledgements and deliveries. It
// grows in chunks so an unbounded run needs no size up front.
type tracker struct {
	mu     sync.Mutex
	chunks atomic.Pointer[[]*trackChunk]

	acked, delivered, duplicates, early, unexpected atomic.Int64
}

// Sequence numbers live below 2^seqBits; chunks of 2^chunkBits are
// allocated on first use, so the sparse ranges of -crash children (one
// 2^childBits range each) cost only what they use.
const (
	seqBits   = 36
	chunkBits = 16
	childBits = 24
)

// trackChunk holds 2^16 messages: bit 31 of a word says acknowledged, the
// low bits count deliveries.
type trackChunk [1 << chunkBits]atomic.Uint32

const ackedBit = 1 << 31

// slot returns seq's word, or nil for a sequence number no run hands out
// (a payload that is not ours).
func (t *tracker) slot(seq uint64) *atomic.Uint32 {
	if seq >= 1<<seqBits {
		return nil
	}
	ci := int(seq >> chunkBits)
	if cs := t.chunks.Load(); cs != nil && ci < len(*cs) && (*cs)[ci] != nil {
		return &(*cs)[ci][seq&(1<<chunkBits-1)]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var cs []*trackChunk
	if p := t.chunks.Load(); p != nil {
		cs = slices.Clone(*p) // readers may hold the old slice
	}
	for len(cs) <= ci {
		cs = append(cs, nil) // sequence ranges may be sparse: chunks come on first use
	}
	if cs[ci] == nil {
		cs[ci] = new(trackChunk)
	}
	t.chunks.Store(&cs)
	return &cs[ci][seq&(1<<chunkBits-1)]
}

// ack records that Schedule returned success for seq.
func (t *tracker) ack(seq uint64) {
	w := t.slot(seq)
	if w == nil {
		return // not a sequence number a run hands out: nothing to expect
	}
	for {
		v := w.Load()
		if w.CompareAndSwap(v, v|ackedBit) {
			t.acked.Add(1)
			return
		}
	}
}

// deliver records one delivery of seq at time at, due at due.
func (t *tracker) deliver(seq uint64, due, at int64) {
	w := t.slot(seq)
	if w == nil {
		t.unexpected.Add(1)
		return
	}
	if at < due {
		t.early.Add(1)
	}
	if w.Add(1)&^ackedBit > 1 {
		t.duplicates.Add(1)
		return
	}
	t.delivered.Add(1)
}

// settle counts what the run ends with: acknowledged messages never
// delivered (lost) and delivered ones never acknowledged (unexpected: a
// Schedule that succeeded after its caller gave up, or a crashed child that
// died before logging its acknowledgement).
func (t *tracker) settle() (lost, unexpected int64) {
	p := t.chunks.Load()
	if p == nil {
		return 0, 0
	}
	for _, c := range *p {
		if c == nil {
			continue
		}
		for i := range c {
			v := c[i].Load()
			switch n := v &^ ackedBit; {
			case v&ackedBit != 0 && n == 0:
				lost++
			case v&ackedBit == 0 && n > 0:
				unexpected++
			}
		}
	}
	t.unexpected.Add(unexpected)
	return lost, unexpected
}
