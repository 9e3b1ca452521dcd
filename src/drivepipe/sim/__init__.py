"""drivepipe.sim."""
