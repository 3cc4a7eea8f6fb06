"""Real models fetched offline from pinned PyPI wheels, and what is derived from them."""
