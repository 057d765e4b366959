"""Fault injection: each test runs its own stack (database, Redis database number, processes) and breaks it."""
