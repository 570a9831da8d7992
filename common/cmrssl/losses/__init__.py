"""losses subpackage of cmrssl."""
