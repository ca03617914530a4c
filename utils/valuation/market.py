"""The market: a heterogeneous graph of item, location and time nodes (torch_geometric `HeteroConv`).

Items link to their location and their month; months link to the next month. Item node features are
the entity-side numbers (log anchor, age, ...: never the price), location and month nodes start from
learned embeddings. Two rounds of message passing let a location summarise the items listed there and
pass that back, giving each listing its E_market.

Inductive: only the reference listings (the training rows, saved with the model) send messages to the
location and month nodes; the listings being priced only receive. So a listing's E_market does not
depend on the other listings priced with it, and a new listing needs no retraining.
"""

from __future__ import annotations

import atexit
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch_geometric.nn import HeteroConv, SAGEConv


def remove_generated_sources() -> list[Path]:
    """Delete the `.py` files torch_geometric writes to the temp folder for each message-passing class it
    compiles (`<module>_<class>_propagate_*.py`, never deleted by it): loaded modules no longer need them."""
    tmp, removed = Path(tempfile.gettempdir()).resolve(), []
    for name, module in list(sys.modules.items()):
        path = Path(getattr(module, "__file__", None) or "")
        if path.suffix == ".py" and path.parent.resolve() == tmp and path.name.startswith(f"{name}_"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


atexit.register(remove_generated_sources)  # one process compiles each class once; its files go when it ends


def market_edges(ref_location: torch.Tensor, ref_month: torch.Tensor, location: torch.Tensor, month: torch.Tensor,
                 n_months: int) -> dict[tuple[str, str, str], torch.Tensor]:
    """Edge indices of the market graph over item nodes [reference rows, then the rows priced]: reference
    items send to their location and month, every item receives from its own."""
    n_ref = len(ref_location)
    ref = torch.arange(n_ref)
    items = torch.arange(n_ref + len(location))
    all_location, all_month = torch.cat([ref_location, location]), torch.cat([ref_month, month])
    nxt = torch.arange(max(n_months - 1, 0))
    return {("item", "in", "location"): torch.stack([ref, ref_location]),
            ("location", "has", "item"): torch.stack([all_location, items]),
            ("item", "at", "time"): torch.stack([ref, ref_month]),
            ("time", "has", "item"): torch.stack([all_month, items]),
            ("time", "next", "time"): torch.cat([torch.stack([nxt, nxt + 1]), torch.stack([nxt + 1, nxt])], dim=1)}


class MarketGraph(nn.Module):
    """E_market [N, d] of the item nodes of the location / time graph."""

    def __init__(self, item_dim: int, n_locations: int, n_months: int, dim: int = 32, layers: int = 2):
        super().__init__()
        self.item_in = nn.Linear(item_dim, dim)
        self.location = nn.Embedding(n_locations, dim)
        self.time = nn.Embedding(max(n_months, 1), dim)
        self.convs = nn.ModuleList(HeteroConv({rel: SAGEConv((dim, dim), dim) for rel in (
            ("item", "in", "location"), ("location", "has", "item"), ("item", "at", "time"), ("time", "has", "item"),
            ("time", "next", "time"))}, aggr="sum") for _ in range(layers))

    def forward(self, item_x: torch.Tensor, edges: dict) -> torch.Tensor:
        x = {"item": self.item_in(item_x), "location": self.location.weight, "time": self.time.weight}
        for conv in self.convs:
            out = conv(x, edges)
            x = {k: torch.relu(out[k]) + x[k] for k in x}  # residual: node types without messages keep theirs
        return x["item"]
