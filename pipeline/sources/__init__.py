"""Video sources: each runs its own thread, hands over only the newest frames, reports status."""
