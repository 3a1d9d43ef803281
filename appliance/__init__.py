"""ucupdates: a Device Update service for Lync Phone Edition phones."""

__version__ = "0.1.0"
