"""timm citizenship: every icmlm_* model and tag passes what timm's own test-suite asks of timm's own models.

Mirrors timm's tests/test_models.py (default cfgs, forward_features/forward_head/reset_classifier, features_only,
forward_intermediates, grad checkpointing, TorchScript, FX incl. FX→TorchScript, torch.compile) on tiny inputs,
with pretrained=False throughout (no network).
"""
import io
import math
import warnings

import pytest
import timm
import timm.optim
import torch
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules

import icmlm_zoo  # noqa: F401  (registers the models)
from icmlm_zoo.manifest import load_manifest

MODELS = timm.list_models("icmlm_*")
TAGGED = sorted(set(timm.list_models("icmlm_*", include_tags=True)) | set(timm.list_pretrained("icmlm_*")))
CFG_KEYS = ("architecture", "tag", "input_size", "pool_size", "crop_pct", "crop_mode", "interpolation", "mean",
            "std", "num_classes", "first_conv", "classifier", "license", "paper_ids", "origin_url")


def _representatives() -> set:
    """The smallest model of each architecture family (manifest's 'family'): the default run exercises every
    model class; the bigger configurations of the same class run with the slow tests."""
    info = load_manifest().models
    smallest = {}
    for name in MODELS:
        fam = info[name]["family"]
        if fam not in smallest or info[name]["num_params"] < info[smallest[fam]]["num_params"]:
            smallest[fam] = name
    return set(smallest.values())


REPRESENTATIVES = _representatives()
MODEL_PARAMS = [n if n in REPRESENTATIVES else pytest.param(n, marks=pytest.mark.slow) for n in MODELS]
# VGG16 is the heavy one: 32px still leaves a 1x1 pool5 map
SIZE = {"icmlm_vgg16": 32}
DEFAULT_SIZE = 64

pytestmark = [pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning"),
              pytest.mark.usefixtures("one_thread")]


def _input(name: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = SIZE.get(name, DEFAULT_SIZE)
    return torch.randn(batch, 3, size, size, generator=g)


def _final_reduction(model) -> int:
    return model.feature_info[-1]["reduction"]


def _fx_tracer_kwargs() -> dict:
    """What timm's own FX tests hand torchvision's tracer: timm's no-trace leaf modules and functions."""
    return dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                param_shapes_constant=True)


def _create_fx_model(model, train: bool = False):
    """timm's tests/test_models.py::_create_fx_model: a GraphModule returning the model's output node(s)."""
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

    kw = _fx_tracer_kwargs()
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kw)
    train_return = [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**kw).trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        names = [n.name for n in graph_nodes]
        train_return = [train_nodes[-names.index(n)] for n in output_names]
    return create_feature_extractor(model, train_return_nodes=train_return, eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=kw)


# ---------------------------------------------------------------------------------------------------------- cfgs

def test_every_tag_and_pretrained_name_is_covered():
    assert MODELS and set(timm.list_pretrained("icmlm_*")) <= set(TAGGED)
    assert {n.split(".")[0] for n in TAGGED} == set(MODELS)


@pytest.mark.parametrize("name", TAGGED)
def test_pretrained_cfg_complete_and_consistent(name):
    """timm's test_model_default_cfgs, per tag: every field timm's own cfgs carry, and each one true."""
    arch, tag = name.split(".")
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg is not None, name
    d = cfg.to_dict()
    missing = [k for k in CFG_KEYS if d.get(k) in (None, "")]
    assert not missing, f"{name}: cfg lacks {missing}"
    assert (cfg.architecture, cfg.tag) == (arch, tag)
    c, h, w = cfg.input_size
    assert c == len(cfg.mean) == len(cfg.std) and h > 0 and w > 0
    assert all(0 < s for s in cfg.std) and 0 < cfg.crop_pct <= 1
    assert cfg.interpolation in ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
    assert cfg.num_classes == 0  # head-less trunks
    if name in timm.list_pretrained("icmlm_*"):
        assert cfg.url or cfg.hf_hub_id or cfg.file, f"{name} is listed as pretrained but names no weights"

    # the model a tag builds carries that tag's cfg (meta device: no weights are allocated)
    with torch.device("meta"):
        model = timm.create_model(name)
        with_head = timm.create_model(name, num_classes=10)
    assert model.pretrained_cfg == d
    # pool_size is the input size over the final feature map's reduction (the reduction itself is checked by
    # test_forward_features_head_and_reset on a real forward)
    red = _final_reduction(model)
    assert tuple(cfg.pool_size) == (math.ceil(h / red), math.ceil(w / red))
    # first_conv names a real conv weight taking the cfg's input channels
    sd = model.state_dict()
    first = (cfg.first_conv,) if isinstance(cfg.first_conv, str) else cfg.first_conv
    for fc in first:
        assert fc + ".weight" in sd, f"first_conv {fc} not in the state_dict"
        conv = model.get_submodule(fc)
        assert isinstance(conv, torch.nn.Conv2d) and conv.in_channels == c
    # classifier names the head: head-less it holds no weight, with num_classes it is the model's classifier
    classifier = (cfg.classifier,) if isinstance(cfg.classifier, str) else cfg.classifier
    for cl in classifier:
        assert not any(k.startswith(cl + ".") for k in sd)
        assert cl + ".weight" in with_head.state_dict()
        assert with_head.get_submodule(cl) is with_head.get_classifier()
        assert with_head.get_classifier().out_features == 10
    # timm's data pipeline reads it back unchanged
    data = timm.data.resolve_model_data_config(model)
    assert data["input_size"] == tuple(cfg.input_size) and data["crop_pct"] == cfg.crop_pct
    assert data["interpolation"] == cfg.interpolation
    assert tuple(data["mean"]) == tuple(cfg.mean) and tuple(data["std"]) == tuple(cfg.std)


# ------------------------------------------------------------------------------------- forward / head / reset

@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_forward_features_head_and_reset(name):
    """timm's test_model_default_cfgs forward part: pooled/unpooled outputs, pre_logits, reset_classifier."""
    model = timm.create_model(name).eval()
    x = _input(name)
    size = x.shape[-1]
    red = _final_reduction(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert tuple(feats.shape) == (1, model.num_features, math.ceil(size / red), math.ceil(size / red))
        pre = model.forward_head(feats, pre_logits=True)
        assert tuple(pre.shape) == (1, model.head_hidden_size)
        out = model(x)
        assert model.num_classes == 0 and torch.allclose(model.forward_head(feats), out)
        assert torch.allclose(out, pre)  # head-less: the output is the pooled features

        model.reset_classifier(10)
        assert model.num_classes == 10 and model.get_classifier().out_features == 10
        assert tuple(model(x).shape) == (1, 10)
        assert tuple(model.forward_head(feats, pre_logits=True).shape) == (1, model.head_hidden_size)
        name_only = model.get_classifier(name_only=True)
        assert model.get_submodule(name_only) is model.get_classifier()
        assert name_only == model.pretrained_cfg["classifier"]

        model.reset_classifier(0)
        assert model.num_classes == 0
        pooled = model(x)
        assert pooled.ndim == 2 and pooled.shape[1] == model.num_features

        model.reset_classifier(0, "")  # no classifier and no pooling: the feature map itself
        assert torch.allclose(model(x), feats)

        fresh = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert tuple(fresh(x).shape) == tuple(feats.shape)


# --------------------------------------------------------------------------------- features / intermediates

@pytest.mark.parametrize("feature_cls", [None, "getter", "fx"])
@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_features_only_matches_feature_info(name, feature_cls):
    """timm's test_model_forward_features (hooks/module list, forward_intermediates getter, FX graph)."""
    kw = {} if feature_cls is None else dict(feature_cls=feature_cls)
    base = timm.create_model(name)
    n_levels = len(base.feature_info)
    model = timm.create_model(name, features_only=True, out_indices=tuple(range(n_levels)), **kw).eval()
    x = _input(name)
    with torch.no_grad():
        outs = model(x)
    chans, reds = model.feature_info.channels(), model.feature_info.reduction()
    assert chans == [f["num_chs"] for f in base.feature_info] and reds == [f["reduction"] for f in base.feature_info]
    assert len(outs) == n_levels
    for o, ch, r in zip(outs, chans, reds):
        assert tuple(o.shape) == (1, ch, math.ceil(x.shape[-2] / r), math.ceil(x.shape[-1] / r))
    # the default out_indices are what timm's own counterpart gives (VGG: all six levels, like timm's vgg16)
    default = timm.create_model(name, features_only=True, **kw)
    assert len(default.feature_info.channels()) == (6 if "vgg" in name else 5)
    # a subset, negative index included
    sub = timm.create_model(name, features_only=True, out_indices=(1, -1), **kw).eval()
    assert sub.feature_info.channels() == [chans[1], chans[-1]]
    with torch.no_grad():
        assert [o.shape[1] for o in sub(x)] == [chans[1], chans[-1]]


@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_forward_intermediates(name):
    """timm's test_model_forward_intermediates: every level, final == forward_features, indices, pruning."""
    model = timm.create_model(name).eval()
    info = FeatureInfo(model.feature_info, list(range(len(model.feature_info))))
    x = _input(name)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x))
        assert [t.shape[1] for t in inter] == info.channels()
        for t, r in zip(inter, info.reduction()):
            assert tuple(t.shape[-2:]) == (math.ceil(x.shape[-2] / r), math.ceil(x.shape[-1] / r))
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last2) == 2 and all(torch.allclose(a, b) for a, b in zip(last2, inter[-2:]))
        early = model.forward_intermediates(x, indices=[0, 1], stop_early=True, intermediates_only=True)
        assert all(torch.allclose(a, b) for a, b in zip(early, inter[:2]))
        model.set_grad_checkpointing(True)  # timm checks intermediates are unchanged under checkpointing
        final_ckpt, _ = model.forward_intermediates(x)
        assert torch.allclose(final, final_ckpt, rtol=1e-4, atol=1e-5)
        model.set_grad_checkpointing(False)
        kept = model.prune_intermediate_layers(indices=[1, 2], prune_head=True)
        assert list(kept) == [1, 2]
        assert all(torch.allclose(a, b) for a, b in
                   zip(model.forward_intermediates(x, indices=[1, 2], intermediates_only=True), inter[1:3]))


# ------------------------------------------------------------------------------------------- grad checkpointing

@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_grad_checkpointing_same_output_and_gradients(name, monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).train()
    x = _input(name, batch=2, seed=1)

    def run():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        out = model(x)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    out_ref, grads_ref = run()
    assert all(g is not None for g in grads_ref.values())
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing is True
    out_ckpt, grads_ckpt = run()
    assert calls, "set_grad_checkpointing(True) checkpointed nothing"
    torch.testing.assert_close(out_ckpt, out_ref, rtol=1e-4, atol=1e-5)
    assert grads_ckpt.keys() == grads_ref.keys()
    for n in grads_ref:
        torch.testing.assert_close(grads_ckpt[n], grads_ref[n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_group_matcher_serves_timm_optimizer_factory(name):
    """group_matcher is what timm's layer-wise LR decay (and param grouping) read."""
    model = timm.create_model(name, num_classes=10)
    assert set(model.group_matcher()) >= {"stem", "blocks"}
    opt = timm.optim.create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.8)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    assert len({g["lr_scale"] for g in opt.param_groups}) > 2


# ---------------------------------------------------------------------------------------- TorchScript and FX

@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_torchscript(name):
    """timm's test_model_forward_torchscript, plus a save/load round trip of the scripted module."""
    with timm.set_scriptable(True):
        model = timm.create_model(name, num_classes=10).eval()
    x = _input(name)
    scripted = torch.jit.script(model)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(scripted(x), ref)
        torch.testing.assert_close(loaded(x), ref)
        feats = scripted.forward_features(x)
        torch.testing.assert_close(scripted.forward_head(feats, pre_logits=True), model.forward_head(feats, True))


@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_fx_trace_forward_backward_and_script(name):
    """timm's test_model_forward_fx, test_model_backward_fx and test_model_forward_fx_torchscript."""
    model = timm.create_model(name).eval()
    x = _input(name)
    with torch.no_grad():
        ref = model(x)
        fx_model = _create_fx_model(model)
        out = torch.cat(tuple(fx_model(x).values()))
    assert torch.equal(out, ref)

    torch.manual_seed(0)
    train_model = timm.create_model(name, num_classes=42).train()
    fx_train = _create_fx_model(train_model, train=True)
    outs = torch.cat(tuple(fx_train(_input(name, batch=2)).values()))
    outs.mean().backward()
    assert outs.shape == (2, 42)
    missing = [n for n, p in fx_train.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert sum(p.numel() for p in fx_train.parameters()) == sum(p.numel() for p in train_model.parameters())

    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(_create_fx_model(model))
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(tuple(scripted(x).values())), model(x))


@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_fx_feature_extraction_scripts(name):
    """timm's test_model_forward_torchscript_with_features_fx: features_only via FX, then TorchScript."""
    with timm.set_scriptable(True):
        model = timm.create_model(name, features_only=True, feature_cfg=dict(feature_cls="fx")).eval()
    x = _input(name)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        outs, ref = scripted(x), model(x)
    assert isinstance(outs, list) and len(outs) == len(model.feature_info.channels())
    for o, r, ch in zip(outs, ref, model.feature_info.channels()):
        assert o.shape[1] == ch
        torch.testing.assert_close(o, r)


# ------------------------------------------------------------------------------------------------ torch.compile

@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_torch_compile_fullgraph(name):
    """Dynamo captures each model whole (no graph breaks); 'eager' backend keeps it quick on CPU."""
    torch._dynamo.reset()
    model = timm.create_model(name).eval()
    x = _input(name)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPRESENTATIVES))
def test_torch_compile_aot_training_step(name):
    """AOTAutograd (forward + backward graphs) in train mode, with gradient checkpointing on; one model per
    class (the bigger ResNets add a minute of compilation on 2 cores and nothing the smallest one misses)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).train()
    x = _input(name, batch=2)
    out_ref = model(x)
    out_ref.mean().backward()
    grads_ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    compiled = torch.compile(model, backend="aot_eager")
    out = compiled(x)
    out.mean().backward()
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads_ref[n], rtol=1e-4, atol=1e-5, msg=n)
    torch._dynamo.reset()
