"""Outbox: outbound side effects written with the state change that causes them."""
