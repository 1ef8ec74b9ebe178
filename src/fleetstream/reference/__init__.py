"""Reference data: car models, colors and cars (the dimensions telemetry is enriched with)."""
