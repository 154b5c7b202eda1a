"""Native tests of the condition helpers: `python3 -m unittest discover -s guest-sdk/python/tests`."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "capstan_sdk"))
from conditions import find_condition, set_condition  # noqa: E402  (no bindings needed)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


class SetCondition(unittest.TestCase):
    def test_new_condition_gets_now(self):
        conds = []
        self.assertTrue(set_condition(conds, "Ready", "False", "Waiting", "w", T0))
        self.assertEqual(
            conds, [{"type": "Ready", "status": "False", "reason": "Waiting", "message": "w", "lastTransitionTime": T0}]
        )

    def test_transition_time_moves_only_with_status(self):
        conds = []
        set_condition(conds, "Ready", "False", "Waiting", "w", T0)
        self.assertTrue(set_condition(conds, "Ready", "False", "StillWaiting", "x", T1))
        self.assertEqual(find_condition(conds, "Ready")["lastTransitionTime"], T0)
        self.assertEqual(find_condition(conds, "Ready")["reason"], "StillWaiting")
        self.assertTrue(set_condition(conds, "Ready", "True", "Done", "", T1))
        self.assertEqual(find_condition(conds, "Ready")["lastTransitionTime"], T1)

    def test_same_condition_changes_nothing(self):
        conds = []
        set_condition(conds, "Ready", "True", "Done", "", T0, observed_generation=3)
        before = [dict(c) for c in conds]
        self.assertFalse(set_condition(conds, "Ready", "True", "Done", "", T1, observed_generation=3))
        self.assertEqual(conds, before)

    def test_other_conditions_untouched(self):
        conds = [{"type": "Other", "status": "Unknown", "reason": "R", "message": "m", "lastTransitionTime": T0}]
        set_condition(conds, "Ready", "True", "Done", "", T1)
        self.assertEqual(len(conds), 2)
        self.assertEqual(find_condition(conds, "Other")["lastTransitionTime"], T0)
        self.assertIsNone(find_condition(conds, "Missing"))


if __name__ == "__main__":
    unittest.main()
