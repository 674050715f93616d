"""Sinks: batch-and-flush writers whose effects are idempotent (replays change nothing)."""
