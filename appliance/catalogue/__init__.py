"""The catalogue: package import, rule lifecycle, the update decision, admin actions.

The decision (`choose_update`), the rollout decision around it (`decide`, under a
`RolloutPolicy`) and the lifecycle are pure; the importer and the actions
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
from appliance.catalogue.backup import (
    BackupError,
    BackupResult,
    backup_summary,
    create_backup,
    prune,
    scheduled_name,
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
from appliance.catalogue.importer import PackageError, import_package
from appliance.catalogue.lifecycle import Action, LifecycleError, NeedsForce
from appliance.catalogue.lifecycle import apply as rule_after
from appliance.catalogue.progress import ImportProgress
from appliance.catalogue.restore import (
    RestoreError,
    RestoreResult,
    finish_restore,
    hold_serve_lock,
    restore_backup,
)
from appliance.catalogue.results import ImportResult, import_json
from appliance.catalogue.rollout import (
    RolloutDecision,
    RolloutFacts,
    RolloutReason,
    decide,
    decide_with,
    rollout_facts,
    rollout_key,
)
from appliance.catalogue.rollout_paths import (
    TANJAY_STEPS,
    DowngradeRefused,
    check_approval,
    upgrade_path,
)
from appliance.catalogue.rollout_policy import (
    NetworkPolicy,
    Pin,
    PinAction,
    RolloutError,
    RolloutPolicy,
    StagedApproval,
    UpgradeStep,
)
from appliance.catalogue.rollout_stages import (
    AutoPause,
    StageHealth,
    StageMove,
    StageSchedule,
    advance_stage,
    soak_shortfall,
    tick_stage,
)
from appliance.catalogue.rollout_windows import (
    DownloadWindows,
    TimeWindow,
    WindowError,
    parse_network,
)
from appliance.catalogue.sample import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_VERSION,
    make_sample_package,
    sample_check,
)
from appliance.catalogue.verify import FileVerifier, file_sha256

__all__ = [
    "Action",
    "AutoPause",
    "BackupError",
    "BackupResult",
    "CatalogueError",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_VERSION",
    "Decision",
    "DowngradeRefused",
    "DownloadWindows",
    "FileVerifier",
    "ImportProgress",
    "ImportResult",
    "LifecycleError",
    "NeedsForce",
    "NetworkPolicy",
    "Offer",
    "PackageError",
    "Pin",
    "PinAction",
    "Reason",
    "RestoreError",
    "RestoreResult",
    "RolloutDecision",
    "RolloutError",
    "RolloutFacts",
    "RolloutPolicy",
    "RolloutReason",
    "RuleChange",
    "StageHealth",
    "StageMove",
    "StageSchedule",
    "StagedApproval",
    "TANJAY_STEPS",
    "TimeWindow",
    "UnknownRule",
    "UpgradeStep",
    "WindowError",
    "add_test_device",
    "add_user",
    "advance_stage",
    "answer_key",
    "apply_action",
    "backup_summary",
    "change_json",
    "check_approval",
    "choose_update",
    "clean_files",
    "create_backup",
    "decide",
    "decide_with",
    "file_sha256",
    "finish_restore",
    "hold_serve_lock",
    "import_json",
    "import_package",
    "is_test_device",
    "make_sample_package",
    "matching_rules",
    "parse_identifier",
    "parse_network",
    "prune",
    "recover",
    "remove_test_device",
    "remove_user",
    "restore_backup",
    "rollout_facts",
    "rollout_key",
    "rule_after",
    "rule_json",
    "sample_check",
    "scheduled_name",
    "set_password",
    "soak_shortfall",
    "tick_stage",
    "upgrade_path",
]
