"""The recipe format of `auto_compress`: checking a recipe, and reading it per stage and as text.

A recipe is a plain, JSON-serializable dict `{layer_name: {knob: value}}`
over the knobs of `knobs.RECIPE_KNOBS` (see `knobs` for what each is).
"""

import keras  # noqa: F401  (the doctests build layers)

from tfcompress.auto.knobs import CHANNELS, KNOBS, RECIPE_KNOB_NAMES, RECIPE_KNOBS


def check_recipe(recipe, layers, groups=None):
    """Validates a recipe against a model's compressible layers; returns it normalized.

    Args:
        recipe: `{layer_name: {knob: value}}` (see the module docstring).
        layers: `{name: layer}` from `compressible_layers`.
        groups: The model's `channels.RecipeGroups` if the recipe may set
            `channel_sparsity`; None: no layer may.

    Returns:
        A new dict in the model's layer order, every per-layer knob of every
        named layer filled in (the neutral value when left out), and
        `channel_sparsity` on every member of a group one member sets it on;
        values normalized (plain floats and ints, so it serializes to JSON as
        it is).

    Raises:
        ValueError: for something that is not such a dict, a layer the model
            does not have (or that nothing compresses), an unknown knob, a bad
            value, a value on a layer the knob does not apply to, or two
            layers of one channel group given different `channel_sparsity`.

    Example:

    >>> dense = keras.layers.Dense(4, name="dense")
    >>> dense.build((None, 8))
    >>> check_recipe({"dense": {"sparsity": 0.5}}, {"dense": dense})
    {'dense': {'sparsity': 0.5, 'clusters': None, 'weight_bits': 8}}
    """
    if not isinstance(recipe, dict):
        raise ValueError(
            "recipe must be a dict {layer_name: {knob: value}}, e.g. "
            f"{{'dense': {{'sparsity': 0.9, 'clusters': 16}}}}. Received: recipe={recipe!r}"
        )
    unknown = [name for name in recipe if name not in layers]
    if unknown:
        raise ValueError(
            f"recipe names layers the model has no compressible layer for: {unknown}. "
            f"Compressible layers: {list(layers)}"
        )
    normalized, given = {}, {}
    for name in layers:
        if name not in recipe:
            continue
        entry = recipe[name]
        if not isinstance(entry, dict):
            raise ValueError(
                f"recipe[{name!r}] must be a dict {{knob: value}} with knobs from "
                f"{list(RECIPE_KNOB_NAMES)}. Received: {entry!r}"
            )
        extra = [key for key in entry if key not in RECIPE_KNOB_NAMES]
        if extra:
            raise ValueError(
                f"recipe[{name!r}] has unknown knob(s) {extra}. Known knobs: "
                f"{list(RECIPE_KNOB_NAMES)}"
            )
        settings = {}
        for row in RECIPE_KNOBS:
            if row.per_group and row.name not in entry:
                continue
            value = row.check(f"recipe[{name!r}][{row.name!r}]", entry.get(row.name, row.neutral))
            if value != row.neutral and not row.supports(layers[name]):
                raise ValueError(
                    f"recipe[{name!r}] sets {row.name}={value!r}, but layer '{name}' "
                    f"({type(layers[name]).__name__}) does not support {row.name}."
                )
            if row.per_group:
                given[name] = value
            else:
                settings[row.name] = value
        normalized[name] = settings
    return _with_group_values(normalized, given, layers, groups)


def _with_group_values(normalized, given, layers, groups):
    """`normalized` with `channel_sparsity` on every member of each group a value is given for."""
    name_of = CHANNELS.name
    by_group = {}
    for layer, value in given.items():
        if layer not in (groups.members if groups is not None else {}):
            if value == CHANNELS.neutral:
                continue  # saying "keep every channel" of a layer that keeps them is fine
            why = "the model's channel groups were not analyzed" if groups is None else groups.reasons.get(
                layer, "they are not prunable"
            )
            raise ValueError(
                f"recipe[{layer!r}] sets {name_of}={value!r}, but the output channels of layer "
                f"'{layer}' cannot be pruned: {why}."
                + (f" Layers that can: {list(groups.members)}." if groups is not None else "")
            )
        by_group.setdefault(groups.members[layer], {})[layer] = value
    for group, values in by_group.items():
        if len(set(values.values())) > 1:
            raise ValueError(
                f"recipe gives the layers of one channel group (of '{group}': "
                f"{list(groups.layers[group])}) different {name_of} values: {values}. Coupled "
                "layers lose the same channels: give them one value."
            )
        value = next(iter(values.values()))
        for layer in groups.layers[group]:
            entry = normalized.get(layer)
            if entry is None:
                entry = {row.name: row.neutral for row in KNOBS}
            normalized[layer] = {name_of: value, **entry}
    return {name: normalized[name] for name in layers if name in normalized}


def stage_settings(recipe):
    """`{knob: {layer_name: value}}` of the non-neutral values of a normalized recipe.

    Example:

    >>> stage_settings({"a": {"sparsity": 0.5, "clusters": None, "weight_bits": 4}})
    {'channel_sparsity': {}, 'sparsity': {'a': 0.5}, 'clusters': {}, 'weight_bits': {'a': 4}}
    """
    return {
        row.name: {
            name: entry.get(row.name, row.neutral)
            for name, entry in recipe.items()
            if entry.get(row.name, row.neutral) != row.neutral
        }
        for row in RECIPE_KNOBS
    }


def shown_knobs(recipe):
    """The knobs a table of `recipe` shows: the per-layer ones, and group knobs it sets.

    Example:

    >>> [row.name for row in shown_knobs({"a": {"channel_sparsity": 0.5, "sparsity": 0.0}})]
    ['channel_sparsity', 'sparsity', 'clusters', 'weight_bits']
    """
    return tuple(
        row for row in RECIPE_KNOBS
        if not row.per_group or any(row.name in entry for entry in recipe.values())
    )


def describe(recipe):
    """One line per layer: `conv1: sparsity 50%, clusters 16, weight_bits 4-bit`."""
    if not recipe:
        return "(no layer compressed: int8 QAT only)"
    return "\n".join(
        f"{name}: " + ", ".join(
            f"{row.name} {row.label(entry.get(row.name, row.neutral))}" for row in shown_knobs(recipe)
        )
        for name, entry in recipe.items()
    )
