//! Node tests of the condition helpers: `node --test guest-sdk/js/test/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findCondition, setCondition } from '../conditions.js';

const T0 = '2026-01-01T00:00:00Z';
const T1 = '2026-01-01T00:05:00Z';

test('a new condition is added with now as its transition time', () => {
  const conds = [];
  assert.equal(setCondition(conds, { type: 'Ready', status: 'False', reason: 'Waiting', message: 'w' }, T0), true);
  assert.deepEqual(conds, [{ type: 'Ready', status: 'False', reason: 'Waiting', message: 'w', lastTransitionTime: T0 }]);
});

test('the transition time moves only when the status changes', () => {
  const conds = [];
  setCondition(conds, { type: 'Ready', status: 'False', reason: 'Waiting', message: 'w' }, T0);
  assert.equal(setCondition(conds, { type: 'Ready', status: 'False', reason: 'StillWaiting', message: 'x' }, T1), true);
  assert.equal(findCondition(conds, 'Ready').lastTransitionTime, T0);
  assert.equal(findCondition(conds, 'Ready').reason, 'StillWaiting');
  assert.equal(setCondition(conds, { type: 'Ready', status: 'True', reason: 'Done', message: '' }, T1), true);
  assert.equal(findCondition(conds, 'Ready').lastTransitionTime, T1);
});

test('setting the same condition again changes nothing', () => {
  const conds = [];
  setCondition(conds, { type: 'Ready', status: 'True', reason: 'Done', message: '', observedGeneration: 3 }, T0);
  const before = JSON.stringify(conds);
  assert.equal(setCondition(conds, { type: 'Ready', status: 'True', reason: 'Done', message: '', observedGeneration: 3 }, T1), false);
  assert.equal(JSON.stringify(conds), before);
  assert.equal(conds.length, 1);
});

test('other conditions are left alone', () => {
  const conds = [{ type: 'Other', status: 'Unknown', reason: 'R', message: 'm', lastTransitionTime: T0 }];
  setCondition(conds, { type: 'Ready', status: 'True', reason: 'Done', message: '' }, T1);
  assert.equal(conds.length, 2);
  assert.equal(findCondition(conds, 'Other').lastTransitionTime, T0);
  assert.equal(findCondition(conds, 'Missing'), undefined);
});
