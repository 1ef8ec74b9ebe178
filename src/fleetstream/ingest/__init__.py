"""Kafka clients: configuration, topic administration, producing and consuming."""
