"""The store: every SQL statement, the schema and its upgrades; records are in `appliance.model`."""

from appliance.store.database import (
    DuplicateError,
    RuleFilter,
    SchemaError,
    Store,
    StoreError,
    iso_utc,
    newest_schema_version,
    utc_now,
)

__all__ = [
    "DuplicateError",
    "RuleFilter",
    "SchemaError",
    "Store",
    "StoreError",
    "iso_utc",
    "newest_schema_version",
    "utc_now",
]
