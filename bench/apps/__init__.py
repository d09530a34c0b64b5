"""What the benchmarked worker processes import: no-op handlers, and a ping
handler that reports when it started (enqueue-to-start latency)."""
