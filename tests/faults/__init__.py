"""Fault-injection runs: many complete flows against a simulator that misbehaves on purpose."""
