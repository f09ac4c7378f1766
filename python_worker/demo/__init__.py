"""`callpanion demo`: the whole call played on this machine, as the family would watch it."""
