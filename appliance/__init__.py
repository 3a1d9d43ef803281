"""ucupdates: a Device Update service for Lync Phone Edition phones."""

from appliance.version import __version__

__all__ = ["__version__"]
