"""metrics subpackage of cmrssl."""
