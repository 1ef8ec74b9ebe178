"""The fleet simulator: vehicle physics, driver profiles, fault injection with ground truth."""
