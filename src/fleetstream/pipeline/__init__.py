"""Spark Structured Streaming: the session factory and the medallion queries."""
