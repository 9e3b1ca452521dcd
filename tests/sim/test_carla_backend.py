"""CarlaBackend error paths against a stand-in `carla` module, and the real no-server probe."""

from __future__ import annotations

import socket
import time
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from drivepipe.config import Config
from drivepipe.errors import BackendUnavailable
from drivepipe.schema import CameraCalibration
from drivepipe.sim.carla_backend import CarlaBackend, parse_routes_xml, routes_to_scenarios
from drivepipe.sim.harness import run_scenarios
from drivepipe.sim.interfaces import Action

W, H = 32, 24


# --------------------------------------------------------------------------------------------- stand-in carla
class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class FakeSettings:
    def __init__(self, sync=False, delta=None):
        self.synchronous_mode, self.fixed_delta_seconds = sync, delta


class FakeSensor:
    def __init__(self, world, kind, attrs):
        self.world, self.kind, self.attrs = world, kind, attrs
        self.id, self.type_id = 1000 + len(world.sensors), kind
        self.callback, self.stopped, self.destroyed = None, False, False

    def listen(self, cb):
        self.callback = cb

    def stop(self):
        self.stopped = True

    def destroy(self):
        self.destroyed = True


class FakeVehicle(FakeSensor):
    def __init__(self, world, tf):
        super().__init__(world, "vehicle", {})
        self.tf = tf

    def apply_control(self, control):
        self.world.controls.append(control)

    def get_transform(self):
        return self.tf

    def get_location(self):
        return self.tf.location

    def get_velocity(self):
        return _Obj(x=2.0, y=0.0, z=0.0)

    def is_at_traffic_light(self):
        return self.world.light is not None

    def get_traffic_light(self):
        return self.world.light

    def get_traffic_light_state(self):
        return "TrafficLightState.Red"


class FakeBlueprint:
    def __init__(self, bp_id):
        self.id, self.attrs = bp_id, {}

    def set_attribute(self, k, v):
        self.attrs[k] = v


class FakeWorld:
    light = None  # a traffic light governing the ego (is_at_traffic_light), or None

    def __init__(self, fail_tick_at=None, others=()):
        self.settings = FakeSettings()
        self.applied, self.controls, self.sensors = [], [], []
        self.ticks, self.fail_tick_at = 0, fail_tick_at
        self.others = list(others)  # other actors on the server (vehicles, walkers)

    def get_actors(self):
        return [*self.sensors, *self.others]

    def get_settings(self):
        return FakeSettings(self.settings.synchronous_mode, self.settings.fixed_delta_seconds)

    def apply_settings(self, s):
        self.applied.append((s.synchronous_mode, s.fixed_delta_seconds))
        self.settings = FakeSettings(s.synchronous_mode, s.fixed_delta_seconds)

    def get_map(self):
        return _Obj(name="Carla/Maps/Town01", get_waypoint=lambda loc, project_to_road=False: object())

    def get_blueprint_library(self):
        return _Obj(find=FakeBlueprint)

    def spawn_actor(self, bp, tf, attach_to=None):
        actor = FakeVehicle(self, tf) if bp.id.startswith("vehicle") else FakeSensor(self, bp.id, bp.attrs)
        self.sensors.append(actor)
        return actor

    def tick(self, timeout):
        assert timeout > 0  # every tick carries a timeout
        self.ticks += 1
        if self.fail_tick_at is not None and self.ticks >= self.fail_tick_at:
            raise RuntimeError("time-out of 10000ms while waiting for the simulator")
        for s in self.sensors:
            if s.callback is None or s.stopped:
                continue
            if s.kind == "sensor.camera.rgb":
                s.callback(_Obj(raw_data=bytes(W * H * 4), width=W, height=H))
            elif s.kind == "sensor.lidar.ray_cast":
                s.callback(_Obj(raw_data=np.ones((10, 4), np.float32).tobytes()))
        return self.ticks


def make_fake_carla(world, server_version="0.9.16", fail_probe=False):
    mod = types.ModuleType("carla")

    class Client:
        def __init__(self, host, port):
            self.timeout = None

        def set_timeout(self, t):
            self.timeout = t

        def get_server_version(self):
            if fail_probe:
                raise RuntimeError("time-out of 2000ms while waiting for the simulator")
            return server_version

        def get_client_version(self):
            return "0.9.16"

        def get_world(self):
            return world

    mod.Client = Client
    mod.Transform = lambda location=None, rotation=None: _Obj(location=location or _Obj(x=0, y=0, z=0),
                                                              rotation=rotation or _Obj(pitch=0, yaw=0, roll=0))
    mod.Location = lambda x=0.0, y=0.0, z=0.0: _Obj(x=x, y=y, z=z)
    mod.Rotation = lambda pitch=0.0, yaw=0.0, roll=0.0: _Obj(pitch=pitch, yaw=yaw, roll=roll)
    mod.VehicleControl = lambda **kw: _Obj(**kw)
    return mod


def _rig():
    K = np.array([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # OpenCV camera looking forward
    cams = {ch: CameraCalibration(ch, W, H, K, np.zeros(5), T) for ch in ("CAM_F0", "CAM_B0", "CAM_L0", "CAM_L2",
                                                                             "CAM_R0", "CAM_R2")}
    return _Obj(cameras=cams, T_ego_from_lidar=np.eye(4))


ROUTES_XML = """<routes>
  <route id="7" town="Town01"><waypoints>
    <position x="0.0" y="0.0" z="0.0"/><position x="50.0" y="0.0" z="0.0"/><position x="50.0" y="-40.0" z="0.0"/>
  </waypoints></route>
</routes>"""


def _scenario(tmp_path: Path, duration: float = 2.0):
    p = tmp_path / "routes.xml"
    p.write_text(ROUTES_XML)
    return routes_to_scenarios(parse_routes_xml(p), duration, lambda sid: 1)[0]


class ScriptedAgent:
    def reset(self, scenario_meta):
        pass

    def act(self, bundle):
        return Action(steer_rad=0.0, accel_mps2=1.0)

    def close(self):
        pass


def _cfg(**carla_kw) -> Config:
    cfg = Config()
    ce = replace(cfg.carla_eval, backend="carla", animation=False,
                 carla=replace(cfg.carla_eval.carla, **carla_kw))
    return replace(cfg, carla_eval=ce)


# ------------------------------------------------------------------------------------------------------ tests
def test_routes_xml_flips_y(tmp_path: Path) -> None:
    sc = _scenario(tmp_path)
    assert sc.scenario_id == "Town01/7" and np.allclose(sc.route_xy[-1], [50.0, 40.0])  # left-handed -> ours


def test_episode_runs_and_cleans_up(tmp_path: Path) -> None:
    world = FakeWorld()
    backend = CarlaBackend(_cfg(), carla_module=make_fake_carla(world), rig=_rig())
    bundle = backend.reset(_scenario(tmp_path))
    assert world.settings.synchronous_mode and world.settings.fixed_delta_seconds == 0.05
    assert set(bundle.cameras) == set(Config().preprocess.cameras) and bundle.lidar.points.shape == (10, 6)
    assert np.allclose(bundle.lidar.points[:, 1], -1.0)  # CARLA y (right) -> our y (left)
    res = backend.step(Action(steer_rad=0.1, accel_mps2=1.0))
    assert world.controls[-1].steer < 0  # left steer is negative in CARLA
    assert res.info["route_length_m"] > 0 and not res.done
    backend.close()
    assert all(s.destroyed for s in world.sensors)
    assert all(s.stopped for s in world.sensors if s.kind.startswith("sensor"))
    assert world.applied[-1] == (False, None)  # original asynchronous settings restored


def _other(actor_id, type_id, x, y, yaw_deg=0.0, extent=(2.0, 1.0, 0.8), wheels="4"):
    """A server actor at CARLA (x, y) (left-handed), standing still."""
    tf = _Obj(location=_Obj(x=x, y=y, z=0.0), rotation=_Obj(pitch=0.0, yaw=yaw_deg, roll=0.0))
    return _Obj(id=actor_id, type_id=type_id, attributes={"number_of_wheels": wheels}, get_transform=lambda: tf,
                get_velocity=lambda: _Obj(x=0.0, y=0.0, z=0.0),
                bounding_box=_Obj(extent=_Obj(x=extent[0], y=extent[1], z=extent[2])))


def test_ttc_and_privileged_boxes_from_the_server_actors(tmp_path: Path) -> None:
    from drivepipe.schema import CATEGORIES
    from drivepipe.vehicle import EGO_FRONT_M

    # a stopped car 1 m beyond the ego's front bumper on its lane, a walker 3 m to its right (CARLA y = +3)
    car = _other(7, "vehicle.tesla.model3", EGO_FRONT_M + 1.0 + 2.0, 0.0)
    walker = _other(8, "walker.pedestrian.0001", 10.0, 3.0, extent=(0.3, 0.3, 0.9))
    bike = _other(9, "vehicle.bh.crossbike", 20.0, -4.0, yaw_deg=-90.0, extent=(0.8, 0.4, 0.8), wheels="2")
    world = FakeWorld(others=[car, walker, bike])
    backend = CarlaBackend(_cfg(), carla_module=make_fake_carla(world), rig=_rig())
    backend.reset(_scenario(tmp_path))
    res = backend.step(Action(steer_rad=0.0, accel_mps2=0.0))
    assert res.info["ttc_s"] == pytest.approx(0.5, abs=0.11)  # 1 m at the fake ego's 2 m/s
    assert res.bundle.annotations.boxes.center.shape == (0, 3)  # not privileged: no ground truth for the agent
    backend.privileged = True
    boxes = backend.step(Action(steer_rad=0.0, accel_mps2=0.0)).bundle.annotations.boxes
    by_id = dict(zip(boxes.track_id.tolist(), range(len(boxes))))
    assert set(by_id) == {7, 8, 9}  # the ego and the sensors are not boxes
    assert [CATEGORIES[boxes.category[by_id[k]]] for k in (7, 8, 9)] == ["vehicle", "pedestrian", "bicycle"]
    np.testing.assert_allclose(boxes.center[by_id[8], :2], [10.0, -3.0], atol=1e-9)  # CARLA right -> our -y
    np.testing.assert_allclose(boxes.size[by_id[7]], [4.0, 2.0, 1.6])
    assert boxes.yaw[by_id[9]] == pytest.approx(np.pi / 2)  # CARLA yaw -90 deg (clockwise) -> +90 deg ours
    backend.close()


def test_tick_timeout_mid_route_is_a_failed_row_and_cleans_up(tmp_path: Path) -> None:
    world = FakeWorld(fail_tick_at=4)
    backend = CarlaBackend(_cfg(), carla_module=make_fake_carla(world), rig=_rig())
    cfg = replace(_cfg(), carla_eval=replace(_cfg().carla_eval, max_failure_rate=1.0))
    metrics = run_scenarios(cfg, backend, ScriptedAgent(), [_scenario(tmp_path)], tmp_path / "out")
    assert metrics["failed"] == 1 and metrics["route_completion"] is None
    assert "RuntimeError" in metrics["failures"]["Town01/7"]
    assert all(s.destroyed for s in world.sensors) and world.applied[-1] == (False, None)
    assert "failed,RuntimeError" in (tmp_path / "out" / "details" / "scenarios.csv").read_text()


def test_version_mismatch_refused() -> None:
    backend = CarlaBackend(_cfg(), carla_module=make_fake_carla(FakeWorld(), server_version="0.9.15"))
    with pytest.raises(BackendUnavailable, match="version mismatch"):
        backend.probe()


def test_probe_retries_are_bounded() -> None:
    backend = CarlaBackend(_cfg(retries=3), carla_module=make_fake_carla(FakeWorld(), fail_probe=True))
    with pytest.raises(BackendUnavailable, match="4 tries"):
        backend.probe()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_client_no_server_is_unavailable_quickly() -> None:
    pytest.importorskip("carla")
    probe_s = 1.0
    backend = CarlaBackend(_cfg(port=_closed_port(), probe_timeout_s=probe_s, retries=0))
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"no CARLA server answered at 127\.0\.0\.1:\d+ within 1s"):
        backend.probe()
    assert time.monotonic() - t0 < probe_s + 2.0


def test_cli_records_unavailable_carla_for_real(tmp_path: Path) -> None:
    pytest.importorskip("carla")
    import json

    import yaml

    from drivepipe.cli.main import main
    from drivepipe.config import from_dict, to_dict

    params = {"carla_eval": {"backend": "carla", "on_unavailable": "record",
                             "carla": {"port": _closed_port(), "probe_timeout_s": 0.5, "retries": 0}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(from_dict(params))))  # a file needs every section
    out = tmp_path / "reports"
    rc = main(["carla-eval", "--params", str(tmp_path / "params.yaml"), "--out", str(out),
               "--checkpoints", str(tmp_path / "none"), "--data", str(tmp_path / "none")])
    metrics = json.loads((out / "metrics.json").read_text())
    assert rc == 0 and metrics["status"] == "backend_unavailable" and metrics["driving_score"] is None
    assert (out / "details" / "resolved_config.json").is_file()
    params["carla_eval"]["on_unavailable"] = "fail"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(from_dict(params))))  # a file needs every section
    assert main(["carla-eval", "--params", str(tmp_path / "params.yaml"), "--out", str(out)]) == 2


def test_camera_rotation_to_carla_frame() -> None:
    from drivepipe.sim.carla_backend import _rotation_from_cam
    from drivepipe.world.rig import camera_rotation

    T = np.eye(4)
    T[:3, :3] = camera_rotation(np.deg2rad(90.0), np.deg2rad(5.0))  # our left-looking camera, tilted down 5 deg
    pitch, yaw, roll = _rotation_from_cam(T)
    assert yaw == pytest.approx(-90.0) and pitch == pytest.approx(-5.0) and roll == pytest.approx(0.0, abs=1e-6)


def test_same_scenarios_scorer_and_light_input_as_embedded(tmp_path: Path) -> None:
    """The CARLA backend takes the shared ClosedLoopScenario, hands the server's light to the agent on the route
    (like the embedded backend) and its step rows carry every scorer column."""
    from drivepipe.schema import LIGHT_CODES
    from drivepipe.sim.scorer import STEP_COLUMNS, score_episode

    world = FakeWorld()
    world.light = _Obj(id=5, get_transform=lambda: _Obj(location=_Obj(x=20.0, y=-4.0, z=0.0)))
    backend = CarlaBackend(_cfg(), carla_module=make_fake_carla(world), rig=_rig())
    bundle = backend.reset(_scenario(tmp_path))
    lights = bundle.annotations.route_lights
    assert lights.shape == (1, 3) and int(lights[0, 2]) == LIGHT_CODES.index("red")
    assert abs(lights[0, 1]) < 1.0 and 15.0 < lights[0, 0] < 25.0  # on the route, where the light is
    rows = [backend.step(Action(accel_mps2=1.0)).info for _ in range(3)]
    backend.close()
    assert set(STEP_COLUMNS) <= set(rows[0])
    ep = score_episode(rows, 0.1, 2.0)
    assert ep["route_length_m"] == pytest.approx(90.0)  # the whole route to the goal
    assert ep["route_completion"] == 0.0  # the stand-in server never moves the ego: standing still scores 0
