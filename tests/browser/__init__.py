"""Helpers for the Control Panel's tests: the admin site as a process, an HTTPS client
that checks every answer against the OpenAPI file, and a headless Chromium."""
