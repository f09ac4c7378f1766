"""The phone simulator: the relative's app (flutter_callkit_incoming plus its API calls)."""
