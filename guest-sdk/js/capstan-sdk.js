//! capstan-sdk.js: thin JavaScript helpers over the componentize-js bindings of wit/reconciler.wit.
//
// componentize-js maps the WIT world onto plain values: records are objects
// with camelCase fields, `option` is `undefined` or the value, flags are an
// object of booleans, a `result` export returns the ok value and throws the
// error value. These helpers add what every reconciler repeats: parsing the
// JSON snapshot, building an outcome, mapping errors to `reconcile-error`,
// and Kubernetes condition semantics. See examples/hello-js/hello.js.

import { log as hostLog } from 'capstan:reconciler/log@0.1.0';

export { findCondition, setCondition } from './conditions.js';

/** The reconcile failed for a reason that may pass: retried with backoff. */
export class TransientError extends Error {}

/** The reconcile cannot succeed until the primary or a watched object changes. */
export class TerminalError extends Error {}

function parse(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TerminalError(`${what} does not parse: ${e.message}`);
  }
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Everything one reconcile may read; objects are parsed on first use. */
export class Snapshot {
  constructor(raw) {
    this.raw = raw;
    this._primary = undefined;
  }

  /** The host's time of this reconcile (RFC 3339, `Z`): use it, never a clock. */
  get now() {
    return this.raw.now;
  }

  /** The host's connection to the primary's workload cluster: 'not-applicable', 'disconnected', 'connected' or 'unhealthy'. */
  get workload() {
    return this.raw.workload;
  }

  /** The primary object; a primary that does not parse is terminal. */
  get primary() {
    if (this._primary === undefined) {
      const obj = parse(this.raw.primary, 'primary object');
      if (!isObject(obj)) throw new TerminalError('primary object does not parse: not a JSON object');
      this._primary = obj;
    }
    return this._primary;
  }

  _relation(name) {
    return this.raw.related.find((r) => r.relation === name);
  }

  /** Whether the host's cache for relation `name` had finished listing. */
  synced(name) {
    const r = this._relation(name);
    return r !== undefined && r.synced;
  }

  /** The objects of relation `name` (empty when the host sent none). */
  related(name) {
    const r = this._relation(name);
    return r === undefined ? [] : r.objects.map((o) => parse(o, `object of relation ${name}`));
  }

  /** The first object of relation `name`, or undefined. */
  relatedOne(name) {
    const r = this._relation(name);
    return r === undefined || r.objects.length === 0 ? undefined : parse(r.objects[0], `object of relation ${name}`);
  }
}

/** The reference of a Kubernetes object. */
export function objectRef(obj) {
  const meta = obj.metadata ?? {};
  return { apiVersion: obj.apiVersion ?? '', kind: obj.kind ?? '', namespace: meta.namespace ?? '', name: meta.name ?? '' };
}

/** The desired changes of one reconcile; the host diffs and writes only what differs. */
export class Outcome {
  constructor() {
    this._apply = [];
    this._status = [];
    this._delete = [];
    this._events = [];
    this._requeueAfterMs = undefined;
    this._workloadApply = [];
    this._workloadStatus = [];
    this._workloadDelete = [];
  }

  /** Desire this object (apiVersion, kind, metadata.name/namespace and owned fields). */
  apply(obj) {
    this._apply.push(JSON.stringify(obj));
    return this;
  }

  /** Desire this status (apiVersion, kind, metadata.name/namespace and `status`). */
  status(obj) {
    this._status.push(JSON.stringify(obj));
    return this;
  }

  /** Delete the object with this reference (see objectRef). */
  delete(ref) {
    this._delete.push(ref);
    return this;
  }

  /** As apply, in the primary's workload cluster (needs a workload permission). */
  workloadApply(obj) {
    this._workloadApply.push(JSON.stringify(obj));
    return this;
  }

  /** As status, in the primary's workload cluster. */
  workloadStatus(obj) {
    this._workloadStatus.push(JSON.stringify(obj));
    return this;
  }

  /** As delete, in the primary's workload cluster. */
  workloadDelete(ref) {
    this._workloadDelete.push(ref);
    return this;
  }

  /** Record a Normal (or Warning) event about `regarding` (an object reference). */
  event(regarding, reason, message, warning = false) {
    this._events.push({ regarding, eventType: warning ? 'warning' : 'normal', reason, message });
    return this;
  }

  /** Reconcile again after `ms` milliseconds (time-based waits only). */
  requeueAfter(ms) {
    this._requeueAfterMs = BigInt(Math.max(0, Math.floor(ms)));
    return this;
  }

  /** The WIT record returned to the host. */
  toWit() {
    return {
      apply: this._apply,
      status: this._status,
      delete: this._delete,
      events: this._events,
      requeueAfterMs: this._requeueAfterMs,
      workloadApply: this._workloadApply,
      workloadStatus: this._workloadStatus,
      workloadDelete: this._workloadDelete,
    };
  }
}

/**
 * Call `reconcile(snapshot)` on the wrapped snapshot and return the WIT
 * outcome. TransientError/TerminalError become the WIT `reconcile-error`; any
 * other exception (a bug) becomes a terminal error naming it, since a trap
 * would carry no message (stderr is not granted).
 */
export function run(reconcile, snapshot) {
  try {
    return reconcile(new Snapshot(snapshot)).toWit();
  } catch (e) {
    if (e instanceof TransientError) throw { tag: 'transient', val: e.message };
    if (e instanceof TerminalError) throw { tag: 'terminal', val: e.message };
    // A bug: report it instead of trapping without a word (stderr is not granted).
    const where = e instanceof Error ? `${e.name}: ${e.message}${e.stack ? ` (${e.stack.split('\n')[0]})` : ''}` : String(e);
    throw { tag: 'terminal', val: `unexpected ${where}` };
  }
}

/** A group/version/kind; the core group is ''. */
export function gvk(group, version, kind) {
  return { group, version, kind };
}

const target = (workload) => (workload ? 'workload' : 'management');

/** What the plugin may write on `kind`, e.g. permission(cm, { patch: true }); `workload: true` for the primary's workload cluster. */
export function permission(kind, { create = false, patch = false, patchStatus = false, delete: del = false, workload = false } = {}) {
  return { kind, verbs: { create, patch, patchStatus, delete: del }, target: target(workload) };
}

/** Reconcile the primary when `kind` changes, mapped by `mapping` (a WIT key-mapping variant). */
export function watch(kind, mapping, { workload = false } = {}) {
  return { kind, mapping, target: target(workload) };
}

/** Carry the objects of `kind` found by `selector` (a WIT relation-selector variant) as relation `name`. */
export function relation(name, kind, selector, { workload = false, namespace = undefined } = {}) {
  return { name, kind, selector, target: target(workload), namespace };
}

/** The plugin-info record with empty defaults. */
export function pluginInfo(name, version, primary, opts = {}) {
  return {
    name,
    version,
    primary,
    watches: opts.watches ?? [],
    relations: opts.relations ?? [],
    permissions: opts.permissions ?? [],
    finalizer: opts.finalizer,
    concurrency: opts.concurrency,
    resyncSeconds: opts.resyncSeconds,
    capabilities: { crypto: opts.crypto ?? false, cloud: opts.cloud ?? false },
  };
}

/** Structured logging into the host's log stream (tagged with plugin and key). */
export const log = {
  trace: (m) => hostLog('trace', m),
  debug: (m) => hostLog('debug', m),
  info: (m) => hostLog('info', m),
  warn: (m) => hostLog('warn', m),
  error: (m) => hostLog('error', m),
};
