"""drivepipe.evaluate."""
