"""The store: every SQL statement, the schema and its upgrades; records are in `appliance.model`."""

from appliance.store.blobs import BLOB_CHUNK
from appliance.store.branch_state import PoolState, PrimaryUnavailable
from appliance.store.catalogue import RuleFilter
from appliance.store.configured import open_configured
from appliance.store.connection import iso_utc, utc_now
from appliance.store.copy import copy_rows, occupied_tables, row_differences
from appliance.store.database import Store, inspect_database, newest_schema_version
from appliance.store.errors import DuplicateError, SchemaError, StoreError
from appliance.store.feed import ChangeFeed
from appliance.store.guard import GuardMode, ReactorBlockingError, guard_thread
from appliance.store.pool import node_name
from appliance.store.spool import Spool, branch_spool
from appliance.store.spool import ship as ship_spool

__all__ = [
    "BLOB_CHUNK",
    "ChangeFeed",
    "DuplicateError",
    "PoolState",
    "PrimaryUnavailable",
    "GuardMode",
    "ReactorBlockingError",
    "RuleFilter",
    "SchemaError",
    "Spool",
    "Store",
    "StoreError",
    "branch_spool",
    "copy_rows",
    "inspect_database",
    "iso_utc",
    "guard_thread",
    "newest_schema_version",
    "node_name",
    "occupied_tables",
    "open_configured",
    "row_differences",
    "ship_spool",
    "utc_now",
]
