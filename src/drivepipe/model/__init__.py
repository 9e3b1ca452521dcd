"""Camera + lidar BEV multi-task model (`build_model`) and its parts; torch is imported by the submodules."""
