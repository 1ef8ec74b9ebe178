"""Reading the lake without Spark (delta-rs through Polars): what the dashboard and the benchmarks use."""
