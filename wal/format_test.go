package wal

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hourglassmq/hourglass/store"
	"github.com/stretchr/testify/require"
)

var flagUpdate = flag.Bool("wal.update", false, "rewrite testdata (fuzz seed corpus, golden store)")

func sampleMessage() store.Message {
	return store.Message{
		Due: 1764072000000000000, Expires: 1764075600000000000, Attempt: 3,
		Dest: "nats://orders.expire", Key: "order-42",
		Headers: []store.Header{{Key: "content-type", Value: "application/json"}, {Key: "trace", Value: "abc"}},
		Payload: []byte(`{"order":42}`),
	}
}

func sampleBlock() []byte {
	var bb blockBuilder
	m := sampleMessage()
	bb.add(&m)
	m2 := store.Message{Due: -5, Dest: "local://x"}
	bb.add(&m2)
	return bb.encode()
}

func sampleSummary() []byte {
	s := summary{n: 10, minDue: -3, maxDue: 99, live: 2, bits: []uint64{0b1000000001}, keyed: []uint64{1}}
	return s.encode()
}

func sampleDead() []byte {
	return encodeDead(&store.DeadLetter{Message: sampleMessage(), Reason: "handler: 500", DeadAt: 77})
}

func TestRoundTrip(t *testing.T) {
	m := sampleMessage()
	got, err := decodeMessage(appendMessage(nil, &m))
	require.NoError(t, err)
	require.Equal(t, m, got)

	view, err := decodeBlock(sampleBlock())
	require.NoError(t, err)
	require.Equal(t, 2, view.n)
	got, err = decodeMessage(view.entry(0))
	require.NoError(t, err)
	require.Equal(t, m, got)

	sum, err := decodeSummary(sampleSummary())
	require.NoError(t, err)
	require.True(t, sum.isLive(0) && sum.isLive(9) && !sum.isLive(5) && sum.isKeyed(0) && !sum.isKeyed(9))

	d, err := decodeDead(sampleDead())
	require.NoError(t, err)
	require.Equal(t, "handler: 500", d.Reason)
	require.Equal(t, m, d.Message)

	ie, err := decodeIndex(indexEntry{due: -9, key: "k"}.encode())
	require.NoError(t, err)
	require.Equal(t, indexEntry{due: -9, key: "k"}, ie)

	v, sh, err := decodeMeta(encodeMeta(16))
	require.NoError(t, err)
	require.Equal(t, []int{FormatVersion, 16}, []int{v, sh})

	due, id, ok := decodeTimeKey(timeKey(3, -7, 99))
	require.True(t, ok)
	require.Equal(t, int64(-7), due)
	require.Equal(t, store.ID(99), id)
	require.Negative(t, bytes.Compare(timeKey(0, -1, 0), timeKey(0, 1, 0)), "negative dues sort first")
}

// TestMalformed feeds broken records to every decoder: each must return a
// *CorruptionError (errors.Is ErrCorrupt), never panic.
func TestMalformed(t *testing.T) {
	msg := appendMessage(nil, new(store.Message))
	block := sampleBlock()
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0xff
		return c
	}
	bigLen := binary.AppendUvarint([]byte{0, 0, 0}, 1<<40) // dest length past the end
	cases := []struct {
		name   string
		decode func([]byte) error
		in     []byte
	}{
		{"message empty", decMsg, nil},
		{"message truncated", decMsg, msg[:len(msg)-1]},
		{"message trailing", decMsg, append(bytes.Clone(msg), 0)},
		{"message huge length", decMsg, bigLen},
		{"message bad varint", decMsg, bytes.Repeat([]byte{0xff}, 11)},
		{"message attempt overflow", decMsg, append([]byte{0, 0}, binary.AppendUvarint(nil, 1<<33)...)},
		{"message too many headers", decMsg, append([]byte{0, 0, 0, 0, 0}, binary.AppendUvarint(nil, store.MaxHeaders+1)...)},
		{"block empty", decBlock, nil},
		{"block short", decBlock, []byte{1, 2, 3}},
		{"block checksum", decBlock, flip(block, 3)},
		{"block version", decBlock, reCRC(flip(block, 0))},
		{"block count huge", decBlock, reCRC(setU32(block, len(block)-8, 1<<20))},
		{"block count too big for record", decBlock, reCRC(setU32(block, len(block)-8, 1000))},
		{"block offsets disorder", decBlock, reCRC(setU32(block, len(block)-16, 0xffff))},
		{"block entries unfilled", decBlock, reCRC(setU32(block, len(block)-12, 1))},
		{"summary empty", decSum, nil},
		{"summary version", decSum, flip(sampleSummary(), 0)},
		{"summary live mismatch", decSum, func() []byte { s := sampleSummary(); s[5] = 3; return s }()},
		{"summary bits past n", decSum, (&summary{n: 3, live: 0, bits: []uint64{0}}).encode()[:5]},
		{"summary truncated bitmap", decSum, sampleSummary()[:len(sampleSummary())-1]},
		{"index empty", decIdx, nil},
		{"index version", decIdx, []byte{9, 0, 0}},
		{"dead empty", decDead, nil},
		{"dead truncated", decDead, sampleDead()[:10]},
		{"meta magic", decMetaErr, []byte("nope12345678")},
		{"meta short", decMetaErr, encodeMeta(4)[:11]},
		{"meta shards zero", decMetaErr, encodeMeta(0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode(tc.in)
			require.ErrorIs(t, err, ErrCorrupt)
			var ce *CorruptionError
			require.ErrorAs(t, err, &ce)
			require.NotEmpty(t, ce.Reason)
		})
	}
}

func setU32(b []byte, off int, v uint32) []byte {
	c := bytes.Clone(b)
	binary.LittleEndian.PutUint32(c[off:], v)
	return c
}

// reCRC fixes the block checksum so the structural checks are reached.
func reCRC(b []byte) []byte {
	c := bytes.Clone(b)
	binary.LittleEndian.PutUint32(c[len(c)-4:], crc32c(c[:len(c)-4]))
	return c
}

func decMsg(b []byte) error  { _, err := decodeMessage(b); return err }
func decSum(b []byte) error  { _, err := decodeSummary(b); return err }
func decIdx(b []byte) error  { _, err := decodeIndex(b); return err }
func decDead(b []byte) error { _, err := decodeDead(b); return err }
func decMetaErr(b []byte) error {
	_, _, err := decodeMeta(b)
	return err
}
func decBlock(b []byte) error {
	v, err := decodeBlock(b)
	if err != nil {
		return err
	}
	for i := 0; i < v.n; i++ {
		if _, err := decodeMessage(v.entry(i)); err != nil {
			return err
		}
	}
	return nil
}

// Fuzz targets: one per decoder. Each must never panic, and whatever decodes
// must re-encode to something that decodes to the same value.

func FuzzDecodeMessage(f *testing.F) {
	m := sampleMessage()
	f.Add(appendMessage(nil, &m))
	f.Add(appendMessage(nil, new(store.Message)))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		m2, err := decodeMessage(appendMessage(nil, &m))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if fmt.Sprint(m) != fmt.Sprint(m2) {
			t.Fatalf("round trip changed the message: %v vs %v", m, m2)
		}
	})
}

func FuzzDecodeBlock(f *testing.F) {
	f.Add(sampleBlock())
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = decBlock(b)
		// Also reach the structural checks behind the checksum.
		if len(b) >= 1+blockTrailer {
			_ = decBlock(reCRC(b))
		}
	})
}

func FuzzDecodeSummary(f *testing.F) {
	f.Add(sampleSummary())
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSummary(b)
		if err != nil {
			return
		}
		for i := 0; i < s.n; i++ {
			_ = s.isLive(i) || s.isKeyed(i)
		}
		s2, err := decodeSummary(s.encode())
		if err != nil || s2.live != s.live || s2.n != s.n {
			t.Fatalf("summary round trip: %v %+v %+v", err, s, s2)
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	f.Add(indexEntry{due: 5, key: "k"}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeIndex(b)
		if err == nil {
			if e2, err := decodeIndex(e.encode()); err != nil || e2 != e {
				t.Fatalf("index round trip: %v", err)
			}
		}
	})
}

func FuzzDecodeDead(f *testing.F) {
	f.Add(sampleDead())
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDead(b)
		if err == nil {
			if _, err := decodeDead(encodeDead(&d)); err != nil {
				t.Fatalf("dead round trip: %v", err)
			}
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(16))
	f.Fuzz(func(t *testing.T, b []byte) { _, _, _ = decodeMeta(b) })
}

func FuzzParseID(f *testing.F) {
	f.Add("0000000000001")
	f.Add(store.MakeID(255, store.LocalMask).String())
	f.Fuzz(func(t *testing.T, s string) {
		id, err := store.ParseID(s)
		if err == nil && id.String() != s {
			t.Fatalf("ParseID(%q) = %v, which prints as %q", s, id, id.String())
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpus under testdata/fuzz when run
// with -wal.update. The files are checked in; go test runs them as seeds.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*flagUpdate {
		t.Skip("run with -wal.update to rewrite testdata/fuzz")
	}
	m := sampleMessage()
	corpus := map[string][][]byte{
		"FuzzDecodeMessage": {appendMessage(nil, &m), appendMessage(nil, new(store.Message)), {0, 0, 0, 0xff}},
		"FuzzDecodeBlock":   {sampleBlock(), sampleBlock()[:9]},
		"FuzzDecodeSummary": {sampleSummary(), (&summary{n: 64, bits: make([]uint64, 1)}).encode()},
		"FuzzDecodeIndex":   {indexEntry{due: -1, key: "order-1"}.encode()},
		"FuzzDecodeDead":    {sampleDead()},
		"FuzzDecodeMeta":    {encodeMeta(1), encodeMeta(256)},
	}
	for target, seeds := range corpus {
		dir := filepath.Join("testdata", "fuzz", target)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644))
		}
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeClear")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for i, s := range []struct {
		b   []byte
		seq uint64
	}{
		{appendClearRecord(nil, []clearSet{{seq: 7, slots: []uint16{0, 5}}, {seq: 9, slots: []uint16{1}}}), 10},
		{appendClearRecord(nil, []clearSet{{seq: 1, slots: []uint16{maxSlots - 1}}}), 0},
	} {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint64(%d)\n", s.b, s.seq)
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644))
	}
	dir = filepath.Join("testdata", "fuzz", "FuzzParseID")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for i, s := range []string{store.MakeID(1, 1<<16).String(), "vvvvvvvvvvvvv", "0"} {
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", s)
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644))
	}
}
