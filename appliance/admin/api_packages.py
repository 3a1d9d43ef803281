"""The API's packages: `POST /api/packages` (upload and import), `POST /api/clean-files`,
and `GET /api/packages/progress/{job}` (how far the import of an upload has got).

The upload arrives on disk before the handler runs (see `AdminRequest`); the import then
runs in a thread: with its own SQLite connection, as `import` on the command line does, or
on PostgreSQL through the service's store (its thread takes a pooled connection of its own).
An upload may name a `job` (the page picks a random one); while its import runs, the page
polls the job's progress: scanning, verifying, extracting N of M updates, committing.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer

from appliance.admin.call import Call
from appliance.admin.request import AdminRequest
from appliance.admin.threads import blocking
from appliance.admin.web import ApiError, Reply
from appliance.catalogue import (
    CatalogueError,
    ImportProgress,
    ImportResult,
    PackageError,
    clean_files,
    import_json,
    import_package,
)
from appliance.config import Config
from appliance.store import Store, StoreError, open_configured

UPLOAD_PATH = b"/api/packages"
JOB = re.compile(r"[0-9a-f]{16,64}\Z")  # a job id as the page makes one: random hex
JOBS_KEPT = 32  # the most recent jobs whose progress can be asked for

# Told how long each import took and how it ended: "imported", "refused" (a package or a
# catalogue state the import turns down), "failed" (anything else). Called on the import's
# thread (/metrics' ops.ImportMetrics.observe is thread-safe).
ImportObserver = Callable[[float, str], None]


class PackagesApi:
    """Importing an uploaded package, and cleaning out the files no rule needs."""

    def __init__(
        self, config: Config, store: Store, reactor: Any, observe: ImportObserver | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.reactor = reactor
        self.observe = observe
        self.jobs: OrderedDict[str, ImportProgress] = OrderedDict()
        self._jobs_lock = threading.Lock()  # on PostgreSQL, requests run in worker threads

    def upload(self, call: Call) -> defer.Deferred[Reply]:
        request = call.request
        assert isinstance(request, AdminRequest)
        progress = self._job(call.query("job"))  # a bad job id: refused before it is staged
        staged = request.take_upload(call.query("name"))
        if staged is None:
            raise ApiError(400, "the upload is empty")
        config, actor, observe, shared = self.config, call.actor, self.observe, self.store

        def run() -> ImportResult:
            started, outcome = time.monotonic(), "failed"
            pooled = shared.backend == "postgresql"  # usable from any thread
            store = shared if pooled else open_configured(config.store, config.db_path)
            try:
                result = import_package(store, config, staged, actor, progress=progress)
                outcome = "imported"
                return result
            except (PackageError, CatalogueError, StoreError):
                outcome = "refused"
                raise
            finally:
                if not pooled:
                    store.close()
                if observe is not None:
                    observe(time.monotonic() - started, outcome)

        def cleanup(result: Any) -> Any:
            shutil.rmtree(staged.parent, ignore_errors=True)
            return result

        def failed(failure: Any) -> Reply:
            error = failure.value
            if isinstance(error, PackageError):
                raise ApiError(400, str(error))
            if isinstance(error, CatalogueError):
                raise ApiError(409, str(error))
            if isinstance(error, StoreError):
                raise ApiError(409, str(error))
            return failure  # type: ignore[no-any-return]

        imported = blocking(self.reactor, run)
        imported.addBoth(cleanup)
        reply: Any = imported.addCallbacks(lambda result: Reply(body=import_json(result)), failed)
        return cast("defer.Deferred[Reply]", reply)

    def _job(self, job: str | None) -> ImportProgress:
        """The progress of the upload's import, kept under `job` when it names one."""
        progress = ImportProgress()
        if job is not None:
            if JOB.match(job) is None:
                raise ApiError(400, "job is 16 to 64 lowercase hex digits")
            with self._jobs_lock:
                self.jobs[job] = progress
                self.jobs.move_to_end(job)
                while len(self.jobs) > JOBS_KEPT:
                    self.jobs.popitem(last=False)
        return progress

    def progress(self, call: Call) -> Reply:
        """How far the import of the upload named `job` has got."""
        progress = self.jobs.get(call.params["job"])
        if progress is None:
            raise ApiError(404, "no import with that job id (not started yet, or long done)")
        return Reply(body=progress.snapshot(), cache=b"no-store")

    def clean_files(self, call: Call) -> Reply:
        try:
            result = clean_files(
                self.store, self.config.store_dir, self.config.lock_path, call.actor
            )
        except CatalogueError as e:
            raise ApiError(409, str(e)) from e
        return Reply(
            body={
                "updates": list(result.updates),
                "files": len(result.files),
                "bytes": result.bytes,
            }
        )
