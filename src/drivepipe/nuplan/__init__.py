"""drivepipe.nuplan."""
