"""RSS reward service: scores sampled masks (ground truth now; humans and HTTP endpoints later)."""
