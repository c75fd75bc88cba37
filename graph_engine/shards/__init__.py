"""Memory-mapped CSR graph shards: format, builders (local and Spark) and reader. See `format`."""
