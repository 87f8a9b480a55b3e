package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
)

// The applier: one consumer reads every partition of the topic (read
// committed) and applies each fetched run of records to the index in one
// Pebble batch with the partition's next offset, then feeds the engine the
// change if the partition is attached here, all under the partition's
// lock, which Scan takes too. Every node applies every partition the same
// way, so every node's index is the same function of the log.

func (s *Store) applyLoop() {
	defer s.loops.Done()
	for {
		fs := s.cons.PollFetches(s.ctx)
		if s.ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, s.ctx.Err()) {
				return
			}
			s.log.Warn("cluster: fetch", "topic", topic, "partition", p, "err", err)
		})
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if fp.Topic != s.cfg.Topic || len(fp.Records) == 0 || int(fp.Partition) >= s.nP {
				return
			}
			if err := s.apply(s.parts[fp.Partition], fp.Records); err != nil {
				s.fail(fmt.Errorf("apply partition %d: %w", fp.Partition, err))
			}
		})
		if s.failed.Load() != nil {
			return
		}
	}
}

// applied collects what one batch of records means beyond the index.
type applied struct {
	change    store.Change
	answers   map[string]answer
	requests  [][]byte // request IDs that arrived
	ownerMove bool     // another node took the partition
}

// apply applies recs (consecutive records of p) and feeds what they change.
func (s *Store) apply(p *part, recs []*kgo.Record) error {
	p.mu.Lock()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	var out applied
	m := p.meta
	for _, r := range recs {
		if r.Offset < m.next {
			continue // already applied (a refetch after a restart)
		}
		if err := s.applyRecord(b, p, &m, r, &out); err != nil {
			p.mu.Unlock()
			return fmt.Errorf("record at offset %d: %w", r.Offset, err)
		}
		m.next = r.Offset + 1
	}
	if m.next == p.meta.next {
		p.mu.Unlock()
		return nil
	}
	m.lastApply = s.env.Now().UnixNano()
	if err := b.Set(ixMetaKey(p.n), encodeMeta(&m), nil); err != nil {
		p.mu.Unlock()
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("write the index: %w", err)
	}
	p.meta = m
	p.pending.Store(m.pending)
	p.dead.Store(m.dead)
	own := p.own.Load()
	if p.attached {
		if len(out.change.Added) > 0 || len(out.change.Removed) > 0 {
			s.owner.Feed(p.n, out.change)
		}
		if own != nil && len(out.requests) > 0 {
			own.queueRequests(out.requests)
		}
	}
	p.mu.Unlock()
	p.advance(m.next)
	if len(out.answers) > 0 {
		s.deliverAnswers(out.answers)
	}
	if out.ownerMove && own != nil {
		s.log.Warn("cluster: another node took over a partition this node still held; letting it go", "partition", p.n, "owner", m.owner.node)
		go s.lose(p, own)
	}
	return nil
}

func (s *Store) applyRecord(b *pebble.Batch, p *part, m *meta, r *kgo.Record, out *applied) error {
	if len(r.Key) == 0 {
		return fmt.Errorf("%w: record without a key", errFormat)
	}
	switch r.Key[0] {
	case keyMessage:
		if len(r.Key) != 1+tokenLen {
			return fmt.Errorf("%w: message key of %d bytes", errFormat, len(r.Key))
		}
		var token [tokenLen]byte
		copy(token[:], r.Key[1:])
		if r.Value == nil {
			t, err := tombOf(r)
			if err != nil {
				return err
			}
			if t.kind != tombDone {
				return fmt.Errorf("%w: message tombstone of kind %q", errFormat, t.kind)
			}
			return s.applyGone(b, p, m, t.id, t.flags&flagFeed != 0, out)
		}
		v, err := decodeMsg(r.Value)
		if err != nil {
			return err
		}
		id := v.m.ID
		if id == 0 {
			id = store.MakeID(p.n, uint64(r.Offset)+1) // an appended message is named by its offset
		}
		if id.Shard() != p.n {
			return fmt.Errorf("%w: message %s in partition %d", errFormat, id, p.n)
		}
		v.m.ID, v.m.Shard = id, p.n
		return s.applyMsg(b, p, m, token, &v, out)
	case keyIdem:
		key := string(r.Key[1:])
		if r.Value == nil {
			t, err := tombOf(r)
			if err != nil {
				return err
			}
			if cur, ok, err := keyEntry(b, p.n, key); err != nil {
				return err
			} else if ok && cur == t.id {
				return b.Delete(ixKeyKey(p.n, key), nil)
			}
			return nil
		}
		id, err := decodeIdem(r.Value)
		if err != nil {
			return err
		}
		return b.Set(ixKeyKey(p.n, key), binary.BigEndian.AppendUint64(nil, uint64(id)), nil)
	case keyOwner:
		if r.Value == nil {
			return nil
		}
		o, err := decodeOwner(r.Value)
		if err != nil {
			return err
		}
		// A term is seated when its record is applied; another node's term
		// applied after ours means that node owns the partition now.
		own := p.own.Load()
		switch {
		case own != nil && o.node == s.node && o.at == own.termAt:
			own.seated.Store(true)
		case own != nil && own.seated.Load() && o.node != s.node && !o.released:
			out.ownerMove = true
		}
		if !o.released {
			o.epoch = m.owner.epoch + 1
		} else {
			o.epoch = m.owner.epoch
		}
		m.owner = o
		return nil
	case keyRequest:
		reqID := r.Key[1:]
		if r.Value == nil {
			if err := b.Delete(ixRequestKey(p.n, reqID), nil); err != nil {
				return err
			}
			t, err := tombOf(r)
			if err != nil {
				return err
			}
			if t.kind == tombAnswer {
				a, err := decodeAnswer(t.answer)
				if err != nil {
					return err
				}
				if out.answers == nil {
					out.answers = map[string]answer{}
				}
				out.answers[string(reqID)] = a
			}
			return nil
		}
		if valueKind(r.Value) != kindRequest {
			return fmt.Errorf("%w: request of kind %q", errFormat, valueKind(r.Value))
		}
		out.requests = append(out.requests, append([]byte(nil), reqID...))
		return b.Set(ixRequestKey(p.n, reqID), r.Value, nil)
	}
	return fmt.Errorf("%w: record key starting with %q (written by a newer version?)", errFormat, r.Key[0])
}

func tombOf(r *kgo.Record) (tomb, error) {
	for _, h := range r.Headers {
		if h.Key == headerTomb {
			return decodeTomb(h.Value)
		}
	}
	return tomb{}, fmt.Errorf("%w: tombstone without its %q header", errFormat, headerTomb)
}

func keyEntry(r pebble.Reader, p int, key string) (store.ID, bool, error) {
	b, ok, err := get(r, ixKeyKey(p, key))
	if err != nil || !ok {
		return 0, false, err
	}
	if len(b) != 8 {
		return 0, false, fmt.Errorf("%w: key entry of %d bytes", errFormat, len(b))
	}
	return store.ID(binary.BigEndian.Uint64(b)), true, nil
}

// unindex removes id's entries (pending or dead) as e describes them.
func (s *Store) unindex(b *pebble.Batch, p *part, m *meta, id store.ID, e *msgEntry, v *msgValue) error {
	switch e.state {
	case statePending:
		m.pending--
		if err := b.Delete(ixDueKey(p.n, e.due, id), nil); err != nil {
			return err
		}
	case stateDead:
		m.dead--
		if err := b.Delete(ixDeadKey(id), nil); err != nil {
			return err
		}
	}
	return b.Delete(ixMsgKey(id), nil)
}

// applyGone applies a message's tombstone: it left (or was purged).
func (s *Store) applyGone(b *pebble.Batch, p *part, m *meta, id store.ID, feed bool, out *applied) error {
	e, v, ok, err := lookupMsg(b, id)
	if err != nil || !ok {
		return err
	}
	if err := s.unindex(b, p, m, id, &e, &v); err != nil {
		return err
	}
	if k := v.m.Key; k != "" && keyPartition(k, s.nP) == p.n {
		if cur, ok, err := keyEntry(b, p.n, k); err != nil {
			return err
		} else if ok && cur == id {
			if err := b.Delete(ixKeyKey(p.n, k), nil); err != nil {
				return err
			}
		}
	}
	if feed && e.state == statePending {
		out.change.Removed = append(out.change.Removed, id)
	}
	return nil
}

// applyMsg applies a message record: pending or dead, complete.
func (s *Store) applyMsg(b *pebble.Batch, p *part, m *meta, token [tokenLen]byte, v *msgValue, out *applied) error {
	id := v.m.ID
	e, old, had, err := lookupMsg(b, id)
	if err != nil {
		return err
	}
	if had {
		if err := s.unindex(b, p, m, id, &e, &old); err != nil {
			return err
		}
	}
	ne := msgEntry{token: token, due: v.m.Due}
	feed := v.flags&flagFeed != 0
	switch v.kind {
	case kindPending:
		ne.state = statePending
		m.pending++
		if err := b.Set(ixDueKey(p.n, v.m.Due, id), indexValue(token, v), nil); err != nil {
			return err
		}
		if feed {
			if had && e.state == statePending {
				out.change.Removed = append(out.change.Removed, id)
			}
			out.change.Added = append(out.change.Added, v.m)
		}
	case kindDead:
		ne.state = stateDead
		m.dead++
		if err := b.Set(ixDeadKey(id), indexValue(token, v), nil); err != nil {
			return err
		}
		if feed && had && e.state == statePending {
			out.change.Removed = append(out.change.Removed, id)
		}
	}
	if err := b.Set(ixMsgKey(id), encodeMsgEntry(&ne), nil); err != nil {
		return err
	}
	if k := v.m.Key; k != "" && keyPartition(k, s.nP) == p.n {
		return b.Set(ixKeyKey(p.n, k), binary.BigEndian.AppendUint64(nil, uint64(id)), nil)
	}
	return nil
}
