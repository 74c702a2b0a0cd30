"""The log uploads as durable jobs (firmware/maintenance/log_upload.py) against a real HTTP server on loopback: an
upload a stop interrupted is taken up again by the next start (:meth:`LogUploads.resume`) and ends with exactly one
final status; an outcome known but not reported is reported, not uploaded again; failed attempts count across the
stop. (A real kill -9 of the agent mid-upload: tests/test_e2e_firmware.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware.maintenance.log_upload import DIAGNOSTICS_JOB, JOB_FILES, LOG_JOB, LogUploads, LogUploadStatus
from tests.file_servers import HttpFileServer, http_file_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HttpFileServer]:
    (tmp_path / "srv").mkdir()
    with http_file_server(tmp_path / "srv") as s:
        yield s


class Seen:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, int]] = []
        self.final = asyncio.Event()

    async def __call__(self, status: LogUploadStatus, request_id: int) -> None:
        self.statuses.append((status.value, request_id))
        if status is not LogUploadStatus.UPLOADING:
            self.final.set()


def archive(tmp_path: Path) -> Path:
    path = tmp_path / "state/diagnostics/diagnostics-CP-1.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"archive" * 1000)
    return path


def job_file(tmp_path: Path, kind: str = LOG_JOB) -> Path:
    return tmp_path / "state" / JOB_FILES[kind]


async def until(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    """Polls a file the uploads write (no event to wait on outside the process's view), at most ``timeout_s``."""
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s")


async def test_an_upload_a_stop_interrupted_is_done_again_with_one_final_status(server: HttpFileServer,
                                                                                 tmp_path: Path) -> None:
    """The first attempt fails (HTTP 500) and the job waits 60 s for its retry, recorded; the process stops (its
    task gone, the file kept); the next start's resume uploads it at once: Uploading, Uploaded, once; then the job
    is forgotten."""
    server.faults.status = 500
    first = LogUploads("CP-1", tmp_path / "state", None, None, transfer_timeout_s=5)
    seen = Seen()
    first.start(7, server.url("in/"), archive(tmp_path), 3, 60.0, seen)
    await until(lambda: job_file(tmp_path).exists() and json.loads(job_file(tmp_path).read_text())["failed"] == 1)
    first._tasks[LOG_JOB].cancel()  # the stop
    assert seen.statuses == [("Uploading", 7)]
    server.faults.status = None

    again = Seen()
    resumed = LogUploads("CP-1", tmp_path / "state", None, None, transfer_timeout_s=5).resume(LOG_JOB, again)
    assert resumed is not None and (resumed.request_id, resumed.failed) == (7, 1)
    await asyncio.wait_for(again.final.wait(), 10)
    await until(lambda: not job_file(tmp_path).exists())
    assert again.statuses == [("Uploading", 7), ("Uploaded", 7)]
    assert (server.uploads / "diagnostics-CP-1.tar.gz").read_bytes() == archive(tmp_path).read_bytes()
    assert [r[0] for r in server.faults.requests] == ["PUT", "PUT"]


async def test_an_outcome_known_but_not_reported_is_reported_and_not_uploaded_again(server: HttpFileServer,
                                                                                    tmp_path: Path) -> None:
    uploads = LogUploads("CP-1", tmp_path / "state", None, None, transfer_timeout_s=5)
    seen = Seen()
    uploads.start(0, server.url("in/"), archive(tmp_path), 0, 1.0, seen, kind=DIAGNOSTICS_JOB)
    await asyncio.wait_for(seen.final.wait(), 10)
    await until(lambda: not job_file(tmp_path, DIAGNOSTICS_JOB).exists())
    assert seen.statuses == [("Uploading", 0), ("Uploaded", 0)]

    # as a stop after the upload and before the CSMS answered its outcome leaves it
    job_file(tmp_path, DIAGNOSTICS_JOB).write_text(json.dumps({
        "kind": DIAGNOSTICS_JOB, "request_id": 0, "location": server.url("in/"), "archive": str(archive(tmp_path)),
        "retries": 0, "interval_s": 1.0, "failed": 0, "outcome": "Uploaded"}))
    again = Seen()
    assert LogUploads("CP-1", tmp_path / "state", None, None).resume(DIAGNOSTICS_JOB, again) is not None
    await asyncio.wait_for(again.final.wait(), 10)
    await until(lambda: not job_file(tmp_path, DIAGNOSTICS_JOB).exists())
    assert again.statuses == [("Uploaded", 0)]
    assert len(server.faults.requests) == 1  # not sent again


async def test_failed_attempts_count_across_a_stop_and_a_damaged_job_is_forgotten(server: HttpFileServer,
                                                                                 tmp_path: Path) -> None:
    """One retry allowed, one attempt failed before the stop: the resumed job makes the last attempt only."""
    server.faults.status = 500
    job_file(tmp_path).parent.mkdir(parents=True)
    job_file(tmp_path).write_text(json.dumps({
        "kind": LOG_JOB, "request_id": 3, "location": server.url("in/"), "archive": str(archive(tmp_path)),
        "retries": 1, "interval_s": 0.0, "failed": 1, "outcome": ""}))
    seen = Seen()
    uploads = LogUploads("CP-1", tmp_path / "state", None, None, transfer_timeout_s=5)
    assert uploads.resume(LOG_JOB, seen) is not None
    await asyncio.wait_for(seen.final.wait(), 10)
    assert seen.statuses == [("Uploading", 3), ("UploadFailure", 3)]
    assert len(server.faults.requests) == 1

    job_file(tmp_path).write_text("{not json")
    assert uploads.resume(LOG_JOB, seen) is None and not job_file(tmp_path).exists()
