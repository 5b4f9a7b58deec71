"""Customers: each merchant's address book."""
