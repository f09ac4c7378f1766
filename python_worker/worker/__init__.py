"""The worker: wake-ups, claim, send at the exact second, record the results."""
