"""``FileStore``: a ``Store`` in one file shared by the processes of one host (torch's FileStore).

The file is an append-only log: an 8-byte header, then records
``kind (1 byte) | key length (u32) | key | value length (u32) | value``, big-endian,
with kinds ``S`` (set), ``A`` (append) and ``D`` (delete). Every operation takes
``fcntl.flock`` on the file (shared to read, exclusive to write), reads the records
added since its last look, and for a write appends its own. Nothing in the file is
ever evaluated, so a file that someone else can write cannot run code here.

Blocking ``get``, ``wait`` and ``wait_for_change`` re-read the file every 10 to 50 ms:
a file offers no notification that works across processes and file systems.
The log is never compacted; a store meant for rendezvous bootstrap data stays small.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

from rdzv._reaper import track
from rdzv.store.base import (
    DEFAULT_STORE_TIMEOUT,
    Store,
    StoreClosedError,
    StoreError,
    StoreTimeoutError,
    check_key,
    key_value_pairs,
    to_bytes,
)

__all__ = ["FileStore"]

_HEADER = b"RDZVFS\x00\x01"
_LEN = struct.Struct(">I")
_SET, _APPEND, _DELETE = b"S", b"A", b"D"
_KINDS = frozenset((_SET[0], _APPEND[0], _DELETE[0]))
# User keys and the store's own counters live in separate namespaces of the file.
_USER = b"/"
_REFCOUNT = b"#refcount"
_CLEANUP = b"#cleanup"
_POLL_MIN, _POLL_MAX = 0.01, 0.05


def _record(kind: bytes, key: bytes, value: bytes = b"") -> bytes:
    return b"".join((kind, _LEN.pack(len(key)), key, _LEN.pack(len(value)), value))


class _Log:
    """The open file, the records read so far, and the locks; shared with the finalizer."""

    def __init__(self, path: str, lock_timeout: float) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.owner_pid = self._fd_pid = os.getpid()
        self.data: dict[bytes, bytes] = {}
        self._offset = 0
        # flock excludes other open files, not threads sharing this descriptor.
        self._mutex = threading.Lock()

    @contextlib.contextmanager
    def locked(self, exclusive: bool) -> Iterator[dict[bytes, bytes]]:
        """Lock the file, bring ``data`` up to date and yield it.

        Raises:
            StoreClosedError: the store was closed.
            StoreError: the file is not a file store, or is corrupt.
        """
        deadline = time.monotonic() + self.lock_timeout
        self._acquire_mutex()
        try:
            if self.fd < 0:
                raise StoreClosedError("This FileStore was closed; create a new one.")
            if os.getpid() != self._fd_pid:
                # A forked child shares the parent's open file, and with it the parent's
                # flock: open its own so that the two exclude each other.
                os.close(self.fd)
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._fd_pid = os.getpid()
            self._flock(fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline)
            try:
                self._refresh(exclusive)
                yield self.data
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()

    def _flock(self, mode: int, deadline: float) -> None:
        """Lock the file, polling: a blocking ``flock`` would wait for ever on a stopped peer."""
        delay = _POLL_MIN / 10
        while True:
            try:
                fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._locked_too_long("another process") from None
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, _POLL_MAX)

    def _locked_too_long(self, holder: str) -> StoreTimeoutError:
        return StoreTimeoutError(
            f"The file store at {self.path} stayed locked by {holder} for "
            f"{self.lock_timeout:g} s (the store timeout). A process that holds it may be "
            "stopped or hung; find it with `fuser` and end it, or raise the timeout."
        )

    def write(self, *records: tuple[bytes, bytes, bytes]) -> None:
        """Append records and apply them to ``data``; call only inside ``locked(True)``."""
        blob = b"".join(_record(*r) for r in records)
        view = memoryview(blob)
        position = self._offset
        while view:
            written = os.pwrite(self.fd, view, position)
            view = view[written:]
            position += written
        for record in records:
            self._apply(*record)
        self._offset = position

    def _apply(self, kind: bytes, key: bytes, value: bytes) -> None:
        if kind == _SET:
            self.data[key] = value
        elif kind == _APPEND:
            self.data[key] = self.data.get(key, b"") + value
        else:
            self.data.pop(key, None)

    def _corrupt(self, what: str) -> StoreError:
        return StoreError(
            f"The file store at {self.path} {what}. Use a new file for each job; delete "
            "this one if no job uses it."
        )

    def _refresh(self, exclusive: bool) -> None:
        size = os.fstat(self.fd).st_size
        if size < self._offset:
            # Someone truncated the file: start over rather than read from a wrong offset.
            self.data.clear()
            self._offset = 0
        if self._offset == 0:
            if size == 0:
                if exclusive:
                    os.pwrite(self.fd, _HEADER, 0)
                    self._offset = len(_HEADER)
                return
            if size < len(_HEADER):
                if exclusive:
                    os.ftruncate(self.fd, 0)
                    os.pwrite(self.fd, _HEADER, 0)
                    self._offset = len(_HEADER)
                return
            if os.pread(self.fd, len(_HEADER), 0) != _HEADER:
                raise self._corrupt("is not an rdzv file store (unknown header)")
            self._offset = len(_HEADER)
        if size == self._offset:
            return
        chunk = os.pread(self.fd, size - self._offset, self._offset)
        consumed = self._parse(chunk)
        self._offset += consumed
        if consumed < len(chunk) and exclusive:
            # A writer died in the middle of a record; drop the torn tail before appending.
            os.ftruncate(self.fd, self._offset)

    def _parse(self, chunk: bytes) -> int:
        pos, end = 0, len(chunk)
        while pos < end:
            if chunk[pos] not in _KINDS:
                raise self._corrupt(f"is corrupt (unknown record at byte {self._offset + pos})")
            if pos + 5 > end:
                break
            (key_len,) = _LEN.unpack_from(chunk, pos + 1)
            key_end = pos + 5 + key_len
            if key_end + 4 > end:
                break
            (value_len,) = _LEN.unpack_from(chunk, key_end)
            value_end = key_end + 4 + value_len
            if value_end > end:
                break
            self._apply(
                chunk[pos : pos + 1], chunk[pos + 5 : key_end], chunk[key_end + 4 : value_end]
            )
            pos = value_end
        return pos

    def close(self) -> None:
        self._acquire_mutex()
        try:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
        finally:
            self._mutex.release()

    def _acquire_mutex(self) -> None:
        if not self._mutex.acquire(timeout=min(self.lock_timeout, threading.TIMEOUT_MAX)):
            raise self._locked_too_long("another thread of this process")


def _add(log: _Log, key: bytes, amount: int) -> int:
    """Add to an integer key; call inside ``locked(True)``."""
    current = log.data.get(key, b"0")
    try:
        total = int(current) + amount
    except ValueError:
        shown = key[1:].decode("utf-8", "replace")
        raise ValueError(
            f"add() needs an integer at key {shown!r}, but it holds {current[:32]!r}."
        ) from None
    log.write((_SET, key, str(total).encode()))
    return total


def _release(log: _Log, world_size: int) -> None:
    """Count this instance out; the last one of a full world removes the file (as torch).

    A forked copy only closes its descriptor: the parent counted the instance in.
    """
    if os.getpid() != log.owner_pid:
        log.close()
        return
    remove = False
    try:
        with log.locked(exclusive=True):
            finished = _add(log, _CLEANUP, 1)
            refcount = _add(log, _REFCOUNT, -1)
            remove = refcount == 0 and world_size >= 0 and finished >= world_size
    except (OSError, StoreError):
        pass
    log.close()
    if remove:
        with contextlib.suppress(OSError):
            os.unlink(log.path)


class FileStore(Store):
    """A store kept in ``file_name``, shared by every process of this host that opens it.

    Arguments follow torch's ``FileStore``: when ``world_size`` is not negative, the
    last of ``world_size`` instances to close removes the file. Keys are strings,
    values bytes; every operation is atomic across processes (``flock``) and threads.

    Raises:
        OSError: the file cannot be opened or created.
        StoreError: the file exists and is not a file store.
    """

    def __init__(
        self,
        file_name: str | os.PathLike[str],
        world_size: int = -1,
        timeout: timedelta = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        super().__init__(timeout)
        self._path = os.fspath(file_name)
        self._world_size = world_size
        log = _Log(self._path, self.timeout.total_seconds())
        self._log = log
        try:
            with log.locked(exclusive=True):
                _add(log, _REFCOUNT, 1)
        except BaseException:
            log.close()
            raise
        self._release = track(self, functools.partial(_release, log, world_size), "FileStore")

    def set_timeout(self, timeout: timedelta) -> None:
        super().set_timeout(timeout)
        self._log.lock_timeout = timeout.total_seconds()

    @property
    def path(self) -> str:
        """The file that holds the store."""
        return self._path

    def _poll(self, ready: Callable[[dict[bytes, bytes]], bool], seconds: float) -> bool:
        """Re-read the file until ``ready(data)`` or ``seconds`` pass; return whether ready."""
        deadline = time.monotonic() + max(seconds, 0.0)
        delay = _POLL_MIN
        while True:
            with self._log.locked(exclusive=False) as data:
                if ready(data):
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    def set(self, key: str, value: str | bytes) -> None:
        data = to_bytes(value)
        with self._log.locked(exclusive=True):
            self._log.write((_SET, _user(key), data))

    def get(self, key: str) -> bytes:
        """Return the value of ``key``, re-reading the file until it appears.

        Raises:
            StoreTimeoutError: the key did not appear within the store's timeout.
        """
        return self.multi_get([key])[0]

    def get_if_exists(self, key: str) -> bytes | None:
        with self._log.locked(exclusive=False) as data:
            return data.get(_user(key))

    def add(self, key: str, amount: int) -> int:
        """Atomically add ``amount`` to the integer at ``key`` (0 if absent); return the sum.

        Raises:
            ValueError: the key holds something that is not an integer.
        """
        with self._log.locked(exclusive=True):
            return _add(self._log, _user(key), int(amount))

    def compare_set(
        self, key: str, expected_value: str | bytes, desired_value: str | bytes
    ) -> bytes:
        expected, desired = to_bytes(expected_value), to_bytes(desired_value)
        name = _user(key)
        with self._log.locked(exclusive=True) as data:
            current = data.get(name)
            if current is None:
                if expected:
                    return expected
            elif current != expected:
                return current
            self._log.write((_SET, name, desired))
            return desired

    def wait(self, keys: Sequence[str], timeout: timedelta | None = None) -> None:
        """Block until every key exists, re-reading the file every 10 to 50 ms.

        Raises:
            StoreTimeoutError: some key did not appear within ``timeout``.
        """
        self._wait_all(keys, self.timeout if timeout is None else timeout)

    def _wait_all(self, keys: Sequence[str], timeout: timedelta) -> list[bytes]:
        names = [_user(k) for k in keys]
        values: list[bytes] = []

        def ready(data: dict[bytes, bytes]) -> bool:
            if not all(n in data for n in names):
                return False
            values.extend(data[n] for n in names)
            return True

        limit = timeout.total_seconds()
        if self._poll(ready, limit):
            return values
        with self._log.locked(exclusive=False) as data:
            missing = [k for k, n in zip(keys, names, strict=True) if n not in data]
            if not missing:
                return [data[n] for n in names]
        raise StoreTimeoutError(
            f"Timed out after {limit:g} s waiting for keys {missing!r} in the file store at "
            f"{self._path}; no process set them. Check that the process expected to write "
            "them is running and uses the same file."
        )

    def check(self, keys: Sequence[str]) -> bool:
        names = [_user(k) for k in keys]
        with self._log.locked(exclusive=False) as data:
            return all(n in data for n in names)

    def delete_key(self, key: str) -> bool:
        name = _user(key)
        with self._log.locked(exclusive=True) as data:
            if name not in data:
                return False
            self._log.write((_DELETE, name, b""))
            return True

    def num_keys(self) -> int:
        with self._log.locked(exclusive=False) as data:
            return sum(1 for name in data if name[:1] == _USER)

    def multi_get(self, keys: Sequence[str], timeout: timedelta | None = None) -> list[bytes]:
        """Return the values of ``keys``, waiting until all exist.

        Raises:
            StoreTimeoutError: some key did not appear within ``timeout`` (default: the
                store's timeout).
        """
        return self._wait_all(keys, self.timeout if timeout is None else timeout)

    def multi_set(self, keys: Sequence[str], values: Sequence[str | bytes]) -> None:
        """Set every key to its value in one atomic write.

        Raises:
            ValueError: the counts differ.
        """
        records = [(_SET, _user(k), v) for k, v in key_value_pairs(keys, values)]
        with self._log.locked(exclusive=True):
            self._log.write(*records)

    def append(self, key: str, value: str | bytes) -> None:
        data = to_bytes(value)
        with self._log.locked(exclusive=True):
            self._log.write((_APPEND, _user(key), data))

    def wait_for_change(self, key: str, current: bytes | None, timeout: float) -> None:
        name = _user(key)
        self._poll(lambda data: data.get(name) != current, timeout)

    def close(self) -> None:
        """Count this instance out (see the class) and close the file. Idempotent."""
        self._release()

    def __enter__(self) -> FileStore:
        return self

    def __repr__(self) -> str:
        return f"FileStore({self._path!r}, world_size={self._world_size})"


def _user(key: str) -> bytes:
    return _USER + check_key(key).encode("utf-8")
