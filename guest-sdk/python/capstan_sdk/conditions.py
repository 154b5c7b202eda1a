"""Kubernetes metav1.Condition semantics over plain dicts (no bindings needed, so testable natively)."""

from typing import Any, Dict, List, Optional


def find_condition(conditions: List[Dict[str, Any]], type_: str) -> Optional[Dict[str, Any]]:
    """The condition of this type in a metav1.Condition list, or None."""
    for c in conditions:
        if c.get("type") == type_:
            return c
    return None


def set_condition(
    conditions: List[Dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    observed_generation: Optional[int] = None,
) -> bool:
    """Set a metav1.Condition in place; lastTransitionTime changes only when status changes.

    Returns whether anything changed.
    """
    new = {"type": type_, "status": status, "reason": reason, "message": message}
    if observed_generation is not None:
        new["observedGeneration"] = observed_generation
    old = find_condition(conditions, type_)
    if old is None:
        new["lastTransitionTime"] = now
        conditions.append(new)
        return True
    new["lastTransitionTime"] = old.get("lastTransitionTime", now) if old.get("status") == status else now
    if old == new:
        return False
    old.clear()
    old.update(new)
    return True
