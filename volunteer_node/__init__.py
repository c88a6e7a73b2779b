"""The volunteer role: a donated machine's side of the pool."""
