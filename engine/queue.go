package engine

import (
	"bytes"
	"runtime"
	"strconv"
)

// queue is a registered local queue and its pool of Parallelism workers,
// which run handler calls for the dispatchers (deliver.go). A worker whose
// handler overran its Timeout is abandoned: the pool starts a replacement,
// and the stuck goroutine exits once its handler returns.
type queue struct {
	Queue
	e    *Engine
	jobs chan *handlerRun
}

func (e *Engine) queueFor(name string) *queue {
	e.queueMu.RLock()
	defer e.queueMu.RUnlock()
	return e.queues[name]
}

// Register adds a local queue handler for "local://"+q.Name. Prefer
// Options.Queues for queues that recovered messages may target: a message
// due for an unregistered queue is retried by its policy. It fails after
// Shutdown or Close began.
func (e *Engine) Register(q Queue) error {
	if err := q.validate(); err != nil {
		return err
	}
	if err := e.enter(); err != nil {
		return err
	}
	defer e.leave()
	return e.register(q)
}

func (e *Engine) register(q Queue) error {
	q = q.withDefaults()
	e.queueMu.Lock()
	if _, ok := e.queues[q.Name]; ok {
		e.queueMu.Unlock()
		return invalidf("queue %q is already registered", q.Name)
	}
	qu := &queue{Queue: q, e: e, jobs: make(chan *handlerRun)}
	e.queues[q.Name] = qu
	e.queueMu.Unlock()
	for range q.Parallelism {
		qu.spawn()
	}
	e.destMu.Lock()
	for _, d := range e.dests {
		if d.local == q.Name {
			e.configureDest(d)
		}
	}
	e.destMu.Unlock()
	return nil
}

// spawn starts one worker; workers exit when the engine closes.
func (q *queue) spawn() { go q.worker() }

func (q *queue) worker() {
	gid := goroutineID()
	q.e.handlerGoroutines.Store(gid, struct{}{})
	defer q.e.handlerGoroutines.Delete(gid)
	for {
		select {
		case r := <-q.jobs:
			if r.work() {
				return // abandoned mid-handler; a replacement was started
			}
		case <-q.e.dctx.Done():
			return
		}
	}
}

// goroutineID returns the current goroutine's ID, parsed from its stack
// header ("goroutine 123 [running]:"). Workers record theirs once, so
// Shutdown can tell that it was called from a handler.
func goroutineID() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseInt(string(b), 10, 64)
	return id
}

// inHandler reports whether the caller runs on a handler worker.
func (e *Engine) inHandler() bool {
	_, ok := e.handlerGoroutines.Load(goroutineID())
	return ok
}
