"""fleetstream."""
