"""The kept-channels knob of `auto_compress`: channel groups in recipes, their cost in MACs and loss.

`objective="latency"` trades multiply-accumulates, and the one technique that
removes them is channel pruning (`prune_channels`). Its setting,
`channel_sparsity`, is one value per channel group (layers coupled by the
graph lose the same channels), carried in a recipe by every compressible
layer whose output channels are the group's (`RecipeGroups`).

* Cost: the MACs of the model once each group keeps what its value leaves
  (`MacCounter`, counted exactly from the channel graph, as `count_macs` of
  the stripped model gives them); the allocation minimizes them.
* Sensitivity: the rise of the validation loss when one group loses its
  least important channels at each value, at once and without training
  (`ChannelPruningModel.mask_channels`, the masks `prune_channels` would
  reach), like the per-layer knobs' scan.

Kept counts are multiples of `ROUND_TO` (8): LiteRT's CPU kernels (XNNPACK)
work on channel tiles of 8, so a layer of 27 channels costs what one of 32
does; a group of at most 8 channels keeps them all and is not searched.
"""

import dataclasses
import time

import keras
import numpy as np

from tfcompress.auto import allocate
from tfcompress.auto.knobs import CHANNELS, KNOBS
from tfcompress.auto.sensitivity import Evaluator, last_passing, progress_bar
from tfcompress.macs import count_macs
from tfcompress.pruning.channels import api as channels_api
from tfcompress.pruning.channels import graph as channel_graph
from tfcompress.pruning.channels.importance import kept_channels
from tfcompress.pruning.schedules import ConstantSparsity

ROUND_TO = 8
# How channels are ranked, in the scan and in the pipeline alike.
IMPORTANCE = "magnitude"


@dataclasses.dataclass
class RecipeGroups:
    """The channel groups of a model as a recipe names them.

    Attributes:
        graph: The model's `ChannelGraph` restricted to the searchable groups.
        members: `{layer name: group name}` for the compressible layers whose
            output channels are a searchable group.
        layers: `{group name: member layer names}`, in model order.
        sizes: `{group name: prunable channels}`.
        reasons: `{layer name: why its output channels cannot be pruned}`.
    """

    graph: channel_graph.ChannelGraph
    members: dict
    layers: dict
    sizes: dict
    reasons: dict

    @property
    def names(self):
        return [group.name for group in self.graph.groups]


def recipe_groups(model, layers):
    """The `RecipeGroups` of `model` (`layers`: its compressible layers, by name).

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(16, 3, name="conv"), keras.layers.Flatten(),
    ...     keras.layers.Dense(10, name="logits")])
    >>> groups = recipe_groups(model, {l.name: l for l in model.layers})
    >>> groups.members, groups.reasons["logits"]
    ({'conv': 'conv'}, 'it is a model output')
    """
    full = channel_graph.analyze(model)
    searchable = [g for g, group in enumerate(full.groups) if group.size > ROUND_TO]
    graph = full.select(searchable)
    members, reasons = {}, {}
    for name in layers:
        g = graph.output_groups.get(name)
        if g is not None:
            members[name] = graph.groups[g].name
        elif name in full.output_groups:
            group = full.groups[full.output_groups[name]]
            reasons[name] = (
                f"its channel group (of '{group.name}') has {group.size} channels, and groups "
                f"keep multiples of {ROUND_TO}"
            )
        else:
            reasons[name] = full.pin_reasons.get(name, "they belong to several groups")
    grouped = {group.name: [] for group in graph.groups}
    for name, group in members.items():
        grouped[group].append(name)
    return RecipeGroups(
        graph=graph,
        members=members,
        layers={group: tuple(names) for group, names in grouped.items()},
        sizes={group.name: group.size for group in graph.groups},
        reasons=reasons,
    )


def sets_channels(recipe):
    """True if a (not yet checked) recipe names the channel knob anywhere.

    Example:

    >>> sets_channels({"conv": {"channel_sparsity": 0.5}}), sets_channels({"conv": {}})
    (True, False)
    """
    return isinstance(recipe, dict) and any(
        isinstance(entry, dict) and CHANNELS.name in entry for entry in recipe.values()
    )


def check_latency_model(model, groups):
    """Raises ValueError if `model` has no channel group `objective="latency"` can prune."""
    if groups.members:
        return
    why = "; ".join(f"'{name}': {reason}" for name, reason in groups.reasons.items())
    raise ValueError(
        f"objective='latency' removes channels (prune_channels), but model '{model.name}' has "
        f"no channel group it can prune ({why or 'no Conv, Dense or SeparableConv layer'}). "
        "Use objective='size'."
    )


def group_values(recipe, groups):
    """`{group name: channel_sparsity}` of a normalized recipe (every searchable group)."""
    values = {name: CHANNELS.neutral for name in groups.names}
    for layer, entry in recipe.items():
        if layer in groups.members and CHANNELS.name in entry:
            values[groups.members[layer]] = entry[CHANNELS.name]
    return values


def sparsity_vector(values, groups):
    """The per-group sparsities of `values` in the graph's group order (numpy float32)."""
    return np.array([values.get(name, CHANNELS.neutral) for name in groups.names], np.float32)


class MacCounter:
    """MACs of `model` with its channel groups at given sparsities, counted without stripping."""

    def __init__(self, model, groups):
        self.model, self.groups = model, groups
        self.counts = count_macs(model)
        self.sizes = np.array([group.size for group in groups.graph.groups], np.float64)

    @property
    def total(self):
        return self.counts.total

    def __call__(self, values):
        """MACs (an int) with `values` (`{group name: channel_sparsity}`)."""
        kept = keras.ops.convert_to_numpy(
            kept_channels(sparsity_vector(values, self.groups), self.sizes, ROUND_TO)
        ).astype(np.float64)
        fraction = kept / np.maximum(self.sizes, 1)
        return int(round(channels_api.macs_when_kept(self.model, self.groups.graph, fraction, self.counts)))


class Masker:
    """The float model with every searchable group's channels masked at will, without training.

    Args:
        model: The float model (not modified: `prune_channels` wraps a copy).
        groups: Its `RecipeGroups`.
        x, labels: The data `evaluate` measures on.
    """

    def __init__(self, model, groups, x, labels):
        self.groups = groups
        schedules = {name: ConstantSparsity(0.5, begin_step=0) for name in groups.names}
        self.pruning = channels_api.prune_channels(model, schedules, IMPORTANCE, ROUND_TO)
        self.evaluator = Evaluator(self.pruning, x, labels)
        self.scores = self.pruning.channel_scores()  # the weights never change here

    def evaluate(self, values):
        """`(loss, accuracy)` with `values` (`{group name: channel_sparsity}`), masks reset after."""
        try:
            self.pruning.mask_channels(sparsity_vector(values, self.groups), self.scores)
            return self.evaluator()
        finally:
            self.pruning.mask_channels(0.0)


def measure(masker, grid, verbose=1):
    """The loss each group's channel sparsities cost, one group at a time, without training.

    Args:
        masker: A `Masker` of the float model on the (sampled) validation data.
        grid: The values, neutral first.
        verbose: 0 silent, else a progress bar.

    Returns:
        `(loss, accuracy, base)`: `{group: {value: rise of the loss}}` (made
        non-decreasing along `grid`, as `sensitivity.measure` does),
        `{group: {value: drop of accuracy}}` and the float model's
        `(loss, accuracy)`.
    """
    base_loss, base_accuracy = masker.evaluate({})
    names = masker.groups.names
    progress = progress_bar(len(names) * (len(grid) - 1), verbose)
    loss, accuracy, done = {}, {}, 0
    for name in names:
        loss[name], accuracy[name], rise = {grid[0]: 0.0}, {grid[0]: 0.0}, 0.0
        for value in grid[1:]:
            value_loss, value_accuracy = masker.evaluate({name: value})
            rise = max(rise, value_loss - base_loss)
            loss[name][value] = rise
            accuracy[name][value] = base_accuracy - value_accuracy
            done += 1
            progress.update(done)
    return loss, accuracy, (base_loss, base_accuracy)


def frontier(loss, count_macs_of, grid):
    """Recipes of group values from none pruned to the harshest, least predicted loss per MAC saved.

    Each group's options are priced by the MACs it saves alone (additive, so
    the greedy frontier of `allocate` applies); each point's MACs are then
    counted exactly (the savings of two adjacent groups overlap in the layer
    between them).

    Args:
        loss: `{group name: {value: loss rise}}`.
        count_macs_of: `MacCounter` (or any `{group: value} -> MACs`).
        grid: The values.

    Returns:
        `(points, values)`: `allocate.Point`s (bytes: exact MACs) and, for
        each, `{group name: value}`.
    """
    # Each option prices the whole model with that group alone pruned: the
    # sums along the frontier are off by a constant, which orders nothing.
    options = {
        name: [
            allocate.Option((value,), count_macs_of({name: value}), cost)
            for value, cost in per_value.items()
            if value in grid
        ]
        for name, per_value in loss.items()
    }
    points, values = [], []
    for point in allocate.frontier(options):
        chosen = {name: option.settings[0] for name, option in point.choice.items()}
        points.append(allocate.Point(point.choice, count_macs_of(chosen), point.cost))
        values.append(chosen)
    return points, values


def harshest_without_training(masker, choices, floor):
    """Index of the harshest of `choices` (`{group: value}` each) whose masked model keeps `floor`."""
    return last_passing(len(choices), lambda i: masker.evaluate(choices[i])[1] >= floor)


def recipe_of(values, groups):
    """The (normalized) recipe of group values: every member of each group carries its value."""
    return {
        layer: {
            CHANNELS.name: float(values.get(group, CHANNELS.neutral)),
            **{row.name: row.neutral for row in KNOBS},
        }
        for layer, group in groups.members.items()
    }


def search(session, groups, max_trials, samples):
    """`objective="latency"`: per-group sensitivity, the MACs frontier, then trials along it.

    Runs the phases of `auto_compress` on `session` (an `api._Session`),
    as its `search` does for the size knobs.
    """
    x, labels = session.validation_sample(samples)
    grid = CHANNELS.grid
    session.log(
        f"[2/4] sensitivity: {len(groups.names)} channel groups, "
        f"{len(groups.names) * (len(grid) - 1)} channel sparsities, one group at a time on "
        f"{len(labels)} validation examples"
    )
    masker = Masker(session.model, groups, x, labels)
    loss, drop, (base_loss, base_accuracy) = session.timed(
        "sensitivity", measure, masker, grid, session.verbose
    )
    counter = MacCounter(session.model, groups)
    for name in groups.names:
        shown = ", ".join(f"{CHANNELS.label(v)} {c:+.3f}" for v, c in list(loss[name].items())[1::2])
        session.log(
            f"  {name} ({groups.sizes[name]} channels, layers {', '.join(groups.layers[name])}; "
            f"{1 - counter({name: grid[-1]}) / counter.total:.0%} of the MACs at "
            f"{CHANNELS.label(grid[-1])}): loss {shown}"
        )
    session.sensitivity = {
        "base_loss": base_loss,
        "base_accuracy": base_accuracy,
        "samples": int(len(labels)),
        "groups": {
            name: {
                "layers": list(groups.layers[name]),
                CHANNELS.name: [
                    {"value": v, "loss": loss[name][v], "accuracy_drop": drop[name][v]} for v in grid
                ],
            }
            for name in groups.names
        },
    }
    points, values = session.timed("allocation", frontier, loss, counter, grid)
    session.log(
        f"[3/4] allocation: {len(points)} recipes from {points[0].bytes:,} to "
        f"{points[-1].bytes:,} MACs ({points[-1].bytes / counter.total:.2f}x), least predicted "
        f"loss per MAC saved ({session.seconds['allocation']:.0f} s)"
    )
    recipes = [recipe_of(v, groups) for v in values]
    clock = time.perf_counter()
    start = harshest_without_training(
        masker, values, base_accuracy - (session.baseline - session.floor)
    )
    session.log(
        f"[4/4] trials: the pipeline (channel pruning -> strip -> int8 QAT) at up to "
        f"{max_trials} recipes (and a fallback if none passes), each checked on its int8 "
        f".tflite; recipe {start}/{len(points) - 1} keeps the budget even untrained"
    )

    def run_point(index):
        where = f" (recipe {index}/{len(points) - 1}, predicted {points[index].bytes:,} MACs)"
        return session.run(recipes[index], points[index].bytes, where)

    allocate.search(points, run_point, start, max_trials)
    session.seconds["trials"] = time.perf_counter() - clock
