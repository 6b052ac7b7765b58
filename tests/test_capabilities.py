"""What weighting classes say about themselves (DDP, representation) and names resolved by the plugin host."""

from __future__ import annotations

import pytest

from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.libmtl.capabilities import ddp_compatible, needs_rep, resolve_architecture, resolve_weighting
from libmtl_repmtl.libmtl.host import UnknownMethodError
from libmtl_repmtl.libmtl.weighting import RepMTL
from libmtl_repmtl.tasks.metrics import AccMetric, DepthMetric, NormalMetric, SegMetric

# In either LibMTL (1.1.5 has the first names of each set; the git version all of them).
LOSS_WEIGHTINGS = {"EW", "UW", "DWA", "GLS", "RLW", "STCH"}
GRADIENT_WEIGHTINGS = {"MGDA", "PCGrad", "GradVac", "CAGrad", "IMTL", "GradNorm", "GradDrop", "Nash_MTL",
                       "Aligned_MTL", "DB_MTL", "MoCo", "FairGrad", "ExcessMTL", "MoDo", "SDMGrad", "UPGrad", "FAMO"}


def _installed(names: set[str]) -> list[type]:
    return [getattr(LibMTL.weighting, n) for n in sorted(names) if isinstance(getattr(LibMTL.weighting, n, None), type)]


def test_libmtl_classes_are_judged_by_their_structure():
    loss, grad = _installed(LOSS_WEIGHTINGS), _installed(GRADIENT_WEIGHTINGS)
    assert len(loss) >= 5 and len(grad) >= 7
    assert [c.__name__ for c in loss if ddp_compatible(c) is not True] == []
    assert [c.__name__ for c in grad if ddp_compatible(c) is not False] == []
    assert needs_rep(LibMTL.weighting.GradDrop) and not needs_rep(LibMTL.weighting.MGDA)
    assert not needs_rep(LibMTL.weighting.EW)


def test_declarations_on_the_class_decide_and_are_inherited(weighting_subclasses):
    assert ddp_compatible(RepMTL) is True and needs_rep(RepMTL)
    MyEW, MyMGDA, Declared = weighting_subclasses.MyEW, weighting_subclasses.MyMGDA, weighting_subclasses.Declared

    class Plugin(LibMTL.weighting.abstract_weighting.AbsWeighting):
        def backward(self, losses, **kwargs):
            losses.sum().backward()

    class DeclaredPlugin(Plugin):
        ddp_compatible = True
        needs_rep = True

    assert ddp_compatible(MyEW) is True and ddp_compatible(MyMGDA) is False and ddp_compatible(Declared) is True
    assert ddp_compatible(Plugin) is None and not needs_rep(Plugin)  # nothing said: unknown
    assert ddp_compatible(DeclaredPlugin) is True and needs_rep(DeclaredPlugin)


def test_names_go_through_the_plugin_host():
    assert resolve_weighting("EW") is LibMTL.weighting.EW and resolve_weighting(RepMTL) is RepMTL
    assert resolve_weighting("RepMTL") is RepMTL and resolve_architecture("RepHPS").__name__ == "RepHPS"
    assert resolve_architecture("HPS") is LibMTL.architecture.HPS
    with pytest.raises(UnknownMethodError, match=r"unknown weighting 'Nope' \(--weighting\)\. Available .*EW"):
        resolve_weighting("Nope")
    with pytest.raises(UnknownMethodError, match=r"unknown architecture 'Nope' \(--arch\)"):
        resolve_architecture("Nope")


def test_metric_classes_declare_their_epoch_sums():
    assert SegMetric.ddp_sum_attrs == ("confusion",)
    assert DepthMetric.ddp_sum_attrs == ("abs_sum", "rel_sum", "count")
    assert AccMetric.ddp_sum_attrs == ("correct", "total")
    assert not getattr(NormalMetric, "ddp_sum_attrs", ())  # its angle lists are concatenated, not summed
    for cls, args in ((SegMetric, (3,)), (DepthMetric, ()), (AccMetric, ())):
        metric = cls(*args)
        assert set(cls.ddp_sum_attrs) <= set(vars(metric)), cls
