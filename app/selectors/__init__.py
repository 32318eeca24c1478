"""Reads: what screens, jobs and the console show. No writes here."""
