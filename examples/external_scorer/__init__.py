"""A minimal external scorer for the reward service's `http` scorer."""
