"""Progress value model and its training maths: shapes, checkpoints, targets, loss phases, target
network, metrics, and a toy run that must learn progress and tell failures apart."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from rise.config.schema import ConfigError
from rise.models.value import (
    Backbone,
    ValueConfig,
    ValueModel,
    preprocess_images,
    value_config,
)
from rise.models.value_training import (
    TargetMode,
    ValueLoss,
    ValueTrainer,
    ValueTrainingConfig,
    episode_dones,
    episode_rewards,
    progress_correlation,
    progress_targets,
    success_auc,
    td_targets,
)

TINY = ValueConfig(image_size=16, num_views=2, patch_size=8, hidden_size=32, layers=1, heads=2,
                   intermediate_size=64, head_hidden=32, instruction_buckets=64)


def tiny(**overrides) -> ValueConfig:
    return dataclasses.replace(TINY, **overrides)


def random_batch(config: ValueConfig, batch: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, config.num_views, 3, config.image_size, config.image_size)
    return {
        "images": torch.rand(shape, generator=g) * 2 - 1,
        "next_images": torch.rand(shape, generator=g) * 2 - 1,
        "progress": torch.rand(batch, generator=g),
        "is_success_episode": torch.arange(batch) % 2 == 0,
        "reward": torch.tensor([0.0, 1.0, 0.0, -1.0, 0.0, 0.0])[:batch],
        "done": torch.tensor([False, True, False, True, False, False])[:batch],
    }


# --- model ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("use_instruction", [False, True])
def test_value_shapes(views, use_instruction):
    torch.manual_seed(0)
    config = tiny(num_views=views, use_instruction=use_instruction)
    model = ValueModel(config)
    images = torch.rand(3, views, 3, 16, 16) * 2 - 1
    texts = ["put the brick in the red bin", "close the box", "pack the cube"]
    values = model(images, texts if use_instruction else None)
    assert values.shape == (3,) and values.dtype == torch.float32
    if use_instruction:
        other = model(images, ["close the box"] * 3)
        assert not torch.allclose(values[[0, 2]], other[[0, 2]])
        with pytest.raises(ValueError, match="instruction"):
            model(images)
    with pytest.raises(ValueError, match="expected images"):
        model(torch.zeros(3, views + 1, 3, 16, 16), texts)


def test_siglip_backbone_shapes():
    model = ValueModel(tiny(backbone=Backbone.SIGLIP, fusion_layers=0))
    assert model(torch.zeros(2, 2, 3, 16, 16)).shape == (2,)


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(1)
    model = ValueModel(tiny(use_instruction=True)).eval()
    images = torch.rand(4, 2, 3, 16, 16) * 2 - 1
    texts = ["sort bricks"] * 2 + ["close box"] * 2
    folder = model.save(tmp_path / "value")
    assert sorted(p.name for p in folder.iterdir()) == ["backbone.json", "config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text())["backbone"] == "vit"
    loaded = ValueModel.load(folder).eval()
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(model(images, texts), loaded(images, texts))


def test_backbone_initialised_from_local_pretrained_folder(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(2)
    backbone = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, image_size=16, patch_size=8), add_pooling_layer=False)
    backbone.save_pretrained(tmp_path / "vit")
    model = ValueModel(tiny(pretrained_path=str(tmp_path / "vit")))
    for name, weight in backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], weight), name
    # A backbone config the value config cannot express (layer-norm epsilon) survives save/load.
    backbone.config.layer_norm_eps = 1e-6
    backbone.save_pretrained(tmp_path / "vit_eps")
    model = ValueModel(tiny(pretrained_path=str(tmp_path / "vit_eps"))).eval()
    (tmp_path / "vit_eps" / "model.safetensors").unlink()  # loading the checkpoint must not need it
    loaded = ValueModel.load(model.save(tmp_path / "value")).eval()
    assert loaded.backbone.config.layer_norm_eps == 1e-6
    images = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    with pytest.raises(ValueError, match="pretrained backbone"):
        ValueModel(tiny(pretrained_path=str(tmp_path / "vit"), layers=2))


def test_configs_and_preprocessing():
    config = value_config("cpu_default")
    assert (config.image_size, config.num_views, config.patch_size, config.hidden_size) == (64, 2, 8, 128)
    assert 0.8e6 < ValueModel(config).num_parameters() < 1.1e6
    assert value_config("large").image_size == 224
    with pytest.raises(KeyError, match="did you mean 'cpu_default'"):
        value_config("cpu_defualt")
    with pytest.raises(ConfigError, match="patch_size"):
        from rise.config.schema import from_mapping
        from_mapping(ValueConfig, {"image_size": 20, "patch_size": 8}, source="test")
    frames = np.zeros((2, 2, 32, 32, 3), np.uint8)
    frames[:, 1] = 255
    x = preprocess_images(frames, 16)
    assert x.shape == (2, 2, 3, 16, 16)
    assert torch.all(x[:, 0] == -1.0) and torch.all(x[:, 1] == 1.0)


# --- targets and loss ----------------------------------------------------------------------------

def test_progress_targets():
    np.testing.assert_allclose(progress_targets([3, 1, 5]), [0, 0.5, 1, 1, 0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(progress_targets(2), [0.0, 1.0])


def test_episode_rewards_only_at_the_end():
    np.testing.assert_array_equal(episode_rewards(5, True), [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(episode_rewards(4, False), [0, 0, 0, -1])
    np.testing.assert_array_equal(episode_rewards(1, False), [-1])
    np.testing.assert_array_equal(episode_dones(3), [False, False, True])


def test_td_target_bootstraps_only_inside_episodes():
    # One success of length 3 then one failure of length 2: rewards and dones from the helpers.
    rewards = np.concatenate([episode_rewards(3, True), episode_rewards(2, False)])
    dones = np.concatenate([episode_dones(3), episode_dones(2)])
    v_next = torch.tensor([0.5, 0.8, 100.0, 0.4, -100.0])  # values at terminal steps must be ignored
    targets = td_targets(v_next, rewards, dones, gamma=0.9)
    torch.testing.assert_close(targets, torch.tensor([0.45, 0.72, 1.0, 0.36, -1.0]))


def test_loss_phases_and_progress_mask():
    loss = ValueLoss(ValueTrainingConfig(progress_only_steps=10, td_weight=0.5, gamma=0.9))
    assert [loss.td_weight_at(k) for k in (0, 9, 10, 50)] == [0.0, 0.0, 0.5, 0.5]
    batch = {"progress": torch.tensor([0.0, 1.0, 0.5]),
             "is_success_episode": torch.tensor([True, True, False]),
             "reward": torch.tensor([0.0, 1.0, -1.0]), "done": torch.tensor([False, True, True])}
    values = torch.tensor([0.2, 0.6, 0.0])
    early = loss(values, batch, step=9)  # no next values needed in the progress-only phase
    progress = (0.2**2 + 0.4**2) / 2  # the failed episode's frame is not in the progress loss
    assert early["loss"].item() == pytest.approx(progress) and early["td_weight"] == 0
    late = loss(values, batch, step=10, values_next_target=torch.tensor([1.0, 7.0, 7.0]))
    td = ((0.2 - 0.9) ** 2 + (0.6 - 1.0) ** 2 + (0.0 + 1.0) ** 2) / 3
    assert late["td_loss"].item() == pytest.approx(td)
    assert late["loss"].item() == pytest.approx(progress + 0.5 * td)
    with pytest.raises(ValueError, match="values_next_target"):
        loss(values, batch, step=10)


# --- trainer -------------------------------------------------------------------------------------

def test_target_network_follows_ema_not_backprop():
    torch.manual_seed(3)
    model = ValueModel(TINY)
    trainer = ValueTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                           ValueTrainingConfig(progress_only_steps=0, target_ema=0.75, max_grad_norm=0))
    before = [p.detach().clone() for p in trainer.target_model.parameters()]
    losses = trainer.step(random_batch(TINY))
    assert losses["td_weight"] == 1.0 and losses["td_loss"] > 0
    online = list(model.parameters())
    target = list(trainer.target_model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in target)
    assert any(not torch.equal(t, o) for t, o in zip(target, online, strict=True))
    for t, old, o in zip(target, before, online, strict=True):
        torch.testing.assert_close(t, 0.75 * old + 0.25 * o.detach())


def test_stop_gradient_mode_has_no_target_network():
    model = ValueModel(TINY)
    trainer = ValueTrainer(model, torch.optim.AdamW(model.parameters(), lr=1e-3),
                           ValueTrainingConfig(progress_only_steps=1, target=TargetMode.STOP_GRADIENT))
    assert trainer.target_model is None
    assert trainer.step(random_batch(TINY))["td_weight"] == 0.0
    assert trainer.step(random_batch(TINY, seed=1))["td_weight"] == 1.0


def test_trainer_state_resumes_exactly_through_safetensors(tmp_path):
    config = ValueTrainingConfig(progress_only_steps=1)

    def make(seed):
        torch.manual_seed(seed)
        model = ValueModel(TINY)
        return ValueTrainer(model, torch.optim.AdamW(model.parameters(), lr=1e-3), config)

    first = make(0)
    for seed in range(2):
        first.step(random_batch(TINY, seed=seed))
    save_file(first.state_dict(), str(tmp_path / "trainer.safetensors"))
    second = make(1)  # different initial weights: everything must come from the file
    second.load_state_dict(load_file(str(tmp_path / "trainer.safetensors")))
    assert second.step_count == 2
    batch = random_batch(TINY, seed=5)
    assert first.step(batch) == second.step(batch)
    state, resumed = first.state_dict(), second.state_dict()
    assert state.keys() == resumed.keys()
    for name, value in state.items():
        assert torch.equal(value, resumed[name]), name


# --- metrics -------------------------------------------------------------------------------------

def test_auc_and_correlation_hand_cases():
    labels = [True, True, False, False]
    assert success_auc([0.9, 0.8, 0.1, -1.0], labels) == 1.0
    assert success_auc([-1.0, 0.1, 0.8, 0.9], labels) == 0.0
    assert success_auc([0.5, 0.5, 0.5, 0.5], labels) == 0.5
    assert success_auc([0.9, 0.3, 0.3, 0.1], labels) == pytest.approx(0.875)  # one tie: 3.5 / 4
    with pytest.raises(ValueError):
        success_auc([0.1, 0.2], [True, True])
    assert progress_correlation([0, 1, 2, 3], [0, 2, 4, 6]) == pytest.approx(1.0)
    assert progress_correlation([3, 2, 1, 0], [0, 1, 2, 3]) == pytest.approx(-1.0)
    assert progress_correlation([1, 0, 0, 1], [0, 1, 2, 3]) == pytest.approx(0.0)


# --- toy training --------------------------------------------------------------------------------

def toy_episodes(count: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Alternating successes and failures of 8-15 frames. Brightness rises from -0.5 to 1 with t/T in
    successes; failures rise alike for the first 60 % and then dim to -1 at their end."""
    episodes = []
    for i in range(count):
        success = i % 2 == 0
        progress = progress_targets(int(rng.integers(8, 16)))
        brightness = -0.5 + 1.5 * progress
        if not success:
            peak = -0.5 + 1.5 * 0.6
            brightness = np.where(progress <= 0.6, brightness, peak + (progress - 0.6) / 0.4 * (-1 - peak))
        noise = 0.1 * rng.standard_normal((len(progress), 2, 3, 16, 16))
        images = np.clip(brightness[:, None, None, None, None] + noise, -1, 1).astype(np.float32)
        episodes.append((images, progress, success))
    return episodes


def toy_dataset(episodes) -> dict[str, torch.Tensor]:
    columns = {k: [] for k in ("images", "next_images", "progress", "is_success_episode", "reward", "done")}
    for images, progress, success in episodes:
        length = len(progress)
        columns["images"].append(images)
        columns["next_images"].append(np.concatenate([images[1:], images[-1:]]))
        columns["progress"].append(progress)
        columns["is_success_episode"].append(np.full(length, success))
        columns["reward"].append(episode_rewards(length, success))
        columns["done"].append(episode_dones(length))
    return {k: torch.from_numpy(np.concatenate(v)) for k, v in columns.items()}


def test_toy_training_learns_progress_and_separates_failures():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train, held_out = toy_dataset(toy_episodes(16, rng)), toy_episodes(10, rng)
    model = ValueModel(TINY)
    trainer = ValueTrainer(model, torch.optim.AdamW(model.parameters(), lr=3e-3),
                           ValueTrainingConfig(progress_only_steps=100, target_ema=0.9))
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        index = torch.randint(0, len(train["progress"]), (32,), generator=generator)
        losses = trainer.step({k: v[index] for k, v in train.items()})
    assert losses["td_weight"] == 1.0
    model.eval()
    with torch.no_grad():
        traces = [(model(torch.from_numpy(images)).numpy(), progress, success)
                  for images, progress, success in held_out]
    successes = [(v, p) for v, p, s in traces if s]
    correlation = progress_correlation(np.concatenate([v for v, _ in successes]),
                                       np.concatenate([p for _, p in successes]))
    auc = success_auc([v[-1] for v, _, _ in traces], [s for _, _, s in traces])
    assert correlation > 0.8 and auc > 0.9, (correlation, auc)
