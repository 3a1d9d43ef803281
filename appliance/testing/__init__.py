"""Fakes and builders for tests and bench scripts, shipped beside the real things.

Like txacme's `MemoryStore` next to `DirectoryStore`: clocks that move only when told
(`clocks`), records and catalogues for the decision (`records`), stores with rules and
updates in them (`stores`), phone-user directories that count their checks (`users`), the
appliance as a process (`processes`), a throwaway PostgreSQL and its replicas
(`postgres`), pool nodes as serve processes on it (`pool`), subnets in network
namespaces joined by veth pairs (`netns`), and the HTTP sites in process (`web`). Nothing
here is used by the running appliance; nothing here imports pytest. `web` needs treq (the
test extra).
"""

from appliance.testing.clocks import (
    NOW,
    FixedClock,
    SecondsClock,
)
from appliance.testing.logs import MemorySender
from appliance.testing.netns import (
    Subnet,
    in_namespace,
    namespaces_unavailable,
    veth_subnet,
    veth_subnets,
)
from appliance.testing.pool import PoolNode, pool_ca, pool_nodes, tls_context
from appliance.testing.postgres import Postgres, PostgresError, throwaway_postgres
from appliance.testing.processes import (
    REPO,
    STARTUP_SECONDS,
    Serving,
    banner_ports,
    free_port,
    run_cli,
    serving,
)
from appliance.testing.records import (
    CU6,
    CU7,
    CU8,
    CX600,
    PHONE_MAC,
    PHONE_SERIAL,
    catalog_of,
    device_request,
    make_rule,
    rule_key,
    seen_device,
    update_files,
)
from appliance.testing.stores import (
    add_rule,
    add_update,
    approved_sample,
    catalogue_state,
    config_from,
    file_tree,
    image_file,
    memory_store,
    signature_file,
)
from appliance.testing.users import (
    CountingDirectory,
    MemoryDirectory,
    MemoryGroups,
    basic_credentials,
    fired,
)
from appliance.testing.web import (
    InlinePool,
    InlineReactor,
    QueuedPool,
    QueuedReactor,
    inline,
    memory_client,
    phone_client,
    phone_site,
    settle,
)

__all__ = [
    "PoolNode",
    "pool_ca",
    "pool_nodes",
    "tls_context",
    "Postgres",
    "PostgresError",
    "throwaway_postgres",
    "approved_sample",
    "phone_client",
    "phone_site",
    "STARTUP_SECONDS",
    "Serving",
    "banner_ports",
    "serving",
    "CU6",
    "CU7",
    "CU8",
    "CX600",
    "CountingDirectory",
    "FixedClock",
    "InlinePool",
    "InlineReactor",
    "QueuedPool",
    "QueuedReactor",
    "MemoryDirectory",
    "MemoryGroups",
    "MemorySender",
    "NOW",
    "PHONE_MAC",
    "PHONE_SERIAL",
    "REPO",
    "SecondsClock",
    "add_rule",
    "add_update",
    "basic_credentials",
    "catalog_of",
    "catalogue_state",
    "config_from",
    "device_request",
    "file_tree",
    "fired",
    "free_port",
    "image_file",
    "inline",
    "make_rule",
    "memory_client",
    "memory_store",
    "rule_key",
    "run_cli",
    "seen_device",
    "settle",
    "signature_file",
    "Subnet",
    "in_namespace",
    "namespaces_unavailable",
    "veth_subnet",
    "veth_subnets",
    "update_files",
]
