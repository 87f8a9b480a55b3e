package wal

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable/blob"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// checkBlobFiles checks every blob file that db (opened read-only, nothing
// read yet) refers to: the directory holds it, at the size the MANIFEST
// records, and Pebble's own blob reader accepts its footer (checksum,
// format, magic string).
//
// Pebble (v2.1.7) checks neither at Open, as it does for sstables, and when
// a read then meets a missing blob file or a damaged footer it panics
// instead of returning an error: its corruption report expects the file's
// metadata and is handed none. So the store checks before Pebble can read a
// blob file, and such damage refuses Open (and is reported by Check) like
// any other. Damage past the footer lies in checksummed blocks, which
// Pebble reports as errors.
func checkBlobFiles(ctx context.Context, fs vfs.FS, dir string, db *pebble.DB) error {
	for m := range db.DebugCurrentVersion().BlobFiles.All() {
		name := fmt.Sprintf("%06d.blob", uint64(m.Physical.FileNum))
		damaged := func(reason string, err error) error {
			return &DamageError{Dir: dir, File: name, Reason: reason, Advice: "restore the directory from a backup", Err: err}
		}
		path := fs.PathJoin(dir, name)
		fi, err := fs.Stat(path)
		if err != nil {
			return damaged("the MANIFEST lists this blob file but the directory does not hold it: the file was deleted, or the MANIFEST is damaged", err)
		}
		if fi.Size() != int64(m.Physical.Size) {
			return damaged(fmt.Sprintf("this blob file is %d bytes, and the MANIFEST records %d: the file was truncated or replaced", fi.Size(), m.Physical.Size), nil)
		}
		if err := checkBlobFooter(ctx, fs, path); err != nil {
			return damaged("this blob file is corrupt", err)
		}
	}
	return nil
}

// checkBlobFooter opens the blob file at path with Pebble's blob reader,
// which reads and checks the footer, and closes it again.
func checkBlobFooter(ctx context.Context, fs vfs.FS, path string) error {
	f, err := fs.Open(path)
	if err != nil {
		return err
	}
	r, err := objstorageprovider.NewFileReadable(f, fs, objstorageprovider.NewReadaheadConfig(), path)
	if err != nil {
		_ = f.Close()
		return err
	}
	br, err := blob.NewFileReader(ctx, r, blob.FileReaderOptions{})
	if err != nil {
		_ = r.Close() // a reader that failed leaves r open
		return err
	}
	return br.Close() // closes r
}
