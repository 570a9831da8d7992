"""data subpackage of cmrssl."""
