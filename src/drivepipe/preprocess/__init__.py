"""drivepipe.preprocess."""
