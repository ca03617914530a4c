"""The name-keyed tables: one pattern, an unknown name fails naming the known ones, no silent shadowing."""

import pytest

from utils.core.registry import Registry, UnknownName


def test_lookup_register_and_unknown_names():
    table = Registry("colour", {"red": 1})

    @table.register("blue")
    def blue():
        return 2

    assert table["red"] == 1 and table["blue"]() == 2 and list(table) == ["red", "blue"] and len(table) == 2
    with pytest.raises(UnknownName, match=r"unknown colour 'green'; known: \['red', 'blue'\]") as e:
        table["green"]
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    with pytest.raises(ValueError, match="already registered"):
        table.register("red")(3)
    with pytest.raises(UnknownName):
        table[["a list"]]  # an unhashable name from a config is an unknown name, not a TypeError


@pytest.mark.parametrize("make, culprit", [
    (lambda: __import__("utils.matching.embed", fromlist=["embed"]).EMBEDDERS["bert"], "unknown embedding model"),
    (lambda: __import__("utils.matching.knn", fromlist=["x"]).choose_backend("annoy"), "unknown KNN backend"),
    (lambda: __import__("utils.training.losses", fromlist=["x"]).make_loss("focal", 3, 8), "unknown loss"),
    (lambda: __import__("utils.training.nn.pooling", fromlist=["x"]).make_pool("max"), "unknown pooling"),
    (lambda: __import__("utils.training.nn.encoders", fromlist=["x"]).build_encoder("text", text={"kind": "rnn"}),
     "unknown text kind"),
])
def test_every_table_names_the_known_entries(make, culprit):
    with pytest.raises(UnknownName, match=culprit) as e:
        make()
    assert "known: [" in str(e.value)
