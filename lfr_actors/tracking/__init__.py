"""Face tracks: the per-camera tracker and the per-person decision (in memory only)."""
