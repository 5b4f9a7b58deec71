"""Inbox: inbound provider events stored once before they are handled."""
