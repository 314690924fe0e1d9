"""Structured logs (key=value for people, JSON for deployments; each run's events.jsonl) and progress
bars for long work."""
