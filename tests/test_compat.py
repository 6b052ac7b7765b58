"""The compatibility layer: every patch's symptom on the installed, pristine LibMTL (fresh subprocess, autoload
off), its cure, idempotence, and no-op where a LibMTL does not show the symptom. The device resolver and the
patched Trainer's ``device=``: ``test_device.py``; undeclared dependencies: ``test_compat_dependencies.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from libmtl_repmtl.libmtl import compat
from libmtl_repmtl.libmtl.compat import _common as compat_common
from libmtl_repmtl.libmtl.compat import aligned_mtl_symeig

LibMTL = compat.ensure_libmtl()

# Runs in a fresh interpreter with LIBMTL_REPMTL_AUTOLOAD=0: observes each symptom, applies the patches,
# observes the cure. Prints one JSON object.
_PROBE = textwrap.dedent(r"""
    import json, sys, importlib
    out = {}
    try:
        import LibMTL  # without the torchvision shim
        out["import_without_shim"] = "ok"
    except ImportError as exc:
        out["import_without_shim"] = str(exc)
    for name in [m for m in sys.modules if m == "LibMTL" or m.startswith("LibMTL.")]:
        del sys.modules[name]
    from libmtl_repmtl.libmtl import compat
    out["pre"] = compat.apply_pre_import_patches()
    import LibMTL, torch
    from torch import nn

    def task_dict(tasks):
        from LibMTL.loss import CELoss
        from LibMTL.metrics import AccMetric
        return {t: {"metrics": ["Acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]} for t in tasks}

    def arg(cls):  # the flavour's Trainer takes names (git version) or classes (1.1.5)
        return cls.__name__ if TAKES_NAMES else cls

    def make_trainer(weighting, tasks=("a", "b"), rep_grad=False, **kw):
        return LibMTL.Trainer(task_dict(list(tasks)), arg(weighting), arg(LibMTL.architecture.HPS),
                              lambda: nn.Linear(4, 4), nn.ModuleDict({t: nn.Linear(4, 3) for t in tasks}),
                              rep_grad, False, {"optim": "sgd", "lr": 0.1}, None,
                              weight_args=kw.pop("weight_args", {}), arch_args={}, **kw)

    def model(weighting, tasks=("a", "b"), rep_grad=False):
        class M(LibMTL.architecture.HPS, weighting):
            pass
        m = M(list(tasks), lambda: nn.Linear(4, 4), nn.ModuleDict({t: nn.Linear(4, 3) for t in tasks}), rep_grad,
              False, torch.device("cpu"))
        m.init_param()
        return m

    def step(m, x, **kw):
        out = m(x)
        losses = torch.stack([out[t].pow(2).mean() for t in m.task_name])
        for p in m.parameters():
            p.grad = None
        return m.backward(losses, **kw)

    def encoder_backwards(m, **kw):
        calls = []
        m.encoder.register_full_backward_hook(lambda *a: calls.append(1))
        step(m, torch.randn(5, 4), **kw)
        return len(calls)

    def observe():
        r = {}
        try:
            t = make_trainer(LibMTL.weighting.EW)
            r["trainer_device"] = str(t.device)
        except Exception as exc:
            r["trainer_device"] = "error: %s: %s" % (type(exc).__name__, exc)
        fake = type("F", (), {"device": torch.device("cpu"), "multi_input": True, "task_name": []})()
        batches = [(torch.zeros(1), torch.zeros(1))]
        try:
            loader = [batches, iter(batches)]
            LibMTL.Trainer._process_data(fake, loader)
            LibMTL.Trainer._process_data(fake, loader)  # exhausted: restarts
            r["process_data"] = "ok"
        except Exception as exc:
            r["process_data"] = "error: %s: %s" % (type(exc).__name__, exc)
        def bad():
            raise RuntimeError("broken sample")
            yield
        try:
            LibMTL.Trainer._process_data(fake, [batches, bad()])
            r["process_data_error"] = "swallowed"
        except RuntimeError as exc:
            r["process_data_error"] = "raised: %s" % exc
        except Exception as exc:
            r["process_data_error"] = "other: %s" % type(exc).__name__
        try:
            step(model(LibMTL.weighting.PCGrad), torch.randn(5, 4))
            r["pcgrad_step"] = "ok"
        except Exception as exc:
            r["pcgrad_step"] = "error: %s: %s" % (type(exc).__name__, exc)
        m = model(LibMTL.weighting.EW)
        for p in m.encoder.parameters():
            p.grad = torch.ones_like(p)
        m.zero_grad_share_params()
        r["zero_grad_keeps_tensors"] = all(p.grad is not None and not p.grad.any() for p in m.encoder.parameters())
        m = model(LibMTL.weighting.EW).double()
        for p in m.encoder.parameters():
            p.grad = torch.ones_like(p)
        m._compute_grad_dim()
        r["grad2vec_dtype"] = str(m._grad2vec().dtype)
        m = model(LibMTL.weighting.MGDA, tasks=("a", "b", "c"), rep_grad=True)
        m(torch.randn(5, 4))
        r["rep_is_dict"] = isinstance(m.rep, dict)
        r["mgda_rep_grad_encoder_backwards"] = encoder_backwards(m, mgda_gn="none")
        try:
            step(model(LibMTL.weighting.CAGrad), torch.randn(5, 4), calpha=0.5, rescale=1)
            r["cagrad_2_tasks"] = "ok"
        except Exception as exc:
            r["cagrad_2_tasks"] = "error: %s: %s" % (type(exc).__name__, exc)
        if hasattr(LibMTL.weighting, "Aligned_MTL"):  # the git version
            try:
                step(model(LibMTL.weighting.Aligned_MTL), torch.randn(5, 4))
                r["aligned_mtl_step"] = "ok"
            except Exception as exc:
                r["aligned_mtl_step"] = "error: %s: %s" % (type(exc).__name__, exc)
        else:
            r["aligned_mtl_step"] = "absent"
        try:
            torch.symeig(torch.eye(2))
            r["torch_symeig_outside"] = "works"
        except Exception as exc:
            r["torch_symeig_outside"] = type(exc).__name__
        if hasattr(LibMTL.weighting, "SDMGrad"):  # the git version; zero gradients keep its weights at [0.5, 0.5]
            m = model(LibMTL.weighting.SDMGrad)
            out_ = m(torch.randn(5, 4))
            flat = torch.stack([(out_[t] * 0).sum() for t in m.task_name])
            try:
                m.backward(torch.stack([flat, flat, flat]), SDMGrad_lamda=0.3, SDMGrad_niter=2)
                r["sdmgrad_simplex_step"] = "ok %s" % m.w.tolist()
            except Exception as exc:
                r["sdmgrad_simplex_step"] = "error: %s: %s" % (type(exc).__name__, exc)
        else:
            r["sdmgrad_simplex_step"] = "absent"
        import numpy
        r["numpy_alltrue_outside"] = "alltrue" in numpy.__dict__
        return r

    out["before"] = observe()
    out["applied"] = compat.apply_post_import_patches(LibMTL)
    out["after"] = observe()
    out["again"] = compat.apply_post_import_patches(LibMTL)
    out["again_pre"] = compat.apply_pre_import_patches()
    out["state"] = compat.patch_state()
    t = make_trainer(LibMTL.weighting.EW, device="cpu")
    out["explicit_device"] = str(t.device)
    t.device = torch.device("cpu")
    out["settable_device"] = str(t.device)
    print("JSON" + json.dumps(out))
""")


def _fresh(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LIBMTL_REPMTL_AUTOLOAD": "0", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture(scope="module")
def observed(libmtl_flavour) -> dict:
    proc = _fresh(f"TAKES_NAMES = {libmtl_flavour.trainer_takes_names}\n" + _PROBE)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("JSON"))
    return json.loads(line[4:])


NO_CUDA = not torch.cuda.is_available()


def test_torchvision_models_utils_shim(observed: dict, libmtl_flavour) -> None:
    if not libmtl_flavour.imports_without_shim:  # LibMTL 1.1.5; the git version falls back to torch.hub itself
        assert "torchvision.models.utils" in observed["import_without_shim"]
    else:
        assert observed["import_without_shim"] == "ok"
    assert observed["pre"] == {"torchvision-models-utils": True}
    assert observed["again_pre"] == {"torchvision-models-utils": False}


@pytest.mark.skipif(not NO_CUDA, reason="the hard-coded cuda:0 only fails without CUDA")
def test_trainer_device(observed: dict) -> None:
    assert observed["before"]["trainer_device"].startswith("error")
    assert observed["after"]["trainer_device"] == "cpu"
    assert observed["explicit_device"] == "cpu"
    assert observed["settable_device"] == "cpu"


def _applied_iff(observed: dict, name: str, symptom: bool) -> None:
    """A patch is applied exactly where the pristine LibMTL showed its symptom."""
    assert observed["applied"][name] is symptom, (name, symptom)
    assert observed["state"][name] == ("applied" if symptom else "not needed")


def test_process_data_next(observed: dict) -> None:
    before = observed["before"]
    # 1.1.5: iterator.next() fails; both flavours: the bare except swallows a dataset's error
    assert "next" in before["process_data"] or before["process_data_error"] == "swallowed"
    _applied_iff(observed, "process-data-next", True)
    assert observed["after"]["process_data"] == "ok"
    assert observed["after"]["process_data_error"] == "raised: broken sample"  # no longer swallowed


def test_reset_grad_none(observed: dict) -> None:
    symptom = "NoneType" in observed["before"]["pcgrad_step"]
    assert symptom or observed["before"]["pcgrad_step"] == "ok"
    _applied_iff(observed, "reset-grad-none", symptom)
    assert observed["after"]["pcgrad_step"] == "ok"


def test_zero_grad_share_params(observed: dict) -> None:
    _applied_iff(observed, "zero-grad-share-params", observed["before"]["zero_grad_keeps_tensors"] is False)
    assert observed["after"]["zero_grad_keeps_tensors"] is True


def test_grad2vec_dtype(observed: dict) -> None:
    assert observed["before"]["grad2vec_dtype"] in {"torch.float32", "torch.float64"}
    _applied_iff(observed, "grad2vec-device", observed["before"]["grad2vec_dtype"] == "torch.float32")
    assert observed["after"]["grad2vec_dtype"] == "torch.float64"


def test_same_rep(observed: dict) -> None:
    symptom = observed["before"]["rep_is_dict"]
    assert observed["before"]["mgda_rep_grad_encoder_backwards"] == (3 if symptom else 1)  # 3: once per task
    _applied_iff(observed, "same-rep", symptom)
    assert observed["after"]["rep_is_dict"] is False
    assert observed["after"]["mgda_rep_grad_encoder_backwards"] == 1


def test_cagrad_task_count(observed: dict) -> None:
    symptom = "reshape" in observed["before"]["cagrad_2_tasks"]
    assert symptom or observed["before"]["cagrad_2_tasks"] == "ok"
    _applied_iff(observed, "cagrad-task-count", symptom)
    assert observed["after"]["cagrad_2_tasks"] == "ok"


def test_aligned_mtl_symeig(observed: dict) -> None:
    before, after = observed["before"]["aligned_mtl_step"], observed["after"]["aligned_mtl_step"]
    symptom = "symeig" in before or "deprecated since version 1.9" in before
    assert symptom or before in {"ok", "absent"}
    _applied_iff(observed, "aligned-mtl-symeig", symptom)
    assert after == ("absent" if before == "absent" else "ok")
    # torch itself is left as it was outside Aligned_MTL.backward
    assert observed["after"]["torch_symeig_outside"] == observed["before"]["torch_symeig_outside"]


def test_sdmgrad_alltrue(observed: dict) -> None:
    before, after = observed["before"]["sdmgrad_simplex_step"], observed["after"]["sdmgrad_simplex_step"]
    symptom = "alltrue" in before
    assert symptom or before == "absent" or before.startswith("ok")
    _applied_iff(observed, "sdmgrad-alltrue", symptom)
    assert after == ("absent" if before == "absent" else "ok [0.5, 0.5]")  # the point is its own projection
    # numpy itself is left as it was outside SDMGrad.euclidean_proj_simplex
    assert observed["after"]["numpy_alltrue_outside"] == observed["before"]["numpy_alltrue_outside"]


def test_lent_attribute_restores_presence_and_value() -> None:
    module = types.ModuleType("lender")
    with compat_common.lent_attribute(module, "f", len):
        assert module.f is len
    assert "f" not in module.__dict__  # absent stays absent
    module.g = abs
    with pytest.raises(KeyError), compat_common.lent_attribute(module, "g", len):
        assert module.g is len
        raise KeyError("inside")
    assert module.g is abs  # restored on an error too


def test_symeig_equivalent_matches_eigh() -> None:
    patch = aligned_mtl_symeig
    a = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]], dtype=torch.float64)
    values, vectors = patch._symeig(a, eigenvectors=True)
    assert torch.all(values[1:] >= values[:-1])  # ascending, like torch.symeig
    assert torch.allclose(vectors @ torch.diag(values) @ vectors.T, a)
    assert patch._symeig(a)[1].numel() == 0  # no eigenvectors asked: empty, like torch.symeig
    upper_only = torch.triu(a) + torch.triu(a, 1).T * 0 + torch.tril(torch.full_like(a, 9.0), -1)
    assert torch.allclose(patch._symeig(upper_only)[0], values)  # reads the upper triangle by default
    had = "symeig" in torch.__dict__
    with patch._symeig_available():
        assert torch.symeig is patch._symeig
    assert ("symeig" in torch.__dict__) is had and torch.__dict__.get("symeig") is not patch._symeig


def test_every_patch_applied_once(observed: dict) -> None:
    names = [p.name for p in compat.patches() if p.phase == "post-import"]
    assert set(observed["applied"]) == set(names)
    assert observed["applied"]["trainer-device"] is True  # both flavours hard-code cuda:0 (probed without CUDA)
    assert observed["again"] == {n: False for n in names}
    for name in names:
        assert observed["state"][name] == ("applied" if observed["applied"][name] else "not needed"), name


def test_patches_are_documented() -> None:
    table = (Path(__file__).resolve().parents[1] / "docs" / "compat.md").read_text(encoding="utf-8")
    for info in compat.patches():
        assert info.symptom.startswith("Symptom:"), info
        assert f"| `{info.name}` | {info.phase} |" in table, f"docs/compat.md has no row for {info.name}"
    for _, fn in compat._POST:
        doc = fn.__doc__ or ""
        assert "Cause:" in doc and "Cure:" in doc and "Detected" in doc, fn.__name__


def test_in_process_idempotent() -> None:
    init, process = LibMTL.Trainer.__init__, LibMTL.Trainer._process_data
    assert not any(compat.apply_post_import_patches(LibMTL).values())
    assert not any(compat.apply_pre_import_patches().values())
    assert LibMTL.Trainer.__init__ is init and LibMTL.Trainer._process_data is process


# ------------------------------------------------------------------ no-op where the symptom is absent
def _fake(**parts: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{k: types.SimpleNamespace(**v) if isinstance(v, dict) else v
                                    for k, v in parts.items()})


def test_noop_device_choice_present() -> None:
    class GitLikeTrainer:
        def __init__(self, task_dict, weighting, architecture, encoder_class, decoders, rep_grad, multi_input,
                     optim_param, scheduler_param, **kwargs):
            self.device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
            self._prepare_model(weighting, architecture, encoder_class, decoders)

        def _prepare_model(self, *args):
            pass

    init = GitLikeTrainer.__init__
    assert compat._patch_trainer_device(_fake(trainer={"Trainer": GitLikeTrainer})) is False
    assert GitLikeTrainer.__init__ is init


def test_noop_process_data_with_next() -> None:
    class GitLikeTrainer:
        def _process_data(self, loader):
            try:
                return next(loader[1])
            except StopIteration:
                loader[1] = iter(loader[0])
                return next(loader[1])

    fn = GitLikeTrainer._process_data
    assert compat._patch_process_data(_fake(trainer={"Trainer": GitLikeTrainer})) is False
    assert GitLikeTrainer._process_data is fn


def test_noop_when_already_fixed_classes() -> None:
    abs_w = LibMTL.weighting.abstract_weighting.AbsWeighting
    abs_a = LibMTL.architecture.abstract_arch.AbsArchitecture

    class FixedW(abs_w):  # inherits the (patched, i.e. working) methods, unmarked on this class
        pass

    class FixedA(abs_a):
        pass

    class FixedCAGrad(LibMTL.weighting.CAGrad):
        pass

    class FixedSDMGrad:  # a projection that works on a point of the simplex
        def euclidean_proj_simplex(self, v, s=1):
            return v

    fake = _fake(weighting={"abstract_weighting": types.SimpleNamespace(AbsWeighting=FixedW), "CAGrad": FixedCAGrad,
                            "SDMGrad": FixedSDMGrad},
                 architecture={"abstract_arch": types.SimpleNamespace(AbsArchitecture=FixedA),
                               "HPS": LibMTL.architecture.HPS})
    for patch in (compat._patch_reset_grad, compat._patch_grad2vec, compat._patch_zero_grad_share_params,
                  compat._patch_same_rep, compat._patch_cagrad_task_count, compat._patch_aligned_mtl_symeig,
                  compat._patch_sdmgrad_alltrue):
        assert patch(fake) is False, patch.__name__
    assert "_reset_grad" not in vars(FixedW) and "forward" not in vars(FixedA) and "backward" not in vars(FixedCAGrad)
    assert not hasattr(FixedSDMGrad.euclidean_proj_simplex, compat.MARKER)


def test_noop_torchvision_utils_present() -> None:
    assert compat._ensure_torchvision_models_utils() is False  # already importable (shim or real)
