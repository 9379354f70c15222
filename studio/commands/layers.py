"""`studio layers`: every layer of a model with its output shape, i.e. what `studio visualize` can target.
Needs no training and no data."""

from __future__ import annotations

from studio.commands.shared import Result
from studio.models import build_classifier, checkpoint_path, layer_shapes, load_state_dict_file, load_weights


def run(cfg, tracker) -> Result:
    """Print every layer of the model with its output shape."""
    d = cfg.data
    model = build_classifier(cfg.model, d.channels, d.num_classes, [0.0] * d.channels, [1.0] * d.channels)
    user_weights = checkpoint_path(cfg.model)
    if user_weights:
        load_weights(model, load_state_dict_file(user_weights), user_weights)
    shapes = layer_shapes(model, (d.channels, d.size, d.size))
    items = [{"layer": name, "type": type(model.net.get_submodule(name)).__name__, "shape": list(shape)}
             for name, shape in shapes.items()]
    width = max(len(item["layer"]) for item in items)
    print(f"{'layer':<{width}}  {'type':<18} output shape (C, H, W) for input {(d.channels, d.size, d.size)}")
    for item in items:
        print(f"{item['layer']:<{width}}  {item['type']:<18} {tuple(item['shape'])}")
    return Result({"layers": len(items)}, items)
