"""engines subpackage of cmrssl."""
