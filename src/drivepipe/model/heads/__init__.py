"""Task heads on the fused BEV features; each maps (bev, batch) -> dict of named outputs."""
