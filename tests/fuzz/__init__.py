"""Fuzzing: hypothesis over everything that parses input from people and providers."""
