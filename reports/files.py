"""Report files in their storage: server-made names, written to a temporary
name and moved into place, so a download never sees half a file and a
re-run replaces the file instead of adding a second one."""

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage

from reports.models import ReportRun, report_storage

ROOT = "reports"
PARTIAL_SUFFIX = ".part"


def report_file_name(run: ReportRun) -> str:
    """reports/<year>/<month>/<run id>.<format>: from the run alone, so every
    run of it writes the same name, and nothing a client sent is in it."""
    return f"{ROOT}/{run.created_at:%Y/%m}/{run.id.hex}.{run.format}"


def _local(storage) -> bool:
    return isinstance(storage, FileSystemStorage)


@contextmanager
def staged(name: str) -> Iterator[Path]:
    """A temporary path to write `name` to; removed afterwards whatever
    happens (a failure, a soft time limit). On the local file system it sits
    beside the final file, so publish() is an atomic rename."""
    storage = report_storage()
    if _local(storage):
        final = Path(storage.path(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        path = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
    else:
        handle, raw = tempfile.mkstemp(suffix=PARTIAL_SUFFIX)
        os.close(handle)
        path = Path(raw)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def publish(path: Path, name: str) -> int:
    """Move the written file to `name`, replacing any earlier one; its size."""
    storage = report_storage()
    size = path.stat().st_size
    if _local(storage):
        if storage.file_permissions_mode is not None:
            os.chmod(path, storage.file_permissions_mode)
        os.replace(path, storage.path(name))
        return size
    # Remote storages (S3 and the like) have no rename: upload under the
    # same name; the old object is gone first so the name is not altered.
    storage.delete(name)
    with path.open("rb") as file:
        saved = storage.save(name, File(file, name=name))
    if saved != name:
        raise RuntimeError(f"The storage saved {name!r} as {saved!r}.")
    return size


def delete(name: str) -> None:
    report_storage().delete(name)


def remove_stale_partials(*, older_than_seconds: float) -> int:
    """Temporary files left by a worker that was killed mid-write."""
    storage = report_storage()
    if not _local(storage):
        return 0
    root = Path(storage.path(ROOT))
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_seconds
    removed = 0
    for path in root.rglob(f".*{PARTIAL_SUFFIX}"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another cleaner got there first
            pass
    return removed
