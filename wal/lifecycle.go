package wal

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// The store's life after Open: calls enter and leave around their work,
// a failure makes the store refuse every call and let go of Pebble, and
// Close either closes cleanly (flush, close Pebble, write the clean-close
// record) or, on a failed store, releases what it safely can.
//
// Lock order: mu, then openMu or statsMu. fail takes no lock of the store's
// but openMu (it runs inside Pebble's callbacks, which may hold Pebble's own
// locks), and hands everything else to a goroutine.

// Err returns the sticky failure (wrapping ErrFailed), nil while healthy.
func (s *Store) Err() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// failedError is the sticky failure: what went wrong and what to do.
type failedError struct {
	dir   string
	cause error
}

func (e *failedError) Unwrap() []error { return []error{ErrFailed, e.cause} }

func (e *failedError) Error() string {
	advice := "close it and open it again (restart the process) once the cause is fixed"
	if isDiskFull(e.cause) {
		advice = "free space on that disk, then close the store and open it again (restart the process)"
	}
	return fmt.Sprintf("%v: wal: store %s: %v; it refuses every call now: %s", ErrFailed, e.dir, e.cause, advice)
}

// failureCause returns what failed the store, without the advice for an
// open store (for Open, which fails itself).
func (s *Store) failureCause() error {
	if fe, ok := errors.AsType[*failedError](s.Err()); ok {
		return fe.cause
	}
	return s.Err()
}

// fail records the first failure; later ones are only logged. A store that
// Open has returned then reports it (store.Events.Failed, once), refuses
// every call, and releases Pebble in the background: after a write or sync
// error Pebble's commit pipeline cannot be trusted, and it says so itself.
// background marks a failure of Pebble's background work, which Pebble keeps
// retrying (a flush on a full disk), so releasing Pebble may wait for it.
func (s *Store) fail(cause error) { s.failFrom(cause, false) }

func (s *Store) failFrom(cause error, background bool) {
	var err error = &failedError{dir: s.opts.Dir, cause: cause}
	if !s.failed.CompareAndSwap(nil, &err) {
		s.log.Debug("wal: further failure", "err", cause)
		return
	}
	s.retrying.Store(background)
	close(s.failedCh)
	s.log.Error("wal: store failed; refusing every call until it is reopened", "err", cause)
	s.openMu.Lock()
	opened := s.opened
	s.openMu.Unlock()
	if opened {
		go s.afterFailure(err)
	}
}

// markOpened starts the writer and makes later failures release the store;
// a failure that came first fails Open instead.
func (s *Store) markOpened() error {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if err := s.Err(); err != nil {
		return err
	}
	s.w.start()
	s.opened = true
	return nil
}

// afterFailure reports the failure, waits for the calls in flight (they
// return the failure now, see submit), and releases Pebble.
func (s *Store) afterFailure(err error) {
	if f := s.opts.events.Failed; f != nil {
		f(err)
	}
	s.mu.Lock()
	//lint:ignore SA2001 the empty critical section waits for the calls in flight
	s.mu.Unlock()
	s.startRelease()
}

// startRelease lets go of Pebble and the directory lock in the background,
// once. Until it is done the directory stays locked; a later Open of it
// waits (see waitZombie).
func (s *Store) startRelease() {
	s.releaseOnce.Do(func() {
		z := startZombie(s.opts.FS, s.opts.Dir, s.kick)
		go func() {
			defer z.finish()
			s.releaseErr = s.release()
			close(s.released)
		}()
	})
}

// release stops the writer (waiting for a commit stuck in Pebble), closes
// Pebble and unlocks the directory.
func (s *Store) release() error {
	s.stopVerify()
	s.w.stop()
	err := closePebble(s.db)
	return errors.Join(err, s.lock.Close())
}

// enter takes the shared close lock; it fails once the store is closed or
// failed.
func (s *Store) enter() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	if err := s.Err(); err != nil {
		s.mu.RUnlock()
		return err
	}
	return nil
}

func (s *Store) leave() { s.mu.RUnlock() }

// Close stops the writer after the calls in flight finish, flushes Pebble's
// memtable, closes Pebble and writes the clean-close record (clean.go), so
// the next Open can tell damage from a torn log. Later calls return
// ErrClosed.
//
// On a failed store Close returns an error wrapping the failure and writes
// no record (the next Open recovers as after a crash). It releases Pebble
// and waits for that, unless the failure came from Pebble's background work
// (a flush on a full disk), which Pebble retries and which could hold Close
// for as long as the disk stays full: then Close returns at once, and Pebble
// is released in the background, holding the directory until it is done.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	if err := s.Err(); err != nil {
		s.mu.Unlock()
		return s.closeFailed(err)
	}
	defer s.mu.Unlock()
	return s.closeClean()
}

func (s *Store) closeFailed(err error) error {
	s.startRelease()
	if s.retrying.Load() {
		return fmt.Errorf("wal: close %s: Pebble keeps retrying its failed background work, so it is released in the background (the directory stays locked until then): %w", s.opts.Dir, err)
	}
	<-s.released
	return fmt.Errorf("wal: close %s: not a clean close, the next Open recovers as after a crash: %w", s.opts.Dir, errors.Join(err, s.releaseErr))
}

// closeClean runs with mu held and no call in flight.
func (s *Store) closeClean() error {
	dir := s.opts.Dir
	// A clean-close record vouches for the files: wait until the
	// background verification has read them (it may fail the store).
	s.waitVerify()
	if err := s.Err(); err != nil {
		return s.closeFailed(err)
	}
	// The writer stops once its last group is committed; a commit stalled
	// by a flush that keeps failing fails the store instead.
	stopped := make(chan struct{})
	go func() {
		s.w.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-s.failedCh:
	}
	if err := s.Err(); err != nil {
		return s.closeFailed(err)
	}
	// Fold the resolve log into the summaries, so the next Open and its
	// scans read no log.
	if err := s.w.checkpointNow(); err != nil {
		s.fail(fmt.Errorf("checkpoint the resolve log: %w", err))
		return s.closeFailed(s.Err())
	}
	// The counts the next Open must find: the writer is stopped, so they
	// are final.
	seq, err := readSeq(s.db)
	s.statsMu.Lock()
	rec := &cleanRecord{lastSeq: seq, pending: append([]int64(nil), s.pending...), dead: s.dead, blocks: int64(s.blocks)}
	s.statsMu.Unlock()
	if err == nil {
		// Flush, so the next Open replays no log; wait for it unless the
		// store fails meanwhile (a flush on a full disk never ends).
		err = s.flush()
	}
	if ferr := s.Err(); ferr != nil {
		return s.closeFailed(ferr)
	}
	s.releaseOnce.Do(func() {})
	defer close(s.released)
	if cerr := closePebble(s.db); err == nil {
		err = cerr
	}
	if err == nil && s.Err() == nil {
		err = writeCleanRecord(s.opts.FS, dir, rec)
	}
	err = errors.Join(err, s.lock.Close())
	if err != nil {
		return fmt.Errorf("wal: close %s: not closed cleanly (the next Open recovers as after a crash): %w", dir, err)
	}
	return nil
}

// flush flushes Pebble's memtable and waits for it, or for the store to
// fail.
func (s *Store) flush() error {
	done := make(chan error, 1)
	go func() {
		// When the store fails first, flush returns and the release may
		// close Pebble before this goroutine gets to AsyncFlush, which
		// then panics; nobody waits for this goroutine's answer by then.
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("pebble panicked flushing: %v", r)
			}
		}()
		flushed, err := s.db.AsyncFlush()
		if err == nil {
			select {
			case <-flushed:
			case <-s.failedCh:
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-s.failedCh:
		return s.Err()
	}
}

// stalled says why writes are stalled, if they are; for the error of a call
// that gave up waiting.
func (s *Store) stalled() string {
	var b strings.Builder
	if r := s.stall.Load(); r != nil {
		fmt.Fprintf(&b, " (Pebble stalls writes: %s)", *r)
	}
	return b.String()
}

// damaged turns a read error that shows damage (a checksum that Pebble or
// a packed block's CRC found wrong, a record that does not decode or
// breaks an invariant) into the sticky failure: Open verifies part of the
// store in the background (verify.go), so a read may meet damage first.
// It returns err with the damage explained (errors.Is ErrCorrupt).
func (s *Store) damaged(err error) error {
	if err == nil || !errors.Is(err, ErrCorrupt) && !pebble.IsCorruptionError(err) {
		return err
	}
	if _, ok := errors.AsType[*DamageError](err); !ok {
		if de, ok := errors.AsType[*DamageError](explainPebble(s.opts.FS, s.opts.Dir, err)); ok {
			err = &DamageError{Dir: de.Dir, File: de.File, Reason: de.Reason, Advice: de.Advice, Err: err}
		} else {
			err = &DamageError{Dir: s.opts.Dir, Reason: "a read found damaged data", Advice: "restore the directory from a backup", Err: err}
		}
	}
	s.fail(err)
	return err
}
