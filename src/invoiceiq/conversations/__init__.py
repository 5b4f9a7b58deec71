"""Conversations: the guided-flow state of each merchant, kept in the database."""
