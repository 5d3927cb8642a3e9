"""Advantage-conditioned policy: shapes, configs, the deployable wrapper's save/load (JSON +
safetensors only), and a toy run in which the actions must follow the advantage bin."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rise.config.schema import FieldError
from rise.models.checkpoint import CheckpointError, verify
from rise.models.episodes import NormStats, resize_frames
from rise.models.value import preprocess_images
from rise.policy.advantage import AdvantageBins
from rise.policy.data import to_tensors
from rise.policy.model import POLICY_CONFIGS, PolicyConfig, PolicyModel, policy_config
from rise.policy.policy_io import FILES, Policy

CAMERAS = ("front", "wrist")


def observation(config: PolicyConfig, batch: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    side = config.image_size
    return {
        "images": torch.rand(batch, config.num_views, 3, side, side, generator=g) * 2 - 1,
        "state": torch.randn(batch, config.state_dim, generator=g),
        "bins": torch.arange(batch) % (config.num_bins + 1),
    }


def tiny_policy(seed: int = 0, **overrides) -> Policy:
    torch.manual_seed(seed)
    config = policy_config("tiny", **overrides)
    rng = np.random.default_rng(seed)
    stats = [NormStats(rng.normal(size=d).astype(np.float32), rng.uniform(0.5, 2.0, d).astype(np.float32))
             for d in (config.state_dim, config.action_dim)]
    return Policy(PolicyModel(config).eval(), *stats, AdvantageBins.uniform(config.num_bins), cameras=CAMERAS)


def frames(seed: int = 0, size: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8) for name in CAMERAS}


# --- configs and shapes --------------------------------------------------------------------------

def test_named_configs_and_did_you_mean():
    tiny = policy_config("tiny")
    assert (tiny.image_size, tiny.patch_size, tiny.hidden_size, tiny.layers) == (16, 8, 32, 1)
    assert (tiny.head_width, tiny.head_depth, tiny.horizon) == (32, 1, 3)
    assert policy_config("cpu_default") == PolicyConfig()
    large = POLICY_CONFIGS["large"]
    assert (large.image_size, large.num_views, large.horizon, large.action_dim, large.use_instruction) == (
        224, 3, 50, 14, True)
    assert policy_config("tiny", action_dim=14).action_dim == 14
    with pytest.raises(KeyError, match="did you mean 'cpu_default'"):
        policy_config("cpu_defualt")
    with pytest.raises(FieldError, match="patch_size"):
        PolicyConfig(image_size=20, patch_size=8)
    with pytest.raises(FieldError, match="head_width"):
        PolicyConfig(head_width=130)


@pytest.mark.parametrize("use_instruction", [False, True])
def test_policy_shapes(use_instruction):
    torch.manual_seed(0)
    config = policy_config("tiny", num_views=3, use_instruction=use_instruction)
    model = PolicyModel(config)
    obs = observation(config, batch=3)
    texts = ["put the brick in the red bin", "close the box", "pack the cube"] if use_instruction else None
    noisy = torch.randn(3, config.horizon, config.action_dim)
    v = model(noisy, torch.rand(3), obs["images"], obs["state"], obs["bins"], texts)
    assert v.shape == (3, 3, 7) and v.dtype == torch.float32
    assert model.encode(obs["images"], obs["state"], obs["bins"], texts).shape == (
        3, model.num_observation_tokens, config.head_width)
    g = torch.Generator().manual_seed(0)
    loss = model.loss(obs["images"], obs["state"], noisy, obs["bins"], g, instructions=texts)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.bin_embedding.weight.grad is not None
    actions = model.sample(obs["images"], obs["state"], obs["bins"], steps=3, instructions=texts)
    assert actions.shape == (3, 3, 7)
    if use_instruction:
        with pytest.raises(ValueError, match="instructions"):
            model.sample(obs["images"], obs["state"], obs["bins"])


def test_model_refuses_bad_inputs():
    config = policy_config("tiny")
    model = PolicyModel(config)
    obs = observation(config, batch=2)
    noisy = torch.zeros(2, 3, 7)
    with pytest.raises(ValueError, match="images"):
        model(noisy, torch.rand(2), obs["images"][:, :1], obs["state"], obs["bins"])
    with pytest.raises(ValueError, match="state"):
        model(noisy, torch.rand(2), obs["images"], obs["state"][:, :3], obs["bins"])
    with pytest.raises(ValueError, match=r"bins: expected indices in \[0, 10\]"):
        model(noisy, torch.rand(2), obs["images"], obs["state"], torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="noisy_actions"):
        model(torch.zeros(2, 5, 7), torch.rand(2), obs["images"], obs["state"], obs["bins"])
    with pytest.raises(ValueError, match="steps"):
        model.sample(obs["images"], obs["state"], obs["bins"], steps=0)


def test_encoder_initialised_from_local_pretrained_folder(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(2)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=16, patch_size=8), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    model = PolicyModel(policy_config("tiny", pretrained_path=str(tmp_path / "vit")))
    for name, weight in vit.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], weight), name
    with pytest.raises(ValueError, match="pretrained_path"):
        PolicyModel(policy_config("tiny", pretrained_path=str(tmp_path / "vit"), layers=2))


# --- deployable policy ---------------------------------------------------------------------------

def test_predict_returns_absolute_targets_and_checks_inputs():
    policy = tiny_policy()
    state = np.linspace(-1, 1, 7)
    g = torch.Generator().manual_seed(3)
    targets = policy.predict(frames(), state, steps=4, generator=g)
    assert targets.shape == (3, 7) and targets.dtype == np.float32
    stacked = np.stack([frames()[c] for c in CAMERAS])
    g = torch.Generator().manual_seed(3)
    again = policy.predict(stacked, state, bin=policy.bins.best, steps=4, generator=g)
    np.testing.assert_array_equal(targets, again)
    unknown = policy.predict(stacked, state, bin=policy.bins.unknown, steps=4)
    assert unknown.shape == (3, 7)
    with pytest.raises(ValueError, match="wrist"):
        policy.predict({"front": frames()["front"]}, state)
    with pytest.raises(ValueError, match="state"):
        policy.predict(frames(), state[:3])
    with pytest.raises(ValueError, match="bin"):
        policy.predict(frames(), state, bin=11)
    with pytest.raises(ValueError, match="images"):
        policy.predict(stacked[:1], state)
    with pytest.raises(ValueError, match="action_stats"):
        Policy(policy.model, policy.state_stats, NormStats(np.zeros(3), np.ones(3)), policy.bins)
    with pytest.raises(ValueError, match="bins"):
        Policy(policy.model, policy.state_stats, policy.action_stats, AdvantageBins.uniform(5))


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    policy = tiny_policy(seed=4, use_instruction=True)
    folder = policy.save(tmp_path / "policy", step=12, metrics={"loss": 0.5})
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, "manifest.json"])
    assert verify(folder, kind="policy").step == 12
    assert json.loads((folder / "config.json").read_text())["cameras"] == list(CAMERAS)
    loaded = Policy.load(folder)
    assert loaded.config == policy.config and loaded.bins == policy.bins and loaded.cameras == CAMERAS
    np.testing.assert_array_equal(loaded.action_stats.std, policy.action_stats.std)
    for (name, a), (_, b) in zip(policy.model.state_dict().items(), loaded.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    state = np.arange(7, dtype=np.float32) / 7
    for bin in (0, 9, None):
        kwargs = {"bin": bin, "steps": 5, "instruction": "close the box"}
        first = policy.predict(frames(1), state, generator=torch.Generator().manual_seed(7), **kwargs)
        second = loaded.predict(frames(1), state, generator=torch.Generator().manual_seed(7), **kwargs)
        np.testing.assert_array_equal(first, second)
    assert Policy.load(tiny_policy().save(tmp_path / "no_manifest")).config == policy_config("tiny")


@pytest.mark.parametrize("weight", ["model.pt", "weights.pkl"])
def test_load_refuses_pickle_files(tmp_path, weight):
    folder = tiny_policy().save(tmp_path / "policy")
    (folder / weight).write_bytes(b"\x80\x04not opened")
    with pytest.raises(CheckpointError, match=rf"{weight}: refused.*pickles are never opened"):
        Policy.load(folder)


@pytest.mark.parametrize("name", FILES)
def test_load_names_a_missing_file(tmp_path, name):
    folder = tiny_policy().save(tmp_path / "policy")
    (folder / name).unlink()
    with pytest.raises(CheckpointError, match=rf"{name}: missing"):
        Policy.load(folder)


def test_load_names_a_bad_file(tmp_path):
    folder = tiny_policy().save(tmp_path / "policy")
    (folder / "bins.json").write_text('{"edges": [1.0, 0.0]}')
    with pytest.raises(CheckpointError, match="bins.json: invalid.*edges must be strictly increasing"):
        Policy.load(folder)
    tiny_policy().save(folder)
    (folder / "normalization.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="normalization.json: not readable JSON"):
        Policy.load(folder)
    tiny_policy().save(folder)
    config = json.loads((folder / "config.json").read_text())
    config["config"]["head_width"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model.safetensors: does not fit config.json"):
        Policy.load(folder)
    config["config"]["head_wdith"] = config["config"].pop("head_width")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: head_wdith: unknown key; did you mean"):
        Policy.load(folder)
    config["format"] = "rise-value-v1"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: format 'rise-value-v1'"):
        Policy.load(folder)


# --- learning ------------------------------------------------------------------------------------

def test_policy_conditions_on_the_advantage_bin():
    """Same observations, two bins, opposite actions: the sampled actions must follow the bin."""
    torch.manual_seed(0)
    config = policy_config("tiny")
    model = PolicyModel(config)
    data = observation(config, batch=8, seed=1)
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(250):
        index = torch.randint(0, 8, (16,), generator=g)
        bins = torch.where(torch.rand(16, generator=g) < 0.5, 0, 9)
        shape = (16, config.horizon, config.action_dim)
        target = torch.where(bins == 0, -0.8, 0.8)[:, None, None] + 0.05 * torch.randn(shape, generator=g)
        loss = model.loss(data["images"][index], data["state"][index], target, bins, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images, state = data["images"], data["state"]
    low = model.sample(images, state, torch.full((8,), 0), generator=torch.Generator().manual_seed(1))
    high = model.sample(images, state, torch.full((8,), 9), generator=torch.Generator().manual_seed(1))
    assert (high.mean() - low.mean()).item() > 1.0
    assert low.mean().item() < -0.4 and high.mean().item() > 0.4


def test_training_and_deployment_turn_the_same_frames_into_equal_tensors():
    """One resizer for every model input: a 96x96 camera frame becomes the same tensor whether it
    went through the training data path (load_episodes' resize_frames, then to_tensors) or the
    deployed policy's (Policy.predict's preprocessing), and the value model's path agrees."""
    policy = tiny_policy()
    size = policy.config.image_size
    rng = np.random.default_rng(3)
    raw = {name: rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for name in CAMERAS}
    stored = np.stack([resize_frames(raw[name][None], (size, size))[0] for name in CAMERAS])[None]
    batch = {"images": stored, "states": np.zeros((1, policy.config.state_dim), np.float32),
             "actions": np.zeros((1, policy.config.horizon, policy.config.action_dim), np.float32),
             "bins": np.zeros(1, np.int64)}
    training = to_tensors(batch, policy.state_stats, policy.action_stats, size)["images"]
    deployment = policy._images(raw)
    assert training.shape == deployment.shape == (1, 2, 3, size, size)
    assert torch.equal(training, deployment)
    unresized = to_tensors({**batch, "images": np.stack([raw[name] for name in CAMERAS])[None]},
                           policy.state_stats, policy.action_stats, size)["images"]
    assert torch.equal(unresized, deployment)  # rollout samples stored at camera size: the same
    value_input = preprocess_images(np.stack([raw[name] for name in CAMERAS]), size)
    assert torch.equal(value_input[None], deployment)
