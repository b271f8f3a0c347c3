import pytest
import torch

from sparseforge.errors import UserError
from sparseforge.groups import (
    GROUPINGS,
    expand_group_mask,
    group_norms,
    group_size,
    group_view,
    n_groups,
    ungroup,
    zero_groups,
)

SHAPES = [(6, 4), (5, 3, 2, 2), (9, 7)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("grouping", GROUPINGS)
def test_view_roundtrip_and_sizes(shape, grouping):
    w = torch.randn(shape)
    v = group_view(w, grouping)
    assert v.shape == (n_groups(shape, grouping), group_size(shape, grouping))
    assert torch.equal(ungroup(v, grouping, shape), w)
    assert torch.allclose(group_norms(w, grouping), v.norm(dim=1))


def test_group_semantics_conv():
    w = torch.randn(5, 3, 2, 2)
    assert torch.equal(group_view(w, "filter")[2], w[2].reshape(-1))
    assert torch.equal(group_view(w, "channel")[1].sort().values, w[:, 1].reshape(-1).sort().values)
    assert torch.equal(group_view(w, "shape")[1], w[:, 0, 0, 1])  # position (0, 0, 1) across filters
    assert n_groups(w.shape, "shape") == 3 * 2 * 2
    assert n_groups(w.shape, "layer") == 1 and n_groups(w.shape, "element") == w.numel()


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_expand_group_mask_zeroes_exactly_the_group(grouping):
    w = torch.randn(5, 3, 2, 2)
    g = n_groups(w.shape, grouping)
    keep = torch.ones(g, dtype=torch.bool)
    keep[0] = False
    mask = expand_group_mask(keep, grouping, w.shape)
    z = zero_groups(w * mask, grouping)
    assert z[0] and (z.sum() == 1 or g == 1)


def test_bad_grouping_errors_are_one_line():
    with pytest.raises(UserError, match="unknown grouping"):
        group_view(torch.randn(3, 3), "blocks")
    with pytest.raises(UserError, match="needs a weight"):
        group_view(torch.randn(4), "filter")
    with pytest.raises(UserError, match="entries"):
        expand_group_mask(torch.ones(3, dtype=torch.bool), "filter", (4, 2))
