"""drivepipe.world."""
