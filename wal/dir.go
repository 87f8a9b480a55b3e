package wal

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Before Pebble opens a directory, Open reads its listing and decides what the
// directory is. Pebble's own Open is not safe on a damaged store: without a
// marker.manifest.* file it creates a fresh database in the directory, writes
// a new MANIFEST over the old one and deletes every .sst it no longer knows.
// So Open refuses, before anything is written, any directory that holds
// Pebble's files but not a complete store, and any non-empty directory that
// holds no store at all (files of neither Pebble nor Hourglass; a
// filesystem's lost+found does not count).

// fileKind classifies a directory entry by name.
type fileKind uint8

const (
	fileForeign    fileKind = iota // neither Pebble's nor ours
	fileLock                       // LOCK: Pebble's lock file, empty; recreated by Open
	fileManifest                   // MANIFEST-n: the list of the store's files
	fileOptions                    // OPTIONS-n: Pebble's settings, no data
	fileLog                        // n.log: a write-ahead log
	fileTable                      // n.sst: an sstable
	fileBlob                       // n.blob: a value-separation blob file (unused here)
	fileTemp                       // *.dbtmp: a half-written OPTIONS or marker file
	fileMarker                     // marker.<name>.<iter>.<value>: Pebble's atomic pointers
	fileCurrent                    // CURRENT: a pre-marker (RocksDB-era) store
	fileClosed                     // HOURGLASS-CLOSED: our clean-close record
	fileClosedTemp                 // HOURGLASS-CLOSED.tmp: a clean-close record being written
)

// cleanCloseFile is the name of the clean-close record (see clean.go).
const cleanCloseFile = "HOURGLASS-CLOSED"

// classify returns the kind of a directory entry and, for numbered files, the
// number.
func classify(name string) (fileKind, uint64) {
	num := func(s string) (uint64, bool) {
		if s == "" || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseUint(s, 10, 64)
		return n, err == nil
	}
	switch {
	case name == "LOCK":
		return fileLock, 0
	case name == "CURRENT":
		return fileCurrent, 0
	case name == cleanCloseFile:
		return fileClosed, 0
	case name == cleanCloseFile+".tmp":
		return fileClosedTemp, 0
	case strings.HasPrefix(name, "MANIFEST-"):
		if n, ok := num(name[len("MANIFEST-"):]); ok {
			return fileManifest, n
		}
	case strings.HasPrefix(name, "OPTIONS-"):
		if n, ok := num(name[len("OPTIONS-"):]); ok {
			return fileOptions, n
		}
	case strings.HasPrefix(name, "marker."):
		if _, _, _, ok := parseMarker(name); ok {
			return fileMarker, 0
		}
	case strings.HasSuffix(name, ".dbtmp"):
		return fileTemp, 0
	default:
		base, ext, ok := strings.Cut(name, ".")
		if !ok {
			break
		}
		// Failover WALs are named n-m.log; this store never writes them.
		n, ok := num(base)
		if !ok {
			break
		}
		switch ext {
		case "log":
			return fileLog, n
		case "sst":
			return fileTable, n
		case "blob":
			return fileBlob, n
		}
	}
	return fileForeign, 0
}

// parseMarker splits marker.<name>.<iter>.<value>.
func parseMarker(file string) (name string, iter uint64, value string, ok bool) {
	rest, found := strings.CutPrefix(file, "marker.")
	if !found {
		return "", 0, "", false
	}
	name, rest, found = strings.Cut(rest, ".")
	if !found || name == "" {
		return "", 0, "", false
	}
	it, value, found := strings.Cut(rest, ".")
	if !found {
		return "", 0, "", false
	}
	iter, err := strconv.ParseUint(it, 10, 64)
	if err != nil {
		return "", 0, "", false
	}
	return name, iter, value, true
}

// dirState is what a directory holds, read from its listing before Pebble
// touches it.
type dirState struct {
	dir     string
	exists  bool
	names   []string
	sizes   map[string]int64
	foreign []string // entries that are neither Pebble's nor ours (including subdirectories)
	pebble  []string // Pebble's files other than LOCK
	lock    bool     // LOCK is present
	closed  bool     // the clean-close record is present
	// The current marker values (empty when there is no marker).
	manifest string // MANIFEST file the manifest marker names
	format   string // format major version the format marker names
}

// readDir lists dir. A missing directory is a valid, empty state.
func readDir(fs vfs.FS, dir string) (*dirState, error) {
	st := &dirState{dir: dir, sizes: map[string]int64{}}
	names, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: list directory: %w", dir, err)
	}
	st.exists = true
	slices.Sort(names)
	st.names = names
	markerIter := map[string]uint64{}
	for _, n := range names {
		info, err := fs.Stat(fs.PathJoin(dir, n))
		if err != nil {
			return nil, fmt.Errorf("wal: open %s: stat %s: %w", dir, n, err)
		}
		kind, _ := classify(n)
		if info.IsDir() {
			if n == "lost+found" {
				continue // the root of a filesystem: not a file of anyone's store
			}
			kind = fileForeign
		}
		st.sizes[n] = info.Size()
		switch kind {
		case fileForeign:
			st.foreign = append(st.foreign, n)
		case fileLock:
			st.lock = true
		case fileClosed:
			st.closed = true
		case fileClosedTemp:
			// A clean-close record that was never completed: the close did not
			// finish, so it says nothing.
		case fileMarker:
			st.pebble = append(st.pebble, n)
			name, iter, value, _ := parseMarker(n)
			if prev, ok := markerIter[name]; ok && prev > iter {
				continue
			}
			markerIter[name] = iter
			switch name {
			case "manifest":
				st.manifest = value
			case "format-version":
				st.format = value
			}
		default:
			st.pebble = append(st.pebble, n)
		}
	}
	return st, nil
}

// kinds returns the names of the entries of the given kinds.
func (st *dirState) kinds(kinds ...fileKind) []string {
	var out []string
	for _, n := range st.names {
		if k, _ := classify(n); slices.Contains(kinds, k) {
			out = append(out, n)
		}
	}
	return out
}

// openPlan is what Open does with a directory.
type openPlan uint8

const (
	planCreate   openPlan = iota // empty: create a new store
	planFinish                   // a creation that crashed before any data: let Pebble finish it
	planExisting                 // a complete Pebble store: validate read-only, then open
)

// plan decides what Open may do with the directory, or refuses it with an
// error that says what is wrong and what to do. It reads nothing but the
// listing and writes nothing.
func (st *dirState) plan() (openPlan, error) {
	if len(st.pebble) == 0 && !st.closed {
		if len(st.foreign) > 0 {
			return 0, &DamageError{Dir: st.dir, Reason: fmt.Sprintf("the directory is not empty but holds no store (%s)", listNames(st.foreign)),
				Advice: "give Options.Dir an empty or new directory", kind: ErrInvalid}
		}
		return planCreate, nil
	}
	if cur := st.kinds(fileCurrent); len(cur) > 0 {
		return 0, &DamageError{Dir: st.dir, File: "CURRENT", Reason: "the directory holds a store in a format older than Pebble's atomic markers, not one this build wrote",
			Advice: "open it with the tool that wrote it", kind: ErrUnsupportedVersion}
	}
	if st.format == "" {
		// Pebble writes the format marker before its Open returns, so before
		// Hourglass writes anything. Without it, either creation crashed
		// half-way (and nothing was ever stored) or the marker was lost.
		if st.pristine() {
			return planFinish, nil
		}
		return 0, &DamageError{Dir: st.dir, File: "marker.format-version.*", Reason: "the format-version marker is missing but the store holds data",
			Advice: fmt.Sprintf("restore the directory from a backup, or recreate the empty marker file marker.format-version.000001.%03d", uint64(PebbleFormat))}
	}
	// Pebble ratchets a format one version at a time: a crash part-way
	// through upgrading an olderPebbleFormat store leaves a marker between
	// the two, and Open finishes the upgrade.
	if v, err := strconv.ParseUint(st.format, 10, 64); err != nil || v < uint64(olderPebbleFormat) || v > uint64(PebbleFormat) {
		// Creating a store, Pebble ratchets its format the same way; a
		// crash part-way leaves an older marker and no data.
		if err == nil && v < uint64(PebbleFormat) && st.pristine() {
			return planFinish, nil
		}
		return 0, fmt.Errorf("%w: store %s has Pebble format %q (marker.format-version); this build opens %d to %d and upgrades them to %d", ErrUnsupportedVersion, st.dir, st.format, uint64(olderPebbleFormat), uint64(PebbleFormat), uint64(PebbleFormat))
	}
	if st.manifest == "" {
		manifests := st.kinds(fileManifest)
		advice := "restore the directory from a backup"
		if len(manifests) > 0 {
			newest := manifests[len(manifests)-1]
			advice = fmt.Sprintf("restore the directory from a backup, or recreate the marker as an empty file named marker.manifest.000001.%s (the newest MANIFEST)", newest)
		}
		return 0, &DamageError{Dir: st.dir, File: "marker.manifest.*", Reason: "no marker.manifest.* file names the current MANIFEST; Pebble would create an empty store over this one and delete its data files",
			Advice: advice}
	}
	if _, ok := st.sizes[st.manifest]; !ok {
		return 0, &DamageError{Dir: st.dir, File: st.manifest, Reason: "the MANIFEST named by the manifest marker is missing",
			Advice: "restore the directory from a backup"}
	}
	return planExisting, nil
}

// pristine reports whether the directory holds only what a crashed creation
// leaves: no sstable, no blob, no write-ahead log with any bytes and no
// clean-close record.
func (st *dirState) pristine() bool {
	if st.closed {
		return false
	}
	for _, n := range st.pebble {
		switch k, _ := classify(n); k {
		case fileTable, fileBlob:
			return false
		case fileLog:
			if st.sizes[n] > 0 {
				return false
			}
		}
	}
	return true
}

func listNames(names []string) string {
	const show = 5
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}
