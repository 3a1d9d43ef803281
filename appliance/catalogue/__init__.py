"""The catalogue: package import, rule lifecycle, the update decision, admin actions.

The decision (`choose_update`) and the lifecycle are pure; the importer and the actions
change the store, each with its event-log entries.
"""

from appliance.catalogue.actions import (
    CatalogueError,
    RuleChange,
    UnknownRule,
    add_test_device,
    add_user,
    apply_action,
    change_json,
    clean_files,
    parse_identifier,
    recover,
    remove_test_device,
    remove_user,
    rule_json,
    set_password,
)
from appliance.catalogue.decision import (
    Decision,
    Offer,
    Reason,
    answer_key,
    choose_update,
    is_test_device,
    matching_rules,
)
from appliance.catalogue.importer import ImportResult, PackageError, import_json, import_package
from appliance.catalogue.lifecycle import Action, LifecycleError, NeedsForce
from appliance.catalogue.lifecycle import apply as rule_after
from appliance.catalogue.sample import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_VERSION,
    make_sample_package,
    sample_check,
)
from appliance.catalogue.verify import FileVerifier, file_sha256

__all__ = [
    "Action",
    "CatalogueError",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_VERSION",
    "Decision",
    "FileVerifier",
    "ImportResult",
    "LifecycleError",
    "NeedsForce",
    "Offer",
    "PackageError",
    "Reason",
    "RuleChange",
    "UnknownRule",
    "add_test_device",
    "add_user",
    "answer_key",
    "apply_action",
    "change_json",
    "choose_update",
    "clean_files",
    "file_sha256",
    "import_json",
    "import_package",
    "is_test_device",
    "make_sample_package",
    "matching_rules",
    "parse_identifier",
    "recover",
    "remove_test_device",
    "remove_user",
    "rule_after",
    "rule_json",
    "sample_check",
    "set_password",
]
