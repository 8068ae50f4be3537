"""Where state lives beyond one process: the store seam and the Redis store."""
