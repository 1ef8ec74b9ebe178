"""The local stack: a Kafka broker and SeaweedFS as plain processes, started by `fleetstream up`."""
