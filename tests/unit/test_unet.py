"""The shared U-Net and its checkpoint contract: named parts, shapes, deep supervision, pretrained loading."""

from __future__ import annotations

import pytest
import torch

from cmrssl.networks.checkpoint import (
    freeze_parts,
    load_pretrained,
    prepare_finetuning,
    read_state_dict,
    scale_free_weights,
)
from cmrssl.networks.unet import CMRUNet

torch.set_num_threads(1)
TINY = (4, 8, 16, 32)


def _unet(**kwargs) -> CMRUNet:
    torch.manual_seed(kwargs.pop("seed", 0))
    return CMRUNet(in_channels=1, out_channels=4, channels=TINY, **kwargs)


def test_parts_shapes_and_bottleneck():
    net = _unet()
    top_level = {k.split(".")[0] for k in net.state_dict()}
    assert top_level == {"encoder", "decoder", "head"}
    features = net.encode(torch.randn(2, 1, 32, 48))
    assert [tuple(f.shape) for f in features] == [(2, 4, 32, 48), (2, 8, 16, 24), (2, 16, 8, 12), (2, 32, 4, 6)]
    assert net.feature_dim == 32 and net.divisor == 8
    assert net(torch.randn(2, 1, 32, 48)).shape == (2, 4, 32, 48)


def test_input_not_divisible_by_the_stride_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="not divisible by 8.*DivisiblePadd"):
        _unet()(torch.randn(1, 1, 30, 32))


def test_deep_supervision_stacks_levels_in_training_only():
    net = _unet(deep_supervision=True, num_deep_supervision_heads=2)
    assert {k.split(".")[0] for k in net.state_dict()} == {"encoder", "decoder", "head", "aux_heads"}
    x = torch.randn(2, 1, 32, 32)
    stacked = net.train()(x)
    assert stacked.shape == (2, 3, 4, 32, 32)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 4, 32, 32)
    with pytest.raises(ValueError, match="num_deep_supervision_heads"):
        CMRUNet(channels=TINY, deep_supervision=True, num_deep_supervision_heads=3)


def test_deep_supervision_flag_from_a_command_line_string():
    # `--network_def#deep_supervision false` arrives as the string "false", which bool() calls true
    net = _unet(deep_supervision="false")
    assert not net.aux_heads and net.train()(torch.randn(1, 1, 16, 16)).shape == (1, 4, 16, 16)
    assert len(_unet(deep_supervision="true").aux_heads) == 2
    with pytest.raises(ValueError, match="deep_supervision must be true or false, got 'flase'"):
        _unet(deep_supervision="flase")


def test_main_output_equal_with_and_without_deep_supervision():
    plain, supervised = _unet(seed=1), _unet(seed=1, deep_supervision=True)
    supervised.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), supervised.eval()(x))
        assert torch.allclose(plain.train()(x), supervised.train()(x)[:, 0])


def test_torchscript_export_keeps_both_modes():
    net = _unet(deep_supervision=True).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)


def test_a_stack_of_slices_is_segmented_slice_by_slice_in_script_too():
    """[B, C, H, W, D] (how MONAI Label and verify_net_in_out see a 3D model) = each slice alone."""
    net = _unet(deep_supervision=True).eval()
    stack = torch.randn(2, 1, 16, 24, 3)
    per_slice = torch.stack([net(stack[..., z]) for z in range(3)], dim=-1)
    assert torch.equal(net(stack), per_slice)
    assert torch.equal(torch.jit.script(net)(stack), per_slice)
    assert net.train()(stack).shape == (2, 3, 4, 16, 24, 3)  # deep supervision keeps the stack's layout


def test_load_pretrained_encoder_only_checkpoint(tmp_path):
    source, target = _unet(seed=1), _unet(seed=2)
    path = tmp_path / "simclr.pt"
    torch.save({k: v for k, v in source.state_dict().items() if k.startswith("encoder.")}, path)
    decoder_before = {k: v.clone() for k, v in target.decoder.state_dict().items()}
    report = load_pretrained(target, path)
    assert report.loaded_keys and all(k.startswith("encoder.") for k in report.loaded_keys)
    assert not [k for k in report.missing_keys if k.startswith("encoder.")]
    assert any(k.startswith("decoder.") for k in report.missing_keys)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(target.encoder.state_dict()[key], value)
    assert all(torch.equal(decoder_before[k], v) for k, v in target.decoder.state_dict().items())


def test_load_pretrained_ignores_other_heads_and_accepts_wrappers(tmp_path):
    source, target = _unet(seed=1), _unet(seed=2)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.projection.weight"] = torch.zeros(3)
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": state}, path)
    report = load_pretrained(target, path)
    assert "projection.weight" in report.ignored_keys and "head.conv.conv.weight" in report.ignored_keys
    assert set(report.loaded_keys) == {k for k in source.state_dict() if k.startswith(("encoder.", "decoder."))}


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("missing", "missing keys: encoder.stages.3"),
        ("shape", "shape mismatches: encoder.stages.0.conv1.conv.weight"),
        ("foreign", "unexpected keys: encoder.extra.weight"),
        ("nothing", "no weights under"),
    ],
)
def test_load_pretrained_refuses_mismatched_checkpoints_naming_file_and_keys(tmp_path, problem, expected):
    state = {k: v for k, v in _unet(seed=1).state_dict().items() if k.startswith("encoder.")}
    if problem == "missing":
        state = {k: v for k, v in state.items() if not k.startswith("encoder.stages.3")}
    elif problem == "shape":
        state = {k: v for k, v in CMRUNet(channels=(6, 8, 16, 32)).state_dict().items() if k.startswith("encoder.")}
    elif problem == "foreign":
        state["encoder.extra.weight"] = torch.zeros(1)
    else:
        state = {"conv.weight": torch.zeros(1)}
    path = tmp_path / f"{problem}.pt"
    torch.save(state, path)
    target = _unet(seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError) as caught:
        load_pretrained(target, path)
    assert str(path) in str(caught.value) and expected in str(caught.value)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items()), "partially loaded"


def test_read_state_dict_refuses_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable PyTorch checkpoint"):
        read_state_dict(junk)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_state_dict(tmp_path / "absent.pt")
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(ValueError, match="no state dict of tensors"):
        read_state_dict(empty)


def test_finetuning_modes(tmp_path):
    source = _unet(seed=1)
    path = tmp_path / "mim.pt"
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("head.")}, path)

    decoder_mode = prepare_finetuning(_unet(seed=2), str(path), "decoder")
    assert all(not p.requires_grad for p in decoder_mode.encoder.parameters())
    assert all(p.requires_grad for p in decoder_mode.decoder.parameters())
    assert torch.equal(decoder_mode.decoder.state_dict()["stages.0.transp_conv.conv.weight"],
                       source.decoder.state_dict()["stages.0.transp_conv.conv.weight"])

    all_mode = prepare_finetuning(_unet(seed=2), str(path), "ALL")
    assert all(p.requires_grad for p in all_mode.parameters())
    loaded = all_mode.encoder.state_dict()["stages.0.conv1.conv.weight"]  # the checkpoint's, at the fresh norm
    given = source.encoder.state_dict()["stages.0.conv1.conv.weight"]
    assert torch.allclose(loaded / loaded.norm(), given / given.norm(), atol=1e-6)
    fresh = _unet(seed=2).encoder.state_dict()["stages.0.conv1.conv.weight"]
    assert float(loaded.norm()) == pytest.approx(float(fresh.norm()))

    scratch = _unet(seed=2)
    assert prepare_finetuning(scratch, "", "scratch") is scratch
    with pytest.raises(ValueError, match="finetune_mode must be one of"):
        prepare_finetuning(_unet(), str(path), "frozen")
    with pytest.raises(ValueError, match="needs --pretrained_checkpoint"):
        prepare_finetuning(_unet(), "", "decoder")
    with pytest.raises(ValueError, match="with finetune_mode 'scratch'"):
        prepare_finetuning(_unet(), str(path), "scratch")
    with pytest.raises(ValueError, match="no part 'bottleneck'"):
        freeze_parts(_unet(), ["bottleneck"])


def test_finetuning_a_whole_segmentation_network_continues_its_heads(tmp_path):
    """A trained segmentation model (every part, as models/model.pt) continues whole in ``all`` and ``decoder``:
    re-initialising its output heads would throw away the trained classifier. Another class count, or a
    pretraining checkpoint, leaves them new."""
    source = _unet(seed=1, deep_supervision=True)
    whole = tmp_path / "model.pt"
    torch.save(source.state_dict(), whole)
    for mode in ("all", "decoder"):
        continued = prepare_finetuning(_unet(seed=2, deep_supervision=True), str(whole), mode)
        for key, value in source.state_dict().items():
            assert torch.equal(continued.state_dict()[key], value), (mode, key)
    other = CMRUNet(channels=TINY, out_channels=3, deep_supervision=True)
    before = {k: v.clone() for k, v in other.state_dict().items() if k.startswith(("head.", "aux_heads."))}
    prepare_finetuning(other, str(whole), "all")
    assert all(torch.equal(other.state_dict()[k], v) for k, v in before.items())


def test_multitask_unet_adds_the_pretext_loss_in_training_only():
    from monai.networks.blocks.dynunet_block import UnetOutBlock

    from cmrssl.losses.masked import MaskedMSELoss
    from cmrssl.losses.segmentation import MultiTaskLoss, PretextLoss, StackedDeepSupervisionLoss
    from cmrssl.networks.multitask import MultiTaskUNet
    from monai.losses import DiceCELoss

    unet = _unet(deep_supervision=True)
    network = MultiTaskUNet(unet, UnetOutBlock(2, TINY[0], 1), mask_patch_size=(8, 8), mask_ratio=0.75)
    assert {k.split(".")[0] for k in network.state_dict()} == {"encoder", "decoder", "head", "aux_heads", "pretext_head"}
    x, label = torch.randn(2, 1, 32, 32), torch.randint(0, 4, (2, 1, 32, 32))
    out = network.train()(x)
    assert out["pred"].shape == (2, 3, 4, 32, 32) and out["pretext"].shape == (2, 1, 32, 32)
    assert out["pretext_mask"].float().mean().item() == 0.75 and torch.equal(out["pretext_target"], x)
    segmentation = StackedDeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True))
    loss = MultiTaskLoss(segmentation, PretextLoss(), beta=0.5)
    total = loss(out, label)
    expected = segmentation(out["pred"], label) + 0.5 * MaskedMSELoss()(out["pretext"], x, out["pretext_mask"])
    assert torch.allclose(total, expected)
    total.backward()
    assert network.pretext_head.conv.conv.weight.grad is not None
    with torch.no_grad():
        assert network.eval()(x).shape == (2, 4, 32, 32)  # inference sees the plain segmentation
        assert torch.allclose(loss(network(x), label), DiceCELoss(to_onehot_y=True, softmax=True)(network(x), label))



def test_class_map_pretext_runs_only_on_the_alternate_schedule():
    """A position-prediction head (10 classes) has no labels on the segmentation batch: ``sum`` is refused;
    with ``alternate`` training returns the segmentation, and the pretext pass gives class logits scored
    by cross-entropy against the box map."""
    from monai.networks.blocks.dynunet_block import UnetOutBlock

    from cmrssl.losses.segmentation import PretextLoss
    from cmrssl.networks.multitask import MultiTaskUNet

    with pytest.raises(ValueError, match="multitask_schedule alternate"):
        MultiTaskUNet(_unet(), UnetOutBlock(2, TINY[0], 10))
    network = MultiTaskUNet(_unet(deep_supervision=True), UnetOutBlock(2, TINY[0], 10), schedule="alternate")
    assert network.pretext_task == "classes"
    x = torch.randn(2, 1, 32, 32)
    assert network.train()(x).shape == (2, 3, 4, 32, 32)  # the segmentation, deep supervision stacked
    network.pretext_pass = True
    out = network(x)
    network.pretext_pass = False
    assert set(out) == {"pretext"} and out["pretext"].shape == (2, 10, 32, 32)
    boxes = torch.randint(0, 10, (2, 1, 32, 32))
    expected = torch.nn.functional.cross_entropy(out["pretext"], boxes[:, 0])
    assert torch.allclose(PretextLoss()(out, boxes), expected)
    with pytest.raises(ValueError, match="label map"):
        PretextLoss()(out)


def test_a_pretrained_start_is_fine_tuned_at_a_fresh_networks_scale_computing_the_same(tmp_path):
    """SGD pretraining grows the convolutions that feed an instance norm (SimCLR in the study: 6-22x), which the
    output does not see but which slows every Adam step on them as much. A pretraining checkpoint is loaded with
    those weights at the fresh network's norms, the same function; a trained model (with its heads) is continued
    as it is; transposed convolutions, which feed no norm, keep their size."""
    source = _unet(seed=1)
    grown = {k: (v * 20 if k.endswith(("conv1.conv.weight", "conv2.conv.weight")) else v)
             for k, v in source.state_dict().items()}
    path = tmp_path / "simclr.pt"
    torch.save({k: v for k, v in grown.items() if not k.startswith("head.")}, path)
    fresh = _unet(seed=2)
    names = scale_free_weights(fresh)
    assert "encoder.stages.0.conv1.conv.weight" in names and "decoder.stages.0.conv_block.conv2.conv.weight" in names
    assert not any("transp_conv" in n or n.startswith("head.") for n in names)
    norms = {n: float(fresh.state_dict()[n].norm()) for n in names}
    for mode in ("all", "decoder"):
        started = prepare_finetuning(_unet(seed=2), str(path), mode)
        for name in names:
            assert float(started.state_dict()[name].norm()) == pytest.approx(norms[name], rel=1e-5), (mode, name)
        assert torch.equal(started.state_dict()["decoder.stages.0.transp_conv.conv.weight"],
                           source.state_dict()["decoder.stages.0.transp_conv.conv.weight"])
    as_grown = _unet(seed=2)
    as_grown.load_state_dict({k: v for k, v in grown.items() if not k.startswith("head.")}, strict=False)
    started.eval()
    as_grown.eval()
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(started(image), as_grown(image), atol=1e-3)  # but the norms' epsilon
    whole = tmp_path / "model.pt"
    torch.save(grown, whole)
    continued = prepare_finetuning(_unet(seed=2), str(whole), "all")
    assert all(torch.equal(continued.state_dict()[k], v) for k, v in grown.items())
