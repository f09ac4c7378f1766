"""CallPanion's call backend: local stack, scheduler glue, push worker and HTTP routes."""

__version__ = "0.1.0"
