"""transforms subpackage of cmrssl."""
