"""The merchant REST API (DESIGN §3): API keys, idempotent create, list, get, cancel, remind."""
