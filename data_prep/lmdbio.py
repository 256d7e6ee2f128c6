"""The LMDB writer of the data stage: append-only records under increasing keys, committed in
chunks, a full disk an OSError naming the folder (never a SIGBUS)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

MAP_SIZE = 1 << 40  # virtual only: LMDB files grow with the data, like Caffe's own
# LMDB grows lock.mdb with ftruncate and then writes it through mmap: on a full disk touching that
# sparse page is a SIGBUS that kills the process. Writing the file's 8192 bytes (its size for the
# default 126 readers) ourselves first makes a full disk an ENOSPC instead. The data file is written
# with pwrite (never open it with writemap=True: every data page would be such a page).
LOCK_FILE_BYTES = 8192
# Commit (and fsync) every 16 MB: the disk writes overlap with the workers' decoding instead of
# piling up at the end, and a transaction stays far below LMDB's dirty-page limit.
COMMIT_BYTES = 16 << 20


@contextmanager
def _as_oserror(path: Path) -> Iterator[None]:
    """lmdb.Error -> OSError naming the LMDB folder, so fsutil.atomic_dir can say what failed and why
    (a full disk shows up as 'mdb_txn_commit: Input/output error')."""
    import lmdb

    try:
        yield
    except lmdb.Error as e:
        raise OSError(errno.EIO, f"LMDB: {e}", str(path)) from e


class LmdbWriter:
    """Appends records under increasing keys, committing every COMMIT_BYTES."""

    def __init__(self, path: Path) -> None:
        import lmdb

        self.path = Path(path)
        self.path.mkdir(exist_ok=True)  # an image-only build writes into the temp folder itself
        (self.path / "lock.mdb").write_bytes(bytes(LOCK_FILE_BYTES))
        with _as_oserror(self.path):
            self.env = lmdb.open(str(path), map_size=MAP_SIZE, subdir=True, meminit=False, lock=True)
            self.txn = self.env.begin(write=True)
        self.pending = 0

    def put(self, key: bytes, value: bytes) -> None:
        with _as_oserror(self.path):
            self.txn.put(key, value, append=True)
            self.pending += len(value)
            if self.pending >= COMMIT_BYTES:
                self.txn.commit()
                self.txn, self.pending = self.env.begin(write=True), 0

    def close(self) -> None:
        """Commit what is pending and close."""
        with _as_oserror(self.path):
            self.txn.commit()
            self.env.close()

    def abort(self) -> None:
        """Drop what is pending and close (after an error; never raises)."""
        with suppress(Exception):
            self.txn.abort()
        with suppress(Exception):
            self.env.close()
