"""Warren's replicated broker: the deterministic state machine and the logs that feed it."""
