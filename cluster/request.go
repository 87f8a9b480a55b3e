package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hourglassmq/hourglass/store"
)

// Requests: a call that must be decided by a partition's owner (a Cancel,
// Reschedule or dead-letter call for a message of a partition owned
// elsewhere, or an Append with an idempotency key of such a partition) is
// written as a request record into that partition: key 'q' + a random
// request ID. The log orders it after everything the caller wrote before,
// so the owner, which applies the partition in order, sees the message the
// request is about. The owner claims the IDs from its engine, writes the
// outcome and the answer in one transaction, the answer being the
// request's tombstone (with the result in a header), and releases the
// claims. Every node applies the partition, so the caller reads the answer
// from its own applier, after the outcome it answers for. A request nobody
// answered stays in the index (and the log), and the next owner answers it
// when it takes the partition over.

const (
	reqResolve  = 'r'
	reqAppend   = 'a'
	reqReplay   = 'p'
	reqPurge    = 'u'
	reqPurgeAll = 'U'
)

type request struct {
	kind byte
	b    store.Batch
	msgs []store.Message
	ids  []store.ID
	due  int64
}

func (e *enc) ids(ids []store.ID) {
	e.uvar(uint64(len(ids)))
	for _, id := range ids {
		e.u64(uint64(id))
	}
}

func (d *dec) ids(what string) []store.ID {
	n := d.uvar(what)
	if n > store.MaxCallMessages {
		d.fail(what + ": too many")
		return nil
	}
	out := make([]store.ID, 0, n)
	for range n {
		out = append(out, store.ID(d.u64(what)))
	}
	return out
}

func (e *enc) msgs(ms []store.Message) {
	e.uvar(uint64(len(ms)))
	for i := range ms {
		e.uvar(uint64(ms[i].Shard))
		e.message(&ms[i])
	}
}

func (d *dec) msgs() []store.Message {
	n := d.uvar("messages")
	if n > store.MaxCallMessages {
		d.fail("too many messages")
		return nil
	}
	out := make([]store.Message, n)
	for i := range out {
		out[i].Shard = int(d.uvar("shard"))
		d.message(&out[i])
	}
	return out
}

func encodeRequest(r *request) []byte {
	e := enc{}
	e.u8(formatVersion)
	e.u8(kindRequest)
	e.u8(r.kind)
	switch r.kind {
	case reqResolve:
		e.uvar(uint64(len(r.b.Done)))
		for _, d := range r.b.Done {
			e.u64(uint64(d.ID))
			e.u8(byte(d.Reason))
		}
		e.uvar(uint64(len(r.b.Update)))
		for _, u := range r.b.Update {
			e.u64(uint64(u.ID))
			e.i64(u.Due)
			e.u32(u.Attempt)
		}
		e.uvar(uint64(len(r.b.Dead)))
		for _, d := range r.b.Dead {
			e.u64(uint64(d.ID))
			e.str(d.Reason)
			e.u32(d.Attempt)
		}
		e.msgs(r.b.New)
	case reqAppend:
		e.msgs(r.msgs)
	case reqReplay:
		e.i64(r.due)
		e.ids(r.ids)
	case reqPurge:
		e.ids(r.ids)
	}
	return e.b
}

func decodeRequest(b []byte) (request, error) {
	d := dec{b: b}
	var r request
	if ver := d.u8("version"); d.err == nil && ver != formatVersion {
		return r, fmt.Errorf("%w: request format version %d", errFormat, ver)
	}
	d.u8("kind")
	r.kind = d.u8("request kind")
	count := func(what string) int {
		n := d.uvar(what)
		if n > store.MaxCallMessages {
			d.fail(what + ": too many")
			return 0
		}
		return int(n)
	}
	switch r.kind {
	case reqResolve:
		r.b.Done = make([]store.Done, count("done"))
		for i := range r.b.Done {
			r.b.Done[i] = store.Done{ID: store.ID(d.u64("id")), Reason: store.Reason(d.u8("reason"))}
		}
		r.b.Update = make([]store.Update, count("update"))
		for i := range r.b.Update {
			r.b.Update[i] = store.Update{ID: store.ID(d.u64("id")), Due: d.i64("due"), Attempt: d.u32("attempt")}
		}
		r.b.Dead = make([]store.Dead, count("dead"))
		for i := range r.b.Dead {
			r.b.Dead[i] = store.Dead{ID: store.ID(d.u64("id")), Reason: d.str("reason", store.MaxReasonLen), Attempt: d.u32("attempt")}
		}
		r.b.New = d.msgs()
	case reqAppend:
		r.msgs = d.msgs()
	case reqReplay:
		r.due = d.i64("due")
		r.ids = d.ids("ids")
	case reqPurge:
		r.ids = d.ids("ids")
	case reqPurgeAll:
	default:
		if d.err == nil {
			return r, fmt.Errorf("%w: request kind %q", errFormat, r.kind)
		}
	}
	return r, d.err
}

// Answer codes.
const (
	ansOK = iota
	ansNotPending
	ansInFlight
	ansInvalid
	ansOther
)

// answer is a request's result.
type answer struct {
	code    byte
	msg     string
	ids     []store.ID // ansNotPending
	app     []store.Appended
	n       int64
	written map[int]int64 // what the caller must apply before it returns
}

func answerOf(r opResult, written map[int]int64) answer {
	a := answer{app: r.app, n: int64(r.n), written: written}
	var npe *store.NotPendingError
	switch {
	case r.err == nil:
	case errors.As(r.err, &npe):
		a.code, a.ids, a.written = ansNotPending, npe.IDs, nil
	case errors.Is(r.err, store.ErrInFlight):
		a.code, a.msg, a.written = ansInFlight, r.err.Error(), nil
	case errors.Is(r.err, store.ErrInvalid):
		a.code, a.msg, a.written = ansInvalid, r.err.Error(), nil
	default:
		a.code, a.msg, a.written = ansOther, r.err.Error(), nil
	}
	return a
}

func (a *answer) err() error {
	switch a.code {
	case ansOK:
		return nil
	case ansNotPending:
		return &store.NotPendingError{IDs: a.ids}
	case ansInFlight:
		return fmt.Errorf("cluster: the owner answered: %s: %w", a.msg, store.ErrInFlight)
	case ansInvalid:
		return fmt.Errorf("cluster: the owner answered: %s: %w", a.msg, store.ErrInvalid)
	}
	return fmt.Errorf("cluster: the owner answered: %s", a.msg)
}

func encodeAnswer(a *answer) []byte {
	e := enc{}
	e.u8(a.code)
	e.str(a.msg)
	e.ids(a.ids)
	e.uvar(uint64(len(a.app)))
	for _, x := range a.app {
		e.u64(uint64(x.ID))
		if x.Existing {
			e.u8(1)
		} else {
			e.u8(0)
		}
	}
	e.i64(a.n)
	e.uvar(uint64(len(a.written)))
	for p, off := range a.written {
		e.uvar(uint64(p))
		e.i64(off)
	}
	return e.b
}

func decodeAnswer(b []byte) (answer, error) {
	d := dec{b: b}
	var a answer
	a.code = d.u8("code")
	a.msg = d.str("message", 4096)
	a.ids = d.ids("ids")
	n := d.uvar("appended")
	if n > store.MaxCallMessages {
		d.fail("too many results")
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		a.app = append(a.app, store.Appended{ID: store.ID(d.u64("id")), Existing: d.u8("existing") == 1})
	}
	a.n = d.i64("count")
	w := d.uvar("written")
	if w > store.MaxShards {
		d.fail("too many partitions")
	}
	for i := uint64(0); i < w && d.err == nil; i++ {
		if a.written == nil {
			a.written = map[int]int64{}
		}
		p := int(d.uvar("partition"))
		a.written[p] = d.i64("offset")
	}
	return a, d.err
}

// remote writes rq to partition p and waits for the owner's answer, then
// until this node applied what the answer says was written; ctx bounds it
// all (callCtx).
func (s *Store) remote(ctx context.Context, p int, rq *request) (answer, error) {
	var id [16]byte
	_, _ = rand.Read(id[:])
	ch := make(chan answer, 1)
	s.ansMu.Lock()
	s.waiting[string(id[:])] = ch
	s.ansMu.Unlock()
	defer func() {
		s.ansMu.Lock()
		delete(s.waiting, string(id[:]))
		s.ansMu.Unlock()
	}()
	rec := &kgo.Record{Topic: s.cfg.Topic, Partition: int32(p), Key: append([]byte{keyRequest}, id[:]...), Value: encodeRequest(rq)}
	if err := s.produceIdem(ctx, rec); err != nil {
		return answer{}, fmt.Errorf("cluster: send a request to the owner of partition %d: %w", p, err)
	}
	var a answer
	select {
	case a = <-ch:
	case <-ctx.Done():
		return answer{}, fmt.Errorf("cluster: waiting for the owner of partition %d to answer (RequestTimeout %v): %w; the change may still be applied when an owner takes it: read it back", p, s.cfg.RequestTimeout, ctx.Err())
	case <-s.ctx.Done():
		return answer{}, store.ErrClosed
	}
	for q, off := range a.written {
		if q >= 0 && q < s.nP {
			if err := s.parts[q].waitApplied(ctx, off); err != nil {
				return a, err
			}
		}
	}
	return a, nil
}

// deliverAnswers hands answers to the calls of this node waiting for them.
func (s *Store) deliverAnswers(as map[string]answer) {
	s.ansMu.Lock()
	defer s.ansMu.Unlock()
	for id, a := range as {
		if ch, ok := s.waiting[id]; ok {
			select {
			case ch <- a:
			default:
			}
		}
	}
}

// unanswered lists the requests of partition p the index holds (p.mu held).
func (s *Store) unanswered(p int) ([][]byte, error) {
	pre := ixPrefix(ixRequest, p)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: prefixEnd(pre)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, append([]byte(nil), it.Key()[2:]...))
	}
	return out, it.Error()
}

// serveRequests answers the partition's requests, in log order, until
// the term's request side stops.
func (o *ownership) serveRequests() {
	for {
		o.reqMu.Lock()
		q := o.reqQ
		o.reqQ = nil
		o.reqMu.Unlock()
		for _, id := range q {
			if o.reqCtx.Err() != nil {
				return
			}
			o.serve(id)
		}
		select {
		case <-o.reqWake:
		case <-o.reqCtx.Done():
			return
		}
	}
}

// serve turns one request into an op for the writer, claiming its IDs
// from the engine first.
func (o *ownership) serve(reqID []byte) {
	s := o.s
	b, ok, err := get(s.db, ixRequestKey(o.p.n, reqID))
	if err != nil || !ok {
		return // answered already
	}
	x := &op{reqID: reqID}
	rq, err := decodeRequest(b)
	if err != nil {
		x.kind, x.ans = opAnswer, &answer{code: ansInvalid, msg: err.Error()}
		o.enqueue(x)
		return
	}
	switch rq.kind {
	case reqResolve:
		x.kind, x.b = opResolve, rq.b
		ctx, cancel := context.WithTimeout(o.reqCtx, s.cfg.RequestTimeout)
		defer cancel()
		x.releases = map[store.ID]func(*store.Message){}
		var ids []store.ID
		for _, d := range rq.b.Done {
			ids = append(ids, d.ID)
		}
		for _, u := range rq.b.Update {
			ids = append(ids, u.ID)
		}
		for _, d := range rq.b.Dead {
			ids = append(ids, d.ID)
		}
		for _, id := range ids {
			if id.Shard() != o.p.n {
				continue // not pending here: the writer answers so
			}
			rel, err := s.owner.Claim(ctx, id)
			if err == nil {
				x.releases[id] = rel
				continue
			}
			if errors.Is(err, store.ErrInFlight) {
				x.finish(s, opResult{err: err}) // ends the claims taken
				o.enqueue(&op{kind: opAnswer, reqID: reqID, ans: &answer{code: ansInFlight, msg: err.Error()}})
				return
			}
			// The term is ending: the next owner answers.
			x.finish(s, opResult{err: err})
			return
		}
	case reqAppend:
		x.kind, x.msgs = opAppend, rq.msgs
	case reqReplay:
		x.kind, x.ids, x.due = opReplay, rq.ids, rq.due
	case reqPurge:
		x.kind, x.ids = opPurge, rq.ids
	case reqPurgeAll:
		x.kind = opPurgeAll
	}
	o.enqueue(x)
}
