"""Imagination: the world-model environment (same interface as the simulator), advantages and the
self-improvement loop."""
