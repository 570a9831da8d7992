"""networks subpackage of cmrssl."""
