"""Exit statuses of the `ucupdates` command, and the exception that ends a command."""

EX_FAILED, EX_USAGE, EX_DATAERR, EX_CONFIG = 1, 2, 65, 78
EX_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it


class Failure(Exception):
    """Ends the command with a message and an exit status."""

    def __init__(self, message: str, status: int = EX_FAILED) -> None:
        super().__init__(message)
        self.status = status
