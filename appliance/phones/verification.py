"""The start-up check of the stored files, in small steps on the reactor.

Every file the catalogue references is hashed (`catalogue.FileVerifier`) a few chunks per
reactor turn, so checks and downloads go on being answered while it runs: at most
`CHUNKS_PER_STEP` MiB every `INTERVAL` seconds (about 160 MiB/s at most, a few milliseconds
of the reactor's time each step). What fails is no longer offered (`file.corrupt`).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from appliance.phones.answers import Answers

log = Logger(namespace="ucupdates.phone")

CHUNKS_PER_STEP = 4  # of catalogue.verify.CHUNK (1 MiB)
INTERVAL = 0.025  # seconds between steps


class FileCheckService(service.Service):
    """Verifies every referenced stored file once, after start-up, then stops."""

    def __init__(self, answers: Answers, reactor: Any) -> None:
        self._answers = answers
        self._reactor = reactor
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        steps = self._answers.verification_steps()

        def step() -> None:
            for _ in range(CHUNKS_PER_STEP):
                if next(steps, StopIteration) is StopIteration:
                    assert self._loop is not None
                    self._loop.stop()
                    verifier = self._answers.verifier
                    broken = len(verifier.broken_updates()) if verifier else 0
                    log.info(
                        "stored files verified: {broken} update(s) with a failing file",
                        broken=broken,
                        event="file.verified",
                    )
                    return

        self._loop = LoopingCall(step)
        self._loop.clock = self._reactor
        self._loop.start(INTERVAL, now=False).addErrback(
            lambda failure: log.failure("the stored files' check failed", failure)
        )

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return None
