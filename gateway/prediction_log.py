"""The prediction log: one NDJSON record per prediction, feedback and shadow answer.

The request path only builds a small dict and appends it to a buffer
(`PredictionLog.submit`); a background thread wakes every 100 ms, serialises and appends
what has gathered. No lock, no wake-up per record: handing each record to the thread
cost a third of the gateway's throughput (measured with `make bench-gateway`). The buffer
is bounded: when it is full the record is dropped and counted
(`gateway_prediction_log_dropped_total{reason="queue_full"}`), never waited for.

Files: `<dir>/predictions-<replica>-<YYYYMMDDTHH>-<seq>.ndjson`, one set per replica, so
any number of replicas can share one volume. A new file starts every UTC hour and when
the current one reaches `GATEWAY_LOG_FILE_MAX_BYTES`. Retention, enforced by the writer:
files older than `GATEWAY_LOG_MAX_AGE` go, then the oldest until the directory holds at
most `GATEWAY_LOG_MAX_BYTES` (another replica's file still being written is left alone).

Safety: each record is one line written with one `write` on an O_APPEND descriptor, so a
crash tears at most the last line; a short or failed write is truncated away, logged and
counted (`reason="write_error"`, e.g. disk full), and never reaches a client.
The schema is in docs/PREDICTION_LOG.md.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.metrics import GatewayMetrics

logger = logging.getLogger("gateway")

SCHEMA_VERSION = 1
FILE_PREFIX = "predictions-"
FILE_SUFFIX = ".ndjson"
FILE_PATTERN = re.compile(
    r"^predictions-(?P<replica>.+)-(?P<hour>\d{8}T\d{2})-(?P<seq>\d{4,})\.ndjson$"
)
# How often the writer wakes to write what has gathered.
FLUSH_INTERVAL_SECONDS = 0.1
# How often the writer enforces retention even without a rotation.
RETENTION_INTERVAL_SECONDS = 60.0
# A file another replica wrote to this recently may still be open: retention spares it.
ACTIVE_FILE_SECONDS = 120.0
# One warning per this many seconds for a failing disk, not one per record.
WARN_INTERVAL_SECONDS = 30.0
_STOP = object()


def default_replica() -> str:
    """<host name>-<pid>: the pod name in Kubernetes, and unique per process on a host."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def encode_record(record: dict[str, Any]) -> bytes:
    """One NDJSON line: the record with its schema version, then a newline."""
    return orjson.dumps({"schema": SCHEMA_VERSION, **record}) + b"\n"


class LogFiles:
    """The files of one replica: opening, rotation, appending, retention. One thread only."""

    def __init__(
        self,
        directory: Path,
        replica: str,
        file_max_bytes: int,
        max_bytes: int,
        max_age_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.replica = replica
        self.file_max_bytes = file_max_bytes
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._fd: int | None = None
        self._path: Path | None = None
        self._hour = ""
        self._size = 0
        self._seq = 0

    @property
    def path(self) -> Path | None:
        """The file being written, if one is open."""
        return self._path

    def _hour_of(self, now: float) -> str:
        return datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H")

    def _next_seq(self, hour: str) -> int:
        """One past the highest sequence this replica used in `hour` (restarts continue)."""
        highest = -1
        prefix = f"{FILE_PREFIX}{self.replica}-{hour}-"
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if entry.name.startswith(prefix):
                    match = FILE_PATTERN.match(entry.name)
                    if match and match["replica"] == self.replica:
                        highest = max(highest, int(match["seq"]))
        return highest + 1

    def _open(self, hour: str) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        seq = self._next_seq(hour) if hour != self._hour else self._seq + 1
        path = self.directory / f"{FILE_PREFIX}{self.replica}-{hour}-{seq:04d}{FILE_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._path, self._hour, self._seq = path, hour, seq
        self._size = os.fstat(self._fd).st_size
        self.enforce_retention()

    def append(self, line: bytes) -> None:
        """Append one whole line with one write; on failure leave no partial line behind."""
        hour = self._hour_of(self._clock())
        if self._fd is None or hour != self._hour or self._size + len(line) > self.file_max_bytes:
            self._open(hour)
        assert self._fd is not None
        before = self._size
        try:
            written = os.write(self._fd, line)
        except OSError:
            self._truncate(before)
            raise
        if written != len(line):  # a short write: the disk filled up mid-line
            self._truncate(before)
            raise OSError(errno.ENOSPC, "short write: the line was truncated away")
        self._size = before + written

    def _truncate(self, size: int) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)

    def enforce_retention(self) -> None:
        """Delete files past the age limit, then the oldest until under the size limit."""
        now = self._clock()
        files = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if not FILE_PATTERN.match(entry.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    files.append((stat.st_mtime, entry.name, stat.st_size))
        files.sort()
        total = sum(size for _, _, size in files)
        current = self._path.name if self._path else None
        for mtime, name, size in files:
            too_old = now - mtime > self.max_age_seconds
            if not too_old and total <= self.max_bytes:
                break
            ours = name.startswith(f"{FILE_PREFIX}{self.replica}-")
            if name == current or (not ours and not too_old and now - mtime < ACTIVE_FILE_SECONDS):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
            total -= size

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class PredictionLog:
    """A bounded buffer and the thread that drains it into `LogFiles`."""

    def __init__(self, files: LogFiles, queue_size: int, metrics: GatewayMetrics) -> None:
        self.files = files
        self.metrics = metrics
        self.queue_size = queue_size
        # deque.append and popleft are atomic: the request path takes no lock.
        self._pending: deque[Any] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped_full = metrics.log_dropped.labels("queue_full")
        self._write_errors = metrics.log_dropped.labels("write_error")
        self._written = {
            kind: metrics.log_records.labels(kind) for kind in ("prediction", "feedback", "shadow")
        }
        self._last_warning = 0.0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        """Buffer one record; drop and count it if the buffer is full. Never blocks."""
        if len(self._pending) >= self.queue_size:
            self._dropped_full.inc()
            return
        self._pending.append(record)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record submitted so far is written (tests, shutdown)."""
        done = threading.Event()
        self._pending.append(done)
        self._wake.set()
        return done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is buffered (within `timeout`), then stop the thread."""
        if self._thread is None:
            return
        self._pending.append(_STOP)
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        self.files.close()

    def _run(self) -> None:
        next_retention = time.monotonic() + RETENTION_INTERVAL_SECONDS
        while True:
            self._wake.wait(FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            while self._pending:
                item = self._pending.popleft()
                if item is _STOP:
                    return
                if isinstance(item, threading.Event):
                    item.set()
                else:
                    self._write(item)
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + RETENTION_INTERVAL_SECONDS
                self._guard(self.files.enforce_retention)

    def _write(self, record: dict[str, Any]) -> None:
        line = encode_record(record)
        if self._guard(lambda: self.files.append(line)):
            counter = self._written.get(record.get("type", ""))
            if counter is not None:
                counter.inc()
        else:
            self._write_errors.inc()

    def _guard(self, work: Callable[[], None]) -> bool:
        """Run file work; an OSError (disk full, read-only volume) is logged, not raised."""
        try:
            work()
            return True
        except OSError as error:
            now = time.monotonic()
            if now - self._last_warning > WARN_INTERVAL_SECONDS:
                self._last_warning = now
                logger.warning(
                    "prediction log: cannot write under %s: %s", self.files.directory, error
                )
            return False


def create_prediction_log(settings: Any, metrics: GatewayMetrics) -> PredictionLog:
    """The log the settings describe (not started)."""
    files = LogFiles(
        Path(settings.log_dir),
        settings.log_replica or default_replica(),
        settings.log_file_max_bytes,
        settings.log_max_bytes,
        settings.log_max_age.total_seconds(),
    )
    return PredictionLog(files, settings.log_queue_size, metrics)
