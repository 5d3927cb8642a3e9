"""Config loading: valid files load; every kind of bad value is refused naming file and key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rise.config import (
    ConfigError,
    ExperimentConfig,
    RobotConfig,
    RobotKind,
    load_experiment,
    load_robot,
)
from rise.config.schema import describe_fields, from_mapping, load
from support import ROOT

SIM = ROOT / "config" / "robots" / "sim.yaml"


def sim_data() -> dict:
    return yaml.safe_load(SIM.read_text())


def write(tmp_path: Path, data, name="robot.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def refused(tmp_path, data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_robot(str(write(tmp_path, data)))
    return info.value


def test_shipped_configs_load():
    robot = load_robot("sim")
    assert robot.kind is RobotKind.SIM
    assert robot.arm.joint_names == ("waist", "shoulder", "elbow", "forearm_roll", "wrist_pitch",
                                     "wrist_roll", "gripper")
    assert robot.camera_names == ("front", "wrist")
    assert robot.control_rate_hz == 30.0
    assert load_experiment().robot == "sim"


def test_every_shipped_robot_config_loads():
    from rise.config import robot_names

    assert {"sim", "real_example"} <= set(robot_names())
    for name in robot_names():
        assert load_robot(name).name == name


def test_configs_are_frozen():
    robot = load_robot("sim")
    with pytest.raises(dataclasses.FrozenInstanceError):
        robot.control_rate_hz = 10.0


def test_wrong_type_names_file_and_key(tmp_path):
    data = sim_data()
    data["control_rate_hz"] = "fast"
    error = refused(tmp_path, data)
    assert error.source.endswith("robot.yaml")
    assert error.key == "control_rate_hz"
    assert "expected a number" in str(error) and "'fast'" in str(error)


def test_unknown_key_suggests_the_close_one(tmp_path):
    data = sim_data()
    data["contol_rate_hz"] = data.pop("control_rate_hz")
    error = refused(tmp_path, data)
    assert error.key == "contol_rate_hz"
    assert "did you mean 'control_rate_hz'" in str(error)


def test_nested_key_path_in_error(tmp_path):
    data = sim_data()
    data["arm"]["joints"][2]["max_velocity"] = -1.0
    error = refused(tmp_path, data)
    assert error.key == "arm.joints[2].max_velocity"
    assert "> 0" in error.message


def test_limits_must_be_ordered_and_home_within_them(tmp_path):
    data = sim_data()
    data["arm"]["joints"][0]["lower"] = 3.0
    assert refused(tmp_path, data).key == "arm.joints[0].upper"
    data = sim_data()
    data["arm"]["home"][1] = 5.0
    error = refused(tmp_path, data)
    assert error.key == "arm.home[1]" and "shoulder" in error.message


def test_limits_wider_than_the_urdf_are_refused(tmp_path):
    data = sim_data()
    data["arm"]["joints"][1]["upper"] = 2.5  # URDF: 1.9
    error = refused(tmp_path, data)
    assert error.key == "arm.joints[1].upper" and "URDF limit 1.9" in error.message


def test_joint_missing_from_urdf(tmp_path):
    data = sim_data()
    data["arm"]["joints"][0]["name"] = "waste"
    error = refused(tmp_path, data)
    assert error.key == "arm.joints[0].name" and "did you mean 'waist'" in error.message


def test_enum_and_cross_field_rules(tmp_path):
    data = sim_data()
    data["kind"] = "simulated"
    assert "expected one of ['sim', 'real']" in refused(tmp_path, data).message
    data = sim_data()
    data["cameras"][1]["name"] = "front"
    assert refused(tmp_path, data).key == "cameras[1].name"
    data = sim_data()
    data["cameras"][0]["driver"] = "opencv"
    data["cameras"][0]["device"] = "/dev/video0"
    assert refused(tmp_path, data).key == "cameras[0].driver"


def test_missing_required_key(tmp_path):
    data = sim_data()
    del data["urdf"]
    error = refused(tmp_path, data)
    assert error.key == "urdf" and "missing required key" in error.message


def test_yaml_problems(tmp_path):
    error = refused(tmp_path, "name: sim\nname: other\n")
    assert "duplicate key 'name'" in error.message and error.key == "line 2"
    error = refused(tmp_path, "name: [unclosed\n")
    assert "invalid YAML" in error.message
    with pytest.raises(ConfigError, match="file not found"):
        load_robot(str(tmp_path / "absent.yaml"))


def test_unknown_robot_name_suggests():
    with pytest.raises(ConfigError, match="did you mean 'sim'"):
        load_robot("sin")


def test_experiment_validation(tmp_path):
    path = write(tmp_path, {"name": "bad name!", "seed": 1}, "exp.yaml")
    with pytest.raises(ConfigError, match="exp.yaml: name: expected letters"):
        load(ExperimentConfig, path)
    path = write(tmp_path, {"name": "x", "seed": -1}, "exp.yaml")
    with pytest.raises(ConfigError, match="seed: expected a value >= 0"):
        load(ExperimentConfig, path)


def test_every_field_is_documented():
    for cls in (RobotConfig, ExperimentConfig):
        for key, _, doc in describe_fields(cls):
            assert doc, f"{cls.__name__}.{key} has no doc"


def test_cli_reports_one_line_without_traceback(tmp_path):
    data = sim_data()
    data["arm"]["joints"][0]["lower"] = "low"
    path = write(tmp_path, data)
    result = subprocess.run(
        [sys.executable, "-m", "rise.cli", "config", "check", "--robot", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"rise: error: {path}: arm.joints[0].lower: expected a number, got 'low'"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "kind", "urdf", "control_rate_hz", "arm",
                                        "cameras", "extra"]), json_values))
def test_fuzzed_configs_only_ever_raise_config_errors(data):
    try:
        from_mapping(RobotConfig, data, source="fuzz.yaml")
    except ConfigError as error:
        assert str(error).startswith("fuzz.yaml")
