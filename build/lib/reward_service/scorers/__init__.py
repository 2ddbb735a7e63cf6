"""Scorers: functions that turn sampled masks into rewards."""
