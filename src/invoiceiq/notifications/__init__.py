"""Notifications: every outbound message, and the log of every message in and out."""
