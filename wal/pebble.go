package wal

import (
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// This file is the store's side of Pebble: the options it opens Pebble with,
// the hooks through which Pebble reports trouble (its logger, whose Fatalf
// Pebble calls instead of returning WAL errors, and its EventListener), and
// the translation of Pebble's errors, which name Pebble's internals, into
// what happened to the store and what to do about it.

// pebbleOptions returns the options the store opens Pebble with. The lock is
// taken by Open beforehand and held across the read-only validation and the
// read-write open, so no other process can slip in between.
func (s *Store) pebbleOptions(cache *pebble.Cache, lock *pebble.Lock, readOnly bool) *pebble.Options {
	po := &pebble.Options{
		FS:                 s.fs,
		Cache:              cache,
		MemTableSize:       s.opts.MemTableSize,
		FormatMajorVersion: PebbleFormat,
		Logger:             pebbleLogger{s},
		Lock:               lock,
		ReadOnly:           readOnly,
	}
	po.Experimental.ValueSeparationPolicy = s.valueSeparation
	el := s.eventListener()
	po.EventListener = &el
	po.EnsureDefaults()
	return po
}

// defaultBlobMinSize is the smallest value Pebble separates into a blob
// file. A block holding a few 100-byte messages passes it; a summary only
// when its block has over ~4,000 slots.
const defaultBlobMinSize = 1 << 10

// valueSeparation is the store's value-separation policy. Pebble writes
// values of at least defaultBlobMinSize bytes (packed blocks, the bulk of
// the store's bytes) into blob files at flush and keeps only a reference in
// the sstable. A block lives from its group commit until its last message is
// resolved, seconds to the Horizon later: without separation each one is
// flushed while live and then rewritten by every L0 compaction until it is
// range-deleted: at 300k messages/s, two compactions of 120-235 ms every
// 3.1 s, each a burst of lateness; at 420k/s the engine's p99 lateness was
// 10-26 ms over 30 s. With it, compactions move references, and a blob
// file goes as a whole once no table refers to it (docs/benchmarks.md,
// "Value separation").
//
// A referenced depth above MaxBlobReferenceDepth makes a compaction copy
// values into a new blob file; a blob file older than RewriteMinimumAge with
// more than TargetGarbageRatio of its values dead is rewritten to reclaim
// the space. Blocks die within the Horizon, so both are rare.
func (s *Store) valueSeparation() pebble.ValueSeparationPolicy {
	return pebble.ValueSeparationPolicy{
		Enabled:               true,
		MinimumSize:           s.opts.blobMinSize,
		MaxBlobReferenceDepth: 10,
		RewriteMinimumAge:     5 * time.Minute,
		TargetGarbageRatio:    0.2,
	}
}

// eventListener turns Pebble's events into the store's: write stalls go to
// Options' store.Events.WriteStall; a failed flush, or an ENOSPC anywhere in
// Pebble's background work, fails the store, because Pebble retries such a
// flush forever while the memtables fill and writes stall; corrupt data
// found while reading fails it too (Pebble's default would exit the
// process).
func (s *Store) eventListener() pebble.EventListener {
	return pebble.EventListener{
		BackgroundError: func(err error) {
			if isDiskFull(err) {
				s.failFrom(diskFullError(s.opts.Dir, "Pebble cannot write a flush or compaction output", err), true)
				return
			}
			s.log.Warn("wal: pebble background error", "err", err)
		},
		FlushEnd: func(info pebble.FlushInfo) {
			if info.Err == nil || len(info.Output) == 0 && strings.Contains(info.Err.Error(), "empty table") {
				return
			}
			// Pebble retries a failed flush at once and forever; meanwhile
			// the memtables fill and writes stall.
			if isDiskFull(info.Err) {
				s.failFrom(diskFullError(s.opts.Dir, "Pebble cannot flush its memtable", info.Err), true)
				return
			}
			s.failFrom(fmt.Errorf("pebble cannot flush its memtable (it retries forever while writes stall): %w", info.Err), true)
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			s.fail(&DamageError{Dir: s.opts.Dir, File: path.Base(info.Path), Reason: "Pebble found corrupt data while reading",
				Advice: "restore the directory from a backup", Err: info.Details})
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			reason := info.Reason
			s.stall.Store(&reason)
			s.log.Warn("wal: writes stalled", "reason", reason)
			if f := s.opts.events.WriteStall; f != nil {
				f(true, reason)
			}
		},
		WriteStallEnd: func() {
			s.stall.Store(nil)
			s.log.Info("wal: writes resumed")
			if f := s.opts.events.WriteStall; f != nil {
				f(false, "")
			}
		},
		LowDiskSpace: func(info pebble.LowDiskSpaceInfo) {
			s.log.Warn("wal: low disk space", "available", info.AvailBytes, "total", info.TotalBytes)
		},
	}
}

// pebbleLogger routes Pebble's log lines to slog and turns Fatalf, which
// Pebble calls on WAL write/sync errors instead of returning them from
// Commit, into the sticky failure rather than exiting the process.
type pebbleLogger struct{ s *Store }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.s.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.s.log.Warn("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	err := &pebbleFatal{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if e, ok := a.(error); ok {
			err.errs = append(err.errs, e)
		}
	}
	if isDiskFull(err) {
		l.s.fail(diskFullError(l.s.opts.Dir, "Pebble could not write (its log or MANIFEST)", err))
		return
	}
	l.s.fail(err)
}

// pebbleFatal is what Pebble reported through Fatalf. It unwraps to the
// errors among Fatalf's arguments, so errors.Is finds their causes (ENOSPC,
// EIO).
type pebbleFatal struct {
	msg  string
	errs []error
}

func (e *pebbleFatal) Error() string   { return "pebble fatal: " + e.msg }
func (e *pebbleFatal) Unwrap() []error { return e.errs }

// isDiskFull reports whether err is (or wraps) ENOSPC.
func isDiskFull(err error) bool { return errors.Is(err, syscall.ENOSPC) }

// diskFullError says that the disk is full, and what could not be written.
func diskFullError(dir, what string, err error) error {
	return fmt.Errorf("disk full (ENOSPC) on the disk holding %s: %s: %w", dir, what, err)
}

// openPebble opens Pebble in the background and waits for it, for ctx and
// for the store to fail. Pebble's Open cannot be cancelled: on a full disk it
// retries the flush of the recovered log forever. When ctx ends or the store
// fails first, Open returns the reason at once and the abandoned Pebble open
// is finished and closed in the background (release holds the directory
// until then; a later Open of the same directory waits for it).
func (s *Store) openPebble(ctx context.Context, po *pebble.Options, release func()) (*pebble.DB, error) {
	type opened struct {
		db  *pebble.DB
		err error
	}
	done := make(chan opened, 1)
	go func() {
		var o opened
		defer func() {
			if r := recover(); r != nil {
				o = opened{err: fmt.Errorf("pebble panicked: %v\n%s", r, debug.Stack())}
			}
			done <- o
		}()
		o.db, o.err = pebble.Open(s.opts.Dir, po)
	}()
	var cause error
	select {
	case o := <-done:
		if o.err == nil && s.Err() != nil {
			closePebble(o.db)
			return nil, s.failureCause()
		}
		return o.db, o.err
	case <-ctx.Done():
		cause = fmt.Errorf("gave up waiting for Pebble%s: %w", s.stalled(), ctx.Err())
		if err := s.Err(); err != nil {
			cause = fmt.Errorf("%w: %w", cause, s.failureCause())
		}
	case <-s.failedCh:
		cause = s.failureCause()
	}
	s.abandoned = true
	z := startZombie(s.opts.FS, s.opts.Dir, s.kick)
	go func() {
		defer z.finish()
		if o := <-done; o.db != nil {
			closePebble(o.db)
		}
		release()
	}()
	return nil, &abandonedError{cause}
}

// abandonedError is Open's error when it left Pebble's open to finish in the
// background.
type abandonedError struct{ cause error }

func (e *abandonedError) Error() string {
	return e.cause.Error() + " (Pebble keeps trying in the background and holds the directory until it can finish; a later Open waits for it)"
}

func (e *abandonedError) Unwrap() error { return e.cause }

// closePebble closes db, turning a panic into an error: after Pebble's
// Fatalf returned (it assumes Fatalf exits), its state may be past what
// Close expects.
func closePebble(db *pebble.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pebble panicked while closing: %v", r)
		}
	}()
	return db.Close()
}

// openError is an error of Open while doing what: a *DamageError as it is
// (it names the file and what to do), anything else wrapped with the
// directory and the step.
func openError(fs vfs.FS, dir, what string, err error) error {
	err = explainPebble(fs, dir, err)
	if _, ok := errors.AsType[*DamageError](err); ok {
		return err
	}
	return fmt.Errorf("wal: open %s: %s: %w", dir, what, err)
}

// explainPebble wraps an error Pebble returned from Open (or a read) of the
// store in dir on fs with what it means for the store and what to do.
// Errors it does not recognise come back unchanged.
func explainPebble(fs vfs.FS, dir string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	file := func(re *regexp.Regexp, suffix string) string {
		if m := re.FindStringSubmatch(msg); m != nil {
			return m[1] + suffix
		}
		return ""
	}
	// table names the data file the message is about, and what kind it is.
	// Pebble names a file by its number, which sstables and blob files
	// share, and often not its kind ("file 000006: block 0/1673: checksum
	// mismatch" may be either): the one of the two in the directory is it.
	table := func() (string, string) {
		for _, re := range reTable {
			m := re.FindStringSubmatch(msg)
			if m == nil {
				continue
			}
			if _, err := fs.Stat(fs.PathJoin(dir, m[1]+".blob")); err == nil || reBlob.MatchString(msg) {
				return m[1] + ".blob", "blob file"
			}
			return m[1] + ".sst", "sstable"
		}
		return "", "data file"
	}
	switch {
	case strings.Contains(msg, "disk full (ENOSPC)"):
		return err // said already
	case isDiskFull(err):
		return diskFullError(dir, "Pebble cannot write", err)
	case strings.Contains(msg, "unknown to the objstorage provider"):
		name, kind := table()
		return &DamageError{Dir: dir, File: name,
			Reason: "the MANIFEST lists this " + kind + " but the directory does not hold it: the file was deleted, or the MANIFEST is damaged",
			Advice: "restore the directory from a backup", Err: err}
	case strings.Contains(msg, "object size mismatch"):
		name, kind := table()
		return &DamageError{Dir: dir, File: name,
			Reason: "this " + kind + "'s size differs from the size the MANIFEST records: the file was truncated or replaced",
			Advice: "restore the directory from a backup", Err: err}
	case pebble.IsCorruptionError(err) && (strings.Contains(msg, ".sst") || strings.Contains(msg, ".blob")) || strings.Contains(msg, "checksum mismatch") ||
		strings.Contains(msg, "invalid table") || strings.Contains(msg, "bad magic number"):
		name, kind := table()
		return &DamageError{Dir: dir, File: name, Reason: "this " + kind + " is corrupt",
			Advice: "restore the directory from a backup", Err: err}
	case pebble.IsCorruptionError(err) && (strings.Contains(msg, "replaying WAL") || strings.Contains(msg, "corrupt log file")):
		return &DamageError{Dir: dir, File: file(reWAL, ".log"),
			Reason: "this write-ahead log is corrupt before its end: records that were synced (and acknowledged) after the damage cannot be read",
			Advice: "restore the directory from a backup", Err: err}
	case strings.Contains(msg, "manifest"):
		return &DamageError{Dir: dir, File: file(reManifest, ""),
			Reason: "the MANIFEST (the list of the store's files) is damaged or missing",
			Advice: "restore the directory from a backup", Err: err}
	case strings.Contains(msg, "key=value syntax") || strings.Contains(msg, "OPTIONS"):
		return &DamageError{Dir: dir, File: "OPTIONS-* (the newest)", Reason: "Pebble's OPTIONS file is damaged",
			Advice: "it holds settings only, no data: delete it and Open writes a new one", Err: err}
	case pebble.IsCorruptionError(err):
		return &DamageError{Dir: dir, Reason: "Pebble found corrupt data", Advice: "restore the directory from a backup", Err: err}
	}
	return err
}

var (
	reTable = []*regexp.Regexp{
		regexp.MustCompile(`(\d{6,})\.(?:sst|blob)`),
		regexp.MustCompile(`(?:file|table|backing file) (\d{6,})`),
		regexp.MustCompile(`(\d{6,}): object size mismatch`),
	}
	reBlob     = regexp.MustCompile(`\d{6,}\.blob|blob file|type blob`) // the file named is a blob file
	reWAL      = regexp.MustCompile(`wal (\d{6,})`)
	reManifest = regexp.MustCompile(`(MANIFEST-\d+)`)
)

// guardFS is the filesystem Pebble sees: opts.FS, except that once the store
// has failed, creating an sstable or blob file waits a growing pause first. Pebble retries
// a failed flush at once and forever (hundreds of times a second on a full
// disk); the pause keeps a failed store's background retries from burning a
// core until it is released. A later Open of the same directory kicks the
// pause short, so a disk that was freed is retried at once.
type guardFS struct {
	vfs.FS
	s *Store
}

func (g guardFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if g.s.Err() != nil && (strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob")) {
		g.s.backoff()
	}
	return g.FS.Create(name, category)
}

// backoff sleeps before a failed store's next background retry: 10 ms,
// doubling to one second, cut short by a kick.
func (s *Store) backoff() {
	s.backoffMu.Lock()
	d := s.backoffNext
	s.backoffNext = min(max(2*d, 10*time.Millisecond), time.Second)
	s.backoffMu.Unlock()
	if d == 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.kick:
	}
}

// zombies are Pebble instances abandoned by Open or by a failed store's
// Close, still working towards a state in which they can be closed (a
// flush on a full disk). Each holds its directory's lock until it is done;
// Open waits for the zombie of its directory first.
var zombies = struct {
	sync.Mutex
	m map[zombieKey]*zombie
}{m: map[zombieKey]*zombie{}}

type zombieKey struct {
	fs  vfs.FS // nil when the FS's type is not comparable
	dir string
}

type zombie struct {
	key  zombieKey
	done chan struct{}
	kick chan struct{} // the owning store's kick, to cut its backoff short
	once sync.Once
}

func keyOf(fs vfs.FS, dir string) zombieKey {
	k := zombieKey{dir: path.Clean(dir)}
	if isComparable(fs) {
		k.fs = fs
	}
	return k
}

func startZombie(fs vfs.FS, dir string, kick chan struct{}) *zombie {
	z := &zombie{key: keyOf(fs, dir), done: make(chan struct{}), kick: kick}
	zombies.Lock()
	zombies.m[z.key] = z
	zombies.Unlock()
	return z
}

func (z *zombie) finish() {
	zombies.Lock()
	if zombies.m[z.key] == z {
		delete(zombies.m, z.key)
	}
	zombies.Unlock()
	close(z.done)
}

// waitZombie waits, within ctx, for an abandoned Pebble of the same
// directory to finish and release it.
func waitZombie(ctx context.Context, fs vfs.FS, dir string) error {
	zombies.Lock()
	z := zombies.m[keyOf(fs, dir)]
	zombies.Unlock()
	if z == nil {
		return nil
	}
	z.once.Do(func() { close(z.kick) })
	select {
	case <-z.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wal: open %s: an earlier Open or Close of this store in this process left Pebble finishing in the background (disk full?), and it still holds the directory: %w", dir, ctx.Err())
	}
}

// isComparable reports whether fs can be a map key (every vfs.FS in Pebble
// is a pointer or an empty struct; a wrapper need not be).
func isComparable(fs vfs.FS) bool { return fs != nil && reflect.TypeOf(fs).Comparable() }
