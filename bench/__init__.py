"""Benchmarks of pgjobs against other Postgres job queues (`make bench`)."""
