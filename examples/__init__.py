"""Runnable examples that sit beside the packages (not installed with them)."""
