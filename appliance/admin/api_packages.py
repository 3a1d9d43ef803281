"""The API's packages: `POST /api/packages` (upload and import), `POST /api/clean-files`.

The upload arrives on disk before the handler runs (see `AdminRequest`); the import then
runs in a thread with its own store connection, as `import` on the command line does.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from appliance.admin.call import Call
from appliance.admin.request import AdminRequest
from appliance.admin.web import ApiError, Reply
from appliance.catalogue import (
    CatalogueError,
    ImportResult,
    PackageError,
    clean_files,
    import_json,
    import_package,
)
from appliance.config import Config
from appliance.store import Store, StoreError

UPLOAD_PATH = b"/api/packages"

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

    def upload(self, call: Call) -> defer.Deferred[Reply]:
        request = call.request
        assert isinstance(request, AdminRequest)
        staged = request.take_upload(call.query("name"))
        if staged is None:
            raise ApiError(400, "the upload is empty")
        config, actor, observe = self.config, call.actor, self.observe

        def run() -> ImportResult:
            started, outcome = time.monotonic(), "failed"
            store = Store.open(config.db_path)  # this thread's own connection
            try:
                result = import_package(store, config, staged, actor)
                outcome = "imported"
                return result
            except (PackageError, CatalogueError, StoreError):
                outcome = "refused"
                raise
            finally:
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

        imported = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), run)
        imported.addBoth(cleanup)
        reply: Any = imported.addCallbacks(lambda result: Reply(body=import_json(result)), failed)
        return cast("defer.Deferred[Reply]", reply)

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
