"""The engine: sharded queues, workers, rate limits, retries and metrics."""
