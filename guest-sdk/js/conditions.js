//! Kubernetes metav1.Condition semantics over plain objects (no bindings needed, so testable in Node).

/** The condition of this type in a metav1.Condition list, or undefined. */
export function findCondition(conditions, type) {
  return conditions.find((c) => c.type === type);
}

/**
 * Set a metav1.Condition in place; lastTransitionTime changes only when
 * status changes. Returns whether anything changed.
 */
export function setCondition(conditions, { type, status, reason, message, observedGeneration }, now) {
  const next = { type, status, reason, message };
  if (observedGeneration !== undefined) next.observedGeneration = observedGeneration;
  const old = findCondition(conditions, type);
  if (old === undefined) {
    conditions.push({ ...next, lastTransitionTime: now });
    return true;
  }
  next.lastTransitionTime = old.status === status ? (old.lastTransitionTime ?? now) : now;
  const same =
    Object.keys(next).length === Object.keys(old).length && Object.keys(next).every((k) => old[k] === next[k]);
  if (same) return false;
  for (const k of Object.keys(old)) delete old[k];
  Object.assign(old, next);
  return true;
}
