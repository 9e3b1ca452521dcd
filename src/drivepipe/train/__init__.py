"""drivepipe.train."""
