"""The API's rules: `GET /api/rules`, `GET /api/rules/preview`, `POST /api/rules/{action}`.

Actions are the catalogue's own `apply_action`, so the event log records them exactly as
it records the commands; the preview works out an action's impact without changing a thing.
"""

from __future__ import annotations

from typing import Any

from appliance.admin.call import Call
from appliance.admin.impact import Impact, Offered, preview
from appliance.admin.web import ApiError, Reply
from appliance.catalogue import (
    Action,
    CatalogueError,
    UnknownRule,
    apply_action,
    change_json,
    rule_json,
)
from appliance.model import RULE_KEY_FIELDS, Rule, RuleState
from appliance.store import RuleFilter, Store

_RULE_FILTERS = RULE_KEY_FIELDS  # rules are filtered by the fields of their key


class RulesApi:
    """Listing rules, previewing an action, and applying it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def rules(self, call: Call) -> Reply:
        flt = _rule_filter(call)
        every = self.store.rules()
        return Reply(
            body={
                "rules": [rule_json(r) for r in self.store.rules(flt)],
                "choices": {
                    name: sorted({getattr(r.key, name) for r in every}, key=str.casefold)
                    for name in _RULE_FILTERS
                },
            }
        )

    def preview(self, call: Call) -> Reply:
        action = _action(call.query("action") or "")
        flt = _rule_filter(call, allow_selection=True)
        selected = self._select(flt)
        force = call.query("force") in ("1", "true")
        downgrade = call.query("allow_downgrade") in ("1", "true")
        catalog, devices = self.store.catalog(), self.store.devices()
        impact = preview(action, selected, catalog, devices, force, downgrade)
        return Reply(body=impact_json(impact))

    def _select(self, flt: RuleFilter) -> list[Rule]:
        if flt.is_empty():
            raise ApiError(400, "select rules: ids, a filter, all_pending or all")
        rules = self.store.rules(flt)
        missing = sorted(set(flt.ids) - {r.id for r in rules})
        if missing:
            raise ApiError(404, f"no rule with id {', '.join(map(str, missing))}")
        if not rules:
            raise ApiError(404, "no rule matches the filter")
        return rules

    def apply(self, call: Call) -> Reply:
        action = _action(call.params["action"])
        body = call.json()
        flt = _body_filter(body)
        try:
            force = bool(body.get("force", False))
            downgrade = bool(body.get("allow_downgrade", False))
            changes = apply_action(
                self.store, action, flt, call.actor, force=force, allow_downgrade=downgrade
            )
        except UnknownRule as e:
            raise ApiError(404, str(e)) from e
        except CatalogueError as e:
            raise ApiError(400, str(e)) from e
        reply = {"action": action.value, "changes": [change_json(c) for c in changes]}
        if all(c.skipped is not None for c in changes):
            reasons = "; ".join(f"rule {c.before.id} {c.skipped}" for c in changes)
            raise ApiError(409, f"{action.value} applies to none of them: {reasons}", **reply)
        return Reply(body=reply)


NAMED_RULES = 6  # the rules a preview names one by one; the rest are counted


def impact_json(impact: Impact) -> dict[str, Any]:
    def offered(o: Offered) -> dict[str, Any]:
        return {"version": o.version, "devices": o.devices, "test_devices": o.test_devices}

    return {
        "action": impact.action.value,
        "rule_ids": list(impact.rule_ids),
        "rules": [{"rule_id": r.rule_id, "text": r.text} for r in impact.lines[:NAMED_RULES]],
        "more_rules": max(0, len(impact.lines) - NAMED_RULES),
        "skipped": [{"rule_id": i, "reason": why} for i, why in impact.skipped],
        "needs_force": list(impact.needs_force),
        "forced": impact.forced,
        "needs_downgrade": list(impact.needs_downgrade),
        "devices": impact.devices,
        "before": [offered(o) for o in impact.before],
        "after": [offered(o) for o in impact.after],
        "up_to_date_after": impact.up_to_date_after,
        "changed": impact.changed,
        "summary": impact.summary(),
    }


def _action(text: str) -> Action:
    try:
        return Action(text)
    except ValueError:
        raise ApiError(404, f"unknown action {text!r}: approve, reset, restore or remove") from None


def _rule_filter(call: Call, allow_selection: bool = False) -> RuleFilter:
    state = call.query("state")
    if state is not None and state not in {s.value for s in RuleState}:
        raise ApiError(400, f"unknown state {state!r}: pending, approved, restored or reset")
    values = {name: call.query(name) for name in _RULE_FILTERS}
    ids: tuple[int, ...] = ()
    if allow_selection:
        try:
            ids = tuple(int(v) for v in call.queries("id"))
        except ValueError:
            raise ApiError(400, "rule ids are whole numbers") from None
    return RuleFilter(
        ids=ids,
        state=RuleState(state) if state else None,
        pending_only=allow_selection and call.query("all_pending") in ("1", "true"),
        everything=allow_selection and call.query("all") in ("1", "true"),
        **values,
    )


def _body_filter(body: dict[str, Any]) -> RuleFilter:
    """The rules an action names: {"ids": [...]}, {"filter": {...}}, {"all_pending": true}
    or {"all": true}, combinable as on the command line; `force` and `allow_downgrade` are
    checked here too."""
    ids = body.get("ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) and i > 0 for i in ids):
        raise ApiError(400, "ids is a list of rule ids (whole numbers)")
    flt = body.get("filter", {})
    if not isinstance(flt, dict) or not all(
        k in (*_RULE_FILTERS, "state") and isinstance(v, str) for k, v in flt.items()
    ):
        raise ApiError(400, f"filter takes strings for {', '.join(_RULE_FILTERS)} and state")
    state = flt.pop("state", None)
    if state is not None and state not in {s.value for s in RuleState}:
        raise ApiError(400, f"unknown state {state!r}")
    for key in ("all_pending", "all", "force", "allow_downgrade"):
        if not isinstance(body.get(key, False), bool):
            raise ApiError(400, f"{key} is true or false")
    return RuleFilter(
        ids=tuple(ids),
        state=RuleState(state) if state else None,
        pending_only=bool(body.get("all_pending", False)),
        everything=bool(body.get("all", False)),
        **flt,
    )
