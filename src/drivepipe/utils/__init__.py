"""drivepipe.utils."""
