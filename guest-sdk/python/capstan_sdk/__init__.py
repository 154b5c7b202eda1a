"""capstan_sdk: thin Python helpers over the componentize-py bindings of wit/reconciler.wit.

The generated bindings (`wit_world`, made by componentize-py from the WIT at
build time) already give typed records; these helpers add what every
reconciler repeats: parsing the JSON snapshot, building an outcome, mapping
errors to the WIT `reconcile-error`, and Kubernetes condition semantics.

A plugin module defines `class WitWorld(wit_world.WitWorld)` whose
`reconcile` returns `capstan_sdk.run(my_reconcile, snapshot)`; see
examples/hello-python/app.py.
"""

import json
from typing import Any, Callable, Dict, List, Optional

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import types

from .conditions import find_condition, set_condition

__all__ = [
    "TransientError",
    "TerminalError",
    "Snapshot",
    "Outcome",
    "run",
    "gvk",
    "permission",
    "watch",
    "relation",
    "plugin_info",
    "object_ref",
    "set_condition",
    "find_condition",
    "log",
]


class TransientError(Exception):
    """The reconcile failed for a reason that may pass: retried with backoff."""


class TerminalError(Exception):
    """The reconcile cannot succeed until the primary or a watched object changes."""


def _parse(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise TerminalError(f"{what} does not parse: {e}") from None


class Snapshot:
    """Everything one reconcile may read; objects are parsed on first use."""

    def __init__(self, raw: types.Snapshot):
        self.raw = raw
        self._primary: Optional[Dict[str, Any]] = None

    @property
    def now(self) -> str:
        """The host's time of this reconcile (RFC 3339, `Z`): use it, never a clock."""
        return self.raw.now

    @property
    def workload(self) -> types.Connection:
        """The host's connection to the primary's workload cluster (`types.Connection`)."""
        return self.raw.workload

    @property
    def primary(self) -> Dict[str, Any]:
        """The primary object as a dict; a primary that does not parse is terminal."""
        if self._primary is None:
            obj = _parse(self.raw.primary, "primary object")
            if not isinstance(obj, dict):
                raise TerminalError("primary object does not parse: not a JSON object")
            self._primary = obj
        return self._primary

    def _relation(self, name: str) -> Optional[types.RelatedObjects]:
        for r in self.raw.related:
            if r.relation == name:
                return r
        return None

    def synced(self, name: str) -> bool:
        """Whether the host's cache for relation `name` had finished listing."""
        r = self._relation(name)
        return r is not None and r.synced

    def related(self, name: str) -> List[Dict[str, Any]]:
        """The objects of relation `name` (empty when the host sent none)."""
        r = self._relation(name)
        if r is None:
            return []
        return [_parse(o, f"object of relation {name}") for o in r.objects]

    def related_one(self, name: str) -> Optional[Dict[str, Any]]:
        """The first object of relation `name`, or None."""
        r = self._relation(name)
        if r is None or not r.objects:
            return None
        return _parse(r.objects[0], f"object of relation {name}")


def object_ref(obj: Dict[str, Any]) -> types.ObjectRef:
    """The reference of a Kubernetes object given as a dict."""
    meta = obj.get("metadata") or {}
    return types.ObjectRef(
        api_version=obj.get("apiVersion", ""),
        kind=obj.get("kind", ""),
        namespace=meta.get("namespace", "") or "",
        name=meta.get("name", ""),
    )


class Outcome:
    """The desired changes of one reconcile; the host diffs and writes only what differs."""

    def __init__(self) -> None:
        self._apply: List[str] = []
        self._status: List[str] = []
        self._delete: List[types.ObjectRef] = []
        self._events: List[types.Event] = []
        self._requeue_after_ms: Optional[int] = None
        self._workload_apply: List[str] = []
        self._workload_status: List[str] = []
        self._workload_delete: List[types.ObjectRef] = []

    def apply(self, obj: Dict[str, Any]) -> "Outcome":
        """Desire this object (apiVersion, kind, metadata.name/namespace and owned fields)."""
        self._apply.append(json.dumps(obj, separators=(",", ":")))
        return self

    def status(self, obj: Dict[str, Any]) -> "Outcome":
        """Desire this status (apiVersion, kind, metadata.name/namespace and `status`)."""
        self._status.append(json.dumps(obj, separators=(",", ":")))
        return self

    def delete(self, ref: types.ObjectRef) -> "Outcome":
        """Delete this object."""
        self._delete.append(ref)
        return self

    def workload_apply(self, obj: Dict[str, Any]) -> "Outcome":
        """As `apply`, in the primary's workload cluster (needs a workload permission)."""
        self._workload_apply.append(json.dumps(obj, separators=(",", ":")))
        return self

    def workload_status(self, obj: Dict[str, Any]) -> "Outcome":
        """As `status`, in the primary's workload cluster."""
        self._workload_status.append(json.dumps(obj, separators=(",", ":")))
        return self

    def workload_delete(self, ref: types.ObjectRef) -> "Outcome":
        """As `delete`, in the primary's workload cluster."""
        self._workload_delete.append(ref)
        return self

    def event(self, regarding: types.ObjectRef, reason: str, message: str, warning: bool = False) -> "Outcome":
        """Record a Normal (or Warning) event about `regarding`."""
        kind = types.EventType.WARNING if warning else types.EventType.NORMAL
        self._events.append(types.Event(regarding=regarding, event_type=kind, reason=reason, message=message))
        return self

    def requeue_after(self, ms: int) -> "Outcome":
        """Reconcile again after `ms` milliseconds (time-based waits only)."""
        self._requeue_after_ms = max(0, int(ms))
        return self

    def to_wit(self) -> types.Outcome:
        """The WIT record returned to the host."""
        return types.Outcome(
            apply=self._apply,
            status=self._status,
            delete=self._delete,
            events=self._events,
            requeue_after_ms=self._requeue_after_ms,
            workload_apply=self._workload_apply,
            workload_status=self._workload_status,
            workload_delete=self._workload_delete,
        )


def run(reconcile: Callable[[Snapshot], Outcome], snapshot: types.Snapshot) -> types.Outcome:
    """Call `reconcile` on the wrapped snapshot and return the WIT outcome.

    TransientError and TerminalError become the WIT `reconcile-error`; any
    other exception (a bug) becomes a terminal error naming its type, message
    and line, since a trap would carry no message (stderr is not granted).
    """
    try:
        return reconcile(Snapshot(snapshot)).to_wit()
    except TransientError as e:
        raise Err(types.ReconcileError_Transient(str(e)))
    except TerminalError as e:
        raise Err(types.ReconcileError_Terminal(str(e)))
    except Exception as e:  # a bug: report it instead of trapping without a word
        raise Err(types.ReconcileError_Terminal(f"unexpected {_where(e)}"))


def _where(e: BaseException) -> str:
    """`Type: message (file:line)` of an exception, for error messages (stderr is not granted)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    at = f" ({tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno})" if tb is not None else ""
    return f"{type(e).__name__}: {e}{at}"


def gvk(group: str, version: str, kind: str) -> types.Gvk:
    """A group/version/kind; the core group is ""."""
    return types.Gvk(group=group, version=version, kind=kind)


def _target(workload: bool) -> types.Target:
    return types.Target.WORKLOAD if workload else types.Target.MANAGEMENT


def permission(
    kind: types.Gvk, create=False, patch=False, patch_status=False, delete=False, workload=False
) -> types.Permission:
    """What the plugin may write on `kind` (in the primary's workload cluster with `workload`)."""
    verbs = types.Verbs(0)
    if create:
        verbs |= types.Verbs.CREATE
    if patch:
        verbs |= types.Verbs.PATCH
    if patch_status:
        verbs |= types.Verbs.PATCH_STATUS
    if delete:
        verbs |= types.Verbs.DELETE
    return types.Permission(kind=kind, verbs=verbs, target=_target(workload))


def watch(kind: types.Gvk, mapping: types.KeyMapping, workload: bool = False) -> types.Watch:
    """Reconcile the primary when `kind` changes (in its workload cluster with `workload`)."""
    return types.Watch(kind=kind, mapping=mapping, target=_target(workload))


def relation(
    name: str,
    kind: types.Gvk,
    selector: types.RelationSelector,
    workload: bool = False,
    namespace: Optional[str] = None,
) -> types.Relation:
    """Carry the objects of `kind` found by `selector` in every snapshot, as relation `name`."""
    return types.Relation(name=name, kind=kind, selector=selector, target=_target(workload), namespace=namespace)


def plugin_info(
    name: str,
    version: str,
    primary: types.Gvk,
    *,
    watches=(),
    relations=(),
    permissions=(),
    finalizer: Optional[str] = None,
    concurrency: Optional[int] = None,
    resync_seconds: Optional[int] = None,
    crypto: bool = False,
    cloud: bool = False,
) -> types.PluginInfo:
    """The plugin-info record with keyword arguments and empty defaults; `crypto` and
    `cloud` declare those host capabilities."""
    capabilities = types.Capabilities(0)
    if crypto:
        capabilities |= types.Capabilities.CRYPTO
    if cloud:
        capabilities |= types.Capabilities.CLOUD
    return types.PluginInfo(
        name=name,
        version=version,
        primary=primary,
        watches=list(watches),
        relations=list(relations),
        permissions=list(permissions),
        finalizer=finalizer,
        concurrency=concurrency,
        resync_seconds=resync_seconds,
        capabilities=capabilities,
    )


class _Log:
    """Structured logging into the host's log stream (tagged with plugin and key)."""

    def trace(self, msg: str) -> None:
        _log.log(_log.Level.TRACE, msg)

    def debug(self, msg: str) -> None:
        _log.log(_log.Level.DEBUG, msg)

    def info(self, msg: str) -> None:
        _log.log(_log.Level.INFO, msg)

    def warn(self, msg: str) -> None:
        _log.log(_log.Level.WARN, msg)

    def error(self, msg: str) -> None:
        _log.log(_log.Level.ERROR, msg)


log = _Log()
