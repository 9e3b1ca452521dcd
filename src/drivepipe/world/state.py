"""Moved to `drivepipe.world_state` (the world state types are shared by world/, sim/ and the format tests, so they
live on the ground floor). This alias only keeps code written before the move importing; new code imports
`drivepipe.world_state`."""

from drivepipe.world_state import ActorState, EgoKinematics, WorldSnapshot

__all__ = ["ActorState", "EgoKinematics", "WorldSnapshot"]
