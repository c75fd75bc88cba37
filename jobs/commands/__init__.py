"""One module per command group of the relfm CLI."""
