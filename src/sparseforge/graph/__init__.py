"""Pure-torch geometry for particle models: radius graphs, scatter, sampling, message passing,
kernel integrals (no ``torch_geometric`` / ``torch_scatter`` / ``torch_cluster`` needed).

Conventions follow PyTorch Geometric: an ``edge_index`` is a (2, E) long tensor whose row 0 holds
the source (neighbour) j and row 1 the target (centre) i of each edge j -> i.
"""

from .kernel_integral import IntegralTransform, kernel_integral
from .message_passing import InteractionBlock, mlp
from .radius import knn, mean_nn_distance, radius_graph, radius_neighbors
from .sampling import fps, random_sample, sample_points, sample_size
from .scatter import scatter_max, scatter_mean, scatter_sum, segment_count

__all__ = [
    "IntegralTransform",
    "InteractionBlock",
    "fps",
    "kernel_integral",
    "knn",
    "mean_nn_distance",
    "mlp",
    "radius_graph",
    "radius_neighbors",
    "random_sample",
    "sample_points",
    "sample_size",
    "scatter_max",
    "scatter_mean",
    "scatter_sum",
    "segment_count",
]
