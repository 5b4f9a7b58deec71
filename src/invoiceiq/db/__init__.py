"""Database: types, base, engine, unit of work and migrations."""
