"""The `ucupdates` command line: one module per command group."""

from appliance.cli.main import main

__all__ = ["main"]
