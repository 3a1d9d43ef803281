"""The version of the installed ucupdates: the package's own (pyproject.toml), read from the
installed distribution's metadata, so `--version`, `/health`, the Control Panel and the
capture exports all say the version that `pip` installed and docs/upgrade.md talks about."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "ucupdates"
UNKNOWN = "0+unknown"  # run from a source tree that was never installed


def installed_version() -> str:
    """The installed distribution's version, or UNKNOWN without one."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN


__version__ = installed_version()
