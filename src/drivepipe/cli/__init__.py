"""Stage entry points (`python -m drivepipe.cli.<stage>`) and the `drivepipe` dispatcher."""
