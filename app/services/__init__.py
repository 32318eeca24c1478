"""Writes and state transitions. Each public service owns its transaction."""
