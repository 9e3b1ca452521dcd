"""drivepipe.data."""
